/*
 * wa_webhook_parse: Cloud API webhook body -> ring records.
 *
 * Two walks over the same tree: the first only checks the shape, the second
 * emits. Emitting nothing for a malformed body is what lets the handler
 * answer 400 with "nothing recorded".
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "wa_utf8.h"
#include "wa_webhook_parse.h"


typedef struct {
    wa_webhook_ctx_t  *ctx;
    int                emit;         /* 0: check only */
    const char        *business;
    const char        *phone_id;
    const char        *waba_id;      /* entry[].id */
    const char        *entry_time;   /* entry[].time, decimal, or NULL */
    const char        *field;        /* changes[].field, or NULL */
    cJSON             *contacts;
} wa_walk_t;


static int wa_field_is_raw(const char *field);
static int wa_walk_value(wa_walk_t *w, cJSON *value);
static int wa_walk_event(wa_walk_t *w, cJSON *value);
static void wa_walk_business(wa_walk_t *w);
static int wa_walk_message(wa_walk_t *w, cJSON *msg);
static int wa_walk_echo(wa_walk_t *w, cJSON *msg);
static int wa_walk_status(wa_walk_t *w, cJSON *st);
static int wa_walk_error(wa_walk_t *w, cJSON *err);
static int wa_emit(wa_walk_t *w, wa_record_t *rec, cJSON *raw);
static int wa_scan(wa_walk_t *w, const unsigned char *p, size_t len);
static int wa_unique_keys(wa_walk_t *w, cJSON *item);
static int wa_keycmp(const void *a, const void *b);
static int wa_invalid(wa_walk_t *w, const char *fmt, const char *arg);
static const char *wa_str(cJSON *obj, const char *key);
static const char *wa_text(cJSON *obj, const char *key, char *buf,
    size_t size);
static const char *wa_path(cJSON *obj, const char *k1, const char *k2);
static const char *wa_phone(const char *s);
static cJSON *wa_contact(cJSON *contacts, const char *wa_id,
    const char *user_id);
static const char *wa_message_body(cJSON *msg, const char *type);


