/*
 * wa_status: ring depth, producer counters and the writer's health, read
 * from the ring header, and the webhook's own counters, read from the
 * module's shared zone, as JSON (default) or Prometheus text.
 *
 * The writer's fields are written by another process: each is read with an
 * atomic load, and the error text is copied bounded (it may be mid-update,
 * never out of bounds).
 */

#include "ngx_http_wa_module.h"
#include "ngx_http_wa_pace.h"


#define NGX_HTTP_WA_STATUS_BUF   8192
#define NGX_HTTP_WA_WRITER_DEAD  5000   /* ms without heartbeat */
#define NGX_HTTP_WA_STATUS_CHAN  1536   /* bytes per paced channel */


typedef struct {
    ngx_flag_t   available;
    uint64_t     capacity;
    uint64_t     head;
    uint64_t     tail;
    int32_t      writer_pid;
    uint64_t     heartbeat_ms;
    uint64_t     last_flush_ms;
    wa_ring_hdr_t
                 counters;       /* only the counters are copied */
    uint64_t     last_error_ms;
    uint64_t     lag_ms;
    uint64_t     now_ms;
    ngx_http_wa_webhook_counters_t
                 webhook;        /* the module's own, not the ring's */
    u_char       last_error[WA_RING_ERR_LEN];
    size_t       last_error_len;
} ngx_http_wa_status_t;


static void ngx_http_wa_status_read(ngx_http_wa_main_conf_t *wmcf,
    ngx_http_wa_status_t *st);
static u_char *ngx_http_wa_status_json(u_char *p, ngx_http_wa_status_t *st,
    ngx_http_wa_main_conf_t *wmcf);
static u_char *ngx_http_wa_status_json_counters(u_char *p,
    wa_ring_hdr_t *counters, const wa_ring_counter_t *c, size_t n);
static u_char *ngx_http_wa_status_prometheus(u_char *p,
    ngx_http_wa_status_t *st);
static u_char *ngx_http_wa_status_metrics(u_char *p, wa_ring_hdr_t *counters,
    const wa_ring_counter_t *c, size_t n);
static u_char *ngx_http_wa_status_pacing_json(u_char *p, ngx_array_t *a);
static u_char *ngx_http_wa_status_pacing_prometheus(u_char *p,
    ngx_array_t *a);
static ngx_int_t ngx_http_wa_status_wants_text(ngx_http_request_t *r);
static uint64_t ngx_http_wa_age(uint64_t now, uint64_t then);


#define wa_load(field)  __atomic_load_n(&hdr->field, __ATOMIC_RELAXED)


ngx_int_t
ngx_http_wa_status_handler(ngx_http_request_t *r)
{
    u_char                   *body, *p;
    ngx_int_t                 rc;
    ngx_array_t              *pacing;
    ngx_http_wa_status_t      st;
    ngx_http_wa_main_conf_t  *wmcf;
    static ngx_str_t          prom = ngx_string("text/plain; version=0.0.4");
    static ngx_str_t          json = ngx_string("application/json");

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    wmcf = ngx_http_get_module_main_conf(r, ngx_http_wa_module);

    ngx_http_wa_status_read(wmcf, &st);

    /* the send path's channels, from the pacing zone */
    pacing = ngx_http_wa_pace_stats(wmcf, r->pool);

    body = ngx_pnalloc(r->pool, NGX_HTTP_WA_STATUS_BUF + WA_RING_ERR_LEN * 6
                                + wmcf->ring_path.len * 6
                                + (pacing ? pacing->nelts : 0)
                                  * NGX_HTTP_WA_STATUS_CHAN);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_wa_status_wants_text(r)) {
        p = ngx_http_wa_status_prometheus(body, &st);
        p = ngx_http_wa_status_pacing_prometheus(p, pacing);
        return ngx_http_wa_reply_body(r, NGX_HTTP_OK, &prom, body, p - body);
    }

    p = ngx_http_wa_status_json(body, &st, wmcf);

    /* before the closing brace: one more member, the channels' pacing */
    p = ngx_http_wa_status_pacing_json(p - 2, pacing);

    return ngx_http_wa_reply_body(r, NGX_HTTP_OK, &json, body, p - body);
}


