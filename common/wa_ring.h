/*
 * wa_ring: a many-producer, one-consumer ring of variable-size records in
 * a file mapped MAP_SHARED by every nginx worker and by wa-writer.
 *
 * Plain C11 with no nginx dependency: the module and the writer both link it.
 *
 * Positions are absolute byte counts that only grow (64-bit, never wrap in
 * practice); offset in the data area = pos & (capacity - 1).
 *
 * Each record's ctl word (pos | state) is the one place where a producer
 * and the consumer decide its fate; every change to it after the claim is
 * a CAS, so exactly one side wins:
 *
 *   claim:     CAS on hdr->tail (exact free-space check against hdr->head).
 *   header:    write len and payload_len, then CAS ctl from what it holds
 *              to pos | CLAIMED (release). It fails, and so does the claim
 *              (WA_RING_ABANDONED), if ctl already holds pos with a state:
 *              the consumer stamped the slot VOID, having given up on it.
 *   commit:    copy the payload, compute crc32c, then CAS ctl from
 *              pos | CLAIMED to pos | READY (release). It fails
 *              (WA_RING_ABANDONED) if the consumer made it pos | DROPPED
 *              first. Only WA_RING_OK means stored: the caller must refuse
 *              the request otherwise (nginx answers 503, the sender
 *              retries).
 *   consumer:  reads records from its private cursor (>= head); a record at
 *              pos is valid only if (ctl & ~15) == pos, which rejects bytes
 *              left from an earlier lap. It loads ctl with acquire: len and
 *              payload_len are valid once it sees CLAIMED, the rest of the
 *              header and the payload once it sees READY. hdr->head moves
 *              only through wa_ring_advance(), which the writer calls after
 *              COMMIT.
 *
 * A record that does not fit before the end of the data area is preceded by
 * a PAD record covering the rest of the area (claimed in the same CAS, its
 * header written with the same CAS as a record's, before the record's), so
 * a record is always contiguous. If the PAD's header CAS fails, the claim
 * fails without writing the record's: the consumer, stamping on to the next
 * valid header, stamps that slot too.
 *
 * Liveness without pids or wall clocks: the consumer gives up on a position
 * only after it saw the same ctl there for WA_RING_STUCK_SEC of its own
 * monotonic clock (now_ms). Then:
 *   - header CLAIMED: CAS it to pos | DROPPED and skip len bytes; if the CAS
 *     fails the producer published just now, and the record is read;
 *   - no header (the producer stalled or died right after the tail CAS):
 *     CAS-stamp every 16-byte slot from pos to the next valid header with
 *     slot | VOID, so a producer whose claim starts in there fails its
 *     header CAS; a stamp CAS that fails means a header was written there
 *     just now, and the slot is looked at again. The header's other
 *     fields (pid, type, ...) lie in the slot after the ctl's and are
 *     written only after the header CAS, so they never overwrite a stamp.
 * A consumer restarted from head skips DROPPED records and VOID slots left
 * by its predecessor. Every skip is reported to the caller (to be logged)
 * and counted in the header.
 *
 * Limit: a producer stalled for longer than it takes the ring to go round
 * once after its record was given up on writes the rest of its payload over
 * the bytes of a later record, whose checksum then fails; only its commit
 * tells it that it lost.
 */

#ifndef WA_RING_H
#define WA_RING_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>


#define WA_RING_MAGIC        0x474e5241574e474eULL   /* "NGNWARNG" */
#define WA_RING_VERSION      1
#define WA_RING_HDR_SIZE     4096
#define WA_RING_ALIGN        16
#define WA_RING_MIN_SIZE     (64 * 1024)
#define WA_RING_DEFAULT_SIZE (64 * 1024 * 1024)
#define WA_RING_STUCK_SEC    5
#define WA_RING_ERR_LEN      256

/* record states, in the low 4 bits of rec->ctl */
#define WA_RING_CLAIMED      1
#define WA_RING_READY        2
#define WA_RING_PAD          3
#define WA_RING_DROPPED      4       /* claimed, given up on by the reader */
#define WA_RING_VOID         5       /* slot stamped by the reader: no
                                      * header may be written there */

/* points of wa_ring_test_hook(), a test build's way to stop or kill a
 * producer between claim and commit */
#define WA_RING_HOOK_CLAIMED 1       /* tail claimed, no header yet */
#define WA_RING_HOOK_WRITTEN 2       /* payload written, not committed */


