/*
 * wa-writer run (wa_daemon): the daemon's loop. "Run" in the writer's
 * code is a run of records of one kind (wa_set.c).
 *
 *   read records from a private cursor until the batch is full or its
 *   oldest record waited --batch-delay-ms; write the batch in one
 *   transaction; after COMMIT, and only then, move the ring's head.
 *
 * A failed flush is logged CRITICAL (a conflict with another writer: WARN,
 * unless conflicts keep it out for long) and retried, the same batch, with
 * capped exponential backoff, forever: records are never dropped and the
 * head never passes an uncommitted record. SIGTERM/SIGINT finish the batch
 * in hand (one attempt) and exit 0; whatever is not committed stays in the
 * ring for the next start.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "wa_writer.h"


#define WA_BACKOFF_START_MS   100
#define WA_RING_RETRY_MS      1000
#define WA_RING_CHECK_MS      1000
#define WA_STATS_EVERY_MS     60000
#define WA_SWEEP_EVERY_MS     1000
/* a deadlock or serialization failure is retried soon, with a WARN: it
 * says nothing is wrong with the batch. Conflicts that keep one batch out
 * for this long are a stall that fills the ring: CRITICAL from then on */
#define WA_CONFLICT_PATIENCE_MS  30000
/* --hold-until-replicated: how often the standbys are looked at while
 * something is held */
#define WA_HELD_CHECK_MS      10


typedef struct {
    wa_conf_t      *conf;
    wa_ring_t       ring;
    int             attached;
    uint64_t        cursor;         /* next record to read */
    wa_batch_t      batch;
    wa_db_t         db;
    uint64_t        checked_ms;
    uint64_t        changed_ms;       /* the ring file was found replaced */
    uint64_t        census_ms;        /* last count of what waits in the
                                         database; 0: count it now */
    uint64_t        sweep_ms;         /* last sweep of parked receipts */
    uint64_t        overdue_ms;       /* last check for overdue ones */

    /* --hold-until-replicated: ring spans committed but not yet flushed
     * by every standby, oldest first: the first is waited for, the second
     * grows with each commit (so the head moves under steady load) */
    struct {
        uint64_t    lsn;              /* WAL position to be flushed */
        uint64_t    end;              /* ring position after the span */
    }               held[2];
    unsigned        nheld;
    unsigned        held_generation;  /* the connection they were made on */
    uint64_t        held_ms;          /* standbys last looked at */
    unsigned        warned_hidden:1;

    /* for the periodic summary */
    uint64_t        stats_ms;
    uint64_t        stats_records;
    uint64_t        stats_batches;
    uint64_t        stats_skipped;
} wa_writer_t;


volatile sig_atomic_t  wa_stop;
volatile sig_atomic_t  wa_hup;


static int wa_writer_attach(wa_writer_t *w);
static int wa_writer_lock(wa_writer_t *w, char *err, size_t errlen);
static void wa_writer_detach(wa_writer_t *w);
static int wa_writer_flush(wa_writer_t *w);
static void wa_writer_heartbeat(wa_writer_t *w, uint64_t now);
static void wa_writer_census(wa_writer_t *w, uint64_t now);
static void wa_writer_error(wa_writer_t *w, const char *msg);
static void wa_writer_stats(wa_writer_t *w, uint64_t now, int force);
static void wa_writer_nap(wa_writer_t *w, unsigned ms);
static void wa_writer_sweep(wa_writer_t *w, uint64_t now);
static void wa_writer_hold(wa_writer_t *w, uint64_t end);
static void wa_writer_held(wa_writer_t *w, uint64_t now);
static void wa_writer_release(wa_writer_t *w, uint64_t flushed,
    unsigned standbys);
static void wa_writer_rewind(wa_writer_t *w);
static void wa_on_signal(int signo);


#define wa_hdr_store(w, field, v)                                            \
    __atomic_store_n(&(w)->ring.hdr->field, (v), __ATOMIC_RELAXED)
#define wa_hdr_add(w, field, v)                                              \
    __atomic_add_fetch(&(w)->ring.hdr->field, (v), __ATOMIC_RELAXED)


