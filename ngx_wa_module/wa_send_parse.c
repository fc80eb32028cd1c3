/*
 * wa_send_parse: validate send requests, build the Cloud API body, read
 * its answer.
 */

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "wa_send_parse.h"


static int wa_send_err(char *err, size_t errlen, const char *msg);
static int wa_send_copy(char *dst, size_t size, const char *src);
static const char *wa_send_str(cJSON *obj, const char *key);
static void wa_send_text(cJSON *obj, const char *key, char *dst, size_t size);


int
wa_send_parse_request(const char *body, size_t len, wa_send_req_t *req,
    char *err, size_t errlen)
{
    int          n;
    cJSON       *root, *item, *text, *tpl;
    const char  *s, *end;

    memset(req, 0, sizeof(wa_send_req_t));

    root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (root == NULL) {
        return wa_send_err(err, errlen, "body is not valid JSON");
    }

    while (end < body + len && isspace((unsigned char) *end)) {
        end++;
    }

    if (end != body + len || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return wa_send_err(err, errlen, "body must be one JSON object");
    }

    /* to: E.164, with or without '+' */

    s = wa_send_str(root, "to");
    if (s == NULL) {
        cJSON_Delete(root);
        return wa_send_err(err, errlen, "to: a phone number string is "
                           "required");
    }

    if (*s == '+') {
        s++;
    }

    for (n = 0; s[n]; n++) {
        if (!isdigit((unsigned char) s[n])) {
            break;
        }
    }

    if (s[n] != '\0' || n < 7 || n > 15 || s[0] == '0') {
        cJSON_Delete(root);
        return wa_send_err(err, errlen, "to: not a phone number in E.164 "
                           "form (7 to 15 digits)");
    }

    memcpy(req->to, s, n + 1);

    /* exactly one of text and template */

    text = cJSON_GetObjectItemCaseSensitive(root, "text");
    tpl = cJSON_GetObjectItemCaseSensitive(root, "template");

    if ((text == NULL) == (tpl == NULL)) {
        cJSON_Delete(root);
        return wa_send_err(err, errlen, "text, template: exactly one is "
                           "required");
    }

    if (text != NULL) {
        if (!cJSON_IsString(text) || text->valuestring[0] == '\0') {
            cJSON_Delete(root);
            return wa_send_err(err, errlen, "text: a non-empty string is "
                               "required");
        }

        if (strlen(text->valuestring) > WA_SEND_TEXT_MAX) {
            cJSON_Delete(root);
            return wa_send_err(err, errlen, "text: longer than 4096 bytes");
        }

        req->text = strdup(text->valuestring);

    } else {
        s = cJSON_IsObject(tpl) ? wa_send_str(tpl, "name") : NULL;

        if (s == NULL || s[0] == '\0') {
            cJSON_Delete(root);
            return wa_send_err(err, errlen, "template: an object with a "
                               "\"name\" is required");
        }

        req->template_name = strdup(s);
        req->template_json = cJSON_PrintUnformatted(tpl);
    }

    /* lead_id: a positive integer, as a number or a string of digits */

    item = cJSON_GetObjectItemCaseSensitive(root, "lead_id");

    if (item != NULL && !cJSON_IsNull(item)) {
        if (cJSON_IsNumber(item)) {
            if (item->valuedouble < 1 || item->valuedouble > 9e15
                || item->valuedouble != (double) (long long) item->valuedouble)
            {
                goto bad_lead;
            }

            snprintf(req->lead_id, sizeof(req->lead_id), "%lld",
                     (long long) item->valuedouble);

        } else if (cJSON_IsString(item)) {
            s = item->valuestring;

            for (n = 0; isdigit((unsigned char) s[n]); n++) { /* void */ }

            if (n == 0 || n > 18 || s[n] != '\0' || s[0] == '0') {
                goto bad_lead;
            }

            memcpy(req->lead_id, s, n + 1);

        } else {
            goto bad_lead;
        }
    }

    /* source: a short word, default "api" */

    item = cJSON_GetObjectItemCaseSensitive(root, "source");

    if (item == NULL || cJSON_IsNull(item)) {
        strcpy(req->source, "api");

    } else {
        s = cJSON_IsString(item) ? item->valuestring : "";

        for (n = 0; s[n]; n++) {
            if (!(islower((unsigned char) s[n]) || isdigit((unsigned char) s[n])
                  || s[n] == '_' || s[n] == '-'))
            {
                break;
            }
        }

        if (n == 0 || s[n] != '\0' || wa_send_copy(req->source,
                                                   sizeof(req->source), s))
        {
            cJSON_Delete(root);
            return wa_send_err(err, errlen, "source: a word of lower case "
                               "letters, digits, '_' or '-' (at most 39) is "
                               "expected");
        }
    }

    /* client_ref: the idempotency key */

    item = cJSON_GetObjectItemCaseSensitive(root, "client_ref");

    if (item != NULL && !cJSON_IsNull(item)) {
        s = cJSON_IsString(item) ? item->valuestring : "";

        for (n = 0; s[n]; n++) {
            if ((unsigned char) s[n] < 0x21 || (unsigned char) s[n] > 0x7e) {
                break;
            }
        }

        if (n == 0 || s[n] != '\0'
            || wa_send_copy(req->client_ref, sizeof(req->client_ref), s))
        {
            cJSON_Delete(root);
            return wa_send_err(err, errlen, "client_ref: 1 to 128 printable "
                               "ASCII characters are expected");
        }
    }

    /* phone_number_id: which channel sends */

    item = cJSON_GetObjectItemCaseSensitive(root, "phone_number_id");

    if (item != NULL && !cJSON_IsNull(item)) {
        s = cJSON_IsString(item) ? item->valuestring : "";

        for (n = 0; isdigit((unsigned char) s[n]); n++) { /* void */ }

        if (n == 0 || s[n] != '\0'
            || wa_send_copy(req->phone_number_id,
                            sizeof(req->phone_number_id), s))
        {
            cJSON_Delete(root);
            return wa_send_err(err, errlen, "phone_number_id: a string of "
                               "digits is expected");
        }
    }

    req->request_json = cJSON_PrintUnformatted(root);

    cJSON_Delete(root);

    if ((text && req->text == NULL) || req->request_json == NULL
        || (tpl && (req->template_name == NULL
                    || req->template_json == NULL)))
    {
        return wa_send_err(err, errlen, "out of memory");
    }

    return 0;

bad_lead:

    cJSON_Delete(root);
    return wa_send_err(err, errlen, "lead_id: a positive integer is "
                       "expected");
}