static void
ngx_http_wa_status_read(ngx_http_wa_main_conf_t *wmcf,
    ngx_http_wa_status_t *st)
{
    size_t                           n;
    ngx_time_t                      *tp;
    wa_ring_hdr_t                   *hdr;
    ngx_http_wa_webhook_counters_t  *wh;

    ngx_memzero(st, sizeof(ngx_http_wa_status_t));

    tp = ngx_timeofday();
    st->now_ms = (uint64_t) tp->sec * 1000 + tp->msec;

    wh = ngx_http_wa_webhook_counters(wmcf);

    if (wh != NULL) {
        st->webhook.raw_events = __atomic_load_n(&wh->raw_events,
                                                 __ATOMIC_RELAXED);
        st->webhook.echoes = __atomic_load_n(&wh->echoes, __ATOMIC_RELAXED);
        st->webhook.errors = __atomic_load_n(&wh->errors, __ATOMIC_RELAXED);
        st->webhook.media_downloaded = __atomic_load_n(&wh->media_downloaded,
                                                       __ATOMIC_RELAXED);
        st->webhook.media_errors = __atomic_load_n(&wh->media_errors,
                                                   __ATOMIC_RELAXED);
        st->webhook.media_waiting = __atomic_load_n(&wh->media_waiting,
                                                    __ATOMIC_RELAXED);
        st->webhook.media_failed = __atomic_load_n(&wh->media_failed,
                                                   __ATOMIC_RELAXED);
        st->webhook.media_report_ms = __atomic_load_n(&wh->media_report_ms,
                                                      __ATOMIC_RELAXED);
    }

    if (!ngx_http_wa_ring_usable(wmcf, ngx_cycle->log)) {
        return;
    }

    hdr = wmcf->ring.hdr;

    st->available = 1;
    st->capacity = wmcf->ring.capacity;
    st->head = wa_ring_head(&wmcf->ring);
    st->tail = wa_ring_tail(&wmcf->ring);
    st->writer_pid = wa_load(writer_pid);
    st->heartbeat_ms = wa_load(writer_heartbeat_ms);
    st->last_flush_ms = wa_load(last_flush_ms);

#define wa_copy(name, metric, labels)  st->counters.name = wa_load(name);
    WA_RING_PRODUCER_COUNTERS(wa_copy)
    WA_RING_WRITER_COUNTERS(wa_copy)
#undef wa_copy

    st->last_error_ms = wa_load(last_error_ms);
    st->lag_ms = wa_load(lag_ms);

    ngx_memcpy(st->last_error, hdr->last_error, WA_RING_ERR_LEN);
    st->last_error[WA_RING_ERR_LEN - 1] = '\0';

    for (n = 0; n < WA_RING_ERR_LEN && st->last_error[n]; n++) {
        if (st->last_error[n] < 0x20) {
            st->last_error[n] = ' ';
        }
    }

    st->last_error_len = n;
}


