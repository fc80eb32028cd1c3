/*
 * Renderings of a record for people: the JSON kept next to the raw bytes
 * of a dead letter, and the short identification used in log lines (never
 * a body or a payload: they are customers' messages).
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wa_writer.h"


static const char  *wa_field_names[WA_F__MAX] = {
    [WA_F_BUSINESS] = "business",
    [WA_F_PHONE_NUMBER_ID] = "phone_number_id",
    [WA_F_PHONE] = "phone",
    [WA_F_WA_USER_ID] = "wa_user_id",
    [WA_F_NAME] = "name",
    [WA_F_WAMID] = "wamid",
    [WA_F_MSG_TYPE] = "msg_type",
    [WA_F_BODY] = "body",
    [WA_F_TIMESTAMP] = "timestamp",
    [WA_F_PAYLOAD] = "payload",
    [WA_F_STATUS] = "status",
    [WA_F_ERROR_CODE] = "error_code",
    [WA_F_ERROR_TITLE] = "error_title",
    [WA_F_ERROR_DETAIL] = "error_detail",
    [WA_F_LOCAL_ID] = "local_id",
    [WA_F_LEAD_ID] = "lead_id",
    [WA_F_SOURCE] = "source",
    [WA_F_CLIENT_REF] = "client_ref",
    [WA_F_FBTRACE_ID] = "fbtrace_id",
    [WA_F_RETRYABLE] = "retryable",
    [WA_F_CALLBACK_DATA] = "callback_data",
    [WA_F_HTTP_STATUS] = "http_status",
    [WA_F_RECEIVED_MS] = "received_ms",
    [WA_F_ATTEMPT] = "attempt",
    [WA_F_FIELD] = "field",
    [WA_F_WABA_ID] = "waba_id",
    [WA_F_CONTACT] = "contact",
    [WA_F_MEDIA_ID] = "media_id",
    [WA_F_MIME_TYPE] = "mime_type",
    [WA_F_SIZE] = "size",
    [WA_F_SHA256] = "sha256",
};


const char *
wa_field_name(int tag)
{
    if (tag <= 0 || tag >= WA_F__MAX || wa_field_names[tag] == NULL) {
        return "unknown";
    }

    return wa_field_names[tag];
}


/* {"type":"status","ring_pos":123,"fields":{"business":"1",...}};
 * rec may be NULL (the record did not decode) */
char *
wa_render_json(const wa_record_t *rec, uint16_t type, uint64_t pos)
{
    int       i, first, rc;
    char      head[128];
    wa_buf_t  b;

    memset(&b, 0, sizeof(wa_buf_t));

    snprintf(head, sizeof(head), "{\"type\":\"%s\",\"type_code\":%u,"
             "\"ring_pos\":%" PRIu64 ",\"fields\":",
             wa_record_type_name(type), (unsigned) type, pos);

    rc = wa_buf_add(&b, head, strlen(head));

    if (rec == NULL) {
        rc |= wa_buf_add(&b, "null}", 5);
        goto done;
    }

    rc |= wa_buf_add(&b, "{", 1);
    first = 1;

    for (i = 1; i < WA_F__MAX; i++) {
        if (rec->f[i].data == NULL) {
            continue;
        }

        if (!first) {
            rc |= wa_buf_add(&b, ",", 1);
        }

        first = 0;

        rc |= wa_buf_add(&b, "\"", 1);
        rc |= wa_buf_add(&b, wa_field_name(i), strlen(wa_field_name(i)));
        rc |= wa_buf_add(&b, "\":\"", 3);
        rc |= wa_buf_json_escape(&b, rec->f[i].data, rec->f[i].len);
        rc |= wa_buf_add(&b, "\"", 1);
    }

    rc |= wa_buf_add(&b, "}}", 2);

done:

    if (rc != 0) {
        free(b.data);
        return NULL;
    }

    return b.data;
}


/* what identifies the record in a log line: its keys, sanitized and cut */
void
wa_render_ident(char *buf, size_t size, const wa_record_t *rec)
{
    int          i, tag;
    size_t       n, len;
    static const int  keys[] = {
        WA_F_BUSINESS, WA_F_WAMID, WA_F_LOCAL_ID, WA_F_STATUS, WA_F_FIELD,
        WA_F_WABA_ID
    };

    n = 0;
    buf[0] = '\0';

    for (i = 0; i < (int) (sizeof(keys) / sizeof(keys[0])); i++) {
        tag = keys[i];

        if (rec->f[tag].data == NULL || size - n < 16) {
            continue;
        }

        n += (size_t) snprintf(buf + n, size - n, "%s%s ", n ? " " : "",
                               wa_field_name(tag));

        len = rec->f[tag].len < 80 ? rec->f[tag].len : 80;
        n += wa_sanitize(buf + n, size - n, rec->f[tag].data, len);
    }

    if (n == 0) {
        snprintf(buf, size, "no keys");
    }
}
