/*
 * wa_send_parse: validate send requests, build the Cloud API body, read
 * its answer.
 *
 * The limits are Meta's, from the Cloud API reference ("Messages",
 * developers.facebook.com/docs/whatsapp/cloud-api/reference/messages) and
 * its per-type pages ("Interactive list messages", "Interactive
 * reply buttons messages", "Interactive CTA URL button messages", "Flows:
 * sending a flow message"). Lengths are counted in characters (Unicode
 * code points), as Meta states them.
 */

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "wa_send_parse.h"


/* Messages: text.body */
#define WA_TEXT_BODY_MAX          4096
/* Messages, media object: caption (image, video, document) */
#define WA_CAPTION_MAX            1024
/* document.filename: no documented limit; 255 is the usual file name
 * limit, and a longer one could not be saved under its name anyway */
#define WA_FILENAME_MAX           255
/* Interactive object: header.text, footer.text */
#define WA_HEADER_TEXT_MAX        60
#define WA_FOOTER_TEXT_MAX        60
/* Interactive object: body.text 1024; the list messages page (Nov 2025)
 * says 4096 for a list's body: each type gets its own page's number */
#define WA_IBODY_MAX              1024
#define WA_LIST_BODY_MAX          4096
/* Reply buttons: 1 to 3 buttons, title 20, id 256 */
#define WA_BUTTONS_MAX            3
#define WA_BUTTON_TITLE_MAX       20
#define WA_BUTTON_ID_MAX          256
/* List: button 20, 1 to 10 sections, 10 rows in all, section title 24,
 * row title 24, row description 72, row id 200 */
#define WA_LIST_BUTTON_MAX        20
#define WA_SECTIONS_MAX           10
#define WA_ROWS_MAX               10
#define WA_SECTION_TITLE_MAX      24
#define WA_ROW_TITLE_MAX          24
#define WA_ROW_DESC_MAX           72
#define WA_ROW_ID_MAX             200
/* Multi-product messages: up to 30 products in all */
#define WA_PRODUCTS_MAX           30
/* CTA URL: display_text 20; Flows: flow_cta 20 */
#define WA_CTA_TEXT_MAX           20
#define WA_FLOW_CTA_MAX           20
/* not Meta's: a bound on the members of one object, so the duplicate
 * check stays cheap on hostile input; no Cloud API object comes close */
#define WA_MEMBERS_MAX            64
/* undocumented, generous bounds: a wamid is ~60 characters, a media id
 * ~16 digits, a catalog id ~16, a retailer id or flow id is the
 * business's own (256, as a button id) */
#define WA_WAMID_MAX              256
#define WA_ID_MAX                 256
#define WA_CATALOG_ID_MAX         64


typedef struct {
    char    *data;
    size_t   len;
    size_t   size;
    int      oom;
} wa_sbuf_t;


typedef int (*wa_send_check_pt)(cJSON *obj, const char *path,
    wa_sbuf_t *sum, char *err, size_t errlen);


static int wa_send_check_message(cJSON *root, wa_send_req_t *req,
    char *err, size_t errlen);
static int wa_send_type_index(const char *name);
static int wa_send_check_text(cJSON *obj, const char *path, wa_sbuf_t *sum,
    char *err, size_t errlen);
static int wa_send_check_template(cJSON *obj, const char *path,
    wa_sbuf_t *sum, char *err, size_t errlen);
static int wa_send_check_media(cJSON *obj, const char *path, wa_sbuf_t *sum,
    char *err, size_t errlen);
static int wa_send_check_interactive(cJSON *obj, const char *path,
    wa_sbuf_t *sum, char *err, size_t errlen);
static int wa_send_check_location(cJSON *obj, const char *path,
    wa_sbuf_t *sum, char *err, size_t errlen);
static int wa_send_check_contacts(cJSON *obj, const char *path,
    wa_sbuf_t *sum, char *err, size_t errlen);
static int wa_send_check_reaction(cJSON *obj, const char *path,
    wa_sbuf_t *sum, char *err, size_t errlen);
static int wa_send_check_context(cJSON *obj, char *err, size_t errlen);
static int wa_send_parse_read(const char *body, size_t len, cJSON *root,
    wa_send_req_t *req, char *err, size_t errlen);
static int wa_send_bsuid(const char *s);
static int wa_send_check_header(cJSON *obj, const char *path,
    const char *itype, char *err, size_t errlen);
static int wa_send_check_buttons(cJSON *action, const char *path,
    wa_sbuf_t *sum, char *err, size_t errlen);
static int wa_send_check_list(cJSON *action, const char *path,
    wa_sbuf_t *sum, char *err, size_t errlen);
static int wa_send_check_products(cJSON *action, const char *path,
    char *err, size_t errlen);
static cJSON *wa_send_action_params(cJSON *action, const char *name,
    char *err, size_t errlen);
static int wa_send_check_named(cJSON *action, const char *path,
    const char *name, char *err, size_t errlen);
static int wa_send_field(cJSON *obj, const char *path, const char *key,
    int required, size_t max, const char **out, char *err, size_t errlen);
static int wa_send_url(cJSON *obj, const char *path, const char *key,
    int required, const char **out, char *err, size_t errlen);
static int wa_send_coord(cJSON *obj, const char *path, const char *key,
    double lim, double *out, char *err, size_t errlen);
static int wa_send_unique(cJSON *obj, char *path, size_t plen,
    char *err, size_t errlen);
static int wa_send_emoji(const char *s);
static size_t wa_send_chars(const char *s);
static int wa_send_member(const char *body, size_t len, const char *key,
    const char **val, size_t *vlen);
