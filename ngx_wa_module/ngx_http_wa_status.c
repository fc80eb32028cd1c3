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


typedef struct {
    ngx_flag_t   available;
    uint64_t     capacity;
    uint64_t     reserved;     /* kept for outcomes: wa_ring_keep() */
    uint64_t     head;
    uint64_t     tail;
    int32_t      writer_pid;
    uint64_t     heartbeat_ms;
    uint64_t     last_flush_ms;
    wa_ring_hdr_t
                 counters;       /* only the counters are copied */
    uint64_t     last_error_ms;
    uint64_t     lag_ms;
    uint64_t     census_ms;      /* 0: the gauges were never counted */
    uint64_t     receipts_oldest_ms;
    uint64_t     now_ms;
    ngx_http_wa_webhook_counters_t
                 webhook;        /* the module's own, not the ring's */
    u_char       last_error[WA_RING_ERR_LEN];
    size_t       last_error_len;

    /* the channels' zone, and the slots in use when the request came */
    ngx_http_wa_chan_shctx_t
                *chan;
    ngx_uint_t  *chans;
    ngx_uint_t   nchans;
    ngx_uint_t  *codes;
    ngx_uint_t   ncodes;
} ngx_http_wa_status_t;


/*
 * Bytes a channel and an error code take at most, in either format: the
 * per-channel section is as long as the channels seen, bounded by the
 * zone's tables (NGX_HTTP_WA_CHANNELS_MAX, NGX_HTTP_WA_CODES_MAX).
 */
#define NGX_HTTP_WA_STATUS_CHANNELS_BUF 1024    /* TYPE lines, dropped */
#define NGX_HTTP_WA_STATUS_CHANNEL_BUF  2048
#define NGX_HTTP_WA_STATUS_CODE_BUF     256


/*
 * Sections other concerns add to each channel (pacing, say), from zones
 * of their own keyed by the same phone number id: json writes
 * ,"key":value pairs inside a channel's object, after "errors";
 * prometheus writes whole metric families (one TYPE line each, every
 * channel's sample under it) labelled phone_number_id and business as
 * these are, after these. size: the most bytes either writes per channel
 * (and once more for its TYPE lines). chans: the channel slots in use,
 * "other" (slot 0) among them.
 */
typedef struct {
    size_t     size;
    u_char  *(*json)(u_char *p, ngx_http_wa_main_conf_t *wmcf,
                     ngx_http_wa_chan_slot_t *ch);
    u_char  *(*prometheus)(u_char *p, ngx_http_wa_main_conf_t *wmcf,
                           ngx_http_wa_chan_shctx_t *sh, ngx_uint_t *chans,
                           ngx_uint_t n);
} ngx_http_wa_status_section_t;

static u_char *ngx_http_wa_status_pacing_json(u_char *p,
    ngx_http_wa_main_conf_t *wmcf, ngx_http_wa_chan_slot_t *ch);
static u_char *ngx_http_wa_status_pacing_prometheus(u_char *p,
    ngx_http_wa_main_conf_t *wmcf, ngx_http_wa_chan_shctx_t *sh,
    ngx_uint_t *chans, ngx_uint_t n);

/* wa_send's pacing (ngx_http_wa_pace.c): 9 metrics a channel */
#define NGX_HTTP_WA_STATUS_PACING_BUF   2048

static const ngx_http_wa_status_section_t  ngx_http_wa_status_sections[] = {
    { NGX_HTTP_WA_STATUS_PACING_BUF, ngx_http_wa_status_pacing_json,
      ngx_http_wa_status_pacing_prometheus },
    { 0, NULL, NULL }
};


static void ngx_http_wa_status_read(ngx_http_wa_main_conf_t *wmcf,
    ngx_http_wa_status_t *st);
static u_char *ngx_http_wa_status_json(u_char *p, ngx_http_wa_status_t *st,
    ngx_http_wa_main_conf_t *wmcf);
