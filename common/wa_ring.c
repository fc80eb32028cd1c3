/*
 * wa_ring: see wa_ring.h for the protocol.
 */

/* fallocate(2); nginx's build of this file does not define it */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "wa_ring.h"


#define WA_REC_HDR      ((uint64_t) sizeof(wa_ring_rec_hdr_t))
#define WA_ALIGN_MASK   ((uint64_t) WA_RING_ALIGN - 1)
#define WA_ALIGN(n)     (((n) + WA_ALIGN_MASK) & ~WA_ALIGN_MASK)
#define WA_CTL_POS(c)   ((c) & ~WA_ALIGN_MASK)
#define WA_CTL_STATE(c) ((c) & WA_ALIGN_MASK)
#define WA_STR_(x)      #x
#define WA_STR(x)       WA_STR_(x)


/* defined only by a test shim (t/shim/ring_hook.c, preloaded); NULL in
 * production, where it costs one predictable branch per record */
extern void wa_ring_test_hook(int point, unsigned type)
    __attribute__((weak));


static int wa_ring_init_file(int fd, uint64_t capacity, char *err,
    size_t errlen);
static int wa_ring_validate(wa_ring_hdr_t *hdr, uint64_t want, off_t size,
    char *err, size_t errlen);
static wa_ring_rec_hdr_t *wa_ring_rec(wa_ring_t *ring, uint64_t pos);
static int wa_ring_mark(wa_ring_rec_hdr_t *rec, uint64_t pos,
    uint64_t state);
static int wa_ring_skip(wa_ring_t *ring, uint64_t *cursor, wa_ring_rec_t *rec,
    uint64_t bytes, const char *reason, int corrupt);
static int wa_ring_stalled(wa_ring_t *ring, uint64_t pos, uint64_t ctl,
    uint64_t now_ms);
static int wa_ring_stuck(wa_ring_t *ring, uint64_t *cursor, uint64_t tail,
    uint64_t ctl, wa_ring_rec_t *rec, uint64_t now_ms);
static uint64_t wa_ring_stamp(wa_ring_t *ring, uint64_t q, uint64_t tail,
    int stamp);


uint64_t
wa_now_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);

    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}


uint64_t
wa_mono_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}


int
wa_ring_open(wa_ring_t *ring, const char *path, uint64_t capacity, int flags,
    mode_t mode, char *err, size_t errlen)
{
    int              fd, oflags;
    void            *map;
    struct stat      st;
    wa_ring_hdr_t   *hdr;

    memset(ring, 0, sizeof(wa_ring_t));
    ring->fd = -1;

    if (capacity != 0
        && (capacity < WA_RING_MIN_SIZE || (capacity & (capacity - 1)) != 0))
    {
        snprintf(err, errlen, "ring size %llu is not a power of two of at "
                 "least %d", (unsigned long long) capacity, WA_RING_MIN_SIZE);
        return WA_RING_ERROR;
    }

    oflags = O_RDWR | O_CLOEXEC;
    if (flags & WA_RING_CREATE) {
        oflags |= O_CREAT;
    }

    fd = open(path, oflags, mode);
    if (fd == -1) {
        snprintf(err, errlen, "open(\"%s\"): %s", path, strerror(errno));
        return WA_RING_ERROR;
    }

    /* one initialiser at a time; readers of a valid file need no lock */
    if (flock(fd, LOCK_EX) == -1) {
        snprintf(err, errlen, "flock(\"%s\"): %s", path, strerror(errno));
        goto failed;
    }

    if (fstat(fd, &st) == -1) {
        snprintf(err, errlen, "fstat(\"%s\"): %s", path, strerror(errno));
        goto failed;
    }

    if (st.st_mode & S_IWOTH) {
        snprintf(err, errlen, "\"%s\" is writable by any user (mode %04o): "
                 "anyone could forge or erase records; chmod o-w it", path,
                 (unsigned) (st.st_mode & 07777));
        goto failed;
    }

    if (st.st_size == 0) {
        if (!(flags & WA_RING_CREATE) || capacity == 0) {
            snprintf(err, errlen, "\"%s\" is empty: not a ring yet", path);
            goto failed;
        }

        if (wa_ring_init_file(fd, capacity, err, errlen) != WA_RING_OK) {
            goto failed;
        }

        st.st_size = (off_t) (WA_RING_HDR_SIZE + capacity);
    }

    /*
     * A ring an older build created is sparse: its holes get their blocks
     * now (existing bytes are not touched), or the disk is too full for
     * the ring to be safe to write. (fallocate(2), not posix_fallocate:
     * glibc's emulation of the latter writes bytes, racing the workers.)
     */
    if ((flags & WA_RING_CREATE) && st.st_size > 0
        && fallocate(fd, 0, 0, st.st_size) == -1
        && errno != EOPNOTSUPP && errno != ENOSYS)
    {
        snprintf(err, errlen, "\"%s\": cannot allocate the blocks of its "
                 "%lld bytes: %s", path, (long long) st.st_size,
                 strerror(errno));
        goto failed;
    }

    if ((uint64_t) st.st_size < WA_RING_HDR_SIZE + WA_RING_MIN_SIZE) {
        snprintf(err, errlen, "\"%s\" has %lld bytes: too small for a ring",
                 path, (long long) st.st_size);
        goto failed;
    }

    map = mmap(NULL, (size_t) st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED,
               fd, 0);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "mmap(\"%s\"): %s", path, strerror(errno));
        goto failed;
    }

    hdr = map;

    if (wa_ring_validate(hdr, capacity, st.st_size, err, errlen)
        != WA_RING_OK)
    {
        munmap(map, (size_t) st.st_size);
        goto failed;
    }

    (void) flock(fd, LOCK_UN);

    ring->fd = fd;
    ring->map = map;
    ring->map_size = (size_t) st.st_size;
    ring->hdr = hdr;
    ring->data = (unsigned char *) map + WA_RING_HDR_SIZE;
    ring->capacity = hdr->capacity;
    ring->mask = hdr->capacity - 1;
    ring->dev = st.st_dev;
    ring->ino = st.st_ino;
    ring->pid = getpid();

    return WA_RING_OK;

