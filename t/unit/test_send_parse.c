/*
 * Unit tests of wa_send_parse: every message type accepted in Meta's shape,
 * its object forwarded byte for byte inside our envelope, a readable body
 * for the row; every documented limit refused with the field's JSON path.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tap.h"
#include "wa_send_parse.h"


#define TO   "\"to\":\"972501234567\","
#define ENV  "{\"messaging_product\":\"whatsapp\",\"recipient_type\":" \
             "\"individual\",\"to\":\"972501234567\"," \
             "\"biz_opaque_callback_data\":\"wa-1\","


typedef struct {
    const char  *name;
    const char  *request;
    const char  *type;
    const char  *summary;
    const char  *body;           /* the whole provider body */
} good_t;


static const good_t  good[] = {

    /* a business-scoped user id, alone or with a phone: forwarded as
     * given, Meta lets "to" win */
    { "recipient alone",
      "{\"recipient\":\"US.13491208655302741918\",\"text\":\"Hi\"}",
      "text", "Hi",
      "{\"messaging_product\":\"whatsapp\",\"recipient_type\":"
      "\"individual\",\"recipient\":\"US.13491208655302741918\","
      "\"biz_opaque_callback_data\":\"wa-1\",\"type\":\"text\","
      "\"text\":{\"body\":\"Hi\"}}" },

    { "recipient, a parent id, with to",
      "{" TO "\"recipient\":\"US.ENT.11815799212886844830\","
      "\"text\":\"Hi\"}", "text", "Hi",
      "{\"messaging_product\":\"whatsapp\",\"recipient_type\":"
      "\"individual\",\"to\":\"972501234567\",\"recipient\":"
      "\"US.ENT.11815799212886844830\",\"biz_opaque_callback_data\":"
      "\"wa-1\",\"type\":\"text\",\"text\":{\"body\":\"Hi\"}}" },

    { "text shorthand", "{" TO "\"text\":\"Hello\"}", "text", "Hello",
      ENV "\"type\":\"text\",\"text\":{\"body\":\"Hello\"}}" },

    { "text shorthand with type", "{" TO "\"type\":\"text\",\"text\":\"Hi\"}",
      "text", "Hi", ENV "\"type\":\"text\",\"text\":{\"body\":\"Hi\"}}" },

    { "text object, preview_url, spacing and escapes kept",
      "{" TO "\"type\":\"text\",\"text\": { \"preview_url\" : true,"
      "\n \"body\":\"caf\\u00e9 https://x.example\" } }",
      "text", "caf\xc3\xa9 https://x.example",
      ENV "\"type\":\"text\",\"text\":{ \"preview_url\" : true,\n \"body\":"
      "\"caf\\u00e9 https://x.example\" }}" },

    { "text object without type",
      "{" TO "\"text\":{\"body\":\"obj\"}}", "text", "obj",
      ENV "\"type\":\"text\",\"text\":{\"body\":\"obj\"}}" },

    { "template, as sent",
      "{" TO "\"template\":{\"name\":\"hello_world\",\"language\":"
      "{\"code\":\"en_US\"},\"components\":[{\"type\":\"body\","
      "\"parameters\":[{\"type\":\"text\",\"text\":\"x\"}]}]}}",
      "template", "hello_world",
      ENV "\"type\":\"template\",\"template\":{\"name\":\"hello_world\","
      "\"language\":{\"code\":\"en_US\"},\"components\":[{\"type\":\"body\","
      "\"parameters\":[{\"type\":\"text\",\"text\":\"x\"}]}]}}" },

    { "image by id with caption",
      "{" TO "\"type\":\"image\",\"image\":{\"id\":\"1234\","
      "\"caption\":\"A cat\"}}", "image", "A cat",
      ENV "\"type\":\"image\",\"image\":{\"id\":\"1234\","
      "\"caption\":\"A cat\"}}" },

    { "image by link, no caption",
      "{" TO "\"type\":\"image\",\"image\":{\"link\":\"https://x.example/a.jpg\"}}",
      "image", "[image]",
      ENV "\"type\":\"image\",\"image\":{\"link\":\"https://x.example/a.jpg\"}}" },

    { "video by link with caption",
      "{" TO "\"type\":\"video\",\"video\":{\"link\":\"http://x.example/v.mp4\","
      "\"caption\":\"clip\"}}", "video", "clip",
      ENV "\"type\":\"video\",\"video\":{\"link\":\"http://x.example/v.mp4\","
      "\"caption\":\"clip\"}}" },

    { "audio by id",
      "{" TO "\"type\":\"audio\",\"audio\":{\"id\":\"99\"}}", "audio",
      "[audio]", ENV "\"type\":\"audio\",\"audio\":{\"id\":\"99\"}}" },

    { "document with filename",
      "{" TO "\"type\":\"document\",\"document\":{\"id\":\"7\","
      "\"filename\":\"invoice.pdf\"}}", "document", "invoice.pdf",
      ENV "\"type\":\"document\",\"document\":{\"id\":\"7\","
      "\"filename\":\"invoice.pdf\"}}" },

    { "document with caption and filename: the caption",
      "{" TO "\"type\":\"document\",\"document\":{\"link\":"
      "\"https://x.example/d.pdf\",\"caption\":\"Your invoice\","
      "\"filename\":\"i.pdf\"}}", "document", "Your invoice",
      ENV "\"type\":\"document\",\"document\":{\"link\":"
      "\"https://x.example/d.pdf\",\"caption\":\"Your invoice\","
      "\"filename\":\"i.pdf\"}}" },

    { "sticker by id",
      "{" TO "\"type\":\"sticker\",\"sticker\":{\"id\":\"55\"}}", "sticker",
      "[sticker]", ENV "\"type\":\"sticker\",\"sticker\":{\"id\":\"55\"}}" },

    { "interactive button",
      "{" TO "\"type\":\"interactive\",\"interactive\":{\"type\":\"button\","
      "\"header\":{\"type\":\"text\",\"text\":\"Order 7\"},"
      "\"body\":{\"text\":\"Confirm?\"},\"footer\":{\"text\":\"Shop\"},"
      "\"action\":{\"buttons\":[{\"type\":\"reply\",\"reply\":{\"id\":\"y\","
      "\"title\":\"Yes\"}},{\"type\":\"reply\",\"reply\":{\"id\":\"n\","
      "\"title\":\"No\"}}]}}}",
      "interactive", "Confirm?\n[Yes] [No]",
      ENV "\"type\":\"interactive\",\"interactive\":{\"type\":\"button\","
      "\"header\":{\"type\":\"text\",\"text\":\"Order 7\"},"
      "\"body\":{\"text\":\"Confirm?\"},\"footer\":{\"text\":\"Shop\"},"
      "\"action\":{\"buttons\":[{\"type\":\"reply\",\"reply\":{\"id\":\"y\","
      "\"title\":\"Yes\"}},{\"type\":\"reply\",\"reply\":{\"id\":\"n\","
      "\"title\":\"No\"}}]}}}" },

    { "interactive button, image header",
      "{" TO "\"type\":\"interactive\",\"interactive\":{\"type\":\"button\","
      "\"header\":{\"type\":\"image\",\"image\":{\"link\":"
      "\"https://x.example/h.png\"}},\"body\":{\"text\":\"B\"},"
      "\"action\":{\"buttons\":[{\"type\":\"reply\",\"reply\":{\"id\":\"1\","
      "\"title\":\"One\"}}]}}}",
      "interactive", "B\n[One]", NULL },

    { "interactive list",
      "{" TO "\"type\":\"interactive\",\"interactive\":{\"type\":\"list\","
      "\"body\":{\"text\":\"Pick\"},\"action\":{\"button\":\"Options\","
      "\"sections\":[{\"title\":\"A\",\"rows\":[{\"id\":\"a1\",\"title\":"
      "\"First\",\"description\":\"d\"}]},{\"title\":\"B\",\"rows\":[{\"id\":"
      "\"b1\",\"title\":\"Second\"}]}]}}}",
      "interactive", "Pick\n[Options] First | Second", NULL },

    { "interactive cta_url",
      "{" TO "\"type\":\"interactive\",\"interactive\":{\"type\":\"cta_url\","
      "\"body\":{\"text\":\"See\"},\"action\":{\"name\":\"cta_url\","
      "\"parameters\":{\"display_text\":\"Open\",\"url\":"
      "\"https://x.example/o\"}}}}",
      "interactive", "See\n[Open] https://x.example/o", NULL },

    { "interactive flow",
      "{" TO "\"type\":\"interactive\",\"interactive\":{\"type\":\"flow\","
      "\"body\":{\"text\":\"Sign up\"},\"action\":{\"name\":\"flow\","
      "\"parameters\":{\"flow_message_version\":\"3\",\"flow_id\":\"123\","
      "\"flow_cta\":\"Start\",\"flow_action\":\"navigate\","
      "\"flow_action_payload\":{\"screen\":\"S1\"}}}}}",
      "interactive", "Sign up\n[Start]", NULL },

    { "interactive location_request_message",
      "{" TO "\"type\":\"interactive\",\"interactive\":{\"type\":"
      "\"location_request_message\",\"body\":{\"text\":\"Where?\"},"
      "\"action\":{\"name\":\"send_location\"}}}",
      "interactive", "Where?", NULL },

    { "interactive catalog_message",
      "{" TO "\"type\":\"interactive\",\"interactive\":{\"type\":"
      "\"catalog_message\",\"body\":{\"text\":\"Shop\"},\"action\":{"
      "\"name\":\"catalog_message\",\"parameters\":{"
      "\"thumbnail_product_retailer_id\":\"sku1\"}}}}",
      "interactive", "Shop", NULL },

    { "interactive product, no body",
      "{" TO "\"type\":\"interactive\",\"interactive\":{\"type\":\"product\","
      "\"action\":{\"catalog_id\":\"c1\",\"product_retailer_id\":\"sku1\"}}}",
      "interactive", "[interactive]", NULL },

    { "interactive product_list",
      "{" TO "\"type\":\"interactive\",\"interactive\":{\"type\":"
      "\"product_list\",\"header\":{\"type\":\"text\",\"text\":\"Menu\"},"
      "\"body\":{\"text\":\"Ours\"},\"action\":{\"catalog_id\":\"c1\","
      "\"sections\":[{\"title\":\"Hot\",\"product_items\":[{"
      "\"product_retailer_id\":\"s1\"},{\"product_retailer_id\":\"s2\"}]}]}}}",
      "interactive", "Ours", NULL },

    { "location with name and address",
      "{" TO "\"type\":\"location\",\"location\":{\"latitude\":32.0853,"
      "\"longitude\":34.781768,\"name\":\"Office\",\"address\":"
      "\"1 Main St\"}}", "location", "Office, 1 Main St",
      ENV "\"type\":\"location\",\"location\":{\"latitude\":32.0853,"
      "\"longitude\":34.781768,\"name\":\"Office\",\"address\":"
      "\"1 Main St\"}}" },

    { "location, coordinates as strings, no name",
      "{" TO "\"type\":\"location\",\"location\":{\"latitude\":\"-33.5\","
      "\"longitude\":\"151.25\"}}", "location", "-33.500000, 151.250000",
      NULL },

    { "contacts",
      "{" TO "\"type\":\"contacts\",\"contacts\":[{\"name\":{"
      "\"formatted_name\":\"Ann Lee\",\"first_name\":\"Ann\"},\"phones\":[{"
      "\"phone\":\"+1 555\",\"type\":\"WORK\"}]},{\"name\":{"
      "\"formatted_name\":\"Bo\"}}]}", "contacts", "Ann Lee, Bo",
      ENV "\"type\":\"contacts\",\"contacts\":[{\"name\":{"
      "\"formatted_name\":\"Ann Lee\",\"first_name\":\"Ann\"},\"phones\":[{"
      "\"phone\":\"+1 555\",\"type\":\"WORK\"}]},{\"name\":{"
      "\"formatted_name\":\"Bo\"}}]}" },

    { "reaction",
      "{" TO "\"type\":\"reaction\",\"reaction\":{\"message_id\":"
      "\"wamid.A\",\"emoji\":\"\\uD83D\\uDE00\"}}", "reaction",
      "\xf0\x9f\x98\x80",
      ENV "\"type\":\"reaction\",\"reaction\":{\"message_id\":"
      "\"wamid.A\",\"emoji\":\"\\uD83D\\uDE00\"}}" },

    { "reaction, a family (ZWJ) and a skin tone",
      "{" TO "\"type\":\"reaction\",\"reaction\":{\"message_id\":\"wamid.A\","
      "\"emoji\":\"\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\"}}",
      "reaction", "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9", NULL },

    { "reaction, a flag",
      "{" TO "\"type\":\"reaction\",\"reaction\":{\"message_id\":\"wamid.A\","
      "\"emoji\":\"\xf0\x9f\x87\xae\xf0\x9f\x87\xb1\"}}",
      "reaction", "\xf0\x9f\x87\xae\xf0\x9f\x87\xb1", NULL },

    { "reaction, a thumbs up with a skin tone",
      "{" TO "\"type\":\"reaction\",\"reaction\":{\"message_id\":\"wamid.A\","
      "\"emoji\":\"\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd\"}}",
      "reaction", "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", NULL },

    { "reaction removed",
      "{" TO "\"type\":\"reaction\",\"reaction\":{\"message_id\":"
      "\"wamid.A\",\"emoji\":\"\"}}", "reaction", "reaction removed", NULL },

    { "a reply: context forwarded as sent",
      "{" TO "\"type\":\"image\",\"context\": {\"message_id\": \"wamid.Q\"},"
      "\"image\":{\"id\":\"1\"}}", "image", "[image]",
      ENV "\"type\":\"image\",\"image\":{\"id\":\"1\"},"
      "\"context\":{\"message_id\": \"wamid.Q\"}}" },

    { "a reply to the shorthand",
      "{" TO "\"text\":\"re\",\"context\":{\"message_id\":\"wamid.Q\"}}",
      "text", "re",
      ENV "\"type\":\"text\",\"text\":{\"body\":\"re\"},"
      "\"context\":{\"message_id\":\"wamid.Q\"}}" },

    { "an escaped key still names the member",
      "{" TO "\"type\":\"image\",\"\\u0069mage\":{\"id\":\"1\"}}", "image",
      "[image]", ENV "\"type\":\"image\",\"image\":{\"id\":\"1\"}}" },

    { "4096 characters of text (multi-byte)", NULL, "text", NULL, NULL },
};