int
wa_webhook_parse(const char *body, size_t len, wa_webhook_ctx_t *ctx)
{
    int          rc, pass;
    char         etime[32];
    cJSON       *root, *object, *entries, *entry, *changes, *change, *value;
    wa_walk_t    w;
    const char  *end;

    ctx->messages = 0;
    ctx->statuses = 0;
    ctx->errors = 0;
    ctx->events = 0;
    ctx->echoes = 0;
    ctx->unknown_channels = 0;
    ctx->error[0] = '\0';

    memset(&w, 0, sizeof(wa_walk_t));
    w.ctx = ctx;

    end = NULL;

    rc = wa_scan(&w, (const unsigned char *) body, len);
    if (rc != WA_WH_OK) {
        return rc;
    }

    root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (root == NULL) {
        return wa_invalid(&w, "body is not valid JSON", NULL);
    }

    rc = WA_WH_OK;

    while (end < body + len
           && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
    {
        end++;
    }

    if (end != body + len) {
        rc = wa_invalid(&w, "trailing data after the JSON body", NULL);
        goto done;
    }

    rc = wa_unique_keys(&w, root);
    if (rc != WA_WH_OK) {
        goto done;
    }

    if (!cJSON_IsObject(root)) {
        rc = wa_invalid(&w, "body is not a JSON object", NULL);
        goto done;
    }

    object = cJSON_GetObjectItemCaseSensitive(root, "object");
    if (object != NULL
        && !(cJSON_IsString(object)
             && strcmp(object->valuestring, "whatsapp_business_account") == 0))
    {
        rc = wa_invalid(&w, "\"object\" is not \"whatsapp_business_account\"",
                        NULL);
        goto done;
    }

    entries = cJSON_GetObjectItemCaseSensitive(root, "entry");
    if (!cJSON_IsArray(entries)) {
        rc = wa_invalid(&w, "\"entry\" is missing or not an array", NULL);
        goto done;
    }

    for (pass = 0; pass < 2; pass++) {
        w.emit = pass;

        cJSON_ArrayForEach(entry, entries) {
            if (!cJSON_IsObject(entry)) {
                rc = wa_invalid(&w, "entry[] item is not an object", NULL);
                goto done;
            }

            changes = cJSON_GetObjectItemCaseSensitive(entry, "changes");
            if (!cJSON_IsArray(changes)) {
                rc = wa_invalid(&w, "entry[].changes is missing or not an "
                                "array", NULL);
                goto done;
            }

            w.waba_id = wa_str(entry, "id");
            w.entry_time = wa_text(entry, "time", etime, sizeof(etime));

            cJSON_ArrayForEach(change, changes) {
                value = cJSON_GetObjectItemCaseSensitive(change, "value");
                if (!cJSON_IsObject(change) || !cJSON_IsObject(value)) {
                    rc = wa_invalid(&w, "changes[].value is missing or not "
                                    "an object", NULL);
                    goto done;
                }

                w.field = wa_str(change, "field");

                rc = wa_walk_value(&w, value);
                if (rc != WA_WH_OK) {
                    goto done;
                }
            }
        }
    }

done:

    cJSON_Delete(root);
    return rc;
}


/* fields whose value is stored whole whatever arrays it holds */

static int
wa_field_is_raw(const char *field)
{
    return field != NULL
           && (strcmp(field, "calls") == 0 || strcmp(field, "history") == 0);
}


static int
wa_walk_value(wa_walk_t *w, cJSON *value)
{
    int     rc;
    cJSON  *messages, *statuses, *errors, *echoes, *item;

    messages = cJSON_GetObjectItemCaseSensitive(value, "messages");
    statuses = cJSON_GetObjectItemCaseSensitive(value, "statuses");
    errors = cJSON_GetObjectItemCaseSensitive(value, "errors");
    echoes = cJSON_GetObjectItemCaseSensitive(value, "message_echoes");
    w->contacts = cJSON_GetObjectItemCaseSensitive(value, "contacts");

    if ((messages && !cJSON_IsArray(messages))
        || (statuses && !cJSON_IsArray(statuses))
        || (errors && !cJSON_IsArray(errors))
        || (echoes && !cJSON_IsArray(echoes))
        || (w->contacts && !cJSON_IsArray(w->contacts)))
    {
        return wa_invalid(w, "value.messages, statuses, errors, "
                          "message_echoes and contacts must be arrays", NULL);
    }

    /* a call's statuses and errors are not a message's, and the messages[]
     * of a history change are the contents of messages a chunk described
     * as placeholders: both fields go whole to wa_event, where the writer
     * structures them (wa_event_calls, wa_event_history) */
    if (wa_field_is_raw(w->field)
        || (messages == NULL && statuses == NULL && errors == NULL
            && echoes == NULL))
    {
        /* any other field (account, templates, quality, calls, ...):
         * acknowledged only once stored raw */
        return wa_walk_event(w, value);
    }

    w->phone_id = wa_path(value, "metadata", "phone_number_id");
    if (w->phone_id == NULL || w->phone_id[0] == '\0') {
        return wa_invalid(w, "value.metadata.phone_number_id is missing",
                          NULL);
    }

    wa_walk_business(w);

    cJSON_ArrayForEach(item, messages) {
        rc = wa_walk_message(w, item);
        if (rc != WA_WH_OK) {
            return rc;
        }
    }

    cJSON_ArrayForEach(item, statuses) {
        rc = wa_walk_status(w, item);
        if (rc != WA_WH_OK) {
            return rc;
        }
    }

    cJSON_ArrayForEach(item, errors) {
        rc = wa_walk_error(w, item);
        if (rc != WA_WH_OK) {
            return rc;
        }
    }

    cJSON_ArrayForEach(item, echoes) {
        rc = wa_walk_echo(w, item);
        if (rc != WA_WH_OK) {
            return rc;
        }
    }

    return WA_WH_OK;
}


/*
 * A change with nothing the walk knows how to structure: the value is
 * kept whole, with its field, WABA and entry time, so a 200 never stands
 * for a change that was thrown away. Any JSON object is accepted here.
 */

static int
wa_walk_event(wa_walk_t *w, cJSON *value)
{
    wa_record_t  rec;

    if (!w->emit) {
        return WA_WH_OK;
    }

    /* account level fields have no metadata: the default business */
    w->phone_id = wa_path(value, "metadata", "phone_number_id");

    if (w->phone_id != NULL && w->phone_id[0] == '\0') {
        w->phone_id = NULL;
    }

    if (w->phone_id != NULL) {
        wa_walk_business(w);

    } else {
        w->business = w->ctx->default_business;
    }

    memset(&rec, 0, sizeof(wa_record_t));
    rec.type = WA_REC_EVENT;

    wa_record_set(&rec, WA_F_BUSINESS, w->business);
    wa_record_set(&rec, WA_F_PHONE_NUMBER_ID, w->phone_id);
    wa_record_set(&rec, WA_F_WABA_ID, w->waba_id);
    wa_record_set(&rec, WA_F_FIELD, w->field);
    wa_record_set(&rec, WA_F_TIMESTAMP, w->entry_time);

    w->ctx->events++;

    return wa_emit(w, &rec, value);
}


/* the business of w->phone_id; the default one for a number not known */

static void
wa_walk_business(wa_walk_t *w)
{
    w->business = NULL;

    if (w->emit) {
        w->business = w->ctx->business(w->ctx, w->phone_id);
        if (w->business == NULL) {
            w->business = w->ctx->default_business;
            w->ctx->unknown_channels++;
        }
    }
}


static int
wa_walk_message(wa_walk_t *w, cJSON *msg)
{
    int          rc;
    char         ts[32], *cjson;
    cJSON       *contact;
    const char  *id, *type, *from, *user_id;
    wa_record_t  rec;

    if (!cJSON_IsObject(msg)) {
        return wa_invalid(w, "messages[] item is not an object", NULL);
    }

    id = wa_str(msg, "id");
    type = wa_str(msg, "type");
    from = wa_str(msg, "from");
    user_id = wa_str(msg, "from_user_id");

    if (id == NULL || id[0] == '\0') {
        return wa_invalid(w, "messages[].id is missing", NULL);
    }

    if (type == NULL) {
        return wa_invalid(w, "messages[].type is missing (message %s)", id);
    }

    if ((from == NULL || from[0] == '\0')
        && (user_id == NULL || user_id[0] == '\0'))
    {
        return wa_invalid(w, "messages[].from is missing (message %s)", id);
    }

    if (!w->emit) {
        return WA_WH_OK;
    }

    contact = wa_contact(w->contacts, from, user_id);

    if (user_id == NULL && contact != NULL) {
        user_id = wa_str(contact, "user_id");
    }

    memset(&rec, 0, sizeof(wa_record_t));
    rec.type = WA_REC_IN_MESSAGE;

    wa_record_set(&rec, WA_F_BUSINESS, w->business);
    wa_record_set(&rec, WA_F_PHONE_NUMBER_ID, w->phone_id);
    wa_record_set(&rec, WA_F_PHONE, from ? wa_phone(from) : NULL);
    wa_record_set(&rec, WA_F_WA_USER_ID, user_id);
    wa_record_set(&rec, WA_F_NAME,
                  contact ? wa_path(contact, "profile", "name") : NULL);
    wa_record_set(&rec, WA_F_WAMID, id);
    wa_record_set(&rec, WA_F_MSG_TYPE, type);
    wa_record_set(&rec, WA_F_BODY, wa_message_body(msg, type));
    wa_record_set(&rec, WA_F_TIMESTAMP, wa_text(msg, "timestamp", ts,
                                                sizeof(ts)));

    /* the sender's entry whole: wa_id, user_id, parent_user_id, username,
     * ... whatever Meta adds, kept by the writer with the message */
    cjson = NULL;

    if (contact != NULL) {
        cjson = cJSON_PrintUnformatted(contact);
        if (cjson == NULL) {
            return WA_WH_NOMEM;
        }

        wa_record_set(&rec, WA_F_CONTACT, cjson);
    }

    w->ctx->messages++;

    rc = wa_emit(w, &rec, msg);

    cJSON_free(cjson);

    return rc;
}


/*
 * smb_message_echoes: what the business typed in the WhatsApp Business
 * app (coexistence). Shaped as a message, but "from" is the business and
 * "to" the customer: an outbound message of the customer's lead.
 */

static int
wa_walk_echo(wa_walk_t *w, cJSON *msg)
{
    char         ts[32];
    const char  *id, *type, *to, *user_id;
    wa_record_t  rec;

    if (!cJSON_IsObject(msg)) {
        return wa_invalid(w, "message_echoes[] item is not an object", NULL);
    }

    id = wa_str(msg, "id");
    type = wa_str(msg, "type");
    to = wa_str(msg, "to");
    user_id = wa_str(msg, "to_user_id");

    if (id == NULL || id[0] == '\0') {
        return wa_invalid(w, "message_echoes[].id is missing", NULL);
    }

    if (type == NULL) {
        return wa_invalid(w, "message_echoes[].type is missing (message %s)",
                          id);
    }

    if ((to == NULL || to[0] == '\0')
        && (user_id == NULL || user_id[0] == '\0'))
    {
        return wa_invalid(w, "message_echoes[].to is missing (message %s)",
                          id);
    }

    if (!w->emit) {
        return WA_WH_OK;
    }

    memset(&rec, 0, sizeof(wa_record_t));
    rec.type = WA_REC_ECHO;

    wa_record_set(&rec, WA_F_BUSINESS, w->business);
    wa_record_set(&rec, WA_F_PHONE_NUMBER_ID, w->phone_id);
    wa_record_set(&rec, WA_F_PHONE, to ? wa_phone(to) : NULL);
    wa_record_set(&rec, WA_F_WA_USER_ID, user_id);
    wa_record_set(&rec, WA_F_WAMID, id);
    wa_record_set(&rec, WA_F_MSG_TYPE, type);
    wa_record_set(&rec, WA_F_BODY, wa_message_body(msg, type));
    wa_record_set(&rec, WA_F_TIMESTAMP, wa_text(msg, "timestamp", ts,
                                                sizeof(ts)));

    w->ctx->echoes++;

    return wa_emit(w, &rec, msg);
}


static int
wa_walk_status(wa_walk_t *w, cJSON *st)
{
    char         ts[32], code[32];
    cJSON       *errors, *err;
    const char  *id, *status, *detail;
    wa_record_t  rec;

    if (!cJSON_IsObject(st)) {
        return wa_invalid(w, "statuses[] item is not an object", NULL);
    }

    id = wa_str(st, "id");
    status = wa_str(st, "status");

    if (id == NULL || id[0] == '\0') {
        return wa_invalid(w, "statuses[].id is missing", NULL);
    }

    if (status == NULL || status[0] == '\0') {
        return wa_invalid(w, "statuses[].status is missing (message %s)", id);
    }

    if (!w->emit) {
        return WA_WH_OK;
    }

    memset(&rec, 0, sizeof(wa_record_t));
    rec.type = WA_REC_STATUS;

    wa_record_set(&rec, WA_F_BUSINESS, w->business);
    wa_record_set(&rec, WA_F_PHONE_NUMBER_ID, w->phone_id);
    wa_record_set(&rec, WA_F_WAMID, id);
    wa_record_set(&rec, WA_F_STATUS, status);
    wa_record_set(&rec, WA_F_TIMESTAMP, wa_text(st, "timestamp", ts,
                                                sizeof(ts)));
    wa_record_set(&rec, WA_F_PHONE, wa_str(st, "recipient_id")
                                    ? wa_phone(wa_str(st, "recipient_id"))
                                    : NULL);
    wa_record_set(&rec, WA_F_WA_USER_ID, wa_str(st, "recipient_user_id"));
    wa_record_set(&rec, WA_F_CALLBACK_DATA,
                  wa_str(st, "biz_opaque_callback_data"));

    errors = cJSON_GetObjectItemCaseSensitive(st, "errors");
    err = cJSON_IsArray(errors) ? cJSON_GetArrayItem(errors, 0) : NULL;

    if (cJSON_IsObject(err)) {
        detail = wa_path(err, "error_data", "details");

        wa_record_set(&rec, WA_F_ERROR_CODE, wa_text(err, "code", code,
                                                     sizeof(code)));
        wa_record_set(&rec, WA_F_ERROR_TITLE, wa_str(err, "title"));
        wa_record_set(&rec, WA_F_ERROR_DETAIL,
                      detail ? detail : wa_str(err, "message"));
    }

    w->ctx->statuses++;

    return wa_emit(w, &rec, st);
}


static int
wa_walk_error(wa_walk_t *w, cJSON *err)
{
    char         code[32];
    const char  *detail;
    wa_record_t  rec;

    if (!cJSON_IsObject(err)) {
        return wa_invalid(w, "errors[] item is not an object", NULL);
    }

    if (!w->emit) {
        return WA_WH_OK;
    }

    detail = wa_path(err, "error_data", "details");

    memset(&rec, 0, sizeof(wa_record_t));
    rec.type = WA_REC_WEBHOOK_ERROR;

    wa_record_set(&rec, WA_F_BUSINESS, w->business);
    wa_record_set(&rec, WA_F_PHONE_NUMBER_ID, w->phone_id);
    wa_record_set(&rec, WA_F_ERROR_CODE, wa_text(err, "code", code,
                                                 sizeof(code)));
    wa_record_set(&rec, WA_F_ERROR_TITLE, wa_str(err, "title"));
    wa_record_set(&rec, WA_F_ERROR_DETAIL,
                  detail ? detail : wa_str(err, "message"));
    /* tells a redelivery (same time) from the error happening again */
    wa_record_set(&rec, WA_F_TIMESTAMP, w->entry_time);

    w->ctx->errors++;

    return wa_emit(w, &rec, err);
}


/*
 * What cJSON lets through but RFC 8259 or PostgreSQL do not, refused before
 * anything is acknowledged: bytes that are not UTF-8 (text and jsonb refuse
 * them, so the record could only be dead-lettered), NUL raw or as \u0000
 * (it cuts a C string short: the text would be stored truncated, and jsonb
 * refuses it), and other raw control characters (cJSON takes them for
 * whitespace, and keeps them raw in strings). One pass, no allocation.
 */

static int
wa_scan(wa_walk_t *w, const unsigned char *p, size_t len)
{
    int            in_string;
    char           at[24];
    size_t         i, n;
    unsigned char  c;

    in_string = 0;

    for (i = 0; i < len; i++) {
        c = p[i];

        if (c >= 0x80) {
            n = wa_utf8_len(p + i, len - i);
            if (n == 0) {
                snprintf(at, sizeof(at), "%zu", i);
                return wa_invalid(w, "invalid UTF-8 at byte %s", at);
            }

            i += n - 1;
            continue;
        }

        if (c < 0x20
            && (in_string || (c != '\t' && c != '\n' && c != '\r')))
        {
            snprintf(at, sizeof(at), "%zu", i);
            return wa_invalid(w, "control character at byte %s", at);
        }

        if (c == '"') {
            in_string = !in_string;

        } else if (c == '\\' && in_string && i + 1 < len) {

            if (p[i + 1] == '"' || p[i + 1] == '\\') {
                /* an escaped quote or backslash neither ends nor escapes */
                i++;

            } else if (p[i + 1] == 'u' && i + 5 < len
                       && memcmp(&p[i + 2], "0000", 4) == 0)
            {
                snprintf(at, sizeof(at), "%zu", i);
                return wa_invalid(w, "\\u0000 at byte %s", at);
            }
        }
    }

    return WA_WH_OK;
}


/*
 * A key twice in one object, anywhere: cJSON finds the first, jsonb keeps
 * the last, so a second "messages" would be acknowledged and never recorded,
 * and a second "id" would disagree with the stored payload. Which one the
 * sender meant is a guess: refuse. Sorted when big, so 100k keys stay cheap;
 * the depth is bounded by cJSON's nesting limit.
 */

static int
wa_unique_keys(wa_walk_t *w, cJSON *item)
{
    int           rc;
    size_t        n, i;
    cJSON        *c, *d;
    const char  **keys, *dup;

    n = 0;

    for (c = item->child; c != NULL; c = c->next) {
        n++;

        if (c->child != NULL) {
            rc = wa_unique_keys(w, c);
            if (rc != WA_WH_OK) {
                return rc;
            }
        }
    }

    if (!cJSON_IsObject(item) || n < 2) {
        return WA_WH_OK;
    }

    dup = NULL;

    if (n <= 16) {
        for (c = item->child; c != NULL && dup == NULL; c = c->next) {
            for (d = c->next; d != NULL; d = d->next) {
                if (strcmp(c->string, d->string) == 0) {
                    dup = c->string;
                    break;
                }
            }
        }

    } else {
        keys = malloc(n * sizeof(const char *));
        if (keys == NULL) {
            return WA_WH_NOMEM;
        }

        i = 0;
        for (c = item->child; c != NULL; c = c->next) {
            keys[i++] = c->string;
        }

        qsort(keys, n, sizeof(const char *), wa_keycmp);

        for (i = 1; i < n; i++) {
            if (strcmp(keys[i - 1], keys[i]) == 0) {
                dup = keys[i];
                break;
            }
        }

        free(keys);
    }

    return dup ? wa_invalid(w, "duplicate key \"%s\"", dup) : WA_WH_OK;
}


static int
wa_keycmp(const void *a, const void *b)
{
    return strcmp(*(const char * const *) a, *(const char * const *) b);
}


/* stamp the common fields, attach the raw object, publish */

static int
wa_emit(wa_walk_t *w, wa_record_t *rec, cJSON *raw)
{
    int    rc;
    char  *json;

    json = cJSON_PrintUnformatted(raw);
    if (json == NULL) {
        return WA_WH_NOMEM;
    }

    wa_record_set(rec, WA_F_PAYLOAD, json);
    wa_record_set(rec, WA_F_RECEIVED_MS, w->ctx->received_ms);

    rc = w->ctx->emit(w->ctx, rec);

    cJSON_free(json);

    return rc == 0 ? WA_WH_OK : WA_WH_EMIT_FAILED;
}


static int
wa_invalid(wa_walk_t *w, const char *fmt, const char *arg)
{
    char            id[48];
    unsigned char  *p;

    if (arg != NULL) {
        /* ids come from the client: keep the message short and printable */
        snprintf(id, sizeof(id), "%.40s", arg);

        for (p = (unsigned char *) id; *p; p++) {
            if (*p < 0x20 || *p > 0x7e) {
                *p = '?';
            }
        }
    }

    snprintf(w->ctx->error, WA_WH_ERR_LEN, fmt, arg ? id : "");

    return WA_WH_INVALID;
}


static const char *
wa_str(cJSON *obj, const char *key)
{
    cJSON  *item;

    item = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsString(item) ? item->valuestring : NULL;
}


/* a string, or a number rendered in decimal (codes, timestamps) */

static const char *
wa_text(cJSON *obj, const char *key, char *buf, size_t size)
{
    cJSON  *item;

    item = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (cJSON_IsString(item)) {
        return item->valuestring;
    }

    if (cJSON_IsNumber(item)
        && item->valuedouble > -1e15 && item->valuedouble < 1e15)
    {
        snprintf(buf, size, "%.0f", item->valuedouble);
        return buf;
    }

    return NULL;
}


static const char *
wa_path(cJSON *obj, const char *k1, const char *k2)
{
    cJSON  *inner;

    inner = cJSON_GetObjectItemCaseSensitive(obj, k1);

    return cJSON_IsObject(inner) ? wa_str(inner, k2) : NULL;
}


static const char *
wa_phone(const char *s)
{
    return s[0] == '+' ? s + 1 : s;
}


/* the contacts[] entry of a message's sender */

static cJSON *
wa_contact(cJSON *contacts, const char *wa_id, const char *user_id)
{
    cJSON       *c;
    const char  *v;

    cJSON_ArrayForEach(c, contacts) {
        if (!cJSON_IsObject(c)) {
            continue;
        }

        v = wa_str(c, "wa_id");
        if (wa_id && v && strcmp(wa_phone(v), wa_phone(wa_id)) == 0) {
            return c;
        }

        v = wa_str(c, "user_id");
        if (user_id && v && strcmp(v, user_id) == 0) {
            return c;
        }
    }

    /* a single contact is the sender even when it names no id */
    c = cJSON_GetArrayItem(contacts, 0);

    return (c != NULL && c->next == NULL && cJSON_IsObject(c)) ? c : NULL;
}


/* the human-readable part of a message, for the CRM's conversation view */

static const char *
wa_message_body(cJSON *msg, const char *type)
{
    cJSON       *obj, *reply;
    const char  *s;

    obj = cJSON_GetObjectItemCaseSensitive(msg, type);
    if (!cJSON_IsObject(obj)) {
        return NULL;
    }

    if (strcmp(type, "text") == 0) {
        return wa_str(obj, "body");
    }

    if (strcmp(type, "button") == 0) {
        return wa_str(obj, "text");
    }

    if (strcmp(type, "reaction") == 0) {
        return wa_str(obj, "emoji");
    }

    if (strcmp(type, "interactive") == 0) {
        reply = cJSON_GetObjectItemCaseSensitive(obj, "button_reply");
        if (!cJSON_IsObject(reply)) {
            reply = cJSON_GetObjectItemCaseSensitive(obj, "list_reply");
        }

        if (!cJSON_IsObject(reply)) {
            reply = cJSON_GetObjectItemCaseSensitive(obj, "nfm_reply");
            return cJSON_IsObject(reply) ? wa_str(reply, "body") : NULL;
        }

        return wa_str(reply, "title");
    }

    if (strcmp(type, "location") == 0) {
        s = wa_str(obj, "name");
        return s ? s : wa_str(obj, "address");
    }

    if (strcmp(type, "system") == 0) {
        return wa_str(obj, "body");
    }

    /* image, video, document, sticker, audio: the caption when there is one */
    return wa_str(obj, "caption");
}
