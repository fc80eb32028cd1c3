/*
 * wa_send: record first, send without blocking, record the outcome.
 *
 *   1. validate (400 names the field; nothing sent, nothing recorded)
 *   2. client_ref seen before: replay its answer (409 while in flight)
 *   3. publish the pending record; no room: 503 and no provider call
 *      (wa_ring ... sync=on: wait until it is on disk; a failed sync:
 *      outcome "failed", not attempted, 503 and no provider call)
 *   4. POST to the Cloud API on this worker's libcurl multi handle
 *   5. publish the outcome, answer 200 / 502 / 504
 *
 * The outcome is "sent" (a wamid), "failed" (the provider refused, or no
 * byte of the request left: safe to send again) or "unknown" (the request
 * left and no readable answer came back: the provider may have accepted
 * it, so nobody must be told to retry).
 *
 * The transfer owns its memory (its own pool): a client that goes away
 * does not cancel the send, whose outcome is still recorded. A worker that
 * exits records an outcome for every send still in flight.
 */

#include "ngx_http_wa_module.h"
#include "ngx_http_wa_curl.h"
#include "ngx_http_wa_idem.h"
#include "ngx_http_wa_claim.h"
#include "wa_send_parse.h"

#include <sys/random.h>


typedef struct {
    ngx_http_request_t        *request;      /* NULL once the client left */
    ngx_http_wa_main_conf_t   *wmcf;
    ngx_http_wa_loc_conf_t    *wlcf;         /* counts its sends */
    ngx_http_wa_xfer_t         xfer;
    ngx_http_wa_sync_wait_t    sync;         /* sync=on: the pending's */
    ngx_log_t                 *log;

    wa_send_req_t              req;
    ngx_str_t                  business;
    ngx_str_t                  channel;      /* its phone number id */
    ngx_str_t                  idem_key;     /* empty: no client_ref */
    char                       local_id[NGX_HTTP_WA_LOCAL_ID_LEN];
    ngx_str_t                  answer;
    ngx_uint_t                 status;
    ngx_pool_cleanup_t        *cln;          /* in the request's pool */
    ngx_uint_t                 attempt;      /* of this local id, from 1 */
    char                       attempt_text[NGX_INT_T_LEN + 1];
    u_char                     verdict;      /* 's', 'u' or 'f' */
    unsigned                   counted:1;    /* in wlcf->send_active */
    unsigned                   claimed:1;    /* holds its client_ref in
                                                wa_send_idempotency_db */
    ngx_http_wa_channel_t     *ch;
    u_char                     received_ms[NGX_INT64_LEN + 1];
    ngx_http_wa_claim_t        claim;

    unsigned                   recorded:1;   /* the outcome is in the ring */
    const char                *outcome;      /* verdict, for $wa_send_status */
    char                       wamid[sizeof(((wa_send_res_t *) 0)->wamid)];
    char                       error_code[
                                   sizeof(((wa_send_res_t *) 0)->error_code)];
} ngx_http_wa_send_ctx_t;


static void ngx_http_wa_send_read(ngx_http_request_t *r);
static ngx_int_t ngx_http_wa_send_start(ngx_http_request_t *r);
static void ngx_http_wa_send_call(ngx_http_wa_send_ctx_t *ctx);
static void ngx_http_wa_send_synced(ngx_http_wa_sync_wait_t *w,
    ngx_int_t rc);
static void ngx_http_wa_send_not_attempted(ngx_http_wa_send_ctx_t *ctx,
    ngx_int_t exiting);
static void ngx_http_wa_send_done(ngx_http_wa_xfer_t *x);
static void ngx_http_wa_send_outcome(ngx_http_wa_send_ctx_t *ctx,
    wa_send_res_t *res, const char *verdict, long http_status);
static void ngx_http_wa_send_answer(ngx_http_wa_send_ctx_t *ctx,
    wa_send_res_t *res, const char *verdict);
static void ngx_http_wa_send_finish(ngx_http_wa_send_ctx_t *ctx);
static void ngx_http_wa_send_ended(ngx_http_wa_claim_t *cl);
static void ngx_http_wa_send_deliver(ngx_http_wa_send_ctx_t *ctx);
static void ngx_http_wa_send_cleanup(void *data);
static void ngx_http_wa_send_free(ngx_http_wa_send_ctx_t *ctx);
static void ngx_http_wa_send_attempt(ngx_http_wa_send_ctx_t *ctx,
    wa_record_t *rec);
static ngx_http_wa_channel_t *ngx_http_wa_send_channel(ngx_http_request_t *r,
    ngx_http_wa_loc_conf_t *wlcf, wa_send_req_t *req, const char **err);
static ngx_int_t ngx_http_wa_send_interrupted(ngx_http_request_t *r,
    ngx_http_wa_send_ctx_t *ctx, ngx_uint_t status, ngx_str_t *answer);
static ngx_int_t ngx_http_wa_send_key_header(ngx_http_request_t *r,
    wa_send_req_t *req);
static ngx_int_t ngx_http_wa_send_go(ngx_http_request_t *r,
    ngx_http_wa_send_ctx_t *ctx);
static ngx_int_t ngx_http_wa_send_claim(ngx_http_request_t *r,
    ngx_http_wa_send_ctx_t *ctx);
static void ngx_http_wa_send_claimed(ngx_http_wa_claim_t *cl);
static void ngx_http_wa_send_end(ngx_http_wa_send_ctx_t *ctx,
    ngx_uint_t status, ngx_str_t *answer, u_char verdict);
static void ngx_http_wa_send_reply(ngx_http_wa_send_ctx_t *ctx,
    ngx_http_request_t *r, ngx_uint_t status, u_char *body, size_t len);
static ngx_int_t ngx_http_wa_send_unavailable(ngx_http_request_t *r,
    const char *msg);