int
wa_daemon(wa_conf_t *conf)
{
    int               rc, full, ripe;
    unsigned          seed;
    uint64_t          now, waited;
    wa_batch_t       *b;
    wa_ring_rec_t     rr;
    wa_writer_t       w;
    const char       *damage;
    struct sigaction  sa;

    memset(&w, 0, sizeof(wa_writer_t));
    w.conf = conf;
    w.db.dsn = conf->dsn;

    /* no SA_RESTART: a signal cuts a nap short */
    memset(&sa, 0, sizeof(struct sigaction));
    sa.sa_handler = wa_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* conflict pauses: writers of identical containers must not draw the
     * same ones */
    if (getrandom(&seed, sizeof(seed), 0) != (ssize_t) sizeof(seed)) {
        seed = (unsigned) wa_now_ms();
    }

    srandom(seed);

    if (wa_batch_init(&w.batch, conf->batch_size) != 0) {
        wa_log(WA_LOG_ERROR, "out of memory for a batch of %u records",
               conf->batch_size);
        return WA_EXIT_FAIL;
    }

    b = &w.batch;
    b->runs = conf->runs;

    wa_log(WA_LOG_INFO, "starting: ring %s, batches of up to %u records or "
           "%u ms, set statements for runs of %u or more records (0: "
           "none), schema %s", conf->ring_path, conf->batch_size,
           conf->batch_delay_ms, conf->runs, wa_db_schema_version());

    /* connect early so a wrong DSN or a missing schema shows at once; a
     * failure here is not fatal, flushes retry it */
    if (wa_db_connect(&w.db) != 0) {
        wa_log(WA_LOG_ERROR, "%s; retrying when there is something to "
               "write", w.db.error);

    } else {
        wa_log(WA_LOG_INFO, "connected to PostgreSQL (%s)", w.db.where);

        if (wa_db_prepare(&w.db) != 0) {
            wa_log(WA_LOG_ERROR, "%s", w.db.error);
        }
    }

    if (wa_writer_attach(&w) != 0) {
        goto stopped;
    }

    w.stats_ms = wa_now_ms();

    for ( ;; ) {
        now = wa_now_ms();
        wa_writer_heartbeat(&w, now);

        if (wa_hup) {
            wa_hup = 0;
            wa_log(WA_LOG_INFO, "SIGHUP: nothing to reload (settings are "
                   "read at start, logs go to stderr)");
        }

        if (wa_stop) {
            break;
        }

        /* between batches: parked receipts another writer's message
         * transaction did not see, and those whose message never came */
        if (b->n == 0) {
            wa_writer_sweep(&w, now);
        }

        if (w.nheld > 0) {
            wa_writer_held(&w, now);
        }

        /* a truncated file faults (SIGBUS) on access: look before each
         * batch; what it held is gone, someone must find out why */
        damage = (b->n == 0) ? wa_ring_damage(&w.ring) : NULL;

        if (damage != NULL && strcmp(damage, "truncated") == 0) {
            wa_log(WA_LOG_CRITICAL, "the ring %s was truncated under us at "
                   "pos %" PRIu64 ": records not yet read in it are lost; "
                   "reopening it", conf->ring_path, w.cursor);
            wa_writer_detach(&w);

            if (wa_writer_attach(&w) != 0) {
                goto stopped;
            }

            continue;
        }

        rc = WA_RING_EMPTY;

        if (b->n < conf->batch_size) {
            /* the ring's stall timeouts run on a clock that never jumps */
            rc = wa_ring_read(&w.ring, &w.cursor, &rr, wa_mono_ms());

            if (rc == WA_RING_OK) {
                wa_batch_add(b, &rr, w.cursor);
                w.stats_records++;

                if (b->n < conf->batch_size) {
                    continue;
                }

            } else if (rc == WA_RING_SKIPPED) {
                wa_log(WA_LOG_CRITICAL, "skipped %" PRIu64 " bytes at ring pos "
                       "%" PRIu64 ": %s", rr.skipped_bytes, rr.pos,
                       rr.skip_reason ? rr.skip_reason : "no reason given");
                w.stats_skipped++;

                if (b->n > 0) {
                    b->end_pos = w.cursor;

                } else if (w.nheld > 0) {
                    /* held records before it: it goes with them */
                    w.held[w.nheld - 1].end = w.cursor;

                } else {
                    /* nothing before it waits for a commit */
                    wa_ring_advance(&w.ring, w.cursor);
                }

                continue;

            } else if (rc == WA_RING_ERROR) {
                wa_writer_error(&w, "the ring cannot be read");
                wa_log(WA_LOG_ERROR, "the ring %s cannot be read at pos "
                       "%" PRIu64, conf->ring_path, w.cursor);
                wa_writer_nap(&w, WA_RING_RETRY_MS);
            }
        }

        full = b->n >= conf->batch_size;
        waited = b->n ? now - b->first_ms : 0;
        ripe = b->n > 0 && (full || waited >= conf->batch_delay_ms);

        if (ripe) {
            if (wa_writer_flush(&w) != 0) {
                goto stopped;
            }

            wa_writer_stats(&w, wa_now_ms(), 0);
            continue;
        }

        /* the ring is empty, or its next record is still being written */

        if (b->n == 0 && now - w.checked_ms >= WA_RING_CHECK_MS) {
            char  err[WA_RING_ERR_LEN];

            w.checked_ms = now;

            if (wa_ring_check(&w.ring, conf->ring_path, err, sizeof(err))
                != WA_RING_OK)
            {
                /*
                 * Deleted or replaced: producers stop using it at their
                 * next record, one may be finishing one now; drain for one
                 * more check period before letting go of the old file.
                 */
                if (w.changed_ms == 0) {
                    w.changed_ms = now;
                    wa_log(WA_LOG_WARN, "the ring %s changed under us (%s): "
                           "draining it, then reopening", conf->ring_path,
                           err);
                    continue;
                }

                wa_log(WA_LOG_WARN, "the ring %s is drained up to pos %"
                       PRIu64 ": reopening it", conf->ring_path, w.cursor);
                w.changed_ms = 0;
                wa_writer_detach(&w);

                if (wa_writer_attach(&w) != 0) {
                    goto stopped;
                }

                continue;
            }

            wa_writer_stats(&w, now, 0);
        }

        if (b->n > 0 && conf->batch_delay_ms - waited < conf->idle_ms) {
            wa_sleep_ms((unsigned) (conf->batch_delay_ms - waited));

        } else {
            wa_sleep_ms(conf->idle_ms);
        }
    }

    /* SIGTERM or SIGINT: commit what is in hand, once */
    if (b->n > 0 && wa_writer_flush(&w) != 0) {
        goto stopped;
    }

    wa_writer_stats(&w, wa_now_ms(), 1);
    wa_log(WA_LOG_INFO, "stopped by signal %d: everything read is committed "
           "(ring pos %" PRIu64 ")", (int) wa_stop, w.cursor);

    if (w.nheld > 0) {
        wa_log(WA_LOG_INFO, "ring [%" PRIu64 ", %" PRIu64 ") is committed "
               "but not yet known to be on every standby: it stays in the "
               "ring and is written again at the next start (stored once)",
               wa_ring_head(&w.ring), w.held[w.nheld - 1].end);
    }

    wa_writer_detach(&w);
    wa_db_close(&w.db);
    wa_batch_free(&w.batch);

    return WA_EXIT_OK;

stopped:

    /* stopped while the database was failing, or while waiting for the
     * ring: nothing uncommitted was acknowledged, it will be replayed */
    if (b->n > b->done) {
        wa_log(WA_LOG_WARN, "stopped by signal %d with %u records "
               "[%" PRIu64 ", %" PRIu64 ") not committed: they stay in the "
               "ring and are written at the next start", (int) wa_stop,
               b->n - b->done, b->items[b->done].pos, b->end_pos);

    } else {
        wa_log(WA_LOG_INFO, "stopped by signal %d", (int) wa_stop);
    }

    wa_writer_detach(&w);
    wa_db_close(&w.db);
    wa_batch_free(&w.batch);

    return WA_EXIT_OK;
}


