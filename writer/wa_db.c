/*
 * The PostgreSQL connection: connect with sane timeouts, describe it
 * without its password, keep errors as one line plus their SQLSTATE, and
 * prepare the ingest statements once the schema is known to be current.
 */

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wa_writer.h"


/* pg_type OIDs, stable since forever */
#define WA_TEXTOID   25
#define WA_BYTEAOID  17


/* one prepared statement per record type, arguments in this order; the
 * set statements of in_message and status runs take the same fields, in
 * the same order, as the fields of their row types (wa_set.c) */

typedef struct {
    const char  *name;
    const char  *function;
    int          nfields;
    int          fields[WA_DB_PARAMS_MAX];
} wa_stmt_t;

static const wa_stmt_t  wa_stmts[WA_REC_TYPE_MAX + 1] = {
    [WA_REC_IN_MESSAGE] = { "wa_in", "wa_ingest_in_message", 12,
        { WA_F_BUSINESS, WA_F_PHONE_NUMBER_ID, WA_F_PHONE, WA_F_WA_USER_ID,
          WA_F_NAME, WA_F_WAMID, WA_F_MSG_TYPE, WA_F_BODY, WA_F_TIMESTAMP,
          WA_F_PAYLOAD, WA_F_RECEIVED_MS, WA_F_CONTACT } },

    [WA_REC_STATUS] = { "wa_status", "wa_ingest_status", 13,
        { WA_F_BUSINESS, WA_F_PHONE_NUMBER_ID, WA_F_WAMID, WA_F_STATUS,
          WA_F_TIMESTAMP, WA_F_PHONE, WA_F_WA_USER_ID, WA_F_ERROR_CODE,
          WA_F_ERROR_TITLE, WA_F_ERROR_DETAIL, WA_F_CALLBACK_DATA,
          WA_F_PAYLOAD, WA_F_RECEIVED_MS } },

    [WA_REC_OUT_PENDING] = { "wa_out_pending", "wa_ingest_out_pending", 12,
        { WA_F_LOCAL_ID, WA_F_BUSINESS, WA_F_PHONE_NUMBER_ID, WA_F_PHONE,
          WA_F_LEAD_ID, WA_F_SOURCE, WA_F_CLIENT_REF, WA_F_MSG_TYPE,
          WA_F_BODY, WA_F_PAYLOAD, WA_F_RECEIVED_MS, WA_F_ATTEMPT } },

    [WA_REC_OUT_RESULT] = { "wa_out_result", "wa_ingest_out_result", 12,
        { WA_F_LOCAL_ID, WA_F_BUSINESS, WA_F_STATUS, WA_F_WAMID,
          WA_F_ERROR_CODE, WA_F_ERROR_TITLE, WA_F_ERROR_DETAIL,
          WA_F_FBTRACE_ID, WA_F_RETRYABLE, WA_F_HTTP_STATUS,
          WA_F_RECEIVED_MS, WA_F_ATTEMPT } },

    [WA_REC_WEBHOOK_ERROR] = { "wa_webhook_error", "wa_ingest_webhook_error",
        8,
        { WA_F_BUSINESS, WA_F_PHONE_NUMBER_ID, WA_F_ERROR_CODE,
          WA_F_ERROR_TITLE, WA_F_ERROR_DETAIL, WA_F_PAYLOAD,
          WA_F_RECEIVED_MS, WA_F_TIMESTAMP } },

    /* no set twins: rare next to messages and statuses (wa_set.c) */
    [WA_REC_EVENT] = { "wa_event", "wa_ingest_event", 7,
        { WA_F_BUSINESS, WA_F_PHONE_NUMBER_ID, WA_F_WABA_ID, WA_F_FIELD,
          WA_F_TIMESTAMP, WA_F_PAYLOAD, WA_F_RECEIVED_MS } },

    [WA_REC_ECHO] = { "wa_echo", "wa_ingest_echo", 10,
        { WA_F_BUSINESS, WA_F_PHONE_NUMBER_ID, WA_F_PHONE, WA_F_WA_USER_ID,
          WA_F_WAMID, WA_F_MSG_TYPE, WA_F_BODY, WA_F_TIMESTAMP,
          WA_F_PAYLOAD, WA_F_RECEIVED_MS } },

    /* the call and its outcome: the status field says which */
    [WA_REC_MARK_READ] = { "wa_mark_read", "wa_ingest_mark_read", 12,
        { WA_F_LOCAL_ID, WA_F_BUSINESS, WA_F_PHONE_NUMBER_ID, WA_F_WAMID,
          WA_F_STATUS, WA_F_PAYLOAD, WA_F_ERROR_CODE, WA_F_ERROR_TITLE,
          WA_F_ERROR_DETAIL, WA_F_FBTRACE_ID, WA_F_HTTP_STATUS,
          WA_F_RECEIVED_MS } },

    [WA_REC_MEDIA_UPLOAD] = { "wa_media_upload", "wa_ingest_media_upload", 17,
        { WA_F_LOCAL_ID, WA_F_BUSINESS, WA_F_PHONE_NUMBER_ID, WA_F_STATUS,
          WA_F_MSG_TYPE, WA_F_MIME_TYPE, WA_F_NAME, WA_F_SIZE, WA_F_MEDIA_ID,
          WA_F_SHA256, WA_F_ERROR_CODE, WA_F_ERROR_TITLE, WA_F_ERROR_DETAIL,
          WA_F_FBTRACE_ID, WA_F_RETRYABLE, WA_F_HTTP_STATUS,
          WA_F_RECEIVED_MS } },
};