/*
 * The header's counters, listed once: the fields of wa_ring_hdr_t, the
 * keys of nginx's wa_status JSON and of `wa-writer status` (the name), and
 * the Prometheus metric with its labels (NULL: not exported). Each list is
 * in header order, which is every output's order.
 */
#define WA_RING_PRODUCER_COUNTERS(X)                                          \
    X(published,          "wa_published_records_total", "")                 \
    X(published_bytes,    "wa_published_bytes_total", "")                   \
    /* claims refused: ring full */                                           \
    X(refused,            "wa_refused_total", "{reason=\"full\"}")           \
    /* claims refused: record over the largest payload */                     \
    X(refused_too_big,    "wa_refused_total", "{reason=\"too_big\"}")

#define WA_RING_WRITER_COUNTERS(X)                                            \
    X(last_flush_records, NULL, "")                                           \
    /* records committed, total */                                            \
    X(rows_written,       "wa_writer_rows_written_total", "")               \
    X(dead_letters,       "wa_writer_dead_letters_total", "")               \
    X(flush_failures,     "wa_writer_flush_failures_total", "")             \
    /* claims given up on */                                                  \
    X(skipped_records,    "wa_writer_skipped_records_total", "")            \
    X(skipped_bytes,      NULL, "")                                           \
    /* checksum or header mismatch */                                         \
    X(corrupt_records,    "wa_writer_corrupt_records_total", "")

/* What the writer counts in the database (sql/functions/dead_letters.sql) for
 * wa_status, which cannot query it: gauges, exported when counted. */
#define WA_RING_WRITER_GAUGES(X)                                              \
    /* dead letters not replayed yet */                                       \
    X(dead_letters_waiting, "wa_writer_dead_letters_waiting", "")           \
    /* receipts waiting for their message */                                  \
    X(receipts_waiting,   "wa_writer_receipts_waiting", "")
/*
 * Writer counters appended to version 1's header after the gauges: no
 * field before them moved, and a ring an older build made has zeros there
 * (its header page was created by ftruncate), so rings in use keep
 * working with builds on either side. They follow the writer counters
 * above in every output.
 */
#define WA_RING_WRITER_COUNTERS_TAIL(X)                                       \
    /* parked receipts applied by a sweep (their message was stored by a */  \
    /* transaction that did not see them) */                                  \
    X(receipts_swept,     "wa_writer_receipts_swept_total", "")             \
    /* parked receipts reported once as overdue (--pending-warn-after) */    \
    X(receipts_overdue,   "wa_writer_receipts_overdue_total", "")           \
    /* batches rolled back by a deadlock or serialization failure and */     \
    /* retried */                                                             \
    X(retried_conflicts,  "wa_writer_retried_conflicts_total", "")

#define WA_RING_COUNTER_FIELD(name, metric, labels)  uint64_t  name;


/* The file header: one 4096-byte page; producer and consumer words on
 * their own cache lines. Layout is part of WA_RING_VERSION. */
typedef struct {
    /* immutable after creation */
    uint64_t  magic;
    uint32_t  version;
    uint32_t  hdr_size;
    uint64_t  capacity;            /* data area bytes, power of two */
    uint64_t  created_ms;
    uint8_t   pad0[32];

    /* producers */
    uint64_t  tail;                /* bytes claimed, absolute */
    uint8_t   pad1[56];

    /* consumer: advanced only after PostgreSQL committed */
    uint64_t  head;
    uint8_t   pad2[56];

    /* producer counters (atomic adds) */
    WA_RING_PRODUCER_COUNTERS(WA_RING_COUNTER_FIELD)
    uint8_t   pad3[32];

    /* writer side, written by the writer only, read by wa_status */
    int32_t   writer_pid;
    uint32_t  writer_flags;
    uint64_t  writer_started_ms;
    uint64_t  writer_heartbeat_ms;
    uint64_t  last_flush_ms;       /* last successful commit */
    WA_RING_WRITER_COUNTERS(WA_RING_COUNTER_FIELD)
    uint64_t  last_error_ms;
    uint64_t  lag_ms;              /* age of the oldest uncommitted record */
    char      last_error[WA_RING_ERR_LEN];

    /*
     * Appended within the header page: bytes every version-1 ring has,
     * zero until a writer that knows them writes them. Older modules and
     * writers never look there, so running workers' mappings and older
     * writers keep working and WA_RING_VERSION stays 1; census_ms 0 says
     * "not counted" (no writer, or an older one).
     */
    uint64_t  census_ms;           /* when the writer last counted these */
    WA_RING_WRITER_GAUGES(WA_RING_COUNTER_FIELD)
    uint64_t  receipts_oldest_ms;  /* the oldest waiting receipt's arrival */
    /* appended the same way (see WA_RING_WRITER_COUNTERS_TAIL) */
    WA_RING_WRITER_COUNTERS_TAIL(WA_RING_COUNTER_FIELD)
} wa_ring_hdr_t;