static void ngx_http_wa_send_vars(ngx_http_request_t *r,
    ngx_http_wa_send_ctx_t *ctx);



ngx_int_t
ngx_http_wa_send_init_process(ngx_cycle_t *cycle,
    ngx_http_wa_main_conf_t *wmcf)
{
    /* a pid is no identity across PID namespaces: 64 random bits are */
    if (getrandom(&wmcf->send_nonce, sizeof(wmcf->send_nonce), 0)
        != (ssize_t) sizeof(wmcf->send_nonce))
    {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, ngx_errno,
                      "wa send: getrandom() failed");
        return NGX_ERROR;
    }

    wmcf->curl = ngx_http_wa_curl_create(cycle->log);

    return wmcf->curl ? NGX_OK : NGX_ERROR;
}


/* the ring is still mapped: every send in flight gets its outcome */

void
ngx_http_wa_send_exit_process(ngx_http_wa_main_conf_t *wmcf)
{
    if (wmcf->curl) {
        ngx_http_wa_curl_destroy(wmcf->curl);
        wmcf->curl = NULL;
    }
}


/* ---- the request ------------------------------------------------------- */


ngx_int_t
ngx_http_wa_send_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_http_wa_loc_conf_t  *wlcf;

    wlcf = ngx_http_get_module_loc_conf(r, ngx_http_wa_module);

    if (wlcf->send_keys != NULL && !ngx_http_wa_key_ok(r, wlcf)) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_wa_reply_error(r, NGX_HTTP_UNAUTHORIZED,
                                       "X-WA-Key: missing or wrong");
    }

    return ngx_http_wa_read_json(r, ngx_http_wa_send_read);
}


/*
 * The optional shared key: X-WA-Key must equal one of the wa_send_key
 * values (several, so a key can be rotated without downtime). Compared in
 * constant time; neither key is ever logged.
 */

ngx_int_t
ngx_http_wa_key_ok(ngx_http_request_t *r, ngx_http_wa_loc_conf_t *wlcf)
{
    ngx_uint_t        i, ok;
    ngx_str_t        *key;
    ngx_table_elt_t  *h;

    h = ngx_http_wa_header(r, "X-WA-Key", sizeof("X-WA-Key") - 1);

    if (h == NULL) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "wa_send: no X-WA-Key header, refused");
        return 0;
    }

    key = wlcf->send_keys->elts;
    ok = 0;

    for (i = 0; i < wlcf->send_keys->nelts; i++) {
        /* no early exit: the time does not tell which key matched */
        ok |= ngx_http_wa_streq(&key[i], &h->value);
    }

    if (!ok) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "wa_send: wrong X-WA-Key, refused");
    }

    return ok;
}


static void
ngx_http_wa_send_read(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    rc = ngx_http_wa_send_start(r);

    /* NGX_DONE: the provider call runs; the answer comes later */
    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


static ngx_int_t
ngx_http_wa_send_start(ngx_http_request_t *r)
{
    u_char                   *body;
    char                      err[WA_SEND_ERR_LEN];
    size_t                    len;
    ngx_int_t                 rc;
    ngx_uint_t                status;
    ngx_str_t                 answer;
    ngx_pool_t               *pool;
    ngx_time_t               *tp;
    const char               *msg;
    ngx_http_wa_channel_t    *ch;
    ngx_http_wa_vars_t       *vars;
    ngx_http_wa_send_ctx_t   *ctx;
    ngx_http_wa_loc_conf_t   *wlcf;
    ngx_http_wa_main_conf_t  *wmcf;

    wlcf = ngx_http_get_module_loc_conf(r, ngx_http_wa_module);
    wmcf = ngx_http_get_module_main_conf(r, ngx_http_wa_module);

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return ngx_http_wa_reply_error(r, NGX_HTTP_BAD_REQUEST,
                                       "body: a JSON object is required");
    }

    body = ngx_http_wa_body(r, &len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    pool = ngx_create_pool(4096, ngx_cycle->log);
    if (pool == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = ngx_pcalloc(pool, sizeof(ngx_http_wa_send_ctx_t));
    if (ctx == NULL) {
        ngx_destroy_pool(pool);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->xfer.pool = pool;
    ctx->xfer.data = ctx;
    ctx->xfer.done = ngx_http_wa_send_done;
    ctx->wmcf = wmcf;
    ctx->wlcf = wlcf;
    ctx->log = ngx_cycle->log;

    if (wa_send_parse_request((char *) body, len, &ctx->req, err, sizeof(err))
        != 0)
    {
        ngx_http_wa_send_free(ctx);
        return ngx_http_wa_reply_error(r, NGX_HTTP_BAD_REQUEST, err);
    }

    if (ngx_http_wa_send_key_header(r, &ctx->req) != NGX_OK) {
        ngx_http_wa_send_free(ctx);
        return ngx_http_wa_reply_error(r, NGX_HTTP_BAD_REQUEST,
                                       "Idempotency-Key: 1 to 128 printable "
                                       "ASCII characters, and the same as "
                                       "client_ref when both are given");
    }

    ch = ngx_http_wa_send_channel(r, wlcf, &ctx->req, &msg);
    if (ch == NULL) {
        ngx_http_wa_send_free(ctx);
        return ngx_http_wa_reply_error(r, NGX_HTTP_BAD_REQUEST, msg);
    }

    ctx->business = ch->business;
    ctx->ch = ch;

    ctx->channel = ch->phone_number_id;

    /* unique across workers, hosts and containers (the worker's random
     * nonce: identical pods have identical pids) and restarts (time) */
    ctx->attempt = 1;
    tp = ngx_timeofday();
    ngx_sprintf((u_char *) ctx->local_id, "wa-%xL-%016xL-%xi%Z",
                (uint64_t) tp->sec * 1000 + tp->msec, wmcf->send_nonce,
                ++wmcf->send_seq);
    *ngx_sprintf(ctx->received_ms, "%uL",
                 (uint64_t) tp->sec * 1000 + tp->msec) = '\0';

    /* $wa_channel and $wa_business, whatever comes of the send */
    vars = ngx_http_wa_vars(r);

    if (vars != NULL) {
        vars->channel = ch->phone_number_id;    /* conf: outlives r */
        vars->business = ch->business;
    }

    /* the same client_ref in the same business is sent once */

    if (ctx->req.client_ref[0]) {
        len = ch->business.len + 1 + ngx_strlen(ctx->req.client_ref);

        ctx->idem_key.data = ngx_pnalloc(pool, len);
        if (ctx->idem_key.data == NULL) {
            ngx_http_wa_send_free(ctx);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->idem_key.len = ngx_sprintf(ctx->idem_key.data, "%V:%s",
                                        &ch->business, ctx->req.client_ref)
                            - ctx->idem_key.data;

        rc = ngx_http_wa_idem_begin(wmcf, &ctx->idem_key,
                                    (time_t) ((wlcf->send.timeout
                                               + wlcf->send.shutdown_timeout)
                                              / 1000),
                                    ctx->local_id, &ctx->attempt, &status,
                                    &answer, r->pool);

        if (rc == NGX_HTTP_WA_IDEM_INTERRUPTED) {
            return ngx_http_wa_send_interrupted(r, ctx, status, &answer);
        }

        if (rc == NGX_HTTP_WA_IDEM_BUSY) {
            ngx_http_wa_send_free(ctx);
            return ngx_http_wa_reply_error(r, NGX_HTTP_CONFLICT,
                                           "client_ref: a send with this "
                                           "client_ref is in progress");
        }

        if (rc == NGX_HTTP_WA_IDEM_RETRY) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "wa send %s: client_ref seen before, its last "
                          "attempt was refused: attempt %ui",
                          ctx->local_id, ctx->attempt);
        }

        if (rc == NGX_HTTP_WA_IDEM_DONE) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "wa send: client_ref seen before, answer replayed");
            ngx_http_wa_send_free(ctx);
            return ngx_http_wa_reply_json(r, status, answer.data, answer.len);
        }

        if (rc == NGX_ERROR) {
            ngx_http_wa_send_free(ctx);
            return ngx_http_wa_reply_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "idempotency zone full, retry");
        }

        /* several hosts: PostgreSQL says which send of the key goes */
        if (wmcf->claimdb != NULL) {
            return ngx_http_wa_send_claim(r, ctx);
        }
    }

    return ngx_http_wa_send_go(r, ctx);
}


