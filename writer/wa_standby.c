/*
 * Holding the ring's head until a standby has the commit
 * (--hold-until-replicated).
 *
 * With asynchronous streaming replication, a commit the primary answered
 * may not have reached any standby when the primary dies; promote the
 * standby and it is gone, while the writer already let the ring reuse its
 * records. With this setting the writer moves the ring's head past a
 * committed batch only once every streaming standby reports having
 * flushed the commit's WAL (pg_stat_replication.flush_lsn, which needs
 * the pg_monitor role or superuser to see). If the connection is lost
 * first, the records from the head on are written again, to whichever
 * server the connection string finds: every ingest function is
 * idempotent, so what did survive is not stored twice.
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wa_writer.h"


static uint64_t wa_standby_parse_lsn(const char *s);


/*
 * The WAL position after our last commit (an upper bound of the commit's
 * own), the lowest position every streaming standby has flushed, and how
 * many standbys stream. 0, or -1 with db->error set. *flushed is
 * UINT64_MAX when no standby streams, 0 when their positions are hidden
 * from this role.
 */
int
wa_standby_lsn(wa_db_t *db, uint64_t *committed, uint64_t *flushed,
    unsigned *standbys)
{
    PGresult  *res;

    res = PQexec(db->conn,
                 "SELECT pg_current_wal_insert_lsn()::text, "
                 "min(flush_lsn)::text, count(*), count(flush_lsn) "
                 "FROM pg_stat_replication WHERE state = 'streaming'");

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        wa_db_set_error(db, res, "cannot read the standbys' positions");
        PQclear(res);
        return -1;
    }

    *committed = wa_standby_parse_lsn(PQgetvalue(res, 0, 0));
    *standbys = (unsigned) strtoul(PQgetvalue(res, 0, 2), NULL, 10);

    if (*standbys == 0) {
        *flushed = UINT64_MAX;

    } else if (strcmp(PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3)) != 0) {
        *flushed = 0;

    } else {
        *flushed = wa_standby_parse_lsn(PQgetvalue(res, 0, 1));
    }

    PQclear(res);

    return 0;
}


/* "16/B374D848" */
static uint64_t
wa_standby_parse_lsn(const char *s)
{
    char      *end;
    uint64_t   hi, lo;

    hi = strtoull(s, &end, 16);

    if (*end != '/') {
        return 0;
    }

    lo = strtoull(end + 1, NULL, 16);

    return (hi << 32) | lo;
}
