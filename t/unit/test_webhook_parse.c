/*
 * Unit tests of wa_webhook_parse: every element of every entry and change
 * becomes a record, malformed bodies record nothing, text survives byte for
 * byte.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "wa_webhook_parse.h"


#define MAX_RECS  64

typedef struct {
    int          type;
    char        *f[WA_F__MAX];
} got_rec_t;

typedef struct {
    got_rec_t    recs[MAX_RECS];
    int          n;
    int          fail_at;          /* emit returns -1 at this index */
} sink_t;


static const char *
business(wa_webhook_ctx_t *ctx, const char *phone_id)
{
    (void) ctx;
    return strcmp(phone_id, "106540352242922") == 0 ? "7" : NULL;
}


static int
emit(wa_webhook_ctx_t *ctx, wa_record_t *rec)
{
    int            i;
    sink_t        *s = ctx->data;
    got_rec_t     *g;
    unsigned char  buf[65536];
    wa_record_t    back;
    size_t         size;

    if (s->n == s->fail_at || s->n >= MAX_RECS) {
        return -1;
    }

    /* round trip through the ring encoding, as the writer will see it */
    size = wa_record_size(rec);
    if (size > sizeof(buf)) {
        return -1;
    }

    wa_record_encode(rec, buf);

    if (wa_record_decode(&back, rec->type, buf, size) != 0) {
        return -1;
    }

    g = &s->recs[s->n++];
    g->type = back.type;

    for (i = 1; i < WA_F__MAX; i++) {
        g->f[i] = NULL;
        if (back.f[i].data) {
            g->f[i] = malloc(back.f[i].len + 1);
            memcpy(g->f[i], back.f[i].data, back.f[i].len);
            g->f[i][back.f[i].len] = '\0';
        }
    }

    return 0;
}


static void
sink_reset(sink_t *s)
{
    int  i, j;

    for (i = 0; i < s->n; i++) {
        for (j = 1; j < WA_F__MAX; j++) {
            free(s->recs[i].f[j]);
        }
    }

    memset(s, 0, sizeof(sink_t));
    s->fail_at = -1;
}


static int
parse_len(sink_t *s, wa_webhook_ctx_t *ctx, const char *body, size_t len)
{
    sink_reset(s);

    memset(ctx, 0, sizeof(wa_webhook_ctx_t));
    ctx->business = business;
    ctx->emit = emit;
    ctx->data = s;
    ctx->default_business = "99";
    ctx->received_ms = "1700000000000";

    return wa_webhook_parse(body, len, ctx);
}


static int
parse(sink_t *s, wa_webhook_ctx_t *ctx, const char *body)
{
    return parse_len(s, ctx, body, strlen(body));
}


static int
field_is(sink_t *s, int i, int tag, const char *want)
{
    const char  *got;

    got = (i < s->n) ? s->recs[i].f[tag] : NULL;

    if (want == NULL) {
        return got == NULL;
    }

    return got != NULL && strcmp(got, want) == 0;
}


#define VALUE_HEAD(pnid)                                                     \
    "{\"messaging_product\":\"whatsapp\",\"metadata\":"                       \
    "{\"display_phone_number\":\"15550783881\",\"phone_number_id\":\""        \
    pnid "\"},"

#define BODY(values)                                                         \
    "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"1029\","  \
    "\"changes\":[{\"field\":\"messages\",\"value\":" values "}]}]}"


/* a one-message body whose text is the given raw bytes (NUL allowed) */

static int
parse_text(sink_t *s, wa_webhook_ctx_t *ctx, const char *text, size_t len)
{
    int     rc;
    char   *body;
    size_t  n;

    static const char  head[] =
        "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"1\","
        "\"changes\":[{\"field\":\"messages\",\"value\":"
        VALUE_HEAD("106540352242922")
        "\"messages\":[{\"from\":\"1\",\"id\":\"t\",\"type\":\"text\","
        "\"text\":{\"body\":\"";
    static const char  tail[] = "\"}}]}}]}]}";

    n = sizeof(head) - 1 + len + sizeof(tail) - 1;

    body = malloc(n);
    if (body == NULL) {
        return WA_WH_NOMEM;
    }

    memcpy(body, head, sizeof(head) - 1);
    memcpy(body + sizeof(head) - 1, text, len);
    memcpy(body + sizeof(head) - 1 + len, tail, sizeof(tail) - 1);

    rc = parse_len(s, ctx, body, n);

    free(body);

    return rc;
}


