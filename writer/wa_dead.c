/*
 * wa-writer dead-letters: the records PostgreSQL refused for good, for an
 * operator to read (list, show) and, once the cause is fixed, to write
 * again (replay).
 *
 * A dead letter keeps the record's type and its raw ring bytes, so a
 * replay decodes it exactly as the writer did and calls the same prepared
 * ingest statement with the same parameters (wa_db.c). Each replay is one
 * transaction: the dead letter is locked, the record written, the dead
 * letter marked replayed (kept, with when and what the function answered),
 * then COMMIT; a crash anywhere leaves it waiting, and the ingest
 * functions are idempotent, so trying again is harmless. A record refused
 * again is rolled back and keeps waiting, with its new reason and one more
 * attempt counted.
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wa_writer.h"


static int wa_dead_list(wa_db_t *db, wa_conf_t *conf);
static int wa_dead_show(wa_db_t *db, wa_conf_t *conf, const char *id);
static int wa_dead_replay(wa_db_t *db, wa_conf_t *conf);
static int wa_dead_replay_one(wa_db_t *db, const char *id);
static int wa_dead_refused(wa_db_t *db, const char *id, const char *reason,
    const char *sqlstate);
static int wa_dead_exec(wa_db_t *db, const char *sql, const char *what);
static int wa_dead_id(const char *s);
static uint16_t wa_dead_type(const char *name);


int
wa_dead_letters(wa_conf_t *conf)
{
    int          rc, i;
    wa_db_t      db;
    const char  *action;

    if (conf->nargs == 0) {
        fprintf(stderr, "wa-writer: dead-letters needs an action: list, "
                "show ID or replay (ID... | --all)\n");
        return WA_EXIT_USAGE;
    }

    action = conf->args[0];

    if (strcmp(action, "list") == 0) {
        if (conf->nargs != 1) {
            fprintf(stderr, "wa-writer: dead-letters list takes no "
                    "argument\n");
            return WA_EXIT_USAGE;
        }

    } else if (strcmp(action, "show") == 0) {
        if (conf->nargs != 2 || !wa_dead_id(conf->args[1]) || conf->all) {
            fprintf(stderr, "wa-writer: dead-letters show takes one id\n");
            return WA_EXIT_USAGE;
        }

    } else if (strcmp(action, "replay") == 0) {
        if ((conf->nargs == 1) == !conf->all) {
            fprintf(stderr, "wa-writer: dead-letters replay takes ids or "
                    "--all\n");
            return WA_EXIT_USAGE;
        }

        for (i = 1; i < conf->nargs; i++) {
            if (!wa_dead_id(conf->args[i])) {
                fprintf(stderr, "wa-writer: dead-letters replay: \"%s\" is "
                        "not an id\n", conf->args[i]);
                return WA_EXIT_USAGE;
            }
        }

    } else {
        fprintf(stderr, "wa-writer: dead-letters: unknown action \"%s\" "
                "(list, show, replay)\n", action);
        return WA_EXIT_USAGE;
    }

    memset(&db, 0, sizeof(wa_db_t));
    db.dsn = conf->dsn;

    /* the schema must be this binary's: replays call its statements */
    if (wa_db_connect(&db) != 0 || wa_db_prepare(&db) != 0) {
        fprintf(stderr, "wa-writer: %s\n", db.error);
        wa_db_close(&db);
        return WA_EXIT_FAIL;
    }

    if (action[0] == 'l') {
        rc = wa_dead_list(&db, conf);

    } else if (action[0] == 's') {
        rc = wa_dead_show(&db, conf, conf->args[1]);

    } else {
        rc = wa_dead_replay(&db, conf);
    }

    wa_db_close(&db);

    return rc;
}


