/*
 * wa_webhook: the Cloud API's GET verification and POST event delivery.
 *
 * A POST is answered 200 only once every message, status, error, echo and
 * raw change of the body is published in the ring: Meta retries anything else for days, so a
 * 503 loses nothing and a premature 200 would.
 */

#include "ngx_http_wa_module.h"
#include "wa_webhook_parse.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>


#define NGX_HTTP_WA_SIG_HEADER  "X-Hub-Signature-256"
#define NGX_HTTP_WA_SIG_PREFIX  "sha256="


typedef struct {
    ngx_http_request_t      *request;
    ngx_http_wa_loc_conf_t  *conf;
    ngx_int_t                publish_rc;
    u_char                   business[NGX_INT64_LEN + 1];
} ngx_http_wa_webhook_emit_t;


static ngx_int_t ngx_http_wa_webhook_verify(ngx_http_request_t *r,
    ngx_http_wa_loc_conf_t *wlcf);
static void ngx_http_wa_webhook_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_wa_webhook_process(ngx_http_request_t *r);
static ngx_int_t ngx_http_wa_signature_ok(ngx_http_request_t *r,
    ngx_http_wa_loc_conf_t *wlcf, u_char *body, size_t len);
static ngx_int_t ngx_http_wa_arg(ngx_http_request_t *r, const char *name,
    size_t len, ngx_str_t *value);
static const char *ngx_http_wa_webhook_business(wa_webhook_ctx_t *ctx,
    const char *phone_id);
static int ngx_http_wa_webhook_emit(wa_webhook_ctx_t *ctx, wa_record_t *rec);
static ngx_int_t ngx_http_wa_webhook_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_wa_webhook_count(ngx_http_request_t *r,
    size_t events, size_t echoes, size_t errors);
static ngx_int_t ngx_http_wa_webhook_sync(ngx_http_request_t *r,
    wa_webhook_ctx_t *ctx);
static void ngx_http_wa_webhook_published(ngx_http_request_t *r,
    ngx_http_wa_main_conf_t *wmcf, wa_record_t *rec);
static void ngx_http_wa_webhook_synced(ngx_http_wa_sync_wait_t *w,
    ngx_int_t rc);


/* a body whose records wait to be on disk (wa_ring ... sync=on) */
typedef struct {
    ngx_http_wa_sync_wait_t  wait;
    ngx_http_request_t      *request;
    size_t                   events;
    size_t                   echoes;
    size_t                   errors;
} ngx_http_wa_webhook_sync_t;


ngx_int_t
ngx_http_wa_webhook_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_http_wa_loc_conf_t  *wlcf;

    wlcf = ngx_http_get_module_loc_conf(r, ngx_http_wa_module);

    if (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_wa_webhook_verify(r, wlcf);
    }

    return ngx_http_wa_read_json(r, ngx_http_wa_webhook_body);
}


/* GET ?hub.mode=subscribe&hub.verify_token=T&hub.challenge=C */

static ngx_int_t
ngx_http_wa_webhook_verify(ngx_http_request_t *r, ngx_http_wa_loc_conf_t *wlcf)
{
    ngx_str_t         mode, token, challenge;
    static ngx_str_t  text = ngx_string("text/plain");

    if (ngx_http_wa_arg(r, "hub.mode", 8, &mode) != NGX_OK
        || ngx_http_wa_arg(r, "hub.verify_token", 16, &token) != NGX_OK
        || ngx_http_wa_arg(r, "hub.challenge", 13, &challenge) != NGX_OK)
    {
        return ngx_http_wa_reply_error(r, NGX_HTTP_BAD_REQUEST,
                                       "hub.mode, hub.verify_token and "
                                       "hub.challenge are required");
    }

    if (mode.len != 9 || ngx_strncmp(mode.data, "subscribe", 9) != 0
        || wlcf->verify_token.len == 0
        || !ngx_http_wa_streq(&token, &wlcf->verify_token))
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "wa webhook: verification refused (wrong token or mode)");
        return ngx_http_wa_reply_error(r, NGX_HTTP_FORBIDDEN,
                                       "verification refused");
    }

    /* echo the challenge as plain text, as Meta expects */
    return ngx_http_wa_reply_body(r, NGX_HTTP_OK, &text, challenge.data,
                                  challenge.len);
}