typedef struct {
    const char  *request;        /* "{" TO ... */
    const char  *error;          /* the error's start */
} bad_t;


#define IA(x)  "{" TO "\"type\":\"interactive\",\"interactive\":" x "}"
#define BTN(id, t)  "{\"type\":\"reply\",\"reply\":{\"id\":\"" id \
                    "\",\"title\":\"" t "\"}}"
#define ROW(id)  "{\"id\":\"" id "\",\"title\":\"t\"}"
#define S21  "123456789012345678901"
#define S25  "1234567890123456789012345"
#define S61  "1234567890123456789012345678901234567890123456789012345678901"
#define S73  S61 "123456789012"

static const bad_t  bad[] = {
    /* the recipient */
    { "{\"text\":\"x\"}", "to: a phone number string is required (or" },
    { "{\"recipient\":\"us.1\",\"text\":\"x\"}", "recipient: a business" },
    { "{\"recipient\":\"US.\",\"text\":\"x\"}", "recipient: a business" },
    { "{\"recipient\":\"US.1.\",\"text\":\"x\"}", "recipient: a business" },
    { "{\"recipient\":\"US.1 2\",\"text\":\"x\"}", "recipient: a business" },
    { "{\"recipient\":1,\"text\":\"x\"}", "recipient: a business" },
    { "{\"recipient\":\"US.1\",\"to\":\"\",\"text\":\"x\"}",
      "to: not a phone number" },

    /* mark-as-read */
    { "{\"status\":\"sent\",\"message_id\":\"wamid.1\"}", "status: \"read\"" },
    { "{\"status\":\"read\"}", "message_id: the wamid" },
    { "{\"status\":\"read\",\"message_id\":7}", "message_id: the wamid" },
    { "{\"status\":\"read\",\"message_id\":\"w\",\"typing_indicator\":"
      "{\"type\":\"text\",\"x\":1}}", "typing_indicator: {" },
    { "{\"status\":\"read\",\"message_id\":\"w\",\"typing_indicator\":"
      "{\"type\":\"audio\"}}", "typing_indicator: {" },
    { "{\"status\":\"read\",\"message_id\":\"w\"," TO "\"x\":1}",
      "to: not allowed with \"status\": \"read\"" },
    { "{\"status\":\"read\",\"message_id\":\"w\",\"client_ref\":\"a\"}",
      "client_ref: not allowed" },
    { "{\"status\":\"read\",\"message_id\":\"w\",\"messaging_product\":"
      "\"x\"}", "messaging_product: \"whatsapp\"" },
    /* the message itself */
    { "{" TO "\"type\":\"gif\",\"gif\":{}}", "type: one of" },
    { "{" TO "\"type\":7,\"text\":\"x\"}", "type: one of" },
    { "{" TO "\"type\":\"image\"}", "image: required with" },
    { "{" TO "\"type\":\"image\",\"image\":{\"id\":\"1\"},\"text\":\"x\"}",
      "text: not allowed with" },
    { "{" TO "\"image\":{\"id\":\"1\"}}", "type: required with \"image\"" },
    { "{" TO "\"text\":\"x\",\"template\":{\"name\":\"a\"}}",
      "text, template: exactly one" },
    { "{" TO "\"source\":\"bot\"}", "text, template: exactly one" },
    { "{" TO "\"type\":\"image\",\"image\":\"x\"}", "image: an object" },
    { "{" TO "\"type\":\"contacts\",\"contacts\":{}}", "contacts: an array" },
    { "{" TO "\"to\":\"972501234568\",\"text\":\"x\"}", "to: given twice" },
    { "{" TO "\"type\":\"image\",\"image\":{\"id\":\"1\",\"id\":\"2\"}}",
      "image.id: given twice" },
    { IA("{\"type\":\"button\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"buttons\":[" BTN("a", "A") "," "{\"type\":\"reply\",\"reply\":{"
         "\"id\":\"b\",\"title\":\"B\",\"title\":\"" S21 "\"}}]}}"),
      "interactive.action.buttons[1].reply.title: given twice" },
    { "{" TO "\"type\":\"image\",\"image\":{\"id\":\"1\",\"caption\":\"a\001\"}}",
      "image: control characters" },

    /* text */
    { "{" TO "\"text\":\"\"}", "text: a non-empty string" },
    { "{" TO "\"text\":5}", "text: a non-empty string" },
    { "{" TO "\"type\":\"text\",\"text\":{}}", "text.body: required" },
    { "{" TO "\"type\":\"text\",\"text\":{\"body\":\"\"}}",
      "text.body: must not be empty" },
    { "{" TO "\"type\":\"text\",\"text\":{\"body\":\"x\",\"preview_url\":1}}",
      "text.preview_url:" },

    /* template */
    { "{" TO "\"template\":{\"x\":1}}", "template: an object with a \"name\"" },
    { "{" TO "\"template\":{\"name\":\"a\",\"language\":\"en\"}}",
      "template.language: an object" },
    { "{" TO "\"template\":{\"name\":\"a\",\"language\":{}}}",
      "template.language.code: required" },

    /* media */
    { "{" TO "\"type\":\"image\",\"image\":{}}", "image: exactly one of" },
    { "{" TO "\"type\":\"image\",\"image\":{\"id\":\"1\",\"link\":"
      "\"https://x.example/a\"}}", "image: exactly one of" },
    { "{" TO "\"type\":\"video\",\"video\":{\"link\":\"ftp://x.example/a\"}}",
      "video.link: an http or https URL" },
    { "{" TO "\"type\":\"video\",\"video\":{\"id\":\"\"}}",
      "video.id: must not be empty" },
    { "{" TO "\"type\":\"audio\",\"audio\":{\"id\":\"1\",\"caption\":\"c\"}}",
      "audio.caption: not allowed" },
    { "{" TO "\"type\":\"sticker\",\"sticker\":{\"id\":\"1\",\"caption\":\"c\"}}",
      "sticker.caption: not allowed" },
    { "{" TO "\"type\":\"image\",\"image\":{\"id\":\"1\",\"filename\":\"f\"}}",
      "image.filename: only a document" },
    { "{" TO "\"type\":\"image\",\"image\":{\"id\":\"1\",\"caption\":7}}",
      "image.caption: a string" },
    { NULL, "image.caption: longer than 1024" },
    { NULL, "document.filename: longer than 255" },

    /* interactive */
    { IA("{\"type\":\"poll\"}"), "interactive.type: one of" },
    { IA("{\"type\":\"button\",\"action\":{}}"),
      "interactive.body: an object" },
    { IA("{\"type\":\"button\",\"body\":{\"text\":\"\"},\"action\":{}}"),
      "interactive.body.text: must not be empty" },
    { NULL, "interactive.body.text: longer than 1024" },
    { IA("{\"type\":\"button\",\"body\":{\"text\":\"b\"}}"),
      "interactive.action: an object is required" },
    { IA("{\"type\":\"button\",\"body\":{\"text\":\"b\"},\"footer\":{"
         "\"text\":\"" S61 "\"},\"action\":{}}"),
      "interactive.footer.text: longer than 60" },
    { IA("{\"type\":\"button\",\"header\":{\"type\":\"text\",\"text\":\"" S61
         "\"},\"body\":{\"text\":\"b\"},\"action\":{}}"),
      "interactive.header.text: longer than 60" },
    { IA("{\"type\":\"button\",\"header\":{\"type\":\"gif\"},"
         "\"body\":{\"text\":\"b\"},\"action\":{}}"),
      "interactive.header.type: one of" },
    { IA("{\"type\":\"list\",\"header\":{\"type\":\"image\",\"image\":{"
         "\"id\":\"1\"}},\"body\":{\"text\":\"b\"},\"action\":{}}"),
      "interactive.header.type: only text" },
    { IA("{\"type\":\"button\",\"header\":{\"type\":\"image\",\"image\":{}},"
         "\"body\":{\"text\":\"b\"},\"action\":{}}"),
      "interactive.header.image: exactly one of" },
    { IA("{\"type\":\"location_request_message\",\"header\":{\"type\":"
         "\"text\",\"text\":\"h\"},\"body\":{\"text\":\"b\"},\"action\":{"
         "\"name\":\"send_location\"}}"),
      "interactive.header: not allowed" },
    { IA("{\"type\":\"button\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"buttons\":[]}}"), "interactive.action.buttons: 1 to 3" },
    { IA("{\"type\":\"button\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"buttons\":[" BTN("a", "A") "," BTN("b", "B") "," BTN("c", "C") ","
         BTN("d", "D") "]}}"), "interactive.action.buttons[3]: at most 3" },
    { IA("{\"type\":\"button\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"buttons\":[" BTN("a", S21) "]}}"),
      "interactive.action.buttons[0].reply.title: longer than 20" },
    { IA("{\"type\":\"button\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"buttons\":[" BTN("a", "A") "," BTN("a", "B") "]}}"),
      "interactive.action.buttons[1].reply.id: the same" },
    { IA("{\"type\":\"button\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"buttons\":[" BTN("a", "A") "," BTN("b", "A") "]}}"),
      "interactive.action.buttons[1].reply.title: the same" },
    { IA("{\"type\":\"button\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"buttons\":[{\"type\":\"url\"}]}}"),
      "interactive.action.buttons[0].type: \"reply\"" },
    { NULL, "interactive.action.buttons[0].reply.id: longer than 256" },
    { IA("{\"type\":\"list\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"button\":\"" S21 "\",\"sections\":[]}}"),
      "interactive.action.button: longer than 20" },
    { IA("{\"type\":\"list\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"button\":\"B\",\"sections\":[]}}"),
      "interactive.action.sections: 1 to 10" },
    { NULL, "interactive.action.sections[10]: at most 10" },
    { IA("{\"type\":\"list\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"button\":\"B\",\"sections\":[{\"title\":\"s\",\"rows\":[" ROW("1")
         "," ROW("2") "," ROW("3") "," ROW("4") "," ROW("5") "," ROW("6") ","
         ROW("7") "," ROW("8") "]},{\"title\":\"t\",\"rows\":[" ROW("9") ","
         ROW("10") "," ROW("11") "]}]}}"),
      "interactive.action.sections[1].rows[2]: at most 10 rows" },
    { IA("{\"type\":\"list\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"button\":\"B\",\"sections\":[{\"rows\":[" ROW("1") "]},{\"rows\":["
         ROW("2") "]}]}}"), "interactive.action.sections[0].title: required" },
    { IA("{\"type\":\"list\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"button\":\"B\",\"sections\":[{\"title\":\"" S25 "\",\"rows\":["
         ROW("1") "]}]}}"),
      "interactive.action.sections[0].title: longer than 24" },
    { IA("{\"type\":\"list\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"button\":\"B\",\"sections\":[{\"rows\":[]}]}}"),
      "interactive.action.sections[0].rows: at least one" },
    { IA("{\"type\":\"list\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"button\":\"B\",\"sections\":[{\"rows\":[{\"id\":\"1\",\"title\":\""
         S25 "\"}]}]}}"),
      "interactive.action.sections[0].rows[0].title: longer than 24" },
    { IA("{\"type\":\"list\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"button\":\"B\",\"sections\":[{\"rows\":[{\"id\":\"1\",\"title\":"
         "\"t\",\"description\":\"" S73 "\"}]}]}}"),
      "interactive.action.sections[0].rows[0].description: longer than 72" },
    { IA("{\"type\":\"list\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"button\":\"B\",\"sections\":[{\"rows\":[" ROW("1") "," ROW("1")
         "]}]}}"), "interactive.action.sections[0].rows[1].id: used by" },
    { NULL, "interactive.action.sections[0].rows[0].id: longer than 200" },
    { NULL, "interactive.body.text: longer than 4096" },
    { IA("{\"type\":\"cta_url\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"name\":\"cta_url\",\"parameters\":{\"display_text\":\"" S21 "\","
         "\"url\":\"https://x.example\"}}}"),
      "interactive.action.parameters.display_text: longer than 20" },
    { IA("{\"type\":\"cta_url\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"name\":\"cta_url\",\"parameters\":{\"display_text\":\"Go\"}}}"),
      "interactive.action.parameters.url: required" },
    { IA("{\"type\":\"cta_url\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"name\":\"cta_url\",\"parameters\":{\"display_text\":\"Go\","
         "\"url\":\"javascript:x\"}}}"),
      "interactive.action.parameters.url: an http" },
    { IA("{\"type\":\"cta_url\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"name\":\"go\"}}"), "interactive.action.name: \"cta_url\"" },
    { IA("{\"type\":\"flow\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"name\":\"flow\",\"parameters\":{\"flow_message_version\":\"3\","
         "\"flow_cta\":\"" S21 "\",\"flow_id\":\"1\"}}}"),
      "interactive.action.parameters.flow_cta: longer than 20" },
    { IA("{\"type\":\"flow\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"name\":\"flow\",\"parameters\":{\"flow_message_version\":\"3\","
         "\"flow_cta\":\"Go\"}}}"),
      "interactive.action.parameters: exactly one of \"flow_id\"" },
    { IA("{\"type\":\"flow\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"name\":\"flow\",\"parameters\":{\"flow_cta\":\"Go\","
         "\"flow_id\":\"1\"}}}"),
      "interactive.action.parameters.flow_message_version: required" },
    { IA("{\"type\":\"location_request_message\",\"body\":{\"text\":\"b\"},"
         "\"action\":{\"name\":\"send\"}}"),
      "interactive.action.name: \"send_location\"" },
    { IA("{\"type\":\"location_request_message\",\"action\":{"
         "\"name\":\"send_location\"}}"), "interactive.body: an object" },
    { IA("{\"type\":\"catalog_message\",\"body\":{\"text\":\"b\"},"
         "\"action\":{}}"), "interactive.action.name: \"catalog_message\"" },
    { IA("{\"type\":\"product\",\"action\":{\"catalog_id\":\"c\"}}"),
      "interactive.action.product_retailer_id: required" },
    { IA("{\"type\":\"product_list\",\"body\":{\"text\":\"b\"},\"action\":{"
         "\"catalog_id\":\"c\",\"sections\":[]}}"),
      "interactive.header: required for product_list" },
    { IA("{\"type\":\"product_list\",\"header\":{\"type\":\"text\",\"text\":"
         "\"h\"},\"body\":{\"text\":\"b\"},\"action\":{\"catalog_id\":\"c\","
         "\"sections\":[{\"title\":\"s\",\"product_items\":[]}]}}"),
      "interactive.action.sections[0].product_items: at least one" },
    { NULL, "interactive.action.sections[0].product_items[30]: at most 30" },

    /* location */
    { "{" TO "\"type\":\"location\",\"location\":{\"longitude\":1}}",
      "location.latitude: a number from -90 to 90" },
    { "{" TO "\"type\":\"location\",\"location\":{\"latitude\":90.5,"
      "\"longitude\":1}}", "location.latitude: a number from -90 to 90" },
    { "{" TO "\"type\":\"location\",\"location\":{\"latitude\":1,"
      "\"longitude\":-180.01}}", "location.longitude: a number from -180" },
    { "{" TO "\"type\":\"location\",\"location\":{\"latitude\":\"1x\","
      "\"longitude\":1}}", "location.latitude: a number" },
    { "{" TO "\"type\":\"location\",\"location\":{\"latitude\":\"nan\","
      "\"longitude\":1}}", "location.latitude: a number" },
    { "{" TO "\"type\":\"location\",\"location\":{\"latitude\":1,"
      "\"longitude\":1,\"name\":3}}", "location.name: a string" },

    /* contacts */
    { "{" TO "\"type\":\"contacts\",\"contacts\":[]}",
      "contacts: at least one contact" },
    { "{" TO "\"type\":\"contacts\",\"contacts\":[1]}",
      "contacts[0]: an object" },
    { "{" TO "\"type\":\"contacts\",\"contacts\":[{\"name\":{"
      "\"formatted_name\":\"a\"}},{\"phones\":[]}]}",
      "contacts[1].name: an object" },
    { "{" TO "\"type\":\"contacts\",\"contacts\":[{\"name\":{}}]}",
      "contacts[0].name.formatted_name: required" },

    /* reaction */
    { "{" TO "\"type\":\"reaction\",\"reaction\":{\"emoji\":\"x\"}}",
      "reaction.message_id: required" },
    { "{" TO "\"type\":\"reaction\",\"reaction\":{\"message_id\":\"w\"}}",
      "reaction.emoji: one emoji" },
    { "{" TO "\"type\":\"reaction\",\"reaction\":{\"message_id\":\"w\","
      "\"emoji\":\"ok\"}}", "reaction.emoji: one emoji" },
    { "{" TO "\"type\":\"reaction\",\"reaction\":{\"message_id\":\"w\","
      "\"emoji\":\"\xf0\x9f\x98\x80\xf0\x9f\x98\x80\"}}",
      "reaction.emoji: one emoji" },
    { "{" TO "\"type\":\"reaction\",\"reaction\":{\"message_id\":\"w\","
      "\"emoji\":\"\xf0\x9f\x98\x80 \"}}", "reaction.emoji: one emoji" },
    { "{" TO "\"type\":\"reaction\",\"reaction\":{\"message_id\":\"w\","
      "\"emoji\":\"\xf0\x9f\x8f\xbd\"}}", "reaction.emoji: one emoji" },

    /* context */
    { "{" TO "\"text\":\"x\",\"context\":\"wamid.A\"}", "context: an object" },
    { "{" TO "\"text\":\"x\",\"context\":{}}", "context.message_id: required" },
    { "{" TO "\"text\":\"x\",\"context\":{\"message_id\":\"\"}}",
      "context.message_id: must not be empty" },
};