static int
wa_dead_list(wa_db_t *db, wa_conf_t *conf)
{
    int          i, n, waiting;
    char         reason[80];
    PGresult    *res;
    const char  *where;

    where = conf->all ? "" : "WHERE replayed_at IS NULL";

    if (conf->json) {
        char  sql[512];

        snprintf(sql, sizeof(sql),
                 "SELECT coalesce(json_agg(d ORDER BY d.id), '[]') FROM "
                 "(SELECT id, created_at, record_type, ring_pos, sqlstate, "
                 "reason, first_reason, replay_attempts, last_attempt_at, "
                 "replayed_at, replay_outcome FROM wa_dead_letter %s) d",
                 where);

        res = PQexec(db->conn, sql);

        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            goto failed;
        }

        printf("%s\n", PQgetvalue(res, 0, 0));
        PQclear(res);
        return WA_EXIT_OK;
    }

    {
        char  sql[512];

        snprintf(sql, sizeof(sql),
                 "SELECT id, to_char(created_at, 'YYYY-MM-DD HH24:MI:SSOF'), "
                 "record_type, ring_pos, replay_attempts, "
                 "CASE WHEN replayed_at IS NULL THEN 'waiting' "
                 "ELSE 'replayed' END, coalesce(reason, '') "
                 "FROM wa_dead_letter %s ORDER BY id", where);

        res = PQexec(db->conn, sql);
    }

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        goto failed;
    }

    n = PQntuples(res);
    waiting = 0;

    printf("%-8s %-22s %-14s %-12s %-8s %-9s %s\n", "ID", "CREATED", "TYPE",
           "RING_POS", "REPLAYS", "STATE", "REASON");

    for (i = 0; i < n; i++) {
        /* one line each: the reason cut short, `show` has it whole */
        wa_sanitize(reason, sizeof(reason), PQgetvalue(res, i, 6),
                    (size_t) PQgetlength(res, i, 6));

        printf("%-8s %-22s %-14s %-12s %-8s %-9s %s\n",
               PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
               PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
               PQgetvalue(res, i, 4), PQgetvalue(res, i, 5), reason);

        waiting += PQgetvalue(res, i, 5)[0] == 'w';
    }

    printf("%d dead letter%s waiting%s\n", waiting, waiting == 1 ? "" : "s",
           conf->all ? "" : " (--all lists the replayed ones too)");

    PQclear(res);

    return WA_EXIT_OK;

failed:

    wa_db_set_error(db, res, "cannot read wa_dead_letter");
    fprintf(stderr, "wa-writer: %s\n", db->error);
    PQclear(res);

    return WA_EXIT_FAIL;
}


static int
wa_dead_show(wa_db_t *db, wa_conf_t *conf, const char *id)
{
    int           i, n;
    char          line[2048];
    PGresult     *res;
    const char   *values[1];
    static const char  *keys[] = {
        "id", "created_at", "record_type", "ring_pos", "sqlstate", "reason",
        "first_reason", "replay_attempts", "last_attempt_at", "replayed_at",
        "replay_outcome", "raw_bytes", "fields"
    };

    values[0] = id;

    res = PQexecParams(db->conn, conf->json
        ? "SELECT json_build_object('id', id, 'created_at', created_at, "
          "'record_type', record_type, 'ring_pos', ring_pos, 'sqlstate', "
          "sqlstate, 'reason', reason, 'first_reason', first_reason, "
          "'replay_attempts', replay_attempts, 'last_attempt_at', "
          "last_attempt_at, 'replayed_at', replayed_at, 'replay_outcome', "
          "replay_outcome, 'raw_bytes', length(raw), 'fields', fields) "
          "FROM wa_dead_letter WHERE id = $1::bigint"
        : "SELECT id, created_at, record_type, ring_pos, sqlstate, reason, "
          "first_reason, replay_attempts, last_attempt_at, replayed_at, "
          "replay_outcome, length(raw), jsonb_pretty(fields) "
          "FROM wa_dead_letter WHERE id = $1::bigint",
        1, NULL, values, NULL, NULL, 0);

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        wa_db_set_error(db, res, "cannot read wa_dead_letter");
        fprintf(stderr, "wa-writer: %s\n", db->error);
        PQclear(res);
        return WA_EXIT_FAIL;
    }

    if (PQntuples(res) == 0) {
        fprintf(stderr, "wa-writer: no dead letter %s\n", id);
        PQclear(res);
        return WA_EXIT_FAIL;
    }

    if (conf->json) {
        printf("%s\n", PQgetvalue(res, 0, 0));
        PQclear(res);
        return WA_EXIT_OK;
    }

    n = PQnfields(res);

    for (i = 0; i < n; i++) {
        if (i == n - 1) {
            /* the record's fields, as the writer rendered them: a
             * customer's message, shown to whoever may read the table */
            printf("%s:\n%s\n", keys[i], PQgetisnull(res, 0, i)
                   ? "(none: the record did not decode)"
                   : PQgetvalue(res, 0, i));
            break;
        }

        wa_sanitize(line, sizeof(line), PQgetvalue(res, 0, i),
                    (size_t) PQgetlength(res, 0, i));
        printf("%-16s %s\n", keys[i], PQgetisnull(res, 0, i) ? "-" : line);
    }

    PQclear(res);

    return WA_EXIT_OK;
}


