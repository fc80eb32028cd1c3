/*
 * libFuzzer target: arbitrary bytes as a send request (or a mark-as-read)
 * and as a provider answer, of each kind. A request that parses must build a provider body that is JSON
 * again, with the message object and the context in it byte for byte,
 * and a readable body for its row.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "wa_send_parse.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char           err[WA_SEND_ERR_LEN], *out;
    cJSON         *back;
    wa_send_req_t  req;
    wa_send_res_t  res;

    if (wa_send_parse_request((const char *) data, size, &req, err,
                              sizeof(err))
            == 0
        && req.read)
    {
        /* a mark-as-read: Meta's body, the typing indicator as sent */
        out = wa_send_build_read_body(&req);
        if (out == NULL || (back = cJSON_Parse(out)) == NULL
            || (req.typing_json && strstr(out, req.typing_json) == NULL)
            || req.message_id[0] == '\0')
        {
            abort();
        }

        cJSON_Delete(back);
        cJSON_free(out);

    } else if (req.request_json != NULL) {
        out = wa_send_build_body(&req, "wa-fuzz-1");
        if (out == NULL) {
            abort();
        }

        back = cJSON_Parse(out);
        if (back == NULL) {
            abort();
        }

        /* the caller's bytes, forwarded as they came */
        if (req.object_json && strstr(out, req.object_json) == NULL) {
            abort();
        }

        if (req.context_json && strstr(out, req.context_json) == NULL) {
            abort();
        }

        if (req.summary == NULL
            || cJSON_GetObjectItemCaseSensitive(back, req.type) == NULL)
        {
            abort();
        }

        cJSON_Delete(back);
        cJSON_free(out);
    }

    wa_send_req_free(&req);

    wa_send_parse_answer((wa_send_answer_e) (size % 3), size % 2 ? 400 : 200,
                         (const char *) data, size, &res);
    wa_send_parse_response(size % 2 ? 400 : 200, (const char *) data, size,
                           &res);

    return 0;
}
