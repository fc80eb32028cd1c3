/*
 * wa-feed: a producer without nginx, for the tests, the benchmarks and
 * the valgrind run of wa-writer. It feeds a ring from a script on stdin:
 *
 *   wa-feed RING [SIZE]               (SIZE: create the ring when missing)
 *
 *   in business=1 phone=972501234567 wamid=wamid.A body=Hi
 *   status business=1 wamid=wamid.A status=read timestamp=1764037800
 *   out_pending local_id=L1 business=1 phone=972501234567 lead_id=42
 *   raw 3 0102ff                      (type, payload in hex: malformed)
 *   bench N [in|mixed] [TAG]          (N synthetic records, see below)
 *   receipts N [TAG]                  (N/4 sends and outcomes, delivered, read)
 *   wait SECONDS                      (until the writer committed all)
 *
 * Field values are %XX-decoded (%00 is a NUL byte, %ff an invalid UTF-8
 * byte, %20 a space). A full ring is retried for up to 30 s. Prints
 * "published N" at the end; exits 1 on any failure.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "wa_record.h"
#include "wa_ring.h"


#define LINE_MAX_LEN  (1024 * 1024)

/* receipts: an outcome comes after this many more sends */
#define LAG           8


static unsigned long  published;


/* the fields of a synthetic send, its outcome, and a receipt (payload:
 * NULL for none), as the bench and receipts scripts publish them */

static void
feed_send(wa_record_t *rec, const char *local, const char *phone,
    const char *source, const char *body, const char *payload)
{
    rec->type = WA_REC_OUT_PENDING;
    wa_record_set(rec, WA_F_LOCAL_ID, local);
    wa_record_set(rec, WA_F_PHONE, phone);
    wa_record_set(rec, WA_F_SOURCE, source);
    wa_record_set(rec, WA_F_MSG_TYPE, "text");
    wa_record_set(rec, WA_F_BODY, body);
    wa_record_set(rec, WA_F_PAYLOAD, payload);
}


static void
feed_outcome(wa_record_t *rec, const char *local, const char *wamid)
{
    rec->type = WA_REC_OUT_RESULT;
    wa_record_set(rec, WA_F_LOCAL_ID, local);
    wa_record_set(rec, WA_F_STATUS, "sent");
    wa_record_set(rec, WA_F_WAMID, wamid);
    wa_record_set(rec, WA_F_HTTP_STATUS, "200");
}


static void
feed_receipt(wa_record_t *rec, const char *wamid, const char *status,
    const char *ts, const char *phone, const char *payload)
{
    rec->type = WA_REC_STATUS;
    wa_record_set(rec, WA_F_WAMID, wamid);
    wa_record_set(rec, WA_F_STATUS, status);
    wa_record_set(rec, WA_F_TIMESTAMP, ts);
    wa_record_set(rec, WA_F_PHONE, phone);
    wa_record_set(rec, WA_F_PAYLOAD, payload);
}


static int
type_of(const char *s)
{
    static const char  *names[] = {
        NULL, "in", "status", "out_pending", "out_result", "webhook_error",
        "event", "echo", "mark_read", "media_upload"
    };

    for (int i = 1; i <= WA_REC_TYPE_MAX; i++) {
        if (strcmp(s, names[i]) == 0) {
            return i;
        }
    }

    return -1;
}


static int
tag_of(const char *s, size_t len)
{
    static const char  *names[WA_F__MAX] = {
        NULL, "business", "phone_number_id", "phone", "wa_user_id", "name",
        "wamid", "msg_type", "body", "timestamp", "payload", "status",
        "error_code", "error_title", "error_detail", "local_id", "lead_id",
        "source", "client_ref", "fbtrace_id", "retryable", "callback_data",
        "http_status", "received_ms", "attempt", "field", "waba_id",
        "contact", "media_id", "mime_type", "size", "sha256"
    };

    for (int i = 1; i < WA_F__MAX; i++) {
        if (strlen(names[i]) == len && memcmp(s, names[i], len) == 0) {
            return i;
        }
    }

    return -1;
}


/* %XX-decode in place; returns the decoded length */
static size_t
unescape(char *s)
{
    char          *d = s;
    unsigned int   x;

    for (char *p = s; *p; p++) {
        if (p[0] == '%' && p[1] && p[2] && sscanf(p + 1, "%2x", &x) == 1) {
            *d++ = (char) x;
            p += 2;
        } else {
            *d++ = *p;
        }
    }

    *d = '\0';

    return (size_t) (d - s);
}


/* a record (rec), or raw bytes that may not be one; a full ring is
 * retried for up to 30 s */