#define TEXT(t)  parse_text(&s, &ctx, t, sizeof(t) - 1)


static const char  text_body[] = BODY(
    VALUE_HEAD("106540352242922")
    "\"contacts\":[{\"profile\":{\"name\":\"Sheena Nelson\"},"
    "\"wa_id\":\"16505551234\"}],"
    "\"messages\":[{\"from\":\"16505551234\",\"id\":\"wamid.A1\","
    "\"timestamp\":\"1749416383\",\"type\":\"text\","
    "\"text\":{\"body\":\"Does it come in another color?\"}}]}");


int
main(void)
{
    int               rc;
    sink_t            s;
    wa_webhook_ctx_t  ctx;

    memset(&s, 0, sizeof(sink_t));

    plan(98);

    /* a text message from Meta's documentation */

    rc = parse(&s, &ctx, text_body);
    ok(rc == WA_WH_OK, "text message parses");
    ok(s.n == 1 && s.recs[0].type == WA_REC_IN_MESSAGE, "one inbound record");
    ok(field_is(&s, 0, WA_F_BUSINESS, "7"), "business from the channel");
    ok(field_is(&s, 0, WA_F_PHONE_NUMBER_ID, "106540352242922"),
       "phone_number_id kept");
    ok(field_is(&s, 0, WA_F_PHONE, "16505551234"), "sender phone");
    ok(field_is(&s, 0, WA_F_NAME, "Sheena Nelson"), "profile name");
    ok(field_is(&s, 0, WA_F_WAMID, "wamid.A1"), "wamid");
    ok(field_is(&s, 0, WA_F_MSG_TYPE, "text"), "type");
    ok(field_is(&s, 0, WA_F_BODY, "Does it come in another color?"), "body");
    ok(field_is(&s, 0, WA_F_TIMESTAMP, "1749416383"), "timestamp");
    ok(field_is(&s, 0, WA_F_RECEIVED_MS, "1700000000000"), "received_ms");
    ok(s.n == 1 && s.recs[0].f[WA_F_PAYLOAD]
       && strstr(s.recs[0].f[WA_F_PAYLOAD], "\"wamid.A1\"")
       && strstr(s.recs[0].f[WA_F_PAYLOAD], "another color"),
       "payload is the raw message object");
    ok(field_is(&s, 0, WA_F_CONTACT, "{\"profile\":{\"name\":"
                "\"Sheena Nelson\"},\"wa_id\":\"16505551234\"}"),
       "the sender's contacts[] entry, whole");

    /* an unknown number goes to the default business, and is counted */

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("555")
        "\"messages\":[{\"from\":\"+972501234567\",\"id\":\"wamid.B\","
        "\"timestamp\":1749416384,\"type\":\"text\",\"text\":{\"body\":\"x\"}}"
        "]}"));
    ok(rc == WA_WH_OK && field_is(&s, 0, WA_F_BUSINESS, "99"),
       "unknown phone_number_id: default business");
    ok(ctx.unknown_channels == 1, "unknown channel counted");
    ok(field_is(&s, 0, WA_F_PHONE, "972501234567"), "leading + stripped");
    ok(field_is(&s, 0, WA_F_TIMESTAMP, "1749416384"), "numeric timestamp");

    /* every entry, change, message and status; in order */

    rc = parse(&s, &ctx,
        "{\"object\":\"whatsapp_business_account\",\"entry\":["
        "{\"id\":\"1\",\"changes\":["
        "  {\"field\":\"messages\",\"value\":" VALUE_HEAD("106540352242922")
        "   \"messages\":[{\"from\":\"1\",\"id\":\"m1\",\"type\":\"text\","
        "   \"text\":{\"body\":\"a\"}},{\"from\":\"2\",\"id\":\"m2\","
        "   \"type\":\"image\",\"image\":{\"caption\":\"cap\",\"id\":\"9\"}}]}},"
        "  {\"field\":\"messages\",\"value\":" VALUE_HEAD("106540352242922")
        "   \"statuses\":[{\"id\":\"s1\",\"status\":\"failed\","
        "   \"timestamp\":\"5\",\"recipient_id\":\"16505551234\","
        "   \"biz_opaque_callback_data\":\"L-1\",\"errors\":[{\"code\":131050,"
        "   \"title\":\"Stopped\",\"message\":\"m\",\"error_data\":"
        "   {\"details\":\"user stopped\"}}]}]}}]},"
        "{\"id\":\"2\",\"changes\":["
        "  {\"field\":\"messages\",\"value\":" VALUE_HEAD("106540352242922")
        "   \"messages\":[{\"from\":\"3\",\"id\":\"m3\",\"type\":\"interactive\","
        "   \"interactive\":{\"type\":\"button_reply\",\"button_reply\":"
        "   {\"id\":\"b\",\"title\":\"Yes\"}}},{\"from\":\"4\",\"id\":\"m4\","
        "   \"type\":\"reaction\",\"reaction\":{\"message_id\":\"x\","
        "   \"emoji\":\"\\ud83d\\udc4d\"}}],"
        "   \"errors\":[{\"code\":131000,\"title\":\"Something\"}]}}]}]}");
    ok(rc == WA_WH_OK, "multi entry body parses");
    ok(s.n == 6, "all 6 records (4 messages, 1 status, 1 error): %d", s.n);
    ok(ctx.messages == 4 && ctx.statuses == 1 && ctx.errors == 1, "counts");
    ok(field_is(&s, 0, WA_F_WAMID, "m1") && field_is(&s, 1, WA_F_WAMID, "m2")
       && field_is(&s, 3, WA_F_WAMID, "m3")
       && field_is(&s, 4, WA_F_WAMID, "m4"), "messages in order");
    ok(field_is(&s, 1, WA_F_BODY, "cap"), "image caption is the body");
    ok(s.recs[2].type == WA_REC_STATUS, "status record");
    ok(field_is(&s, 2, WA_F_STATUS, "failed")
       && field_is(&s, 2, WA_F_ERROR_CODE, "131050")
       && field_is(&s, 2, WA_F_ERROR_TITLE, "Stopped")
       && field_is(&s, 2, WA_F_ERROR_DETAIL, "user stopped"),
       "failed status keeps code, title, details");
    ok(field_is(&s, 2, WA_F_CALLBACK_DATA, "L-1"),
       "biz_opaque_callback_data kept");
    ok(field_is(&s, 3, WA_F_BODY, "Yes"), "button reply title is the body");
    ok(field_is(&s, 4, WA_F_BODY, "\xf0\x9f\x91\x8d"),
       "reaction emoji decoded from a surrogate pair");
    ok(s.recs[5].type == WA_REC_WEBHOOK_ERROR
       && field_is(&s, 5, WA_F_ERROR_CODE, "131000"), "value.errors[] record");

    /* text byte for byte: Hebrew, quotes, backslash, control characters */

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("106540352242922")
        "\"messages\":[{\"from\":\"1\",\"id\":\"h\",\"type\":\"text\","
        "\"text\":{\"body\":\"\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d \\\"q\\\" "
        "\\\\ \\u0001\\t\\n end\"}}]}"));
    ok(rc == WA_WH_OK && field_is(&s, 0, WA_F_BODY,
       "\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d \"q\" \\ \x01\t\n end"),
       "escapes decoded exactly");

    /* users known only by their business-scoped id */

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("106540352242922")
        "\"contacts\":[{\"profile\":{\"name\":\"U\"},\"user_id\":\"US.9\"}],"
        "\"messages\":[{\"from_user_id\":\"US.9\",\"id\":\"u1\","
        "\"type\":\"text\",\"text\":{\"body\":\"hi\"}}]}"));
    ok(rc == WA_WH_OK && field_is(&s, 0, WA_F_PHONE, NULL)
       && field_is(&s, 0, WA_F_WA_USER_ID, "US.9")
       && field_is(&s, 0, WA_F_NAME, "U"), "from_user_id without a phone");

    /* every field of the sender's entry travels, the other contacts not;
     * a message with no contacts[] (system) has no contact field */

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("106540352242922")
        "\"contacts\":[{\"profile\":{\"name\":\"O\"},\"wa_id\":\"2\"},"
        "{\"profile\":{\"name\":\"S\",\"username\":\"s.n\"},"
        "\"wa_id\":\"19\",\"user_id\":\"US.19\","
        "\"parent_user_id\":\"US.ENT.1\"}],"
        "\"messages\":[{\"from\":\"19\",\"id\":\"c1\",\"type\":\"text\","
        "\"text\":{\"body\":\"hi\"}},"
        "{\"from\":\"19\",\"id\":\"c2\",\"type\":\"system\","
        "\"system\":{\"body\":\"x\",\"wa_id\":\"20\","
        "\"type\":\"user_changed_number\"}}]}"));
    ok(rc == WA_WH_OK && field_is(&s, 0, WA_F_CONTACT,
       "{\"profile\":{\"name\":\"S\",\"username\":\"s.n\"},"
       "\"wa_id\":\"19\",\"user_id\":\"US.19\","
       "\"parent_user_id\":\"US.ENT.1\"}"),
       "contact: the sender's entry with all its fields");
    ok(s.n == 2 && field_is(&s, 1, WA_F_CONTACT,
       "{\"profile\":{\"name\":\"S\",\"username\":\"s.n\"},"
       "\"wa_id\":\"19\",\"user_id\":\"US.19\","
       "\"parent_user_id\":\"US.ENT.1\"}"),
       "contact: every message of the sender carries it");

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("106540352242922")
        "\"messages\":[{\"from\":\"19\",\"id\":\"c3\",\"type\":\"system\","
        "\"system\":{\"body\":\"x\",\"wa_id\":\"20\","
        "\"type\":\"user_changed_number\"}}]}"));
    ok(rc == WA_WH_OK && field_is(&s, 0, WA_F_CONTACT, NULL),
       "contact: none without contacts[]");

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("106540352242922")
        "\"contacts\":[{\"profile\":{\"name\":\"P\"},\"wa_id\":\"15\","
        "\"user_id\":\"US.15\"}],"
        "\"messages\":[{\"from\":\"15\",\"id\":\"u2\","
        "\"type\":\"text\",\"text\":{\"body\":\"hi\"}}]}"));
    ok(field_is(&s, 0, WA_F_PHONE, "15")
       && field_is(&s, 0, WA_F_WA_USER_ID, "US.15"),
       "contact's user_id joins the phone");

    /* any other change is one raw event: field, WABA, entry time, value */

    rc = parse(&s, &ctx,
        "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":"
        "\"1029\",\"time\":1739321024,\"changes\":[{\"field\":"
        "\"account_update\",\"value\":{\"phone_number\":\"15550783881\","
        "\"event\":\"VERIFIED_ACCOUNT\"}}]}]}");
    ok(rc == WA_WH_OK && s.n == 1 && s.recs[0].type == WA_REC_EVENT
       && ctx.events == 1 && ctx.unknown_channels == 0
       && field_is(&s, 0, WA_F_FIELD, "account_update")
       && field_is(&s, 0, WA_F_WABA_ID, "1029")
       && field_is(&s, 0, WA_F_TIMESTAMP, "1739321024")
       && field_is(&s, 0, WA_F_BUSINESS, "99")
       && field_is(&s, 0, WA_F_PHONE_NUMBER_ID, NULL)
       && field_is(&s, 0, WA_F_RECEIVED_MS, "1700000000000")
       && field_is(&s, 0, WA_F_PAYLOAD, "{\"phone_number\":\"15550783881\","
                   "\"event\":\"VERIFIED_ACCOUNT\"}"),
       "account update: one event, default business, the value raw");

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("106540352242922")
        "\"contacts\":[{\"wa_id\":\"16505551234\"}],"
        "\"user_preferences\":[{\"wa_id\":\"16505551234\","
        "\"category\":\"marketing_messages\",\"value\":\"stop\"}]}"));
    ok(rc == WA_WH_OK && s.n == 1 && s.recs[0].type == WA_REC_EVENT
       && field_is(&s, 0, WA_F_FIELD, "messages")
       && field_is(&s, 0, WA_F_BUSINESS, "7")
       && field_is(&s, 0, WA_F_PHONE_NUMBER_ID, "106540352242922")
       && field_is(&s, 0, WA_F_TIMESTAMP, NULL)
       && strstr(s.recs[0].f[WA_F_PAYLOAD], "\"stop\"") != NULL,
       "a value with metadata: the number's business, no entry time");

    rc = parse(&s, &ctx,
        "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":"
        "\"1029\",\"changes\":[{\"field\":\"calls\",\"value\":"
        VALUE_HEAD("555") "\"calls\":[{\"id\":\"wacid.1\"}]}},"
        "{\"value\":{}}]}]}");
    ok(rc == WA_WH_OK && s.n == 2 && ctx.events == 2
       && ctx.unknown_channels == 1
       && field_is(&s, 0, WA_F_FIELD, "calls")
       && field_is(&s, 0, WA_F_BUSINESS, "99")
       && field_is(&s, 0, WA_F_PHONE_NUMBER_ID, "555")
       && field_is(&s, 1, WA_F_FIELD, NULL)
       && field_is(&s, 1, WA_F_PAYLOAD, "{}"),
       "unknown number: default business; no field, empty value: kept too");

    /* calls and history: the whole value, whatever arrays it holds */

    rc = parse(&s, &ctx,
        "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":"
        "\"1029\",\"changes\":[{\"field\":\"calls\",\"value\":"
        VALUE_HEAD("106540352242922") "\"statuses\":[{\"id\":\"wacid.2\","
        "\"type\":\"call\",\"status\":\"RINGING\"}],"
        "\"errors\":[{\"code\":138006}]}},"
        "{\"field\":\"history\",\"value\":" VALUE_HEAD("106540352242922")
        "\"messages\":[{\"from\":\"16505551234\",\"id\":\"wamid.H1\","
        "\"type\":\"image\",\"image\":{\"id\":\"24\"}}]}}]}]}");
    ok(rc == WA_WH_OK && s.n == 2 && ctx.events == 2 && ctx.statuses == 0
       && ctx.messages == 0
       && s.recs[0].type == WA_REC_EVENT && s.recs[1].type == WA_REC_EVENT
       && field_is(&s, 0, WA_F_FIELD, "calls")
       && strstr(s.recs[0].f[WA_F_PAYLOAD], "\"RINGING\"") != NULL
       && strstr(s.recs[0].f[WA_F_PAYLOAD], "138006") != NULL
       && field_is(&s, 1, WA_F_FIELD, "history")
       && strstr(s.recs[1].f[WA_F_PAYLOAD], "wamid.H1") != NULL,
       "call statuses and errors, history messages: one raw event each");

    /* smb_message_echoes: outbound, the customer is "to" */

    rc = parse(&s, &ctx,
        "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":"
        "\"1029\",\"changes\":[{\"field\":\"smb_message_echoes\","
        "\"value\":" VALUE_HEAD("106540352242922")
        "\"message_echoes\":[{\"from\":\"15550783881\",\"to\":"
        "\"+16505551234\",\"id\":\"wamid.E1\",\"timestamp\":\"1700000001\","
        "\"type\":\"text\",\"text\":{\"body\":\"on my way\"}},"
        "{\"from\":\"15550783881\",\"to_user_id\":\"US.2\",\"id\":"
        "\"wamid.E2\",\"timestamp\":1700000002,\"type\":\"image\","
        "\"image\":{\"caption\":\"menu\"}}]}}]}]}");
    ok(rc == WA_WH_OK && s.n == 2 && ctx.echoes == 2 && ctx.messages == 0
       && s.recs[0].type == WA_REC_ECHO && s.recs[1].type == WA_REC_ECHO
       && field_is(&s, 0, WA_F_BUSINESS, "7")
       && field_is(&s, 0, WA_F_PHONE, "16505551234")
       && field_is(&s, 0, WA_F_WAMID, "wamid.E1")
       && field_is(&s, 0, WA_F_MSG_TYPE, "text")
       && field_is(&s, 0, WA_F_BODY, "on my way")
       && field_is(&s, 0, WA_F_TIMESTAMP, "1700000001")
       && strstr(s.recs[0].f[WA_F_PAYLOAD], "\"from\":\"15550783881\"")
       && field_is(&s, 1, WA_F_PHONE, NULL)
       && field_is(&s, 1, WA_F_WA_USER_ID, "US.2")
       && field_is(&s, 1, WA_F_BODY, "menu")
       && field_is(&s, 1, WA_F_TIMESTAMP, "1700000002"),
       "two echoes: the customer, wamid, type, body and time of each");

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("106540352242922")
        "\"message_echoes\":[{\"from\":\"1555\",\"to\":\"1650\","
        "\"id\":\"wamid.E3\",\"type\":\"text\"},"
        "{\"from\":\"1555\",\"id\":\"wamid.E4\",\"type\":\"text\"}]}"));
    ok(rc == WA_WH_INVALID && s.n == 0
       && strstr(ctx.error, "message_echoes[].to") != NULL,
       "an echo with no customer: 400, nothing recorded: %s", ctx.error);

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("106540352242922")
        "\"message_echoes\":{}}"));
    ok(rc == WA_WH_INVALID && s.n == 0, "message_echoes not an array: 400");

    /* errors carry the entry time: what tells a redelivery from a repeat */

    rc = parse(&s, &ctx,
        "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":"
        "\"1029\",\"time\":1739321099,\"changes\":[{\"field\":"
        "\"messages\",\"value\":" VALUE_HEAD("106540352242922")
        "\"errors\":[{\"code\":131000,\"title\":\"Something\"}]}}]}]}");
    ok(rc == WA_WH_OK && s.n == 1 && s.recs[0].type == WA_REC_WEBHOOK_ERROR
       && field_is(&s, 0, WA_F_TIMESTAMP, "1739321099")
       && field_is(&s, 0, WA_F_ERROR_CODE, "131000"),
       "a webhook error with its entry time");

    /* malformed bodies: 400, and nothing emitted even when part was fine */

    rc = parse(&s, &ctx, "not json");
    ok(rc == WA_WH_INVALID && s.n == 0, "not JSON");
    ok(strstr(ctx.error, "JSON") != NULL, "reason names JSON: %s", ctx.error);

    rc = parse(&s, &ctx, "[1,2]");
    ok(rc == WA_WH_INVALID && s.n == 0, "array root");

    rc = parse(&s, &ctx, "{\"object\":\"page\",\"entry\":[]}");
    ok(rc == WA_WH_INVALID && s.n == 0, "object is not a WABA");

    rc = parse(&s, &ctx, "{\"object\":\"whatsapp_business_account\"}");
    ok(rc == WA_WH_INVALID && strstr(ctx.error, "entry"), "entry missing");

    rc = parse(&s, &ctx, "{\"entry\":{}}");
    ok(rc == WA_WH_INVALID, "entry not an array");

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("106540352242922")
        "\"messages\":[{\"from\":\"1\",\"id\":\"ok\",\"type\":\"text\"},"
        "{\"from\":\"1\",\"type\":\"text\"}]}"));
    ok(rc == WA_WH_INVALID && s.n == 0,
       "second message without id: nothing from the first either");
    ok(strstr(ctx.error, "messages[].id") != NULL, "reason names the field");

    rc = parse(&s, &ctx, BODY("{\"messages\":[{\"from\":\"1\",\"id\":\"x\","
                              "\"type\":\"text\"}]}"));
    ok(rc == WA_WH_INVALID && strstr(ctx.error, "phone_number_id"),
       "metadata missing");

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("1") "\"messages\":{}}"));
    ok(rc == WA_WH_INVALID, "messages not an array");

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("1") "\"messages\":[{\"id\":\"x\","
                              "\"type\":\"text\"}]}"));
    ok(rc == WA_WH_INVALID, "message without from or from_user_id");

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("1") "\"statuses\":[{\"id\":7,"
                              "\"status\":\"read\"}]}"));
    ok(rc == WA_WH_INVALID, "status id of the wrong type");

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("1") "\"messages\":[]}") "trailing");
    ok(rc == WA_WH_INVALID, "trailing garbage after the JSON");

    /* what PostgreSQL cannot store is refused before anything is emitted */

    rc = TEXT("plain");
    ok(rc == WA_WH_OK && field_is(&s, 0, WA_F_BODY, "plain"),
       "the raw-text body builder makes a valid body");

    rc = TEXT("\xd7\xa9 \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbf "
              "\xf4\x8f\xbf\xbf \xed\x9f\xbf \xee\x80\x80");
    ok(rc == WA_WH_OK && field_is(&s, 0, WA_F_BODY,
       "\xd7\xa9 \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbf "
       "\xf4\x8f\xbf\xbf \xed\x9f\xbf \xee\x80\x80"),
       "UTF-8 of 2, 3 and 4 bytes, up to U+10FFFF and around the "
       "surrogates: kept");

    rc = TEXT("a\x80");
    ok(rc == WA_WH_INVALID && s.n == 0, "lone continuation byte");
    ok(strstr(ctx.error, "UTF-8") != NULL, "reason names UTF-8: %s",
       ctx.error);
    ok(TEXT("\xff") == WA_WH_INVALID, "byte 0xff");
    ok(TEXT("\xc1\xbf") == WA_WH_INVALID, "overlong 2 bytes (0xc1)");
    ok(TEXT("\xe0\x9f\xbf") == WA_WH_INVALID, "overlong 3 bytes");
    ok(TEXT("\xf0\x8f\xbf\xbf") == WA_WH_INVALID, "overlong 4 bytes");
    ok(TEXT("\xed\xa0\x80") == WA_WH_INVALID, "UTF-16 high surrogate");
    ok(TEXT("\xed\xbf\xbf") == WA_WH_INVALID, "UTF-16 low surrogate");
    ok(TEXT("\xf4\x90\x80\x80") == WA_WH_INVALID, "over U+10FFFF");
    ok(TEXT("\xf5\x80\x80\x80") == WA_WH_INVALID, "lead byte 0xf5");
    ok(TEXT("\xe2\x82") == WA_WH_INVALID, "sequence cut by the quote");
    ok(TEXT("\xe2\x28\xa1") == WA_WH_INVALID, "ASCII inside a sequence");

    rc = parse_len(&s, &ctx, "{\"a\":\"\xe2\x82", 8);
    ok(rc == WA_WH_INVALID && strstr(ctx.error, "UTF-8"),
       "sequence cut by the end of the body");

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("106540352242922")
        "\"messages\":[{\"from\":\"1\",\"id\":\"k\",\"type\":\"text\","
        "\"t\xffxt\":{\"body\":\"x\"}}]}"));
    ok(rc == WA_WH_INVALID && s.n == 0, "invalid UTF-8 in a key");

    rc = TEXT("ab\0cd");
    ok(rc == WA_WH_INVALID && s.n == 0, "raw NUL in a string");
    ok(strstr(ctx.error, "control character") != NULL, "reason: %s",
       ctx.error);

    rc = parse_len(&s, &ctx, text_body, sizeof(text_body));
    ok(rc == WA_WH_INVALID && s.n == 0, "raw NUL after the body");

    ok(TEXT("ab\\u0000cd") == WA_WH_INVALID && s.n == 0,
       "\\u0000 in a string");
    ok(strstr(ctx.error, "u0000") != NULL, "reason: %s", ctx.error);

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("106540352242922")
        "\"messages\":[{\"from\":\"1\",\"id\":\"k\",\"type\":\"text\","
        "\"text\":{\"bo\\u0000dy\":\"x\"}}]}"));
    ok(rc == WA_WH_INVALID && s.n == 0, "\\u0000 in a key");

    rc = TEXT("C:\\\\u0000 \\\\\\\\u0000 \\\"\\u0000");
    ok(rc == WA_WH_INVALID, "\\u0000 after an escaped quote");

    rc = TEXT("C:\\\\u0000 \\\\\\\\u0000 \\u00001 \\u0001");
    ok(rc == WA_WH_INVALID, "\\u0000 followed by a digit");

    rc = TEXT("C:\\\\u0000 \\\\\\\\u0000 \\\"u0000\\\" \\u0001");
    ok(rc == WA_WH_OK && field_is(&s, 0, WA_F_BODY,
       "C:\\u0000 \\\\u0000 \"u0000\" \x01"),
       "escaped backslashes before u0000 are text, \\u0001 is fine");

    ok(TEXT("tab\there") == WA_WH_INVALID, "raw tab in a string");
    ok(TEXT("nl\nhere") == WA_WH_INVALID, "raw newline in a string");
    ok(TEXT("\x1f") == WA_WH_INVALID, "raw 0x1f in a string");

    rc = parse(&s, &ctx, "\r\n\t " BODY(VALUE_HEAD("106540352242922")
        "\"messages\":[]}") "\r\n");
    ok(rc == WA_WH_OK, "CR, LF, tab and space around tokens are fine");

    rc = parse(&s, &ctx, "{\"object\":\x0b\"whatsapp_business_account\","
                         "\"entry\":[]}");
    ok(rc == WA_WH_INVALID, "vertical tab between tokens");

    ok(TEXT("\\ud800") == WA_WH_INVALID, "lone high surrogate escape");
    ok(TEXT("\\udc00") == WA_WH_INVALID, "lone low surrogate escape");

    /* duplicate keys: which one was meant is a guess */

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("106540352242922")
        "\"messages\":[{\"from\":\"1\",\"id\":\"d1\",\"id\":\"d2\","
        "\"type\":\"text\"}]}"));
    ok(rc == WA_WH_INVALID && s.n == 0, "message id twice");
    ok(strstr(ctx.error, "duplicate key \"id\"") != NULL, "reason: %s",
       ctx.error);

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("106540352242922")
        "\"messages\":[{\"from\":\"1\",\"id\":\"d1\",\"type\":\"text\"}],"
        "\"messages\":[{\"from\":\"1\",\"id\":\"d2\",\"type\":\"text\"}]}"));
    ok(rc == WA_WH_INVALID && s.n == 0, "messages[] twice");

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("106540352242922")
        "\"messages\":[{\"from\":\"1\",\"id\":\"d1\",\"type\":\"x\","
        "\"x\":{\"a\":[{\"b\":1,\"b\":2}]}}]}"));
    ok(rc == WA_WH_INVALID && s.n == 0, "a key twice deep in a message");

    rc = parse(&s, &ctx, BODY(VALUE_HEAD("106540352242922")
        "\"messages\":[{\"from\":\"1\",\"id\":\"d1\",\"ID\":\"d2\","
        "\"type\":\"text\"}]}"));
    ok(rc == WA_WH_OK && s.n == 1, "keys that differ in case are distinct");

    {
        int    i;
        char  *big, *p;

        /* 20 keys take the sorted path */
        big = malloc(4096);
        p = big + sprintf(big, "{\"object\":\"whatsapp_business_account\","
                               "\"entry\":[]");
        for (i = 0; i < 20; i++) {
            p += sprintf(p, ",\"k%02d\":%d", i, i);
        }
        strcpy(p, "}");

        rc = parse(&s, &ctx, big);
        ok(rc == WA_WH_OK, "20 distinct keys");

        strcpy(p, ",\"k07\":0}");
        rc = parse(&s, &ctx, big);
        ok(rc == WA_WH_INVALID && strstr(ctx.error, "\"k07\""),
           "21 keys, one twice: %s", ctx.error);

        free(big);
    }

    rc = parse(&s, &ctx, "{\"a\\n\x7f\xc3\xa9\":1,\"a\\n\x7f\xc3\xa9\":2}");
    ok(rc == WA_WH_INVALID && strstr(ctx.error, "\"a????\"") != NULL,
       "the reason shows only printable ASCII: %s", ctx.error);

    /* the ring refuses midway: the parser stops and says so */

    sink_reset(&s);
    s.fail_at = 1;
    memset(&ctx, 0, sizeof(wa_webhook_ctx_t));
    ctx.business = business;
    ctx.emit = emit;
    ctx.data = &s;
    ctx.default_business = "99";
    rc = wa_webhook_parse(text_body, strlen(text_body), &ctx);
    ok(rc == WA_WH_OK, "first record fits");
    sink_reset(&s);
    s.fail_at = 0;
    rc = wa_webhook_parse(text_body, strlen(text_body), &ctx);
    ok(rc == WA_WH_EMIT_FAILED, "emit failure is reported");

    /* a length that cuts the body is parsed as what it is */

    rc = parse(&s, &ctx, text_body);
    rc = wa_webhook_parse(text_body, strlen(text_body) - 3, &ctx);
    ok(rc == WA_WH_INVALID, "truncated body is invalid");

    sink_reset(&s);

    return done();
}
