/*
 * wa_send: record first, send without blocking, record the outcome.
 *
 *   1. validate (400 names the field; nothing sent, nothing recorded)
 *   2. client_ref seen before: replay its answer (409 while in flight)
 *   3. take a turn of the channel's rate (ngx_http_wa_pace.c): wait for it
 *      on a timer, or 503 when it is further than wa_send_queue_timeout
 *      (nothing sent, nothing recorded)
 *   4. publish the pending record; no room: 503 and no provider call
 *      (wa_ring ... sync=on: wait until it is on disk; a failed sync:
 *      outcome "failed", not attempted, 503 and no provider call)
 *   5. POST to the Cloud API on this worker's libcurl multi handle
 *   6. a transient refusal, with attempts and time left: record its
 *      outcome, wait a backoff and a turn of the rate, go to 4 as the next
 *      attempt of the same local id
 *   7. publish the outcome, answer 200 / 502 / 504
 *
 * The outcome is "sent" (a wamid), "failed" (the provider refused, or no
 * byte of the request left: safe to send again) or "unknown" (the request
 * left and no readable answer came back: the provider may have accepted
 * it, so nobody must be told to retry).
 *
 * A mark-as-read ({"status": "read", "message_id": ...}, Meta's shape) takes
 * the same road with its own record type (WA_REC_MARK_READ, "pending" then
 * "read", "failed" or "unknown"), no client_ref, no pacing and no retry:
 * marking twice is harmless, and the database stamps the message once.
 *
 * Only "failed" is retried, and only for the transient refusals (rate
 * limits, 131000, 5xx, no byte of the request sent): "unknown" never is.
 *
 * The transfer owns its memory (its own pool): a client that goes away
 * does not cancel the send, whose outcome is still recorded. A worker that
 * exits records an outcome for every send still in flight, and for every
 * send waiting for a retry; a send waiting for its first call was not
 * recorded and goes with the worker.
 */

#include "ngx_http_wa_module.h"
#include "ngx_http_wa_curl.h"
#include "ngx_http_wa_idem.h"
#include "ngx_http_wa_pace.h"
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
    ngx_uint_t                 calls;        /* made by this request */
    char                       attempt_text[NGX_INT_T_LEN + 1];
    u_char                     verdict;      /* 's', 'u' or 'f' */
    char                       now[NGX_INT64_LEN + 1];  /* unix ms */
    unsigned                   counted:1;    /* in wlcf->send_active */
    unsigned                   pending_in:1; /* a pending record is in */
    unsigned                   outcome_recorded:1; /* the last call's */
    unsigned                   unsent:1;     /* ended before any record */
    unsigned                   waiting:1;    /* in wmcf->send_waiting */
    unsigned                   synced:1;     /* sync=on: waits, synced,
                                                for the channel's spacing */
    unsigned                   claimed:1;    /* holds its client_ref in
                                                wa_send_idempotency_db */
    ngx_http_wa_claim_t        claim;

    unsigned                   recorded:1;   /* the outcome is in the ring */
    const char                *outcome;      /* verdict, for $wa_send_status */
    char                       wamid[sizeof(((wa_send_res_t *) 0)->wamid)];
    char                       error_code[
                                   sizeof(((wa_send_res_t *) 0)->error_code)];

    ngx_http_wa_channel_t     *ch;
    ngx_http_wa_curl_conf_t    conf;         /* the location's, the timeout
                                                cut to what is left */
    char                       received_ms[NGX_INT64_LEN + 1];
    u_char                    *url;
    u_char                    *auth;
    u_char                    *api_body;
    size_t                     api_body_len;
    ngx_msec_t                 deadline;     /* first call + timeout */
    ngx_uint_t                 retry_after;  /* s, for a 503 */

    wa_send_res_t              res;          /* the last call's outcome */
    const char                *last_verdict;

    ngx_event_t                wait;         /* a turn, or a backoff */
    ngx_connection_t           wait_conn;    /* ev->data for debug logs */
    ngx_queue_t                queue;        /* in wmcf->send_waiting */
} ngx_http_wa_send_ctx_t;


/* a retry starts only with half of wa_send_timeout left: a retry cut short
 * by the timeout after its request left would turn a known refusal into
 * an unknown outcome */
#define NGX_HTTP_WA_SEND_RETRY_LEFT(timeout)  ((timeout) / 2)

/* the longest backoff, in multiples of wa_send_retry_backoff */
#define NGX_HTTP_WA_SEND_BACKOFF_MAX  16


static void ngx_http_wa_send_read(ngx_http_request_t *r);
static ngx_int_t ngx_http_wa_send_start(ngx_http_request_t *r);
static ngx_int_t ngx_http_wa_send_prepare(ngx_http_wa_send_ctx_t *ctx,
    ngx_http_wa_channel_t *ch);
static void ngx_http_wa_send_call(ngx_http_wa_send_ctx_t *ctx);
static void ngx_http_wa_send_post(ngx_http_wa_send_ctx_t *ctx);
static void ngx_http_wa_send_synced(ngx_http_wa_sync_wait_t *w,
    ngx_int_t rc);
