/*
 * wa-writer status (wa_show): the ring header as "key value" lines, for
 * people and scripts, without nginx. Reading never changes the ring.
 */

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "wa_writer.h"


#define wa_load(field)  __atomic_load_n(&hdr->field, __ATOMIC_RELAXED)

/* no heartbeat for this long: the writer is down (wa_status's rule) */
#define WA_SHOW_DEAD_MS  5000


static void wa_show_age(const char *key, uint64_t now, uint64_t then);
static void wa_show_counters(const wa_ring_hdr_t *hdr,
    const wa_ring_counter_t *c, size_t n);


int
wa_show(wa_conf_t *conf)
{
    char            err[WA_RING_ERR_LEN], last[WA_RING_ERR_LEN * 4];
    int32_t         pid;
    uint64_t        now, head, tail, hb;
    wa_ring_t       ring;
    const char     *alive;
    wa_ring_hdr_t  *hdr;

    if (wa_ring_open(&ring, conf->ring_path, 0, 0, 0600, err, sizeof(err))
        != WA_RING_OK)
    {
        fprintf(stderr, "wa-writer: cannot open the ring %s: %s\n",
                conf->ring_path, err);
        return WA_EXIT_FAIL;
    }

    hdr = ring.hdr;
    now = wa_now_ms();
    head = wa_ring_head(&ring);
    tail = wa_ring_tail(&ring);
    pid = wa_load(writer_pid);

    /* by its heartbeat, as wa_status says it: the writer's pid means
     * nothing in another PID namespace (a container) */
    hb = wa_load(writer_heartbeat_ms);
    alive = (pid > 0 && hb != 0 && (now < hb || now - hb < WA_SHOW_DEAD_MS))
            ? "yes" : "no";

    printf("ring %s\n", conf->ring_path);
    printf("capacity %" PRIu64 "\n", ring.capacity);
    printf("max_payload %u\n", (unsigned) wa_ring_max_payload(&ring));
    printf("reserved %" PRIu64 "\n", wa_ring_keep(&ring));
    printf("head %" PRIu64 "\n", head);
    printf("tail %" PRIu64 "\n", tail);
    printf("bytes_waiting %" PRIu64 "\n", tail - head);
    wa_show_counters(hdr, wa_ring_producer_counters,
                     wa_ring_producer_counters_n);
    printf("writer_pid %d\n", (int) pid);
    printf("writer_alive %s\n", alive);
    wa_show_age("writer_heartbeat_age_ms", now, wa_load(writer_heartbeat_ms));
    wa_show_age("writer_uptime_ms", now, wa_load(writer_started_ms));
    wa_show_age("last_flush_age_ms", now, wa_load(last_flush_ms));
    wa_show_counters(hdr, wa_ring_writer_counters, wa_ring_writer_counters_n);
    printf("lag_ms %" PRIu64 "\n", (uint64_t) wa_load(lag_ms));
    wa_show_age("last_error_age_ms", now, wa_load(last_error_ms));

    memcpy(err, hdr->last_error, sizeof(err));
    err[sizeof(err) - 1] = '\0';
    wa_sanitize(last, sizeof(last), err, strlen(err));
    printf("last_error %s\n", last[0] ? last : "-");

    /* counted in the database by the writer: "-" until it did */
    wa_show_age("census_age_ms", now, wa_load(census_ms));

    if (wa_load(census_ms) != 0) {
        wa_show_counters(hdr, wa_ring_writer_gauges,
                         wa_ring_writer_gauges_n);
        wa_show_age("receipts_oldest_age_ms", now,
                    wa_load(receipts_oldest_ms));
    }

    wa_ring_close(&ring);

    return WA_EXIT_OK;
}


/* milliseconds since then, or "-" for never */
static void
wa_show_age(const char *key, uint64_t now, uint64_t then)
{
    if (then == 0) {
        printf("%s -\n", key);
        return;
    }

    printf("%s %" PRIu64 "\n", key, now > then ? now - then : 0);
}


/* "name value" lines, in the list's order */
static void
wa_show_counters(const wa_ring_hdr_t *hdr, const wa_ring_counter_t *c,
    size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        printf("%s %" PRIu64 "\n", c[i].name, wa_ring_counter(hdr, &c[i]));
    }
}