static int
wa_dead_replay(wa_db_t *db, wa_conf_t *conf)
{
    int        i, n, rc, failed, replayed;
    PGresult  *res;

    failed = 0;
    replayed = 0;

    if (!conf->all) {
        for (i = 1; i < conf->nargs; i++) {
            rc = wa_dead_replay_one(db, conf->args[i]);

            if (rc < 0) {
                return WA_EXIT_FAIL;
            }

            failed += rc == 1;
            replayed += rc == 0;
        }

        goto done;
    }

    /* the ids first: each replay is then its own transaction */
    res = PQexec(db->conn, "SELECT id FROM wa_dead_letter "
                 "WHERE replayed_at IS NULL ORDER BY id");

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        wa_db_set_error(db, res, "cannot read wa_dead_letter");
        fprintf(stderr, "wa-writer: %s\n", db->error);
        PQclear(res);
        return WA_EXIT_FAIL;
    }

    n = PQntuples(res);

    for (i = 0; i < n; i++) {
        rc = wa_dead_replay_one(db, PQgetvalue(res, i, 0));

        if (rc < 0) {
            PQclear(res);
            return WA_EXIT_FAIL;
        }

        failed += rc == 1;
        replayed += rc == 0;
    }

    PQclear(res);

done:

    printf("%d replayed, %d refused again\n", replayed, failed);

    return failed ? WA_EXIT_FAIL : WA_EXIT_OK;
}


/*
 * 0 replayed, 2 nothing to do (already replayed), 1 refused again (or not
 * found), -1 the database failed: stop, nothing was marked.
 */