static int
publish(wa_ring_t *ring, const wa_record_t *rec, uint16_t type,
    const void *payload, uint32_t len)
{
    int  rc;

    for (int i = 0; i < 30000; i++) {
        rc = rec ? wa_record_put(ring, rec, 0)
                 : wa_ring_put(ring, type, payload, len);

        if (rc == WA_RING_OK) {
            published++;
            return 0;
        }

        if (rc != WA_RING_FULL) {
            fprintf(stderr, "wa-feed: publish failed: %d\n", rc);
            return -1;
        }

        usleep(1000);
    }

    fprintf(stderr, "wa-feed: the ring stayed full for 30 s\n");
    return -1;
}


static int
publish_record(wa_ring_t *ring, wa_record_t *rec)
{
    return publish(ring, rec, 0, NULL, 0);
}


/* message i of a campaign of n (run: its tag), as the receipts script
 * publishes it: its send ("pending"), the send's outcome ("result"), or a
 * receipt ("delivered", "read") */
static int
feed_campaign(wa_ring_t *ring, const char *run, long n, long i,
    const char *what, const char *ts)
{
    char         phone[32], wamid[64], local[64];
    wa_record_t  rec;

    memset(&rec, 0, sizeof(wa_record_t));
    snprintf(phone, sizeof(phone), "97250%07ld", i % (n / 2 + 1));
    snprintf(local, sizeof(local), "%s-%ld", run ? run : "r", i);
    snprintf(wamid, sizeof(wamid), "wamid.%s.%ld", run ? run : "r", i);
    wa_record_set(&rec, WA_F_BUSINESS, "1");

    if (strcmp(what, "pending") == 0) {
        feed_send(&rec, local, phone, "campaign", "Your order has shipped",
                  NULL);

    } else if (strcmp(what, "result") == 0) {
        feed_outcome(&rec, local, wamid);

    } else {
        feed_receipt(&rec, wamid, what, ts, phone, NULL);
    }

    return publish_record(ring, &rec);
}