/* record it, then call the provider: NGX_DONE, or an answer's status */

static ngx_int_t
ngx_http_wa_send_go(ngx_http_request_t *r, ngx_http_wa_send_ctx_t *ctx)
{
    ngx_int_t                 rc;
    wa_record_t               rec;
    ngx_pool_cleanup_t       *cln;
    ngx_http_wa_vars_t       *vars;
    ngx_http_wa_channel_t    *ch;
    ngx_http_wa_loc_conf_t   *wlcf;
    ngx_http_wa_main_conf_t  *wmcf;

    vars = ngx_http_wa_vars(r);
    wlcf = ctx->wlcf;
    wmcf = ctx->wmcf;
    ch = ctx->ch;

    /* the location's own limit, in this worker */
    if (wlcf->send_active >= wlcf->send_concurrency) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "wa send: %ui provider calls of this location in "
                      "flight (wa_send_concurrency), answering 503",
                      wlcf->send_active);
        goto unavailable;
    }


    /* recorded before sent */

    ngx_memzero(&rec, sizeof(wa_record_t));
    rec.type = WA_REC_OUT_PENDING;

    wa_record_set(&rec, WA_F_LOCAL_ID, ctx->local_id);
    rec.f[WA_F_BUSINESS].data = (char *) ch->business.data;
    rec.f[WA_F_BUSINESS].len = ch->business.len;
    rec.f[WA_F_PHONE_NUMBER_ID].data = (char *) ch->phone_number_id.data;
    rec.f[WA_F_PHONE_NUMBER_ID].len = ch->phone_number_id.len;
    wa_record_set(&rec, WA_F_PHONE, ctx->req.to);
    wa_record_set(&rec, WA_F_LEAD_ID,
                  ctx->req.lead_id[0] ? ctx->req.lead_id : NULL);
    wa_record_set(&rec, WA_F_SOURCE, ctx->req.source);
    wa_record_set(&rec, WA_F_CLIENT_REF,
                  ctx->req.client_ref[0] ? ctx->req.client_ref : NULL);
    wa_record_set(&rec, WA_F_MSG_TYPE, ctx->req.type);
    /* readable: the text, a caption, the buttons' titles, a place... */
    wa_record_set(&rec, WA_F_BODY, ctx->req.summary);
    /* the whole request: the message object and its reply context too */
    wa_record_set(&rec, WA_F_PAYLOAD, ctx->req.request_json);
    wa_record_set(&rec, WA_F_RECEIVED_MS, (char *) ctx->received_ms);
    ngx_http_wa_send_attempt(ctx, &rec);

    if (ngx_http_wa_publish(wmcf, r->connection->log, &rec) != NGX_OK) {
        goto unavailable;
    }

    if (vars != NULL) {
        vars->records++;
    }

    /* the local id is final here (a retried client_ref took its own) */
    ngx_http_wa_send_vars(r, ctx);

    ngx_http_wa_channels_count(wmcf, &ctx->channel, &ctx->business,
                               ngx_http_wa_chan_offset(sends), 1);

    /* from here the send lives on: a client that leaves does not stop it */

    wlcf->send_active++;
    ctx->counted = 1;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        /* the send runs on; only the early-exit notice is lost */
        ctx->request = NULL;
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;

    } else {
        cln->handler = ngx_http_wa_send_cleanup;
        cln->data = ctx;
        ctx->cln = cln;
        ctx->request = r;
        rc = NGX_DONE;
    }

    if (!wmcf->sync) {
        ngx_http_wa_send_call(ctx);
        return rc;
    }

    /* the provider is called only once the pending record is on disk */

    ctx->sync.handler = ngx_http_wa_send_synced;
    ctx->sync.data = ctx;

    if (ngx_http_wa_sync_wait(wmcf, ctx->xfer.pool, &ctx->sync, ctx->log)
        != NGX_OK)
    {
        ngx_http_wa_send_not_attempted(ctx, 0);
    }

    return rc;

