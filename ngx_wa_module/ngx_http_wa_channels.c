/*
 * Counters per channel (phone number id) and per provider error code, in a
 * shared zone every worker counts into and wa_status renders.
 *
 * Bounded: NGX_HTTP_WA_CHANNELS_MAX channels and NGX_HTTP_WA_CODES_MAX
 * (channel, code) pairs, in open-addressed tables that never shrink. A
 * channel or code that finds no room, or whose id is not a plain token
 * (webhooks can name any phone number id), is counted in the "other" slot
 * and in the dropped counter: the totals stay whole and the zone's size
 * stays fixed whatever the traffic says.
 *
 * Lock-free counting: a slot is published once, its key written before its
 * state is stored with release; lookups load the state with acquire and
 * counters are atomic adds. Only a new key takes the zone's mutex, to pick
 * its slot, and holds it for no I/O. A reload keeps the zone (same name,
 * size and tag) and the counts with it.
 */

#include "ngx_http_wa_module.h"


#define NGX_HTTP_WA_SLOT_READY  1


static ngx_int_t ngx_http_wa_channels_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_http_wa_chan_slot_t *ngx_http_wa_channel_slot(
    ngx_http_wa_chan_shctx_t *sh, ngx_slab_pool_t *shpool, ngx_str_t *id,
    ngx_str_t *business);
static ngx_int_t ngx_http_wa_channels_token(ngx_str_t *s, size_t max);


