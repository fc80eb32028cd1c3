/*
 * ngx_http_wa_module: WhatsApp Cloud API gateway inside nginx.
 *
 * Shared declarations of the module's files: configuration, the per-worker
 * ring handle, publishing, and the HTTP helpers every handler uses.
 */

#ifndef NGX_HTTP_WA_MODULE_H
#define NGX_HTTP_WA_MODULE_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "wa_ring.h"
#include "wa_record.h"
#include "ngx_http_wa_curl.h"


#define NGX_HTTP_WA_WEBHOOK_MAX_BODY  (4 * 1024 * 1024)
/* the largest file Meta's media endpoint takes (documents, 100 MB) */
#define NGX_HTTP_WA_UPLOAD_MAX         (100 * 1024 * 1024)


/*
 * A request waiting for the ring to be synced (wa_ring ... sync=on):
 * handler is called once, from the event loop, with NGX_OK (its records
 * are on disk), NGX_ERROR (they may not be: answer 503) or NGX_ABORT
 * (the worker exits before the sync ended).
 */
typedef struct ngx_http_wa_sync_wait_s  ngx_http_wa_sync_wait_t;

typedef void (*ngx_http_wa_sync_handler_pt)(ngx_http_wa_sync_wait_t *w,
    ngx_int_t rc);

struct ngx_http_wa_sync_wait_s {
    ngx_queue_t                   queue;
    uint64_t                      gen;         /* the sync that covers it */
    uint64_t                      epoch;       /* the ring mapping */
    ngx_http_wa_sync_handler_pt   handler;
    void                         *data;
    unsigned                      queued:1;
};


typedef struct {
    ngx_str_t                 phone_number_id;
    ngx_str_t                 business;        /* decimal */
    ngx_str_t                 token;           /* never logged */
    uint64_t                  interval_us;     /* rate=: µs between two
                                                  sends; 0: rate=off */
    ngx_msec_t                pair_gap;        /* pair=: ms between two
                                                  sends to one recipient */
    void                     *pace;            /* its node in the pacing
                                                  zone, once mapped */
} ngx_http_wa_channel_t;


/* webhook counters shared by the workers (the ring header's layout is
 * fixed): what acknowledged bodies held beyond messages and statuses */
typedef struct {
    uint64_t                  raw_events;      /* WA_REC_EVENT records */
    uint64_t                  echoes;          /* WA_REC_ECHO records */
    uint64_t                  errors;          /* WA_REC_WEBHOOK_ERROR */

    /* inbound media (ngx_http_wa_media.c): downloads answered, failed,
     * and what the fetcher last reported from the database */
    uint64_t                  media_downloaded;
    uint64_t                  media_errors;
    uint64_t                  media_waiting;
    uint64_t                  media_failed;
    uint64_t                  media_report_ms; /* 0: never reported */
} ngx_http_wa_webhook_counters_t;


/*
 * Counters per channel (phone number id), listed once: the field of a
 * channel's slot and its JSON key (the name), the Prometheus metric and its
 * own labels (channel and business come first). ngx_http_wa_channels.c
 * keeps them in a shared zone; wa_status renders them.
 */
#define NGX_HTTP_WA_CHANNEL_COUNTERS(X)                                       \
    /* sends whose pending record was published: the provider is called */   \
    X(sends,      "wa_channel_sends_total", "")                               \
    X(accepted,   "wa_channel_send_outcomes_total", ",outcome=\"accepted\"")  \
    X(failed,     "wa_channel_send_outcomes_total", ",outcome=\"failed\"")    \
    X(unknown,    "wa_channel_send_outcomes_total", ",outcome=\"unknown\"")   \
    /* webhook records published */                                           \
    X(messages,   "wa_channel_webhook_records_total", ",kind=\"message\"")    \
    X(statuses,   "wa_channel_webhook_records_total", ",kind=\"status\"")

#define NGX_HTTP_WA_CHANNELS_MAX    256     /* slot 0: "other" */
#define NGX_HTTP_WA_CODES_MAX       512     /* (channel, code); 0: "other" */
#define NGX_HTTP_WA_CHANNEL_ID_LEN  32
#define NGX_HTTP_WA_CODE_LEN        15

#define NGX_HTTP_WA_CHAN_FIELD(name, metric, labels)  uint64_t  name;