/* Write the batch, retrying until it is committed (or we are told to
 * stop); then advance the ring. 0, or -1 when stopped first. */
static int
wa_writer_flush(wa_writer_t *w)
{
    unsigned     attempt, backoff, conflicts, pause;
    uint64_t     since, now, conflict_since;
    wa_batch_t  *b;

    b = &w->batch;
    attempt = 0;
    backoff = WA_BACKOFF_START_MS;
    since = 0;

    conflicts = 0;
    conflict_since = 0;

    while (wa_flush(&w->db, b) != 0) {
        now = wa_now_ms();

        if (attempt++ == 0) {
            since = now;
        }

        wa_hdr_add(w, flush_failures, 1);
        wa_writer_error(w, w->db.error);

        if (strcmp(w->db.sqlstate, "40P01") != 0
            && strcmp(w->db.sqlstate, "40001") != 0)
        {
            conflicts = 0;

        } else if (conflicts++ == 0) {
            conflict_since = now;
        }

        /*
         * A deadlock or serialization failure rolled the transaction back
         * and says nothing is wrong with the batch: another writer took
         * the same rows. Retried after a random pause, longer each time in
         * a row, so the two do not meet again.
         */
        if (conflicts > 0 && now - conflict_since < WA_CONFLICT_PATIENCE_MS) {
            wa_hdr_add(w, retried_conflicts, 1);
            pause = (10u << (conflicts < 7 ? conflicts - 1 : 6))
                    + (unsigned) (random() % 50);

            wa_log(WA_LOG_WARN, "flush of %u records [%" PRIu64 ", %" PRIu64
                   ") rolled back by a conflict with another transaction "
                   "(attempt %u; retrying in %u ms): %s", b->n, b->first_pos,
                   b->end_pos, attempt, pause, w->db.error);

            if (wa_stop) {
                return -1;
            }

            wa_writer_nap(w, pause);
            continue;
        }

        wa_log(WA_LOG_CRITICAL, "flush of %u records [%" PRIu64 ", %" PRIu64
               ") failed (attempt %u%s; retrying in %u ms): %s", b->n,
               b->first_pos, b->end_pos, attempt,
               b->done ? ", part committed" : "", backoff,
               w->db.error[0] ? w->db.error : "unknown error");

        /* the server that had the held records may be gone for good */
        if (w->nheld > 0 && w->db.conn == NULL) {
            wa_writer_rewind(w);
            return 0;
        }

        if (wa_stop) {
            return -1;
        }

        wa_writer_nap(w, backoff);

        if (wa_stop) {
            return -1;
        }

        backoff = backoff * 2 > w->conf->backoff_max_ms
                  ? w->conf->backoff_max_ms : backoff * 2;
    }

    now = wa_now_ms();

    if (attempt > 0) {
        wa_log(WA_LOG_INFO, "recovered: flush of %u records [%" PRIu64 ", %"
               PRIu64 ") committed after %u failed attempts over %" PRIu64
               " ms (%s)", b->n, b->first_pos, b->end_pos, attempt,
               now - since, w->db.where);
    }

    /* committed: now, and only now, the producers may reuse the space
     * (or once the standbys have it too) */
    if (w->conf->hold_replicated) {

        /* on another connection than the held records: perhaps another
         * server, which may lack them; this batch is written again with
         * them (stored once) */
        if (w->nheld > 0 && w->held_generation != w->db.generation) {
            wa_writer_rewind(w);
            return 0;
        }

        wa_writer_hold(w, b->end_pos);

    } else {
        wa_ring_advance(&w->ring, b->end_pos);
    }

    wa_hdr_store(w, last_flush_ms, now);
    wa_hdr_store(w, last_flush_records, (uint64_t) b->n);
    wa_hdr_add(w, rows_written, (uint64_t) (b->n - b->dead));
    wa_hdr_add(w, dead_letters, (uint64_t) b->dead);
    wa_hdr_store(w, lag_ms, 0);

    if (b->dead) {
        w->census_ms = 0;           /* show it at once */
    }

    w->stats_batches++;

    wa_batch_reset(b);

    return 0;
}


