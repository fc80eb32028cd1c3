/*
 * wa_status: ring depth, producer counters and the writer's health, read
 * from the ring header, as JSON (default) or Prometheus text.
 *
 * The writer's fields are written by another process: each is read with an
 * atomic load, and the error text is copied bounded (it may be mid-update,
 * never out of bounds).
 */

#include "ngx_http_wa_module.h"


#define NGX_HTTP_WA_STATUS_BUF   4096
#define NGX_HTTP_WA_WRITER_DEAD  5000   /* ms without heartbeat */


typedef struct {
    ngx_flag_t   available;
    uint64_t     capacity;
    uint64_t     head;
    uint64_t     tail;
    uint64_t     published;
    uint64_t     published_bytes;
    uint64_t     refused;
    uint64_t     refused_too_big;
    int32_t      writer_pid;
    uint64_t     heartbeat_ms;
    uint64_t     last_flush_ms;
    uint64_t     last_flush_records;
    uint64_t     rows_written;
    uint64_t     dead_letters;
    uint64_t     flush_failures;
    uint64_t     skipped_records;
    uint64_t     skipped_bytes;
    uint64_t     corrupt_records;
    uint64_t     last_error_ms;
    uint64_t     lag_ms;
    uint64_t     now_ms;
    u_char       last_error[WA_RING_ERR_LEN];
    size_t       last_error_len;
} ngx_http_wa_status_t;


static void ngx_http_wa_status_read(ngx_http_wa_main_conf_t *wmcf,
    ngx_http_wa_status_t *st);
static u_char *ngx_http_wa_status_json(u_char *p, ngx_http_wa_status_t *st,
    ngx_http_wa_main_conf_t *wmcf);
static u_char *ngx_http_wa_status_prometheus(u_char *p,
    ngx_http_wa_status_t *st);
static ngx_int_t ngx_http_wa_status_wants_text(ngx_http_request_t *r);
static uint64_t ngx_http_wa_age(uint64_t now, uint64_t then);


#define wa_load(field)  __atomic_load_n(&hdr->field, __ATOMIC_RELAXED)


ngx_int_t
ngx_http_wa_status_handler(ngx_http_request_t *r)
{
    u_char                   *body, *p;
    ngx_int_t                 rc;
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

    body = ngx_pnalloc(r->pool, NGX_HTTP_WA_STATUS_BUF + WA_RING_ERR_LEN * 6
                                + wmcf->ring_path.len * 6);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_wa_status_wants_text(r)) {
        p = ngx_http_wa_status_prometheus(body, &st);
        return ngx_http_wa_reply_body(r, NGX_HTTP_OK, &prom, body, p - body);
    }

    p = ngx_http_wa_status_json(body, &st, wmcf);

    return ngx_http_wa_reply_body(r, NGX_HTTP_OK, &json, body, p - body);
}