static void ngx_http_wa_send_not_attempted(ngx_http_wa_send_ctx_t *ctx,
    ngx_int_t exiting, const char *why);
static void ngx_http_wa_send_wait(ngx_http_wa_send_ctx_t *ctx,
    ngx_msec_t delay);
static void ngx_http_wa_send_wake(ngx_event_t *ev);
static void ngx_http_wa_send_unwait(ngx_http_wa_send_ctx_t *ctx);
static ngx_int_t ngx_http_wa_send_retry(ngx_http_wa_send_ctx_t *ctx,
    const char *verdict);
static ngx_int_t ngx_http_wa_send_transient(ngx_http_wa_xfer_t *x,
    wa_send_res_t *res);
static void ngx_http_wa_send_unrecorded(ngx_http_wa_send_ctx_t *ctx,
    const char *why);
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
static char *ngx_http_wa_send_now(ngx_http_wa_send_ctx_t *ctx);
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
    ngx_queue_t             *q;
    ngx_http_wa_send_ctx_t  *ctx;

    if (wmcf->curl) {
        ngx_http_wa_curl_destroy(wmcf->curl);
        wmcf->curl = NULL;
    }

    /*
     * Sends waiting for a turn (a fast stop: a graceful one waits for
     * their timers). One waiting for a retry has its last refusal
     * recorded: that is its outcome. One waiting for its first call was
     * not recorded and nothing was sent: its client_ref is let go.
     */
    while (!ngx_queue_empty(&wmcf->send_waiting)) {
        q = ngx_queue_head(&wmcf->send_waiting);
        ctx = ngx_queue_data(q, ngx_http_wa_send_ctx_t, queue);

        ngx_http_wa_send_unwait(ctx);
        ctx->xfer.exiting = 1;

        if (!ctx->pending_in) {
            ctx->unsent = 1;
            ngx_http_wa_send_finish(ctx);
            continue;
        }

        if (ctx->synced) {
            /* its attempt's record is on disk, the call was not made */
            ngx_http_wa_send_not_attempted(ctx, 1, "not sent: nginx exited "
                                           "while the send waited for "
                                           "its channel's spacing");
            continue;
        }

        ngx_log_error(NGX_LOG_WARN, ctx->log, 0,
                      "wa send %s: nginx stopped before its retry, recorded "
                      "as its last attempt's \"%s\"", ctx->local_id,
                      ctx->last_verdict);

        ctx->attempt--;

        ngx_http_wa_send_answer(ctx, &ctx->res, ctx->last_verdict);
        ngx_http_wa_send_finish(ctx);
    }
}


/*
 * A local id, unique across workers, hosts and containers (the worker's
 * random nonce: identical pods have identical pids) and restarts (time);
 * ms gets now in unix ms, as text.
 */

