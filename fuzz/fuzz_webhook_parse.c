/*
 * libFuzzer target: arbitrary bytes as a webhook body. Every record the
 * parser emits must survive the ring encoding unchanged.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wa_webhook_parse.h"


static const char *
fuzz_business(wa_webhook_ctx_t *ctx, const char *phone_id)
{
    (void) ctx;
    return phone_id[0] == '1' ? "1" : NULL;
}


static int
fuzz_emit(wa_webhook_ctx_t *ctx, wa_record_t *rec)
{
    int             i;
    size_t          size;
    unsigned char  *buf;
    wa_record_t     back;

    (void) ctx;

    size = wa_record_size(rec);
    buf = malloc(size ? size : 1);
    if (buf == NULL) {
        return -1;
    }

    wa_record_encode(rec, buf);

    if (wa_record_decode(&back, rec->type, buf, size) != 0) {
        abort();
    }

    for (i = 1; i < WA_F__MAX; i++) {
        if ((rec->f[i].data == NULL) != (back.f[i].data == NULL)
            || rec->f[i].len != back.f[i].len
            || (rec->f[i].len
                && memcmp(rec->f[i].data, back.f[i].data, rec->f[i].len)))
        {
            abort();
        }
    }

    free(buf);

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wa_webhook_ctx_t  ctx;
    wa_record_t       rec;

    memset(&ctx, 0, sizeof(wa_webhook_ctx_t));
    ctx.business = fuzz_business;
    ctx.emit = fuzz_emit;
    ctx.default_business = "0";
    ctx.received_ms = "0";

    (void) wa_webhook_parse((const char *) data, size, &ctx);

    /* the writer's decoder sees arbitrary payloads too (corrupt ring) */
    (void) wa_record_decode(&rec, (uint16_t) (size % 7), data, size);

    return 0;
}