static u_char *
ngx_http_wa_status_json(u_char *p, ngx_http_wa_status_t *st,
    ngx_http_wa_main_conf_t *wmcf)
{
    uint64_t        hb_age, done;
    wa_ring_hdr_t  *c;

    c = &st->counters;
    hb_age = ngx_http_wa_age(st->now_ms, st->heartbeat_ms);
    done = c->rows_written + c->dead_letters + c->skipped_records
           + c->corrupt_records;

    p = ngx_sprintf(p, "{\"ring\":{\"path\":\"");
    p = (u_char *) ngx_escape_json(p, wmcf->ring_path.data,
                                   wmcf->ring_path.len);

    p = ngx_sprintf(p, "\",\"available\":%s,", st->available ? "true"
                                                             : "false");
    if (!st->available) {
        p = ngx_sprintf(p, "\"error\":\"");
        p = (u_char *) ngx_escape_json(p, wmcf->ring_error,
                                       ngx_strlen(wmcf->ring_error));
        p = ngx_sprintf(p, "\",");
    }

    p = ngx_sprintf(p,
            "\"size\":%uL,\"head\":%uL,\"tail\":%uL,\"bytes_waiting\":%uL,"
            "\"records_waiting\":%uL},\"producers\":{",
            st->capacity, st->head, st->tail, st->tail - st->head,
            c->published > done ? c->published - done : 0);

    p = ngx_http_wa_status_json_counters(p, c, wa_ring_producer_counters,
                                         wa_ring_producer_counters_n);

    p = ngx_sprintf(p,
            "},\"webhook\":{\"raw_events\":%uL,\"echoes\":%uL,"
            "\"errors\":%uL",
            st->webhook.raw_events, st->webhook.echoes, st->webhook.errors);

    /* waiting and failed are the fetcher's last report of the database;
     * its age says whether a fetcher runs at all */
    p = ngx_sprintf(p,
            "},\"media\":{\"downloaded\":%uL,\"download_errors\":%uL,"
            "\"waiting\":%uL,\"failed\":%uL,\"report_age_ms\":%uL",
            st->webhook.media_downloaded, st->webhook.media_errors,
            st->webhook.media_waiting, st->webhook.media_failed,
            ngx_http_wa_age(st->now_ms, st->webhook.media_report_ms));

    p = ngx_sprintf(p,
            "},\"writer\":{\"alive\":%s,\"pid\":%D,\"heartbeat_age_ms\":%uL,"
            "\"last_flush_age_ms\":%uL,",
            (st->heartbeat_ms && hb_age < NGX_HTTP_WA_WRITER_DEAD)
            ? "true" : "false",
            st->writer_pid, hb_age,
            ngx_http_wa_age(st->now_ms, st->last_flush_ms));

    p = ngx_http_wa_status_json_counters(p, c, wa_ring_writer_counters,
                                         wa_ring_writer_counters_n);

    p = ngx_sprintf(p,
            ",\"lag_ms\":%uL,\"last_error_age_ms\":%uL,\"last_error\":\"",
            st->lag_ms, ngx_http_wa_age(st->now_ms, st->last_error_ms));

    p = (u_char *) ngx_escape_json(p, st->last_error, st->last_error_len);

    return ngx_sprintf(p, "\"}}\n");
}


/*
 * ,"pacing":{"<phone number id>":{...},...}}\n  Each channel: its rate
 * (sends a second; null: rate=off), its pair spacing, what its counters
 * counted since the zone was made (a restart; a reload keeps them), the
 * sends waiting for a turn now and how far ahead its schedule is booked.
 */

static u_char *
ngx_http_wa_status_pacing_json(u_char *p, ngx_array_t *a)
{
    ngx_uint_t                i;
    ngx_http_wa_pace_stat_t  *st;

    p = ngx_sprintf(p, ",\"pacing\":{");

    for (i = 0; a != NULL && i < a->nelts; i++) {
        st = (ngx_http_wa_pace_stat_t *) a->elts + i;

        p = ngx_sprintf(p, "%s\"%V\":{\"rate\":", i ? "," : "",
                        &st->phone_number_id);

        if (st->interval_us) {
            p = ngx_sprintf(p, "%uL.%03uL", 1000000 / st->interval_us,
                            1000000000 / st->interval_us % 1000);

        } else {
            p = ngx_sprintf(p, "null");
        }

        p = ngx_sprintf(p,
                ",\"pair_ms\":%uL,\"sends\":%uL,\"waits\":%uL,"
                "\"waited_ms\":%uL,\"queue\":%L,\"backlog_ms\":%uL,"
                "\"retries\":%uL,\"rate_limited\":%uL,\"rejected\":%uL}",
                st->pair_gap_us / 1000,
                st->counters[NGX_HTTP_WA_PACE_SENDS],
                st->counters[NGX_HTTP_WA_PACE_WAITS],
                st->counters[NGX_HTTP_WA_PACE_WAITED_MS],
                st->queue > 0 ? st->queue : 0, st->backlog_ms,
                st->counters[NGX_HTTP_WA_PACE_RETRIES],
                st->counters[NGX_HTTP_WA_PACE_RATE_LIMITED],
                st->counters[NGX_HTTP_WA_PACE_REJECTED]);

#if (NGX_HTTP_WA_PACE_BENCH)
        /* make bench's build: the limiter's own time */
        p = ngx_sprintf(p - 1, ",\"bench_ns\":%uL,\"bench_calls\":%uL}",
                        st->bench_ns, st->bench_calls);
#endif
    }

    return ngx_sprintf(p, "}}\n");
}