/* the layout is WA_RING_VERSION 1's: generating the counters moved none */
_Static_assert(offsetof(wa_ring_hdr_t, published) == 192
               && offsetof(wa_ring_hdr_t, refused_too_big) == 216
               && offsetof(wa_ring_hdr_t, writer_pid) == 256
               && offsetof(wa_ring_hdr_t, last_flush_records) == 288
               && offsetof(wa_ring_hdr_t, corrupt_records) == 336
               && offsetof(wa_ring_hdr_t, last_error_ms) == 344
               && offsetof(wa_ring_hdr_t, lag_ms) == 352
               && offsetof(wa_ring_hdr_t, last_error) == 360
               && offsetof(wa_ring_hdr_t, census_ms) == 616,
               "wa_ring_hdr_t layout changed: bump WA_RING_VERSION");

/* the fields appended since only grow into the header page */
_Static_assert(offsetof(wa_ring_hdr_t, dead_letters_waiting) == 624
               && offsetof(wa_ring_hdr_t, receipts_oldest_ms) == 640
               && offsetof(wa_ring_hdr_t, receipts_swept) == 648
               && sizeof(wa_ring_hdr_t) == 672
               && sizeof(wa_ring_hdr_t) <= WA_RING_HDR_SIZE,
               "wa_ring_hdr_t: appended fields moved");


/* A counter as the outputs read it: name, where, and its metric. */
typedef struct {
    const char      *name;
    size_t           offset;       /* in wa_ring_hdr_t */
    const char      *metric;       /* NULL: not exported */
    const char      *labels;
} wa_ring_counter_t;

extern const wa_ring_counter_t  wa_ring_producer_counters[];
extern const wa_ring_counter_t  wa_ring_writer_counters[];
extern const wa_ring_counter_t  wa_ring_writer_gauges[];
extern const size_t             wa_ring_producer_counters_n;
extern const size_t             wa_ring_writer_counters_n;
extern const size_t             wa_ring_writer_gauges_n;

/* its value, loaded atomically: other processes update it */
uint64_t wa_ring_counter(const wa_ring_hdr_t *hdr,
    const wa_ring_counter_t *c);


/* Header of each record in the data area; 32 bytes, WA_RING_ALIGN aligned. */
typedef struct {
    uint64_t  ctl;                 /* pos | state, stored with release */
    uint32_t  len;                 /* whole record incl. header, aligned */
    uint32_t  payload_len;
    uint32_t  pid;                 /* producer, for information only */
    uint32_t  crc;                 /* crc32c of the payload */
    uint16_t  type;
    uint16_t  flags;
    uint32_t  claim_sec;           /* wall clock seconds at claim */
} wa_ring_rec_hdr_t;


/* A process-local handle. */
typedef struct {
    int              fd;
    unsigned char          *map;
    size_t           map_size;
    wa_ring_hdr_t   *hdr;
    unsigned char          *data;
    uint64_t         capacity;
    uint64_t         mask;
    dev_t            dev;
    ino_t            ino;

    /* stamped on each claim, read once at open (a syscall per record
     * otherwise); a child that claims on its parent's handle sets it */
    pid_t            pid;

    /* consumer: since when ctl at stuck_pos holds stuck_ctl */
    int              stuck;
    uint64_t         stuck_pos;
    uint64_t         stuck_ctl;
    uint64_t         stuck_since_ms;
} wa_ring_t;


/* A claim in progress, filled by wa_ring_claim(). */
typedef struct {
    wa_ring_rec_hdr_t  *rec;
    unsigned char             *payload;
    uint64_t            pos;
} wa_ring_claim_t;


/* What the consumer found at its cursor. */
typedef struct {
    uint64_t         pos;          /* position of this record */
    uint16_t         type;
    uint32_t         pid;
    const unsigned char    *payload;      /* points into the mapping */
    uint32_t         payload_len;
    uint32_t         claim_sec;

    /* for WA_RING_SKIPPED */
    uint64_t         skipped_bytes;
    const char      *skip_reason;  /* static string */
} wa_ring_rec_t;


