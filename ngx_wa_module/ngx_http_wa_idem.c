/*
 * ngx_http_wa_idem: the idempotency zone of wa_send. One entry per
 * business and client_ref, shared by the workers: a send in flight, or its
 * answer kept for replays. A send the provider refused may be attempted
 * again, as the same send; a send whose worker died mid-call is answered
 * "unknown", never sent again.
 */

#include "ngx_http_wa_module.h"
#include "ngx_http_wa_idem.h"


#define NGX_HTTP_WA_IDEM_DEFAULT   (4 * 1024 * 1024)
#define NGX_HTTP_WA_IDEM_ANSWER    1024          /* answer bytes kept */
#define NGX_HTTP_WA_IDEM_KEEP      86400         /* s an answer is kept */
#define NGX_HTTP_WA_IDEM_STUCK     3600          /* s before an in-flight
                                                    entry may be evicted */


/* one client_ref: in flight (status 0) or its answer */
typedef struct {
    u_char                     color;
    u_char                     verdict;      /* of the answer: 's'ent,
                                                'u'nknown, 'f'ailed */
    u_short                    key_len;
    u_short                    status;
    u_short                    prev_status;  /* a new attempt's, until it
                                                starts */
    u_short                    answer_len;
    u_short                    attempts;
    time_t                     time;         /* first seen */
    time_t                     deadline;     /* in flight: ended by then */
    ngx_queue_t                queue;
    char                       local_id[NGX_HTTP_WA_LOCAL_ID_LEN];
    u_char                     data[1];      /* key, then the answer */
} ngx_http_wa_idem_node_t;


typedef struct {
    ngx_rbtree_t               rbtree;
    ngx_rbtree_node_t          sentinel;
    ngx_queue_t                queue;        /* least recently used last */
} ngx_http_wa_idem_sh_t;


typedef struct {
    ngx_http_wa_idem_sh_t     *sh;
    ngx_slab_pool_t           *shpool;
} ngx_http_wa_idem_t;


static ngx_int_t ngx_http_wa_idem_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_http_wa_idem_node_t *ngx_http_wa_idem_find(ngx_http_wa_idem_t *idem,
    ngx_str_t *key, uint32_t hash);
static void ngx_http_wa_idem_delete(ngx_http_wa_idem_t *idem,
    ngx_http_wa_idem_node_t *in);
static void ngx_http_wa_idem_rbtree_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);


/* the zone, added when a wa_send location exists */

ngx_int_t
ngx_http_wa_idem_init_conf(ngx_conf_t *cf, ngx_http_wa_main_conf_t *wmcf)
{
    ngx_str_t            name = ngx_string("wa_send_idempotency");
    ngx_http_wa_idem_t  *idem;

    ngx_conf_init_size_value(wmcf->idem_size, NGX_HTTP_WA_IDEM_DEFAULT);

    if (wmcf->idem_size < 8 * ngx_pagesize) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"wa_send_idempotency_zone\" is too small");
        return NGX_ERROR;
    }

    idem = ngx_pcalloc(cf->pool, sizeof(ngx_http_wa_idem_t));
    if (idem == NULL) {
        return NGX_ERROR;
    }

    wmcf->idem_zone = ngx_shared_memory_add(cf, &name, wmcf->idem_size,
                                            &ngx_http_wa_module);
    if (wmcf->idem_zone == NULL) {
        return NGX_ERROR;
    }

    wmcf->idem_zone->init = ngx_http_wa_idem_init_zone;
    wmcf->idem_zone->data = idem;

    return NGX_OK;
}


/* ---- idempotency zone -------------------------------------------------- */


static ngx_int_t
ngx_http_wa_idem_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_wa_idem_t  *oidem = data;

    ngx_http_wa_idem_t  *idem;

    idem = shm_zone->data;

    /* a reload keeps the zone, and with it every client_ref's answer */
    if (oidem) {
        idem->sh = oidem->sh;
        idem->shpool = oidem->shpool;
        return NGX_OK;
    }

    idem->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        idem->sh = idem->shpool->data;
        return NGX_OK;
    }

    idem->sh = ngx_slab_alloc(idem->shpool, sizeof(ngx_http_wa_idem_sh_t));
    if (idem->sh == NULL) {
        return NGX_ERROR;
    }

    idem->shpool->data = idem->sh;

    ngx_rbtree_init(&idem->sh->rbtree, &idem->sh->sentinel,
                    ngx_http_wa_idem_rbtree_insert);
    ngx_queue_init(&idem->sh->queue);

    idem->shpool->log_nomem = 0;

    return NGX_OK;
}


