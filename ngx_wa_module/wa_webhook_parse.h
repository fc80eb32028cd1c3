/*
 * wa_webhook_parse: turn one WhatsApp Cloud API webhook body into ring
 * records, one per message, status, error and message echo, in every entry
 * and change; a change with none of these is one record of its raw value.
 *
 * Plain C over cJSON, no nginx dependency, so the unit tests and the fuzzer
 * drive exactly the code the module runs.
 *
 * The body is checked completely before the first record is emitted: a body
 * that is not a Cloud API event records nothing.
 */

#ifndef WA_WEBHOOK_PARSE_H
#define WA_WEBHOOK_PARSE_H

#include <stddef.h>

#include "wa_record.h"


#define WA_WH_OK           0
#define WA_WH_INVALID     -1     /* not a Cloud API event: 400 */
#define WA_WH_EMIT_FAILED -2     /* emit() refused a record: 503 */
#define WA_WH_NOMEM       -3     /* 500 */

#define WA_WH_ERR_LEN      160


typedef struct wa_webhook_ctx_s  wa_webhook_ctx_t;

struct wa_webhook_ctx_s {
    /* the business (decimal) for a phone_number_id, or NULL if unknown */
    const char  *(*business)(wa_webhook_ctx_t *ctx, const char *phone_id);
    /* publish a record; 0, or -1 to stop (ring full) */
    int          (*emit)(wa_webhook_ctx_t *ctx, wa_record_t *rec);
    void          *data;

    const char    *default_business;   /* for unknown phone_number_ids */
    const char    *received_ms;        /* decimal, stamped on each record */

    /* results */
    unsigned       messages;
    unsigned       statuses;
    unsigned       errors;
    unsigned       events;             /* changes stored raw (WA_REC_EVENT) */
    unsigned       echoes;
    unsigned       unknown_channels;   /* records under default_business */
    char           error[WA_WH_ERR_LEN];   /* why WA_WH_INVALID */
};


int wa_webhook_parse(const char *body, size_t len, wa_webhook_ctx_t *ctx);

#endif /* WA_WEBHOOK_PARSE_H */