static void wa_db_notice(void *arg, const PGresult *res);
static void wa_db_redact(char *dst, size_t size, const char *src);


int
wa_db_check_dsn(const char *dsn, char *err, size_t errlen)
{
    char              *msg;
    PQconninfoOption  *opts;

    msg = NULL;
    opts = PQconninfoParse(dsn, &msg);

    if (opts == NULL) {
        wa_db_redact(err, errlen, msg ? msg : "out of memory");
        PQfreemem(msg);
        return -1;
    }

    PQconninfoFree(opts);

    return 0;
}


int
wa_db_connect(wa_db_t *db)
{
    int          n;
    const char  *keys[12], *vals[12], *host;

    wa_db_close(db);

    /* defaults first: what the DSN says overrides them */
    n = 0;
    keys[n] = "connect_timeout";           vals[n++] = "10";
    keys[n] = "keepalives";                vals[n++] = "1";
    keys[n] = "keepalives_idle";           vals[n++] = "30";
    keys[n] = "keepalives_interval";       vals[n++] = "10";
    keys[n] = "keepalives_count";          vals[n++] = "3";
    keys[n] = "fallback_application_name"; vals[n++] = "wa-writer";

    if (db->dsn != NULL) {
        keys[n] = "dbname";                vals[n++] = db->dsn;
    }

    /* records are UTF-8 by contract, whatever the DSN says */
    keys[n] = "client_encoding";           vals[n++] = "UTF8";
    keys[n] = NULL;                        vals[n] = NULL;

    db->conn = PQconnectdbParams(keys, vals, 1);
    db->ready = 0;

    if (db->conn == NULL) {
        snprintf(db->error, sizeof(db->error), "out of memory");
        strcpy(db->sqlstate, "53200");
        return -1;
    }

    host = PQhost(db->conn);

    snprintf(db->where, sizeof(db->where), "host %s port %s dbname %s",
             host && host[0] ? host : "(default)",
             PQport(db->conn) ? PQport(db->conn) : "(default)",
             PQdb(db->conn) ? PQdb(db->conn) : "(default)");

    if (PQstatus(db->conn) != CONNECTION_OK) {
        wa_db_set_error(db, NULL, "cannot connect to PostgreSQL");
        PQfinish(db->conn);
        db->conn = NULL;
        return -1;
    }

    PQsetNoticeReceiver(db->conn, wa_db_notice, db);
    db->generation++;

    db->sqlstate[0] = '\0';
    db->error[0] = '\0';

    return 0;
}


void
wa_db_close(wa_db_t *db)
{
    if (db->conn != NULL) {
        PQfinish(db->conn);
        db->conn = NULL;
    }

    db->ready = 0;
}


void
wa_db_set_error(wa_db_t *db, const PGresult *res, const char *what)
{
    char        msg[sizeof(db->error)];
    const char  *state, *primary, *detail, *hint;

    state = NULL;
    primary = NULL;
    detail = NULL;
    hint = NULL;

    if (res != NULL) {
        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
        hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
    }

    if (primary == NULL) {
        primary = (res != NULL && PQresultErrorMessage(res)[0])
                  ? PQresultErrorMessage(res)
                  : db->conn ? PQerrorMessage(db->conn) : "no connection";
    }

    /* a row's values are a customer's message: kept whole in the dead
     * letter, never copied into a log line */
    if (detail != NULL && strncmp(detail, "Failing row contains", 20) == 0) {
        detail = "Failing row contains the record's values, not repeated "
                 "here";
    }

    if (state == NULL) {
        /* no server error: the connection itself failed */
        state = (db->conn == NULL || PQstatus(db->conn) == CONNECTION_BAD)
                ? "08006" : "";
    }

    snprintf(db->sqlstate, sizeof(db->sqlstate), "%s", state);

    snprintf(msg, sizeof(msg), "%s%s%s%s%s%s%s%s%s",
             what ? what : "", what ? ": " : "",
             state[0] ? "SQLSTATE " : "", state, state[0] ? ": " : "",
             primary, detail ? " (" : "", detail ? detail : "",
             detail ? ")" : "");

    if (hint != NULL) {
        size_t  len = strlen(msg);

        snprintf(msg + len, sizeof(msg) - len, " hint: %s", hint);
    }

    wa_sanitize(db->error, sizeof(db->error), msg, strlen(msg));
}


const char *
wa_db_schema_version(void)
{
    return wa_migrations[wa_migrations_n - 1].version;
}