typedef struct {
    uint32_t                  state;           /* ready: key written */
    u_char                    id_len;
    u_char                    business_len;
    u_char                    id[NGX_HTTP_WA_CHANNEL_ID_LEN];
    u_char                    business[NGX_INT64_LEN];
    NGX_HTTP_WA_CHANNEL_COUNTERS(NGX_HTTP_WA_CHAN_FIELD)
} ngx_http_wa_chan_slot_t;

typedef struct {
    uint32_t                  state;
    uint32_t                  channel;         /* its slot in channels[] */
    u_char                    code_len;
    u_char                    code[NGX_HTTP_WA_CODE_LEN];
    uint64_t                  count;
} ngx_http_wa_code_slot_t;

typedef struct {
    ngx_http_wa_chan_slot_t   channels[NGX_HTTP_WA_CHANNELS_MAX];
    ngx_http_wa_code_slot_t   codes[NGX_HTTP_WA_CODES_MAX];
    uint64_t                  channels_dropped; /* counted in "other" */
    uint64_t                  codes_dropped;
} ngx_http_wa_chan_shctx_t;

typedef struct {
    const char               *name;
    size_t                    offset;          /* in ngx_http_wa_chan_slot_t */
    const char               *metric;
    const char               *labels;
} ngx_http_wa_chan_counter_t;

/* NGX_HTTP_WA_CHANNEL_COUNTERS as a table, ended by a NULL name */
extern const ngx_http_wa_chan_counter_t  ngx_http_wa_chan_counters[];

#define ngx_http_wa_chan_offset(name)  offsetof(ngx_http_wa_chan_slot_t, name)


typedef struct {
    ngx_str_t                 ring_path;       /* empty: no wa_ring */
    uint64_t                  ring_size;
    ngx_gid_t                 ring_gid;        /* group=, or unset */

    /* per worker, set in init_process: the cycle-scoped conf is where
     * nginx keeps per-process state, so there is no global */
    wa_ring_t                 ring;
    ngx_flag_t                ring_ok;
    ngx_event_t               ring_check;
    ngx_connection_t          ring_check_conn; /* ev->data for debug logs */
    u_char                    ring_error[WA_RING_ERR_LEN];
    uint64_t                  ring_epoch;      /* per worker: attaches */

    /* sync=on: acknowledged once on disk (ngx_http_wa_sync.c) */
    ngx_flag_t                sync;
    void                     *sync_pool;       /* ngx_thread_pool_t */
    void                     *sync_task;       /* ngx_thread_task_t, per
                                                  worker */
    ngx_event_t               sync_timer;      /* a slow sync is logged */
    ngx_event_t               sync_post;       /* starts a sync once this
                                                * round of events is done */
    ngx_connection_t          sync_conn;       /* ev->data for debug logs */
    ngx_queue_t               sync_waiters;
    int                       sync_prev_fd;    /* a detached ring file whose
                                                  records wait, or -1 */
    uint64_t                  sync_prev_epoch;
    uint64_t                  sync_started;    /* syncs started */
    uint64_t                  sync_failures;
    ngx_flag_t                sync_busy;

    /* send path */
    ngx_flag_t                has_send;        /* a wa_send location exists */
    ngx_flag_t                has_curl;        /* wa_send or wa_media_fetch */
    size_t                    idem_size;       /* wa_send_idempotency_zone */
    ngx_shm_zone_t           *idem_zone;
    void                     *curl;            /* per worker */
    ngx_uint_t                send_seq;        /* per worker, for local ids */
    uint64_t                  send_nonce;      /* per worker, random */
    size_t                    pace_size;       /* wa_send_pacing_zone */
    ngx_shm_zone_t           *pace_zone;
    ngx_array_t              *channel_sets;    /* every wa_channel list
                                                  (ngx_array_t *), for the
                                                  pacing zone */
    ngx_queue_t               send_waiting;    /* per worker: sends waiting
                                                  for their turn */

    /* client_ref across hosts: wa_send_idempotency_db */
    ngx_str_t                 claim_conninfo;  /* empty: off */
    ngx_msec_t                claim_timeout;
    void                     *claimdb;         /* per worker */

    /* webhook path */
    ngx_shm_zone_t           *webhook_zone;    /* the counters' zone */

    ngx_shm_zone_t           *channels_zone;   /* per channel and code */
} ngx_http_wa_main_conf_t;