/* Open the ring, waiting (once logged) for it to exist and to be ours. */
static int
wa_writer_attach(wa_writer_t *w)
{
    int          rc;
    char         err[WA_RING_ERR_LEN], said[WA_RING_ERR_LEN];
    uint64_t     now;
    wa_conf_t   *conf;

    conf = w->conf;
    said[0] = '\0';

    while (!wa_stop) {
        err[0] = '\0';

        rc = wa_ring_open(&w->ring, conf->ring_path, conf->ring_size,
                          conf->ring_size ? WA_RING_CREATE : 0, 0600, err,
                          sizeof(err));

        if (rc != WA_RING_OK && conf->ring_size
            && access(conf->ring_path, F_OK) == 0)
        {
            /* --ring-size is for creating it: take it as nginx made it */
            err[0] = '\0';
            rc = wa_ring_open(&w->ring, conf->ring_path, 0, 0, 0600, err,
                              sizeof(err));

            if (rc == WA_RING_OK) {
                wa_log(WA_LOG_WARN, "the ring %s has %" PRIu64 " bytes, not "
                       "the %" PRIu64 " of --ring-size: using it as it is",
                       conf->ring_path, w->ring.capacity, conf->ring_size);
            }
        }

        if (rc == WA_RING_OK
            && wa_writer_lock(w, err, sizeof(err)) != 0)
        {
            wa_ring_close(&w->ring);
            rc = WA_RING_ERROR;
        }

        if (rc == WA_RING_OK) {
            break;
        }

        if (strcmp(err, said) != 0) {
            if (access(conf->ring_path, F_OK) != 0) {
                wa_log(WA_LOG_WARN, "waiting for nginx to create the ring "
                       "%s (retrying every second)", conf->ring_path);
            } else {
                wa_log(WA_LOG_ERROR, "cannot use the ring %s: %s (retrying "
                       "every second)", conf->ring_path, err);
            }

            memcpy(said, err, sizeof(said));
        }

        wa_sleep_ms(WA_RING_RETRY_MS);
    }

    if (wa_stop) {
        return -1;
    }

    w->attached = 1;
    w->cursor = wa_ring_head(&w->ring);
    w->census_ms = 0;               /* this ring has not been told yet */
    w->nheld = 0;

    now = wa_now_ms();
    w->checked_ms = now;

    wa_hdr_store(w, writer_pid, (int32_t) getpid());
    wa_hdr_store(w, writer_started_ms, now);
    wa_hdr_store(w, writer_heartbeat_ms, now);
    wa_hdr_store(w, lag_ms, 0);

    wa_log(WA_LOG_INFO, "ring %s: %" PRIu64 " bytes, %" PRIu64 " bytes "
           "waiting from pos %" PRIu64, conf->ring_path, w->ring.capacity,
           wa_ring_tail(&w->ring) - w->cursor, w->cursor);

    return 0;
}


