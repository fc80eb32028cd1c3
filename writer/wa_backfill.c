/*
 * wa-writer backfill-leads: link the rows stored without a lead (the bug
 * ngx_wa exists to end) to the lead of their phone, creating leads where
 * none exists. Works in short transactions of --batch-size rows, walking
 * the table by id, so the CRM keeps writing meanwhile; safe to re-run.
 */

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wa_writer.h"


#define WA_BACKFILL_RETRIES  5


int
wa_backfill(wa_conf_t *conf)
{
    int          tries;
    char         after[24], limit[16];
    uint64_t     linked, created, unresolved, batches, last;
    PGresult    *res;
    const char  *params[2], *state;
    wa_db_t      db;

    memset(&db, 0, sizeof(wa_db_t));
    db.dsn = conf->dsn;

    signal(SIGPIPE, SIG_IGN);

    if (wa_db_connect(&db) != 0) {
        wa_log(WA_LOG_ERROR, "backfill-leads: %s", db.error);
        return WA_EXIT_FAIL;
    }

    wa_log(WA_LOG_INFO, "backfill-leads: connected to PostgreSQL (%s), %u "
           "rows per transaction", db.where, conf->backfill_batch);

    linked = 0;
    created = 0;
    unresolved = 0;
    batches = 0;
    last = 0;
    tries = 0;

    snprintf(limit, sizeof(limit), "%u", conf->backfill_batch);

    for ( ;; ) {
        snprintf(after, sizeof(after), "%" PRIu64, last);
        params[0] = after;
        params[1] = limit;

        /* one call, one transaction (autocommit) */
        res = PQexecParams(db.conn, "SELECT last_id, scanned, linked, "
                           "created, unresolved FROM "
                           "wa_backfill_leads($1::bigint, $2::int)", 2, NULL,
                           params, NULL, NULL, 0);

        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            wa_db_set_error(&db, res, NULL);
            state = db.sqlstate;

            /* concurrent writers may deadlock with us: try again */
            if ((strcmp(state, "40P01") == 0 || strcmp(state, "40001") == 0)
                && ++tries <= WA_BACKFILL_RETRIES)
            {
                wa_log(WA_LOG_WARN, "backfill-leads: %s; retrying",
                       db.error);
                PQclear(res);
                wa_sleep_ms(100u * (unsigned) tries);
                continue;
            }

            if (strcmp(state, "42883") == 0) {
                wa_log(WA_LOG_ERROR, "backfill-leads: the schema is too old "
                       "(run \"wa-writer migrate\"): %s", db.error);
            } else {
                wa_log(WA_LOG_ERROR, "backfill-leads: %s", db.error);
            }

            PQclear(res);
            wa_db_close(&db);

            printf("linked %" PRIu64 " rows, created %" PRIu64 " leads "
                   "(interrupted)\n", linked, created);
            return WA_EXIT_FAIL;
        }

        tries = 0;

        if (strtol(PQgetvalue(res, 0, 1), NULL, 10) == 0) {
            PQclear(res);
            break;
        }

        last = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        linked += strtoull(PQgetvalue(res, 0, 2), NULL, 10);
        created += strtoull(PQgetvalue(res, 0, 3), NULL, 10);
        unresolved += strtoull(PQgetvalue(res, 0, 4), NULL, 10);
        batches++;

        PQclear(res);

        if (batches % 100 == 0) {
            wa_log(WA_LOG_INFO, "backfill-leads: %" PRIu64 " rows linked so "
                   "far (up to id %" PRIu64 ")", linked, last);
        }
    }

    wa_db_close(&db);

    if (unresolved > 0) {
        wa_log(WA_LOG_WARN, "backfill-leads: %" PRIu64 " rows have neither "
               "a phone nor a WhatsApp user id (or no business): left "
               "without a lead", unresolved);
    }

    printf("linked %" PRIu64 " rows, created %" PRIu64 " leads\n", linked,
           created);

    return WA_EXIT_OK;
}
