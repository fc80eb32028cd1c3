/*
 * The pacing zone of wa_send: each channel's rate and each recipient's
 * spacing, shared by the workers and kept across reloads; see
 * ngx_http_wa_pace.c.
 */

#ifndef NGX_HTTP_WA_PACE_H
#define NGX_HTTP_WA_PACE_H

#include "ngx_http_wa_module.h"


/* a channel's counters, in wa_status's order */
#define NGX_HTTP_WA_PACE_SENDS         0   /* sends admitted (first calls) */
#define NGX_HTTP_WA_PACE_WAITS         1   /* calls that waited their turn */
#define NGX_HTTP_WA_PACE_WAITED_MS     2   /* how long, in all */
#define NGX_HTTP_WA_PACE_RETRIES       3   /* automatic retries started */
#define NGX_HTTP_WA_PACE_RATE_LIMITED  4   /* 130429, 131056, 80007 answers */
#define NGX_HTTP_WA_PACE_REJECTED      5   /* 503: the wait was too long */
#define NGX_HTTP_WA_PACE_N             6


/* one channel as wa_status shows it */
typedef struct {
    uint64_t                   interval_us;   /* 0: not paced */
    uint64_t                   pair_gap_us;   /* 0: no pair spacing */
    uint64_t                   counters[NGX_HTTP_WA_PACE_N];
    int64_t                    queue;         /* waiting now */
    uint64_t                   backlog_ms;    /* next free slot - now */
    uint64_t                   bench_ns;      /* NGX_HTTP_WA_PACE_BENCH */
    uint64_t                   bench_calls;
} ngx_http_wa_pace_stat_t;


/* the zone, sized by wa_send_pacing_zone; every wa_channel gets its node
 * when the zone is ready (ch->pace) */
ngx_int_t ngx_http_wa_pace_init_conf(ngx_conf_t *cf,
    ngx_http_wa_main_conf_t *wmcf);

/*
 * A turn for one call of channel ch to recipient to, not before
 * not_before ms from now: NGX_OK, *delay the ms to wait (0: go now); or
 * NGX_BUSY, the turn is more than max_wait away, *delay how much more
 * (nothing reserved).
 */
ngx_int_t ngx_http_wa_pace_reserve(ngx_http_wa_main_conf_t *wmcf,
    ngx_http_wa_channel_t *ch, const char *to, ngx_msec_t not_before,
    ngx_msec_t max_wait, ngx_msec_t *delay);

/* the turn came: NGX_OK, go; NGX_AGAIN, the channel's latest call is
 * too recent (a late timer), wait *delay ms more */
ngx_int_t ngx_http_wa_pace_go(ngx_http_wa_main_conf_t *wmcf,
    ngx_http_wa_channel_t *ch, ngx_msec_t *delay);

/* add n to a counter (NGX_HTTP_WA_PACE_*) or, counter -1, to the queue */
void ngx_http_wa_pace_count(ngx_http_wa_channel_t *ch, ngx_int_t counter,
    int64_t n);

/* a channel's figures by its phone number id; NGX_DECLINED: no such
 * sending channel (or no zone) */
ngx_int_t ngx_http_wa_pace_stat(ngx_http_wa_main_conf_t *wmcf, u_char *id,
    size_t len, ngx_http_wa_pace_stat_t *st);

#endif /* NGX_HTTP_WA_PACE_H */