void
ngx_http_wa_local_id(ngx_http_wa_main_conf_t *wmcf, char *id, u_char *ms)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();
    ngx_sprintf((u_char *) id, "wa-%xL-%016xL-%xi%Z",
                (uint64_t) tp->sec * 1000 + tp->msec, wmcf->send_nonce,
                ++wmcf->send_seq);
    *ngx_sprintf(ms, "%uL", (uint64_t) tp->sec * 1000 + tp->msec) = '\0';
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

    ctx->attempt = 1;
    ngx_http_wa_local_id(wmcf, ctx->local_id, (u_char *) ctx->received_ms);

    /* $wa_channel and $wa_business, whatever comes of the send */
    vars = ngx_http_wa_vars(r);

    if (vars != NULL) {
        vars->channel = ch->phone_number_id;    /* conf: outlives r */
        vars->business = ch->business;
    }

    /* a mark-as-read: no client_ref, recorded and made as a send is */
    if (ctx->req.read) {
        return ngx_http_wa_send_go(r, ctx);
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

        /* its longest life: its wait for a turn, then its calls */
        rc = ngx_http_wa_idem_begin(wmcf, &ctx->idem_key,
                                    (time_t) ((wlcf->send_queue_timeout
                                               + wlcf->send.timeout
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


/*
 * The send may go (its client_ref is its own): a turn of its channel's
 * rate, now or on a timer, then its calls. NGX_DONE, or an answer's status.
 */

static ngx_int_t
ngx_http_wa_send_go(ngx_http_request_t *r, ngx_http_wa_send_ctx_t *ctx)
{
    ngx_int_t                 rc;
    ngx_msec_t                delay;
    ngx_table_elt_t          *h;
    ngx_pool_cleanup_t       *cln;
    ngx_http_wa_channel_t    *ch;
    ngx_http_wa_loc_conf_t   *wlcf;
    ngx_http_wa_main_conf_t  *wmcf;

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

    if (ngx_http_wa_send_prepare(ctx, ch) != NGX_OK) {
        ngx_http_wa_send_end(ctx, 0, NULL, 0);
        ngx_http_wa_send_free(ctx);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the channel's rate, for all workers: a turn now, later, or too late */

    /* a mark-as-read is no message: Meta's throughput is of messages */
    if (ctx->req.read) {
        rc = NGX_OK;
        delay = 0;

    } else {
        rc = ngx_http_wa_pace_reserve(wmcf, ch, ctx->req.to, 0,
                                      wlcf->send_queue_timeout, &delay);
    }

    if (rc == NGX_BUSY) {
        ngx_http_wa_pace_count(ch, NGX_HTTP_WA_PACE_REJECTED, 1);
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "wa send: channel %V is paced, its next turn is %M ms "
                      "past wa_send_queue_timeout, answering 503",
                      &ch->phone_number_id, delay);

        ngx_http_wa_send_end(ctx, 0, NULL, 0);
        ngx_http_wa_send_free(ctx);

        h = ngx_list_push(&r->headers_out.headers);
        if (h != NULL) {
            h->hash = 1;
            ngx_str_set(&h->key, "Retry-After");
            h->value.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
            h->value.len = h->value.data
                           ? (size_t) (ngx_sprintf(h->value.data, "%M",
                                                   (delay + 999) / 1000)
                                       - h->value.data)
                           : 0;

            if (h->value.len == 0 || delay < 1000) {
                ngx_str_set(&h->value, "1");
            }
        }

        return ngx_http_wa_reply_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       "the channel's rate is reached and "
                                       "its queue is longer than "
                                       "wa_send_queue_timeout: nothing was "
                                       "sent, retry");
    }

    if (!ctx->req.read) {
        ngx_http_wa_pace_count(ch, NGX_HTTP_WA_PACE_SENDS, 1);
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln != NULL) {
        cln->handler = ngx_http_wa_send_cleanup;
        cln->data = ctx;
        ctx->cln = cln;
        ctx->request = r;

    } else {
        /* the send goes on; its client gets no answer */
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "wa send %s: no memory to keep its client",
                      ctx->local_id);
    }

    if (delay) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "wa send %s: waits %M ms for its turn",
                       ctx->local_id, delay);
        ngx_http_wa_send_wait(ctx, delay);

    } else {
        ngx_http_wa_send_call(ctx);
    }

    /* the answer comes later, or came already (finalized in there) */
    return (cln != NULL) ? NGX_DONE : NGX_HTTP_INTERNAL_SERVER_ERROR;

unavailable:

    ngx_http_wa_send_end(ctx, 0, NULL, 0);
    ngx_http_wa_send_free(ctx);

    return ngx_http_wa_send_unavailable(r, "ring full, ring unavailable or "
                                        "too many sends in flight: nothing "
                                        "was sent, retry");
}


/* what every call of the send takes: the URL, the token's header, the
 * Cloud API body (biz_opaque_callback_data is the local id) */

static ngx_int_t
ngx_http_wa_send_prepare(ngx_http_wa_send_ctx_t *ctx,
    ngx_http_wa_channel_t *ch)
{
    char                    *body;
    ngx_pool_t              *pool;
    ngx_http_wa_loc_conf_t  *wlcf;

    wlcf = ctx->wlcf;
    pool = ctx->xfer.pool;

    ctx->ch = ch;
    ctx->conf = wlcf->send;

    ctx->url = ngx_pnalloc(pool, wlcf->api_base.len + ch->phone_number_id.len
                                 + sizeof("//messages"));
    ctx->auth = ngx_pnalloc(pool, sizeof("Authorization: Bearer ")
                                  + ch->token.len);

    body = ctx->req.read ? wa_send_build_read_body(&ctx->req)
                         : wa_send_build_body(&ctx->req, ctx->local_id);

    if (ctx->url == NULL || ctx->auth == NULL || body == NULL) {
        free(body);
        return NGX_ERROR;
    }

    ngx_sprintf(ctx->url, "%V/%V/messages%Z", &wlcf->api_base,
                &ch->phone_number_id);
    ngx_sprintf(ctx->auth, "Authorization: Bearer %V%Z", &ch->token);

    ctx->api_body_len = ngx_strlen(body);
    ctx->api_body = ngx_pnalloc(pool, ctx->api_body_len);

    if (ctx->api_body != NULL) {
        ngx_memcpy(ctx->api_body, body, ctx->api_body_len);
    }

    free(body);

    return ctx->api_body ? NGX_OK : NGX_ERROR;
}


/*
 * One call: recorded before sent (the pending record of this attempt),
 * then the POST. Answers through ngx_http_wa_send_done(), or here when
 * nothing could be recorded.
 */