/* the limits too long to write out: built here, in the order of the NULL
 * entries above */

static char *
long_case(int k)
{
    int     i;
    char   *s, *p;

    s = malloc(65536);
    p = s;

#define PUT(...)  (p += sprintf(p, __VA_ARGS__))
#define REP(n, x) for (i = 0; i < (n); i++) { PUT("%s", x); }

    switch (k) {

    case 0:
        PUT("{" TO "\"type\":\"image\",\"image\":{\"id\":\"1\",\"caption\":\"");
        REP(1025, "\xc3\xa9");
        PUT("\"}}");
        break;

    case 1:
        PUT("{" TO "\"type\":\"document\",\"document\":{\"id\":\"1\","
            "\"filename\":\"");
        REP(256, "f");
        PUT("\"}}");
        break;

    case 2:
        PUT(IA("{\"type\":\"button\",\"body\":{\"text\":\""));
        p -= 1;               /* IA's closing brace comes later */
        REP(1025, "b");
        PUT("\"},\"action\":{}}}");
        break;

    case 3:
        PUT(IA("{\"type\":\"button\",\"body\":{\"text\":\"b\"},\"action\":{"
               "\"buttons\":[{\"type\":\"reply\",\"reply\":{\"id\":\""));
        p -= 1;               /* IA's closing brace comes later */
        REP(257, "i");
        PUT("\",\"title\":\"t\"}}]}}}");
        break;

    case 4:
        PUT(IA("{\"type\":\"list\",\"body\":{\"text\":\"b\"},\"action\":{"
               "\"button\":\"B\",\"sections\":["));
        p -= 1;               /* IA's closing brace comes later */
        for (i = 0; i < 11; i++) {
            PUT("%s{\"title\":\"s%d\",\"rows\":[{\"id\":\"%d\",\"title\":"
                "\"t\"}]}", i ? "," : "", i, i);
        }
        PUT("]}}}");
        break;

    case 5:
        PUT(IA("{\"type\":\"list\",\"body\":{\"text\":\"b\"},\"action\":{"
               "\"button\":\"B\",\"sections\":[{\"rows\":[{\"id\":\""));
        p -= 1;               /* IA's closing brace comes later */
        REP(201, "i");
        PUT("\",\"title\":\"t\"}]}]}}}");
        break;

    case 6:
        PUT(IA("{\"type\":\"list\",\"body\":{\"text\":\""));
        p -= 1;               /* IA's closing brace comes later */
        REP(4097, "b");
        PUT("\"},\"action\":{}}}");
        break;

    case 7:
        PUT(IA("{\"type\":\"product_list\",\"header\":{\"type\":\"text\","
               "\"text\":\"h\"},\"body\":{\"text\":\"b\"},\"action\":{"
               "\"catalog_id\":\"c\",\"sections\":[{\"title\":\"s\","
               "\"product_items\":["));
        p -= 1;               /* IA's closing brace comes later */
        for (i = 0; i < 31; i++) {
            PUT("%s{\"product_retailer_id\":\"p%d\"}", i ? "," : "", i);
        }
        PUT("]}]}}}");
        break;
    }

    return s;
}


