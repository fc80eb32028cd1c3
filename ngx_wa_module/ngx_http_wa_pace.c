/*
 * ngx_http_wa_pace: the pacing zone of wa_send.
 *
 * Meta accepts so many messages a second per business number (80 by
 * default) and, per recipient, about one every few seconds (the pair
 * limit, 131056); over them it refuses with 130429 / 131056 and the
 * message is not sent. Every worker paces its sends through one shared
 * zone, so the limit holds for nginx as a whole; the zone survives a
 * reload (same name and size), so old and new workers share the schedule.
 *
 * The zone is nginx's limit_req, rearranged: a red-black tree of channels
 * (made when the configuration is loaded, never evicted: their number is
 * the configuration's) and one of recipient pairs (made on first use,
 * forgotten least recently used first once their spacing is over). The
 * arithmetic is wa_pace_slot.h. The channel's node is found once, at
 * configuration time (ch->pace), so a send costs a lock, a few additions
 * and an unlock; the counters are atomics outside the lock.
 */

#include "ngx_http_wa_module.h"
#include "ngx_http_wa_pace.h"
#include "wa_pace_slot.h"


#define NGX_HTTP_WA_PACE_DEFAULT   (1024 * 1024)


/*
 * make bench builds the module with NGX_HTTP_WA_PACE_BENCH: every reserve
 * and go is timed (CLOCK_MONOTONIC, the two reads included) into the
 * channel's node, and wa_status shows it. Never in a production build.
 */
#if (NGX_HTTP_WA_PACE_BENCH)

#define ngx_http_wa_pace_bench_start()                                        \
    struct timespec  bench_t0, bench_t1;                                      \
    clock_gettime(CLOCK_MONOTONIC, &bench_t0)

#define ngx_http_wa_pace_bench_end(pc)                                        \
    clock_gettime(CLOCK_MONOTONIC, &bench_t1);                                \
    (void) __atomic_fetch_add(&(pc)->bench_ns,                                \
        (uint64_t) ((bench_t1.tv_sec - bench_t0.tv_sec) * 1000000000          \
                    + bench_t1.tv_nsec - bench_t0.tv_nsec), __ATOMIC_RELAXED);\
    (void) __atomic_fetch_add(&(pc)->bench_calls, 1, __ATOMIC_RELAXED)

#else

#define ngx_http_wa_pace_bench_start()
#define ngx_http_wa_pace_bench_end(pc)

#endif


typedef struct {
    u_char                     color;
    u_char                     len;
    u_short                    pad;
    uint64_t                   next;         /* µs: the next free slot */
    uint64_t                   last;         /* µs: the latest call made */
    uint64_t                   interval;     /* µs, as last used */
    uint64_t                   pair_gap;     /* µs, as last used */
    uint64_t                   counters[NGX_HTTP_WA_PACE_N];
    int64_t                    queue;
    uint64_t                   bench_ns;     /* NGX_HTTP_WA_PACE_BENCH */
    uint64_t                   bench_calls;
    u_char                     data[1];      /* phone number id */
} ngx_http_wa_pace_chan_t;


typedef struct {
    u_char                     color;
    u_char                     pad;
    u_short                    len;
    ngx_queue_t                queue;
    uint64_t                   next;         /* µs: its next send */
    u_char                     data[1];      /* "channel:recipient" */
} ngx_http_wa_pace_pair_t;


typedef struct {
    ngx_rbtree_t               channels;
    ngx_rbtree_node_t          channels_sentinel;
    ngx_rbtree_t               pairs;
    ngx_rbtree_node_t          pairs_sentinel;
    ngx_queue_t                lru;          /* pairs, least recent last */
} ngx_http_wa_pace_sh_t;


typedef struct {
    ngx_http_wa_pace_sh_t     *sh;
    ngx_slab_pool_t           *shpool;
    ngx_array_t               *channel_sets; /* the configuration's */
} ngx_http_wa_pace_t;


static uint64_t ngx_http_wa_pace_clock(void);
static ngx_msec_t ngx_http_wa_pace_timer(uint64_t at);
static ngx_int_t ngx_http_wa_pace_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_http_wa_pace_chan_t *ngx_http_wa_pace_find(
    ngx_http_wa_pace_t *pace, ngx_str_t *id);
static ngx_http_wa_pace_chan_t *ngx_http_wa_pace_channel(
    ngx_http_wa_pace_t *pace, ngx_str_t *id);
