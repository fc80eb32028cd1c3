/*
 * Parked receipts, between batches (sql/functions/pending.sql).
 *
 * A receipt that arrives before its message is parked, and applied by the
 * transaction that stores the message. With several writers on one
 * database, one may park a receipt while another inserts its message:
 * neither sees the other's row. The sweep applies the receipts parked in
 * the last WA_SWEEP_RECENT seconds whose message exists now; it runs in
 * its own short transaction and takes only rows nobody holds (SKIP
 * LOCKED), so it never waits for, nor deadlocks with, an ingest.
 *
 * The overdue check applies, or else reports once (a WARN line each),
 * receipts parked longer than --pending-warn-after: a message that never
 * came (sent around the gateway, lost upstream). They stay parked.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wa_writer.h"


#define WA_SWEEP_RECENT    "120 seconds"
#define WA_OVERDUE_LIMIT   "1000"


int
wa_sweep(wa_db_t *db, unsigned *applied)
{
    PGresult  *res;

    *applied = 0;

    res = PQexec(db->conn, "SELECT wa_pending_sweep(interval '"
                 WA_SWEEP_RECENT "')");

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        wa_db_set_error(db, res, "sweep of parked receipts");
        PQclear(res);
        return -1;
    }

    *applied = (unsigned) strtoul(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);

    return 0;
}


int
wa_sweep_overdue(wa_db_t *db, unsigned warn_s, unsigned *warned)
{
    int          i, n;
    char         after[32], wamid[160], local[160];
    PGresult    *res;
    const char  *params[1];

    *warned = 0;

    snprintf(after, sizeof(after), "%u seconds", warn_s);
    params[0] = after;

    res = PQexecParams(db->conn,
                       "SELECT o_business, o_wamid, o_local_id, o_kind, "
                       "o_status, o_age_s FROM wa_pending_overdue($1::interval, "
                       WA_OVERDUE_LIMIT ") ORDER BY o_age_s DESC",
                       1, NULL, params, NULL, NULL, 0);

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        wa_db_set_error(db, res, "check of overdue parked receipts");
        PQclear(res);
        return -1;
    }

    n = PQntuples(res);

    for (i = 0; i < n; i++) {
        wa_sanitize(wamid, sizeof(wamid), PQgetvalue(res, i, 1),
                    (size_t) PQgetlength(res, i, 1));
        wa_sanitize(local, sizeof(local), PQgetvalue(res, i, 2),
                    (size_t) PQgetlength(res, i, 2));

        wa_log(WA_LOG_WARN, "parked receipt overdue: %s %s for wamid %s "
               "local_id %s, business %s, parked %s s ago without its "
               "message (kept in wa_pending_receipt)",
               PQgetvalue(res, i, 3),
               PQgetisnull(res, i, 4) ? "-" : PQgetvalue(res, i, 4),
               wamid[0] ? wamid : "-", local[0] ? local : "-",
               PQgetvalue(res, i, 0), PQgetvalue(res, i, 5));
    }

    *warned = (unsigned) n;
    PQclear(res);

    return 0;
}