typedef struct {
    ngx_http_handler_pt       handler;         /* wa_webhook, wa_send, ... */

    ngx_str_t                 verify_token;
    ngx_str_t                 app_secret;
    ngx_array_t              *channels;        /* ngx_http_wa_channel_t */
    ngx_str_t                 default_business;
    size_t                    webhook_max_body;

    ngx_array_t              *send_keys;       /* wa_send_key; never logged */
    ngx_str_t                 api_base;
    ngx_http_wa_curl_conf_t   send;            /* timeouts, TLS: as the
                                                  transfers take them */
    ngx_uint_t                send_concurrency;
    ngx_uint_t                send_active;     /* per worker, in flight */
    ngx_msec_t                send_queue_timeout; /* longest wait for a
                                                     turn of the rate */
    ngx_uint_t                send_attempts;   /* calls per send, at most */
    ngx_msec_t                send_retry_backoff; /* before the 2nd call */
    size_t                    send_max_body;

    ngx_str_t                 media_path;      /* wa_media_path */
    off_t                     media_max_size;
    ngx_msec_t                media_timeout;   /* a media download */
    ngx_msec_t                upload_timeout;   /* wa_media_upload_timeout */
} ngx_http_wa_loc_conf_t;


extern ngx_module_t  ngx_http_wa_module;


/* ngx_http_wa_ring.c: the ring's life in the master and the workers */
ngx_int_t ngx_http_wa_ring_create(ngx_cycle_t *cycle,
    ngx_http_wa_main_conf_t *wmcf);
void ngx_http_wa_ring_init_process(ngx_cycle_t *cycle,
    ngx_http_wa_main_conf_t *wmcf);
void ngx_http_wa_ring_exit_process(ngx_http_wa_main_conf_t *wmcf);

/* The ring is mapped and its file intact; detaches (503s) if truncated. */
ngx_int_t ngx_http_wa_ring_usable(ngx_http_wa_main_conf_t *wmcf,
    ngx_log_t *log);

/*
 * Publish one record in this worker's ring mapping; log is the request's,
 * or the cycle's for a send whose client may have gone.
 * NGX_OK, NGX_BUSY (ring full or record too big), NGX_DECLINED (no ring or
 * ring unavailable); the caller answers 503 on anything but NGX_OK.
 */
ngx_int_t ngx_http_wa_publish(ngx_http_wa_main_conf_t *wmcf, ngx_log_t *log,
    wa_record_t *rec, ngx_uint_t opens);

/* opens: the record starts something whose outcome is recorded later (a
 * webhook's records count as such too); it leaves the ring's reserve,
 * wa_ring_keep(), to the records that close (NGX_HTTP_WA_CLOSES) */
#define NGX_HTTP_WA_OPENS   1
#define NGX_HTTP_WA_CLOSES  0

/* zeroed, with its type, local id, business and (if not NULL) phone
 * number id */
void ngx_http_wa_record_init(wa_record_t *rec, uint16_t type,
    const char *local_id, ngx_str_t *business, ngx_str_t *phone_number_id);

struct wa_send_res_s;

/* an outcome record: the provider's error of a refused call, if any */
void ngx_http_wa_record_error(wa_record_t *rec, struct wa_send_res_s *res);

/* an outcome record the ring refused even from its reserve: what (send,
 * upload), its local id, its status, the provider's id of it (id_name,
 * id, or NULL) and when the row will be settled all the same ("") */
void ngx_http_wa_outcome_lost(ngx_log_t *log, const char *what,
    const char *local_id, const char *status, const char *id_name,
    const char *id, const char *settled);

/* ngx_http_wa_sync.c: wa_ring ... sync=on */
char *ngx_http_wa_sync_conf(ngx_conf_t *cf, ngx_http_wa_main_conf_t *wmcf,
    ngx_str_t *pool_name);
ngx_int_t ngx_http_wa_sync_init_process(ngx_cycle_t *cycle,
    ngx_http_wa_main_conf_t *wmcf);
void ngx_http_wa_sync_exit_process(ngx_http_wa_main_conf_t *wmcf);
/* the ring file is about to be closed: keep it for the waiting records */
void ngx_http_wa_sync_detach(ngx_http_wa_main_conf_t *wmcf);
/* after a request's last publish; NGX_ERROR: not waiting, answer 503.
 * The wait ends when pool is destroyed. */
ngx_int_t ngx_http_wa_sync_wait(ngx_http_wa_main_conf_t *wmcf,
    ngx_pool_t *pool, ngx_http_wa_sync_wait_t *w);

ngx_http_wa_channel_t *ngx_http_wa_channel_find(ngx_http_wa_loc_conf_t *wlcf,
    u_char *id, size_t len);

/* ngx_http_wa_reply.c: answer with a small JSON body {"error": "..."} or
 * any ready body */