void
wa_send_req_free(wa_send_req_t *req)
{
    free(req->text);
    cJSON_free(req->template_json);
    free(req->template_name);
    cJSON_free(req->request_json);

    req->text = NULL;
    req->template_json = NULL;
    req->template_name = NULL;
    req->request_json = NULL;
}


char *
wa_send_build_body(const wa_send_req_t *req, const char *local_id)
{
    char   *out;
    cJSON  *root, *text, *tpl;

    root = cJSON_CreateObject();
    if (root == NULL) {
        return NULL;
    }

    cJSON_AddStringToObject(root, "messaging_product", "whatsapp");
    cJSON_AddStringToObject(root, "recipient_type", "individual");
    cJSON_AddStringToObject(root, "to", req->to);
    cJSON_AddStringToObject(root, "biz_opaque_callback_data", local_id);

    if (req->text) {
        cJSON_AddStringToObject(root, "type", "text");
        text = cJSON_AddObjectToObject(root, "text");
        if (text) {
            cJSON_AddStringToObject(text, "body", req->text);
        }

    } else {
        cJSON_AddStringToObject(root, "type", "template");
        tpl = cJSON_Parse(req->template_json);
        if (tpl) {
            cJSON_AddItemToObject(root, "template", tpl);
        }
    }

    out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);

    return out;
}