static void
try_good(const good_t *g, const char *request)
{
    int            rc;
    char           err[WA_SEND_ERR_LEN], *out;
    cJSON         *back;
    wa_send_req_t  req;

    err[0] = '\0';
    rc = wa_send_parse_request(request, strlen(request), &req, err,
                               sizeof(err));

    if (!ok(rc == 0, "%s: accepted", g->name)) {
        diag("error: %s", err);
        wa_send_req_free(&req);
        return;
    }

    ok(strcmp(req.type, g->type) == 0, "%s: type %s", g->name, req.type);

    if (g->summary) {
        if (!ok(req.summary && strcmp(req.summary, g->summary) == 0,
                "%s: readable body", g->name))
        {
            diag("got \"%s\"", req.summary ? req.summary : "(null)");
        }
    }

    out = wa_send_build_body(&req, "wa-1");
    back = out ? cJSON_Parse(out) : NULL;

    ok(back != NULL, "%s: the provider body is JSON", g->name);

    if (g->body) {
        if (!ok(out && strcmp(out, g->body) == 0, "%s: the provider body, "
                "byte for byte", g->name))
        {
            diag("got      %s", out ? out : "(null)");
            diag("expected %s", g->body);
        }
    }

    cJSON_Delete(back);
    cJSON_free(out);
    wa_send_req_free(&req);
}