/* One consumer per ring: an open-file-description lock on the header's
 * last byte, which nginx never locks. It dies with the process. */
static int
wa_writer_lock(wa_writer_t *w, char *err, size_t errlen)
{
    struct flock  fl;

    memset(&fl, 0, sizeof(struct flock));
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = WA_RING_HDR_SIZE - 1;
    fl.l_len = 1;

    if (fcntl(w->ring.fd, F_OFD_SETLK, &fl) == 0) {
        return 0;
    }

    if (errno == EAGAIN || errno == EACCES) {
        snprintf(err, errlen, "another wa-writer (pid %d) consumes it",
                 (int) __atomic_load_n(&w->ring.hdr->writer_pid,
                                       __ATOMIC_RELAXED));
    } else {
        snprintf(err, errlen, "cannot lock it: %s", strerror(errno));
    }

    return -1;
}


static void
wa_writer_detach(wa_writer_t *w)
{
    if (!w->attached) {
        return;
    }

    /* a clean exit: status shows no writer rather than a stale one */
    wa_hdr_store(w, writer_pid, 0);
    wa_hdr_store(w, lag_ms, 0);

    wa_ring_close(&w->ring);
    w->attached = 0;
}


static void
wa_writer_heartbeat(wa_writer_t *w, uint64_t now)
{
    uint64_t     oldest, lag;
    wa_batch_t  *b;

    b = &w->batch;

    wa_hdr_store(w, writer_heartbeat_ms, now);

    lag = 0;

    if (b->n > b->done) {
        /* claim_sec is whole seconds: take the tighter of two bounds */
        oldest = (uint64_t) b->items[b->done].claim_sec * 1000 + 999;

        if (b->first_ms < oldest) {
            oldest = b->first_ms;
        }

        lag = now > oldest ? now - oldest : 0;
    }

    wa_hdr_store(w, lag_ms, lag);

    if (w->conf->census_ms && now - w->census_ms >= w->conf->census_ms) {
        wa_writer_census(w, now);
    }
}


/*
 * Count what waits in the database for someone to act (dead letters,
 * receipts without their message) into the ring header, for wa_status,
 * which cannot query PostgreSQL. One indexed query every few seconds, on
 * the writer's connection when it is up and idle; a failure only leaves
 * the last count, whose age wa_status shows.
 */