static void
ngx_http_wa_webhook_body(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    rc = ngx_http_wa_webhook_process(r);

    /* NGX_DONE: the answer waits for the ring's sync */
    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


static ngx_int_t
ngx_http_wa_webhook_process(ngx_http_request_t *r)
{
    int                          rc;
    u_char                      *body, ms[NGX_INT64_LEN + 1];
    size_t                       len;
    ngx_uint_t                   level;
    ngx_time_t                  *tp;
    wa_webhook_ctx_t             ctx;
    ngx_http_wa_loc_conf_t      *wlcf;
    ngx_http_wa_webhook_emit_t   emit;

    wlcf = ngx_http_get_module_loc_conf(r, ngx_http_wa_module);

    /*
     * Content-Length: 0, or a chunked body of no chunk (nginx counts its
     * length here): the body chain then holds only a buffer with no data
     */
    if (r->request_body == NULL || r->headers_in.content_length_n == 0) {
        return ngx_http_wa_reply_error(r, NGX_HTTP_BAD_REQUEST,
                                       "empty body");
    }

    body = ngx_http_wa_body(r, &len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (len == 0) {
        return ngx_http_wa_reply_error(r, NGX_HTTP_BAD_REQUEST,
                                       "empty body");
    }

    if (wlcf->app_secret.len
        && ngx_http_wa_signature_ok(r, wlcf, body, len) != NGX_OK)
    {
        return ngx_http_wa_reply_error(r, NGX_HTTP_UNAUTHORIZED,
                                       "invalid X-Hub-Signature-256");
    }

    tp = ngx_timeofday();
    *ngx_sprintf(ms, "%uL", (uint64_t) tp->sec * 1000 + tp->msec) = '\0';

    emit.request = r;
    emit.conf = wlcf;
    emit.publish_rc = NGX_OK;

    ngx_memzero(&ctx, sizeof(wa_webhook_ctx_t));
    ctx.business = ngx_http_wa_webhook_business;
    ctx.emit = ngx_http_wa_webhook_emit;
    ctx.data = &emit;
    ctx.default_business = (char *) wlcf->default_business.data;
    ctx.received_ms = (char *) ms;

    rc = wa_webhook_parse((char *) body, len, &ctx);

    switch (rc) {

    case WA_WH_OK:
        if (ctx.unknown_channels) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "wa webhook: %ui change(s) for an unknown "
                          "phone_number_id recorded under business %V",
                          (ngx_uint_t) ctx.unknown_channels,
                          &wlcf->default_business);
        }

        ngx_log_debug5(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "wa webhook: %ui messages, %ui statuses, %ui errors, "
                       "%ui echoes, %ui raw events",
                       (ngx_uint_t) ctx.messages, (ngx_uint_t) ctx.statuses,
                       (ngx_uint_t) ctx.errors, (ngx_uint_t) ctx.echoes,
                       (ngx_uint_t) ctx.events);

        if (((ngx_http_wa_main_conf_t *)
             ngx_http_get_module_main_conf(r, ngx_http_wa_module))->sync)
        {
            return ngx_http_wa_webhook_sync(r, &ctx);
        }

        ngx_http_wa_webhook_count(r, ctx.events, ctx.echoes, ctx.errors);

        return ngx_http_wa_reply_json(r, NGX_HTTP_OK,
                                      (u_char *) "{\"ok\":true}", 11);

    case WA_WH_INVALID:
        /*
         * a signed body is Meta's: refused, it is lost once Meta gives up
         * retrying, so it must show at nginx's default log level
         */
        level = wlcf->app_secret.len ? NGX_LOG_ERR : NGX_LOG_INFO;

        ngx_log_error(level, r->connection->log, 0,
                      "wa webhook: body refused: %s", ctx.error);
        return ngx_http_wa_reply_error(r, NGX_HTTP_BAD_REQUEST, ctx.error);

    case WA_WH_EMIT_FAILED:
        /* records published before this one are idempotent on retry */
        return ngx_http_wa_reply_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       "ring full or unavailable, retry");

    default:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}