static ngx_http_wa_pace_pair_t *ngx_http_wa_pace_pair(
    ngx_http_wa_pace_t *pace, ngx_str_t *id, const char *to, uint64_t now);
static void ngx_http_wa_pace_expire(ngx_http_wa_pace_t *pace, uint64_t now,
    ngx_uint_t force);
static void ngx_http_wa_pace_chan_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static void ngx_http_wa_pace_pair_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);


ngx_int_t
ngx_http_wa_pace_init_conf(ngx_conf_t *cf, ngx_http_wa_main_conf_t *wmcf)
{
    ngx_str_t            name = ngx_string("wa_send_pacing");
    ngx_http_wa_pace_t  *pace;

    ngx_conf_init_size_value(wmcf->pace_size, NGX_HTTP_WA_PACE_DEFAULT);

    if (wmcf->pace_size < 8 * ngx_pagesize) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"wa_send_pacing_zone\" is too small");
        return NGX_ERROR;
    }

    pace = ngx_pcalloc(cf->pool, sizeof(ngx_http_wa_pace_t));
    if (pace == NULL) {
        return NGX_ERROR;
    }

    pace->channel_sets = wmcf->channel_sets;

    wmcf->pace_zone = ngx_shared_memory_add(cf, &name, wmcf->pace_size,
                                            &ngx_http_wa_module);
    if (wmcf->pace_zone == NULL) {
        return NGX_ERROR;
    }

    wmcf->pace_zone->init = ngx_http_wa_pace_init_zone;
    wmcf->pace_zone->data = pace;

    return NGX_OK;
}


/*
 * In the master, once per configuration: the zone as it was (a reload
 * keeps every channel's schedule), and each configured channel's node.
 */

static ngx_int_t
ngx_http_wa_pace_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_wa_pace_t  *opace = data;

    ngx_uint_t                i, j;
    ngx_array_t             **sets, *set;
    ngx_http_wa_pace_t       *pace;
    ngx_http_wa_channel_t    *ch;
    ngx_http_wa_pace_chan_t  *pc;

    pace = shm_zone->data;

    if (opace) {
        pace->sh = opace->sh;
        pace->shpool = opace->shpool;

    } else {
        pace->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

        if (shm_zone->shm.exists) {
            pace->sh = pace->shpool->data;

        } else {
            pace->sh = ngx_slab_alloc(pace->shpool,
                                      sizeof(ngx_http_wa_pace_sh_t));
            if (pace->sh == NULL) {
                return NGX_ERROR;
            }

            pace->shpool->data = pace->sh;

            ngx_rbtree_init(&pace->sh->channels, &pace->sh->channels_sentinel,
                            ngx_http_wa_pace_chan_insert);
            ngx_rbtree_init(&pace->sh->pairs, &pace->sh->pairs_sentinel,
                            ngx_http_wa_pace_pair_insert);
            ngx_queue_init(&pace->sh->lru);

            pace->shpool->log_nomem = 0;
        }
    }

    if (pace->channel_sets == NULL) {
        return NGX_OK;
    }

    sets = pace->channel_sets->elts;

    ngx_shmtx_lock(&pace->shpool->mutex);

    for (i = 0; i < pace->channel_sets->nelts; i++) {
        set = sets[i];
        ch = set->elts;

        for (j = 0; j < set->nelts; j++) {
            pc = ngx_http_wa_pace_channel(pace, &ch[j].phone_number_id);

            if (pc == NULL) {
                ngx_shmtx_unlock(&pace->shpool->mutex);
                ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                              "\"wa_send_pacing_zone\" is too small for "
                              "the channels");
                return NGX_ERROR;
            }

            pc->interval = ch[j].interval_us;
            pc->pair_gap = (uint64_t) ch[j].pair_gap * 1000;
            ch[j].pace = pc;
        }
    }

    ngx_shmtx_unlock(&pace->shpool->mutex);

    return NGX_OK;
}


/* a channel's node, or NULL; under the zone's lock */