/* return codes */
#define WA_RING_OK         0
#define WA_RING_EMPTY      1       /* cursor == tail */
#define WA_RING_WAIT       2       /* record in progress; try again later */
#define WA_RING_SKIPPED    3       /* bytes skipped: dead producer/corrupt */
#define WA_RING_ERROR     -1       /* err filled */
#define WA_RING_FULL      -2
#define WA_RING_TOO_BIG   -3
#define WA_RING_ABANDONED -4       /* the reader gave up on this claim */


/* open flags */
#define WA_RING_CREATE     0x1     /* create the file when missing or empty */


/*
 * Open (and with WA_RING_CREATE, create) the ring at path and map it.
 * capacity: the data area size wanted (power of two >= WA_RING_MIN_SIZE), or
 * 0 to accept whatever the existing file has. An existing file with another
 * magic, version or capacity is an error, never re-initialised. New files are
 * created with mode (e.g. 0600), under an exclusive flock while initialised.
 * A file any user may write is refused: anyone could forge or erase records.
 * Returns WA_RING_OK or WA_RING_ERROR with a message in err.
 */
int wa_ring_open(wa_ring_t *ring, const char *path, uint64_t capacity,
    int flags, mode_t mode, char *err, size_t errlen);
void wa_ring_close(wa_ring_t *ring);

/* Check that the file at path is still the mapped inode and has its size;
 * WA_RING_OK or WA_RING_ERROR (deleted, replaced, truncated) with err. */
int wa_ring_check(wa_ring_t *ring, const char *path, char *err,
    size_t errlen);

/*
 * The mapped file still has its size and a name: a truncated mapping faults
 * (SIGBUS) on the next access, and records put in a deleted file reach no
 * reader once the writer moves on. Producers check before each record; one
 * fstat. Returns NULL, or "truncated" or "deleted".
 */
const char *wa_ring_damage(wa_ring_t *ring);

/* Largest payload a record may carry. */
uint32_t wa_ring_max_payload(const wa_ring_t *ring);

/*
 * Room kept for the records that close what an earlier record opened (a
 * send's outcome, after its pending record was accepted): a claim that
 * opens something (a webhook's records, a send's pending record) is
 * refused once it would leave less than this free, so that the outcomes
 * of calls in flight still fit when webhooks have filled the ring. One
 * sixteenth of the ring: 4 MB of the default 64 MB.
 */
uint64_t wa_ring_keep(const wa_ring_t *ring);

/* producer; keep: bytes the claim must leave free (0, or wa_ring_keep()) */
int wa_ring_claim(wa_ring_t *ring, uint16_t type, uint32_t payload_len,
    wa_ring_claim_t *claim);            /* OK, FULL, TOO_BIG, ABANDONED */
int wa_ring_claim_keep(wa_ring_t *ring, uint16_t type, uint32_t payload_len,
    uint64_t keep, wa_ring_claim_t *claim);
int wa_ring_commit(wa_ring_t *ring, wa_ring_claim_t *claim);
                                        /* OK, ABANDONED: not stored */
int wa_ring_put(wa_ring_t *ring, uint16_t type, const void *payload,
    uint32_t len);                      /* claim + copy + commit */

/* consumer: read the record at *cursor; on OK and SKIPPED, *cursor moves
 * past it. now_ms is the caller's monotonic clock (wa_mono_ms()): a claim
 * is given up on after WA_RING_STUCK_SEC of it without progress. */
int wa_ring_read(wa_ring_t *ring, uint64_t *cursor, wa_ring_rec_t *rec,
    uint64_t now_ms);
/* make [head, pos) reusable; call only after the records were committed */
void wa_ring_advance(wa_ring_t *ring, uint64_t pos);

/* counters and positions, read atomically */
uint64_t wa_ring_head(const wa_ring_t *ring);
uint64_t wa_ring_tail(const wa_ring_t *ring);

uint32_t wa_crc32c(uint32_t crc, const void *buf, size_t len);
/* the portable path wa_crc32c falls back to; public for its test */
uint32_t wa_crc32c_table(uint32_t crc, const void *buf, size_t len);
uint64_t wa_now_ms(void);                /* wall clock */
uint64_t wa_mono_ms(void);               /* CLOCK_MONOTONIC */

#endif /* WA_RING_H */