static void
wa_writer_census(wa_writer_t *w, uint64_t now)
{
    PGresult  *res;

    w->census_ms = now;

    if (w->db.conn == NULL || !w->db.ready
        || PQstatus(w->db.conn) != CONNECTION_OK
        || PQtransactionStatus(w->db.conn) != PQTRANS_IDLE)
    {
        return;
    }

    res = PQexec(w->db.conn, "SELECT dead_letters_waiting, receipts_waiting, "
                 "coalesce(receipts_oldest_ms, 0) FROM wa_census()");

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        wa_hdr_store(w, dead_letters_waiting,
                     strtoull(PQgetvalue(res, 0, 0), NULL, 10));
        wa_hdr_store(w, receipts_waiting,
                     strtoull(PQgetvalue(res, 0, 1), NULL, 10));
        wa_hdr_store(w, receipts_oldest_ms,
                     strtoull(PQgetvalue(res, 0, 2), NULL, 10));
        wa_hdr_store(w, census_ms, now);
    }

    PQclear(res);
}


static void
wa_writer_error(wa_writer_t *w, const char *msg)
{
    size_t  len;

    len = strlen(msg);

    if (len >= WA_RING_ERR_LEN) {
        len = WA_RING_ERR_LEN - 1;
    }

    /* readers copy it bounded; a torn read shows a mix, never overflows */
    memcpy(w->ring.hdr->last_error, msg, len);
    w->ring.hdr->last_error[len] = '\0';
    wa_hdr_store(w, last_error_ms, wa_now_ms());
}


static void
wa_writer_stats(wa_writer_t *w, uint64_t now, int force)
{
    uint64_t  span;

    span = now - w->stats_ms;

    if (!force && span < WA_STATS_EVERY_MS) {
        return;
    }

    if (w->stats_records > 0 || w->stats_skipped > 0) {
        wa_log(WA_LOG_INFO, "%" PRIu64 " records in %" PRIu64 " batches over "
               "%" PRIu64 " s (%" PRIu64 "/s), %" PRIu64 " skipped; %" PRIu64
               " bytes waiting", w->stats_records, w->stats_batches,
               span / 1000, span ? w->stats_records * 1000 / span : 0,
               w->stats_skipped,
               w->attached ? wa_ring_tail(&w->ring) - wa_ring_head(&w->ring)
                           : 0);
    }

    w->stats_ms = now;
    w->stats_records = 0;
    w->stats_batches = 0;
    w->stats_skipped = 0;
}


/*
 * Parked receipts, between batches, on the connection flushes use: a sweep
 * every WA_SWEEP_EVERY_MS, and the overdue check every tenth of
 * --pending-warn-after (at least every second, at most every minute).
 * Nothing when the database is not there: the next flush reconnects, and
 * says so. A failed sweep is a WARN: no record is at stake, the next one
 * does the same work.
 */
static void
wa_writer_sweep(wa_writer_t *w, uint64_t now)
{
    uint64_t   every;
    unsigned   n;
    wa_db_t   *db;

    db = &w->db;

    if (now - w->sweep_ms < WA_SWEEP_EVERY_MS || !w->attached
        || db->conn == NULL || !db->ready
        || PQstatus(db->conn) != CONNECTION_OK)
    {
        return;
    }

    w->sweep_ms = now;

    if (wa_sweep(db, &n) != 0) {
        goto failed;
    }

    if (n > 0) {
        wa_hdr_add(w, receipts_swept, n);
        wa_log(WA_LOG_INFO, "%u parked receipts applied by the sweep: their "
               "message was stored by a transaction that did not see them",
               n);
    }

    every = (uint64_t) w->conf->pending_warn_s * 100;
    every = every < 1000 ? 1000 : every > 60000 ? 60000 : every;

    if (now - w->overdue_ms < every) {
        return;
    }

    w->overdue_ms = now;

    if (wa_sweep_overdue(db, w->conf->pending_warn_s, &n) != 0) {
        goto failed;
    }

    if (n > 0) {
        wa_hdr_add(w, receipts_overdue, n);
    }

    return;

failed:

    wa_log(WA_LOG_WARN, "%s; trying again in a second", db->error);

    if (PQstatus(db->conn) != CONNECTION_OK) {
        wa_db_close(db);
    }
}