unavailable:

    ngx_http_wa_send_end(ctx, 0, NULL, 0);
    ngx_http_wa_send_free(ctx);

    return ngx_http_wa_send_unavailable(r, "ring full, ring unavailable or "
                                        "too many sends in flight: nothing "
                                        "was sent, retry");
}


static void
ngx_http_wa_send_synced(ngx_http_wa_sync_wait_t *w, ngx_int_t rc)
{
    ngx_http_wa_send_ctx_t  *ctx = w->data;

    if (rc == NGX_OK) {
        ngx_http_wa_send_call(ctx);
        return;
    }

    ngx_http_wa_send_not_attempted(ctx, rc == NGX_ABORT);
}


/*
 * The pending record is in the ring but may not be on disk (a failed
 * sync), or the worker exits before it is: the provider is not called.
 * The outcome "failed" (retryable, nothing left) settles the row, and the
 * caller gets 503: the same client_ref is attempted again.
 */

static void
ngx_http_wa_send_not_attempted(ngx_http_wa_send_ctx_t *ctx,
    ngx_int_t exiting)
{
    wa_send_res_t  res;

    ngx_memzero(&res, sizeof(wa_send_res_t));
    res.retryable = 1;
    ngx_cpystrn((u_char *) res.error_title,
                (u_char *) (exiting
                            ? "not sent: nginx exited before the send's "
                              "record was synced to disk"
                            : "not sent: the ring could not be synced to "
                              "disk (wa_ring sync=on)"),
                sizeof(res.error_title));

    ngx_log_error(NGX_LOG_ERR, ctx->log, 0,
                  "wa send %s: %s, recorded as failed", ctx->local_id,
                  res.error_title);

    if (ctx->counted) {
        ctx->wlcf->send_active--;
        ctx->counted = 0;
    }

    ctx->status = NGX_HTTP_SERVICE_UNAVAILABLE;
    ctx->xfer.exiting = exiting ? 1 : 0;

    ngx_http_wa_send_answer(ctx, &res, "failed");
    ngx_http_wa_send_finish(ctx);
}


/* the pending record is stored: call the provider */

static void
ngx_http_wa_send_call(ngx_http_wa_send_ctx_t *ctx)
{
    u_char                   *auth, *url;
    char                     *api_body;
    ngx_int_t                 rc;
    ngx_http_wa_channel_t    *ch;
    ngx_http_wa_loc_conf_t   *wlcf;

    ch = ctx->ch;
    wlcf = ctx->wlcf;

    api_body = wa_send_build_body(&ctx->req, ctx->local_id);

    url = ngx_pnalloc(ctx->xfer.pool, wlcf->api_base.len
                                      + ch->phone_number_id.len
                                      + sizeof("//messages"));
    auth = ngx_pnalloc(ctx->xfer.pool, sizeof("Authorization: Bearer ")
                                       + ch->token.len);

    if (api_body == NULL || url == NULL || auth == NULL) {
        goto failed;
    }

    ngx_sprintf(url, "%V/%V/messages%Z", &wlcf->api_base,
                &ch->phone_number_id);
    ngx_sprintf(auth, "Authorization: Bearer %V%Z", &ch->token);

    rc = ngx_http_wa_curl_post(ctx->wmcf->curl, &ctx->xfer, (char *) url,
                               (char *) auth, api_body, ngx_strlen(api_body),
                               &wlcf->send);
    free(api_body);
    api_body = NULL;

    if (rc == NGX_OK) {
        return;
    }

failed:

    /* pending is recorded and nothing was sent: say so in the ring too */
    ngx_log_error(NGX_LOG_ALERT, ctx->log, 0,
                  "wa send %s: could not start the provider call",
                  ctx->local_id);

    free(api_body);

    ngx_memzero(&ctx->xfer.error, sizeof(ctx->xfer.error));
    ctx->xfer.result = CURLE_FAILED_INIT;
    ctx->xfer.sent = 0;
    ngx_http_wa_send_done(&ctx->xfer);
}


/* the provider answered (or did not): record it, then answer the client */