failed:

    close(fd);
    return WA_RING_ERROR;
}


/*
 * Every block of the file is written once, with zeros, as PostgreSQL does
 * with its WAL segments: a store into a hole of a mapped file on a full
 * disk is a SIGBUS, which would kill the worker mid-record; and with no
 * block left to allocate, a sync of the ring (sync=on) writes data pages
 * only, no file system metadata. The new file is synced before it is
 * used.
 */
static int
wa_ring_init_file(int fd, uint64_t capacity, char *err, size_t errlen)
{
    off_t          off, size;
    ssize_t        n;
    wa_ring_hdr_t  hdr;
    static const unsigned char  zeros[65536];

    size = (off_t) (WA_RING_HDR_SIZE + capacity);

    for (off = 0; off < size; off += n) {
        n = pwrite(fd, zeros, (size_t) (size - off < (off_t) sizeof(zeros)
                                        ? size - off : (off_t) sizeof(zeros)),
                   off);

        if (n <= 0) {
            if (n == -1 && errno == EINTR) {
                n = 0;
                continue;
            }

            snprintf(err, errlen, "cannot fill the ring file with its %llu "
                     "bytes: %s", (unsigned long long) size,
                     n == -1 ? strerror(errno) : "short write");

            /* empty again: the next start tries anew (if this fails too,
             * the file has no magic and is refused, loudly) */
            if (ftruncate(fd, 0) == -1) {
                return WA_RING_ERROR;
            }

            return WA_RING_ERROR;
        }
    }

    memset(&hdr, 0, sizeof(wa_ring_hdr_t));
    hdr.version = WA_RING_VERSION;
    hdr.hdr_size = WA_RING_HDR_SIZE;
    hdr.capacity = capacity;
    hdr.created_ms = wa_now_ms();

    /* everything but the magic first: a file without it is not a ring */
    if (pwrite(fd, &hdr, sizeof(wa_ring_hdr_t), 0)
        != (ssize_t) sizeof(wa_ring_hdr_t))
    {
        snprintf(err, errlen, "write header: %s", strerror(errno));
        return WA_RING_ERROR;
    }

    hdr.magic = WA_RING_MAGIC;

    if (pwrite(fd, &hdr.magic, sizeof(hdr.magic), 0)
        != (ssize_t) sizeof(hdr.magic))
    {
        snprintf(err, errlen, "write magic: %s", strerror(errno));
        return WA_RING_ERROR;
    }

    /* on disk now, once, rather than by the first sync a request waits
     * for (sync=on) or the kernel's writeback under the first load */
    if (fdatasync(fd) == -1) {
        snprintf(err, errlen, "fdatasync of the new ring file: %s",
                 strerror(errno));
        return WA_RING_ERROR;
    }

    return WA_RING_OK;
}


