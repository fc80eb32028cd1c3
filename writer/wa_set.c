/*
 * A run of records written by one statement: inbound messages, statuses,
 * or sends and their outcomes mixed (sql/functions/). The set function
 * takes one parameter, an array of the run's row type (one text field per
 * record field, sql/schema/011_record_types.sql), sent in PostgreSQL's
 * binary array and record formats, so the bytes go as they are, with no
 * quoting to get wrong and no copy but the one into libpq's buffer. The
 * server still checks every field's encoding, as it does for a single
 * record. Webhook errors, raw events and message echoes have no set
 * statement: they go one statement per record, and end any run.
 */

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wa_writer.h"


#define WA_TEXTOID  25


/* a column that is not a field: the record's kind, "p" or "r" */
#define WA_SET_KIND  0

/*
 * The fields of a run's row type are those of the statements of its
 * record types (wa_db.c), so each record's fields are listed once: for one
 * type, its fields in order; for several, the kind first, then the fields
 * of each type in turn, those already there left out. The row types of
 * sql/schema/011_record_types.sql follow the same order.
 */
typedef struct {
    const char  *name;
    const char  *function;
    const char  *row_type;
    unsigned     types;             /* bit per record type the run may mix */
} wa_set_stmt_t;

#define WA_T(type)  (1u << (type))

static const wa_set_stmt_t  wa_set_stmts[] = {
    { "wa_in_set", "wa_ingest_in_messages", "wa_in_rec",
      WA_T(WA_REC_IN_MESSAGE) },
    { "wa_status_set", "wa_ingest_statuses", "wa_status_rec",
      WA_T(WA_REC_STATUS) },
    { "wa_send_set", "wa_ingest_sends", "wa_send_rec",
      WA_T(WA_REC_OUT_PENDING) | WA_T(WA_REC_OUT_RESULT) },
};

#define WA_SET_N  (sizeof(wa_set_stmts) / sizeof(wa_set_stmts[0]))


static const wa_set_stmt_t *wa_set_of(uint16_t type);
static int wa_set_fields(const wa_set_stmt_t *st, int *fields);
static int wa_set_int(wa_buf_t *a, int32_t v);
static void wa_set_int_at(wa_buf_t *a, size_t at, int32_t v);


/* how many records from `from` on make a run one set statement can take */
unsigned
wa_set_run(const wa_batch_t *b, unsigned from, unsigned to)
{
    unsigned              i;
    const wa_set_stmt_t  *st;

    st = wa_set_of(b->items[from].type);

    if (st == NULL) {
        return 0;
    }

    for (i = from; i < to; i++) {
        if (b->items[i].dead || b->items[i].type > WA_REC_TYPE_MAX
            || !(st->types & WA_T(b->items[i].type)))
        {
            break;
        }
    }

    return i - from;
}


/* queue the set function over items [from, to), a run, in the pipeline */
int
wa_set_send(wa_db_t *db, wa_batch_t *b, unsigned from, unsigned to)
{
    int                   c, n, length, format;
    int                   fields[WA_SET_COLS];
    size_t                len, at;
    unsigned              i;
    wa_buf_t             *a;
    const char           *value, *data;
    const wa_set_stmt_t  *st;

    st = wa_set_of(b->items[from].type);
    n = wa_set_fields(st, fields);

    a = &b->run;
    a->len = 0;

    /* ndim, no nulls, element type, size, lbound */
    if (wa_set_int(a, 1) || wa_set_int(a, 0)
        || wa_set_int(a, (int32_t) db->set_types[st - wa_set_stmts])
        || wa_set_int(a, (int32_t) (to - from)) || wa_set_int(a, 1))
    {
        return -1;
    }

    for (i = from; i < to; i++) {

        /* the element's length, patched below, then the record: its
         * number of columns, and for each its type, length and bytes */
        at = a->len;

        if (wa_set_int(a, 0) || wa_set_int(a, n)) {
            return -1;
        }

        for (c = 0; c < n; c++) {
            if (fields[c] == WA_SET_KIND) {
                data = b->items[i].type == WA_REC_OUT_PENDING ? "p" : "r";
                len = 1;

            } else {
                data = b->items[i].rec.f[fields[c]].data;
                len = b->items[i].rec.f[fields[c]].len;
            }

            if (wa_set_int(a, WA_TEXTOID) != 0) {
                return -1;
            }

            /* as for one record: an empty field is NULL */
            if (data == NULL || len == 0) {
                if (wa_set_int(a, -1) != 0) {
                    return -1;
                }

                continue;
            }

            if (wa_set_int(a, (int32_t) len) != 0
                || wa_buf_add(a, data, len) != 0)
            {
                return -1;
            }
        }

        wa_set_int_at(a, at, (int32_t) (a->len - at - 4));
    }

    value = a->data;
    length = (int) a->len;
    format = 1;

    return PQsendQueryPrepared(db->conn, st->name, 1, &value, &length,
                               &format, 0)
           ? 0 : -1;
}


/* the prepared statements, and the row types their arrays are made of */
int
wa_set_prepare(wa_db_t *db)
{
    char                  sql[256];
    size_t                k;
    PGresult             *res;
    const char           *params[1];
    const wa_set_stmt_t  *st;

    for (k = 0; k < WA_SET_N; k++) {
        st = &wa_set_stmts[k];

        params[0] = st->row_type;

        res = PQexecParams(db->conn, "SELECT $1::regtype::oid", 1, NULL,
                           params, NULL, NULL, 0);

        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
            wa_db_set_error(db, res, "cannot find the row types of runs");
            PQclear(res);
            return -1;
        }

        db->set_types[k] = (Oid) strtoul(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);

        snprintf(sql, sizeof(sql), "SELECT %s($1::%s[])", st->function,
                 st->row_type);

        res = PQprepare(db->conn, st->name, sql, 1, NULL);

        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            wa_db_set_error(db, res, "cannot prepare the ingest statements");
            PQclear(res);
            return -1;
        }

        PQclear(res);
    }

    return 0;
}


static const wa_set_stmt_t *
wa_set_of(uint16_t type)
{
    size_t  k;

    if (type == 0 || type > WA_REC_TYPE_MAX) {
        return NULL;
    }

    for (k = 0; k < WA_SET_N; k++) {
        if (wa_set_stmts[k].types & WA_T(type)) {
            return &wa_set_stmts[k];
        }
    }

    return NULL;
}


/* the fields of a run's row type, in order; how many */
static int
wa_set_fields(const wa_set_stmt_t *st, int *fields)
{
    int          k, i, j, m, n;
    const int   *f;

    n = 0;

    if (st->types & (st->types - 1)) {
        fields[n++] = WA_SET_KIND;
    }

    for (k = 1; k <= WA_REC_TYPE_MAX; k++) {
        if (!(st->types & WA_T(k))) {
            continue;
        }

        (void) wa_db_stmt((uint16_t) k, &m, &f);

        for (i = 0; i < m; i++) {
            for (j = 0; j < n && fields[j] != f[i]; j++) { /* void */ }

            if (j == n && n < WA_SET_COLS) {
                fields[n++] = f[i];
            }
        }
    }

    return n;
}


static int
wa_set_int(wa_buf_t *a, int32_t v)
{
    uint32_t  n = htonl((uint32_t) v);

    return wa_buf_add(a, (const char *) &n, sizeof(n));
}


static void
wa_set_int_at(wa_buf_t *a, size_t at, int32_t v)
{
    uint32_t  n = htonl((uint32_t) v);

    memcpy(a->data + at, &n, sizeof(n));
}