/*
 * NEW (an in-flight entry now holds key, named local_id), RETRY (the
 * provider refused the last attempt: the entry is in flight again, local_id
 * and attempt are the send's), BUSY (a live send holds it), DONE (status
 * and answer copied into pool), INTERRUPTED (the send that held it
 * outlived its life, so its worker died: local_id and attempt become that
 * send's, status and answer say "unknown" and are kept for the next
 * calls), or NGX_ERROR (the zone is full of entries too young to evict). An answer is kept NGX_HTTP_WA_IDEM_KEEP seconds
 * from the first call, whatever the calls since.
 */

ngx_int_t
ngx_http_wa_idem_begin(ngx_http_wa_main_conf_t *wmcf, ngx_str_t *key,
    time_t life, char *local_id, ngx_uint_t *attempt, ngx_uint_t *status,
    ngx_str_t *answer, ngx_pool_t *pool)
{
    u_char                   *p;
    size_t                    size;
    time_t                    now;
    uint32_t                  hash;
    ngx_int_t                 rc;
    ngx_uint_t                tries;
    ngx_queue_t              *q;
    ngx_rbtree_node_t        *node;
    ngx_http_wa_idem_t       *idem;
    ngx_http_wa_idem_node_t  *in;

    idem = wmcf->idem_zone->data;
    hash = ngx_crc32_short(key->data, key->len);
    now = ngx_time();

    ngx_shmtx_lock(&idem->shpool->mutex);

    in = ngx_http_wa_idem_find(idem, key, hash);

    if (in != NULL && now - in->time >= NGX_HTTP_WA_IDEM_KEEP) {
        ngx_http_wa_idem_delete(idem, in);
        in = NULL;
    }

    if (in != NULL) {
        ngx_queue_remove(&in->queue);
        ngx_queue_insert_head(&idem->sh->queue, &in->queue);

        if (in->status == 0 && now <= in->deadline) {
            ngx_shmtx_unlock(&idem->shpool->mutex);
            return NGX_HTTP_WA_IDEM_BUSY;
        }

        /* WhatsApp did not take it: the same send, attempted again */
        if (in->status != 0 && in->verdict == 'f'
            && in->attempts < 0xffff)
        {
            in->prev_status = in->status;
            in->status = 0;
            in->attempts++;
            in->deadline = now + life + NGX_HTTP_WA_IDEM_SLACK;

            ngx_memcpy(local_id, in->local_id, NGX_HTTP_WA_LOCAL_ID_LEN);
            *attempt = in->attempts;

            ngx_shmtx_unlock(&idem->shpool->mutex);
            return NGX_HTTP_WA_IDEM_RETRY;
        }

        rc = NGX_HTTP_WA_IDEM_DONE;

        if (in->status == 0) {
            rc = NGX_HTTP_WA_IDEM_INTERRUPTED;

            p = in->data + in->key_len;
            p = ngx_snprintf(p, NGX_HTTP_WA_IDEM_ANSWER,
                    "{\"id\":\"%s\",\"status\":\"unknown\",\"lead_id\":null,"
                    "\"retryable\":false,\"error\":{\"code\":null,"
                    "\"title\":\"interrupted: the nginx worker exited while "
                    "the provider call was in flight; it may have reached "
                    "WhatsApp, so it is not sent again\"}}", in->local_id);

            in->status = NGX_HTTP_GATEWAY_TIME_OUT;
            in->verdict = 'u';
            in->answer_len = (u_short) (p - (in->data + in->key_len));
            ngx_memcpy(local_id, in->local_id, NGX_HTTP_WA_LOCAL_ID_LEN);
            *attempt = in->attempts;
        }

        *status = in->status;
        answer->len = in->answer_len;
        answer->data = ngx_pnalloc(pool, in->answer_len);

        if (answer->data) {
            ngx_memcpy(answer->data, in->data + in->key_len, in->answer_len);
        }

        ngx_shmtx_unlock(&idem->shpool->mutex);

        return answer->data ? rc : NGX_ERROR;
    }

    size = offsetof(ngx_rbtree_node_t, color)
           + offsetof(ngx_http_wa_idem_node_t, data)
           + key->len + NGX_HTTP_WA_IDEM_ANSWER;

    for (tries = 0; tries < 8; tries++) {
        node = ngx_slab_alloc_locked(idem->shpool, size);
        if (node != NULL) {
            break;
        }

        /* make room: the least recently used entry, if it may go */
        if (ngx_queue_empty(&idem->sh->queue)) {
            break;
        }

        q = ngx_queue_last(&idem->sh->queue);
        in = ngx_queue_data(q, ngx_http_wa_idem_node_t, queue);

        if (in->status == 0 && now - in->time < NGX_HTTP_WA_IDEM_STUCK) {
            break;
        }

        ngx_http_wa_idem_delete(idem, in);
    }

    if (node == NULL) {
        ngx_shmtx_unlock(&idem->shpool->mutex);
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "wa send: idempotency zone is full of sends in flight");
        return NGX_ERROR;
    }

    in = (ngx_http_wa_idem_node_t *) &node->color;

    node->key = hash;
    in->key_len = (u_short) key->len;
    in->status = 0;
    in->verdict = 0;
    in->attempts = 1;
    in->answer_len = 0;
    in->time = now;
    in->deadline = now + life + NGX_HTTP_WA_IDEM_SLACK;
    ngx_memcpy(in->local_id, local_id, NGX_HTTP_WA_LOCAL_ID_LEN);
    ngx_memcpy(in->data, key->data, key->len);

    ngx_rbtree_insert(&idem->sh->rbtree, node);
    ngx_queue_insert_head(&idem->sh->queue, &in->queue);

    ngx_shmtx_unlock(&idem->shpool->mutex);

    return NGX_HTTP_WA_IDEM_NEW;
}


