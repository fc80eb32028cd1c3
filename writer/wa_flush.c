/*
 * Writing a batch: BEGIN, the records, COMMIT, all sent in one libpq
 * pipeline, so a batch costs one round trip. Runs of inbound messages, of
 * statuses, and of sends and their outcomes go as one set statement each
 * (wa_set.c); webhook errors and dead letters are one prepared call each.
 *
 * When PostgreSQL rejects a record for good (SQLSTATE class 22 or 23, or
 * a program limit), the pipeline's results say which statement. A refused
 * run does not say which record: the batch is then written again record by
 * record. The records before the refused one are committed on their own,
 * the record is retried alone in its own transaction, and if it fails again
 * it goes to wa_dead_letter; then the rest of the batch goes on. Every
 * other error (connection lost, deadlock, schema missing, ...) fails the
 * flush as a whole: the caller logs it and retries the same batch later.
 * Every function is idempotent, so a part committed before a failure is
 * harmless when replayed.
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wa_writer.h"


typedef enum {
    WA_PIPE_OK = 0,
    WA_PIPE_RETRY,              /* the flush failed: retry it later */
    WA_PIPE_REJECTED,           /* one record was refused: *failed says which */
    WA_PIPE_RUN_REJECTED        /* a run was refused: *failed is its first */
} wa_pipe_e;


static wa_pipe_e wa_pipe(wa_db_t *db, wa_batch_t *b, unsigned from,
    unsigned to, unsigned *failed);
static int wa_pipe_send(wa_db_t *db, wa_item_t *it);
static int wa_pipe_send_dead(wa_db_t *db, wa_item_t *it);
static void wa_pipe_outcomes(wa_batch_t *b, const wa_cmd_t *c,
    const PGresult *res);
static void wa_pipe_outcome(wa_item_t *it, const char *s, size_t len);
static int wa_rejected_for_good(const char *sqlstate);
static void wa_committed(wa_batch_t *b, unsigned from, unsigned to);


int
wa_flush(wa_db_t *db, wa_batch_t *b)
{
    unsigned    fail, f2;
    wa_pipe_e   rc;
    wa_item_t  *it;
    char        ident[256], first[sizeof(db->error)];

    if (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK) {
        if (wa_db_connect(db) != 0) {
            return -1;
        }

        wa_log(WA_LOG_INFO, "connected to PostgreSQL (%s)", db->where);
    }

    if (!db->ready && wa_db_prepare(db) != 0) {
        goto retry;
    }

    while (b->done < b->n) {

        rc = wa_pipe(db, b, b->done, b->n, &fail);

        if (rc == WA_PIPE_OK) {
            wa_committed(b, b->done, b->n);
            b->done = b->n;
            break;
        }

        if (rc == WA_PIPE_RETRY) {
            goto retry;
        }

        /* from here on, one statement per record: a refusal names it */
        b->one_by_one = 1;

        if (rc == WA_PIPE_RUN_REJECTED) {
            wa_log(WA_LOG_WARN, "a run of %s records from ring pos "
                   "%" PRIu64 " was refused as a whole (%s): writing the "
                   "batch record by record",
                   wa_record_type_name(b->items[fail].type),
                   b->items[fail].pos, db->error);
            continue;
        }

        /* commit what precedes the refused record */
        while (fail > b->done) {
            rc = wa_pipe(db, b, b->done, fail, &f2);

            if (rc == WA_PIPE_OK) {
                wa_committed(b, b->done, fail);
                b->done = fail;
                break;
            }

            if (rc == WA_PIPE_RETRY) {
                goto retry;
            }

            fail = f2;
        }

        it = &b->items[b->done];
        snprintf(first, sizeof(first), "%s", db->error);

        /* once more, alone in its own transaction */
        rc = wa_pipe(db, b, b->done, b->done + 1, &f2);

        if (rc == WA_PIPE_RETRY) {
            goto retry;
        }

        if (rc == WA_PIPE_OK) {
            wa_render_ident(ident, sizeof(ident), &it->rec);
            wa_log(WA_LOG_WARN, "%s record at ring pos %" PRIu64 " (%s) was "
                   "refused in its batch but stored alone; the refusal was: "
                   "%s", wa_record_type_name(it->type), it->pos, ident,
                   first);

            wa_committed(b, b->done, b->done + 1);
            b->done++;
            continue;
        }

        /* refused twice: a dead letter, never a silent drop */
        if (!it->dead) {
            it->dead = 1;
            free(it->reason);
            it->reason = strdup(db->error);
            snprintf(it->sqlstate, sizeof(it->sqlstate), "%s", db->sqlstate);
        }

        rc = wa_pipe(db, b, b->done, b->done + 1, &f2);

        if (rc != WA_PIPE_OK) {
            /* even the dead letter is refused: keep retrying, loudly */
            goto retry;
        }

        wa_committed(b, b->done, b->done + 1);
        b->done++;
    }

    return 0;

retry:

    if (db->conn != NULL && PQstatus(db->conn) != CONNECTION_OK) {
        wa_db_close(db);
    }

    return -1;
}