static void
try_bad(const char *request, const char *error)
{
    int            rc;
    char           err[WA_SEND_ERR_LEN];
    wa_send_req_t  req;

    err[0] = '\0';
    rc = wa_send_parse_request(request, strlen(request), &req, err,
                               sizeof(err));

    if (!ok(rc != 0 && strncmp(err, error, strlen(error)) == 0,
            "refused: %s", error))
    {
        diag("rc %d, error \"%s\"", rc, err);
    }

    wa_send_req_free(&req);
}


int
main(void)
{
    int     i, n, k, tests;
    char   *s, *p;

    n = sizeof(good) / sizeof(good[0]);
    tests = 0;

    for (i = 0; i < n; i++) {
        tests += 3 + (good[i].summary != NULL) + (good[i].body != NULL);
    }

    /* the 4096-character case checks summary and body below */
    tests += 2;

    /* the two fixed refusals, then the mark-as-read and answer checks */
    plan(tests + (int) (sizeof(bad) / sizeof(bad[0])) + 2 + 3 + 5);

    for (i = 0; i < n - 1; i++) {
        try_good(&good[i], good[i].request);
    }

    /* 4096 characters of two bytes each: Meta counts characters */
    s = malloc(16384);
    p = s + sprintf(s, "{" TO "\"text\":\"");
    for (i = 0; i < 4096; i++) {
        p += sprintf(p, "\xc3\xa9");
    }
    sprintf(p, "\"}");
    {
        char    *want;
        good_t   g = { "4096 two-byte characters", NULL, "text", NULL, NULL };

        want = malloc(8193);
        for (i = 0; i < 4096; i++) {
            memcpy(want + 2 * i, "\xc3\xa9", 2);
        }
        want[8192] = '\0';
        g.summary = want;

        try_good(&g, s);
        ok(strlen(want) == 8192, "4096 characters, 8192 bytes");
        free(want);
    }
    strcpy(p, "\xc3\xa9\"}");
    try_bad(s, "text: longer than 4096 characters");
    free(s);

    k = 0;

    for (i = 0; i < (int) (sizeof(bad) / sizeof(bad[0])); i++) {
        if (bad[i].request) {
            try_bad(bad[i].request, bad[i].error);
            continue;
        }

        s = long_case(k++);
        try_bad(s, bad[i].error);
        free(s);
    }

    /* a body that is not one object */
    try_bad("[1]", "body must be one JSON object");

    /* mark-as-read: Meta's body, the typing indicator's bytes as sent */
    {
        char           err[WA_SEND_ERR_LEN], *out;
        wa_send_req_t  req;
        const char    *in = "{\"messaging_product\":\"whatsapp\","
                            "\"status\":\"read\",\"message_id\":\"wamid.A\","
                            "\"typing_indicator\":{ \"type\" : \"text\" },"
                            "\"phone_number_id\":\"106540352242922\"}";

        ok(wa_send_parse_request(in, strlen(in), &req, err, sizeof(err)) == 0
           && req.read, "mark-as-read accepted");
        ok(strcmp(req.phone_number_id, "106540352242922") == 0,
           "mark-as-read: its channel");
        out = wa_send_build_read_body(&req);
        if (!ok(out && strcmp(out, "{\"messaging_product\":\"whatsapp\","
                              "\"status\":\"read\",\"message_id\":"
                              "\"wamid.A\",\"typing_indicator\":"
                              "{ \"type\" : \"text\" }}") == 0,
                "mark-as-read: Meta's body, byte for byte"))
        {
            diag("got %s", out ? out : "(null)");
        }
        cJSON_free(out);
        wa_send_req_free(&req);
    }

    /* the answers of a mark and of an upload */
    {
        wa_send_res_t  res;

        wa_send_parse_answer(WA_SEND_ANSWER_SUCCESS, 200,
                             "{\"success\":true}", 16, &res);
        ok(res.ok, "mark answer: success true");
        wa_send_parse_answer(WA_SEND_ANSWER_SUCCESS, 200,
                             "{\"success\":false}", 17, &res);
        ok(!res.ok && res.unknown, "mark answer: success false is unknown");
        wa_send_parse_answer(WA_SEND_ANSWER_MEDIA, 200, "{\"id\":\"1037\"}",
                             13, &res);
        ok(res.ok && strcmp(res.wamid, "1037") == 0, "media answer: the id");
        wa_send_parse_answer(WA_SEND_ANSWER_MEDIA, 200, "{\"id\":\"\"}", 9,
                             &res);
        ok(!res.ok && res.unknown, "media answer: an empty id is unknown");
        wa_send_parse_answer(WA_SEND_ANSWER_MEDIA, 400,
                             "{\"error\":{\"code\":131053,\"message\":\"m\"}}",
                             39, &res);
        ok(!res.ok && strcmp(res.error_code, "131053") == 0,
           "media answer: the error");
    }

    return done();
}