static int
wa_ring_validate(wa_ring_hdr_t *hdr, uint64_t want, off_t size, char *err,
    size_t errlen)
{
    if (hdr->magic != WA_RING_MAGIC) {
        snprintf(err, errlen, "not an ngx_wa ring (bad magic); refusing to "
                 "overwrite it");
        return WA_RING_ERROR;
    }

    if (hdr->version != WA_RING_VERSION || hdr->hdr_size != WA_RING_HDR_SIZE) {
        snprintf(err, errlen, "ring version %u (header %u bytes), this build "
                 "reads version %d", hdr->version, hdr->hdr_size,
                 WA_RING_VERSION);
        return WA_RING_ERROR;
    }

    if (hdr->capacity < WA_RING_MIN_SIZE
        || (hdr->capacity & (hdr->capacity - 1)) != 0
        || (uint64_t) size != WA_RING_HDR_SIZE + hdr->capacity)
    {
        snprintf(err, errlen, "ring header says %llu bytes, file has %lld: "
                 "truncated or corrupt", (unsigned long long) hdr->capacity,
                 (long long) size);
        return WA_RING_ERROR;
    }

    if (hdr->tail < hdr->head || hdr->tail - hdr->head > hdr->capacity
        || (hdr->head & WA_ALIGN_MASK) || (hdr->tail & WA_ALIGN_MASK))
    {
        snprintf(err, errlen, "ring positions are corrupt (head %llu, tail "
                 "%llu)", (unsigned long long) hdr->head,
                 (unsigned long long) hdr->tail);
        return WA_RING_ERROR;
    }

    if (want != 0 && hdr->capacity != want) {
        snprintf(err, errlen, "ring has %llu bytes, %llu configured; drain "
                 "it and remove the file to change its size",
                 (unsigned long long) hdr->capacity,
                 (unsigned long long) want);
        return WA_RING_ERROR;
    }

    return WA_RING_OK;
}


void
wa_ring_close(wa_ring_t *ring)
{
    if (ring->map != NULL) {
        munmap(ring->map, ring->map_size);
    }

    if (ring->fd != -1) {
        close(ring->fd);
    }

    ring->map = NULL;
    ring->hdr = NULL;
    ring->data = NULL;
    ring->fd = -1;
}


int
wa_ring_check(wa_ring_t *ring, const char *path, char *err, size_t errlen)
{
    const char   *damage;
    struct stat   st;

    damage = wa_ring_damage(ring);

    if (damage != NULL) {
        snprintf(err, errlen, "\"%s\" was %s", path, damage);
        return WA_RING_ERROR;
    }

    if (stat(path, &st) == -1) {
        snprintf(err, errlen, "stat(\"%s\"): %s", path, strerror(errno));
        return WA_RING_ERROR;
    }

    if (st.st_dev != ring->dev || st.st_ino != ring->ino) {
        snprintf(err, errlen, "\"%s\" was replaced by another file", path);
        return WA_RING_ERROR;
    }

    return WA_RING_OK;
}


const char *
wa_ring_damage(wa_ring_t *ring)
{
    struct stat  st;

    if (fstat(ring->fd, &st) == -1 || (size_t) st.st_size != ring->map_size) {
        return "truncated";
    }

    if (st.st_nlink == 0) {
        return "deleted";
    }

    return NULL;
}


uint32_t
wa_ring_max_payload(const wa_ring_t *ring)
{
    uint64_t  max;

    max = ring->capacity / 4 - WA_REC_HDR;

    return max > UINT32_MAX ? UINT32_MAX : (uint32_t) max;
}


uint64_t
wa_ring_head(const wa_ring_t *ring)
{
    return __atomic_load_n(&ring->hdr->head, __ATOMIC_ACQUIRE);
}


uint64_t
wa_ring_tail(const wa_ring_t *ring)
{
    return __atomic_load_n(&ring->hdr->tail, __ATOMIC_ACQUIRE);
}