/*
 * Run items [from, to) in one transaction. Results come back in order: BEGIN,
 * one per item, COMMIT, then the sync. After the first error the server
 * skips the rest (PGRES_PIPELINE_ABORTED) and the transaction is rolled back.
 */
static wa_pipe_e
wa_pipe(wa_db_t *db, wa_batch_t *b, unsigned from, unsigned to,
    unsigned *failed)
{
    int             broken, cmd, ncmd;
    unsigned        i, bad, run, nitems;
    wa_cmd_t       *c;
    wa_pipe_e       rc;
    PGresult       *res;
    ExecStatusType  st;

    PGconn  *conn = db->conn;

    db->error[0] = '\0';
    db->sqlstate[0] = '\0';

    if (!PQenterPipelineMode(conn)) {
        wa_db_set_error(db, NULL, "cannot enter pipeline mode");
        return WA_PIPE_RETRY;
    }

    broken = 0;
    nitems = 0;

    for (i = from; i < to; i++) {
        b->items[i].outcome = WA_OUT_NONE;
    }

    if (!PQsendQueryParams(conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0)) {
        broken = 1;
    }

    for (i = from; i < to && !broken; i += run) {
        run = (b->runs && !b->one_by_one) ? wa_set_run(b, i, to) : 0;

        /* a set statement costs a few hundred microseconds whatever its
         * size, a record's own call some tens: short runs go one by one */
        if (run >= 2 && run >= b->runs) {
            broken = wa_set_send(db, b, i, i + run) != 0;

        } else {
            run = 1;
            broken = (b->items[i].dead ? wa_pipe_send_dead(db, &b->items[i])
                                       : wa_pipe_send(db, &b->items[i])) != 0;
        }

        b->cmds[nitems].first = i;
        b->cmds[nitems].n = run;
        nitems++;
    }

    if (!broken
        && (!PQsendQueryParams(conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0)
            || !PQpipelineSync(conn)))
    {
        broken = 1;
    }

    if (broken) {
        /* the connection is gone: nothing to read back */
        wa_db_set_error(db, NULL, "cannot send the batch");
        wa_db_close(db);
        return WA_PIPE_RETRY;
    }

    rc = WA_PIPE_OK;
    bad = to;
    ncmd = (int) nitems + 2;

    for (cmd = 0; cmd < ncmd; cmd++) {
        res = PQgetResult(conn);

        if (res == NULL) {
            if (rc == WA_PIPE_OK) {
                wa_db_set_error(db, NULL, "the batch's results were cut "
                                "short");
                rc = WA_PIPE_RETRY;
            }

            wa_db_close(db);
            return WA_PIPE_RETRY;
        }

        st = PQresultStatus(res);
        c = (cmd > 0 && cmd < ncmd - 1) ? &b->cmds[cmd - 1] : NULL;

        if (st == PGRES_TUPLES_OK && c != NULL) {
            wa_pipe_outcomes(b, c, res);

        } else if (st == PGRES_FATAL_ERROR && rc == WA_PIPE_OK) {
            /* the first error is the cause; the rest were skipped */
            wa_db_set_error(db, res, NULL);

            if (c != NULL && wa_rejected_for_good(db->sqlstate)) {
                bad = c->first;
                rc = c->n == 1 ? WA_PIPE_REJECTED : WA_PIPE_RUN_REJECTED;

            } else {
                rc = WA_PIPE_RETRY;
            }

        } else if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK
                   && st != PGRES_PIPELINE_ABORTED && rc == WA_PIPE_OK)
        {
            wa_db_set_error(db, res, "unexpected result in the pipeline");
            rc = WA_PIPE_RETRY;
        }

        PQclear(res);

        /* each command's results end with a NULL */
        while ((res = PQgetResult(conn)) != NULL) {
            PQclear(res);
        }
    }

    res = PQgetResult(conn);

    if (res == NULL || PQresultStatus(res) != PGRES_PIPELINE_SYNC) {
        if (rc == WA_PIPE_OK) {
            wa_db_set_error(db, res, "the pipeline did not end in a sync");
        }

        PQclear(res);
        wa_db_close(db);
        return WA_PIPE_RETRY;
    }

    PQclear(res);

    if (!PQexitPipelineMode(conn)) {
        if (rc == WA_PIPE_OK) {
            wa_db_set_error(db, NULL, "cannot leave pipeline mode");
        }

        wa_db_close(db);
        return WA_PIPE_RETRY;
    }

    if (PQtransactionStatus(conn) != PQTRANS_IDLE) {
        /* an explicit transaction outlives a failed pipeline */
        res = PQexec(conn, "ROLLBACK");
        PQclear(res);
    }

    if (PQstatus(conn) != CONNECTION_OK) {
        if (rc == WA_PIPE_OK) {
            /* COMMIT answered, then the connection died: it committed */
            return WA_PIPE_OK;
        }

        wa_db_close(db);
        return WA_PIPE_RETRY;
    }

    *failed = bad;

    return rc;
}