/*
 * --hold-until-replicated (wa_standby.c): a committed batch is held in the
 * ring until every streaming standby has flushed its commit. Where the
 * commit is, and where the standbys are, is one query after each commit,
 * and one every WA_HELD_CHECK_MS while something is held.
 */
static void
wa_writer_hold(wa_writer_t *w, uint64_t end)
{
    uint64_t  committed, flushed;
    unsigned  standbys;

    if (wa_standby_lsn(&w->db, &committed, &flushed, &standbys) != 0) {
        /* not known where the commit is: held until the connection is
         * found lost and the span written again */
        committed = UINT64_MAX;
        standbys = 0;
    }

    if (w->nheld == 0) {
        w->held_generation = w->db.generation;
    }

    if (w->nheld < 2) {
        w->held[w->nheld].lsn = committed;
        w->held[w->nheld].end = end;
        w->nheld++;

    } else {
        if (committed > w->held[1].lsn) {
            w->held[1].lsn = committed;
        }

        w->held[1].end = end;
    }

    w->held_ms = wa_now_ms();

    if (committed != UINT64_MAX) {
        wa_writer_release(w, flushed, standbys);
    }
}


/* the standbys again, while something is held; a lost connection means
 * the held records are written again */
static void
wa_writer_held(wa_writer_t *w, uint64_t now)
{
    uint64_t   committed, flushed;
    unsigned   i, standbys;
    wa_db_t   *db;

    db = &w->db;

    if (now - w->held_ms < WA_HELD_CHECK_MS) {
        return;
    }

    w->held_ms = now;

    if (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK
        || db->generation != w->held_generation)
    {
        wa_writer_rewind(w);
        return;
    }

    if (wa_standby_lsn(db, &committed, &flushed, &standbys) != 0) {
        if (PQstatus(db->conn) != CONNECTION_OK) {
            wa_log(WA_LOG_ERROR, "%s", db->error);
            wa_db_close(db);
            wa_writer_rewind(w);
        }

        return;
    }

    /* a commit whose place was not known then is before this one */
    for (i = 0; i < w->nheld; i++) {
        if (w->held[i].lsn == UINT64_MAX) {
            w->held[i].lsn = committed;
        }
    }

    wa_writer_release(w, flushed, standbys);
}


static void
wa_writer_release(wa_writer_t *w, uint64_t flushed, unsigned standbys)
{
    if (standbys > 0 && flushed == 0) {
        if (!w->warned_hidden) {
            wa_log(WA_LOG_WARN, "--hold-until-replicated: this role cannot "
                   "see where the standbys are (pg_stat_replication; grant "
                   "it pg_monitor): records are not held for them");
            w->warned_hidden = 1;
        }

        flushed = UINT64_MAX;
    }

    while (w->nheld > 0 && w->held[0].lsn <= flushed) {
        wa_ring_advance(&w->ring, w->held[0].end);
        w->held[0] = w->held[1];
        w->nheld--;
    }
}


/* The connection was lost while records were committed but not known to
 * be on a standby: after a failover they may be gone. Read and write them
 * again from the head; what survived is a duplicate, which stores
 * nothing. */
static void
wa_writer_rewind(wa_writer_t *w)
{
    uint64_t  head;

    head = wa_ring_head(&w->ring);

    wa_log(WA_LOG_WARN, "the connection was lost with ring [%" PRIu64 ", %"
           PRIu64 ") committed but not known to be on a standby: writing "
           "it again from pos %" PRIu64 " once connected", head,
           w->held[w->nheld - 1].end, head);

    wa_batch_reset(&w->batch);
    w->cursor = head;
    w->nheld = 0;
}


/* sleep, keeping the heartbeat fresh; returns early on a signal */
static void
wa_writer_nap(wa_writer_t *w, unsigned ms)
{
    uint64_t  end, now;

    end = wa_now_ms() + ms;

    while (!wa_stop && (now = wa_now_ms()) < end) {
        wa_writer_heartbeat(w, now);
        wa_sleep_ms(end - now > 100 ? 100 : (unsigned) (end - now));
    }
}


void
wa_sleep_ms(unsigned ms)
{
    struct timespec  ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long) (ms % 1000) * 1000000;

    /* EINTR ends it early: the loop looks at the flags right away */
    nanosleep(&ts, NULL);
}


static void
wa_on_signal(int signo)
{
    if (signo == SIGHUP) {
        wa_hup = 1;
        return;
    }

    wa_stop = signo;
}