static u_char *ngx_http_wa_status_json_counters(u_char *p,
    wa_ring_hdr_t *counters, const wa_ring_counter_t *c, size_t n);
static u_char *ngx_http_wa_status_prometheus(u_char *p,
    ngx_http_wa_status_t *st);
static u_char *ngx_http_wa_status_metrics(u_char *p, wa_ring_hdr_t *counters,
    const wa_ring_counter_t *c, size_t n, const char *type);
static ngx_int_t ngx_http_wa_status_wants_text(ngx_http_request_t *r);
static ngx_int_t ngx_http_wa_status_channels_read(ngx_http_request_t *r,
    ngx_http_wa_main_conf_t *wmcf, ngx_http_wa_status_t *st);
static u_char *ngx_http_wa_status_channels_json(u_char *p,
    ngx_http_wa_status_t *st, ngx_http_wa_main_conf_t *wmcf);
static u_char *ngx_http_wa_status_channels_prometheus(u_char *p,
    ngx_http_wa_status_t *st);
static uint64_t ngx_http_wa_age(uint64_t now, uint64_t then);


#define wa_load(field)  __atomic_load_n(&hdr->field, __ATOMIC_RELAXED)


ngx_int_t
ngx_http_wa_status_handler(ngx_http_request_t *r)
{
    u_char                   *body, *p;
    size_t                    size;
    ngx_int_t                 rc;
    ngx_http_wa_status_t      st;

    const ngx_http_wa_status_section_t  *sec;
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

    if (ngx_http_wa_status_channels_read(r, wmcf, &st) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    size = NGX_HTTP_WA_STATUS_BUF + WA_RING_ERR_LEN * 6
           + wmcf->ring_path.len * 6 + NGX_HTTP_WA_STATUS_CHANNELS_BUF
           + st.nchans * NGX_HTTP_WA_STATUS_CHANNEL_BUF
           + st.ncodes * NGX_HTTP_WA_STATUS_CODE_BUF;

    for (sec = ngx_http_wa_status_sections; sec->json; sec++) {
        size += (st.nchans + 1) * sec->size;
    }

    body = ngx_pnalloc(r->pool, size);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_wa_status_wants_text(r)) {
        p = ngx_http_wa_status_prometheus(body, &st);
        p = ngx_http_wa_status_channels_prometheus(p, &st);

        for (sec = ngx_http_wa_status_sections; sec->json; sec++) {
            if (st.chan != NULL) {
                p = sec->prometheus(p, wmcf, st.chan, st.chans, st.nchans);
            }
        }

        return ngx_http_wa_reply_body(r, NGX_HTTP_OK, &prom, body, p - body);
    }

    p = ngx_http_wa_status_json(body, &st, wmcf);

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
    st->reserved = wa_ring_keep(&wmcf->ring);
    st->head = wa_ring_head(&wmcf->ring);
    st->tail = wa_ring_tail(&wmcf->ring);
    st->writer_pid = wa_load(writer_pid);
    st->heartbeat_ms = wa_load(writer_heartbeat_ms);
    st->last_flush_ms = wa_load(last_flush_ms);

#define wa_copy(name, metric, labels)  st->counters.name = wa_load(name);
    WA_RING_PRODUCER_COUNTERS(wa_copy)
    WA_RING_WRITER_COUNTERS(wa_copy)
    WA_RING_WRITER_GAUGES(wa_copy)
    WA_RING_WRITER_COUNTERS_TAIL(wa_copy)
#undef wa_copy

    st->census_ms = wa_load(census_ms);
    st->receipts_oldest_ms = wa_load(receipts_oldest_ms);

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
            "\"size\":%uL,\"reserved\":%uL,\"head\":%uL,\"tail\":%uL,"
            "\"bytes_waiting\":%uL,\"records_waiting\":%uL},"
            "\"producers\":{",
            st->capacity, st->reserved, st->head, st->tail,
            st->tail - st->head,
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

    p = ngx_http_wa_status_channels_json(p, st, wmcf);

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

    /* what the writer counted in the database; null: not counted (no
     * writer yet, or one older than these fields) */
    p = ngx_sprintf(p, "\",\"census_age_ms\":");

    if (st->census_ms == 0) {
        p = ngx_sprintf(p, "null,\"dead_letters_waiting\":null,"
                        "\"receipts_waiting\":null,"
                        "\"receipts_oldest_age_ms\":null");

    } else {
        p = ngx_sprintf(p, "%uL,", ngx_http_wa_age(st->now_ms,
                                                   st->census_ms));
        p = ngx_http_wa_status_json_counters(p, c, wa_ring_writer_gauges,
                                             wa_ring_writer_gauges_n);
        p = ngx_sprintf(p, ",\"receipts_oldest_age_ms\":%uL",
                        ngx_http_wa_age(st->now_ms, st->receipts_oldest_ms));
    }

    return ngx_sprintf(p, "}}\n");
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
            "# TYPE wa_ring_reserved_bytes gauge\n"
            "wa_ring_reserved_bytes %uL\n"
            "# TYPE wa_ring_waiting_bytes gauge\n"
            "wa_ring_waiting_bytes %uL\n"
            "# TYPE wa_ring_head_bytes counter\n"
            "wa_ring_head_bytes %uL\n"
            "# TYPE wa_ring_tail_bytes counter\n"
            "wa_ring_tail_bytes %uL\n",
            st->available ? 1 : 0, st->capacity, st->reserved,
            st->tail - st->head, st->head, st->tail);

    p = ngx_http_wa_status_metrics(p, &st->counters,
                                   wa_ring_producer_counters,
                                   wa_ring_producer_counters_n, "counter");

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
                                   wa_ring_writer_counters_n, "counter");

    p = ngx_sprintf(p,
            "# TYPE wa_writer_last_flush_age_seconds gauge\n"
            "wa_writer_last_flush_age_seconds %uL\n",
            ngx_http_wa_age(st->now_ms, st->last_flush_ms) / 1000);

    /* counted by the writer in the database: absent until it did, so an
     * alert on them never fires on a zero nobody counted */
    if (st->census_ms == 0) {
        return p;
    }

    p = ngx_sprintf(p,
            "# TYPE wa_writer_census_age_seconds gauge\n"
            "wa_writer_census_age_seconds %uL\n",
            ngx_http_wa_age(st->now_ms, st->census_ms) / 1000);

    p = ngx_http_wa_status_metrics(p, &st->counters, wa_ring_writer_gauges,
                                   wa_ring_writer_gauges_n, "gauge");

    return ngx_sprintf(p,
            "# TYPE wa_writer_receipts_oldest_age_seconds gauge\n"
            "wa_writer_receipts_oldest_age_seconds %uL\n",
            ngx_http_wa_age(st->now_ms, st->receipts_oldest_ms) / 1000);
}


