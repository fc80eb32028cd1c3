/*
 * A run of inbound messages written by one statement: each field becomes
 * one text[] parameter of wa_ingest_in_messages (005), in PostgreSQL's
 * binary array format, so the bytes go as they are, with no quoting to get
 * wrong and no copy but the one into libpq's buffer. The server still
 * checks every element's encoding, as it does for a single record.
 */

#include <arpa/inet.h>
#include <string.h>

#include "wa_writer.h"


#define WA_TEXTOID  25


static const int  wa_set_fields[WA_SET_COLS] = {
    WA_F_BUSINESS, WA_F_PHONE_NUMBER_ID, WA_F_PHONE, WA_F_WA_USER_ID,
    WA_F_NAME, WA_F_WAMID, WA_F_MSG_TYPE, WA_F_BODY, WA_F_TIMESTAMP,
    WA_F_PAYLOAD, WA_F_RECEIVED_MS
};


static int wa_set_int(wa_buf_t *a, int32_t v);


/* how many records from `from` on make a run the set statement can take */
unsigned
wa_set_run(const wa_batch_t *b, unsigned from, unsigned to)
{
    unsigned  i;

    for (i = from; i < to; i++) {
        if (b->items[i].dead || b->items[i].type != WA_REC_IN_MESSAGE) {
            break;
        }
    }

    return i - from;
}


/* queue wa_ingest_in_messages over items [from, to) in the pipeline */
int
wa_set_send(wa_db_t *db, wa_batch_t *b, unsigned from, unsigned to)
{
    int                 c, nulls;
    int                 lengths[WA_SET_COLS], formats[WA_SET_COLS];
    unsigned            i;
    wa_buf_t           *a;
    const char         *values[WA_SET_COLS];
    const wa_field_t   *f;

    for (c = 0; c < WA_SET_COLS; c++) {
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
            f = &b->items[i].rec.f[wa_set_fields[c]];

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

    return PQsendQueryPrepared(db->conn, WA_SET_STMT, WA_SET_COLS, values,
                               lengths, formats, 0)
           ? 0 : -1;
}


/* the prepared statement, with its parameters typed text[] */
int
wa_set_prepare(wa_db_t *db)
{
    int        c;
    char       sql[256];
    size_t     len;
    PGresult  *res;

    len = (size_t) snprintf(sql, sizeof(sql),
                            "SELECT wa_ingest_in_messages(");

    for (c = 0; c < WA_SET_COLS; c++) {
        len += (size_t) snprintf(sql + len, sizeof(sql) - len, "%s$%d::text[]",
                                 c ? ", " : "", c + 1);
    }

    snprintf(sql + len, sizeof(sql) - len, ")");

    res = PQprepare(db->conn, WA_SET_STMT, sql, WA_SET_COLS, NULL);

    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        wa_db_set_error(db, res, "cannot prepare the ingest statements");
        PQclear(res);
        return -1;
    }

    PQclear(res);

    return 0;
}


static int
wa_set_int(wa_buf_t *a, int32_t v)
{
    uint32_t  n = htonl((uint32_t) v);

    return wa_buf_add(a, (const char *) &n, sizeof(n));
}
