/*
 * test_ring_records: the producer side wa-writer relies on: records
 * published into a fresh ring come back, in order, and decode to the same
 * fields.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wa_record.h"
#include "wa_ring.h"


int
main(void)
{
    int             rc, n, ok;
    char            path[] = "/tmp/test_ring_records.XXXXXX", err[256];
    uint64_t        cursor;
    wa_ring_t       ring;
    wa_record_t     in, out;
    wa_ring_rec_t   rr;
    static const char  body[] = "caf\xc3\xa9 \xf0\x9f\x98\x80 with\nnewline";

    printf("1..6\n");

    n = mkstemp(path);
    if (n < 0) {
        printf("Bail out! mkstemp\n");
        return 1;
    }

    close(n);
    unlink(path);

    rc = wa_ring_open(&ring, path, WA_RING_MIN_SIZE, WA_RING_CREATE, 0600,
                      err, sizeof(err));
    printf("%sok 1 - a fresh ring opens\n", rc == WA_RING_OK ? "" : "not ");
    if (rc != WA_RING_OK) {
        return 1;
    }

    memset(&in, 0, sizeof(wa_record_t));
    in.type = WA_REC_IN_MESSAGE;
    wa_record_set(&in, WA_F_BUSINESS, "7");
    wa_record_set(&in, WA_F_WAMID, "wamid.self");
    wa_record_set(&in, WA_F_BODY, body);

    n = 0;

    for (int i = 0; i < 100; i++) {
        n += wa_record_put(&ring, &in, 0) == WA_RING_OK;
    }

    printf("%sok 2 - 100 records published\n", n == 100 ? "" : "not ");

    cursor = wa_ring_head(&ring);
    ok = 1;
    n = 0;

    while ((rc = wa_ring_read(&ring, &cursor, &rr, wa_now_ms()))
           == WA_RING_OK)
    {
        if (rr.type != WA_REC_IN_MESSAGE
            || wa_record_decode(&out, rr.type, rr.payload, rr.payload_len)
               != 0
            || out.f[WA_F_BODY].len != sizeof(body) - 1
            || memcmp(out.f[WA_F_BODY].data, body, sizeof(body) - 1) != 0
            || out.f[WA_F_PHONE].data != NULL)
        {
            ok = 0;
        }

        n++;
    }

    printf("%sok 3 - all 100 read back (%d)\n", n == 100 ? "" : "not ", n);
    printf("%sok 4 - each decodes to the same fields\n", ok ? "" : "not ");
    printf("%sok 5 - the reader stops at the tail\n",
           rc == WA_RING_EMPTY ? "" : "not ");

    /* reading does not consume: only advance does */
    printf("%sok 6 - head stays until advanced\n",
           wa_ring_head(&ring) == 0 && cursor == wa_ring_tail(&ring)
           ? "" : "not ");

    wa_ring_close(&ring);
    unlink(path);

    return 0;
}