static void
ngx_http_wa_send_call(ngx_http_wa_send_ctx_t *ctx)
{
    wa_record_t               rec;
    ngx_http_wa_vars_t       *vars;
    ngx_http_wa_channel_t    *ch;
    ngx_http_wa_loc_conf_t   *wlcf;

    ch = ctx->ch;
    wlcf = ctx->wlcf;

    /* a retry whose turn came late (late timers, the channel's spacing)
     * with too little of wa_send_timeout left is not made: the last
     * attempt's refusal, recorded, is the outcome */
    if (ctx->pending_in
        && (ngx_msec_int_t) (ctx->deadline - ngx_current_msec)
           < (ngx_msec_int_t) NGX_HTTP_WA_SEND_RETRY_LEFT(wlcf->send.timeout)
             / 2)
    {
        ngx_log_error(NGX_LOG_INFO, ctx->log, 0,
                      "wa send %s: attempt %ui not made, its turn came too "
                      "late in wa_send_timeout; the last attempt's \"%s\" "
                      "stands", ctx->local_id, ctx->attempt,
                      ctx->last_verdict);
        ctx->attempt--;
        ngx_http_wa_send_answer(ctx, &ctx->res, ctx->last_verdict);
        ngx_http_wa_send_finish(ctx);
        return;
    }

    if (ctx->req.read) {
        ngx_http_wa_record_init(&rec, WA_REC_MARK_READ, ctx->local_id,
                                &ch->business, &ch->phone_number_id);
        wa_record_set(&rec, WA_F_WAMID, ctx->req.message_id);
        wa_record_set(&rec, WA_F_STATUS, "pending");
        wa_record_set(&rec, WA_F_PAYLOAD, ctx->req.request_json);
        wa_record_set(&rec, WA_F_RECEIVED_MS, ctx->received_ms);

        goto publish;
    }

    ngx_http_wa_record_init(&rec, WA_REC_OUT_PENDING, ctx->local_id,
                            &ch->business, &ch->phone_number_id);
    wa_record_set(&rec, WA_F_PHONE, ctx->req.to[0] ? ctx->req.to : NULL);
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
    wa_record_set(&rec, WA_F_RECEIVED_MS, ctx->received_ms);
    ngx_http_wa_send_attempt(ctx, &rec);

publish:

    /* a retry's record closes the attempt before it: the reserve may
     * take it */
    if (ngx_http_wa_publish(ctx->wmcf, ctx->log, &rec,
                            ctx->pending_in ? NGX_HTTP_WA_CLOSES
                                            : NGX_HTTP_WA_OPENS)
        != NGX_OK)
    {

        if (!ctx->pending_in) {
            ngx_http_wa_send_unrecorded(ctx, "ring full or unavailable: "
                                         "nothing was sent, retry");
            return;
        }

        /* a retry that cannot be recorded is not made: the last
         * attempt's refusal, recorded, is the outcome */
        ngx_log_error(NGX_LOG_ERR, ctx->log, 0,
                      "wa send %s: attempt %ui not made, the ring refused "
                      "its record; the last attempt's \"%s\" stands",
                      ctx->local_id, ctx->attempt, ctx->last_verdict);
        ctx->attempt--;
        ngx_http_wa_send_answer(ctx, &ctx->res, ctx->last_verdict);
        ngx_http_wa_send_finish(ctx);
        return;
    }

    ctx->pending_in = 1;
    ctx->outcome_recorded = 0;
    ctx->calls++;

    /* $wa_local_id and $wa_records, if its client still waits: the local
     * id is final here (a retried client_ref took its own) */
    if (ctx->request != NULL) {
        vars = ngx_http_wa_vars(ctx->request);

        if (vars != NULL) {
            vars->records++;
        }

        ngx_http_wa_send_vars(ctx->request, ctx);
    }

    /* the channel's counters count calls, as their outcomes; a
     * mark-as-read is no message: they skip it */
    if (!ctx->req.read) {
        ngx_http_wa_channels_count(ctx->wmcf, &ctx->channel, &ctx->business,
                                   ngx_http_wa_chan_offset(sends), 1);
    }

    if (!ctx->wmcf->sync) {
        ngx_http_wa_send_post(ctx);
        return;
    }

    /* the provider is called only once the pending record is on disk */

    ctx->sync.handler = ngx_http_wa_send_synced;
    ctx->sync.data = ctx;

    if (ngx_http_wa_sync_wait(ctx->wmcf, ctx->xfer.pool, &ctx->sync)
        != NGX_OK)
    {
        ngx_http_wa_send_not_attempted(ctx, 0, NULL);
    }
}


static void
ngx_http_wa_send_synced(ngx_http_wa_sync_wait_t *w, ngx_int_t rc)
{
    ngx_msec_t               delay;
    ngx_http_wa_send_ctx_t  *ctx = w->data;

    if (rc != NGX_OK) {
        ngx_http_wa_send_not_attempted(ctx, rc == NGX_ABORT, NULL);
        return;
    }

    /*
     * The turn was taken before the sync, and a sync releases every send
     * it covered at once (a slow one, many): the channel's spacing is
     * kept here, just before the call, as a late timer's is.
     */
    if (!ctx->req.read
        && ngx_http_wa_pace_go(ctx->wmcf, ctx->ch, &delay) == NGX_AGAIN)
    {
        ctx->synced = 1;
        ngx_http_wa_send_wait(ctx, delay);
        return;
    }

    ngx_http_wa_send_post(ctx);
}