static const char *wa_send_skip(const char *p, const char *end);
static char *wa_send_dup(const char *s, size_t n);
static void wa_sbuf_add(wa_sbuf_t *b, const char *s);
static int wa_send_fail(char *err, size_t errlen, const char *path,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int wa_send_err(char *err, size_t errlen, const char *msg);
static int wa_send_copy(char *dst, size_t size, const char *src);
static const char *wa_send_str(cJSON *obj, const char *key);
static void wa_send_text(cJSON *obj, const char *key, char *dst, size_t size);


/* in wa_send_types, and the order wa_send_type_index knows */
#define WA_SEND_NTYPES  11

const char *const wa_send_types[] = {
    "text", "template", "image", "video", "audio", "document", "sticker",
    "interactive", "location", "contacts", "reaction", NULL
};

static const wa_send_check_pt  wa_send_checks[] = {
    wa_send_check_text, wa_send_check_template, wa_send_check_media,
    wa_send_check_media, wa_send_check_media, wa_send_check_media,
    wa_send_check_media, wa_send_check_interactive, wa_send_check_location,
    wa_send_check_contacts, wa_send_check_reaction, NULL
};


int
wa_send_parse_request(const char *body, size_t len, wa_send_req_t *req,
    char *err, size_t errlen)
{
    int          n, rc;
    char         path[256];
    size_t       vlen;
    cJSON       *root, *item;
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

    /* a key given twice: we would check one, Meta perhaps send the other */
    path[0] = '\0';

    if (wa_send_unique(root, path, 0, err, errlen) != 0) {
        cJSON_Delete(root);
        return -1;
    }

    /* mark-as-read: Meta's own shape, no message */

    if (cJSON_GetObjectItemCaseSensitive(root, "status") != NULL) {
        rc = wa_send_parse_read(body, len, root, req, err, errlen);
        cJSON_Delete(root);
        return rc;
    }

    /* recipient: a business-scoped user id, with "to" or instead of it */

    item = cJSON_GetObjectItemCaseSensitive(root, "recipient");

    if (item != NULL) {
        if (!cJSON_IsString(item)
            || wa_send_bsuid(item->valuestring) != 0
            || wa_send_copy(req->recipient, sizeof(req->recipient),
                            item->valuestring))
        {
            cJSON_Delete(root);
            return wa_send_err(err, errlen, "recipient: a business-scoped "
                               "user id is expected (\"US.1349...\" or "
                               "\"US.ENT.1181...\")");
        }
    }

    /* to: E.164, with or without '+' */

    s = wa_send_str(root, "to");
    if (s == NULL && req->recipient[0]
        && cJSON_GetObjectItemCaseSensitive(root, "to") == NULL)
    {
        goto message;
    }

    if (s == NULL) {
        cJSON_Delete(root);
        return wa_send_err(err, errlen, "to: a phone number string is "
                           "required (or \"recipient\": a user id)");
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

message:

    /* the message, its type and the reply context */

    if (wa_send_check_message(root, req, err, errlen) != 0) {
        cJSON_Delete(root);
        return -1;
    }

    /* the forwarded parts, as the caller's bytes */

    if (req->text == NULL) {
        rc = wa_send_member(body, len, req->type, &s, &vlen);

        if (rc != 0) {
            cJSON_Delete(root);
            return wa_send_fail(err, errlen, req->type, "%s", rc == -2
                                ? "control characters must be escaped"
                                : "not found in the body");
        }

        req->object_json = wa_send_dup(s, vlen);

        if (req->object_json == NULL) {
            cJSON_Delete(root);
            return wa_send_err(err, errlen, "out of memory");
        }
    }

    if (cJSON_GetObjectItemCaseSensitive(root, "context") != NULL) {
        rc = wa_send_member(body, len, "context", &s, &vlen);

        if (rc != 0) {
            cJSON_Delete(root);
            return wa_send_fail(err, errlen, "context", "%s", rc == -2
                                ? "control characters must be escaped"
                                : "not found in the body");
        }

        req->context_json = wa_send_dup(s, vlen);

        if (req->context_json == NULL) {
            cJSON_Delete(root);
            return wa_send_err(err, errlen, "out of memory");
        }
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

    if (req->request_json == NULL) {
        return wa_send_err(err, errlen, "out of memory");
    }

    return 0;

bad_lead:

    cJSON_Delete(root);
    return wa_send_err(err, errlen, "lead_id: a positive integer is "
                       "expected");
}


/*
 * Which message, and is it one Meta takes: sets req->type, req->text for
 * the shorthand, req->summary for the row.
 */

static int
wa_send_check_message(cJSON *root, wa_send_req_t *req, char *err,
    size_t errlen)
{
    int          i, t;
    cJSON       *type, *msg, *ctx, *item, *msgs[WA_SEND_NTYPES];
    wa_sbuf_t    sum;
    const char  *name;

    /* one pass over the members (each key is there once by now): the
     * text shorthand's path is the hot one */

    type = NULL;
    ctx = NULL;
    memset(msgs, 0, sizeof(msgs));

    for (item = root->child; item; item = item->next) {
        i = wa_send_type_index(item->string);

        if (i >= 0) {
            msgs[i] = item;

        } else if (strcmp(item->string, "type") == 0) {
            type = item;

        } else if (strcmp(item->string, "context") == 0) {
            ctx = item;
        }
    }

    if (type != NULL) {
        t = cJSON_IsString(type) ? wa_send_type_index(type->valuestring) : -1;

        if (t < 0) {
            return wa_send_err(err, errlen, "type: one of text, template, "
                               "image, video, audio, document, sticker, "
                               "interactive, location, contacts, reaction "
                               "is expected");
        }

        for (i = 0; i < WA_SEND_NTYPES; i++) {
            if (i != t && msgs[i] != NULL) {
                return wa_send_fail(err, errlen, wa_send_types[i],
                                    "not allowed with \"type\": \"%s\"",
                                    wa_send_types[t]);
            }
        }

        if (msgs[t] == NULL) {
            return wa_send_fail(err, errlen, wa_send_types[t],
                                "required with \"type\": \"%s\"",
                                wa_send_types[t]);
        }

    } else {
        /* no type: the two forms this API always took */
        for (i = 2; i < WA_SEND_NTYPES; i++) {
            if (msgs[i] != NULL) {
                return wa_send_fail(err, errlen, "type",
                                    "required with \"%s\"",
                                    wa_send_types[i]);
            }
        }

        if ((msgs[0] == NULL) == (msgs[1] == NULL)) {
            return wa_send_err(err, errlen, "text, template: exactly one is "
                               "required (or \"type\" and its object)");
        }

        t = msgs[0] ? 0 : 1;
    }

    name = wa_send_types[t];
    msg = msgs[t];
    memcpy(req->type, name, strlen(name) + 1);

    /* the shorthand: a plain string, sent as {"body": ...} */
    if (t == 0 && !cJSON_IsObject(msg)) {
        if (!cJSON_IsString(msg) || msg->valuestring[0] == '\0') {
            return wa_send_err(err, errlen, "text: a non-empty string or "
                               "an object is required");
        }

        if (wa_send_chars(msg->valuestring) > WA_TEXT_BODY_MAX) {
            return wa_send_err(err, errlen, "text: longer than 4096 "
                               "characters");
        }

        /* the row's body is the text itself: no second copy */
        req->text = strdup(msg->valuestring);
        req->summary = req->text;

        if (req->text == NULL) {
            return wa_send_err(err, errlen, "out of memory");
        }

        goto context;
    }

    /* contacts is the one array: Meta's "contacts": [{...}] */
    if (strcmp(name, "contacts") == 0 ? !cJSON_IsArray(msg)
                                      : !cJSON_IsObject(msg))
    {
        return wa_send_fail(err, errlen, name, strcmp(name, "contacts") == 0
                            ? "an array is required"
                            : "an object is required");
    }

    memset(&sum, 0, sizeof(wa_sbuf_t));

    if (wa_send_checks[t](msg, name, &sum, err, errlen) != 0) {
        free(sum.data);
        return -1;
    }

    if (sum.oom || sum.data == NULL) {
        free(sum.data);
        return wa_send_err(err, errlen, "out of memory");
    }

    req->summary = sum.data;

context:

    if (ctx != NULL) {
        if (!cJSON_IsObject(ctx)) {
            return wa_send_err(err, errlen, "context: an object with a "
                               "\"message_id\" is expected");
        }

        if (wa_send_check_context(ctx, err, errlen) != 0) {
            return -1;
        }
    }

    return 0;
}


/* the index in wa_send_types, or -1; by first letter, as every member of
 * every request is looked up here */

static int
wa_send_type_index(const char *name)
{
    int  i, j;

    switch (name[0]) {
    case 't': i = 0; j = 1; break;
    case 'i': i = 2; j = 7; break;
    case 'v': i = j = 3; break;
    case 'a': i = j = 4; break;
    case 'd': i = j = 5; break;
    case 's': i = j = 6; break;
    case 'l': i = j = 8; break;
    case 'c': i = j = 9; break;
    case 'r': i = j = 10; break;
    default: return -1;
    }

    if (strcmp(name, wa_send_types[i]) == 0) {
        return i;
    }

    return strcmp(name, wa_send_types[j]) == 0 ? j : -1;
}


/* Messages, text object: body (required, 4096), preview_url (boolean) */

static int
wa_send_check_text(cJSON *obj, const char *path, wa_sbuf_t *sum, char *err,
    size_t errlen)
{
    cJSON       *item;
    const char  *s;

    if (wa_send_field(obj, path, "body", 1, WA_TEXT_BODY_MAX, &s, err,
                      errlen) != 0)
    {
        return -1;
    }

    item = cJSON_GetObjectItemCaseSensitive(obj, "preview_url");

    if (item != NULL && !cJSON_IsBool(item)) {
        return wa_send_fail(err, errlen, path, "preview_url: true or false "
                            "is expected");
    }

    wa_sbuf_add(sum, s);

    return 0;
}


/* Messages, template object: name, language.code; the components are
 * checked by Meta against the approved template */

static int
wa_send_check_template(cJSON *obj, const char *path, wa_sbuf_t *sum,
    char *err, size_t errlen)
{
    cJSON       *lang;
    const char  *s;

    (void) path;

    s = wa_send_str(obj, "name");

    if (s == NULL || s[0] == '\0') {
        return wa_send_err(err, errlen, "template: an object with a "
                           "\"name\" is required");
    }

    lang = cJSON_GetObjectItemCaseSensitive(obj, "language");

    if (lang != NULL
        && (!cJSON_IsObject(lang) || wa_send_field(lang, "template.language",
                                                   "code", 1, 16, NULL, err,
                                                   errlen) != 0))
    {
        if (!cJSON_IsObject(lang)) {
            wa_send_err(err, errlen, "template.language: an object with a "
                        "\"code\" is expected");
        }

        return -1;
    }

    wa_sbuf_add(sum, s);

    return 0;
}


/*
 * Messages, media object: exactly one of id and link (http or https);
 * caption for image, video and document only (1024); filename for
 * document only.
 */

static int
wa_send_check_media(cJSON *obj, const char *path, wa_sbuf_t *sum,
    char *err, size_t errlen)
{
    int          has_id, has_link, captioned;
    const char  *caption, *filename;

    has_id = cJSON_GetObjectItemCaseSensitive(obj, "id") != NULL;
    has_link = cJSON_GetObjectItemCaseSensitive(obj, "link") != NULL;

    if (has_id == has_link) {
        return wa_send_fail(err, errlen, path, "exactly one of \"id\" and "
                            "\"link\" is required");
    }

    if (has_id) {
        if (wa_send_field(obj, path, "id", 1, WA_ID_MAX, NULL, err, errlen)
            != 0)
        {
            return -1;
        }

    } else if (wa_send_url(obj, path, "link", 1, NULL, err, errlen) != 0) {
        return -1;
    }

    /* a header's media (interactive.header.image) has no caption */
    captioned = strchr(path, '.') == NULL
                && (strcmp(path, "image") == 0 || strcmp(path, "video") == 0
                    || strcmp(path, "document") == 0);

    caption = NULL;
    filename = NULL;

    if (cJSON_GetObjectItemCaseSensitive(obj, "caption") != NULL) {
        if (!captioned) {
            return wa_send_fail(err, errlen, path, "caption: not allowed "
                                "here");
        }

        if (wa_send_field(obj, path, "caption", 0, WA_CAPTION_MAX, &caption,
                          err, errlen) != 0)
        {
            return -1;
        }
    }

    if (cJSON_GetObjectItemCaseSensitive(obj, "filename") != NULL) {
        if (strlen(path) < 8
            || strcmp(path + strlen(path) - 8, "document") != 0)
        {
            return wa_send_fail(err, errlen, path, "filename: only a "
                                "document has one");
        }

        if (wa_send_field(obj, path, "filename", 1, WA_FILENAME_MAX,
                          &filename, err, errlen) != 0)
        {
            return -1;
        }
    }

    if (caption && caption[0]) {
        wa_sbuf_add(sum, caption);

    } else if (filename) {
        wa_sbuf_add(sum, filename);

    } else {
        wa_sbuf_add(sum, "[");
        wa_sbuf_add(sum, path);
        wa_sbuf_add(sum, "]");
    }

    return 0;
}


/*
 * Interactive object: type, header (kinds per type), body, footer, action.
 * The row's body: the body text, then what the user can tap.
 */

static int
wa_send_check_interactive(cJSON *obj, const char *path, wa_sbuf_t *sum,
    char *err, size_t errlen)
{
    int          i, body_needed;
    cJSON       *item, *action;
    size_t       body_max;
    const char  *it, *s, *text;

    static const char  *types[] = {
        "button", "list", "cta_url", "flow", "location_request_message",
        "catalog_message", "product", "product_list", NULL
    };

    it = wa_send_str(obj, "type");

    for (i = 0; it && types[i]; i++) {
        if (strcmp(it, types[i]) == 0) {
            break;
        }
    }

    if (it == NULL || types[i] == NULL) {
        return wa_send_fail(err, errlen, path, "type: one of button, list, "
                            "cta_url, flow, location_request_message, "
                            "catalog_message, product, product_list is "
                            "expected");
    }

    if (wa_send_check_header(obj, path, it, err, errlen) != 0) {
        return -1;
    }

    /* a single product needs no body: the product shows itself */
    body_needed = strcmp(it, "product") != 0;
    body_max = strcmp(it, "list") == 0 ? WA_LIST_BODY_MAX : WA_IBODY_MAX;
    text = NULL;

    item = cJSON_GetObjectItemCaseSensitive(obj, "body");

    if (item != NULL || body_needed) {
        if (!cJSON_IsObject(item)) {
            return wa_send_fail(err, errlen, path, "body: an object with a "
                                "\"text\" is required");
        }

        if (wa_send_field(item, "interactive.body", "text", 1, body_max,
                          &text, err, errlen) != 0)
        {
            return -1;
        }
    }

    item = cJSON_GetObjectItemCaseSensitive(obj, "footer");

    if (item != NULL) {
        if (!cJSON_IsObject(item)) {
            return wa_send_fail(err, errlen, path, "footer: an object with a "
                                "\"text\" is expected");
        }

        if (wa_send_field(item, "interactive.footer", "text", 1,
                          WA_FOOTER_TEXT_MAX, NULL, err, errlen) != 0)
        {
            return -1;
        }
    }

    action = cJSON_GetObjectItemCaseSensitive(obj, "action");

    if (!cJSON_IsObject(action)) {
        return wa_send_fail(err, errlen, path, "action: an object is "
                            "required");
    }

    wa_sbuf_add(sum, text ? text : "[interactive]");

    if (strcmp(it, "button") == 0) {
        return wa_send_check_buttons(action, "interactive.action", sum, err,
                                     errlen);
    }

    if (strcmp(it, "list") == 0) {
        return wa_send_check_list(action, "interactive.action", sum, err,
                                  errlen);
    }

    if (strcmp(it, "cta_url") == 0) {
        /* Interactive CTA URL button messages: display_text 20, url */
        item = wa_send_action_params(action, "cta_url", err, errlen);
        if (item == NULL) {
            return -1;
        }

        if (wa_send_field(item, "interactive.action.parameters",
                          "display_text", 1, WA_CTA_TEXT_MAX, &s, err, errlen)
            != 0
            || wa_send_url(item, "interactive.action.parameters", "url", 1,
                           NULL, err, errlen) != 0)
        {
            return -1;
        }

        wa_sbuf_add(sum, "\n[");
        wa_sbuf_add(sum, s);
        wa_sbuf_add(sum, "] ");
        wa_sbuf_add(sum, wa_send_str(item, "url"));

        return 0;
    }

    if (strcmp(it, "flow") == 0) {
        /* Flows, sending a flow message: flow_message_version "3",
         * flow_cta (20, no emoji), one of flow_id and flow_name */
        item = wa_send_action_params(action, "flow", err, errlen);
        if (item == NULL) {
            return -1;
        }

        if (wa_send_field(item, "interactive.action.parameters",
                          "flow_message_version", 1, 8, NULL, err, errlen)
            != 0
            || wa_send_field(item, "interactive.action.parameters",
                             "flow_cta", 1, WA_FLOW_CTA_MAX, &s, err, errlen)
               != 0)
        {
            return -1;
        }

        if ((cJSON_GetObjectItemCaseSensitive(item, "flow_id") == NULL)
            == (cJSON_GetObjectItemCaseSensitive(item, "flow_name") == NULL))
        {
            return wa_send_err(err, errlen, "interactive.action.parameters: "
                               "exactly one of \"flow_id\" and \"flow_name\" "
                               "is required");
        }

        if (wa_send_field(item, "interactive.action.parameters",
                          cJSON_GetObjectItemCaseSensitive(item, "flow_id")
                          ? "flow_id" : "flow_name", 1, WA_ID_MAX, NULL, err,
                          errlen) != 0)
        {
            return -1;
        }

        wa_sbuf_add(sum, "\n[");
        wa_sbuf_add(sum, s);
        wa_sbuf_add(sum, "]");

        return 0;
    }

    if (strcmp(it, "location_request_message") == 0) {
        return wa_send_check_named(action, "interactive.action",
                                   "send_location", err, errlen);
    }

    if (strcmp(it, "catalog_message") == 0) {
        return wa_send_check_named(action, "interactive.action",
                                   "catalog_message", err, errlen);
    }

    return wa_send_check_products(action, it, err, errlen);
}


/* Interactive object, header: text (60) for every type that has one;
 * image, video, document for button, cta_url and flow; required for
 * product_list; none for the others */

static int
wa_send_check_header(cJSON *obj, const char *path, const char *itype,
    char *err, size_t errlen)
{
    int          media, required;
    cJSON       *header, *m;
    const char  *kind;

    header = cJSON_GetObjectItemCaseSensitive(obj, "header");

    media = strcmp(itype, "button") == 0 || strcmp(itype, "cta_url") == 0
            || strcmp(itype, "flow") == 0;
    required = strcmp(itype, "product_list") == 0;

    if (header == NULL) {
        if (required) {
            return wa_send_fail(err, errlen, path, "header: required for "
                                "product_list");
        }

        return 0;
    }

    if (!media && !required && strcmp(itype, "list") != 0) {
        return wa_send_fail(err, errlen, path, "header: not allowed for "
                            "\"%s\"", itype);
    }

    if (!cJSON_IsObject(header)) {
        return wa_send_fail(err, errlen, path, "header: an object is "
                            "expected");
    }

    kind = wa_send_str(header, "type");

    if (kind != NULL && strcmp(kind, "text") == 0) {
        return wa_send_field(header, "interactive.header", "text", 1,
                             WA_HEADER_TEXT_MAX, NULL, err, errlen);
    }

    if (kind == NULL
        || (strcmp(kind, "image") != 0 && strcmp(kind, "video") != 0
            && strcmp(kind, "document") != 0))
    {
        return wa_send_err(err, errlen, "interactive.header.type: one of "
                           "text, image, video, document is expected");
    }

    if (!media) {
        return wa_send_fail(err, errlen, "interactive.header.type",
                            "only text for \"%s\"", itype);
    }

    m = cJSON_GetObjectItemCaseSensitive(header, kind);

    if (!cJSON_IsObject(m)) {
        return wa_send_fail(err, errlen, "interactive.header", "%s: an "
                            "object is required", kind);
    }

    if (strcmp(kind, "image") == 0) {
        return wa_send_check_media(m, "interactive.header.image", NULL, err,
                                   errlen);
    }

    return wa_send_check_media(m, strcmp(kind, "video") == 0
                                  ? "interactive.header.video"
                                  : "interactive.header.document",
                               NULL, err, errlen);
}


/* Reply buttons: 1 to 3 of {"type":"reply","reply":{"id","title"}}, ids
 * and titles unique */

static int
wa_send_check_buttons(cJSON *action, const char *path, wa_sbuf_t *sum,
    char *err, size_t errlen)
{
    int          i, j, n;
    char         p[64];
    cJSON       *buttons, *b, *reply;
    const char  *title, *titles[WA_BUTTONS_MAX], *ids[WA_BUTTONS_MAX];

    buttons = cJSON_GetObjectItemCaseSensitive(action, "buttons");
    n = cJSON_IsArray(buttons) ? cJSON_GetArraySize(buttons) : 0;

    if (n < 1 || n > WA_BUTTONS_MAX) {
        if (n > WA_BUTTONS_MAX) {
            return wa_send_fail(err, errlen, path, "buttons[%d]: at most 3 "
                                "buttons", WA_BUTTONS_MAX);
        }

        return wa_send_fail(err, errlen, path, "buttons: 1 to 3 buttons are "
                            "required");
    }

    for (i = 0; i < n; i++) {
        b = cJSON_GetArrayItem(buttons, i);
        snprintf(p, sizeof(p), "%s.buttons[%d]", path, i);

        if (!cJSON_IsObject(b)) {
            return wa_send_fail(err, errlen, p, "an object is expected");
        }

        title = wa_send_str(b, "type");

        if (title == NULL || strcmp(title, "reply") != 0) {
            return wa_send_fail(err, errlen, p, "type: \"reply\" is "
                                "expected");
        }

        reply = cJSON_GetObjectItemCaseSensitive(b, "reply");

        if (!cJSON_IsObject(reply)) {
            return wa_send_fail(err, errlen, p, "reply: an object is "
                                "required");
        }

        snprintf(p, sizeof(p), "%s.buttons[%d].reply", path, i);

        if (wa_send_field(reply, p, "id", 1, WA_BUTTON_ID_MAX, &ids[i], err,
                          errlen) != 0
            || wa_send_field(reply, p, "title", 1, WA_BUTTON_TITLE_MAX,
                             &titles[i], err, errlen) != 0)
        {
            return -1;
        }

        for (j = 0; j < i; j++) {
            if (strcmp(ids[j], ids[i]) == 0) {
                return wa_send_fail(err, errlen, p, "id: the same as "
                                    "button %d's", j);
            }

            if (strcmp(titles[j], titles[i]) == 0) {
                return wa_send_fail(err, errlen, p, "title: the same as "
                                    "button %d's", j);
            }
        }
    }

    wa_sbuf_add(sum, "\n");

    for (i = 0; i < n; i++) {
        wa_sbuf_add(sum, i ? " [" : "[");
        wa_sbuf_add(sum, titles[i]);
        wa_sbuf_add(sum, "]");
    }

    return 0;
}


/* List messages: button (20), 1 to 10 sections, 10 rows in all; a title
 * (24) on each section when there are several; rows' id (200) unique,
 * title (24), description (72) */

static int
wa_send_check_list(cJSON *action, const char *path, wa_sbuf_t *sum,
    char *err, size_t errlen)
{
    int          i, j, k, nsec, nrows, total;
    char         p[80];
    cJSON       *sections, *sec, *rows, *row;
    const char  *button, *title, *ids[WA_ROWS_MAX];

    if (wa_send_field(action, path, "button", 1, WA_LIST_BUTTON_MAX, &button,
                      err, errlen) != 0)
    {
        return -1;
    }

    sections = cJSON_GetObjectItemCaseSensitive(action, "sections");
    nsec = cJSON_IsArray(sections) ? cJSON_GetArraySize(sections) : 0;

    if (nsec < 1) {
        return wa_send_fail(err, errlen, path, "sections: 1 to 10 sections "
                            "are required");
    }

    if (nsec > WA_SECTIONS_MAX) {
        return wa_send_fail(err, errlen, path, "sections[%d]: at most 10 "
                            "sections", WA_SECTIONS_MAX);
    }

    wa_sbuf_add(sum, "\n[");
    wa_sbuf_add(sum, button);
    wa_sbuf_add(sum, "]");

    total = 0;

    for (i = 0; i < nsec; i++) {
        sec = cJSON_GetArrayItem(sections, i);
        snprintf(p, sizeof(p), "%s.sections[%d]", path, i);

        if (!cJSON_IsObject(sec)) {
            return wa_send_fail(err, errlen, p, "an object is expected");
        }

        if (wa_send_field(sec, p, "title", nsec > 1, WA_SECTION_TITLE_MAX,
                             NULL, err, errlen) != 0)
        {
            return -1;
        }

        rows = cJSON_GetObjectItemCaseSensitive(sec, "rows");
        nrows = cJSON_IsArray(rows) ? cJSON_GetArraySize(rows) : 0;

        if (nrows < 1) {
            return wa_send_fail(err, errlen, p, "rows: at least one row is "
                                "required");
        }

        for (j = 0; j < nrows; j++) {
            snprintf(p, sizeof(p), "%s.sections[%d].rows[%d]", path, i, j);

            if (total == WA_ROWS_MAX) {
                return wa_send_fail(err, errlen, p, "at most 10 rows in all "
                                    "sections");
            }

            row = cJSON_GetArrayItem(rows, j);

            if (!cJSON_IsObject(row)) {
                return wa_send_fail(err, errlen, p, "an object is expected");
            }

            if (wa_send_field(row, p, "id", 1, WA_ROW_ID_MAX, &ids[total],
                                 err, errlen) != 0
                || wa_send_field(row, p, "title", 1, WA_ROW_TITLE_MAX, &title,
                                 err, errlen) != 0
                || wa_send_field(row, p, "description", 0, WA_ROW_DESC_MAX,
                                 NULL, err, errlen) != 0)
            {
                return -1;
            }

            for (k = 0; k < total; k++) {
                if (strcmp(ids[k], ids[total]) == 0) {
                    return wa_send_fail(err, errlen, p, "id: used by another "
                                        "row");
                }
            }

            wa_sbuf_add(sum, total ? " | " : " ");
            wa_sbuf_add(sum, title);
            total++;
        }
    }

    return 0;
}


/* Single- and multi-product messages: catalog_id, product_retailer_id;
 * a product_list has 1 to 10 titled sections of 30 products in all */

static int
wa_send_check_products(cJSON *action, const char *itype, char *err,
    size_t errlen)
{
    int     i, j, nsec, n, total;
    char    p[96];
    cJSON  *sections, *sec, *items, *item;

    if (wa_send_field(action, "interactive.action", "catalog_id", 1,
                      WA_CATALOG_ID_MAX, NULL, err, errlen) != 0)
    {
        return -1;
    }

    if (strcmp(itype, "product") == 0) {
        return wa_send_field(action, "interactive.action",
                             "product_retailer_id", 1, WA_ID_MAX, NULL, err,
                             errlen);
    }

    sections = cJSON_GetObjectItemCaseSensitive(action, "sections");
    nsec = cJSON_IsArray(sections) ? cJSON_GetArraySize(sections) : 0;

    if (nsec < 1 || nsec > WA_SECTIONS_MAX) {
        return wa_send_err(err, errlen, "interactive.action.sections: 1 to "
                           "10 sections are required");
    }

    total = 0;

    for (i = 0; i < nsec; i++) {
        sec = cJSON_GetArrayItem(sections, i);
        snprintf(p, sizeof(p), "interactive.action.sections[%d]", i);

        if (!cJSON_IsObject(sec)) {
            return wa_send_fail(err, errlen, p, "an object is expected");
        }

        if (wa_send_field(sec, p, "title", 1, WA_SECTION_TITLE_MAX, NULL, err,
                          errlen) != 0)
        {
            return -1;
        }

        items = cJSON_GetObjectItemCaseSensitive(sec, "product_items");
        n = cJSON_IsArray(items) ? cJSON_GetArraySize(items) : 0;

        if (n < 1) {
            return wa_send_fail(err, errlen, p, "product_items: at least one "
                                "is required");
        }

        for (j = 0; j < n; j++) {
            snprintf(p, sizeof(p),
                     "interactive.action.sections[%d].product_items[%d]",
                     i, j);

            if (++total > WA_PRODUCTS_MAX) {
                return wa_send_fail(err, errlen, p, "at most 30 products in "
                                    "all sections");
            }

            item = cJSON_GetArrayItem(items, j);

            if (!cJSON_IsObject(item)) {
                return wa_send_fail(err, errlen, p, "an object is expected");
            }

            if (wa_send_field(item, p, "product_retailer_id", 1, WA_ID_MAX,
                              NULL, err, errlen) != 0)
            {
                return -1;
            }
        }
    }

    return 0;
}


/* interactive.action of a named kind: its "parameters" object, or NULL
 * with err set */

static cJSON *
wa_send_action_params(cJSON *action, const char *name, char *err,
    size_t errlen)
{
    cJSON  *params;

    if (wa_send_check_named(action, "interactive.action", name, err, errlen)
        != 0)
    {
        return NULL;
    }

    params = cJSON_GetObjectItemCaseSensitive(action, "parameters");

    if (!cJSON_IsObject(params)) {
        wa_send_err(err, errlen, "interactive.action.parameters: an object "
                    "is required");
        return NULL;
    }

    return params;
}


/* action.name, for the types Meta names that way */

static int
wa_send_check_named(cJSON *action, const char *path, const char *name,
    char *err, size_t errlen)
{
    const char  *s;

    s = wa_send_str(action, "name");

    if (s == NULL || strcmp(s, name) != 0) {
        return wa_send_fail(err, errlen, path, "name: \"%s\" is expected",
                            name);
    }

    return 0;
}


/* Messages, location object: latitude -90..90, longitude -180..180 (as
 * numbers, or as strings of numbers as Meta's own examples write them),
 * name and address optional */

static int
wa_send_check_location(cJSON *obj, const char *path, wa_sbuf_t *sum,
    char *err, size_t errlen)
{
    char         buf[64];
    double       lat, lon;
    const char  *name, *address;

    if (wa_send_coord(obj, path, "latitude", 90, &lat, err, errlen) != 0
        || wa_send_coord(obj, path, "longitude", 180, &lon, err, errlen) != 0
        || wa_send_field(obj, path, "name", 0, 1024, &name, err, errlen) != 0
        || wa_send_field(obj, path, "address", 0, 1024, &address, err,
                         errlen) != 0)
    {
        return -1;
    }

    if (name && name[0]) {
        wa_sbuf_add(sum, name);
    }

    if (address && address[0]) {
        wa_sbuf_add(sum, name && name[0] ? ", " : "");
        wa_sbuf_add(sum, address);
    }

    if (sum->len == 0) {
        snprintf(buf, sizeof(buf), "%.6f, %.6f", lat, lon);
        wa_sbuf_add(sum, buf);
    }

    return 0;
}


/* Messages, contacts object: an array of contacts, each with
 * name.formatted_name */

static int
wa_send_check_contacts(cJSON *arr, const char *path, wa_sbuf_t *sum,
    char *err, size_t errlen)
{
    int          i, n;
    char         p[48];
    cJSON       *c, *name;
    const char  *s;

    n = cJSON_GetArraySize(arr);

    if (n < 1) {
        return wa_send_fail(err, errlen, path, "at least one contact is "
                            "required");
    }

    for (i = 0; i < n; i++) {
        c = cJSON_GetArrayItem(arr, i);
        snprintf(p, sizeof(p), "%s[%d]", path, i);

        if (!cJSON_IsObject(c)) {
            return wa_send_fail(err, errlen, p, "an object is expected");
        }

        name = cJSON_GetObjectItemCaseSensitive(c, "name");

        if (!cJSON_IsObject(name)) {
            return wa_send_fail(err, errlen, p, "name: an object with a "
                                "\"formatted_name\" is required");
        }

        snprintf(p, sizeof(p), "%s[%d].name", path, i);

        if (wa_send_field(name, p, "formatted_name", 1, 1024, &s, err,
                          errlen) != 0)
        {
            return -1;
        }

        wa_sbuf_add(sum, i ? ", " : "");
        wa_sbuf_add(sum, s);
    }

    return 0;
}


/* Messages, reaction object: message_id, and emoji: one emoji, or ""
 * to remove the reaction */

static int
wa_send_check_reaction(cJSON *obj, const char *path, wa_sbuf_t *sum,
    char *err, size_t errlen)
{
    cJSON       *emoji;

    if (wa_send_field(obj, path, "message_id", 1, WA_WAMID_MAX, NULL, err,
                      errlen) != 0)
    {
        return -1;
    }

    emoji = cJSON_GetObjectItemCaseSensitive(obj, "emoji");

    if (!cJSON_IsString(emoji)
        || (emoji->valuestring[0] && !wa_send_emoji(emoji->valuestring)))
    {
        return wa_send_fail(err, errlen, path, "emoji: one emoji, or \"\" "
                            "to remove the reaction, is required");
    }

    wa_sbuf_add(sum, emoji->valuestring[0] ? emoji->valuestring
                                           : "reaction removed");

    return 0;
}


static int
wa_send_check_context(cJSON *obj, char *err, size_t errlen)
{
    return wa_send_field(obj, "context", "message_id", 1, WA_WAMID_MAX, NULL,
                         err, errlen);
}


/*
 * Mark-as-read, as Meta's /messages takes it: "status": "read", the
 * inbound message's wamid, and optionally the typing indicator ("text"
 * is the one type Meta documents). Nothing else of a send may come with
 * it: a "to" or a message would be silently dropped.
 */

static int
wa_send_parse_read(const char *body, size_t len, cJSON *root,
    wa_send_req_t *req, char *err, size_t errlen)
{
    int          rc;
    cJSON       *item, *ti;
    size_t       vlen;
    const char  *s;

    for (item = root->child; item; item = item->next) {
        if (strcmp(item->string, "status") != 0
            && strcmp(item->string, "message_id") != 0
            && strcmp(item->string, "typing_indicator") != 0
            && strcmp(item->string, "messaging_product") != 0
            && strcmp(item->string, "phone_number_id") != 0)
        {
            return wa_send_fail(err, errlen, item->string, "not allowed "
                                "with \"status\": \"read\"");
        }
    }

    s = wa_send_str(root, "status");
    if (s == NULL || strcmp(s, "read") != 0) {
        return wa_send_err(err, errlen, "status: \"read\" is the one status "
                           "a business sets");
    }

    s = wa_send_str(root, "messaging_product");
    if (cJSON_GetObjectItemCaseSensitive(root, "messaging_product") != NULL
        && (s == NULL || strcmp(s, "whatsapp") != 0))
    {
        return wa_send_err(err, errlen, "messaging_product: \"whatsapp\" is "
                           "expected");
    }

    if (wa_send_field(root, "message_id", "message_id", 1, WA_WAMID_MAX, &s,
                      err, errlen) != 0)
    {
        return wa_send_fail(err, errlen, "message_id", "the wamid of an "
                            "inbound message (1 to %d characters) is "
                            "required", WA_WAMID_MAX);
    }

    if (wa_send_copy(req->message_id, sizeof(req->message_id), s)) {
        return wa_send_err(err, errlen, "message_id: too long");
    }

    ti = cJSON_GetObjectItemCaseSensitive(root, "typing_indicator");

    if (ti != NULL) {
        s = cJSON_IsObject(ti) ? wa_send_str(ti, "type") : NULL;

        if (s == NULL || strcmp(s, "text") != 0 || ti->child->next != NULL) {
            return wa_send_err(err, errlen, "typing_indicator: "
                               "{\"type\": \"text\"} is expected");
        }

        rc = wa_send_member(body, len, "typing_indicator", &s, &vlen);

        if (rc != 0) {
            return wa_send_fail(err, errlen, "typing_indicator", "%s",
                                rc == -2 ? "control characters must be "
                                           "escaped"
                                         : "not found in the body");
        }

        req->typing_json = wa_send_dup(s, vlen);

        if (req->typing_json == NULL) {
            return wa_send_err(err, errlen, "out of memory");
        }
    }

    item = cJSON_GetObjectItemCaseSensitive(root, "phone_number_id");

    if (item != NULL && !cJSON_IsNull(item)) {
        s = cJSON_IsString(item) ? item->valuestring : "";

        for (rc = 0; isdigit((unsigned char) s[rc]); rc++) { /* void */ }

        if (rc == 0 || s[rc] != '\0'
            || wa_send_copy(req->phone_number_id,
                            sizeof(req->phone_number_id), s))
        {
            return wa_send_err(err, errlen, "phone_number_id: a string of "
                               "digits is expected");
        }
    }

    req->read = 1;
    strcpy(req->type, "read");
    strcpy(req->source, "api");

    req->request_json = cJSON_PrintUnformatted(root);

    if (req->request_json == NULL) {
        return wa_send_err(err, errlen, "out of memory");
    }

    return 0;
}


/* "US.13491208655302741918", "US.ENT.11815799212886844830": two capital
 * letters (the country), a dot, then letters, digits and dots; 0 or -1 */

static int
wa_send_bsuid(const char *s)
{
    size_t  n;

    if (!isupper((unsigned char) s[0]) || !isupper((unsigned char) s[1])
        || s[2] != '.' || s[3] == '\0')
    {
        return -1;
    }

    for (n = 3; s[n]; n++) {
        if (!isalnum((unsigned char) s[n])
            && !(s[n] == '.' && s[n - 1] != '.' && s[n + 1] != '\0'))
        {
            return -1;
        }
    }

    return n <= WA_SEND_BSUID_MAX ? 0 : -1;
}


/* a string member: required or not, non-empty when required, at most max
 * characters; *out is the string, or NULL when absent */

static int
wa_send_field(cJSON *obj, const char *path, const char *key, int required,
    size_t max, const char **out, char *err, size_t errlen)
{
    cJSON  *item;

    if (out) {
        *out = NULL;
    }

    item = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (item == NULL) {
        if (required) {
            return wa_send_fail(err, errlen, path, "%s: required", key);
        }

        return 0;
    }

    if (!cJSON_IsString(item)) {
        return wa_send_fail(err, errlen, path, "%s: a string is expected",
                            key);
    }

    if (required && item->valuestring[0] == '\0') {
        return wa_send_fail(err, errlen, path, "%s: must not be empty", key);
    }

    if (wa_send_chars(item->valuestring) > max) {
        return wa_send_fail(err, errlen, path, "%s: longer than %zu "
                            "characters", key, max);
    }

    if (out) {
        *out = item->valuestring;
    }

    return 0;
}


static int
wa_send_url(cJSON *obj, const char *path, const char *key, int required,
    const char **out, char *err, size_t errlen)
{
    const char  *s;

    if (wa_send_field(obj, path, key, required, 2048, &s, err, errlen) != 0) {
        return -1;
    }

    if (s != NULL
        && ((strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0)
            || strlen(s) < 10 || strpbrk(s, " \t\r\n") != NULL))
    {
        return wa_send_fail(err, errlen, path, "%s: an http or https URL is "
                            "expected", key);
    }

    if (out) {
        *out = s;
    }

    return 0;
}


static int
wa_send_coord(cJSON *obj, const char *path, const char *key, double lim,
    double *out, char *err, size_t errlen)
{
    char    *end;
    cJSON   *item;
    double   v;

    item = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (cJSON_IsNumber(item)) {
        v = item->valuedouble;

    } else if (cJSON_IsString(item) && item->valuestring[0]
               && !isspace((unsigned char) item->valuestring[0]))
    {
        v = strtod(item->valuestring, &end);

        if (*end != '\0') {
            goto bad;
        }

    } else {
        goto bad;
    }

    /* also refuses NaN */
    if (!(v >= -lim && v <= lim)) {
        goto bad;
    }

    *out = v;

    return 0;

bad:

    return wa_send_fail(err, errlen, path, "%s: a number from %g to %g is "
                        "required", key, -lim, lim);
}


/* no object, at any depth, has a key twice (nor more than WA_MEMBERS_MAX
 * keys); path is the JSON path so far, in a 256-byte buffer */

static int
wa_send_unique(cJSON *obj, char *path, size_t plen, char *err,
    size_t errlen)
{
    int     i, n;
    cJSON  *a, *b;

    if (cJSON_IsArray(obj)) {
        for (a = obj->child, i = 0; a; a = a->next, i++) {
            if (a->child == NULL) {
                continue;
            }

            snprintf(path + plen, 256 - plen, "[%d]", i);

            if (wa_send_unique(a, path, strlen(path), err, errlen) != 0) {
                return -1;
            }
        }

        path[plen] = '\0';
        return 0;
    }

    if (!cJSON_IsObject(obj)) {
        return 0;
    }

    for (a = obj->child, n = 0; a; a = a->next, n++) {
        if (n == WA_MEMBERS_MAX) {
            return wa_send_fail(err, errlen, path, "more than %d members",
                                WA_MEMBERS_MAX);
        }

        for (b = obj->child; b != a; b = b->next) {
            if (strcmp(a->string, b->string) == 0) {
                snprintf(path + plen, 256 - plen, "%s%s", plen ? "." : "",
                         a->string);
                return wa_send_fail(err, errlen, path, "given twice");
            }
        }

        if (a->child == NULL) {
            continue;
        }

        snprintf(path + plen, 256 - plen, "%s%s", plen ? "." : "",
                 a->string);

        if (wa_send_unique(a, path, strlen(path), err, errlen) != 0) {
            return -1;
        }

        path[plen] = '\0';
    }

    return 0;
}


/* decoded UTF-8, or -1 */

static long
wa_send_utf8(const unsigned char **p)
{
    int                   n;
    long                  c;
    const unsigned char  *s;

    s = *p;

    if (s[0] < 0x80) {
        *p = s + 1;
        return s[0];
    }

    if (s[0] >= 0xf0 && s[0] < 0xf5) {
        n = 3; c = s[0] & 0x07;
    } else if (s[0] >= 0xe0) {
        n = 2; c = s[0] & 0x0f;
    } else if (s[0] >= 0xc2 && s[0] < 0xe0) {
        n = 1; c = s[0] & 0x1f;
    } else {
        return -1;
    }

    for (s++; n; n--, s++) {
        if ((*s & 0xc0) != 0x80) {
            return -1;
        }

        c = (c << 6) | (*s & 0x3f);
    }

    *p = s;

    return c;
}


static int
wa_send_pict(long c)
{
    return c == 0xa9 || c == 0xae || c == 0x203c || c == 0x2049
           || c == 0x2122 || c == 0x2139 || (c >= 0x2194 && c <= 0x21aa)
           || (c >= 0x231a && c <= 0x23ff) || c == 0x24c2
           || (c >= 0x25aa && c <= 0x27bf) || c == 0x2934 || c == 0x2935
           || (c >= 0x2b05 && c <= 0x2b55) || c == 0x3030 || c == 0x303d
           || c == 0x3297 || c == 0x3299
           || (c >= 0x1f000 && c <= 0x1faff
               && !(c >= 0x1f3fb && c <= 0x1f3ff));
}


/*
 * One emoji, as Meta's reaction takes it: a pictograph with its variation
 * selector, skin tone and tags, several joined by ZWJ (a family), two
 * regional indicators (a flag), or a keycap (digit, FE0F?, 20E3). The
 * Unicode emoji grammar, simplified; not a second character.
 */

static int
wa_send_emoji(const char *str)
{
    int                   n;
    long                  c, cp[32];
    const unsigned char  *s;

    s = (const unsigned char *) str;

    for (n = 0; *s; n++) {
        if (n == 32 || (cp[n] = wa_send_utf8(&s)) < 0) {
            return 0;
        }
    }

    /* keycap */
    if (n >= 2 && ((cp[0] >= '0' && cp[0] <= '9') || cp[0] == '#'
                   || cp[0] == '*'))
    {
        return (n == 2 && cp[1] == 0x20e3)
               || (n == 3 && cp[1] == 0xfe0f && cp[2] == 0x20e3);
    }

    /* flag */
    if (cp[0] >= 0x1f1e6 && cp[0] <= 0x1f1ff) {
        return n == 2 && cp[1] >= 0x1f1e6 && cp[1] <= 0x1f1ff;
    }

    if (!wa_send_pict(cp[0])) {
        return 0;
    }

    for (int i = 1; i < n; i++) {
        c = cp[i];

        if (c == 0xfe0f || c == 0xfe0e || (c >= 0x1f3fb && c <= 0x1f3ff)
            || (c >= 0xe0020 && c <= 0xe007f))
        {
            continue;
        }

        if (c == 0x200d && i + 1 < n && wa_send_pict(cp[i + 1])) {
            i++;
            continue;
        }

        return 0;
    }

    return 1;
}


/* characters, as Meta counts them: code points (continuation bytes are
 * not counted) */

static size_t
wa_send_chars(const char *s)
{
    size_t  n;

    for (n = 0; *s; s++) {
        n += ((unsigned char) *s & 0xc0) != 0x80;
    }

    return n;
}


/*
 * The bytes of the top-level member key's value in the body, as sent.
 * The body is already known to be JSON (cJSON read it); whitespace is
 * what cJSON skips (any byte up to 0x20), and a UTF-8 BOM may lead.
 * 0; -1 not found; -2 a control character in a string of the value, or a
 * stray byte cJSON took as space: strict JSON refuses both, so forwarding
 * them would make Meta's parser, not ours, the judge.
 */

#define wa_send_ws(c)  ((unsigned char) (c) <= 0x20)

static int
wa_send_member(const char *body, size_t len, const char *key,
    const char **val, size_t *vlen)
{
    int          found;
    char        *name;
    size_t       klen;
    cJSON       *k;
    const char  *p, *end, *ks, *ke, *vs, *q;

    p = body;
    end = body + len;
    klen = strlen(key);

    if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0) {
        p += 3;
    }

    while (p < end && wa_send_ws(*p)) { p++; }

    if (p == end || *p++ != '{') {
        return -1;
    }

    for ( ;; ) {
        while (p < end && wa_send_ws(*p)) { p++; }

        if (p == end || *p != '"') {
            return -1;
        }

        ks = p;
        p = wa_send_skip(p, end);

        if (p == NULL) {
            return -1;
        }

        ke = p;

        while (p < end && wa_send_ws(*p)) { p++; }

        if (p == end || *p++ != ':') {
            return -1;
        }

        while (p < end && wa_send_ws(*p)) { p++; }

        vs = p;
        p = wa_send_skip(p, end);

        if (p == NULL) {
            return -1;
        }

        if (memchr(ks, '\\', ke - ks) == NULL) {
            found = (size_t) (ke - ks - 2) == klen
                    && memcmp(ks + 1, key, klen) == 0;

        } else {
            /* an escaped key: cJSON decodes it as it did when parsing */
            name = wa_send_dup(ks, ke - ks);
            k = name ? cJSON_Parse(name) : NULL;
            found = cJSON_IsString(k) && strcmp(k->valuestring, key) == 0;
            cJSON_Delete(k);
            free(name);
        }

        if (found) {
            /* strict JSON inside: nothing under 0x20 but these four */
            for (q = vs; q < p; q++) {
                if ((unsigned char) *q < 0x20 && *q != '\t' && *q != '\n'
                    && *q != '\r')
                {
                    return -2;
                }
            }

            *val = vs;
            *vlen = p - vs;
            return 0;
        }

        while (p < end && wa_send_ws(*p)) { p++; }

        if (p == end || *p++ != ',') {
            return -1;
        }
    }
}


/* past one JSON value (a string, a container or a scalar); NULL when it
 * does not end; a raw control character in a string is -2's business */

static const char *
wa_send_skip(const char *p, const char *end)
{
    int  depth;

    depth = 0;

    while (p < end) {
        switch (*p) {

        case '"':
            for (p++; p < end && *p != '"'; p++) {
                if (*p == '\\') {
                    p++;
                }
            }

            if (p >= end) {
                return NULL;
            }

            p++;

            if (depth == 0) {
                return p;
            }

            continue;

        case '{': case '[':
            depth++;
            break;

        case '}': case ']':
            if (depth == 0) {
                return p;          /* a scalar ends at its container's end */
            }

            if (--depth == 0) {
                return p + 1;
            }

            break;

        case ',':
            if (depth == 0) {
                return p;
            }

            break;

        default:
            if (depth == 0 && wa_send_ws(*p)) {
                return p;
            }
        }

        p++;
    }

    return depth == 0 ? p : NULL;
}


static char *
wa_send_dup(const char *s, size_t n)
{
    char  *d;

    d = malloc(n + 1);

    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }

    return d;
}


static void
wa_sbuf_add(wa_sbuf_t *b, const char *s)
{
    char    *d;
    size_t   n;

    if (b == NULL || s == NULL || b->oom) {
        return;
    }

    n = strlen(s);

    if (b->len + n + 1 > b->size) {
        b->size = (b->len + n + 1) * 2;
        d = realloc(b->data, b->size);

        if (d == NULL) {
            b->oom = 1;
            return;
        }

        b->data = d;
    }

    memcpy(b->data + b->len, s, n + 1);
    b->len += n;
}


void
wa_send_req_free(wa_send_req_t *req)
{
    if (req->summary != req->text) {
        free(req->summary);
    }

    free(req->text);
    free(req->object_json);
    free(req->context_json);
    free(req->typing_json);
    cJSON_free(req->request_json);

    req->text = NULL;
    req->object_json = NULL;
    req->context_json = NULL;
    req->typing_json = NULL;
    req->summary = NULL;
    req->request_json = NULL;
}


/*
 * The envelope is ours, the message object and the context the caller's
 * bytes (cJSON's raw items print them verbatim): what Meta reads is what
 * was validated, key order, spacing and escapes included.
 */

char *
wa_send_build_body(const wa_send_req_t *req, const char *local_id)
{
    char   *out;
    cJSON  *root, *text;

    root = cJSON_CreateObject();
    if (root == NULL) {
        return NULL;
    }

    cJSON_AddStringToObject(root, "messaging_product", "whatsapp");
    cJSON_AddStringToObject(root, "recipient_type", "individual");

    if (req->to[0]) {
        cJSON_AddStringToObject(root, "to", req->to);
    }

    if (req->recipient[0]) {
        cJSON_AddStringToObject(root, "recipient", req->recipient);
    }

    cJSON_AddStringToObject(root, "biz_opaque_callback_data", local_id);
    cJSON_AddStringToObject(root, "type", req->type);

    if (req->text) {
        text = cJSON_AddObjectToObject(root, "text");
        if (text == NULL
            || cJSON_AddStringToObject(text, "body", req->text) == NULL)
        {
            goto failed;
        }

    } else if (req->object_json == NULL
               || cJSON_AddRawToObject(root, req->type, req->object_json)
                  == NULL)
    {
        goto failed;
    }

    if (req->context_json
        && cJSON_AddRawToObject(root, "context", req->context_json) == NULL)
    {
        goto failed;
    }

    out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);

    return out;

failed:

    cJSON_Delete(root);
    return NULL;
}


