/*
 * wa-writer migrate: bring a database to this binary's schema and
 * functions.
 *
 * The schema migrations (sql/schema/) are append-only: each is applied
 * once, in order, in its own transaction, and recorded in
 * wa_schema_migrations with the md5 of its text. An applied migration is
 * never edited: when a file's md5 differs from the one recorded, migrate
 * refuses, naming the file, before it changes anything. Rows an earlier
 * wa-writer recorded without a checksum are adopted (the files they name
 * are the same) or, for the migrations of functions alone that the
 * function files replaced (003 to 009), marked retired.
 *
 * The function files (sql/functions/) are CREATE OR REPLACE throughout:
 * each is applied after the schema whenever its md5 differs from the one
 * recorded in wa_schema_functions.
 *
 * A session advisory lock keeps two concurrent runs (two nodes deploying
 * at once) from racing; every file is idempotent on its own besides.
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wa_writer.h"


/* "ngx_wa" as a number: the advisory lock of migrations */
#define WA_MIGRATE_LOCK  "120950431031137"

/* what wa_schema_migrations says of a schema file */
typedef enum {
    WA_MIG_NEW = 0,
    WA_MIG_APPLIED,
    WA_MIG_LEGACY                   /* applied, with no checksum recorded */
} wa_mig_state_e;


static int wa_migrate_exec(wa_db_t *db, const char *sql, const char *what);
static int wa_migrate_md5(wa_db_t *db, const wa_migration_t *m,
    char *md5);
static int wa_migrate_recorded(wa_db_t *db, const char *sql,
    const char *name, char *checksum, int *found);
static int wa_migrate_retire(wa_db_t *db);
static int wa_migrate_one(wa_db_t *db, const wa_migration_t *m,
    const char *record, const char *md5);