static void
ngx_http_wa_send_done(ngx_http_wa_xfer_t *x)
{
    const char              *verdict;
    wa_send_res_t            res;
    ngx_http_wa_send_ctx_t  *ctx;

    ctx = x->data;

    if (ctx->counted) {
        ctx->wlcf->send_active--;
        ctx->counted = 0;
    }

    ngx_memzero(&res, sizeof(wa_send_res_t));

    if (x->result == CURLE_OK) {
        wa_send_parse_response(x->status, (char *) x->body, x->body_len,
                               &res);

        verdict = res.ok ? "sent" : (res.unknown ? "unknown" : "failed");
        ctx->status = res.ok ? NGX_HTTP_OK : NGX_HTTP_BAD_GATEWAY;

    } else {
        /*
         * No byte of the request left: it was not sent, it may be again.
         * It left and no whole answer came back (a timeout, a connection
         * dropped, an answer cut short or too big, a re-send refused): the
         * provider may have accepted it, so it is unknown and not to be
         * retried; a receipt will tell, by biz_opaque_callback_data.
         */
        verdict = x->sent ? "unknown" : "failed";
        res.retryable = !x->sent;

        ngx_snprintf((u_char *) res.error_title, sizeof(res.error_title),
                     "%s %s: %s%Z",
                     x->result == CURLE_OPERATION_TIMEDOUT
                     ? "provider timed out"
                     : (x->sent ? "no answer from the provider"
                                : "provider unreachable"),
                     x->sent ? "after the request was sent, outcome unknown"
                             : "before the request was sent",
                     x->resent ? "the connection died before an answer, "
                                 "and sending it again was refused"
                     : x->error[0] ? x->error : curl_easy_strerror(x->result));

        ctx->status = (x->result == CURLE_OPERATION_TIMEDOUT)
                      ? NGX_HTTP_GATEWAY_TIME_OUT : NGX_HTTP_BAD_GATEWAY;
    }

    if (x->aborted || x->exiting) {
        ngx_log_error(NGX_LOG_WARN, ctx->log, 0,
                      "wa send %s: %s, recorded as %s", ctx->local_id,
                      x->error, verdict);
    }

    ngx_http_wa_send_answer(ctx, &res, verdict);
    ngx_http_wa_send_finish(ctx);
}


/*
 * The send that held this client_ref outlived its longest possible life:
 * its worker died mid-call. It may have reached WhatsApp, so it is not
 * sent again; its row gets the outcome "unknown" instead of staying
 * pending, and the caller an answer it can act on instead of 409 forever.
 */

static ngx_int_t
ngx_http_wa_send_interrupted(ngx_http_request_t *r,
    ngx_http_wa_send_ctx_t *ctx, ngx_uint_t status, ngx_str_t *answer)
{
    wa_send_res_t  res;

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "wa send %s: the send of this client_ref was interrupted "
                  "(its worker exited mid-call), recorded as unknown",
                  ctx->local_id);

    ngx_memzero(&res, sizeof(wa_send_res_t));
    ngx_cpystrn((u_char *) res.error_title,
                (u_char *) "interrupted: the nginx worker exited while the "
                "provider call was in flight", sizeof(res.error_title));

    ngx_http_wa_send_outcome(ctx, &res, "unknown", 0);
    ngx_http_wa_send_vars(r, ctx);
    ngx_http_wa_send_free(ctx);

    return ngx_http_wa_reply_json(r, status, answer->data, answer->len);
}


/* the outcome record of the send's current attempt */

static void
ngx_http_wa_send_outcome(ngx_http_wa_send_ctx_t *ctx, wa_send_res_t *res,
    const char *verdict, long http_status)
{
    u_char       http[NGX_INT_T_LEN + 1];
    ngx_str_t    code;
    wa_record_t  rec;

    ngx_memzero(&rec, sizeof(wa_record_t));
    rec.type = WA_REC_OUT_RESULT;

    *ngx_sprintf(http, "%l", http_status) = '\0';

    wa_record_set(&rec, WA_F_LOCAL_ID, ctx->local_id);
    rec.f[WA_F_BUSINESS].data = (char *) ctx->business.data;
    rec.f[WA_F_BUSINESS].len = ctx->business.len;
    wa_record_set(&rec, WA_F_STATUS, verdict);
    wa_record_set(&rec, WA_F_WAMID, res->ok ? res->wamid : NULL);
    wa_record_set(&rec, WA_F_HTTP_STATUS, http_status ? (char *) http : NULL);
    ngx_http_wa_send_attempt(ctx, &rec);

    if (!res->ok) {
        wa_record_set(&rec, WA_F_ERROR_CODE,
                      res->error_code[0] ? res->error_code : NULL);
        wa_record_set(&rec, WA_F_ERROR_TITLE, res->error_title);
        wa_record_set(&rec, WA_F_ERROR_DETAIL,
                      res->error_detail[0] ? res->error_detail : NULL);
        wa_record_set(&rec, WA_F_FBTRACE_ID,
                      res->fbtrace_id[0] ? res->fbtrace_id : NULL);
        wa_record_set(&rec, WA_F_RETRYABLE, res->retryable ? "1" : "0");
    }

    if (ngx_http_wa_publish(ctx->wmcf, ctx->log, &rec) != NGX_OK) {
        /* the pending row exists; the receipt's biz_opaque_callback_data
         * will link the wamid to it */
        ngx_log_error(NGX_LOG_ERR, ctx->log, 0,
                      "wa send %s: outcome \"%s\" (wamid %s) not recorded: "
                      "ring refused it", ctx->local_id, verdict,
                      res->ok ? res->wamid : "-");

    } else {
        ctx->recorded = 1;
    }

    /* what the variables and the channel's counters say of it */
    ctx->outcome = verdict;
    ngx_cpystrn((u_char *) ctx->wamid, (u_char *) (res->ok ? res->wamid : ""),
                sizeof(ctx->wamid));
    ngx_cpystrn((u_char *) ctx->error_code,
                (u_char *) (res->ok ? "" : res->error_code),
                sizeof(ctx->error_code));

    ngx_http_wa_channels_count(ctx->wmcf, &ctx->channel, &ctx->business,
                               res->ok ? ngx_http_wa_chan_offset(accepted)
                               : verdict[0] == 'u'
                                 ? ngx_http_wa_chan_offset(unknown)
                                 : ngx_http_wa_chan_offset(failed), 1);

    if (!res->ok && res->error_code[0]) {
        code.data = (u_char *) res->error_code;
        code.len = ngx_strlen(res->error_code);
        ngx_http_wa_channels_error(ctx->wmcf, &ctx->channel, &ctx->business,
                                   &code);
    }
}