/* under the zone's lock */

static void
ngx_http_wa_idem_delete(ngx_http_wa_idem_t *idem, ngx_http_wa_idem_node_t *in)
{
    ngx_rbtree_node_t  *node;

    ngx_queue_remove(&in->queue);
    node = (ngx_rbtree_node_t *)
               ((u_char *) in - offsetof(ngx_rbtree_node_t, color));
    ngx_rbtree_delete(&idem->sh->rbtree, node);
    ngx_slab_free_locked(idem->shpool, node);
}


/*
 * Status 0: nothing was sent; a first attempt forgets the key, a later one
 * leaves the last answer as it was. Else keep the answer and its verdict.
 */

void
ngx_http_wa_idem_end(ngx_http_wa_main_conf_t *wmcf, ngx_str_t *key,
    ngx_uint_t status, ngx_str_t *answer, u_char verdict, ngx_uint_t attempt)
{
    uint32_t                  hash;
    ngx_http_wa_idem_t       *idem;
    ngx_http_wa_idem_node_t  *in;
    static u_char             brief[] = "{\"error\":\"client_ref: already "
                                        "sent; the original answer was too "
                                        "long to keep\"}";

    idem = wmcf->idem_zone->data;
    hash = ngx_crc32_short(key->data, key->len);

    ngx_shmtx_lock(&idem->shpool->mutex);

    in = ngx_http_wa_idem_find(idem, key, hash);

    if (in != NULL) {
        in->verdict = verdict;

        /* the next attempt of a refused send comes after the retries */
        if (status != 0 && attempt > in->attempts && attempt <= 0xffff) {
            in->attempts = (u_short) attempt;
        }

        if (status == 0 && in->attempts > 1) {
            in->status = in->prev_status;
            in->verdict = 'f';
            in->attempts--;

        } else if (status == 0) {
            ngx_http_wa_idem_delete(idem, in);

        } else if (answer->len && answer->len <= NGX_HTTP_WA_IDEM_ANSWER) {
            in->status = (u_short) status;
            in->answer_len = (u_short) answer->len;
            ngx_memcpy(in->data + in->key_len, answer->data, answer->len);

        } else {
            in->status = NGX_HTTP_CONFLICT;
            in->answer_len = sizeof(brief) - 1;
            ngx_memcpy(in->data + in->key_len, brief, sizeof(brief) - 1);
        }
    }

    ngx_shmtx_unlock(&idem->shpool->mutex);
}


static ngx_http_wa_idem_node_t *
ngx_http_wa_idem_find(ngx_http_wa_idem_t *idem, ngx_str_t *key, uint32_t hash)
{
    ngx_int_t                 rc;
    ngx_rbtree_node_t        *node, *sentinel;
    ngx_http_wa_idem_node_t  *in;

    node = idem->sh->rbtree.root;
    sentinel = idem->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        in = (ngx_http_wa_idem_node_t *) &node->color;

        rc = ngx_memn2cmp(key->data, in->data, key->len,
                          (size_t) in->key_len);
        if (rc == 0) {
            return in;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_http_wa_idem_rbtree_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t        **p;
    ngx_http_wa_idem_node_t   *in, *int_;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            in = (ngx_http_wa_idem_node_t *) &node->color;
            int_ = (ngx_http_wa_idem_node_t *) &temp->color;

            p = (ngx_memn2cmp(in->data, int_->data, in->key_len,
                              int_->key_len) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}