int
wa_migrate(wa_conf_t *conf)
{
    int           found;
    char          md5[33], have[64];
    size_t        i;
    unsigned      applied, skipped, funcs;
    PGresult     *res;
    const char   *params[2];
    wa_db_t       db;
    char        (*sums)[33];
    wa_mig_state_e  *state;

    memset(&db, 0, sizeof(wa_db_t));
    db.dsn = conf->dsn;

    sums = calloc(wa_migrations_n, sizeof(*sums));
    state = calloc(wa_migrations_n, sizeof(*state));

    if (sums == NULL || state == NULL) {
        wa_log(WA_LOG_ERROR, "migrate: out of memory");
        free(sums);
        free(state);
        return WA_EXIT_FAIL;
    }

    if (wa_db_connect(&db) != 0) {
        wa_log(WA_LOG_ERROR, "migrate: %s", db.error);
        goto failed;
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
        goto failed;
    }

    PQclear(res);

    /* an earlier wa-writer made wa_schema_migrations without checksums */
    if (wa_migrate_exec(&db,
            "CREATE TABLE IF NOT EXISTS wa_schema_migrations ("
            " version text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now());"
            "ALTER TABLE wa_schema_migrations"
            " ADD COLUMN IF NOT EXISTS checksum text;"
            "CREATE TABLE IF NOT EXISTS wa_schema_functions ("
            " file text PRIMARY KEY,"
            " checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())",
            "cannot create wa_schema_migrations") != 0)
    {
        goto failed;
    }

    /* first what the database has, refusing an edited migration before
     * anything is changed */
    for (i = 0; i < wa_migrations_n; i++) {
        if (wa_migrate_md5(&db, &wa_migrations[i], sums[i]) != 0
            || wa_migrate_recorded(&db, "SELECT coalesce(checksum, '') "
                   "FROM wa_schema_migrations WHERE version = $1",
                   wa_migrations[i].version, have, &found) != 0)
        {
            goto failed;
        }

        if (!found) {
            state[i] = WA_MIG_NEW;

        } else if (have[0] == '\0') {
            state[i] = WA_MIG_LEGACY;

        } else if (strcmp(have, sums[i]) == 0) {
            state[i] = WA_MIG_APPLIED;

        } else {
            wa_log(WA_LOG_ERROR, "migrate: %s was changed after it was "
                   "applied to this database (md5 %s then, %s now): an "
                   "applied migration is never edited; restore the file "
                   "and put the change in a new migration",
                   wa_migrations[i].path, have, sums[i]);
            goto failed;
        }
    }

    /* the rows of an earlier wa-writer: its schema files are these */
    for (i = 0; i < wa_migrations_n; i++) {
        if (state[i] != WA_MIG_LEGACY) {
            continue;
        }

        params[0] = wa_migrations[i].version;
        params[1] = sums[i];

        res = PQexecParams(db.conn, "UPDATE wa_schema_migrations "
                           "SET checksum = $2 WHERE version = $1", 2, NULL,
                           params, NULL, NULL, 0);

        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            wa_db_set_error(&db, res, "cannot record a checksum");
            wa_log(WA_LOG_ERROR, "migrate: %s", db.error);
            PQclear(res);
            goto failed;
        }

        PQclear(res);

        wa_log(WA_LOG_INFO, "migrate: adopted %s, applied by an earlier "
               "wa-writer (md5 %s recorded)", wa_migrations[i].version,
               sums[i]);

        state[i] = WA_MIG_APPLIED;
    }

    if (wa_migrate_retire(&db) != 0) {
        goto failed;
    }

    applied = 0;
    skipped = 0;

    for (i = 0; i < wa_migrations_n; i++) {
        if (state[i] == WA_MIG_APPLIED) {
            skipped++;
            continue;
        }

        if (wa_migrate_one(&db, &wa_migrations[i],
                "INSERT INTO wa_schema_migrations (version, checksum) "
                "VALUES ($1, $2)", sums[i]) != 0)
        {
            goto failed;
        }

        applied++;
    }

    /* the functions, after the schema they use, when their file changed */
    funcs = 0;

    for (i = 0; i < wa_functions_n; i++) {
        if (wa_migrate_md5(&db, &wa_functions[i], md5) != 0
            || wa_migrate_recorded(&db, "SELECT checksum "
                   "FROM wa_schema_functions WHERE file = $1",
                   wa_functions[i].version, have, &found) != 0)
        {
            goto failed;
        }

        if (found && strcmp(have, md5) == 0) {
            continue;
        }

        if (wa_migrate_one(&db, &wa_functions[i],
                "INSERT INTO wa_schema_functions (file, checksum) "
                "VALUES ($1, $2) ON CONFLICT (file) DO UPDATE "
                "SET checksum = excluded.checksum, applied_at = now()",
                md5) != 0)
        {
            goto failed;
        }

        funcs++;
    }

    wa_log(WA_LOG_INFO, "migrate: schema at %s (%u applied, %u already "
           "there); functions: %u of %zu files applied",
           wa_db_schema_version(), applied, skipped, funcs, wa_functions_n);

    /* closing the session releases the advisory lock */
    wa_db_close(&db);
    free(sums);
    free(state);

    return WA_EXIT_OK;

failed:

    wa_db_close(&db);
    free(sums);
    free(state);

    return WA_EXIT_FAIL;
}


/* the md5 of a file's text, as md5sum prints it */
static int
wa_migrate_md5(wa_db_t *db, const wa_migration_t *m, char *md5)
{
    PGresult    *res;
    const char  *params[1];

    params[0] = m->sql;

    res = PQexecParams(db->conn, "SELECT md5($1)", 1, NULL, params, NULL,
                       NULL, 0);

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        wa_db_set_error(db, res, "cannot compute a checksum");
        wa_log(WA_LOG_ERROR, "migrate: %s: %s", m->path, db->error);
        PQclear(res);
        return -1;
    }

    snprintf(md5, 33, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);

    return 0;
}