const ngx_http_wa_chan_counter_t  ngx_http_wa_chan_counters[] = {
#define NGX_HTTP_WA_CHAN_ROW(name, metric, labels)                            \
    { #name, offsetof(ngx_http_wa_chan_slot_t, name), metric, labels },
    NGX_HTTP_WA_CHANNEL_COUNTERS(NGX_HTTP_WA_CHAN_ROW)
#undef NGX_HTTP_WA_CHAN_ROW
    { NULL, 0, NULL, NULL }
};


ngx_int_t
ngx_http_wa_channels_init_conf(ngx_conf_t *cf, ngx_http_wa_main_conf_t *wmcf)
{
    size_t     size;
    ngx_str_t  name = ngx_string("wa_channel_counters");

    /* the tables, the slab pool's own pages, and room to spare */
    size = ngx_align(sizeof(ngx_http_wa_chan_shctx_t), ngx_pagesize)
           + 8 * ngx_pagesize;

    wmcf->channels_zone = ngx_shared_memory_add(cf, &name, size,
                                                &ngx_http_wa_module);
    if (wmcf->channels_zone == NULL) {
        return NGX_ERROR;
    }

    wmcf->channels_zone->init = ngx_http_wa_channels_init_zone;

    return NGX_OK;
}


static ngx_int_t
ngx_http_wa_channels_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t           *shpool;
    ngx_http_wa_chan_shctx_t  *sh;

    if (data != NULL) {
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_calloc(shpool, sizeof(ngx_http_wa_chan_shctx_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    /* slot 0 of each table is "other": what found no room */
    sh->channels[0].id_len = sizeof("other") - 1;
    ngx_memcpy(sh->channels[0].id, "other", sizeof("other") - 1);
    sh->channels[0].state = NGX_HTTP_WA_SLOT_READY;

    sh->codes[0].code_len = sizeof("other") - 1;
    ngx_memcpy(sh->codes[0].code, "other", sizeof("other") - 1);
    sh->codes[0].state = NGX_HTTP_WA_SLOT_READY;

    shpool->data = sh;
    shm_zone->data = sh;

    return NGX_OK;
}


ngx_http_wa_chan_shctx_t *
ngx_http_wa_channels(ngx_http_wa_main_conf_t *wmcf)
{
    return wmcf->channels_zone ? wmcf->channels_zone->data : NULL;
}


/*
 * Count n in a channel's counter at offset (offsetof a counter of
 * ngx_http_wa_chan_slot_t); business labels the channel the first time it
 * is seen.
 */
void
ngx_http_wa_channels_count(ngx_http_wa_main_conf_t *wmcf, ngx_str_t *id,
    ngx_str_t *business, size_t offset, uint64_t n)
{
    ngx_http_wa_chan_slot_t   *slot;
    ngx_http_wa_chan_shctx_t  *sh;

    sh = ngx_http_wa_channels(wmcf);

    if (sh == NULL || n == 0) {
        return;
    }

    slot = ngx_http_wa_channel_slot(sh,
               (ngx_slab_pool_t *) wmcf->channels_zone->shm.addr, id,
               business);

    __atomic_add_fetch((uint64_t *) ((u_char *) slot + offset), n,
                       __ATOMIC_RELAXED);
}


/* one refusal of a send by the provider, with its error code */
void
ngx_http_wa_channels_error(ngx_http_wa_main_conf_t *wmcf, ngx_str_t *id,
    ngx_str_t *business, ngx_str_t *code)
{
    uint32_t                   hash;
    ngx_uint_t                 i, k, ch;
    ngx_slab_pool_t           *shpool;
    ngx_http_wa_code_slot_t   *slot;
    ngx_http_wa_chan_shctx_t  *sh;

    sh = ngx_http_wa_channels(wmcf);

    if (sh == NULL) {
        return;
    }

    shpool = (ngx_slab_pool_t *) wmcf->channels_zone->shm.addr;
    ch = ngx_http_wa_channel_slot(sh, shpool, id, business) - sh->channels;

    if (ch == 0 || ngx_http_wa_channels_token(code, NGX_HTTP_WA_CODE_LEN)
                   != NGX_OK)
    {
        slot = &sh->codes[0];
        goto count;
    }

    hash = ngx_crc32_short(code->data, code->len) ^ (uint32_t) ch;

    for (k = 0; k < 2; k++) {

        /* the second pass, under the mutex, claims a free slot */
        if (k == 1) {
            ngx_shmtx_lock(&shpool->mutex);
        }

        for (i = 0; i < NGX_HTTP_WA_CODES_MAX - 1; i++) {
            slot = &sh->codes[1 + (hash + i) % (NGX_HTTP_WA_CODES_MAX - 1)];

            if (__atomic_load_n(&slot->state, __ATOMIC_ACQUIRE)
                != NGX_HTTP_WA_SLOT_READY)
            {
                if (k == 0) {
                    break;
                }

                slot->channel = (uint32_t) ch;
                slot->code_len = (u_char) code->len;
                ngx_memcpy(slot->code, code->data, code->len);
                __atomic_store_n(&slot->state, NGX_HTTP_WA_SLOT_READY,
                                 __ATOMIC_RELEASE);
                ngx_shmtx_unlock(&shpool->mutex);
                goto count;
            }

            if (slot->channel == ch && slot->code_len == code->len
                && ngx_memcmp(slot->code, code->data, code->len) == 0)
            {
                if (k == 1) {
                    ngx_shmtx_unlock(&shpool->mutex);
                }

                goto count;
            }
        }

        if (k == 1) {
            ngx_shmtx_unlock(&shpool->mutex);
        }
    }

    /* full */
    slot = &sh->codes[0];
    __atomic_add_fetch(&sh->codes_dropped, 1, __ATOMIC_RELAXED);

count:

    __atomic_add_fetch(&slot->count, 1, __ATOMIC_RELAXED);
}


static ngx_http_wa_chan_slot_t *
ngx_http_wa_channel_slot(ngx_http_wa_chan_shctx_t *sh,
    ngx_slab_pool_t *shpool, ngx_str_t *id, ngx_str_t *business)
{
    uint32_t                  hash;
    ngx_uint_t                i, k;
    ngx_http_wa_chan_slot_t  *slot;

    if (ngx_http_wa_channels_token(id, NGX_HTTP_WA_CHANNEL_ID_LEN) != NGX_OK)
    {
        __atomic_add_fetch(&sh->channels_dropped, 1, __ATOMIC_RELAXED);
        return &sh->channels[0];
    }

    hash = ngx_crc32_short(id->data, id->len);

    for (k = 0; k < 2; k++) {

        if (k == 1) {
            ngx_shmtx_lock(&shpool->mutex);
        }

        for (i = 0; i < NGX_HTTP_WA_CHANNELS_MAX - 1; i++) {
            slot = &sh->channels[1 + (hash + i)
                                     % (NGX_HTTP_WA_CHANNELS_MAX - 1)];

            if (__atomic_load_n(&slot->state, __ATOMIC_ACQUIRE)
                != NGX_HTTP_WA_SLOT_READY)
            {
                if (k == 0) {
                    break;
                }

                slot->id_len = (u_char) id->len;
                ngx_memcpy(slot->id, id->data, id->len);

                if (business != NULL
                    && ngx_http_wa_channels_token(business,
                                                  NGX_INT64_LEN) == NGX_OK)
                {
                    slot->business_len = (u_char) business->len;
                    ngx_memcpy(slot->business, business->data,
                               business->len);
                }

                __atomic_store_n(&slot->state, NGX_HTTP_WA_SLOT_READY,
                                 __ATOMIC_RELEASE);
                ngx_shmtx_unlock(&shpool->mutex);
                return slot;
            }

            if (slot->id_len == id->len
                && ngx_memcmp(slot->id, id->data, id->len) == 0)
            {
                if (k == 1) {
                    ngx_shmtx_unlock(&shpool->mutex);
                }

                return slot;
            }
        }

        if (k == 1) {
            ngx_shmtx_unlock(&shpool->mutex);
        }
    }

    __atomic_add_fetch(&sh->channels_dropped, 1, __ATOMIC_RELAXED);

    return &sh->channels[0];
}


/* a label value that needs no escaping in JSON nor in Prometheus text */
static ngx_int_t
ngx_http_wa_channels_token(ngx_str_t *s, size_t max)
{
    size_t  i;
    u_char  c;

    if (s == NULL || s->len == 0 || s->len > max) {
        return NGX_DECLINED;
    }

    for (i = 0; i < s->len; i++) {
        c = s->data[i];

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')
              || (c >= 'A' && c <= 'Z') || c == '_' || c == '-'
              || c == '.'))
        {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}