static u_char *
ngx_http_wa_status_pacing_prometheus(u_char *p, ngx_array_t *a)
{
    ngx_uint_t                i, m;
    ngx_http_wa_pace_stat_t  *st;

    static const struct {
        const char  *name;
        const char  *type;
        ngx_int_t    counter;     /* -1: the queue, -2: backlog, -3: rate */
    } metric[] = {
        { "wa_send_channel_sends_total", "counter",
          NGX_HTTP_WA_PACE_SENDS },
        { "wa_send_channel_waits_total", "counter",
          NGX_HTTP_WA_PACE_WAITS },
        { "wa_send_channel_waited_ms_total", "counter",
          NGX_HTTP_WA_PACE_WAITED_MS },
        { "wa_send_channel_retries_total", "counter",
          NGX_HTTP_WA_PACE_RETRIES },
        { "wa_send_channel_rate_limited_total", "counter",
          NGX_HTTP_WA_PACE_RATE_LIMITED },
        { "wa_send_channel_rejected_total", "counter",
          NGX_HTTP_WA_PACE_REJECTED },
        { "wa_send_channel_queue", "gauge", -1 },
        { "wa_send_channel_backlog_ms", "gauge", -2 },
        { "wa_send_channel_rate", "gauge", -3 },
    };

    if (a == NULL || a->nelts == 0) {
        return p;
    }

    for (m = 0; m < sizeof(metric) / sizeof(metric[0]); m++) {
        p = ngx_sprintf(p, "# TYPE %s %s\n", metric[m].name, metric[m].type);

        for (i = 0; i < a->nelts; i++) {
            st = (ngx_http_wa_pace_stat_t *) a->elts + i;

            p = ngx_sprintf(p, "%s{phone_number_id=\"%V\"} ",
                            metric[m].name, &st->phone_number_id);

            switch (metric[m].counter) {

            case -1:
                p = ngx_sprintf(p, "%L\n", st->queue > 0 ? st->queue : 0);
                break;

            case -2:
                p = ngx_sprintf(p, "%uL\n", st->backlog_ms);
                break;

            case -3:
                /* 0: not paced */
                p = st->interval_us
                    ? ngx_sprintf(p, "%uL.%03uL\n",
                                  1000000 / st->interval_us,
                                  1000000000 / st->interval_us % 1000)
                    : ngx_sprintf(p, "0\n");
                break;

            default:
                p = ngx_sprintf(p, "%uL\n", st->counters[metric[m].counter]);
            }
        }
    }

    return p;
}


/* "name":value,... in the list's order */

static u_char *
ngx_http_wa_status_json_counters(u_char *p, wa_ring_hdr_t *counters,
    const wa_ring_counter_t *c, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        p = ngx_sprintf(p, "%s\"%s\":%uL", i ? "," : "", c[i].name,
                        wa_ring_counter(counters, &c[i]));
    }

    return p;
}