ngx_int_t ngx_http_wa_reply_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len);
ngx_int_t ngx_http_wa_reply_body(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, u_char *body, size_t len);
ngx_int_t ngx_http_wa_reply_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *msg);

ngx_int_t ngx_http_wa_read_json(ngx_http_request_t *r,
    ngx_http_client_body_handler_pt post);

/* the request body in one buffer (NULL: out of memory or read error) */
u_char *ngx_http_wa_body(ngx_http_request_t *r, size_t *len);

ngx_table_elt_t *ngx_http_wa_header(ngx_http_request_t *r, const char *name,
    size_t len);

ngx_int_t ngx_http_wa_streq(ngx_str_t *a, ngx_str_t *b);

ngx_int_t ngx_http_wa_webhook_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_wa_webhook_init_conf(ngx_conf_t *cf,
    ngx_http_wa_main_conf_t *wmcf);
/* the shared counters, or NULL before the zone is mapped */
ngx_http_wa_webhook_counters_t *ngx_http_wa_webhook_counters(
    ngx_http_wa_main_conf_t *wmcf);
ngx_int_t ngx_http_wa_status_handler(ngx_http_request_t *r);

/* ngx_http_wa_channels.c: counters per channel and provider error code */
ngx_int_t ngx_http_wa_channels_init_conf(ngx_conf_t *cf,
    ngx_http_wa_main_conf_t *wmcf);
/* the shared tables, or NULL before the zone is mapped */
ngx_http_wa_chan_shctx_t *ngx_http_wa_channels(ngx_http_wa_main_conf_t *wmcf);
/* add n to the counter at offset (ngx_http_wa_chan_offset(name)) of the
 * channel id; business labels a channel seen for the first time */
void ngx_http_wa_channels_count(ngx_http_wa_main_conf_t *wmcf, ngx_str_t *id,
    ngx_str_t *business, size_t offset, uint64_t n);
void ngx_http_wa_channels_error(ngx_http_wa_main_conf_t *wmcf, ngx_str_t *id,
    ngx_str_t *business, ngx_str_t *code);

/*
 * ngx_http_wa_variables.c: $wa_* variables, read from what the request's
 * handler left in its ctx (ngx_http_wa_vars()), for log_format, map and
 * limit_req.
 */
typedef struct {
    ngx_uint_t                records;         /* published in the ring */
    ngx_str_t                 local_id;
    ngx_str_t                 wamid;
    ngx_str_t                 error_code;
    ngx_str_t                 outcome;         /* sent, failed, unknown */
    ngx_str_t                 channel;         /* phone number id */
    ngx_str_t                 business;
} ngx_http_wa_vars_t;

ngx_int_t ngx_http_wa_add_variables(ngx_conf_t *cf);
/* the request's, created on first use in its pool; NULL: no memory */
ngx_http_wa_vars_t *ngx_http_wa_vars(ngx_http_request_t *r);
ngx_int_t ngx_http_wa_send_handler(ngx_http_request_t *r);
/* X-WA-Key is one of wa_send_key's, compared in constant time */
ngx_int_t ngx_http_wa_key_ok(ngx_http_request_t *r,
    ngx_http_wa_loc_conf_t *wlcf);

/* ngx_http_wa_media.c */
ngx_int_t ngx_http_wa_media_fetch_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_wa_media_serve_handler(ngx_http_request_t *r);
void ngx_http_wa_media_report(ngx_http_request_t *r);

/* a send's (or an upload's) local id, NGX_HTTP_WA_LOCAL_ID_LEN bytes; ms
 * (NGX_INT64_LEN + 1 bytes) gets now in unix ms */
void ngx_http_wa_local_id(ngx_http_wa_main_conf_t *wmcf, char *id,
    u_char *ms);

/* a refusal's answer after its id and status: "retryable", "error" (and
 * the provider's own JSON body); x is the transfer's, res its parse */
struct wa_send_res_s;
u_char *ngx_http_wa_send_error_json(u_char *p, struct wa_send_res_s *res,
    ngx_http_wa_xfer_t *x);

ngx_int_t ngx_http_wa_upload_handler(ngx_http_request_t *r);

/* send path: the per-worker client */
ngx_int_t ngx_http_wa_send_init_process(ngx_cycle_t *cycle,
    ngx_http_wa_main_conf_t *wmcf);
void ngx_http_wa_send_exit_process(ngx_http_wa_main_conf_t *wmcf);

#endif /* NGX_HTTP_WA_MODULE_H */
