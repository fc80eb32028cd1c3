/*
 * Unit tests of the ring: reopen, refusal to reinitialise, wrap-around,
 * full ring, concurrent producer processes, torn and corrupt records, dead
 * producers, a file changed under its users.
 */

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include "tap.h"
#include "wa_ring.h"


#define WA_STR_(x)  #x
#define WA_STR(x)   WA_STR_(x)


#define CAP        (64 * 1024)
#define PRODUCERS  4
#define PER_PROC   50000

static char  path[256];
static char  err[WA_RING_ERR_LEN];


static int
fresh(wa_ring_t *ring, uint64_t cap)
{
    unlink(path);
    return wa_ring_open(ring, path, cap, WA_RING_CREATE, 0600, err,
                        sizeof(err));
}


/* a payload whose bytes say who wrote it and in which order */
static uint32_t
fill(unsigned char *buf, uint32_t producer, uint32_t seq)
{
    uint32_t  len, i;

    len = 8 + (seq * 2654435761u + producer) % 700;

    memcpy(buf, &producer, 4);
    memcpy(buf + 4, &seq, 4);

    for (i = 8; i < len; i++) {
        buf[i] = (unsigned char) (seq + i);
    }

    return len;
}


static int
check(const wa_ring_rec_t *rec, uint32_t *producer, uint32_t *seq)
{
    uint32_t       len, i;
    unsigned char  want[1024];

    if (rec->payload_len < 8) {
        return 0;
    }

    memcpy(producer, rec->payload, 4);
    memcpy(seq, rec->payload + 4, 4);

    len = fill(want, *producer, *seq);

    if (len != rec->payload_len) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (want[i] != rec->payload[i]) {
            return 0;
        }
    }

    return 1;
}


/* CRC-32C one bit at a time: the definition both fast paths must match */
static uint32_t
crc_bitwise(const unsigned char *p, size_t len)
{
    int       k;
    uint32_t  c;

    c = 0xffffffff;

    while (len--) {
        c ^= *p++;
        for (k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ 0x82f63b78 : c >> 1;
        }
    }

    return ~c;
}


/* every length to 300 at every alignment to 8, and a sum in two parts */
static int
crc_agrees(uint32_t (*crc)(uint32_t, const void *, size_t))
{
    size_t         off, len, cut;
    unsigned char  data[512];

    for (len = 0; len < sizeof(data); len++) {
        data[len] = (unsigned char) (len * 131 + 7);
    }

    for (off = 0; off < 8; off++) {
        for (len = 0; len <= 300; len++) {
            if (crc(0, data + off, len) != crc_bitwise(data + off, len)) {
                return 0;
            }
        }
    }

    for (cut = 0; cut <= 300; cut += 13) {
        if (crc(crc(0, data, cut), data + cut, 300 - cut)
            != crc_bitwise(data, 300))
        {
            return 0;
        }
    }

    return 1;
}


static int
read_one(wa_ring_t *ring, uint64_t *cursor, wa_ring_rec_t *rec)
{
    return wa_ring_read(ring, cursor, rec, wa_mono_ms());
}


/*
 * The ring's test hook, defined here as the shim defines it for nginx:
 * at hook_point, the reader (another handle) reads as if the producer had
 * stalled there for WA_RING_STUCK_SEC.
 */

static int             hook_point, hook_rc;
static uint64_t        hook_now, *hook_cursor;
static wa_ring_t      *hook_reader;
static wa_ring_rec_t   hook_rec;

void wa_ring_test_hook(int point, unsigned type);

void
wa_ring_test_hook(int point, unsigned type)
{
    (void) type;

    if (point != hook_point || hook_reader == NULL) {
        return;
    }

    hook_point = 0;         /* once */

    /* twice: the reader first notes the position, then gives up */
    hook_rc = wa_ring_read(hook_reader, hook_cursor, &hook_rec, hook_now);
    if (hook_rc == WA_RING_WAIT) {
        hook_rc = wa_ring_read(hook_reader, hook_cursor, &hook_rec,
                               hook_now + WA_RING_STUCK_SEC * 1000);
    }
}


