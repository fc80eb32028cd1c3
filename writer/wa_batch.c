/*
 * A batch: the records read from the ring since the last commit. Payloads
 * are not copied: they stay valid in the mapping until wa_ring_advance(),
 * which only happens once the whole batch is committed.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wa_writer.h"


int
wa_batch_init(wa_batch_t *b, unsigned cap)
{
    memset(b, 0, sizeof(wa_batch_t));

    b->items = calloc(cap, sizeof(wa_item_t));
    b->cmds = calloc(cap, sizeof(wa_cmd_t));

    if (b->items == NULL || b->cmds == NULL) {
        free(b->items);
        free(b->cmds);
        b->items = NULL;
        b->cmds = NULL;
        return -1;
    }

    b->cap = cap;

    return 0;
}


void
wa_batch_free(wa_batch_t *b)
{
    wa_batch_reset(b);
    free(b->items);
    free(b->cmds);
    b->items = NULL;
    b->cmds = NULL;
    b->cap = 0;

    free(b->run.data);
    memset(&b->run, 0, sizeof(wa_buf_t));
}


void
wa_batch_reset(wa_batch_t *b)
{
    unsigned  i;

    for (i = 0; i < b->n; i++) {
        free(b->items[i].reason);
        b->items[i].reason = NULL;
    }

    b->n = 0;
    b->done = 0;
    b->one_by_one = 0;
    b->dead = 0;
    b->first_pos = 0;
    b->end_pos = 0;
    b->first_ms = 0;
}


wa_item_t *
wa_batch_add(wa_batch_t *b, const wa_ring_rec_t *rr, uint64_t end)
{
    char        reason[128];
    wa_item_t  *it;

    if (b->n == b->cap) {
        return NULL;
    }

    it = &b->items[b->n++];
    memset(it, 0, sizeof(wa_item_t));

    it->pos = rr->pos;
    it->end = end;
    it->payload = rr->payload;
    it->len = rr->payload_len;
    it->claim_sec = rr->claim_sec;
    it->type = rr->type;

    if (b->n == 1) {
        b->first_pos = rr->pos;
        b->first_ms = wa_now_ms();
    }

    b->end_pos = end;

    if (wa_record_decode(&it->rec, rr->type, rr->payload, rr->payload_len)
        != 0)
    {
        /* kept whole in wa_dead_letter: someone can still read it there */
        snprintf(reason, sizeof(reason), "the record does not decode "
                 "(type %u, %u bytes: unknown type or malformed fields)",
                 (unsigned) rr->type, (unsigned) rr->payload_len);

        memset(&it->rec, 0, sizeof(wa_record_t));
        it->dead = 1;
        it->reason = strdup(reason);
    }

    return it;
}