static void
ngx_http_wa_status_read(ngx_http_wa_main_conf_t *wmcf,
    ngx_http_wa_status_t *st)
{
    size_t          n;
    ngx_time_t     *tp;
    wa_ring_hdr_t  *hdr;

    ngx_memzero(st, sizeof(ngx_http_wa_status_t));

    tp = ngx_timeofday();
    st->now_ms = (uint64_t) tp->sec * 1000 + tp->msec;

    if (!ngx_http_wa_ring_usable(wmcf, ngx_cycle->log)) {
        return;
    }

    hdr = wmcf->ring.hdr;

    st->available = 1;
    st->capacity = wmcf->ring.capacity;
    st->head = wa_ring_head(&wmcf->ring);
    st->tail = wa_ring_tail(&wmcf->ring);
    st->published = wa_load(published);
    st->published_bytes = wa_load(published_bytes);
    st->refused = wa_load(refused);
    st->refused_too_big = wa_load(refused_too_big);
    st->writer_pid = wa_load(writer_pid);
    st->heartbeat_ms = wa_load(writer_heartbeat_ms);
    st->last_flush_ms = wa_load(last_flush_ms);
    st->last_flush_records = wa_load(last_flush_records);
    st->rows_written = wa_load(rows_written);
    st->dead_letters = wa_load(dead_letters);
    st->flush_failures = wa_load(flush_failures);
    st->skipped_records = wa_load(skipped_records);
    st->skipped_bytes = wa_load(skipped_bytes);
    st->corrupt_records = wa_load(corrupt_records);
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
    uint64_t  hb_age;

    hb_age = ngx_http_wa_age(st->now_ms, st->heartbeat_ms);

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
            "\"records_waiting\":%uL},"
            "\"producers\":{\"published\":%uL,\"published_bytes\":%uL,"
            "\"refused\":%uL,\"refused_too_big\":%uL},",
            st->capacity, st->head, st->tail, st->tail - st->head,
            st->published > st->rows_written + st->dead_letters
                            + st->skipped_records + st->corrupt_records
            ? st->published - st->rows_written - st->dead_letters
              - st->skipped_records - st->corrupt_records
            : 0,
            st->published, st->published_bytes, st->refused,
            st->refused_too_big);

    p = ngx_sprintf(p,
            "\"writer\":{\"alive\":%s,\"pid\":%D,\"heartbeat_age_ms\":%uL,"
            "\"last_flush_age_ms\":%uL,\"last_flush_records\":%uL,"
            "\"rows_written\":%uL,\"dead_letters\":%uL,"
            "\"flush_failures\":%uL,\"skipped_records\":%uL,"
            "\"skipped_bytes\":%uL,\"corrupt_records\":%uL,\"lag_ms\":%uL,"
            "\"last_error_age_ms\":%uL,\"last_error\":\"",
            (st->heartbeat_ms && hb_age < NGX_HTTP_WA_WRITER_DEAD)
            ? "true" : "false",
            st->writer_pid, hb_age,
            ngx_http_wa_age(st->now_ms, st->last_flush_ms),
            st->last_flush_records, st->rows_written, st->dead_letters,
            st->flush_failures, st->skipped_records, st->skipped_bytes,
            st->corrupt_records, st->lag_ms,
            ngx_http_wa_age(st->now_ms, st->last_error_ms));

    p = (u_char *) ngx_escape_json(p, st->last_error, st->last_error_len);

    return ngx_sprintf(p, "\"}}\n");
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
            "wa_ring_tail_bytes %uL\n"
            "# TYPE wa_published_records_total counter\n"
            "wa_published_records_total %uL\n"
            "# TYPE wa_published_bytes_total counter\n"
            "wa_published_bytes_total %uL\n"
            "# TYPE wa_refused_total counter\n"
            "wa_refused_total{reason=\"full\"} %uL\n"
            "wa_refused_total{reason=\"too_big\"} %uL\n",
            st->available ? 1 : 0, st->capacity, st->tail - st->head,
            st->head, st->tail, st->published, st->published_bytes,
            st->refused, st->refused_too_big);

    return ngx_sprintf(p,
            "# TYPE wa_writer_up gauge\n"
            "wa_writer_up %d\n"
            "# TYPE wa_writer_heartbeat_age_seconds gauge\n"
            "wa_writer_heartbeat_age_seconds %uL.%03uL\n"
            "# TYPE wa_writer_lag_seconds gauge\n"
            "wa_writer_lag_seconds %uL.%03uL\n"
            "# TYPE wa_writer_rows_written_total counter\n"
            "wa_writer_rows_written_total %uL\n"
            "# TYPE wa_writer_dead_letters_total counter\n"
            "wa_writer_dead_letters_total %uL\n"
            "# TYPE wa_writer_flush_failures_total counter\n"
            "wa_writer_flush_failures_total %uL\n"
            "# TYPE wa_writer_skipped_records_total counter\n"
            "wa_writer_skipped_records_total %uL\n"
            "# TYPE wa_writer_corrupt_records_total counter\n"
            "wa_writer_corrupt_records_total %uL\n"
            "# TYPE wa_writer_last_flush_age_seconds gauge\n"
            "wa_writer_last_flush_age_seconds %uL\n",
            (st->heartbeat_ms && hb_age < NGX_HTTP_WA_WRITER_DEAD) ? 1 : 0,
            hb_age / 1000, hb_age % 1000,
            st->lag_ms / 1000, st->lag_ms % 1000,
            st->rows_written, st->dead_letters, st->flush_failures,
            st->skipped_records, st->corrupt_records,
            ngx_http_wa_age(st->now_ms, st->last_flush_ms) / 1000);
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