static ngx_int_t
ngx_http_wa_signature_ok(ngx_http_request_t *r, ngx_http_wa_loc_conf_t *wlcf,
    u_char *body, size_t len)
{
    u_char            md[EVP_MAX_MD_SIZE], given[32];
    ngx_str_t         hex;
    unsigned int      md_len;
    ngx_uint_t        i;
    ngx_int_t         hi, lo;
    ngx_table_elt_t  *h;

    h = ngx_http_wa_header(r, NGX_HTTP_WA_SIG_HEADER,
                           sizeof(NGX_HTTP_WA_SIG_HEADER) - 1);
    if (h == NULL) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "wa webhook: no " NGX_HTTP_WA_SIG_HEADER ", refused");
        return NGX_DECLINED;
    }

    hex = h->value;

    if (hex.len != sizeof(NGX_HTTP_WA_SIG_PREFIX) - 1 + 64
        || ngx_strncasecmp(hex.data, (u_char *) NGX_HTTP_WA_SIG_PREFIX,
                           sizeof(NGX_HTTP_WA_SIG_PREFIX) - 1)
           != 0)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "wa webhook: malformed " NGX_HTTP_WA_SIG_HEADER
                      ", refused");
        return NGX_DECLINED;
    }

    hex.data += sizeof(NGX_HTTP_WA_SIG_PREFIX) - 1;

    for (i = 0; i < 32; i++) {
        hi = ngx_hextoi(&hex.data[2 * i], 1);
        lo = ngx_hextoi(&hex.data[2 * i + 1], 1);

        if (hi == NGX_ERROR || lo == NGX_ERROR) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "wa webhook: malformed " NGX_HTTP_WA_SIG_HEADER
                          ", refused");
            return NGX_DECLINED;
        }

        given[i] = (u_char) (hi << 4 | lo);
    }

    if (HMAC(EVP_sha256(), wlcf->app_secret.data, (int) wlcf->app_secret.len,
             body, len, md, &md_len)
        == NULL || md_len != 32)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "wa webhook: HMAC-SHA256 failed");
        return NGX_ERROR;
    }

    /* constant time: the compare must not tell how many bytes matched */
    if (CRYPTO_memcmp(md, given, 32) != 0) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "wa webhook: " NGX_HTTP_WA_SIG_HEADER " does not "
                      "match the body, refused");
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* a query argument, URL-decoded into the request pool */

static ngx_int_t
ngx_http_wa_arg(ngx_http_request_t *r, const char *name, size_t len,
    ngx_str_t *value)
{
    u_char     *dst, *src;
    ngx_str_t   raw;

    if (ngx_http_arg(r, (u_char *) name, len, &raw) != NGX_OK) {
        return NGX_DECLINED;
    }

    dst = ngx_pnalloc(r->pool, raw.len + 1);
    if (dst == NULL) {
        return NGX_ERROR;
    }

    value->data = dst;
    src = raw.data;

    ngx_unescape_uri(&dst, &src, raw.len, NGX_UNESCAPE_URI);

    value->len = dst - value->data;

    return NGX_OK;
}


static const char *
ngx_http_wa_webhook_business(wa_webhook_ctx_t *ctx, const char *phone_id)
{
    ngx_http_wa_channel_t       *ch;
    ngx_http_wa_webhook_emit_t  *emit;

    emit = ctx->data;

    ch = ngx_http_wa_channel_find(emit->conf, (u_char *) phone_id,
                                  ngx_strlen(phone_id));
    if (ch == NULL) {
        return NULL;
    }

    /* conf strings are not NUL-terminated at the parameter's end */
    *ngx_cpymem(emit->business, ch->business.data,
                ngx_min(ch->business.len, NGX_INT64_LEN)) = '\0';

    return (char *) emit->business;
}


static int
ngx_http_wa_webhook_emit(wa_webhook_ctx_t *ctx, wa_record_t *rec)
{
    ngx_http_wa_main_conf_t     *wmcf;
    ngx_http_wa_webhook_emit_t  *emit;

    emit = ctx->data;

    wmcf = ngx_http_get_module_main_conf(emit->request, ngx_http_wa_module);

    emit->publish_rc = ngx_http_wa_publish(wmcf,
                                           emit->request->connection->log,
                                           rec, NGX_HTTP_WA_OPENS);

    if (emit->publish_rc != NGX_OK) {
        return -1;
    }

    ngx_http_wa_webhook_published(emit->request, wmcf, rec);

    return 0;
}


/*
 * A record is in the ring: the request's $wa_records, $wa_channel and
 * $wa_business (the first change's), and its channel's counters.
 */

static void
ngx_http_wa_webhook_published(ngx_http_request_t *r,
    ngx_http_wa_main_conf_t *wmcf, wa_record_t *rec)
{
    ngx_str_t            id, business;
    ngx_http_wa_vars_t  *vars;

    id.data = (u_char *) rec->f[WA_F_PHONE_NUMBER_ID].data;
    id.len = id.data ? rec->f[WA_F_PHONE_NUMBER_ID].len : 0;
    business.data = (u_char *) rec->f[WA_F_BUSINESS].data;
    business.len = business.data ? rec->f[WA_F_BUSINESS].len : 0;

    vars = ngx_http_wa_vars(r);

    if (vars != NULL) {
        vars->records++;

        /* the record's bytes are the parser's: copied once */
        if (vars->channel.len == 0 && id.len) {
            vars->channel.data = ngx_pstrdup(r->pool, &id);
            vars->channel.len = vars->channel.data ? id.len : 0;
        }

        if (vars->business.len == 0 && business.len) {
            vars->business.data = ngx_pstrdup(r->pool, &business);
            vars->business.len = vars->business.data ? business.len : 0;
        }
    }

    if (rec->type == WA_REC_IN_MESSAGE) {
        ngx_http_wa_channels_count(wmcf, &id, &business,
                                   ngx_http_wa_chan_offset(messages), 1);

    } else if (rec->type == WA_REC_STATUS) {
        ngx_http_wa_channels_count(wmcf, &id, &business,
                                   ngx_http_wa_chan_offset(statuses), 1);
    }
}


