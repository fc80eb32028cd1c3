/*
 * wa_send_parse: the send API's JSON in and out, with no nginx dependency
 * (unit tests and the fuzzer run this code as the module does).
 *
 *   request:   {"to", <message>, "context"?, "lead_id"?, "source"?,
 *               "client_ref"?, "phone_number_id"?}
 *
 *   <message>, one of:
 *     "text": "Hello"                      the shorthand, as always
 *     "template": {...}                    as always, Meta's object
 *     "type": "<t>", "<t>": {...}          Meta's own shape, for every
 *                                          <t> of wa_send_types below
 *
 *   Without "type" only the two old forms are accepted: exactly one of
 *   "text" (a string, or Meta's {"body", "preview_url"?} object) and
 *   "template"; any other message object needs its "type". With "type",
 *   the member of that name is required, and no other message member may
 *   come with it (it would be dropped silently). "type": "text" takes the
 *   string shorthand or the object.
 *
 *   "context": {"message_id": "wamid..."} makes any type a reply.
 *
 *   The recipient: "to" (a phone number), or "recipient" (a business-
 *   scoped user id, "US.13491208655302741918", or a parent one,
 *   "US.ENT.1181..."), or both (Meta then sends to the phone): both are
 *   forwarded as given.
 *
 *   mark-as-read, Meta's own shape: {"status": "read", "message_id":
 *   "wamid...", "typing_indicator"?: {"type": "text"},
 *   "messaging_product"?: "whatsapp", "phone_number_id"?}: req->read set.
 *
 *   provider:  the Cloud API's /messages body, and its answer. The type's
 *   object and the context are forwarded as the bytes the caller sent
 *   (sliced from the request, never re-serialised); the envelope around
 *   them is built here.
 */

#ifndef WA_SEND_PARSE_H
#define WA_SEND_PARSE_H

#include <stddef.h>


#define WA_SEND_ERR_LEN      160
#define WA_SEND_TEXT_MAX     4096
#define WA_SEND_REF_MAX      128
/* a business-scoped user id: "CC." and an alphanumeric string (a parent
 * one: "CC.ENT." and one); Meta states no length, ids seen are ~25 */
#define WA_SEND_BSUID_MAX    128
#define WA_SEND_WAMID_MAX    256


typedef struct {
    char   to[24];               /* digits, no '+'; "" with a recipient */
    char   recipient[WA_SEND_BSUID_MAX + 1];  /* "" when absent */
    char   lead_id[24];          /* decimal, "" when absent */
    char   source[40];           /* default "api" */
    char   client_ref[WA_SEND_REF_MAX + 1];
    char   phone_number_id[24];
    char   type[16];             /* "text", "image", "interactive"... */
    char  *text;                 /* malloc'd, the shorthand, or NULL */
    char  *object_json;          /* malloc'd: the type's object as sent,
                                    NULL for the text shorthand */
    char  *context_json;         /* malloc'd: "context" as sent, or NULL */
    char  *summary;              /* the row's readable body: malloc'd,
                                    or text itself for the shorthand */
    char  *request_json;         /* malloc'd, the request as parsed */

    /* mark-as-read: no message; the wamid marked, the typing indicator
     * as sent (malloc'd, or NULL) */
    int    read;
    char   message_id[WA_SEND_WAMID_MAX + 1];
    char  *typing_json;
} wa_send_req_t;


typedef struct wa_send_res_s {
    int    ok;                   /* the provider accepted the message */
    int    unknown;              /* a 2xx we cannot read: it may have */
    int    retryable;            /* for failures */
    int    json;                 /* the answer is a JSON object */
    char   wamid[160];
    char   error_code[16];
    char   error_title[256];
    char   error_detail[512];
    char   fbtrace_id[64];
} wa_send_res_t;


/* the message types accepted, NULL-terminated */
extern const char *const wa_send_types[];


/* 0, or -1 with err starting with the field's JSON path; the request must
 * be freed either way */
int wa_send_parse_request(const char *body, size_t len, wa_send_req_t *req,
    char *err, size_t errlen);
void wa_send_req_free(wa_send_req_t *req);

/* the Cloud API request body (malloc'd), biz_opaque_callback_data set to
 * our local id so every receipt names its row */
char *wa_send_build_body(const wa_send_req_t *req, const char *local_id);

/* the Cloud API body of a mark-as-read (malloc'd) */
char *wa_send_build_read_body(const wa_send_req_t *req);

/* what a 2xx must carry to be an acceptance */
typedef enum {
    WA_SEND_ANSWER_MESSAGE = 0,  /* messages[0].id: the wamid */
    WA_SEND_ANSWER_SUCCESS,      /* "success": true (mark-as-read) */
    WA_SEND_ANSWER_MEDIA         /* "id": the media id, in res->wamid */
} wa_send_answer_e;

/* the provider's answer for an HTTP status and body */
void wa_send_parse_response(long status, const char *body, size_t len,
    wa_send_res_t *res);
void wa_send_parse_answer(wa_send_answer_e kind, long status,
    const char *body, size_t len, wa_send_res_t *res);

/* Meta's error codes: worth retrying (rate limits, transient) or not */
int wa_send_retryable(long status, long code);

#endif /* WA_SEND_PARSE_H */