/* the checksum recorded for name ("" when NULL), *found 0 when no row */
static int
wa_migrate_recorded(wa_db_t *db, const char *sql, const char *name,
    char *checksum, int *found)
{
    PGresult    *res;
    const char  *params[1];

    params[0] = name;

    res = PQexecParams(db->conn, sql, 1, NULL, params, NULL, NULL, 0);

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        wa_db_set_error(db, res, "cannot read what was applied");
        wa_log(WA_LOG_ERROR, "migrate: %s", db->error);
        PQclear(res);
        return -1;
    }

    *found = PQntuples(res) > 0;
    snprintf(checksum, 64, "%s", *found ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);

    return 0;
}


/* the migrations of functions alone an earlier wa-writer applied (003 to
 * 009): their functions are the function files' now. Their rows stay, as
 * history, marked so they are not looked at again. */
static int
wa_migrate_retire(wa_db_t *db)
{
    int         k;
    size_t      i, len;
    wa_buf_t    list;
    PGresult   *res;
    const char *params[1];

    memset(&list, 0, sizeof(wa_buf_t));

    /* names are letters, digits, _ and - (embed-sql.sh): no quoting */
    for (i = 0; i < wa_migrations_n; i++) {
        len = strlen(wa_migrations[i].version);

        if (wa_buf_add(&list, i ? "," : "{", 1) != 0
            || wa_buf_add(&list, wa_migrations[i].version, len) != 0)
        {
            free(list.data);
            wa_log(WA_LOG_ERROR, "migrate: out of memory");
            return -1;
        }
    }

    if (wa_buf_add(&list, "}", 1) != 0) {
        free(list.data);
        wa_log(WA_LOG_ERROR, "migrate: out of memory");
        return -1;
    }

    params[0] = list.data;

    res = PQexecParams(db->conn, "UPDATE wa_schema_migrations "
                       "SET checksum = 'retired' "
                       "WHERE checksum IS NULL AND version <> ALL ($1) "
                       "RETURNING version", 1, NULL, params, NULL, NULL, 0);
    free(list.data);

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        wa_db_set_error(db, res, "cannot read wa_schema_migrations");
        wa_log(WA_LOG_ERROR, "migrate: %s", db->error);
        PQclear(res);
        return -1;
    }

    for (k = 0; k < PQntuples(res); k++) {
        wa_log(WA_LOG_INFO, "migrate: %s, applied by an earlier wa-writer, "
               "is retired: its functions are in sql/functions/ now",
               PQgetvalue(res, k, 0));
    }

    PQclear(res);

    return 0;
}


/* a file in its own transaction, recorded by `record` ($1 its name, $2
 * its md5) in the same one */
static int
wa_migrate_one(wa_db_t *db, const wa_migration_t *m, const char *record,
    const char *md5)
{
    int          line;
    long         pos;
    uint64_t     start;
    PGresult    *res;
    const char  *p, *params[2];

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
                   m->path, line, db->error);
        } else {
            wa_log(WA_LOG_ERROR, "migrate: %s failed: %s", m->path,
                   db->error);
        }

        PQclear(res);
        PQclear(PQexec(db->conn, "ROLLBACK"));
        return -1;
    }

    PQclear(res);

    params[0] = m->version;
    params[1] = md5;

    res = PQexecParams(db->conn, record, 2, NULL, params, NULL, NULL, 0);

    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        wa_db_set_error(db, res, "cannot record the migration");
        wa_log(WA_LOG_ERROR, "migrate: %s: %s", m->path, db->error);
        PQclear(res);
        PQclear(PQexec(db->conn, "ROLLBACK"));
        return -1;
    }

    PQclear(res);

    if (wa_migrate_exec(db, "COMMIT", "cannot commit") != 0) {
        return -1;
    }

    wa_log(WA_LOG_INFO, "migrate: applied %s (%" PRIu64 " ms)", m->path,
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