/* the exported counters (or gauges); one TYPE line per metric, its labels
 * on each */

static u_char *
ngx_http_wa_status_metrics(u_char *p, wa_ring_hdr_t *counters,
    const wa_ring_counter_t *c, size_t n, const char *type)
{
    size_t       i;
    const char  *last;

    last = NULL;

    for (i = 0; i < n; i++) {

        if (c[i].metric == NULL) {
            continue;
        }

        if (last == NULL || ngx_strcmp(last, c[i].metric) != 0) {
            p = ngx_sprintf(p, "# TYPE %s %s\n", c[i].metric, type);
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


/* ---- the per-channel section ------------------------------------------ */

/*
 * The channels in use and their error codes, by index: read once, so the
 * buffer is sized for what is rendered even while workers add channels.
 */

static ngx_int_t
ngx_http_wa_status_channels_read(ngx_http_request_t *r,
    ngx_http_wa_main_conf_t *wmcf, ngx_http_wa_status_t *st)
{
    ngx_uint_t                 i;
    ngx_http_wa_chan_shctx_t  *sh;

    sh = ngx_http_wa_channels(wmcf);
    st->chan = sh;

    if (sh == NULL) {
        return NGX_OK;
    }

    st->chans = ngx_palloc(r->pool, NGX_HTTP_WA_CHANNELS_MAX
                                    * sizeof(ngx_uint_t));
    st->codes = ngx_palloc(r->pool, NGX_HTTP_WA_CODES_MAX
                                    * sizeof(ngx_uint_t));

    if (st->chans == NULL || st->codes == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < NGX_HTTP_WA_CHANNELS_MAX; i++) {
        if (__atomic_load_n(&sh->channels[i].state, __ATOMIC_ACQUIRE)) {
            st->chans[st->nchans++] = i;
        }
    }

    for (i = 0; i < NGX_HTTP_WA_CODES_MAX; i++) {
        if (__atomic_load_n(&sh->codes[i].state, __ATOMIC_ACQUIRE)) {
            st->codes[st->ncodes++] = i;
        }
    }

    return NGX_OK;
}


/* "other" is shown once something was counted there */

static ngx_flag_t
ngx_http_wa_status_channel_shown(ngx_http_wa_status_t *st, ngx_uint_t i)
{
    ngx_uint_t                        k;
    const ngx_http_wa_chan_counter_t *c;

    if (i != 0) {
        return 1;
    }

    for (c = ngx_http_wa_chan_counters; c->name; c++) {
        if (__atomic_load_n((uint64_t *) ((u_char *) &st->chan->channels[0]
                                          + c->offset), __ATOMIC_RELAXED))
        {
            return 1;
        }
    }

    for (k = 0; k < st->ncodes; k++) {
        if (st->chan->codes[st->codes[k]].channel == 0
            && __atomic_load_n(&st->chan->codes[st->codes[k]].count,
                               __ATOMIC_RELAXED))
        {
            return 1;
        }
    }

    return 0;
}


/*
 * ,"channels":{"<phone number id>":{"business":"1","sends":N,...,
 * "errors":{"<code>":N,...}},...},"channels_dropped":{...}
 *
 * One object per channel: ngx_http_wa_status_sections add what other
 * concerns count per channel inside it, after "errors".
 */

static u_char *
ngx_http_wa_status_channels_json(u_char *p, ngx_http_wa_status_t *st,
    ngx_http_wa_main_conf_t *wmcf)
{
    ngx_uint_t                        i, k, first;

    const ngx_http_wa_status_section_t  *sec;
    ngx_http_wa_chan_slot_t          *ch;
    ngx_http_wa_code_slot_t          *code;
    const ngx_http_wa_chan_counter_t *c;

    p = ngx_sprintf(p, "},\"channels\":{");

    if (st->chan == NULL) {
        return p;
    }

    first = 1;

    for (i = 0; i < st->nchans; i++) {
        if (!ngx_http_wa_status_channel_shown(st, st->chans[i])) {
            continue;
        }

        ch = &st->chan->channels[st->chans[i]];

        /* ids and businesses are plain tokens (checked when counted) */
        p = ngx_sprintf(p, "%s\"%*s\":{\"business\":\"%*s\"",
                        first ? "" : ",", (size_t) ch->id_len, ch->id,
                        (size_t) ch->business_len, ch->business);
        first = 0;

        for (c = ngx_http_wa_chan_counters; c->name; c++) {
            p = ngx_sprintf(p, ",\"%s\":%uL", c->name,
                            __atomic_load_n((uint64_t *) ((u_char *) ch
                                                          + c->offset),
                                            __ATOMIC_RELAXED));
        }

        p = ngx_sprintf(p, ",\"errors\":{");

        for (k = 0; k < st->ncodes; k++) {
            code = &st->chan->codes[st->codes[k]];

            if (code->channel != st->chans[i]) {
                continue;
            }

            p = ngx_sprintf(p, "%s\"%*s\":%uL",
                            p[-1] == '{' ? "" : ",", (size_t) code->code_len,
                            code->code, __atomic_load_n(&code->count,
                                                        __ATOMIC_RELAXED));
        }

        p = ngx_sprintf(p, "}");

        for (sec = ngx_http_wa_status_sections; sec->json; sec++) {
            p = sec->json(p, wmcf, ch);
        }

        p = ngx_sprintf(p, "}");
    }

    return ngx_sprintf(p, "},\"channels_dropped\":{\"channels\":%uL,"
                       "\"error_codes\":%uL",
                       __atomic_load_n(&st->chan->channels_dropped,
                                       __ATOMIC_RELAXED),
                       __atomic_load_n(&st->chan->codes_dropped,
                                       __ATOMIC_RELAXED));
}


static u_char *
ngx_http_wa_status_channels_prometheus(u_char *p, ngx_http_wa_status_t *st)
{
    ngx_uint_t                        i, k;
    const char                       *last;
    ngx_http_wa_chan_slot_t          *ch;
    ngx_http_wa_code_slot_t          *code;
    const ngx_http_wa_chan_counter_t *c;

    if (st->chan == NULL) {
        return p;
    }

    last = NULL;

    /* a family's samples together: the list keeps a metric's rows adjacent */
    for (c = ngx_http_wa_chan_counters; c->name; c++) {

        if (last == NULL || ngx_strcmp(last, c->metric) != 0) {
            p = ngx_sprintf(p, "# TYPE %s counter\n", c->metric);
            last = c->metric;
        }

        for (i = 0; i < st->nchans; i++) {
            if (!ngx_http_wa_status_channel_shown(st, st->chans[i])) {
                continue;
            }

            ch = &st->chan->channels[st->chans[i]];

            p = ngx_sprintf(p, "%s{phone_number_id=\"%*s\","
                            "business=\"%*s\"%s} %uL\n", c->metric, (size_t) ch->id_len, ch->id,
                            (size_t) ch->business_len, ch->business,
                            c->labels,
                            __atomic_load_n((uint64_t *) ((u_char *) ch
                                                          + c->offset),
                                            __ATOMIC_RELAXED));
        }
    }

    p = ngx_sprintf(p, "# TYPE wa_channel_provider_errors_total counter\n");

    for (k = 0; k < st->ncodes; k++) {
        code = &st->chan->codes[st->codes[k]];
        ch = &st->chan->channels[code->channel];

        if (st->codes[k] == 0 && code->count == 0) {
            continue;               /* "other", never used */
        }

        p = ngx_sprintf(p, "wa_channel_provider_errors_total{"
                        "phone_number_id=\"%*s\",business=\"%*s\","
                        "code=\"%*s\"} %uL\n",
                        (size_t) ch->id_len, ch->id,
                        (size_t) ch->business_len, ch->business,
                        (size_t) code->code_len, code->code,
                        __atomic_load_n(&code->count, __ATOMIC_RELAXED));
    }

    return ngx_sprintf(p,
            "# TYPE wa_channel_dropped_total counter\n"
            "wa_channel_dropped_total{table=\"channels\"} %uL\n"
            "wa_channel_dropped_total{table=\"error_codes\"} %uL\n",
            __atomic_load_n(&st->chan->channels_dropped, __ATOMIC_RELAXED),
            __atomic_load_n(&st->chan->codes_dropped, __ATOMIC_RELAXED));
}


/*
 * A channel's pacing, from the pacing zone (ngx_http_wa_pace.c), inside
 * its object: ,"pacing":{...}: its rate (sends a second; null: rate=off),
 * its pair spacing, what its counters counted since the zone was made (a
 * restart; a reload keeps them), the sends waiting for a turn now and how
 * far ahead its schedule is booked. Nothing for a channel that is not a
 * sending one.
 */

static u_char *
ngx_http_wa_status_pacing_json(u_char *p, ngx_http_wa_main_conf_t *wmcf,
    ngx_http_wa_chan_slot_t *ch)
{
    ngx_http_wa_pace_stat_t  st;

    if (ngx_http_wa_pace_stat(wmcf, ch->id, ch->id_len, &st) != NGX_OK) {
        return p;
    }

    p = ngx_sprintf(p, ",\"pacing\":{\"rate\":");

    if (st.interval_us) {
        p = ngx_sprintf(p, "%uL.%03uL", 1000000 / st.interval_us,
                        1000000000 / st.interval_us % 1000);

    } else {
        p = ngx_sprintf(p, "null");
    }

    p = ngx_sprintf(p,
            ",\"pair_ms\":%uL,\"sends\":%uL,\"waits\":%uL,"
            "\"waited_ms\":%uL,\"queue\":%L,\"backlog_ms\":%uL,"
            "\"retries\":%uL,\"rate_limited\":%uL,\"rejected\":%uL",
            st.pair_gap_us / 1000,
            st.counters[NGX_HTTP_WA_PACE_SENDS],
            st.counters[NGX_HTTP_WA_PACE_WAITS],
            st.counters[NGX_HTTP_WA_PACE_WAITED_MS],
            st.queue > 0 ? st.queue : 0, st.backlog_ms,
            st.counters[NGX_HTTP_WA_PACE_RETRIES],
            st.counters[NGX_HTTP_WA_PACE_RATE_LIMITED],
            st.counters[NGX_HTTP_WA_PACE_REJECTED]);

#if (NGX_HTTP_WA_PACE_BENCH)
    /* make bench's build: the limiter's own time */
    p = ngx_sprintf(p, ",\"bench_ns\":%uL,\"bench_calls\":%uL",
                    st.bench_ns, st.bench_calls);
#endif

    return ngx_sprintf(p, "}");
}


static u_char *
ngx_http_wa_status_pacing_prometheus(u_char *p,
    ngx_http_wa_main_conf_t *wmcf, ngx_http_wa_chan_shctx_t *sh,
    ngx_uint_t *chans, ngx_uint_t n)
{
    int64_t                   v;
    ngx_uint_t                i, m;
    ngx_http_wa_chan_slot_t  *ch;
    ngx_http_wa_pace_stat_t   st;

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

    for (m = 0; m < sizeof(metric) / sizeof(metric[0]); m++) {
        p = ngx_sprintf(p, "# TYPE %s %s\n", metric[m].name, metric[m].type);

        for (i = 0; i < n; i++) {
            ch = &sh->channels[chans[i]];

            if (chans[i] == 0
                || ngx_http_wa_pace_stat(wmcf, ch->id, ch->id_len, &st)
                   != NGX_OK)
            {
                continue;           /* "other", or not a sending channel */
            }

            p = ngx_sprintf(p, "%s{phone_number_id=\"%*s\",business=\"%*s\"} ",
                            metric[m].name, (size_t) ch->id_len, ch->id,
                            (size_t) ch->business_len, ch->business);

            switch (metric[m].counter) {

            case -1:
                v = st.queue > 0 ? st.queue : 0;
                p = ngx_sprintf(p, "%L\n", v);
                break;

            case -2:
                p = ngx_sprintf(p, "%uL\n", st.backlog_ms);
                break;

            case -3:
                /* 0: not paced */
                p = st.interval_us
                    ? ngx_sprintf(p, "%uL.%03uL\n", 1000000 / st.interval_us,
                                  1000000000 / st.interval_us % 1000)
                    : ngx_sprintf(p, "0\n");
                break;

            default:
                p = ngx_sprintf(p, "%uL\n", st.counters[metric[m].counter]);
            }
        }
    }

    return p;
}