static void
ngx_http_wa_send_answer(ngx_http_wa_send_ctx_t *ctx, wa_send_res_t *res,
    const char *verdict)
{
    u_char              *p;
    size_t               len;
    ngx_http_wa_xfer_t  *x;

    x = &ctx->xfer;
    ctx->verdict = (u_char) verdict[0];

    ngx_http_wa_send_outcome(ctx, res, verdict, x->status);

    /* the client's answer, kept for client_ref replays too */

    len = 256 + sizeof(ctx->local_id) + sizeof(ctx->req.lead_id)
          + ngx_strlen(res->wamid) * 6 + (ngx_strlen(res->error_title)
                                   + ngx_strlen(res->error_detail)
                                   + ngx_strlen(res->fbtrace_id)) * 6
          + (res->ok ? 0 : x->body_len);

    p = ngx_pnalloc(x->pool, len + 64);
    if (p == NULL) {
        ctx->answer.len = 0;
        return;
    }

    ctx->answer.data = p;

    p = ngx_sprintf(p, "{\"id\":\"%s\",\"status\":\"%s\",\"lead_id\":%s",
                    ctx->local_id, verdict,
                    ctx->req.lead_id[0] ? ctx->req.lead_id : "null");

    if (ctx->attempt > 1) {
        p = ngx_sprintf(p, ",\"attempt\":%ui", ctx->attempt);
    }

    if (res->ok) {
        p = ngx_sprintf(p, ",\"wamid\":\"");
        p = (u_char *) ngx_escape_json(p, (u_char *) res->wamid,
                                       ngx_strlen(res->wamid));
        p = ngx_sprintf(p, "\"}");
        ctx->answer.len = p - ctx->answer.data;
        return;
    }

    p = ngx_sprintf(p, ",\"retryable\":%s,\"error\":{\"code\":%s,"
                    "\"title\":\"", res->retryable ? "true" : "false",
                    res->error_code[0] ? res->error_code : "null");
    p = (u_char *) ngx_escape_json(p, (u_char *) res->error_title,
                                   ngx_strlen(res->error_title));
    p = ngx_sprintf(p, "\",\"details\":\"");
    p = (u_char *) ngx_escape_json(p, (u_char *) res->error_detail,
                                   ngx_strlen(res->error_detail));
    p = ngx_sprintf(p, "\",\"fbtrace_id\":\"");
    p = (u_char *) ngx_escape_json(p, (u_char *) res->fbtrace_id,
                                   ngx_strlen(res->fbtrace_id));
    p = ngx_sprintf(p, "\",\"http_status\":%l", x->status);

    /* the provider's own body, when it is a whole JSON object */
    if (res->json) {
        p = ngx_sprintf(p, ",\"provider\":");
        p = ngx_cpymem(p, x->body, x->body_len);
    }

    p = ngx_sprintf(p, "}}");
    ctx->answer.len = p - ctx->answer.data;
}


static void
ngx_http_wa_send_finish(ngx_http_wa_send_ctx_t *ctx)
{
    /*
     * A claimed key's answer is in the database before the caller has it:
     * whoever asks another host next gets it too, never a 409 after a 200.
     * The caller waits one more query for that (its timeout bounded).
     */
    if (ctx->claimed && !ctx->xfer.exiting) {
        ngx_http_wa_idem_end(ctx->wmcf, &ctx->idem_key, ctx->status,
                             &ctx->answer, ctx->verdict);
        ctx->claimed = 0;
        ctx->claim.done = ngx_http_wa_send_ended;
        ngx_http_wa_claim_end(ctx->wmcf, &ctx->business,
                              &ctx->claim.client_ref, ctx->local_id,
                              ctx->status, &ctx->answer, ctx->verdict,
                              &ctx->claim);
        return;
    }

    ngx_http_wa_send_end(ctx, ctx->status, &ctx->answer, ctx->verdict);
    ngx_http_wa_send_deliver(ctx);
}


static void
ngx_http_wa_send_ended(ngx_http_wa_claim_t *cl)
{
    ngx_http_wa_send_deliver(cl->data);
}


/* the answer to the caller, if it is still there; ctx goes */

static void
ngx_http_wa_send_deliver(ngx_http_wa_send_ctx_t *ctx)
{
    u_char              *answer;
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ctx->request;

    /* the worker exits: its requests go with it, unanswered */
    if (ctx->xfer.exiting) {
        ngx_http_wa_send_free(ctx);
        return;
    }

    if (r == NULL) {
        ngx_log_error(NGX_LOG_INFO, ctx->log, 0,
                      "wa send %s: finished after its client left",
                      ctx->local_id);
        ngx_http_wa_send_free(ctx);
        return;
    }

    /*
     * Detach: ctx lives in the transfer's pool, freed below, while the
     * request (and its pool's cleanups) may live on, kept alive or still
     * writing. The answer is copied to the request's pool for the same
     * reason: a slow client's socket may take it after ctx is gone.
     */
    if (ctx->cln) {
        ctx->cln->handler = NULL;
    }

    ctx->request = NULL;
    c = r->connection;

    ngx_http_wa_send_vars(r, ctx);

    answer = NULL;

    if (ctx->answer.len) {
        answer = ngx_pnalloc(r->pool, ctx->answer.len);
    }

    if (answer == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;

    } else {
        ngx_memcpy(answer, ctx->answer.data, ctx->answer.len);
        rc = ngx_http_wa_reply_json(r, ctx->status, answer, ctx->answer.len);
    }

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);

    ngx_http_wa_send_free(ctx);
}


/*
 * What the request's variables say of its send: the channel and local id
 * once its record is published (or, interrupted, the id of its row), the
 * outcome once there is one. Copied to the request's pool: ctx goes with
 * the transfer, the request lives on to its log phase.
 */