static int
wa_pipe_send(wa_db_t *db, wa_item_t *it)
{
    int          n;
    int          lengths[16], formats[16];
    const char  *values[16], *name;

    name = wa_db_record_params(&it->rec, &n, values, lengths, formats);

    if (name == NULL) {
        return -1;
    }

    return PQsendQueryPrepared(db->conn, name, n, values, lengths, formats, 0)
           ? 0 : -1;
}


static int
wa_pipe_send_dead(wa_db_t *db, wa_item_t *it)
{
    int          rc;
    int          lengths[6], formats[6];
    char         pos[24], type[32], *json;
    const char  *values[6];

    snprintf(pos, sizeof(pos), "%" PRIu64, it->pos);
    snprintf(type, sizeof(type), "%s", it->type >= 1
             && it->type <= WA_REC_TYPE_MAX ? wa_record_type_name(it->type)
                                            : "unknown");

    json = wa_render_json(it->rec.type ? &it->rec : NULL, it->type, it->pos);

    values[0] = type;
    values[1] = pos;
    values[2] = it->reason ? it->reason : "rejected (reason lost: no memory)";
    values[3] = it->sqlstate[0] ? it->sqlstate : NULL;
    values[4] = it->payload ? (const char *) it->payload : "";
    values[5] = json;

    lengths[0] = 0;
    lengths[1] = 0;
    lengths[2] = 0;
    lengths[3] = 0;
    lengths[4] = (int) it->len;
    lengths[5] = 0;

    formats[0] = 0;
    formats[1] = 0;
    formats[2] = 0;
    formats[3] = 0;
    formats[4] = 1;
    formats[5] = 0;

    rc = PQsendQueryPrepared(db->conn, "wa_dead", 6, values, lengths,
                             formats, 0);
    free(json);

    return rc ? 0 : -1;
}