/*
 * The pending record is in the ring but may not be on disk (a failed
 * sync), or the worker exits before it is: the provider is not called.
 * The outcome "failed" (retryable, nothing left) settles the row, and the
 * caller gets 503: the same client_ref is attempted again.
 */

static void
ngx_http_wa_send_not_attempted(ngx_http_wa_send_ctx_t *ctx,
    ngx_int_t exiting, const char *why)
{
    wa_send_res_t  res;

    if (why == NULL) {
        why = exiting ? "not sent: nginx exited before the send's record "
                        "was synced to disk"
                      : "not sent: the ring could not be synced to disk "
                        "(wa_ring sync=on)";
    }

    ngx_memzero(&res, sizeof(wa_send_res_t));
    res.retryable = 1;
    ngx_cpystrn((u_char *) res.error_title, (u_char *) why,
                sizeof(res.error_title));

    ngx_log_error(NGX_LOG_ERR, ctx->log, 0,
                  "wa send %s: %s, recorded as failed", ctx->local_id,
                  res.error_title);

    ctx->status = NGX_HTTP_SERVICE_UNAVAILABLE;
    ctx->xfer.exiting = exiting ? 1 : 0;
    ctx->outcome_recorded = 0;

    ngx_http_wa_send_answer(ctx, &res, "failed");
    ngx_http_wa_send_finish(ctx);
}


/* the pending record is stored (and synced, with sync=on): the POST */

static void
ngx_http_wa_send_post(ngx_http_wa_send_ctx_t *ctx)
{
    ngx_int_t                 rc;
    ngx_msec_t                now;
    ngx_http_wa_loc_conf_t   *wlcf;

    wlcf = ctx->wlcf;
    now = ngx_current_msec;

    if (ctx->calls == 1) {
        ctx->deadline = now + wlcf->send.timeout;
        ctx->conf.timeout = wlcf->send.timeout;

    } else {
        /* retries live inside the first call's wa_send_timeout */
        ctx->conf.timeout = ngx_max((ngx_msec_int_t) (ctx->deadline - now),
                                    1);
    }

    rc = ngx_http_wa_curl_post(ctx->wmcf->curl, &ctx->xfer,
                               (char *) ctx->url, (char *) ctx->auth,
                               (char *) ctx->api_body, ctx->api_body_len,
                               &ctx->conf);

    if (rc != NGX_OK) {
        /* pending is recorded and nothing was sent: say so in the ring */
        ngx_log_error(NGX_LOG_ALERT, ctx->log, 0,
                      "wa send %s: could not start the provider call",
                      ctx->local_id);

        ngx_memzero(&ctx->xfer.error, sizeof(ctx->xfer.error));
        ctx->xfer.result = CURLE_FAILED_INIT;
        ctx->xfer.sent = 0;
        ctx->xfer.aborted = 1;       /* ours: no retry */
        ngx_http_wa_send_done(&ctx->xfer);
        return;
    }

    wlcf->send_active++;
    ctx->counted = 1;
}


/* nothing recorded, nothing sent: 503, the client_ref let go */

static void
ngx_http_wa_send_unrecorded(ngx_http_wa_send_ctx_t *ctx, const char *why)
{
    u_char  *p;

    ctx->unsent = 1;
    ctx->status = NGX_HTTP_SERVICE_UNAVAILABLE;
    ctx->retry_after = 1;

    p = ngx_pnalloc(ctx->xfer.pool, ngx_strlen(why) + sizeof("{\"error\":\"\"}"));
    if (p != NULL) {
        ctx->answer.data = p;
        ctx->answer.len = ngx_sprintf(p, "{\"error\":\"%s\"}", why) - p;
    }

    ngx_http_wa_send_finish(ctx);
}


/*
 * Wait for a turn (or a backoff) on a timer of the send's own: a retry's
 * wait may outlive its client's request. Not cancelable: a worker that
 * shuts down gracefully keeps its waiting sends until they are made.
 */

static void
ngx_http_wa_send_wait(ngx_http_wa_send_ctx_t *ctx, ngx_msec_t delay)
{
    ctx->wait_conn.fd = (ngx_socket_t) -1;
    ctx->wait_conn.data = ctx;
    ctx->wait.data = &ctx->wait_conn;
    ctx->wait.handler = ngx_http_wa_send_wake;
    ctx->wait.log = ctx->log;

    ngx_add_timer(&ctx->wait, delay);

    ngx_queue_insert_tail(&ctx->wmcf->send_waiting, &ctx->queue);
    ctx->waiting = 1;
    ngx_http_wa_pace_count(ctx->ch, -1, 1);
}