int
wa_db_prepare(wa_db_t *db)
{
    int              i, k;
    char             sql[512];
    size_t           len;
    Oid              types[WA_DB_PARAMS_MAX];
    PGresult        *res;
    const char      *have, *need;
    const wa_stmt_t *st;

    res = PQexec(db->conn, "SELECT max(version) FROM wa_schema_migrations");

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        wa_db_set_error(db, res, "the database has no ngx_wa schema (run "
                        "\"wa-writer migrate\")");
        PQclear(res);
        return -1;
    }

    need = wa_db_schema_version();
    have = PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0);

    if (strcmp(have, need) < 0) {
        snprintf(db->error, sizeof(db->error), "the database schema is at "
                 "\"%s\", this wa-writer needs \"%s\": run \"wa-writer "
                 "migrate\"", have, need);
        strcpy(db->sqlstate, "55000");
        PQclear(res);
        return -1;
    }

    if (strcmp(have, need) > 0 && !db->warned_schema) {
        wa_log(WA_LOG_WARN, "the database schema \"%s\" is newer than this "
               "wa-writer's \"%s\"", have, need);
        db->warned_schema = 1;
    }

    PQclear(res);

    for (i = 1; i <= WA_REC_TYPE_MAX; i++) {
        st = &wa_stmts[i];

        len = (size_t) snprintf(sql, sizeof(sql), "SELECT %s(", st->function);

        for (k = 0; k < st->nfields; k++) {
            len += (size_t) snprintf(sql + len, sizeof(sql) - len, "%s$%d",
                                     k ? ", " : "", k + 1);
            types[k] = WA_TEXTOID;
        }

        snprintf(sql + len, sizeof(sql) - len, ")");

        res = PQprepare(db->conn, st->name, sql, st->nfields, types);

        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            wa_db_set_error(db, res, "cannot prepare the ingest statements");
            PQclear(res);
            return -1;
        }

        PQclear(res);
    }

    for (k = 0; k < 6; k++) {
        types[k] = WA_TEXTOID;
    }

    types[4] = WA_BYTEAOID;

    res = PQprepare(db->conn, "wa_dead",
                    "SELECT wa_dead_letter_add($1, $2, $3, $4, $5, $6)", 6,
                    types);

    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        wa_db_set_error(db, res, "cannot prepare the ingest statements");
        PQclear(res);
        return -1;
    }

    PQclear(res);

    if (wa_set_prepare(db) != 0) {
        return -1;
    }

    db->ready = 1;

    return 0;
}


/* the statement of a record type, for the batch writer */
const char *
wa_db_stmt(uint16_t type, int *nfields, const int **fields)
{
    const wa_stmt_t  *st;

    if (type == 0 || type > WA_REC_TYPE_MAX) {
        return NULL;
    }

    st = &wa_stmts[type];
    *nfields = st->nfields;
    *fields = st->fields;

    return st->name;
}


/*
 * The parameters of a record's prepared statement: its fields as text in
 * binary format (no copy, no NUL terminator, and the server still checks
 * the encoding and refuses NUL bytes); an absent or empty field is NULL.
 * The ring's path and a dead letter's replay both call the statement this
 * way. Returns its name, or NULL for a type with none.
 */
const char *
wa_db_record_params(const wa_record_t *rec, int *n, const char **values,
    int *lengths, int *formats)
{
    int                i;
    const int         *fields;
    const char        *name;
    const wa_field_t  *f;

    name = wa_db_stmt(rec->type, n, &fields);

    if (name == NULL) {
        return NULL;
    }

    for (i = 0; i < *n; i++) {
        f = &rec->f[fields[i]];

        if (f->data == NULL || f->len == 0) {
            values[i] = NULL;
            lengths[i] = 0;

        } else {
            values[i] = f->data;
            lengths[i] = (int) f->len;
        }

        formats[i] = 1;
    }

    return name;
}


/* server WARNINGs (from migrations, say) are worth a log line; NOTICEs
 * ("relation already exists, skipping") are not */
static void
wa_db_notice(void *arg, const PGresult *res)
{
    const char  *severity, *primary;

    (void) arg;

    severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

    if (severity != NULL && strcmp(severity, "WARNING") == 0) {
        wa_log(WA_LOG_WARN, "PostgreSQL: %s", primary ? primary : "");
    }
}


/* libpq quotes pieces of a bad connection string in its messages, which
 * may be a password: drop whatever is between double quotes, but for a
 * lone punctuation character (missing "=" after ...) */
static void
wa_db_redact(char *dst, size_t size, const char *src)
{
    size_t       n;
    const char  *end;

    n = 0;

    while (*src && n + 6 < size) {
        if (*src != '"') {
            if (*src != '\n') {
                dst[n++] = *src;
            }

            src++;
            continue;
        }

        end = strchr(src + 1, '"');

        if (end == NULL) {
            break;
        }

        if (end - src == 2 && !isalnum((unsigned char) src[1])) {
            memcpy(dst + n, src, 3);
            n += 3;

        } else {
            memcpy(dst + n, "\"...\"", 5);
            n += 5;
        }

        src = end + 1;
    }

    dst[n] = '\0';
}