/*
 * The counters live in a zone of their own: each worker answers wa_status
 * for all of them, and the ring header has no room. A slab pool is the
 * smallest zone nginx makes; a reload keeps it, and the counts with it.
 */

ngx_int_t
ngx_http_wa_webhook_init_conf(ngx_conf_t *cf, ngx_http_wa_main_conf_t *wmcf)
{
    ngx_str_t  name = ngx_string("wa_webhook_counters");

    wmcf->webhook_zone = ngx_shared_memory_add(cf, &name, 8 * ngx_pagesize,
                                               &ngx_http_wa_module);
    if (wmcf->webhook_zone == NULL) {
        return NGX_ERROR;
    }

    wmcf->webhook_zone->init = ngx_http_wa_webhook_init_zone;

    return NGX_OK;
}


static ngx_int_t
ngx_http_wa_webhook_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t                 *shpool;
    ngx_http_wa_webhook_counters_t  *c;

    if (data != NULL) {
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    c = ngx_slab_calloc(shpool, sizeof(ngx_http_wa_webhook_counters_t));
    if (c == NULL) {
        return NGX_ERROR;
    }

    shpool->data = c;
    shm_zone->data = c;

    return NGX_OK;
}


ngx_http_wa_webhook_counters_t *
ngx_http_wa_webhook_counters(ngx_http_wa_main_conf_t *wmcf)
{
    return wmcf->webhook_zone ? wmcf->webhook_zone->data : NULL;
}


/*
 * sync=on: every record of the body is in the ring; the 200 waits until
 * the ring is on disk. The request stays open (its count holds it) and no
 * timer runs: the sync's own slow-sync timer keeps a worker that shuts
 * down alive until the answer.
 */

static ngx_int_t
ngx_http_wa_webhook_sync(ngx_http_request_t *r, wa_webhook_ctx_t *ctx)
{
    ngx_http_wa_webhook_sync_t  *ws;

    ws = ngx_pcalloc(r->pool, sizeof(ngx_http_wa_webhook_sync_t));
    if (ws == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ws->request = r;
    ws->events = ctx->events;
    ws->echoes = ctx->echoes;
    ws->errors = ctx->errors;
    ws->wait.handler = ngx_http_wa_webhook_synced;
    ws->wait.data = ws;

    if (ngx_http_wa_sync_wait(ngx_http_get_module_main_conf(r,
                                                     ngx_http_wa_module),
                              r->pool, &ws->wait)
        != NGX_OK)
    {
        return ngx_http_wa_reply_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       "ring could not be synced to disk, "
                                       "retry");
    }

    return NGX_DONE;
}


static void
ngx_http_wa_webhook_synced(ngx_http_wa_sync_wait_t *w, ngx_int_t rc)
{
    ngx_connection_t            *c;
    ngx_http_request_t          *r;
    ngx_http_wa_webhook_sync_t  *ws;

    ws = w->data;
    r = ws->request;
    c = r->connection;

    if (rc == NGX_ABORT) {
        /* the worker exits: the client's connection goes with it, Meta
         * retries; the records are in the ring */
        return;
    }

    if (rc == NGX_OK) {
        ngx_http_wa_webhook_count(r, ws->events, ws->echoes, ws->errors);
        rc = ngx_http_wa_reply_json(r, NGX_HTTP_OK,
                                    (u_char *) "{\"ok\":true}", 11);

    } else {
        /* records published before this are idempotent on retry */
        rc = ngx_http_wa_reply_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     "ring could not be synced to disk, "
                                     "retry");
    }

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


/* what a body acknowledged with 200 held; a redelivery counts again */

static void
ngx_http_wa_webhook_count(ngx_http_request_t *r, size_t events,
    size_t echoes, size_t errors)
{
    ngx_http_wa_webhook_counters_t  *c;

    c = ngx_http_wa_webhook_counters(
            ngx_http_get_module_main_conf(r, ngx_http_wa_module));

    if (c == NULL) {
        return;
    }

    if (events) {
        __atomic_add_fetch(&c->raw_events, events, __ATOMIC_RELAXED);
    }

    if (echoes) {
        __atomic_add_fetch(&c->echoes, echoes, __ATOMIC_RELAXED);
    }

    if (errors) {
        __atomic_add_fetch(&c->errors, errors, __ATOMIC_RELAXED);
    }
}