static ngx_http_wa_pace_chan_t *
ngx_http_wa_pace_find(ngx_http_wa_pace_t *pace, ngx_str_t *id)
{
    uint32_t                  hash;
    ngx_int_t                 rc;
    ngx_rbtree_node_t        *node, *sentinel;
    ngx_http_wa_pace_chan_t  *pc;

    hash = ngx_crc32_short(id->data, id->len);
    node = pace->sh->channels.root;
    sentinel = pace->sh->channels.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        pc = (ngx_http_wa_pace_chan_t *) &node->color;
        rc = ngx_memn2cmp(id->data, pc->data, id->len, (size_t) pc->len);

        if (rc == 0) {
            return pc;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/* find or make a channel's node; under the zone's lock */

static ngx_http_wa_pace_chan_t *
ngx_http_wa_pace_channel(ngx_http_wa_pace_t *pace, ngx_str_t *id)
{
    uint32_t                  hash;
    ngx_rbtree_node_t        *node;
    ngx_http_wa_pace_chan_t  *pc;

    pc = ngx_http_wa_pace_find(pace, id);
    if (pc != NULL) {
        return pc;
    }

    hash = ngx_crc32_short(id->data, id->len);

    node = ngx_slab_alloc_locked(pace->shpool,
                                 offsetof(ngx_rbtree_node_t, color)
                                 + offsetof(ngx_http_wa_pace_chan_t, data)
                                 + id->len);
    if (node == NULL) {
        return NULL;
    }

    pc = (ngx_http_wa_pace_chan_t *) &node->color;
    ngx_memzero(pc, offsetof(ngx_http_wa_pace_chan_t, data));

    node->key = hash;
    pc->len = (u_char) id->len;          /* digits, at most 20 */
    ngx_memcpy(pc->data, id->data, id->len);

    ngx_rbtree_insert(&pace->sh->channels, node);

    return pc;
}


ngx_int_t
ngx_http_wa_pace_reserve(ngx_http_wa_main_conf_t *wmcf,
    ngx_http_wa_channel_t *ch, const char *to, ngx_msec_t not_before,
    ngx_msec_t max_wait, ngx_msec_t *delay)
{
    int                       rc;
    uint64_t                  now, at, *pair_next;
    ngx_http_wa_pace_t       *pace;
    ngx_http_wa_pace_chan_t  *pc;
    ngx_http_wa_pace_pair_t  *pp;

    pc = ch->pace;
    *delay = 0;

    if (pc == NULL || (ch->interval_us == 0 && ch->pair_gap == 0)) {
        *delay = not_before;
        return (not_before <= max_wait) ? NGX_OK : NGX_BUSY;
    }

    ngx_http_wa_pace_bench_start();

    pace = wmcf->pace_zone->data;
    now = ngx_http_wa_pace_clock();

    ngx_shmtx_lock(&pace->shpool->mutex);

    pair_next = NULL;

    if (ch->pair_gap) {
        pp = ngx_http_wa_pace_pair(pace, &ch->phone_number_id, to, now);

        if (pp != NULL) {
            pair_next = &pp->next;
        }
    }

    rc = wa_pace_slot(&pc->next, ch->interval_us, pair_next,
                      (uint64_t) ch->pair_gap * 1000, now,
                      (uint64_t) not_before * 1000,
                      (uint64_t) max_wait * 1000, &at);

    /* it goes now; with sync=on, after a sync: ngx_http_wa_pace_go()
     * notes it then */
    if (rc == 0 && at - now < 1000 && !wmcf->sync) {
        pc->last = ngx_max(pc->last, now);
    }

    ngx_shmtx_unlock(&pace->shpool->mutex);

    ngx_http_wa_pace_bench_end(pc);

    if (rc != 0) {
        *delay = (ngx_msec_t) ((at - now) / 1000);
        *delay -= ngx_min(*delay, max_wait);
        return NGX_BUSY;
    }

    /* a turn within the current millisecond goes now: timers are in ms */
    *delay = (at - now < 1000) ? 0 : ngx_http_wa_pace_timer(at);

    if (*delay) {
        (void) __atomic_fetch_add(&pc->counters[NGX_HTTP_WA_PACE_WAITS], 1,
                                  __ATOMIC_RELAXED);
        (void) __atomic_fetch_add(&pc->counters[NGX_HTTP_WA_PACE_WAITED_MS],
                                  (uint64_t) *delay, __ATOMIC_RELAXED);
    }

    return NGX_OK;
}


/*
 * A send whose turn came: its timer may fire late (a busy worker), and
 * late timers fire together; a call goes only an interval (less the
 * timer's millisecond) after the channel's latest, else *delay says how
 * long to wait again. The schedule promised the spacing; this keeps it.
 */

ngx_int_t
ngx_http_wa_pace_go(ngx_http_wa_main_conf_t *wmcf, ngx_http_wa_channel_t *ch,
    ngx_msec_t *delay)
{
    uint64_t                  now, due;
    ngx_http_wa_pace_t       *pace;
    ngx_http_wa_pace_chan_t  *pc;

    pc = ch->pace;
    *delay = 0;

    if (pc == NULL || ch->interval_us <= 1000) {
        return NGX_OK;
    }

    ngx_http_wa_pace_bench_start();

    pace = wmcf->pace_zone->data;
    now = ngx_http_wa_pace_clock();

    ngx_shmtx_lock(&pace->shpool->mutex);

    due = pc->last + ch->interval_us;

    if (due > now + 1000) {
        ngx_shmtx_unlock(&pace->shpool->mutex);
        *delay = ngx_http_wa_pace_timer(due);
        ngx_http_wa_pace_bench_end(pc);
        return NGX_AGAIN;
    }

    pc->last = ngx_max(pc->last, now);

    ngx_shmtx_unlock(&pace->shpool->mutex);

    ngx_http_wa_pace_bench_end(pc);

    return NGX_OK;
}


/*
 * The clock of the schedule: CLOCK_MONOTONIC in µs, the clock nginx's
 * timers and ngx_current_msec run on, read now. Each worker's
 * ngx_current_msec is as old as its event loop's last wake-up; two workers
 * booking turns a microsecond apart by their cached clocks would see each
 * other's turns milliseconds ahead, and wait for nothing.
 */

static uint64_t
ngx_http_wa_pace_clock(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}


/* a timer for time at (µs): nginx counts it from this worker's cached
 * clock, which may be behind; never early */

static ngx_msec_t
ngx_http_wa_pace_timer(uint64_t at)
{
    ngx_msec_t  due;

    due = (ngx_msec_t) ((at + 999) / 1000);

    return (ngx_msec_int_t) (due - ngx_current_msec) > 0
           ? due - ngx_current_msec : 1;
}


void
ngx_http_wa_pace_count(ngx_http_wa_channel_t *ch, ngx_int_t counter,
    int64_t n)
{
    ngx_http_wa_pace_chan_t  *pc;

    pc = ch->pace;

    if (pc == NULL) {
        return;
    }

    if (counter < 0) {
        (void) __atomic_fetch_add(&pc->queue, n, __ATOMIC_RELAXED);
        return;
    }

    (void) __atomic_fetch_add(&pc->counters[counter], (uint64_t) n,
                              __ATOMIC_RELAXED);
}


/*
 * A recipient's pair node, made or refreshed; under the zone's lock. NULL
 * when the zone has no room even after forgetting the least recently used
 * pair: this send is then paced by its channel only, and the log says so.
 */

static ngx_http_wa_pace_pair_t *
ngx_http_wa_pace_pair(ngx_http_wa_pace_t *pace, ngx_str_t *id,
    const char *to, uint64_t now)
{
    u_char                    key[64];
    size_t                    len, tolen;
    uint32_t                  hash;
    ngx_int_t                 rc;
    ngx_rbtree_node_t        *node, *sentinel;
    ngx_http_wa_pace_pair_t  *pp;

    tolen = ngx_strlen(to);
    if (id->len + 1 + tolen > sizeof(key)) {
        tolen = sizeof(key) - 1 - id->len;
    }

    len = ngx_sprintf(key, "%V:%*s", id, tolen, to) - key;
    hash = ngx_crc32_short(key, len);

    node = pace->sh->pairs.root;
    sentinel = pace->sh->pairs.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        pp = (ngx_http_wa_pace_pair_t *) &node->color;
        rc = ngx_memn2cmp(key, pp->data, len, (size_t) pp->len);

        if (rc == 0) {
            ngx_queue_remove(&pp->queue);
            ngx_queue_insert_head(&pace->sh->lru, &pp->queue);
            return pp;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    ngx_http_wa_pace_expire(pace, now, 0);

    len = ngx_min(len, sizeof(key));
    node = ngx_slab_alloc_locked(pace->shpool,
                                 offsetof(ngx_rbtree_node_t, color)
                                 + offsetof(ngx_http_wa_pace_pair_t, data)
                                 + len);
    if (node == NULL) {
        ngx_http_wa_pace_expire(pace, now, 1);

        node = ngx_slab_alloc_locked(pace->shpool,
                                     offsetof(ngx_rbtree_node_t, color)
                                     + offsetof(ngx_http_wa_pace_pair_t, data)
                                     + len);
        if (node == NULL) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "wa send: \"wa_send_pacing_zone\" is full, a "
                          "send to %s is not spaced from the last", to);
            return NULL;
        }
    }

    pp = (ngx_http_wa_pace_pair_t *) &node->color;

    node->key = hash;
    pp->len = (u_short) len;
    pp->next = 0;
    ngx_memcpy(pp->data, key, len);

    ngx_rbtree_insert(&pace->sh->pairs, node);
    ngx_queue_insert_head(&pace->sh->lru, &pp->queue);

    return pp;
}


/* forget up to two pairs whose spacing is over; force: the least recently
 * used one whatever its state (the zone is full) */

static void
ngx_http_wa_pace_expire(ngx_http_wa_pace_t *pace, uint64_t now,
    ngx_uint_t force)
{
    ngx_uint_t                n;
    ngx_queue_t              *q;
    ngx_rbtree_node_t        *node;
    ngx_http_wa_pace_pair_t  *pp;

    for (n = 0; n < 2; n++) {

        if (ngx_queue_empty(&pace->sh->lru)) {
            return;
        }

        q = ngx_queue_last(&pace->sh->lru);
        pp = ngx_queue_data(q, ngx_http_wa_pace_pair_t, queue);

        if (!force && pp->next > now) {
            return;
        }

        force = 0;

        ngx_queue_remove(q);
        node = (ngx_rbtree_node_t *)
                   ((u_char *) pp - offsetof(ngx_rbtree_node_t, color));
        ngx_rbtree_delete(&pace->sh->pairs, node);
        ngx_slab_free_locked(pace->shpool, node);
    }
}


ngx_int_t
ngx_http_wa_pace_stat(ngx_http_wa_main_conf_t *wmcf, u_char *id, size_t len,
    ngx_http_wa_pace_stat_t *st)
{
    ngx_uint_t                i;
    ngx_str_t                 key;
    uint64_t                  now;
    ngx_http_wa_pace_t       *pace;
    ngx_http_wa_pace_chan_t  *pc;

    if (wmcf->pace_zone == NULL) {
        return NGX_DECLINED;
    }

    pace = wmcf->pace_zone->data;

    if (pace == NULL || pace->sh == NULL) {
        return NGX_DECLINED;
    }

    key.data = id;
    key.len = len;
    now = ngx_http_wa_pace_clock();

    ngx_shmtx_lock(&pace->shpool->mutex);

    pc = ngx_http_wa_pace_find(pace, &key);

    if (pc == NULL) {
        ngx_shmtx_unlock(&pace->shpool->mutex);
        return NGX_DECLINED;
    }

    st->interval_us = pc->interval;
    st->pair_gap_us = pc->pair_gap;
    st->backlog_ms = pc->next > now ? (pc->next - now) / 1000 : 0;

    ngx_shmtx_unlock(&pace->shpool->mutex);

    for (i = 0; i < NGX_HTTP_WA_PACE_N; i++) {
        st->counters[i] = __atomic_load_n(&pc->counters[i], __ATOMIC_RELAXED);
    }

    st->queue = __atomic_load_n(&pc->queue, __ATOMIC_RELAXED);
    st->bench_ns = __atomic_load_n(&pc->bench_ns, __ATOMIC_RELAXED);
    st->bench_calls = __atomic_load_n(&pc->bench_calls, __ATOMIC_RELAXED);

    return NGX_OK;
}


static void
ngx_http_wa_pace_chan_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t        **p;
    ngx_http_wa_pace_chan_t   *a, *b;

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            a = (ngx_http_wa_pace_chan_t *) &node->color;
            b = (ngx_http_wa_pace_chan_t *) &temp->color;

            p = (ngx_memn2cmp(a->data, b->data, a->len, b->len) < 0)
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


static void
ngx_http_wa_pace_pair_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t        **p;
    ngx_http_wa_pace_pair_t   *a, *b;

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            a = (ngx_http_wa_pace_pair_t *) &node->color;
            b = (ngx_http_wa_pace_pair_t *) &temp->color;

            p = (ngx_memn2cmp(a->data, b->data, a->len, b->len) < 0)
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