/* the mark-as-read body: Meta's shape, the typing indicator as sent */

char *
wa_send_build_read_body(const wa_send_req_t *req)
{
    char   *out;
    cJSON  *root;

    root = cJSON_CreateObject();
    if (root == NULL) {
        return NULL;
    }

    if (cJSON_AddStringToObject(root, "messaging_product", "whatsapp") == NULL
        || cJSON_AddStringToObject(root, "status", "read") == NULL
        || cJSON_AddStringToObject(root, "message_id", req->message_id)
           == NULL
        || (req->typing_json
            && cJSON_AddRawToObject(root, "typing_indicator",
                                    req->typing_json) == NULL))
    {
        cJSON_Delete(root);
        return NULL;
    }

    out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);

    return out;
}


void
wa_send_parse_response(long status, const char *body, size_t len,
    wa_send_res_t *res)
{
    wa_send_parse_answer(WA_SEND_ANSWER_MESSAGE, status, body, len, res);
}


void
wa_send_parse_answer(wa_send_answer_e kind, long status, const char *body,
    size_t len, wa_send_res_t *res)
{
    long         code;
    cJSON       *root, *msgs, *msg, *error, *data;
    const char  *id;

    memset(res, 0, sizeof(wa_send_res_t));

    root = cJSON_ParseWithLength(body, len);
    res->json = cJSON_IsObject(root);

    if (status >= 200 && status < 300) {
        id = NULL;

        if (kind == WA_SEND_ANSWER_MESSAGE) {
            msgs = root ? cJSON_GetObjectItemCaseSensitive(root, "messages")
                        : NULL;
            msg = cJSON_IsArray(msgs) ? cJSON_GetArrayItem(msgs, 0) : NULL;
            id = cJSON_IsObject(msg) ? wa_send_str(msg, "id") : NULL;

        } else if (kind == WA_SEND_ANSWER_MEDIA) {
            id = res->json ? wa_send_str(root, "id") : NULL;

        } else if (res->json
                   && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
                                       root, "success")))
        {
            id = "";
        }

        if (id != NULL && (kind == WA_SEND_ANSWER_SUCCESS || id[0])
            && wa_send_copy(res->wamid, sizeof(res->wamid), id) == 0)
        {
            res->ok = 1;
            cJSON_Delete(root);
            return;
        }

        /* a 2xx without a message id is not an acceptance we can record,
         * nor a refusal: the message may well be on its way */
        snprintf(res->error_title, sizeof(res->error_title),
                 "provider answered %ld without %s", status,
                 kind == WA_SEND_ANSWER_MESSAGE ? "a message id"
                 : kind == WA_SEND_ANSWER_MEDIA ? "a media id"
                 : "\"success\": true");
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


/*
 * "path: message", where a message that starts with a member ("caption:
 * ...", "buttons[3]: ...") extends the path instead: "image.caption: ...".
 */

static int
wa_send_fail(char *err, size_t errlen, const char *path, const char *fmt,
    ...)
{
    char        msg[WA_SEND_ERR_LEN];
    va_list     ap;
    const char  *colon;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    colon = strstr(msg, ": ");

    if (path[0] == '\0') {
        snprintf(err, errlen, "%s", msg);

    } else if (colon != NULL && colon > msg
               && strcspn(msg, " \"") >= (size_t) (colon - msg))
    {
        snprintf(err, errlen, "%s%s%s", path, msg[0] == '[' ? "" : ".", msg);

    } else {
        snprintf(err, errlen, "%s: %s", path, msg);
    }

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