static int
feed_line(wa_ring_t *ring, char *line)
{
    int          type, tag;
    char        *word, *eq, *save;
    wa_record_t  rec;

    word = strtok_r(line, " \t\r\n", &save);

    if (word == NULL || word[0] == '#') {
        return 0;
    }

    if (strcmp(word, "raw") == 0) {
        char           *t = strtok_r(NULL, " \t\r\n", &save);
        char           *hex = strtok_r(NULL, " \t\r\n", &save);
        unsigned char   bytes[4096];
        size_t          n = 0;
        unsigned int    x;

        if (t == NULL) {
            return -1;
        }

        for (char *p = hex; p && p[0] && p[1] && n < sizeof(bytes); p += 2) {
            if (sscanf(p, "%2x", &x) != 1) {
                return -1;
            }
            bytes[n++] = (unsigned char) x;
        }

        return publish(ring, NULL, (uint16_t) atoi(t), bytes, (uint32_t) n);
    }

    if (strcmp(word, "wait") == 0) {
        char      *s = strtok_r(NULL, " \t\r\n", &save);
        uint64_t   end = wa_now_ms() + (uint64_t) (s ? atof(s) * 1000 : 30000);

        while (wa_ring_head(ring) != wa_ring_tail(ring)) {
            if (wa_now_ms() > end) {
                fprintf(stderr, "wa-feed: the writer did not "
                        "catch up\n");
                return -1;
            }
            usleep(2000);
        }

        return 0;
    }

    if (strcmp(word, "bench") == 0) {
        char        *s = strtok_r(NULL, " \t\r\n", &save);
        char        *mix = strtok_r(NULL, " \t\r\n", &save);
        char        *run = strtok_r(NULL, " \t\r\n", &save);
        long         n = s ? atol(s) : 0;
        int          mixed = mix && strcmp(mix, "mixed") == 0;
        char         phone[32], wamid[64], local[64], ts[16], rms[24];
        char         runid[32];
        static const char  body[] = "Hello, this is a benchmark message of "
            "a typical length, about one line of chat text.";
        static const char  payload[] = "{\"from\":\"972500000000\",\"id\":"
            "\"wamid.HBgMOTcyNTAwMDAwMDAwFQIAEhggQjVGRDU0QjA3RjE1OUFBRTk3\","
            "\"timestamp\":\"1764037800\",\"type\":\"text\",\"text\":{\"body"
            "\":\"Hello, this is a benchmark message of a typical length, "
            "about one line of chat text.\"}}";

        snprintf(runid, sizeof(runid), "%s",
                 run ? run : "b");
        snprintf(ts, sizeof(ts), "%ld", (long) time(NULL));

        for (long i = 0; i < n; i++) {
            memset(&rec, 0, sizeof(wa_record_t));
            /* half the phones are new: a lead is created for them */
            snprintf(phone, sizeof(phone), "97250%07ld", i % (n / 2 + 1));
            snprintf(rms, sizeof(rms), "%llu",
                     (unsigned long long) wa_now_ms());
            wa_record_set(&rec, WA_F_BUSINESS, "1");
            wa_record_set(&rec, WA_F_PHONE_NUMBER_ID, "106540352242922");
            wa_record_set(&rec, WA_F_RECEIVED_MS, rms);

            if (!mixed || i % 4 == 0) {
                snprintf(wamid, sizeof(wamid), "wamid.%s.%ld", runid, i);
                rec.type = WA_REC_IN_MESSAGE;
                wa_record_set(&rec, WA_F_PHONE, phone);
                wa_record_set(&rec, WA_F_NAME, "Bench");
                wa_record_set(&rec, WA_F_WAMID, wamid);
                wa_record_set(&rec, WA_F_MSG_TYPE, "text");
                wa_record_set(&rec, WA_F_BODY, body);
                wa_record_set(&rec, WA_F_TIMESTAMP, ts);
                wa_record_set(&rec, WA_F_PAYLOAD, payload);

            } else if (i % 4 == 1) {
                snprintf(local, sizeof(local), "%s-%ld", runid, i);
                feed_send(&rec, local, phone, "bot", body, payload);

            } else if (i % 4 == 2) {
                snprintf(local, sizeof(local), "%s-%ld", runid, i - 1);
                snprintf(wamid, sizeof(wamid), "wamid.%s.out.%ld", runid,
                         i - 1);
                feed_outcome(&rec, local, wamid);

            } else {
                snprintf(wamid, sizeof(wamid), "wamid.%s.out.%ld", runid,
                         i - 2);
                feed_receipt(&rec, wamid, "delivered", ts, phone,
                             "{\"status\":\"delivered\"}");
            }

            if (publish_record(ring, &rec) != 0) {
                return -1;
            }
        }

        return 0;
    }

    if (strcmp(word, "receipts") == 0) {
        char        *s = strtok_r(NULL, " \t\r\n", &save);
        char        *run = strtok_r(NULL, " \t\r\n", &save);
        long         i, n = s ? atol(s) / 4 : 0;
        char         ts[16];

        /* n/4 sends, each outcome after the next LAG sends (as sends
         * in flight at once answer), then every message delivered, then
         * read: the receipts come in runs, as from a busy outbound
         * campaign */
        snprintf(ts, sizeof(ts), "%ld", (long) time(NULL));

        for (i = 0; i < n + LAG; i++) {
            if ((i < n && feed_campaign(ring, run, n, i, "pending", ts) != 0)
                || (i >= LAG
                    && feed_campaign(ring, run, n, i - LAG, "result", ts)
                       != 0))
            {
                return -1;
            }
        }

        for (i = 0; i < 2 * n; i++) {
            if (feed_campaign(ring, run, n, i % n,
                              i < n ? "delivered" : "read", ts) != 0)
            {
                return -1;
            }
        }

        return 0;
    }

    type = type_of(word);
    if (type < 0) {
        fprintf(stderr, "wa-feed: unknown record type \"%s\"\n",
                word);
        return -1;
    }

    memset(&rec, 0, sizeof(wa_record_t));
    rec.type = (uint16_t) type;

    while ((word = strtok_r(NULL, " \t\r\n", &save)) != NULL) {
        eq = strchr(word, '=');
        tag = eq ? tag_of(word, (size_t) (eq - word)) : -1;

        if (tag < 0) {
            fprintf(stderr, "wa-feed: bad field \"%s\"\n", word);
            return -1;
        }

        rec.f[tag].data = eq + 1;
        rec.f[tag].len = (uint32_t) unescape(eq + 1);
    }

    return publish_record(ring, &rec);
}


static int
feed(const char *path, uint64_t size)
{
    int         rc;
    char        err[WA_RING_ERR_LEN], *line;
    wa_ring_t   ring;

    if (wa_ring_open(&ring, path, size, size ? WA_RING_CREATE : 0, 0600,
                     err, sizeof(err))
        != WA_RING_OK)
    {
        fprintf(stderr, "wa-feed: %s: %s\n", path, err);
        return 1;
    }

    line = malloc(LINE_MAX_LEN);
    rc = 0;

    while (line && fgets(line, LINE_MAX_LEN, stdin) != NULL) {
        if (feed_line(&ring, line) != 0) {
            rc = 1;
            break;
        }
    }

    free(line);
    wa_ring_close(&ring);

    printf("published %lu\n", published);

    return rc;
}




int
main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: wa-feed RING [SIZE] < SCRIPT\n");
        return 2;
    }

    return feed(argv[1], argc > 2 ? strtoull(argv[2], NULL, 0) : 0);
}