void
wa_send_parse_response(long status, const char *body, size_t len,
    wa_send_res_t *res)
{
    long    code;
    cJSON  *root, *msgs, *msg, *error, *data;

    memset(res, 0, sizeof(wa_send_res_t));

    root = cJSON_ParseWithLength(body, len);
    res->json = cJSON_IsObject(root);

    if (status >= 200 && status < 300) {
        msgs = root ? cJSON_GetObjectItemCaseSensitive(root, "messages")
                    : NULL;
        msg = cJSON_IsArray(msgs) ? cJSON_GetArrayItem(msgs, 0) : NULL;

        if (cJSON_IsObject(msg) && wa_send_str(msg, "id")
            && wa_send_copy(res->wamid, sizeof(res->wamid),
                            wa_send_str(msg, "id")) == 0)
        {
            res->ok = 1;
            cJSON_Delete(root);
            return;
        }

        /* a 2xx without a message id is not an acceptance we can record,
         * nor a refusal: the message may well be on its way */
        snprintf(res->error_title, sizeof(res->error_title),
                 "provider answered %ld without a message id", status);
        res->unknown = 1;
        res->retryable = 0;
        cJSON_Delete(root);
        return;
    }

    error = root ? cJSON_GetObjectItemCaseSensitive(root, "error") : NULL;
    code = 0;

    if (cJSON_IsObject(error)) {
        wa_send_text(error, "code", res->error_code, sizeof(res->error_code));
        code = strtol(res->error_code, NULL, 10);

        /* API answers carry "message"; some add "error_user_title" */
        if (wa_send_str(error, "message")) {
            snprintf(res->error_title, sizeof(res->error_title), "%s",
                     wa_send_str(error, "message"));

        } else if (wa_send_str(error, "error_user_title")) {
            snprintf(res->error_title, sizeof(res->error_title), "%s",
                     wa_send_str(error, "error_user_title"));
        }

        data = cJSON_GetObjectItemCaseSensitive(error, "error_data");
        if (cJSON_IsObject(data) && wa_send_str(data, "details")) {
            snprintf(res->error_detail, sizeof(res->error_detail), "%s",
                     wa_send_str(data, "details"));
        }

        wa_send_text(error, "fbtrace_id", res->fbtrace_id,
                     sizeof(res->fbtrace_id));
    }

    if (res->error_title[0] == '\0') {
        snprintf(res->error_title, sizeof(res->error_title),
                 "provider answered HTTP %ld", status);
    }

    res->retryable = wa_send_retryable(status, code);

    cJSON_Delete(root);
}


int
wa_send_retryable(long status, long code)
{
    switch (code) {

    /* rate limits, spam limits, transient service errors */
    case 130429: case 131056: case 131000: case 131016:
    case 1: case 2: case 4: case 80007:
        return 1;

    /* re-engagement window, undeliverable, opted out, bad token */
    case 131026: case 131047: case 131049: case 131050: case 190:
        return 0;
    }

    if (code >= 132000 && code <= 132099) {
        return 0;                          /* template errors */
    }

    return status >= 500;
}


static int
wa_send_err(char *err, size_t errlen, const char *msg)
{
    snprintf(err, errlen, "%s", msg);
    return -1;
}


/* 0, or -1 when src does not fit */

static int
wa_send_copy(char *dst, size_t size, const char *src)
{
    size_t  n;

    n = strlen(src);

    if (n >= size) {
        snprintf(dst, size, "%s", "");
        return -1;
    }

    memcpy(dst, src, n + 1);

    return 0;
}


static const char *
wa_send_str(cJSON *obj, const char *key)
{
    cJSON  *item;

    item = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsString(item) ? item->valuestring : NULL;
}


/* a string or an integer as text, truncated to size */

static void
wa_send_text(cJSON *obj, const char *key, char *dst, size_t size)
{
    cJSON  *item;

    item = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (cJSON_IsString(item)) {
        snprintf(dst, size, "%s", item->valuestring);

    } else if (cJSON_IsNumber(item)
               && item->valuedouble > -1e15 && item->valuedouble < 1e15)
    {
        snprintf(dst, size, "%.0f", item->valuedouble);
    }
}