static u_char *
ngx_http_wa_status_prometheus(u_char *p, ngx_http_wa_status_t *st)
{
    uint64_t  hb_age;

    hb_age = ngx_http_wa_age(st->now_ms, st->heartbeat_ms);

    p = ngx_sprintf(p,
            "# TYPE wa_ring_available gauge\n"
            "wa_ring_available %d\n"
            "# TYPE wa_ring_size_bytes gauge\n"
            "wa_ring_size_bytes %uL\n"
            "# TYPE wa_ring_waiting_bytes gauge\n"
            "wa_ring_waiting_bytes %uL\n"
            "# TYPE wa_ring_head_bytes counter\n"
            "wa_ring_head_bytes %uL\n"
            "# TYPE wa_ring_tail_bytes counter\n"
            "wa_ring_tail_bytes %uL\n",
            st->available ? 1 : 0, st->capacity, st->tail - st->head,
            st->head, st->tail);

    p = ngx_http_wa_status_metrics(p, &st->counters,
                                   wa_ring_producer_counters,
                                   wa_ring_producer_counters_n);

    p = ngx_sprintf(p,
            "# TYPE wa_webhook_records_total counter\n"
            "wa_webhook_records_total{kind=\"raw_event\"} %uL\n"
            "wa_webhook_records_total{kind=\"echo\"} %uL\n"
            "wa_webhook_records_total{kind=\"error\"} %uL\n",
            st->webhook.raw_events, st->webhook.echoes, st->webhook.errors);

    p = ngx_sprintf(p,
            "# TYPE wa_media_downloads_total counter\n"
            "wa_media_downloads_total{result=\"ok\"} %uL\n"
            "wa_media_downloads_total{result=\"error\"} %uL\n"
            "# TYPE wa_media_waiting gauge\n"
            "wa_media_waiting %uL\n"
            "# TYPE wa_media_failed gauge\n"
            "wa_media_failed %uL\n"
            "# TYPE wa_media_report_age_seconds gauge\n"
            "wa_media_report_age_seconds %uL\n",
            st->webhook.media_downloaded, st->webhook.media_errors,
            st->webhook.media_waiting, st->webhook.media_failed,
            ngx_http_wa_age(st->now_ms, st->webhook.media_report_ms) / 1000);

    p = ngx_sprintf(p,
            "# TYPE wa_writer_up gauge\n"
            "wa_writer_up %d\n"
            "# TYPE wa_writer_heartbeat_age_seconds gauge\n"
            "wa_writer_heartbeat_age_seconds %uL.%03uL\n"
            "# TYPE wa_writer_lag_seconds gauge\n"
            "wa_writer_lag_seconds %uL.%03uL\n",
            (st->heartbeat_ms && hb_age < NGX_HTTP_WA_WRITER_DEAD) ? 1 : 0,
            hb_age / 1000, hb_age % 1000,
            st->lag_ms / 1000, st->lag_ms % 1000);

    p = ngx_http_wa_status_metrics(p, &st->counters, wa_ring_writer_counters,
                                   wa_ring_writer_counters_n);

    return ngx_sprintf(p,
            "# TYPE wa_writer_last_flush_age_seconds gauge\n"
            "wa_writer_last_flush_age_seconds %uL\n",
            ngx_http_wa_age(st->now_ms, st->last_flush_ms) / 1000);
}


/* the exported counters; one TYPE line per metric, its labels on each */

static u_char *
ngx_http_wa_status_metrics(u_char *p, wa_ring_hdr_t *counters,
    const wa_ring_counter_t *c, size_t n)
{
    size_t       i;
    const char  *last;

    last = NULL;

    for (i = 0; i < n; i++) {

        if (c[i].metric == NULL) {
            continue;
        }

        if (last == NULL || ngx_strcmp(last, c[i].metric) != 0) {
            p = ngx_sprintf(p, "# TYPE %s counter\n", c[i].metric);
            last = c[i].metric;
        }

        p = ngx_sprintf(p, "%s%s %uL\n", c[i].metric, c[i].labels,
                        wa_ring_counter(counters, &c[i]));
    }

    return p;
}


/* ?format=prometheus, or a scraper's Accept: text/plain / openmetrics */

static ngx_int_t
ngx_http_wa_status_wants_text(ngx_http_request_t *r)
{
    u_char           *last;
    ngx_str_t         fmt;
    ngx_table_elt_t  *h;

    if (ngx_http_arg(r, (u_char *) "format", 6, &fmt) == NGX_OK) {
        return fmt.len == 10 && ngx_strncmp(fmt.data, "prometheus", 10) == 0;
    }

    h = ngx_http_wa_header(r, "Accept", 6);
    if (h == NULL) {
        return 0;
    }

    last = h->value.data + h->value.len;

    return ngx_strlcasestrn(h->value.data, last, (u_char *) "text/plain",
                            10 - 1) != NULL
           || ngx_strlcasestrn(h->value.data, last, (u_char *) "openmetrics",
                               11 - 1) != NULL;
}


/* milliseconds since then; 0 when then is unset */

static uint64_t
ngx_http_wa_age(uint64_t now, uint64_t then)
{
    return (then == 0 || then > now) ? 0 : now - then;
}