static int
wa_dead_replay_one(wa_db_t *db, const char *id)
{
    int           n, lengths[16], formats[16];
    char          reason[sizeof(db->error)], outcome[64];
    uint16_t      type;
    PGresult     *res, *row;
    wa_record_t   rec;
    const char   *values[16], *name, *params[2];

    if (wa_dead_exec(db, "BEGIN", "cannot begin") != 0) {
        return -1;
    }

    /* locked: two replays at once write it once; raw in binary */
    params[0] = id;
    row = PQexecParams(db->conn, "SELECT record_type, raw, "
                       "replayed_at IS NOT NULL FROM wa_dead_letter "
                       "WHERE id = $1::bigint FOR UPDATE",
                       1, NULL, params, NULL, NULL, 1);

    if (PQresultStatus(row) != PGRES_TUPLES_OK) {
        wa_db_set_error(db, row, "cannot read wa_dead_letter");
        fprintf(stderr, "wa-writer: %s\n", db->error);
        PQclear(row);
        return -1;
    }

    if (PQntuples(row) == 0) {
        printf("dead letter %s: no such dead letter\n", id);
        PQclear(row);
        return wa_dead_exec(db, "ROLLBACK", "cannot roll back") ? -1 : 1;
    }

    if (PQgetvalue(row, 0, 2)[0]) {
        printf("dead letter %s: already replayed, nothing to do\n", id);
        PQclear(row);
        return wa_dead_exec(db, "ROLLBACK", "cannot roll back") ? -1 : 2;
    }

    type = wa_dead_type(PQgetvalue(row, 0, 0));

    if (type == 0
        || wa_record_decode(&rec, type,
                            (const unsigned char *) PQgetvalue(row, 0, 1),
                            (size_t) PQgetlength(row, 0, 1)) != 0)
    {
        snprintf(reason, sizeof(reason), "replay: the record does not "
                 "decode (type \"%s\", %d bytes)", PQgetvalue(row, 0, 0),
                 PQgetlength(row, 0, 1));
        PQclear(row);

        if (wa_dead_exec(db, "ROLLBACK", "cannot roll back") != 0) {
            return -1;
        }

        return wa_dead_refused(db, id, reason, NULL);
    }

    /* the ring's statement, the ring's parameters: rec points into row */
    name = wa_db_record_params(&rec, &n, values, lengths, formats);
    res = PQexecPrepared(db->conn, name, n, values, lengths, formats, 0);
    PQclear(row);

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        wa_db_set_error(db, res, NULL);
        PQclear(res);

        if (PQstatus(db->conn) != CONNECTION_OK) {
            fprintf(stderr, "wa-writer: %s\n", db->error);
            return -1;
        }

        snprintf(reason, sizeof(reason), "%s", db->error);
        snprintf(outcome, sizeof(outcome), "%s", db->sqlstate);

        if (wa_dead_exec(db, "ROLLBACK", "cannot roll back") != 0) {
            return -1;
        }

        return wa_dead_refused(db, id, reason, outcome);
    }

    snprintf(outcome, sizeof(outcome), "%s",
             PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)
             ? PQgetvalue(res, 0, 0) : "stored");
    PQclear(res);

    params[1] = outcome;
    res = PQexecParams(db->conn, "SELECT wa_dead_letter_replayed($1::bigint, "
                       "$2)", 2, NULL, params, NULL, NULL, 0);

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        wa_db_set_error(db, res, "cannot mark the dead letter replayed");
        fprintf(stderr, "wa-writer: %s\n", db->error);
        PQclear(res);
        return -1;
    }

    PQclear(res);

    if (wa_dead_exec(db, "COMMIT", "cannot commit the replay") != 0) {
        return -1;
    }

    printf("dead letter %s: replayed (%s record: %s)\n", id,
           wa_record_type_name(type), outcome);

    return 0;
}


/* refused again: keep it waiting, with the new reason */
static int
wa_dead_refused(wa_db_t *db, const char *id, const char *reason,
    const char *sqlstate)
{
    PGresult    *res;
    const char  *params[3];

    params[0] = id;
    params[1] = reason;
    params[2] = sqlstate && sqlstate[0] ? sqlstate : NULL;

    res = PQexecParams(db->conn, "SELECT wa_dead_letter_refused($1::bigint, "
                       "$2, $3)", 3, NULL, params, NULL, NULL, 0);

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        wa_db_set_error(db, res, "cannot record the refusal");
        fprintf(stderr, "wa-writer: %s\n", db->error);
        PQclear(res);
        return -1;
    }

    PQclear(res);

    printf("dead letter %s: refused again, still waiting: %s\n", id, reason);

    return 1;
}


static int
wa_dead_exec(wa_db_t *db, const char *sql, const char *what)
{
    PGresult  *res;

    res = PQexec(db->conn, sql);

    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        wa_db_set_error(db, res, what);
        fprintf(stderr, "wa-writer: %s\n", db->error);
        PQclear(res);
        return -1;
    }

    PQclear(res);

    return 0;
}


static int
wa_dead_id(const char *s)
{
    size_t  n;

    n = strspn(s, "0123456789");

    return n > 0 && n < 19 && s[n] == '\0';
}


/* the type a dead letter names; 0 for "unknown" (it did not decode) */
static uint16_t
wa_dead_type(const char *name)
{
    uint16_t  t;

    for (t = 1; t <= WA_REC_TYPE_MAX; t++) {
        if (strcmp(name, wa_record_type_name(t)) == 0) {
            return t;
        }
    }

    return 0;
}
