/*
 * Cross-host client_ref claims: PostgreSQL arbitrates which send of a
 * client_ref goes to the provider, whichever nginx it reached. See
 * ngx_http_wa_claim.c.
 */

#ifndef NGX_HTTP_WA_CLAIM_H
#define NGX_HTTP_WA_CLAIM_H

#include "ngx_http_wa_module.h"


/* what a claim found */
#define NGX_HTTP_WA_CLAIM_OURS         0   /* send it (local_id, attempt) */
#define NGX_HTTP_WA_CLAIM_ANSWERED     1   /* another send answered: replay */
#define NGX_HTTP_WA_CLAIM_BUSY         2   /* another send is in flight */
#define NGX_HTTP_WA_CLAIM_INTERRUPTED  3   /* another send outlived its life:
                                              now unknown; answer replayed */
#define NGX_HTTP_WA_CLAIM_ERROR        4   /* no answer from the database */


typedef struct ngx_http_wa_claim_s  ngx_http_wa_claim_t;

typedef void (*ngx_http_wa_claim_done_pt)(ngx_http_wa_claim_t *cl);

struct ngx_http_wa_claim_s {
    ngx_queue_t                 queue;

    /* set by the caller */
    ngx_pool_t                 *pool;         /* the answer goes here */
    ngx_str_t                   business;
    ngx_str_t                   client_ref;
    char                       *local_id;     /* in: ours; out: the one
                                                 to send, or the holder's */
    ngx_uint_t                  attempt;      /* out, for OURS */
    time_t                      life;         /* a send's longest, s */
    ngx_http_wa_claim_done_pt   done;
    void                       *data;

    /* results, valid in done() */
    ngx_uint_t                  result;
    ngx_uint_t                  status;       /* ANSWERED, INTERRUPTED */
    ngx_str_t                   answer;
};


/* the per-worker connection, made in init_process */
ngx_int_t ngx_http_wa_claim_init_process(ngx_cycle_t *cycle,
    ngx_http_wa_main_conf_t *wmcf);
void ngx_http_wa_claim_exit_process(ngx_http_wa_main_conf_t *wmcf);

/* wa_send_idempotency_db: a conninfo libpq can use without blocking */
char *ngx_http_wa_claim_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* queue a claim; done() is called once, later, from the event loop.
 * NGX_ERROR: it could not be queued (done() is not called) */
ngx_int_t ngx_http_wa_claim_begin(ngx_http_wa_main_conf_t *wmcf,
    ngx_http_wa_claim_t *cl);

/* a claimed send ended: status 0 when nothing was sent (the claim is
 * released for the next attempt), else its answer (verdict 's', 'u',
 * 'f') and its last attempt (nginx's own retries included; 0: unknown);
 * the arguments are copied. With cl, cl->done() is called once the
 * end is recorded (cl->result OURS) or could not be (ERROR, logged) */
void ngx_http_wa_claim_end(ngx_http_wa_main_conf_t *wmcf,
    ngx_str_t *business, ngx_str_t *client_ref, const char *local_id,
    ngx_uint_t status, ngx_str_t *answer, u_char verdict, ngx_uint_t attempt,
    ngx_http_wa_claim_t *cl);

#endif /* NGX_HTTP_WA_CLAIM_H */
