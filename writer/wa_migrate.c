/*
 * wa-writer migrate: apply the embedded sql/ migrations in order, each in
 * its own transaction, recording each in wa_schema_migrations. A session
 * advisory lock keeps two concurrent runs (two nodes deploying at once)
 * from racing; every file is idempotent on its own besides.
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wa_writer.h"


/* "ngx_wa" as a number: the advisory lock of migrations */
#define WA_MIGRATE_LOCK  "120950431031137"


static int wa_migrate_exec(wa_db_t *db, const char *sql, const char *what);
static int wa_migrate_one(wa_db_t *db, const wa_migration_t *m);


int
wa_migrate(wa_conf_t *conf)
{
    size_t       i;
    unsigned     applied, skipped;
    PGresult    *res;
    const char  *params[1];
    wa_db_t      db;

    memset(&db, 0, sizeof(wa_db_t));
    db.dsn = conf->dsn;

    if (wa_db_connect(&db) != 0) {
        wa_log(WA_LOG_ERROR, "migrate: %s", db.error);
        return WA_EXIT_FAIL;
    }

    wa_log(WA_LOG_INFO, "migrate: connected to PostgreSQL (%s)", db.where);

    res = PQexec(db.conn, "SELECT pg_try_advisory_lock(" WA_MIGRATE_LOCK ")");

    if (PQresultStatus(res) == PGRES_TUPLES_OK
        && strcmp(PQgetvalue(res, 0, 0), "f") == 0)
    {
        wa_log(WA_LOG_INFO, "migrate: another migrate is running, waiting "
               "for it");
        PQclear(res);
        res = PQexec(db.conn, "SELECT pg_advisory_lock(" WA_MIGRATE_LOCK ")");
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        wa_db_set_error(&db, res, "cannot take the migration lock");
        wa_log(WA_LOG_ERROR, "migrate: %s", db.error);
        PQclear(res);
        wa_db_close(&db);
        return WA_EXIT_FAIL;
    }

    PQclear(res);

    if (wa_migrate_exec(&db,
            "CREATE TABLE IF NOT EXISTS wa_schema_migrations ("
            " version text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())",
            "cannot create wa_schema_migrations") != 0)
    {
        goto failed;
    }

    applied = 0;
    skipped = 0;

    for (i = 0; i < wa_migrations_n; i++) {
        params[0] = wa_migrations[i].version;

        res = PQexecParams(db.conn, "SELECT 1 FROM wa_schema_migrations "
                           "WHERE version = $1", 1, NULL, params, NULL, NULL,
                           0);

        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            wa_db_set_error(&db, res, "cannot read wa_schema_migrations");
            wa_log(WA_LOG_ERROR, "migrate: %s", db.error);
            PQclear(res);
            goto failed;
        }

        if (PQntuples(res) > 0) {
            PQclear(res);
            skipped++;
            continue;
        }

        PQclear(res);

        if (wa_migrate_one(&db, &wa_migrations[i]) != 0) {
            goto failed;
        }

        applied++;
    }

    wa_log(WA_LOG_INFO, "migrate: schema at %s (%u applied, %u already "
           "there)", wa_db_schema_version(), applied, skipped);

    /* closing the session releases the advisory lock */
    wa_db_close(&db);

    return WA_EXIT_OK;

failed:

    wa_db_close(&db);

    return WA_EXIT_FAIL;
}


static int
wa_migrate_one(wa_db_t *db, const wa_migration_t *m)
{
    int          line;
    long         pos;
    uint64_t     start;
    PGresult    *res;
    const char  *p, *params[1];

    start = wa_now_ms();

    if (wa_migrate_exec(db, "BEGIN", "cannot begin") != 0) {
        return -1;
    }

    /* the whole file at once: the simple protocol runs every statement */
    res = PQexec(db->conn, m->sql);

    if (PQresultStatus(res) != PGRES_COMMAND_OK
        && PQresultStatus(res) != PGRES_TUPLES_OK)
    {
        wa_db_set_error(db, res, NULL);

        line = 0;
        p = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);

        if (p != NULL) {
            pos = strtol(p, NULL, 10);
            line = 1;

            /* the position counts characters: close enough for a line */
            for (p = m->sql; *p && p < m->sql + pos - 1; p++) {
                line += *p == '\n';
            }
        }

        if (line) {
            wa_log(WA_LOG_ERROR, "migrate: %s failed near line %d: %s",
                   m->version, line, db->error);
        } else {
            wa_log(WA_LOG_ERROR, "migrate: %s failed: %s", m->version,
                   db->error);
        }

        PQclear(res);
        PQclear(PQexec(db->conn, "ROLLBACK"));
        return -1;
    }

    PQclear(res);

    params[0] = m->version;

    res = PQexecParams(db->conn, "INSERT INTO wa_schema_migrations (version) "
                       "VALUES ($1)", 1, NULL, params, NULL, NULL, 0);

    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        wa_db_set_error(db, res, "cannot record the migration");
        wa_log(WA_LOG_ERROR, "migrate: %s: %s", m->version, db->error);
        PQclear(res);
        PQclear(PQexec(db->conn, "ROLLBACK"));
        return -1;
    }

    PQclear(res);

    if (wa_migrate_exec(db, "COMMIT", "cannot commit") != 0) {
        return -1;
    }

    wa_log(WA_LOG_INFO, "migrate: applied %s (%" PRIu64 " ms)", m->version,
           wa_now_ms() - start);

    return 0;
}


static int
wa_migrate_exec(wa_db_t *db, const char *sql, const char *what)
{
    PGresult  *res;

    res = PQexec(db->conn, sql);

    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        wa_db_set_error(db, res, what);
        wa_log(WA_LOG_ERROR, "migrate: %s", db->error);
        PQclear(res);
        return -1;
    }

    PQclear(res);

    return 0;
}
