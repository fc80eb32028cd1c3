/*
 * A run of records of one type written by one statement: each field the
 * record's own statement takes (wa_db.c) becomes one text[] parameter of
 * the type's set function, in PostgreSQL's binary array format, so the
 * bytes go as they are, with no quoting to get wrong and no copy but the
 * one into libpq's buffer. The server still checks every element's
 * encoding, as it does for a single record. Types without a set function
 * go one statement per record.
 */

#include <arpa/inet.h>
#include <string.h>

#include "wa_writer.h"


#define WA_TEXTOID  25


typedef struct {
    const char  *name;
    const char  *function;
} wa_set_stmt_t;

static const wa_set_stmt_t  wa_set_stmts[WA_REC_TYPE_MAX + 1] = {
    [WA_REC_IN_MESSAGE] = { "wa_in_set", "wa_ingest_in_messages" },   /* 005 */
    [WA_REC_STATUS] = { "wa_status_set", "wa_ingest_statuses" },      /* 006 */
};


static int wa_set_int(wa_buf_t *a, int32_t v);


/* how many records from `from` on make a run one set statement can take */
unsigned
wa_set_run(const wa_batch_t *b, unsigned from, unsigned to)
{
    unsigned  i;
    uint16_t  type;

    type = b->items[from].type;

    if (type == 0 || type > WA_REC_TYPE_MAX
        || wa_set_stmts[type].name == NULL)
    {
        return 0;
    }

    for (i = from; i < to; i++) {
        if (b->items[i].dead || b->items[i].type != type) {
            break;
        }
    }

    return i - from;
}


/* queue the set function over items [from, to), a run, in the pipeline */
int
wa_set_send(wa_db_t *db, wa_batch_t *b, unsigned from, unsigned to)
{
    int                 c, n, nulls;
    int                 lengths[WA_SET_COLS], formats[WA_SET_COLS];
    unsigned            i;
    uint16_t            type;
    wa_buf_t           *a;
    const int          *fields;
    const char         *values[WA_SET_COLS];
    const wa_field_t   *f;

    type = b->items[from].type;
    (void) wa_db_stmt(type, &n, &fields);

    for (c = 0; c < n; c++) {
        a = &b->cols[c];
        a->len = 0;
        nulls = 0;

        /* ndim, has-nulls flag (patched below), element type, size, lbound */
        if (wa_set_int(a, 1) || wa_set_int(a, 0) || wa_set_int(a, WA_TEXTOID)
            || wa_set_int(a, (int32_t) (to - from)) || wa_set_int(a, 1))
        {
            return -1;
        }

        for (i = from; i < to; i++) {
            f = &b->items[i].rec.f[fields[c]];

            /* as for one record: an empty field is NULL */
            if (f->data == NULL || f->len == 0) {
                nulls = 1;

                if (wa_set_int(a, -1) != 0) {
                    return -1;
                }

                continue;
            }

            if (wa_set_int(a, (int32_t) f->len) != 0
                || wa_buf_add(a, f->data, f->len) != 0)
            {
                return -1;
            }
        }

        if (nulls) {
            a->data[7] = 1;
        }

        values[c] = a->data;
        lengths[c] = (int) a->len;
        formats[c] = 1;
    }

    return PQsendQueryPrepared(db->conn, wa_set_stmts[type].name, n, values,
                               lengths, formats, 0)
           ? 0 : -1;
}


/* the prepared statements, with their parameters typed text[] */
int
wa_set_prepare(wa_db_t *db)
{
    int          c, n, type;
    char         sql[512];
    size_t       len;
    PGresult    *res;
    const int   *fields;

    for (type = 1; type <= WA_REC_TYPE_MAX; type++) {
        if (wa_set_stmts[type].name == NULL) {
            continue;
        }

        (void) wa_db_stmt((uint16_t) type, &n, &fields);

        len = (size_t) snprintf(sql, sizeof(sql), "SELECT %s(",
                                wa_set_stmts[type].function);

        for (c = 0; c < n; c++) {
            len += (size_t) snprintf(sql + len, sizeof(sql) - len,
                                     "%s$%d::text[]", c ? ", " : "", c + 1);
        }

        snprintf(sql + len, sizeof(sql) - len, ")");

        res = PQprepare(db->conn, wa_set_stmts[type].name, sql, n, NULL);

        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            wa_db_set_error(db, res, "cannot prepare the ingest statements");
            PQclear(res);
            return -1;
        }

        PQclear(res);
    }

    return 0;
}


static int
wa_set_int(wa_buf_t *a, int32_t v)
{
    uint32_t  n = htonl((uint32_t) v);

    return wa_buf_add(a, (const char *) &n, sizeof(n));
}