static void
ngx_http_wa_send_wake(ngx_event_t *ev)
{
    ngx_msec_t               delay;
    ngx_http_wa_send_ctx_t  *ctx;

    ctx = ((ngx_connection_t *) ev->data)->data;

    /* with sync=on the spacing is kept after the sync, before the call */
    if ((!ctx->wmcf->sync || ctx->synced)
        && ngx_http_wa_pace_go(ctx->wmcf, ctx->ch, &delay) == NGX_AGAIN)
    {
        ngx_add_timer(&ctx->wait, delay);
        return;
    }

    ngx_http_wa_send_unwait(ctx);

    if (ctx->synced) {
        ctx->synced = 0;
        ngx_http_wa_send_post(ctx);
        return;
    }

    ngx_http_wa_send_call(ctx);
}


static void
ngx_http_wa_send_unwait(ngx_http_wa_send_ctx_t *ctx)
{
    if (ctx->wait.timer_set) {
        ngx_del_timer(&ctx->wait);
    }

    if (ctx->waiting) {
        ngx_queue_remove(&ctx->queue);
        ctx->waiting = 0;
        ngx_http_wa_pace_count(ctx->ch, -1, -1);
    }
}


/* now, unix ms, as text in ctx */

static char *
ngx_http_wa_send_now(ngx_http_wa_send_ctx_t *ctx)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();
    *ngx_sprintf((u_char *) ctx->now, "%uL",
                 (uint64_t) tp->sec * 1000 + tp->msec) = '\0';

    return ctx->now;
}


/* the provider answered (or did not): retry, or record it and answer */

static void
ngx_http_wa_send_done(ngx_http_wa_xfer_t *x)
{
    long                     code;
    const char              *verdict;
    wa_send_res_t           *res;
    ngx_http_wa_send_ctx_t  *ctx;

    ctx = x->data;
    res = &ctx->res;

    if (ctx->counted) {
        ctx->wlcf->send_active--;
        ctx->counted = 0;
    }

    ngx_memzero(res, sizeof(wa_send_res_t));

    if (x->result == CURLE_OK) {
        wa_send_parse_answer(ctx->req.read ? WA_SEND_ANSWER_SUCCESS
                                           : WA_SEND_ANSWER_MESSAGE,
                             x->status, (char *) x->body, x->body_len, res);

        verdict = res->ok ? (ctx->req.read ? "read" : "sent")
                          : (res->unknown ? "unknown" : "failed");
        ctx->status = res->ok ? NGX_HTTP_OK : NGX_HTTP_BAD_GATEWAY;

        code = ngx_atoi((u_char *) res->error_code,
                        ngx_strlen(res->error_code));

        if (code == 130429 || code == 131056 || code == 80007) {
            ngx_http_wa_pace_count(ctx->ch,
                                   NGX_HTTP_WA_PACE_RATE_LIMITED, 1);
        }

    } else {
        /*
         * No byte of the request left: it was not sent, it may be again.
         * It left and no whole answer came back (a timeout, a connection
         * dropped, an answer cut short or too big, a re-send refused): the
         * provider may have accepted it, so it is unknown and not to be
         * retried; a receipt will tell, by biz_opaque_callback_data.
         */
        verdict = x->sent ? "unknown" : "failed";
        res->retryable = !x->sent;

        ngx_snprintf((u_char *) res->error_title, sizeof(res->error_title),
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

    ctx->last_verdict = verdict;

    if (x->aborted || x->exiting) {
        ngx_log_error(NGX_LOG_WARN, ctx->log, 0,
                      "wa send %s: %s, recorded as %s", ctx->local_id,
                      x->error, verdict);
    }

    if (ngx_http_wa_send_retry(ctx, verdict) == NGX_OK) {
        return;
    }

    ngx_http_wa_send_answer(ctx, res, verdict);
    ngx_http_wa_send_finish(ctx);
}


/*
 * A transient refusal with attempts and time left: its outcome recorded,
 * the next attempt waits a backoff (doubling, with jitter; longer if the
 * provider said Retry-After) and a turn of the channel's rate. NGX_OK: it
 * waits; NGX_DECLINED: this outcome is the send's.
 */

static ngx_int_t
ngx_http_wa_send_retry(ngx_http_wa_send_ctx_t *ctx, const char *verdict)
{
    ngx_int_t                rc;
    ngx_uint_t               shift;
    ngx_msec_t               backoff, delay, now;
    ngx_msec_int_t           left;
    ngx_http_wa_xfer_t      *x;
    ngx_http_wa_loc_conf_t  *wlcf;

    x = &ctx->xfer;
    wlcf = ctx->wlcf;

    if (ctx->calls >= wlcf->send_attempts || ctx->req.read
        || x->aborted || x->exiting
        || ngx_exiting || ngx_quit || ngx_terminate
        || !ngx_http_wa_send_transient(x, &ctx->res))
    {
        return NGX_DECLINED;
    }

    shift = ngx_min(ctx->calls - 1, 4);
    backoff = ngx_min(wlcf->send_retry_backoff << shift,
                      wlcf->send_retry_backoff * NGX_HTTP_WA_SEND_BACKOFF_MAX);

    /* half fixed, half random: workers that failed together spread out */
    backoff = backoff / 2 + (ngx_msec_t) ngx_random() % (backoff / 2 + 1);

    if (x->retry_after > 0) {
        backoff = ngx_max(backoff, (ngx_msec_t) x->retry_after * 1000);
    }

    now = ngx_current_msec;
    left = (ngx_msec_int_t) (ctx->deadline - now)
           - (ngx_msec_int_t) NGX_HTTP_WA_SEND_RETRY_LEFT(wlcf->send.timeout);

    rc = NGX_BUSY;

    if (left > (ngx_msec_int_t) backoff) {
        rc = ngx_http_wa_pace_reserve(ctx->wmcf, ctx->ch, ctx->req.to,
                                      backoff, (ngx_msec_t) left, &delay);
    }

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, ctx->log, 0,
                      "wa send %s: attempt %ui %s (%s), not retried: no "
                      "turn within wa_send_timeout", ctx->local_id,
                      ctx->attempt, verdict, ctx->res.error_title);
        return NGX_DECLINED;
    }

    /* this attempt's outcome, then the next attempt's own records */
    ngx_http_wa_send_outcome(ctx, &ctx->res, verdict, x->status);
    ctx->outcome_recorded = 1;

    ngx_log_error(NGX_LOG_INFO, ctx->log, 0,
                  "wa send %s: attempt %ui %s (%s%s%s), attempt %ui in "
                  "%M ms", ctx->local_id, ctx->attempt, verdict,
                  ctx->res.error_code[0] ? ctx->res.error_code : "",
                  ctx->res.error_code[0] ? " " : "", ctx->res.error_title,
                  ctx->attempt + 1, delay);

    ngx_http_wa_pace_count(ctx->ch, NGX_HTTP_WA_PACE_RETRIES, 1);

    ctx->attempt++;
    ngx_http_wa_send_wait(ctx, delay);

    return NGX_OK;
}