#define WA_RING_COUNTER_ROW(name, metric, labels)                             \
    { #name, offsetof(wa_ring_hdr_t, name), metric, labels },

const wa_ring_counter_t  wa_ring_producer_counters[] = {
    WA_RING_PRODUCER_COUNTERS(WA_RING_COUNTER_ROW)
};

const wa_ring_counter_t  wa_ring_writer_counters[] = {
    WA_RING_WRITER_COUNTERS(WA_RING_COUNTER_ROW)
    WA_RING_WRITER_COUNTERS_TAIL(WA_RING_COUNTER_ROW)
};

const wa_ring_counter_t  wa_ring_writer_gauges[] = {
    WA_RING_WRITER_GAUGES(WA_RING_COUNTER_ROW)
};

const size_t  wa_ring_producer_counters_n =
    sizeof(wa_ring_producer_counters) / sizeof(wa_ring_counter_t);
const size_t  wa_ring_writer_counters_n =
    sizeof(wa_ring_writer_counters) / sizeof(wa_ring_counter_t);
const size_t  wa_ring_writer_gauges_n =
    sizeof(wa_ring_writer_gauges) / sizeof(wa_ring_counter_t);


uint64_t
wa_ring_counter(const wa_ring_hdr_t *hdr, const wa_ring_counter_t *c)
{
    return __atomic_load_n((const uint64_t *)
                               ((const unsigned char *) hdr + c->offset),
                           __ATOMIC_RELAXED);
}


static wa_ring_rec_hdr_t *
wa_ring_rec(wa_ring_t *ring, uint64_t pos)
{
    return (wa_ring_rec_hdr_t *) (ring->data + (pos & ring->mask));
}


/*
 * The producer's first ctl write at pos: fails if a reader already stamped
 * pos (it gave up waiting for this header), so nothing is published at a
 * position the reader has passed. len and payload_len share the ctl's
 * 16-byte slot, which a stamp leaves alone, and are published by the CAS.
 */

static int
wa_ring_mark(wa_ring_rec_hdr_t *rec, uint64_t pos, uint64_t state)
{
    uint64_t  old;

    old = __atomic_load_n(&rec->ctl, __ATOMIC_ACQUIRE);

    if (WA_CTL_POS(old) == pos && WA_CTL_STATE(old) != 0) {
        return WA_RING_ABANDONED;
    }

    if (!__atomic_compare_exchange_n(&rec->ctl, &old, pos | state, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    {
        return WA_RING_ABANDONED;   /* stamped between our load and CAS */
    }

    return WA_RING_OK;
}


uint64_t
wa_ring_keep(const wa_ring_t *ring)
{
    return ring->capacity / 16;
}


int
wa_ring_claim(wa_ring_t *ring, uint16_t type, uint32_t payload_len,
    wa_ring_claim_t *claim)
{
    return wa_ring_claim_keep(ring, type, payload_len, 0, claim);
}


int
wa_ring_claim_keep(wa_ring_t *ring, uint16_t type, uint32_t payload_len,
    uint64_t keep, wa_ring_claim_t *claim)
{
    uint64_t            need, len, head, tail, rest, pad;
    wa_ring_hdr_t      *hdr;
    wa_ring_rec_hdr_t  *rec;

    hdr = ring->hdr;

    if (payload_len > wa_ring_max_payload(ring)) {
        __atomic_add_fetch(&hdr->refused_too_big, 1, __ATOMIC_RELAXED);
        return WA_RING_TOO_BIG;
    }

    len = WA_ALIGN(WA_REC_HDR + payload_len);

    tail = __atomic_load_n(&hdr->tail, __ATOMIC_ACQUIRE);

    for ( ;; ) {
        /* a record never wraps: pad to the end of the area first */
        rest = ring->capacity - (tail & ring->mask);
        pad = (rest < len) ? rest : 0;
        need = pad + len;

        head = __atomic_load_n(&hdr->head, __ATOMIC_ACQUIRE);

        if (tail + need - head > ring->capacity - keep) {
            __atomic_add_fetch(&hdr->refused, 1, __ATOMIC_RELAXED);
            return WA_RING_FULL;
        }

        if (__atomic_compare_exchange_n(&hdr->tail, &tail, tail + need, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        {
            break;
        }
    }

    if (wa_ring_test_hook) {
        wa_ring_test_hook(WA_RING_HOOK_CLAIMED, type);
    }

    if (pad) {
        rec = wa_ring_rec(ring, tail);
        rec->len = (uint32_t) pad;
        rec->payload_len = 0;

        /* the reader stamped the pad: it stamps on to the next valid
         * header, so the record's slot too; leave both */
        if (wa_ring_mark(rec, tail, WA_RING_PAD) != WA_RING_OK) {
            return WA_RING_ABANDONED;
        }

        tail += pad;
    }

    rec = wa_ring_rec(ring, tail);

    rec->len = (uint32_t) len;
    rec->payload_len = payload_len;

    if (wa_ring_mark(rec, tail, WA_RING_CLAIMED) != WA_RING_OK) {
        return WA_RING_ABANDONED;
    }

    /* the rest of the header is read only once READY */
    rec->pid = (uint32_t) ring->pid;
    rec->crc = 0;
    rec->type = type;
    rec->flags = 0;
    rec->claim_sec = (uint32_t) (wa_now_ms() / 1000);

    claim->rec = rec;
    claim->payload = (unsigned char *) rec + WA_REC_HDR;
    claim->pos = tail;

    return WA_RING_OK;
}


int
wa_ring_commit(wa_ring_t *ring, wa_ring_claim_t *claim)
{
    uint64_t            ctl;
    wa_ring_rec_hdr_t  *rec;

    rec = claim->rec;

    if (wa_ring_test_hook) {
        wa_ring_test_hook(WA_RING_HOOK_WRITTEN, rec->type);
    }

    rec->crc = wa_crc32c(0, claim->payload, rec->payload_len);

    /* CLAIMED -> READY, unless the reader got there first with
     * CLAIMED -> DROPPED: it has moved past, the record is not stored */
    ctl = claim->pos | WA_RING_CLAIMED;

    if (!__atomic_compare_exchange_n(&rec->ctl, &ctl,
                                     claim->pos | WA_RING_READY, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    {
        return WA_RING_ABANDONED;
    }

    __atomic_add_fetch(&ring->hdr->published, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&ring->hdr->published_bytes, rec->len,
                       __ATOMIC_RELAXED);

    return WA_RING_OK;
}


int
wa_ring_put(wa_ring_t *ring, uint16_t type, const void *payload,
    uint32_t len)
{
    int              rc;
    wa_ring_claim_t  claim;

    rc = wa_ring_claim(ring, type, len, &claim);
    if (rc != WA_RING_OK) {
        return rc;
    }

    memcpy(claim.payload, payload, len);

    return wa_ring_commit(ring, &claim);
}


int
wa_ring_read(wa_ring_t *ring, uint64_t *cursor, wa_ring_rec_t *rec,
    uint64_t now_ms)
{
    uint32_t            crc;
    uint64_t            pos, tail, ctl, len, state, q;
    wa_ring_rec_hdr_t  *h;

    memset(rec, 0, sizeof(wa_ring_rec_t));

    for ( ;; ) {
        pos = *cursor;
        tail = __atomic_load_n(&ring->hdr->tail, __ATOMIC_ACQUIRE);

        if (pos >= tail) {
            ring->stuck = 0;
            return WA_RING_EMPTY;
        }

        h = wa_ring_rec(ring, pos);
        ctl = __atomic_load_n(&h->ctl, __ATOMIC_ACQUIRE);

        /*
         * Claimed, header not written yet, or its producer died. State 0
         * is the same: in a fresh file every ctl is 0, which at position 0
         * reads as "position matches" while the producer is still filling
         * in the header.
         */
        if (WA_CTL_POS(ctl) != pos || WA_CTL_STATE(ctl) == 0) {
            return wa_ring_stuck(ring, cursor, tail, ctl, rec, now_ms);
        }

        state = WA_CTL_STATE(ctl);

        if (state == WA_RING_VOID) {
            /* stamped by a reader that stopped before moving head past
             * it: skip the stamped slots again, stamping nothing new */
            q = wa_ring_stamp(ring, pos, tail, 0);

            return wa_ring_skip(ring, cursor, rec, q - pos,
                                "slots stamped abandoned by an earlier "
                                "reader", 1);
        }

        len = h->len;

        /* a length that leaves the area or passes the claimed bytes can
         * only come from a corrupt file */
        if (len < WA_RING_ALIGN || len % WA_RING_ALIGN != 0
            || (pos & ring->mask) + len > ring->capacity
            || pos + len > tail)
        {
            return wa_ring_stuck(ring, cursor, tail, ctl, rec, now_ms);
        }

        if (state == WA_RING_PAD) {
            *cursor = pos + len;
            continue;
        }

        if (len < WA_REC_HDR || h->payload_len > len - WA_REC_HDR) {
            return wa_ring_stuck(ring, cursor, tail, ctl, rec, now_ms);
        }

        if (state == WA_RING_CLAIMED) {
            if (!wa_ring_stalled(ring, pos, ctl, now_ms)) {
                return WA_RING_WAIT;
            }

            /* exactly one of this and the producer's CLAIMED -> READY */
            if (__atomic_compare_exchange_n(&h->ctl, &ctl,
                                            pos | WA_RING_DROPPED, 0,
                                            __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE))
            {
                return wa_ring_skip(ring, cursor, rec, len,
                                    "abandoned after "
                                    WA_STR(WA_RING_STUCK_SEC)
                                    " s without publish", 0);
            }

            continue;           /* published meanwhile: read it */
        }

        if (state == WA_RING_DROPPED) {
            /* dropped by a reader that stopped before moving head */
            return wa_ring_skip(ring, cursor, rec, len,
                                "abandoned after "
                                WA_STR(WA_RING_STUCK_SEC)
                                " s without publish (by an earlier reader)",
                                0);
        }

        if (state != WA_RING_READY) {
            return wa_ring_skip(ring, cursor, rec, len,
                                "record header in an unknown state", 1);
        }

        crc = wa_crc32c(0, (unsigned char *) h + WA_REC_HDR, h->payload_len);

        if (crc != h->crc) {
            return wa_ring_skip(ring, cursor, rec, len, "checksum mismatch",
                                1);
        }

        rec->pos = pos;
        rec->type = h->type;
        rec->pid = h->pid;
        rec->payload = (unsigned char *) h + WA_REC_HDR;
        rec->payload_len = h->payload_len;
        rec->claim_sec = h->claim_sec;

        *cursor = pos + len;
        ring->stuck = 0;

        return WA_RING_OK;
    }
}


/*
 * Whether the reader has seen ctl unchanged at pos for WA_RING_STUCK_SEC of
 * its own clock (now_ms, monotonic): neither the producer's pid (another
 * PID namespace sees none alive) nor its wall clock (it jumps) says
 * whether a producer is alive, and skipping is safe anyway now; only the
 * cost of failing a slow producer is weighed here.
 */

static int
wa_ring_stalled(wa_ring_t *ring, uint64_t pos, uint64_t ctl, uint64_t now_ms)
{
    if (!ring->stuck || ring->stuck_pos != pos || ring->stuck_ctl != ctl
        || now_ms < ring->stuck_since_ms)
    {
        ring->stuck = 1;
        ring->stuck_pos = pos;
        ring->stuck_ctl = ctl;
        ring->stuck_since_ms = now_ms;
        return 0;
    }

    return now_ms - ring->stuck_since_ms >= WA_RING_STUCK_SEC * 1000;
}


static int
wa_ring_skip(wa_ring_t *ring, uint64_t *cursor, wa_ring_rec_t *rec,
    uint64_t bytes, const char *reason, int corrupt)
{
    rec->pos = *cursor;
    rec->skipped_bytes = bytes;
    rec->skip_reason = reason;

    __atomic_add_fetch(corrupt ? &ring->hdr->corrupt_records
                               : &ring->hdr->skipped_records,
                       1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&ring->hdr->skipped_bytes, bytes, __ATOMIC_RELAXED);

    *cursor += bytes;
    ring->stuck = 0;

    return WA_RING_SKIPPED;
}


/*
 * No usable header at the cursor for WA_RING_STUCK_SEC: a producer stalled
 * or died between its claim and its header, or the bytes are corrupt.
 * Stamp every slot up to the next valid header, so that a producer whose
 * claim starts in there fails its header CAS instead of publishing behind
 * the cursor, and skip them.
 */

static int
wa_ring_stuck(wa_ring_t *ring, uint64_t *cursor, uint64_t tail, uint64_t ctl,
    wa_ring_rec_t *rec, uint64_t now_ms)
{
    uint64_t            pos, q;
    wa_ring_rec_hdr_t  *h;

    pos = *cursor;

    if (!wa_ring_stalled(ring, pos, ctl, now_ms)) {
        return WA_RING_WAIT;
    }

    q = pos;

    if (WA_CTL_POS(ctl) == pos && WA_CTL_STATE(ctl) != 0) {
        /* a header with an impossible length: corrupt; a claim must
         * still not be published into bytes skipped */
        if (WA_CTL_STATE(ctl) == WA_RING_CLAIMED) {
            h = wa_ring_rec(ring, pos);

            if (!__atomic_compare_exchange_n(&h->ctl, &ctl,
                                             pos | WA_RING_DROPPED, 0,
                                             __ATOMIC_ACQ_REL,
                                             __ATOMIC_ACQUIRE))
            {
                return WA_RING_WAIT;
            }
        }

        q = pos + WA_RING_ALIGN;
    }

    q = wa_ring_stamp(ring, q, tail, 1);

    if (q == pos) {
        return WA_RING_WAIT;    /* the header was written just now */
    }

    if (q > tail) {
        q = tail;      /* a tail off the alignment is corrupt too */
    }

    return wa_ring_skip(ring, cursor, rec, q - pos,
                        "no record header after "
                        WA_STR(WA_RING_STUCK_SEC) " s (a producer stalled "
                        "or died before writing it, or corrupt bytes); "
                        "stamped abandoned", 1);
}


/*
 * From q, the first slot before tail holding a valid header, passing
 * slots already stamped VOID; with stamp, CAS-stamping each other slot on
 * the way (any may be where an unwritten claim starts). A failed CAS means
 * a producer wrote its header there just now: look at the slot again.
 */

static uint64_t
wa_ring_stamp(wa_ring_t *ring, uint64_t q, uint64_t tail, int stamp)
{
    uint64_t            ctl, state;
    wa_ring_rec_hdr_t  *h;

    while (q < tail) {
        h = wa_ring_rec(ring, q);
        ctl = __atomic_load_n(&h->ctl, __ATOMIC_ACQUIRE);
        state = WA_CTL_STATE(ctl);

        if (WA_CTL_POS(ctl) == q && state != 0) {
            if (state == WA_RING_VOID) {
                q += WA_RING_ALIGN;
                continue;
            }

            if (state <= WA_RING_DROPPED) {
                break;
            }
        }

        if (!stamp) {
            break;
        }

        if (__atomic_compare_exchange_n(&h->ctl, &ctl, q | WA_RING_VOID, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        {
            q += WA_RING_ALIGN;
        }
    }

    return q;
}


void
wa_ring_advance(wa_ring_t *ring, uint64_t pos)
{
    __atomic_store_n(&ring->hdr->head, pos, __ATOMIC_RELEASE);
}


/*
 * CRC-32C (Castagnoli), reflected: x86-64's crc32 instruction where the CPU
 * has it (SSE4.2, eight bytes a step), else a table (a byte a step). Every
 * record is summed once by its producer and once by the writer.
 */

uint32_t
wa_crc32c_table(uint32_t crc, const void *buf, size_t len)
{
    int                   i, k;
    uint32_t              c;
    const unsigned char  *p;
    static uint32_t       table[256];
    static int            ready;

    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
        for (i = 0; i < 256; i++) {
            c = (uint32_t) i;
            for (k = 0; k < 8; k++) {
                c = (c & 1) ? (c >> 1) ^ 0x82f63b78 : c >> 1;
            }
            table[i] = c;
        }

        __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    }

    p = buf;
    crc = ~crc;

    while (len--) {
        crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    }

    return ~crc;
}


#if defined(__x86_64__) && defined(__GNUC__)

__attribute__((target("sse4.2")))
static uint32_t
wa_crc32c_sse42(uint32_t crc, const void *buf, size_t len)
{
    uint64_t              c, v;
    const unsigned char  *p;

    p = buf;
    c = ~crc;

    for ( /* void */ ; len >= 8; len -= 8, p += 8) {
        memcpy(&v, p, 8);                   /* any alignment */
        c = __builtin_ia32_crc32di(c, v);
    }

    crc = (uint32_t) c;

    while (len--) {
        crc = __builtin_ia32_crc32qi(crc, *p++);
    }

    return ~crc;
}

#endif


uint32_t
wa_crc32c(uint32_t crc, const void *buf, size_t len)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (__builtin_cpu_supports("sse4.2")) {
        return wa_crc32c_sse42(crc, buf, len);
    }
#endif

    return wa_crc32c_table(crc, buf, len);
}