static void
ngx_http_wa_send_vars(ngx_http_request_t *r, ngx_http_wa_send_ctx_t *ctx)
{
    ngx_str_t            s;
    ngx_http_wa_vars_t  *vars;

    vars = ngx_http_wa_vars(r);
    if (vars == NULL) {
        return;
    }

    /* conf strings: they live as long as the cycle, longer than r */
    vars->channel = ctx->channel;
    vars->business = ctx->business;

    s.data = (u_char *) ctx->local_id;
    s.len = ngx_strlen(ctx->local_id);
    vars->local_id.data = ngx_pstrdup(r->pool, &s);
    vars->local_id.len = vars->local_id.data ? s.len : 0;

    if (ctx->outcome == NULL) {
        return;
    }

    vars->outcome.data = (u_char *) ctx->outcome;       /* static */
    vars->outcome.len = ngx_strlen(ctx->outcome);

    vars->records += ctx->recorded;

    s.data = (u_char *) ctx->wamid;
    s.len = ngx_strlen(ctx->wamid);
    vars->wamid.data = s.len ? ngx_pstrdup(r->pool, &s) : NULL;
    vars->wamid.len = vars->wamid.data ? s.len : 0;

    s.data = (u_char *) ctx->error_code;
    s.len = ngx_strlen(ctx->error_code);
    vars->error_code.data = s.len ? ngx_pstrdup(r->pool, &s) : NULL;
    vars->error_code.len = vars->error_code.data ? s.len : 0;
}


/* the request goes away first: the transfer runs on without it */

static void
ngx_http_wa_send_cleanup(void *data)
{
    ngx_http_wa_send_ctx_t  *ctx = data;

    ctx->request = NULL;
}


/* the client_ref's zone entry, and its claim when one is held, learn how
 * the send ended (status 0: nothing was sent) */

static void
ngx_http_wa_send_end(ngx_http_wa_send_ctx_t *ctx, ngx_uint_t status,
    ngx_str_t *answer, u_char verdict)
{
    if (ctx->idem_key.len == 0) {
        return;
    }

    ngx_http_wa_idem_end(ctx->wmcf, &ctx->idem_key, status, answer, verdict);

    if (ctx->claimed) {
        ngx_http_wa_claim_end(ctx->wmcf, &ctx->business, &ctx->claim.client_ref,
                              ctx->local_id, status, answer, verdict, NULL);
        ctx->claimed = 0;
    }
}


/* Idempotency-Key, the HTTP convention, is the client_ref when the body
 * has none; both given, they must agree */

static ngx_int_t
ngx_http_wa_send_key_header(ngx_http_request_t *r, wa_send_req_t *req)
{
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    h = ngx_http_wa_header(r, "Idempotency-Key",
                           sizeof("Idempotency-Key") - 1);
    if (h == NULL) {
        return NGX_OK;
    }

    if (h->value.len == 0 || h->value.len > WA_SEND_REF_MAX) {
        return NGX_ERROR;
    }

    for (i = 0; i < h->value.len; i++) {
        if (h->value.data[i] < 0x21 || h->value.data[i] > 0x7e) {
            return NGX_ERROR;
        }
    }

    if (req->client_ref[0]) {
        return (ngx_strlen(req->client_ref) == h->value.len
                && ngx_strncmp(req->client_ref, h->value.data, h->value.len)
                   == 0)
               ? NGX_OK : NGX_ERROR;
    }

    ngx_memcpy(req->client_ref, h->value.data, h->value.len);
    req->client_ref[h->value.len] = '\0';

    return NGX_OK;
}


/* ask wa_send_idempotency_db whether this send may go: the answer comes
 * to ngx_http_wa_send_claimed() */

static ngx_int_t
ngx_http_wa_send_claim(ngx_http_request_t *r, ngx_http_wa_send_ctx_t *ctx)
{
    ngx_pool_cleanup_t   *cln;
    ngx_http_wa_claim_t  *cl;

    cl = &ctx->claim;
    cl->pool = ctx->xfer.pool;
    cl->business = ctx->business;
    cl->client_ref.data = (u_char *) ctx->req.client_ref;
    cl->client_ref.len = ngx_strlen(ctx->req.client_ref);
    cl->local_id = ctx->local_id;
    cl->life = (time_t) ((ctx->wlcf->send.timeout
                          + ctx->wlcf->send.shutdown_timeout) / 1000)
               + NGX_HTTP_WA_IDEM_SLACK;
    cl->done = ngx_http_wa_send_claimed;
    cl->data = ctx;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        goto unavailable;
    }

    cln->handler = ngx_http_wa_send_cleanup;
    cln->data = ctx;
    ctx->cln = cln;
    ctx->request = r;

    if (ngx_http_wa_claim_begin(ctx->wmcf, cl) != NGX_OK) {
        cln->handler = NULL;
        ctx->cln = NULL;
        ctx->request = NULL;
        goto unavailable;
    }

    return NGX_DONE;

unavailable:

    ngx_http_wa_idem_end(ctx->wmcf, &ctx->idem_key, 0, NULL, 0);
    ngx_http_wa_send_free(ctx);

    return ngx_http_wa_send_unavailable(r, "client_ref: "
                                        "wa_send_idempotency_db is "
                                        "unavailable: nothing was sent, "
                                        "retry");
}