/*
 * What each record of a statement came to: a record's function returns its
 * outcome, a run's returns an array of them, {inserted,duplicate,NULL,...}
 * (plain words: no quoting), or only a count, which says nothing of each.
 */
static void
wa_pipe_outcomes(wa_batch_t *b, const wa_cmd_t *c, const PGresult *res)
{
    size_t       len;
    unsigned     i;
    const char  *s, *e;

    s = (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
        ? PQgetvalue(res, 0, 0) : NULL;

    if (c->n == 1) {
        wa_pipe_outcome(&b->items[c->first], s, s ? strlen(s) : 0);
        return;
    }

    if (s != NULL && *s == '{') {
        s++;
    } else {
        s = NULL;
    }

    for (i = c->first; i < c->first + c->n; i++) {
        e = s ? s + strcspn(s, ",}") : NULL;
        len = e ? (size_t) (e - s) : 0;

        wa_pipe_outcome(&b->items[i], s, len);

        s = (e != NULL && *e == ',') ? e + 1 : NULL;
    }
}


static void
wa_pipe_outcome(wa_item_t *it, const char *s, size_t len)
{
#define WA_IS(word)  (len == sizeof(word) - 1 && memcmp(s, word, len) == 0)

    if (s == NULL || len == 0 || WA_IS("NULL")) {
        it->outcome = WA_OUT_OK;

    } else if (it->dead) {
        it->outcome = WA_OUT_DEAD;

    } else if (WA_IS("duplicate")) {
        it->outcome = WA_OUT_DUPLICATE;

    } else if (WA_IS("pending")) {
        it->outcome = WA_OUT_PENDING;

    } else if (WA_IS("ignored") || WA_IS("stale")) {
        it->outcome = WA_OUT_IGNORED;

    } else if (WA_IS("lead_missing")) {
        it->outcome = WA_OUT_LEAD_MISSING;

    } else if (WA_IS("client_ref_taken")) {
        it->outcome = WA_OUT_CLIENT_REF_TAKEN;

    } else {
        it->outcome = WA_OUT_OK;
    }

#undef WA_IS
}


/* data exceptions, integrity violations and program limits (a value too
 * big for an index) are about the record: no retry will make them pass */
static int
wa_rejected_for_good(const char *sqlstate)
{
    return strncmp(sqlstate, "22", 2) == 0 || strncmp(sqlstate, "23", 2) == 0
           || strcmp(sqlstate, "54000") == 0;
}


/* items [from, to) are committed: say what deserves saying, once */
static void
wa_committed(wa_batch_t *b, unsigned from, unsigned to)
{
    char        ident[256], lead[32];
    unsigned    i;
    wa_item_t  *it;

    for (i = from; i < to; i++) {
        it = &b->items[i];

        switch (it->outcome) {

        case WA_OUT_DEAD:
            b->dead++;
            wa_render_ident(ident, sizeof(ident), &it->rec);
            wa_log(WA_LOG_CRITICAL, "dead letter: %s record at ring pos "
                   "%" PRIu64 " (%s) stored in wa_dead_letter: %s",
                   it->type >= 1 && it->type <= WA_REC_TYPE_MAX
                   ? wa_record_type_name(it->type) : "unknown",
                   it->pos, ident, it->reason ? it->reason : "no reason");
            break;

        case WA_OUT_LEAD_MISSING:
            wa_render_ident(ident, sizeof(ident), &it->rec);
            wa_sanitize(lead, sizeof(lead), it->rec.f[WA_F_LEAD_ID].data,
                        it->rec.f[WA_F_LEAD_ID].len);
            wa_log(WA_LOG_WARN, "send (%s) names lead_id %s, which is not a "
                   "lead of its business: linked to the lead of its phone "
                   "instead", ident, lead);
            break;

        case WA_OUT_CLIENT_REF_TAKEN:
            wa_render_ident(ident, sizeof(ident), &it->rec);
            wa_log(WA_LOG_WARN, "send (%s) repeats the client_ref of another "
                   "send: stored without it", ident);
            break;

        default:
            break;
        }
    }
}