/*
 * Worth another call: Meta's rate limits (130429, 131056), its "service
 * unavailable" (131000), any 5xx, and a connection that failed before any
 * byte of the request left. Never a call whose request may have arrived.
 */

static ngx_int_t
ngx_http_wa_send_transient(ngx_http_wa_xfer_t *x, wa_send_res_t *res)
{
    ngx_int_t  code;

    if (x->result != CURLE_OK) {
        return !x->sent;
    }

    if (res->ok || res->unknown) {
        return 0;
    }

    code = ngx_atoi((u_char *) res->error_code, ngx_strlen(res->error_code));

    return code == 130429 || code == 131056 || code == 131000
           || x->status >= 500;
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

    *ngx_sprintf(http, "%l", http_status) = '\0';

    ngx_http_wa_record_init(&rec,
                            ctx->req.read ? WA_REC_MARK_READ
                                          : WA_REC_OUT_RESULT,
                            ctx->local_id, &ctx->business,
                            ctx->req.read ? &ctx->ch->phone_number_id
                                          : NULL);
    wa_record_set(&rec, WA_F_STATUS, verdict);
    wa_record_set(&rec, WA_F_WAMID, res->ok ? res->wamid : NULL);

    if (ctx->req.read) {
        /* the message marked, and when the call ended */
        wa_record_set(&rec, WA_F_WAMID, ctx->req.message_id);
        wa_record_set(&rec, WA_F_RECEIVED_MS, ngx_http_wa_send_now(ctx));
    }

    wa_record_set(&rec, WA_F_HTTP_STATUS, http_status ? (char *) http : NULL);
    ngx_http_wa_send_attempt(ctx, &rec);

    ngx_http_wa_record_error(&rec, res);

    if (ngx_http_wa_publish(ctx->wmcf, ctx->log, &rec, NGX_HTTP_WA_CLOSES)
        != NGX_OK)
    {
        /* only once the reserve is used up by outcomes in flight (or the
         * ring went away): the pending row stays; a sent one's receipt
         * (biz_opaque_callback_data) links the wamid to it later */
        ngx_http_wa_outcome_lost(ctx->log, "send", ctx->local_id, verdict,
                                 "wamid", res->ok ? res->wamid : NULL,
                                 res->ok ? " until Meta's receipt" : "");

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

    if (ctx->req.read) {
        return;
    }

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

    if (!ctx->outcome_recorded) {
        ngx_http_wa_send_outcome(ctx, res, verdict, x->status);
        ctx->outcome_recorded = 1;
    }

    /* the client's answer, kept for client_ref replays too */

    len = 256 + sizeof(ctx->local_id) + sizeof(ctx->req.lead_id)
          + sizeof(ctx->req.message_id) * 6
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

    if (ctx->req.read) {
        p = ngx_sprintf(p, "{\"id\":\"%s\",\"status\":\"%s\"",
                        ctx->local_id, verdict);

    } else {
        p = ngx_sprintf(p, "{\"id\":\"%s\",\"status\":\"%s\",\"lead_id\":%s",
                        ctx->local_id, verdict,
                        ctx->req.lead_id[0] ? ctx->req.lead_id : "null");
    }

    if (ctx->attempt > 1) {
        p = ngx_sprintf(p, ",\"attempt\":%ui", ctx->attempt);
    }

    if (res->ok && ctx->req.read) {
        p = ngx_sprintf(p, ",\"message_id\":\"");
        p = (u_char *) ngx_escape_json(p, (u_char *) ctx->req.message_id,
                                       ngx_strlen(ctx->req.message_id));
        p = ngx_sprintf(p, "\"}");
        ctx->answer.len = p - ctx->answer.data;
        return;
    }

    if (res->ok) {
        p = ngx_sprintf(p, ",\"wamid\":\"");
        p = (u_char *) ngx_escape_json(p, (u_char *) res->wamid,
                                       ngx_strlen(res->wamid));
        p = ngx_sprintf(p, "\"}");
        ctx->answer.len = p - ctx->answer.data;
        return;
    }

    p = ngx_http_wa_send_error_json(p, res, x);
    ctx->answer.len = p - ctx->answer.data;
}


/*
 * The rest of a refusal's answer, after its id and status: whether to
 * retry, the provider's error and, when it is a whole JSON object, the
 * provider's own body. Sends and uploads answer alike.
 */

u_char *
ngx_http_wa_send_error_json(u_char *p, wa_send_res_t *res,
    ngx_http_wa_xfer_t *x)
{
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

    if (res->json) {
        p = ngx_sprintf(p, ",\"provider\":");
        p = ngx_cpymem(p, x->body, x->body_len);
    }

    return ngx_sprintf(p, "}}");
}


static void
ngx_http_wa_send_finish(ngx_http_wa_send_ctx_t *ctx)
{
    if (ctx->waiting) {
        ngx_http_wa_send_unwait(ctx);
    }

    /*
     * A claimed key's answer is in the database before the caller has it:
     * whoever asks another host next gets it too, never a 409 after a 200.
     * The caller waits one more query for that (its timeout bounded).
     */
    if (ctx->claimed && !ctx->xfer.exiting && !ctx->unsent) {
        ngx_http_wa_idem_end(ctx->wmcf, &ctx->idem_key, ctx->status,
                             &ctx->answer, ctx->verdict, ctx->attempt);
        ctx->claimed = 0;
        ctx->claim.done = ngx_http_wa_send_ended;
        ngx_http_wa_claim_end(ctx->wmcf, &ctx->business,
                              &ctx->claim.client_ref, ctx->local_id,
                              ctx->status, &ctx->answer, ctx->verdict,
                              ctx->attempt, &ctx->claim);
        return;
    }

    ngx_http_wa_send_end(ctx, ctx->unsent ? 0 : ctx->status, &ctx->answer,
                         ctx->verdict);
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
    ngx_table_elt_t     *h;
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
        if (ctx->retry_after) {
            h = ngx_list_push(&r->headers_out.headers);
            if (h != NULL) {
                h->hash = 1;
                ngx_str_set(&h->key, "Retry-After");
                ngx_str_set(&h->value, "1");
            }
        }

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

    ngx_http_wa_idem_end(ctx->wmcf, &ctx->idem_key, status, answer, verdict,
                         ctx->attempt);

    if (ctx->claimed) {
        ngx_http_wa_claim_end(ctx->wmcf, &ctx->business, &ctx->claim.client_ref,
                              ctx->local_id, status, answer, verdict,
                              status ? ctx->attempt : 0, NULL);
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
    /* its longest life: its wait for a turn, then its calls */
    cl->life = (time_t) ((ctx->wlcf->send_queue_timeout
                          + ctx->wlcf->send.timeout
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

    ngx_http_wa_idem_end(ctx->wmcf, &ctx->idem_key, 0, NULL, 0, 0);
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
                             &cl->answer, 's', 0);
        ngx_http_wa_send_reply(ctx, r, cl->status, cl->answer.data,
                               cl->answer.len);
        return;

    case NGX_HTTP_WA_CLAIM_INTERRUPTED:
        /* as a local replay of an interrupted send: its row "unknown" */
        ngx_http_wa_idem_end(ctx->wmcf, &ctx->idem_key, cl->status,
                             &cl->answer, 'u', 0);
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
        ngx_http_wa_idem_end(ctx->wmcf, &ctx->idem_key, 0, NULL, 0, 0);
        ngx_http_wa_send_reply(ctx, r, NGX_HTTP_CONFLICT,
                               (u_char *) "{\"error\":\"client_ref: a send "
                               "with this client_ref is in progress\"}",
                               sizeof("{\"error\":\"client_ref: a send "
                                      "with this client_ref is in "
                                      "progress\"}") - 1);
        return;

    default:
        ngx_http_wa_idem_end(ctx->wmcf, &ctx->idem_key, 0, NULL, 0, 0);
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






