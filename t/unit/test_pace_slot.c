/*
 * test_pace_slot: the pacing arithmetic of wa_send (wa_pace_slot.h), the
 * code the module runs under its zone's lock: turns one interval apart,
 * no burst after idling, a refusal that books nothing, pair spacing, a
 * retry's earliest time.
 */

#include <stdint.h>

#include "tap.h"
#include "wa_pace_slot.h"


int
main(void)
{
    int       rc, i, spaced;
    uint64_t  next, pair, pair2, at, now, last;

    plan(16);

    /* 20/s: 50 ms apart, the first at once */
    next = 0;
    now = 1000000000;
    rc = wa_pace_slot(&next, 50000, NULL, 0, now, 0, 5000000, &at);
    ok(rc == 0 && at == now, "an idle channel: the first send goes now");

    spaced = 1;
    last = at;

    for (i = 0; i < 99; i++) {
        rc = wa_pace_slot(&next, 50000, NULL, 0, now, 0, 5000000, &at);
        spaced &= (rc == 0 && at == last + 50000);
        last = at;
    }

    ok(spaced, "100 sends at once: each one interval after the last");
    ok(next == now + 100 * 50000, "the next free turn after them");

    /* 5 s of wait at most: the 101st is 5 s away, the 102nd past it */
    rc = wa_pace_slot(&next, 50000, NULL, 0, now, 0, 5000000, &at);
    ok(rc == 0 && at - now == 5000000, "a turn exactly max_wait away is taken");
    rc = wa_pace_slot(&next, 50000, NULL, 0, now, 0, 5000000, &at);
    ok(rc == -1, "one past it is refused");
    ok(at - now == 5050000, "saying when it would have been");
    ok(next == now + 101 * 50000, "and booking nothing");

    /* a minute idle: no burst saved up */
    now += 60000000;
    rc = wa_pace_slot(&next, 50000, NULL, 0, now, 0, 5000000, &at);
    ok(rc == 0 && at == now, "after idling, one goes now");
    rc = wa_pace_slot(&next, 50000, NULL, 0, now, 0, 5000000, &at);
    ok(rc == 0 && at == now + 50000, "the next one still an interval later");

    /* not before: a retry's backoff, then the rate */
    now += 10000000;
    rc = wa_pace_slot(&next, 50000, NULL, 0, now, 300000, 5000000, &at);
    ok(rc == 0 && at == now + 300000, "a retry goes after its backoff");
    rc = wa_pace_slot(&next, 50000, NULL, 0, now, 0, 5000000, &at);
    ok(rc == 0 && at == now + 350000, "and the rate counts from its turn");
    rc = wa_pace_slot(&next, 50000, NULL, 0, now, 6000000, 5000000, &at);
    ok(rc == -1, "a backoff past the wait allowed is refused");

    /* pair spacing: 6 s between sends to one recipient */
    now += 10000000;
    pair = 0;
    pair2 = 0;
    rc = wa_pace_slot(&next, 50000, &pair, 6000000, now, 0, 10000000, &at);
    ok(rc == 0 && at == now, "a recipient's first send goes now");
    rc = wa_pace_slot(&next, 50000, &pair, 6000000, now, 0, 10000000, &at);
    ok(rc == 0 && at == now + 6000000, "its second waits the pair spacing");
    rc = wa_pace_slot(&next, 50000, &pair2, 6000000, now, 0, 10000000, &at);
    ok(rc == 0 && at == now + 6050000,
       "another recipient takes the channel's next turn");
    rc = wa_pace_slot(&next, 50000, &pair, 6000000, now, 0, 10000000, &at);
    ok(rc == -1 && pair == now + 12000000,
       "a third to the first, 12 s away, is refused and books nothing");

    return done();
}