int
main(void)
{
    int              i, rc, ok_all, status, fd;
    pid_t            pid, pids[PRODUCERS];
    uint32_t         p, s, next[PRODUCERS], len, published, got, laps;
    uint64_t         cursor, tail, now;
    unsigned char    buf[1024];
    wa_ring_t        ring, other;
    wa_ring_rec_t    rec;
    wa_ring_claim_t  claim;
    struct stat      st;

    snprintf(path, sizeof(path), "/tmp/wa_ring_test.%d", (int) getpid());

    plan(70);

    /* ---- the checksum ---- */

    ok(wa_crc32c(0, "123456789", 9) == 0xe3069283,
       "crc32c of \"123456789\" is the check value");
    ok(crc_agrees(wa_crc32c), "crc32c (the CPU's where it has one) agrees "
       "with the bitwise definition at every length and alignment");
    ok(crc_agrees(wa_crc32c_table), "so does the table fallback");

    /* ---- create, reopen, refuse to reinitialise ---- */

    ok(fresh(&ring, CAP) == WA_RING_OK, "create a ring: %s", err);
    ok(ring.capacity == CAP, "capacity as asked");
    ok(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600,
       "file created 0600");
    ok((uint64_t) st.st_blocks * 512 >= (uint64_t) st.st_size,
       "with every block written: no hole to SIGBUS on a full disk "
       "(%lld of %lld bytes)", (long long) st.st_blocks * 512,
       (long long) st.st_size);
    ok(wa_ring_put(&ring, 1, "hello", 5) == WA_RING_OK, "publish");
    wa_ring_close(&ring);

    /* a ring an older build made sparse gets its blocks when the master
     * opens it, its bytes untouched */
    fd = open(path, O_RDWR);
    rc = fd != -1 && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                               CAP / 2, CAP / 2) == 0;
    fstat(fd, &st);
    close(fd);
    ok(rc && (uint64_t) st.st_blocks * 512 < (uint64_t) st.st_size,
       "punch a hole in the ring file");
    ok(wa_ring_open(&ring, path, CAP, WA_RING_CREATE, 0600, err, sizeof(err))
       == WA_RING_OK && stat(path, &st) == 0
       && (uint64_t) st.st_blocks * 512 >= (uint64_t) st.st_size,
       "opened to create, it has every block again: %s", err);
    wa_ring_close(&ring);

    ok(wa_ring_open(&ring, path, 0, 0, 0600, err, sizeof(err)) == WA_RING_OK,
       "reopen with capacity 0 accepts the file's");
    cursor = wa_ring_head(&ring);
    ok(read_one(&ring, &cursor, &rec) == WA_RING_OK && rec.payload_len == 5
       && memcmp(rec.payload, "hello", 5) == 0 && rec.type == 1,
       "the record survived close and reopen");
    ok(read_one(&ring, &cursor, &rec) == WA_RING_EMPTY, "then empty");
    wa_ring_close(&ring);

    ok(wa_ring_open(&ring, path, 2 * CAP, WA_RING_CREATE, 0600, err,
                    sizeof(err)) == WA_RING_ERROR
       && strstr(err, "configured") != NULL,
       "another capacity is refused: %s", err);
    ok(wa_ring_open(&ring, path, CAP, 0, 0600, err, sizeof(err))
       == WA_RING_OK && wa_ring_tail(&ring) > wa_ring_head(&ring),
       "and the file was left as it was (record still waiting)");
    wa_ring_close(&ring);

    fd = open(path, O_WRONLY);
    ok(fd != -1 && pwrite(fd, "XXXXXXXX", 8, 0) == 8, "clobber the magic");
    close(fd);
    ok(wa_ring_open(&ring, path, CAP, WA_RING_CREATE, 0600, err, sizeof(err))
       == WA_RING_ERROR && strstr(err, "magic") != NULL,
       "a file of another kind is refused, not reinitialised: %s", err);

    fd = open(path, O_RDONLY);
    ok(fd != -1 && pread(fd, buf, 8, 0) == 8 && memcmp(buf, "XXXXXXXX", 8) == 0,
       "its bytes are untouched");
    close(fd);

    /* ---- wrap-around, PAD records, full ring ---- */

    ok(fresh(&ring, CAP) == WA_RING_OK, "fresh ring");

    cursor = wa_ring_head(&ring);
    ok_all = 1;
    published = 0;
    got = 0;

    for (laps = 0; wa_ring_tail(&ring) < 20 * CAP; laps++) {
        len = fill(buf, 0, published);
        rc = wa_ring_put(&ring, 7, buf, len);

        if (rc == WA_RING_FULL) {
            /* drain half of what is there, then go on */
            while (wa_ring_tail(&ring) - cursor > CAP / 2) {
                if (read_one(&ring, &cursor, &rec) != WA_RING_OK
                    || !check(&rec, &p, &s) || s != got)
                {
                    ok_all = 0;
                    break;
                }
                got++;
            }
            wa_ring_advance(&ring, cursor);
            continue;
        }

        if (rc != WA_RING_OK) {
            ok_all = 0;
            break;
        }

        published++;
    }

    while (read_one(&ring, &cursor, &rec) == WA_RING_OK) {
        if (!check(&rec, &p, &s) || s != got) {
            ok_all = 0;
        }
        got++;
    }
    wa_ring_advance(&ring, cursor);

    ok(ok_all && got == published,
       "20 laps of random sizes: %u of %u records, in order, intact", got,
       published);
    ok(ring.hdr->refused > 0, "full ring refused claims (%llu)",
       (unsigned long long) ring.hdr->refused);
    ok(wa_ring_head(&ring) == wa_ring_tail(&ring), "all consumed");

    /* full: exact free-space check, and space again after advance */
    i = 0;
    while (wa_ring_put(&ring, 1, buf, 1000) == WA_RING_OK) {
        i++;
    }
    ok(i == CAP / 1040 || i == CAP / 1040 - 1, "%d records of 1000 bytes fit",
       i);
    ok(wa_ring_put(&ring, 1, buf, 1000) == WA_RING_FULL, "then FULL");
    cursor = wa_ring_head(&ring);
    ok(read_one(&ring, &cursor, &rec) == WA_RING_OK, "read one");
    ok(wa_ring_put(&ring, 1, buf, 1000) == WA_RING_FULL,
       "read but not advanced: still FULL (space is freed after commit)");
    wa_ring_advance(&ring, cursor);
    ok(wa_ring_put(&ring, 1, buf, 1000) == WA_RING_OK,
       "advanced: room again");
    ok(wa_ring_claim(&ring, 1, CAP / 2, &claim) == WA_RING_TOO_BIG
       && ring.hdr->refused_too_big == 1, "a record over capacity/4: TOO_BIG");

    /* the reserve: a claim that opens a call leaves wa_ring_keep() free,
     * one that closes (an outcome) may take it */
    cursor = wa_ring_head(&ring);
    while (read_one(&ring, &cursor, &rec) == WA_RING_OK) {
        /* consumed */
    }
    wa_ring_advance(&ring, cursor);

    while (wa_ring_claim_keep(&ring, 1, 1000, wa_ring_keep(&ring), &claim)
           == WA_RING_OK)
    {
        wa_ring_commit(&ring, &claim);
    }

    tail = CAP - (wa_ring_tail(&ring) - wa_ring_head(&ring));
    ok(wa_ring_keep(&ring) == CAP / 16 && tail >= CAP / 16,
       "opening claims refused with %llu bytes free, the reserve is %llu",
       (unsigned long long) tail, (unsigned long long) wa_ring_keep(&ring));

    i = 0;
    while (wa_ring_put(&ring, 1, buf, 1000) == WA_RING_OK) {
        i++;
    }
    ok(i >= CAP / 16 / 1040, "closing records take the reserve: %d of 1000 "
       "bytes", i);
    ok(wa_ring_claim_keep(&ring, 1, 16, wa_ring_keep(&ring), &claim)
       == WA_RING_FULL && wa_ring_put(&ring, 1, buf, 1000) == WA_RING_FULL,
       "then FULL to both");
    wa_ring_close(&ring);

    /* ---- a fresh file: position 0 mid-claim is not a corrupt record ---- */

    ok(fresh(&ring, CAP) == WA_RING_OK, "fresh ring");
    {
        wa_ring_rec_hdr_t  *h = (wa_ring_rec_hdr_t *) ring.data;

        /* a producer that won the CAS and wrote len, not yet ctl (still 0) */
        __atomic_store_n(&ring.hdr->tail, 48, __ATOMIC_RELEASE);
        h->len = 48;
        h->payload_len = 5;
        h->pid = (uint32_t) getpid();
        h->claim_sec = (uint32_t) (wa_now_ms() / 1000);
        cursor = 0;
        ok(read_one(&ring, &cursor, &rec) == WA_RING_WAIT && cursor == 0,
           "ctl still 0 at position 0: the reader waits, skips nothing");

        memcpy((unsigned char *) h + sizeof(wa_ring_rec_hdr_t), "fresh", 5);
        __atomic_store_n(&h->ctl, 0 | WA_RING_CLAIMED, __ATOMIC_RELEASE);
        claim.rec = h;
        claim.payload = (unsigned char *) h + sizeof(wa_ring_rec_hdr_t);
        claim.pos = 0;
        wa_ring_commit(&ring, &claim);
        ok(read_one(&ring, &cursor, &rec) == WA_RING_OK
           && memcmp(rec.payload, "fresh", 5) == 0
           && ring.hdr->corrupt_records == 0,
           "then published: read intact, nothing counted corrupt");
    }
    wa_ring_close(&ring);

    /* ---- concurrent producers in several processes ---- */

    ok(fresh(&ring, CAP) == WA_RING_OK, "fresh ring for producers");

    for (i = 0; i < PRODUCERS; i++) {
        pids[i] = fork();

        if (pids[i] == 0) {
            if (wa_ring_open(&other, path, 0, 0, 0600, err, sizeof(err))
                != WA_RING_OK)
            {
                _exit(2);
            }

            for (s = 0; s < PER_PROC; ) {
                len = fill(buf, (uint32_t) i, s);
                if (wa_ring_put(&other, 2, buf, len) == WA_RING_OK) {
                    s++;
                }
            }

            _exit(0);
        }
    }

    memset(next, 0, sizeof(next));
    ok_all = 1;
    got = 0;
    cursor = wa_ring_head(&ring);

    while (got < PRODUCERS * PER_PROC) {
        rc = read_one(&ring, &cursor, &rec);

        if (rc == WA_RING_OK) {
            if (!check(&rec, &p, &s) || p >= PRODUCERS || s != next[p]) {
                ok_all = 0;
                break;
            }
            next[p]++;
            got++;

            if (got % 32 == 0) {
                wa_ring_advance(&ring, cursor);
            }

        } else if (rc == WA_RING_SKIPPED) {
            ok_all = 0;
            break;

        } else {
            wa_ring_advance(&ring, cursor);
        }
    }

    status = 0;
    for (i = 0; i < PRODUCERS; i++) {
        if (!ok_all) {
            kill(pids[i], SIGKILL);     /* they would spin on a full ring */
        }
        waitpid(pids[i], &rc, 0);
        status |= rc;
    }

    ok(ok_all && got == PRODUCERS * PER_PROC && status == 0,
       "%d processes x %d records: each read once, in per-producer order, "
       "checksums good", PRODUCERS, PER_PROC);

    /* ---- a corrupt record is skipped, the next one is read ---- */

    wa_ring_advance(&ring, cursor);
    ok(wa_ring_put(&ring, 3, "first-record", 12) == WA_RING_OK
       && wa_ring_put(&ring, 3, "second-record", 13) == WA_RING_OK,
       "two records");
    ((unsigned char *) ring.data)[(cursor & ring.mask)
                                  + sizeof(wa_ring_rec_hdr_t) + 2] ^= 0x40;
    rc = read_one(&ring, &cursor, &rec);
    ok(rc == WA_RING_SKIPPED && strstr(rec.skip_reason, "checksum") != NULL
       && ring.hdr->corrupt_records == 1,
       "flipped byte: skipped as a checksum mismatch, counted");
    rc = read_one(&ring, &cursor, &rec);
    ok(rc == WA_RING_OK && rec.payload_len == 13
       && memcmp(rec.payload, "second-record", 13) == 0,
       "the next record is read");
    wa_ring_advance(&ring, cursor);

    /* ---- a producer that claimed and died ---- */

    pid = fork();
    if (pid == 0) {
        ring.pid = getpid();
        if (wa_ring_claim(&ring, 4, 100, &claim) == WA_RING_OK) {
            memset(claim.payload, 'z', 50);    /* torn: never committed */
        }
        _exit(0);
    }
    waitpid(pid, &status, 0);

    ok(wa_ring_put(&ring, 3, "after-dead", 10) == WA_RING_OK,
       "a record after the dead producer's claim");
    now = wa_mono_ms();
    ok(wa_ring_read(&ring, &cursor, &rec, now) == WA_RING_WAIT
       && wa_ring_read(&ring, &cursor, &rec, now + WA_RING_STUCK_SEC * 1000
                       - 1) == WA_RING_WAIT,
       "a dead producer's claim: WAIT until the reader's own %d s passed "
       "(no pid test)", WA_RING_STUCK_SEC);
    rc = wa_ring_read(&ring, &cursor, &rec, now + WA_RING_STUCK_SEC * 1000);
    ok(rc == WA_RING_SKIPPED && rec.skipped_bytes > 100
       && ring.hdr->skipped_records == 1
       && strstr(rec.skip_reason, "abandoned after") != NULL,
       "then skipped (%llu bytes), counted: %s",
       (unsigned long long) rec.skipped_bytes,
       rc == WA_RING_SKIPPED ? rec.skip_reason : "");
    rc = read_one(&ring, &cursor, &rec);
    ok(rc == WA_RING_OK && rec.payload_len == 10, "the ring is not stalled");
    wa_ring_advance(&ring, cursor);

    /* a live producer mid-record: wait, never skip */
    ok(wa_ring_claim(&ring, 4, 40, &claim) == WA_RING_OK, "claim in progress");
    ok(read_one(&ring, &cursor, &rec) == WA_RING_WAIT,
       "a live producer's claim: WAIT");
    memcpy(claim.payload, "0123456789012345678901234567890123456789", 40);
    wa_ring_commit(&ring, &claim);
    ok(read_one(&ring, &cursor, &rec) == WA_RING_OK, "then read once committed");

    /* space claimed but no header ever written (died right after the CAS) */
    tail = wa_ring_tail(&ring);
    __atomic_store_n(&ring.hdr->tail, tail + 64, __ATOMIC_RELEASE);
    memset(ring.data + (tail & ring.mask), 0, 64);
    ok(wa_ring_put(&ring, 3, "behind-a-hole", 13) == WA_RING_OK,
       "a record behind 64 claimed bytes with no header");
    now = wa_now_ms();
    rc = wa_ring_read(&ring, &cursor, &rec, now);
    ok(rc == WA_RING_WAIT
       && wa_ring_read(&ring, &cursor, &rec, now + 1000) == WA_RING_WAIT,
       "no header: WAIT while it may still be written");
    rc = wa_ring_read(&ring, &cursor, &rec, now + WA_RING_STUCK_SEC * 1000 + 1);
    ok(rc == WA_RING_SKIPPED && rec.skipped_bytes == 64,
       "after %d s without progress: the hole is skipped (%llu bytes)",
       WA_RING_STUCK_SEC, (unsigned long long) rec.skipped_bytes);
    rc = wa_ring_read(&ring, &cursor, &rec, now + WA_RING_STUCK_SEC * 1000 + 2);
    ok(rc == WA_RING_OK && rec.payload_len == 13, "and the next record read");

    /* ---- claim, commit, abandon: exactly one side wins ---- */

    ok(fresh(&ring, CAP) == WA_RING_OK
       && wa_ring_open(&other, path, 0, 0, 0600, err, sizeof(err))
          == WA_RING_OK, "fresh ring, and a second handle as the reader");
    cursor = 0;

    /* header written, the producer stalls past the reader's patience */
    ok(wa_ring_claim(&ring, 5, 20, &claim) == WA_RING_OK, "claim");
    now = 1000000;
    ok(wa_ring_read(&other, &cursor, &rec, now) == WA_RING_WAIT
       && wa_ring_read(&other, &cursor, &rec, now + 4000) == WA_RING_WAIT,
       "CLAIMED: the reader waits");
    rc = wa_ring_read(&other, &cursor, &rec, now + WA_RING_STUCK_SEC * 1000);
    ok(rc == WA_RING_SKIPPED && rec.pos == 0 && rec.skipped_bytes == 64
       && strcmp(rec.skip_reason, "abandoned after "
                 WA_STR(WA_RING_STUCK_SEC) " s without publish") == 0
       && ring.hdr->skipped_records == 1 && ring.hdr->skipped_bytes == 64,
       "after %d s of its own clock it abandons the claim: %s",
       WA_RING_STUCK_SEC, rc == WA_RING_SKIPPED ? rec.skip_reason : "");
    memcpy(claim.payload, "stalled-but-alive!!!", 20);
    ok(wa_ring_commit(&ring, &claim) == WA_RING_ABANDONED
       && ring.hdr->published == 0,
       "the producer wakes up: its commit fails with WA_RING_ABANDONED");
    ok(wa_ring_put(&ring, 5, "next", 4) == WA_RING_OK
       && wa_ring_read(&other, &cursor, &rec, now + 6000) == WA_RING_OK
       && rec.payload_len == 4 && memcmp(rec.payload, "next", 4) == 0
       && wa_ring_read(&other, &cursor, &rec, now + 6001) == WA_RING_EMPTY,
       "the reader never returns the abandoned record, reads the next");

    /* a producer that commits just before the reader's deadline wins */
    ok(wa_ring_claim(&ring, 5, 20, &claim) == WA_RING_OK
       && wa_ring_read(&other, &cursor, &rec, now) == WA_RING_WAIT,
       "claim, the reader waits");
    memcpy(claim.payload, "just-in-time-record!", 20);
    ok(wa_ring_commit(&ring, &claim) == WA_RING_OK,
       "committed before the reader gave up: OK");
    rc = wa_ring_read(&other, &cursor, &rec, now + WA_RING_STUCK_SEC * 1000
                      + 1);
    ok(rc == WA_RING_OK && rec.payload_len == 20
       && memcmp(rec.payload, "just-in-time-record!", 20) == 0,
       "read after the deadline: the record, not a skip");

    /* no header yet: the reader stamps the slots, the header CAS fails */
    hook_reader = &other;
    hook_cursor = &cursor;
    hook_point = WA_RING_HOOK_CLAIMED;
    hook_now = now;
    hook_rc = 0;
    rc = wa_ring_claim(&ring, 5, 20, &claim);
    ok(hook_rc == WA_RING_SKIPPED && hook_rec.skipped_bytes == 64
       && strstr(hook_rec.skip_reason, "no record header") != NULL,
       "stalled right after the tail CAS: the reader stamps and skips the "
       "64 bytes");
    ok(rc == WA_RING_ABANDONED,
       "then the producer's header CAS fails: WA_RING_ABANDONED");
    ok(wa_ring_put(&ring, 5, "after-hole", 10) == WA_RING_OK
       && wa_ring_read(&other, &cursor, &rec, now) == WA_RING_OK
       && memcmp(rec.payload, "after-hole", 10) == 0,
       "the next record is read");

    /* the same at the wrap: the PAD claimed in the same CAS is stamped */
    while (wa_ring_tail(&ring) % CAP < CAP - 200) {
        wa_ring_put(&ring, 5, buf, 100);
        wa_ring_read(&other, &cursor, &rec, now);
        wa_ring_advance(&other, cursor);
    }
    tail = wa_ring_tail(&ring);
    hook_point = WA_RING_HOOK_CLAIMED;
    hook_now = now + 100000;
    hook_rc = 0;
    rc = wa_ring_claim(&ring, 5, 300, &claim);
    ok(hook_rc == WA_RING_SKIPPED && rc == WA_RING_ABANDONED
       && hook_rec.skipped_bytes == CAP - tail % CAP + 336
       && wa_ring_tail(&ring) == cursor,
       "a claim with a PAD stalled before both headers: all %llu bytes "
       "stamped and skipped, the claim fails",
       (unsigned long long) hook_rec.skipped_bytes);

    /* the written hook: stalled between payload and commit */
    hook_point = WA_RING_HOOK_WRITTEN;
    hook_now = now + 200000;
    hook_rc = 0;
    rc = wa_ring_put(&ring, 5, "written-not-committed", 21);
    ok(hook_rc == WA_RING_SKIPPED && rc == WA_RING_ABANDONED
       && strstr(hook_rec.skip_reason, "abandoned after") != NULL,
       "stalled before its commit: dropped by the reader, the publish "
       "fails");

    /* a reader restarted from head skips what its predecessor gave up */
    ok(wa_ring_put(&ring, 5, "last", 4) == WA_RING_OK, "one more record");
    wa_ring_close(&other);
    ok(wa_ring_open(&other, path, 0, 0, 0600, err, sizeof(err)) == WA_RING_OK,
       "a new reader opens the ring: %s", err);
    cursor = wa_ring_head(&other);
    i = 0;
    while ((rc = wa_ring_read(&other, &cursor, &rec, 1)) == WA_RING_SKIPPED) {
        i++;
    }
    ok(i == 2 && rc == WA_RING_OK && memcmp(rec.payload, "last", 4) == 0
       && wa_ring_read(&other, &cursor, &rec, 1) == WA_RING_EMPTY,
       "it skips the stamped slots and the dropped record at once (%d "
       "skips), then reads the last record", i);
    wa_ring_close(&other);

    /* ---- the file changed under its users ---- */

    ok(wa_ring_check(&ring, path, err, sizeof(err)) == WA_RING_OK,
       "check: the file is the mapped one");
    unlink(path);
    ok(wa_ring_check(&ring, path, err, sizeof(err)) == WA_RING_ERROR
       && strstr(err, "deleted") != NULL, "deleted file detected: %s", err);
    wa_ring_close(&ring);

    ok(fresh(&ring, CAP) == WA_RING_OK
       && truncate(path, WA_RING_HDR_SIZE) == 0
       && wa_ring_check(&ring, path, err, sizeof(err)) == WA_RING_ERROR
       && strstr(err, "truncated") != NULL, "truncated file detected: %s",
       err);
    wa_ring_close(&ring);

    unlink(path);

    return done();
}
