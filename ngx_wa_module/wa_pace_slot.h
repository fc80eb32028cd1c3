/*
 * wa_pace_slot: the pacing arithmetic of wa_send, plain C so the unit test
 * and the bench run the module's own code.
 *
 * A channel keeps one time, its next free slot (the "theoretical arrival
 * time" of GCRA; nginx's limit_req keeps the same state as an excess that
 * drains at the rate): a send takes the later of now and that slot, and
 * moves the slot one interval on. No burst: a channel idle for a minute
 * still sends one message per interval, as Meta counts them. A pair (one
 * channel, one recipient) keeps the earliest time of its next send the
 * same way, with its own spacing.
 *
 * Times are microseconds on one monotonic clock shared by the workers.
 */

#ifndef WA_PACE_SLOT_H
#define WA_PACE_SLOT_H

#include <stdint.h>


/*
 * The slot of one send that may not go before now + not_before: 0 and the
 * slot in *at (the channel's and the pair's next times moved on), or -1
 * when it is more than max_wait away (*at: when it would have been;
 * nothing moved). pair_next NULL: no pair spacing.
 */
static inline int
wa_pace_slot(uint64_t *next, uint64_t interval, uint64_t *pair_next,
    uint64_t pair_gap, uint64_t now, uint64_t not_before, uint64_t max_wait,
    uint64_t *at)
{
    uint64_t  t;

    t = now + not_before;

    if (pair_next != NULL && *pair_next > t) {
        t = *pair_next;
    }

    if (*next > t) {
        t = *next;
    }

    *at = t;

    if (t - now > max_wait) {
        return -1;
    }

    *next = t + interval;

    if (pair_next != NULL) {
        *pair_next = t + pair_gap;
    }

    return 0;
}

#endif /* WA_PACE_SLOT_H */