static void
ngx_http_wa_send_claimed(ngx_http_wa_claim_t *cl)
{
    ngx_http_wa_send_ctx_t *ctx = cl->data;

    ngx_int_t            rc;
    ngx_str_t            answer;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ctx->request;

    if (ctx->cln) {
        ctx->cln->handler = NULL;
        ctx->cln = NULL;
    }

    ctx->request = NULL;

    switch (cl->result) {

    case NGX_HTTP_WA_CLAIM_OURS:
        ctx->claimed = 1;
        ctx->attempt = cl->attempt;

        if (r == NULL) {
            /* the caller left before anything was sent: give it back */
            ngx_http_wa_send_end(ctx, 0, NULL, 0);
            ngx_http_wa_send_free(ctx);
            return;
        }

        c = r->connection;
        rc = ngx_http_wa_send_go(r, ctx);

        if (rc != NGX_DONE) {
            ngx_http_finalize_request(r, rc);
        }

        ngx_http_run_posted_requests(c);
        return;

    case NGX_HTTP_WA_CLAIM_ANSWERED:
        ngx_log_error(NGX_LOG_INFO, ctx->log, 0,
                      "wa send: client_ref answered by send %s, answer "
                      "replayed", ctx->local_id);
        ngx_http_wa_idem_end(ctx->wmcf, &ctx->idem_key, cl->status,
                             &cl->answer, 's');
        ngx_http_wa_send_reply(ctx, r, cl->status, cl->answer.data,
                               cl->answer.len);
        return;

    case NGX_HTTP_WA_CLAIM_INTERRUPTED:
        /* as a local replay of an interrupted send: its row "unknown" */
        ngx_http_wa_idem_end(ctx->wmcf, &ctx->idem_key, cl->status,
                             &cl->answer, 'u');
        ctx->attempt = cl->attempt;

        answer.len = cl->answer.len;
        answer.data = r ? ngx_pnalloc(r->pool, answer.len) : NULL;

        if (answer.data == NULL) {
            ngx_http_wa_send_free(ctx);

            if (r) {
                c = r->connection;
                ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
                ngx_http_run_posted_requests(c);
            }

            return;
        }

        ngx_memcpy(answer.data, cl->answer.data, answer.len);

        c = r->connection;
        ngx_http_finalize_request(r, ngx_http_wa_send_interrupted(r, ctx,
                                                      cl->status, &answer));
        ngx_http_run_posted_requests(c);
        return;

    case NGX_HTTP_WA_CLAIM_BUSY:
        ngx_log_error(NGX_LOG_INFO, ctx->log, 0,
                      "wa send: client_ref held by send %s in flight, "
                      "answering 409", ctx->local_id);
        ngx_http_wa_idem_end(ctx->wmcf, &ctx->idem_key, 0, NULL, 0);
        ngx_http_wa_send_reply(ctx, r, NGX_HTTP_CONFLICT,
                               (u_char *) "{\"error\":\"client_ref: a send "
                               "with this client_ref is in progress\"}",
                               sizeof("{\"error\":\"client_ref: a send "
                                      "with this client_ref is in "
                                      "progress\"}") - 1);
        return;

    default:
        ngx_http_wa_idem_end(ctx->wmcf, &ctx->idem_key, 0, NULL, 0);
        ngx_http_wa_send_free(ctx);

        if (r != NULL) {
            c = r->connection;
            ngx_http_finalize_request(r, ngx_http_wa_send_unavailable(r,
                "client_ref: wa_send_idempotency_db did not answer: "
                "nothing was sent, retry"));
            ngx_http_run_posted_requests(c);
        }

        return;
    }
}


/* answer the caller (if it is still there) of a send that was not made;
 * ctx goes, so the body is copied to the request's pool first */

static void
ngx_http_wa_send_reply(ngx_http_wa_send_ctx_t *ctx, ngx_http_request_t *r,
    ngx_uint_t status, u_char *body, size_t len)
{
    u_char            *copy;
    ngx_int_t          rc;
    ngx_connection_t  *c;

    if (r == NULL) {
        ngx_http_wa_send_free(ctx);
        return;
    }

    copy = ngx_pnalloc(r->pool, len);

    if (copy != NULL) {
        ngx_memcpy(copy, body, len);
    }

    /* $wa_local_id: the send that holds the key */
    ngx_http_wa_send_vars(r, ctx);
    ngx_http_wa_send_free(ctx);

    rc = copy ? ngx_http_wa_reply_json(r, status, copy, len)
              : NGX_HTTP_INTERNAL_SERVER_ERROR;

    c = r->connection;
    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_wa_send_unavailable(ngx_http_request_t *r, const char *msg)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h != NULL) {
        h->hash = 1;
        ngx_str_set(&h->key, "Retry-After");
        ngx_str_set(&h->value, "1");
    }

    return ngx_http_wa_reply_error(r, NGX_HTTP_SERVICE_UNAVAILABLE, msg);
}


/* a send's second and later attempts say which they are; the first says
 * nothing, as sends always did */

static void
ngx_http_wa_send_attempt(ngx_http_wa_send_ctx_t *ctx, wa_record_t *rec)
{
    if (ctx->attempt > 1) {
        *ngx_sprintf((u_char *) ctx->attempt_text, "%ui", ctx->attempt) = '\0';
        wa_record_set(rec, WA_F_ATTEMPT, ctx->attempt_text);
    }
}


static void
ngx_http_wa_send_free(ngx_http_wa_send_ctx_t *ctx)
{
    wa_send_req_free(&ctx->req);
    ngx_destroy_pool(ctx->xfer.pool);
}


static ngx_http_wa_channel_t *
ngx_http_wa_send_channel(ngx_http_request_t *r, ngx_http_wa_loc_conf_t *wlcf,
    wa_send_req_t *req, const char **err)
{
    ngx_http_wa_channel_t  *ch;

    if (req->phone_number_id[0]) {
        ch = ngx_http_wa_channel_find(wlcf, (u_char *) req->phone_number_id,
                                      ngx_strlen(req->phone_number_id));
        if (ch == NULL) {
            *err = "phone_number_id: no wa_channel with this id";
        }

        return ch;
    }

    if (wlcf->channels->nelts != 1) {
        *err = "phone_number_id: required, several channels are configured";
        return NULL;
    }

    return wlcf->channels->elts;
}






