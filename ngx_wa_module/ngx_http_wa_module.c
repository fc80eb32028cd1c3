/*
 * ngx_http_wa_module: the directives, their validation, and the module's
 * hooks. The ring's life is in ngx_http_wa_ring.c, the HTTP helpers in
 * ngx_http_wa_reply.c, the handlers in a file each.
 */

#include "ngx_http_wa_module.h"
#include "ngx_http_wa_claim.h"
#include "ngx_http_wa_idem.h"
#include "ngx_http_wa_pace.h"



static ngx_int_t ngx_http_wa_postconfiguration(ngx_conf_t *cf);
static void *ngx_http_wa_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_wa_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_wa_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_wa_ring(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
static char *ngx_http_wa_ring_size_check(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_http_wa_main_conf_t *wmcf);
static char *ngx_http_wa_channel(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_wa_channel_rate(ngx_str_t *v,
    ngx_http_wa_channel_t *ch);
static char *ngx_http_wa_set_handler(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_wa_digits(ngx_str_t *s);
static ngx_int_t ngx_http_wa_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_wa_init_process(ngx_cycle_t *cycle);
static void ngx_http_wa_exit_process(ngx_cycle_t *cycle);


static char *ngx_http_wa_positive_msec_check(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_wa_readable_file_check(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_wa_business_check(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_wa_url_check(ngx_conf_t *cf, void *post, void *data);
static char *ngx_http_wa_media_path_check(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_wa_attempts_check(ngx_conf_t *cf, void *post,
    void *data);


/* 0 would mean "wait forever" to libcurl: a send must always end */
static ngx_conf_post_t  ngx_http_wa_positive_msec =
    { ngx_http_wa_positive_msec_check };

static ngx_conf_post_t  ngx_http_wa_readable_file =
    { ngx_http_wa_readable_file_check };

static ngx_conf_post_t  ngx_http_wa_business_id =
    { ngx_http_wa_business_check };

static ngx_conf_post_t  ngx_http_wa_media_path =
    { ngx_http_wa_media_path_check };
static ngx_conf_post_t  ngx_http_wa_url =
    { ngx_http_wa_url_check };

/* one call (no retry) to ten */
static ngx_conf_post_t  ngx_http_wa_attempts_bounds =
    { ngx_http_wa_attempts_check };


static ngx_command_t  ngx_http_wa_commands[] = {

    { ngx_string("wa_ring"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_wa_ring,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("wa_webhook"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_wa_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      (void *) ngx_http_wa_webhook_handler },

    { ngx_string("wa_verify_token"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, verify_token),
      NULL },

    { ngx_string("wa_app_secret"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, app_secret),
      NULL },

    { ngx_string("wa_channel"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_http_wa_channel,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("wa_default_business"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, default_business),
      &ngx_http_wa_business_id },

    { ngx_string("wa_webhook_max_body_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, webhook_max_body),
      NULL },

    { ngx_string("wa_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_wa_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      (void *) ngx_http_wa_status_handler },

    { ngx_string("wa_send"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_wa_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      (void *) ngx_http_wa_send_handler },

    { ngx_string("wa_media_fetch"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_wa_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      (void *) ngx_http_wa_media_fetch_handler },

    { ngx_string("wa_media_serve"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_wa_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      (void *) ngx_http_wa_media_serve_handler },

    { ngx_string("wa_media_path"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, media_path),
      &ngx_http_wa_media_path },

    { ngx_string("wa_media_max_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_off_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, media_max_size),
      NULL },

    { ngx_string("wa_media_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, media_timeout),
      &ngx_http_wa_positive_msec },

    { ngx_string("wa_media_upload"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_wa_set_handler,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      (void *) ngx_http_wa_upload_handler },

    { ngx_string("wa_media_upload_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, upload_timeout),
      &ngx_http_wa_positive_msec },

    { ngx_string("wa_send_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_array_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, send_keys),
      NULL },

    { ngx_string("wa_api_base"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, api_base),
      &ngx_http_wa_url },

    { ngx_string("wa_send_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, send.timeout),
      &ngx_http_wa_positive_msec },

    { ngx_string("wa_send_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, send.connect_timeout),
      &ngx_http_wa_positive_msec },

    { ngx_string("wa_send_shutdown_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, send.shutdown_timeout),
      NULL },

    { ngx_string("wa_ssl_trusted_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, send.trusted_certificate),
      &ngx_http_wa_readable_file },

    { ngx_string("wa_ssl_verify"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, send.verify),
      NULL },

    { ngx_string("wa_send_concurrency"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, send_concurrency),
      NULL },

    { ngx_string("wa_send_max_body_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, send_max_body),
      NULL },

    { ngx_string("wa_send_idempotency_db"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_wa_claim_conf,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("wa_send_idempotency_db_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_wa_main_conf_t, claim_timeout),
      &ngx_http_wa_positive_msec },

    { ngx_string("wa_send_queue_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, send_queue_timeout),
      NULL },

    { ngx_string("wa_send_attempts"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, send_attempts),
      &ngx_http_wa_attempts_bounds },

    { ngx_string("wa_send_retry_backoff"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, send_retry_backoff),
      &ngx_http_wa_positive_msec },

    { ngx_string("wa_send_pacing_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_wa_main_conf_t, pace_size),
      NULL },

    { ngx_string("wa_send_idempotency_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_wa_main_conf_t, idem_size),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_wa_module_ctx = {
    ngx_http_wa_add_variables,             /* preconfiguration */
    ngx_http_wa_postconfiguration,         /* postconfiguration */

    ngx_http_wa_create_main_conf,          /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_wa_create_loc_conf,           /* create location configuration */
    ngx_http_wa_merge_loc_conf             /* merge location configuration */
};


ngx_module_t  ngx_http_wa_module = {
    NGX_MODULE_V1,
    &ngx_http_wa_module_ctx,               /* module context */
    ngx_http_wa_commands,                  /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_wa_init_module,               /* init module */
    ngx_http_wa_init_process,              /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_wa_exit_process,              /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_wa_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_wa_main_conf_t  *wmcf;

    wmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_wa_main_conf_t));
    if (wmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     wmcf->ring_path = { 0, NULL };
     *     wmcf->ring_ok = 0;
     *     wmcf->curl = NULL;
     */

    wmcf->ring.fd = -1;
    wmcf->ring_gid = (ngx_gid_t) NGX_CONF_UNSET_UINT;
    wmcf->idem_size = NGX_CONF_UNSET_SIZE;
    wmcf->claim_timeout = NGX_CONF_UNSET_MSEC;
    wmcf->pace_size = NGX_CONF_UNSET_SIZE;
    ngx_queue_init(&wmcf->send_waiting);

    return wmcf;
}


static ngx_int_t
ngx_http_wa_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_wa_main_conf_t  *wmcf;

    wmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_wa_module);

    if (ngx_http_wa_webhook_init_conf(cf, wmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_conf_init_msec_value(wmcf->claim_timeout, 3000);

    if (ngx_http_wa_channels_init_conf(cf, wmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (!wmcf->has_send) {
        return NGX_OK;
    }

    if (ngx_http_wa_idem_init_conf(cf, wmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_wa_pace_init_conf(cf, wmcf);
}


static void *
ngx_http_wa_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_wa_loc_conf_t  *wlcf;

    wlcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_wa_loc_conf_t));
    if (wlcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     wlcf->handler = NULL;
     *     wlcf->verify_token = { 0, NULL };
     *     wlcf->app_secret = { 0, NULL };
     *     wlcf->default_business = { 0, NULL };
     *     wlcf->api_base = { 0, NULL };
     */

    wlcf->channels = NGX_CONF_UNSET_PTR;
    wlcf->send_keys = NGX_CONF_UNSET_PTR;
    wlcf->webhook_max_body = NGX_CONF_UNSET_SIZE;
    wlcf->send.timeout = NGX_CONF_UNSET_MSEC;
    wlcf->send.connect_timeout = NGX_CONF_UNSET_MSEC;
    wlcf->send.shutdown_timeout = NGX_CONF_UNSET_MSEC;
    wlcf->send_concurrency = NGX_CONF_UNSET_UINT;
    wlcf->send_max_body = NGX_CONF_UNSET_SIZE;
    wlcf->send.verify = NGX_CONF_UNSET;
    wlcf->media_max_size = NGX_CONF_UNSET;
    wlcf->media_timeout = NGX_CONF_UNSET_MSEC;
    wlcf->upload_timeout = NGX_CONF_UNSET_MSEC;
    wlcf->send_queue_timeout = NGX_CONF_UNSET_MSEC;
    wlcf->send_attempts = NGX_CONF_UNSET_UINT;
    wlcf->send_retry_backoff = NGX_CONF_UNSET_MSEC;

    return wlcf;
}


static char *
ngx_http_wa_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_wa_loc_conf_t *prev = parent;
    ngx_http_wa_loc_conf_t *conf = child;

    ngx_http_wa_main_conf_t   *wmcf;
    ngx_http_core_loc_conf_t  *clcf;

    ngx_conf_merge_str_value(conf->verify_token, prev->verify_token, "");
    ngx_conf_merge_str_value(conf->app_secret, prev->app_secret, "");
    ngx_conf_merge_ptr_value(conf->channels, prev->channels, NULL);
    ngx_conf_merge_str_value(conf->default_business, prev->default_business,
                             "0");
    ngx_conf_merge_size_value(conf->webhook_max_body, prev->webhook_max_body,
                              NGX_HTTP_WA_WEBHOOK_MAX_BODY);

    ngx_conf_merge_ptr_value(conf->send_keys, prev->send_keys, NULL);
    ngx_conf_merge_str_value(conf->api_base, prev->api_base,
                             "https://graph.facebook.com/v21.0");
    ngx_conf_merge_msec_value(conf->send.timeout, prev->send.timeout, 10000);
    ngx_conf_merge_msec_value(conf->send.connect_timeout,
                              prev->send.connect_timeout, 3000);
    ngx_conf_merge_msec_value(conf->send.shutdown_timeout,
                              prev->send.shutdown_timeout, 3000);
    ngx_conf_merge_uint_value(conf->send_concurrency, prev->send_concurrency,
                              256);
    ngx_conf_merge_str_value(conf->send.trusted_certificate,
                             prev->send.trusted_certificate, "");
    ngx_conf_merge_value(conf->send.verify, prev->send.verify, 1);
    ngx_conf_merge_size_value(conf->send_max_body, prev->send_max_body,
                              64 * 1024);
    ngx_conf_merge_msec_value(conf->upload_timeout, prev->upload_timeout,
                              120000);
    ngx_conf_merge_msec_value(conf->send_queue_timeout,
                              prev->send_queue_timeout, 5000);
    ngx_conf_merge_uint_value(conf->send_attempts, prev->send_attempts, 3);
    ngx_conf_merge_msec_value(conf->send_retry_backoff,
                              prev->send_retry_backoff, 500);

    ngx_conf_merge_str_value(conf->media_path, prev->media_path, "");
    ngx_conf_merge_off_value(conf->media_max_size, prev->media_max_size,
                             100 * 1024 * 1024);
    ngx_conf_merge_msec_value(conf->media_timeout, prev->media_timeout,
                              60000);

    if ((conf->handler == ngx_http_wa_media_fetch_handler
         || conf->handler == ngx_http_wa_media_serve_handler)
        && conf->media_path.len == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "wa_media_fetch and wa_media_serve need "
                           "\"wa_media_path\"");
        return NGX_CONF_ERROR;
    }

    if (conf->handler == NULL || conf->handler == ngx_http_wa_status_handler
        || conf->handler == ngx_http_wa_media_serve_handler)
    {
        return NGX_CONF_OK;
    }

    wmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_wa_module);

    if (wmcf->ring_path.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "wa_webhook, wa_send and wa_media_upload need "
                           "\"wa_ring\" in the http block");
        return NGX_CONF_ERROR;
    }

    if (conf->handler == ngx_http_wa_webhook_handler) {

        if (conf->app_secret.len == 0) {
            ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                               "wa_webhook without \"wa_app_secret\": "
                               "webhook signatures are not checked");
        }

        /*
         * Meta batches up to 3 MB in one body: nginx's own body limit
         * (default 1m) must not answer 413 first, and the body is kept in
         * one memory buffer so the parser never reads a temp file.
         */

        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
        clcf->client_max_body_size = conf->webhook_max_body;
        clcf->client_body_buffer_size = conf->webhook_max_body;
    }

    if (conf->handler == ngx_http_wa_media_fetch_handler) {

        if (conf->channels == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "wa_media_fetch needs at least one "
                               "\"wa_channel\"");
            return NGX_CONF_ERROR;
        }

        /* the per-worker libcurl client */
        wmcf->has_curl = 1;
    }

    if (conf->handler == ngx_http_wa_send_handler) {

        if (conf->channels == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "wa_send needs at least one \"wa_channel\"");
            return NGX_CONF_ERROR;
        }

        if (conf->send_concurrency == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"wa_send_concurrency\" must be at least 1");
            return NGX_CONF_ERROR;
        }

        wmcf->has_send = 1;
        wmcf->has_curl = 1;

        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
        clcf->client_max_body_size = conf->send_max_body;
        clcf->client_body_buffer_size = conf->send_max_body;
    }

    if (conf->handler == ngx_http_wa_upload_handler) {

        if (conf->channels == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "wa_media_upload needs at least one "
                               "\"wa_channel\"");
            return NGX_CONF_ERROR;
        }

        if (conf->send_concurrency == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"wa_send_concurrency\" must be at least 1");
            return NGX_CONF_ERROR;
        }

        /* the per-type limits are the module's (Meta's); nginx's own
         * must not answer 413 first, and a file always goes to a temp
         * file, never into worker memory */
        wmcf->has_send = 1;

        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
        clcf->client_max_body_size = NGX_HTTP_WA_UPLOAD_MAX;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_wa_positive_msec_check(ngx_conf_t *cf, void *post, void *data)
{
    ngx_msec_t *ms = data;

    if (*ms == 0) {
        return "must be greater than 0";
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_wa_attempts_check(ngx_conf_t *cf, void *post, void *data)
{
    ngx_uint_t *n = data;

    if (*n < 1 || *n > 10) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"wa_send_attempts\" must be between 1 (no "
                           "retry) and 10");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* a CA file libcurl cannot read fails every send: say so at nginx -t */

static char *
ngx_http_wa_readable_file_check(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t *path = data;

    if (ngx_conf_full_name(cf->cycle, path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (access((char *) path->data, R_OK) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"wa_ssl_trusted_certificate\": cannot read "
                           "\"%V\"", path);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* wa_default_business: a numeric id, as wa_channel's business= */

static char *
ngx_http_wa_business_check(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t *s = data;

    if (ngx_http_wa_digits(s) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"wa_default_business\": invalid business "
                           "\"%V\", a numeric id is expected", s);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* wa_api_base: an http(s) URL; trailing slashes go, "/ID/messages" is
 * appended to it */

static char *
ngx_http_wa_url_check(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t *url = data;

    if (!((url->len > 7 && ngx_strncmp(url->data, "http://", 7) == 0)
          || (url->len > 8 && ngx_strncmp(url->data, "https://", 8) == 0)))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"wa_api_base\": \"%V\" is not an http:// or "
                           "https:// URL", url);
        return NGX_CONF_ERROR;
    }

    while (url->data[url->len - 1] == '/') {
        url->len--;
    }

    return NGX_CONF_OK;
}


/* wa_media_path: an absolute directory that exists (the fetcher and
 * nginx share it: a missing one is a typo, not something to create) */

static char *
ngx_http_wa_media_path_check(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t *path = data;

    ngx_file_info_t  fi;

    if (ngx_conf_full_name(cf->cycle, path, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    while (path->len > 1 && path->data[path->len - 1] == '/') {
        path->len--;
    }

    path->data[path->len] = '\0';

    if (ngx_file_info(path->data, &fi) == NGX_FILE_ERROR
        || !ngx_is_dir(&fi))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"wa_media_path\": \"%V\" is not a directory",
                           path);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * wa_ring PATH [size=64m] [group=NAME] [sync=on|off] [thread_pool=NAME];
 *
 * The file is 0600, owned by the worker user; with group= it is 0660 and
 * of that group, so a writer running as another user of the group can map it.
 * sync=on: a webhook's 200 and a send's provider call wait until the
 * ring's pages are on disk, synced on the thread pool named (as "aio
 * threads=" names one; "default" when not given).
 */

static char *
ngx_http_wa_ring(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_wa_main_conf_t *wmcf = conf;

    char           *rv;
    off_t           size;
    ngx_str_t      *value, s, pool;
    ngx_uint_t      i;
    struct group   *grp;

    if (wmcf->ring_path.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    wmcf->ring_path = value[1];
    wmcf->ring_size = WA_RING_DEFAULT_SIZE;
    ngx_str_null(&pool);

    if (ngx_conf_full_name(cf->cycle, &wmcf->ring_path, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "size=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            size = ngx_parse_offset(&s);

            if (size == NGX_ERROR || size < WA_RING_MIN_SIZE
                || (size & (size - 1)) != 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\": invalid ring size \"%V\", a "
                                   "power of two of at least 64k is needed",
                                   &cmd->name, &value[i]);
                return NGX_CONF_ERROR;
            }

            wmcf->ring_size = (uint64_t) size;
            continue;
        }

        if (ngx_strncmp(value[i].data, "group=", 6) == 0
            && value[i].len > 6)
        {
            /* value[i] is NUL-terminated by the configuration parser */
            grp = getgrnam((char *) value[i].data + 6);
            if (grp == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\": unknown group in \"%V\"",
                                   &cmd->name, &value[i]);
                return NGX_CONF_ERROR;
            }

            wmcf->ring_gid = grp->gr_gid;
            continue;
        }

        if (ngx_strcmp(value[i].data, "sync=on") == 0) {
            wmcf->sync = 1;
            continue;
        }

        if (ngx_strcmp(value[i].data, "sync=off") == 0) {
            wmcf->sync = 0;
            continue;
        }

        if (ngx_strncmp(value[i].data, "thread_pool=", 12) == 0
            && value[i].len > 12)
        {
            pool.data = value[i].data + 12;
            pool.len = value[i].len - 12;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": invalid parameter \"%V\"",
                           &cmd->name, &value[i]);
        return NGX_CONF_ERROR;
    }

    if (pool.len && !wmcf->sync) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": \"thread_pool=\" is only used with "
                           "\"sync=on\"", &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (wmcf->sync) {
        rv = ngx_http_wa_sync_conf(cf, wmcf, &pool);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    return ngx_http_wa_ring_size_check(cf, cmd, wmcf);
}


/*
 * A ring file of another size is a configuration error, not an outage:
 * nginx -t fails and a reload keeps the running configuration, instead of
 * every webhook and send getting 503 until the file is gone. Checked while
 * parsing: a failing init_module would end the master itself.
 */

static char *
ngx_http_wa_ring_size_check(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_http_wa_main_conf_t *wmcf)
{
    char       err[WA_RING_ERR_LEN];
    wa_ring_t  ring;

    if (access((char *) wmcf->ring_path.data, F_OK) != 0
        || wa_ring_open(&ring, (char *) wmcf->ring_path.data, 0, 0, 0600,
                        err, sizeof(err))
           != WA_RING_OK)
    {
        /* none yet, or unusable: init_module says which */
        return NGX_CONF_OK;
    }

    if (ring.capacity == wmcf->ring_size) {
        wa_ring_close(&ring);
        return NGX_CONF_OK;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"%V\": \"%V\" holds a ring of %uL bytes with %uL "
                       "bytes waiting, not size=%uL; a ring is resized under "
                       "a new path (see README)", &cmd->name,
                       &wmcf->ring_path, ring.capacity,
                       wa_ring_tail(&ring) - wa_ring_head(&ring),
                       wmcf->ring_size);

    wa_ring_close(&ring);

    return NGX_CONF_ERROR;
}


/*
 * wa_channel PHONE_NUMBER_ID business=ID token=TOKEN [rate=80r/s|off]
 *     [pair=TIME];
 *
 * rate: sends a second (r/s) or a minute (r/m) through this number, for
 * all workers together; Meta's default throughput, 80/s, unless set.
 * pair: the least time between two sends to one recipient (Meta's pair
 * limit, error 131056); none unless set.
 */

static char *
ngx_http_wa_channel(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_wa_loc_conf_t *wlcf = conf;

    ngx_str_t                *value, s;
    ngx_uint_t                i;
    ngx_array_t             **set;
    ngx_http_wa_channel_t    *ch;
    ngx_http_wa_main_conf_t  *wmcf;

    value = cf->args->elts;

    if (wlcf->channels == NGX_CONF_UNSET_PTR || wlcf->channels == NULL) {
        wlcf->channels = ngx_array_create(cf->pool, 2,
                                          sizeof(ngx_http_wa_channel_t));
        if (wlcf->channels == NULL) {
            return NGX_CONF_ERROR;
        }

        /* the pacing zone gives each channel its node */
        wmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_wa_module);

        if (wmcf->channel_sets == NULL) {
            wmcf->channel_sets = ngx_array_create(cf->pool, 4,
                                                  sizeof(ngx_array_t *));
            if (wmcf->channel_sets == NULL) {
                return NGX_CONF_ERROR;
            }
        }

        set = ngx_array_push(wmcf->channel_sets);
        if (set == NULL) {
            return NGX_CONF_ERROR;
        }

        *set = wlcf->channels;
    }

    if (ngx_http_wa_digits(&value[1]) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": invalid phone number id \"%V\", digits "
                           "expected", &cmd->name, &value[1]);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_wa_channel_find(wlcf, value[1].data, value[1].len)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": duplicate channel \"%V\"", &cmd->name,
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    ch = ngx_array_push(wlcf->channels);
    if (ch == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(ch, sizeof(ngx_http_wa_channel_t));
    ch->phone_number_id = value[1];
    ch->interval_us = 1000000 / 80;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "business=", 9) == 0) {
            ch->business.data = value[i].data + 9;
            ch->business.len = value[i].len - 9;

            if (ngx_http_wa_digits(&ch->business) != NGX_OK) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\": invalid \"%V\", a numeric "
                                   "business id is expected", &cmd->name,
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "token=", 6) == 0) {
            ch->token.data = value[i].data + 6;
            ch->token.len = value[i].len - 6;
            continue;
        }

        if (ngx_strncmp(value[i].data, "rate=", 5) == 0) {
            if (ngx_http_wa_channel_rate(&value[i], ch) != NGX_OK) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\": invalid \"%V\", a rate such as "
                                   "\"80r/s\" or \"600r/m\", or \"off\", is "
                                   "expected", &cmd->name, &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "pair=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            ch->pair_gap = ngx_parse_time(&s, 0);

            if (ch->pair_gap == (ngx_msec_t) NGX_ERROR || ch->pair_gap == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"%V\": invalid \"%V\", a time such as "
                                   "\"6s\" is expected", &cmd->name,
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        /* the parameter may hold a token: name its key only */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": invalid parameter number %ui, "
                           "\"business=\", \"token=\", \"rate=\" or "
                           "\"pair=\" expected",
                           &cmd->name, i);
        return NGX_CONF_ERROR;
    }

    if (ch->business.len == 0 || ch->token.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": channel \"%V\" needs both business=ID "
                           "and token=TOKEN", &cmd->name, &ch->phone_number_id);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}




/* rate=NNr/s, rate=NNr/m (as limit_req_zone's) or rate=off */

static ngx_int_t
ngx_http_wa_channel_rate(ngx_str_t *v, ngx_http_wa_channel_t *ch)
{
    size_t     len;
    u_char    *p;
    ngx_int_t  rate, scale;

    p = v->data + 5;
    len = v->len - 5;

    if (len == 3 && ngx_strncmp(p, "off", 3) == 0) {
        ch->interval_us = 0;
        return NGX_OK;
    }

    if (len < 4) {
        return NGX_ERROR;
    }

    if (ngx_strncmp(p + len - 3, "r/s", 3) == 0) {
        scale = 1;

    } else if (ngx_strncmp(p + len - 3, "r/m", 3) == 0) {
        scale = 60;

    } else {
        return NGX_ERROR;
    }

    rate = ngx_atoi(p, len - 3);
    if (rate <= 0 || rate > 1000000) {
        return NGX_ERROR;
    }

    ch->interval_us = (uint64_t) scale * 1000000 / (uint64_t) rate;

    return NGX_OK;
}


static char *
ngx_http_wa_set_handler(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_wa_loc_conf_t *wlcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (wlcf->handler) {
        return "is duplicate";
    }

    wlcf->handler = (ngx_http_handler_pt) cmd->post;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = wlcf->handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_wa_digits(ngx_str_t *s)
{
    size_t  i;

    if (s->len == 0 || s->len > 20) {
        return NGX_ERROR;
    }

    for (i = 0; i < s->len; i++) {
        if (s->data[i] < '0' || s->data[i] > '9') {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


ngx_http_wa_channel_t *
ngx_http_wa_channel_find(ngx_http_wa_loc_conf_t *wlcf, u_char *id, size_t len)
{
    ngx_uint_t              i;
    ngx_http_wa_channel_t  *ch;

    if (wlcf->channels == NULL || wlcf->channels == NGX_CONF_UNSET_PTR) {
        return NULL;
    }

    ch = wlcf->channels->elts;

    for (i = 0; i < wlcf->channels->nelts; i++) {
        if (ch[i].phone_number_id.len == len
            && ngx_memcmp(ch[i].phone_number_id.data, id, len) == 0)
        {
            return &ch[i];
        }
    }

    return NULL;
}








/*
 * The master creates the ring file once, before workers start; workers map
 * it themselves (ngx_http_wa_ring.c).
 */

static ngx_int_t
ngx_http_wa_init_module(ngx_cycle_t *cycle)
{
    ngx_http_wa_main_conf_t  *wmcf;

    wmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_wa_module);

    if (wmcf == NULL || wmcf->ring_path.len == 0) {
        return NGX_OK;
    }

    return ngx_http_wa_ring_create(cycle, wmcf);
}


static ngx_int_t
ngx_http_wa_init_process(ngx_cycle_t *cycle)
{
    ngx_http_wa_main_conf_t  *wmcf;

    wmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_wa_module);

    if (wmcf == NULL || wmcf->ring_path.len == 0) {
        return NGX_OK;
    }

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    ngx_http_wa_ring_init_process(cycle, wmcf);

    if (ngx_http_wa_sync_init_process(cycle, wmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (wmcf->has_curl
        && ngx_http_wa_send_init_process(cycle, wmcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* after the send path: the claims name the worker by its nonce */
    if (wmcf->has_send
        && ngx_http_wa_claim_init_process(cycle, wmcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_wa_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_wa_main_conf_t  *wmcf;

    wmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_wa_module);

    if (wmcf == NULL) {
        return;
    }

    /* sends first: the ring is still mapped for their outcomes; then the
     * claims they could not end, logged */
    ngx_http_wa_send_exit_process(wmcf);
    ngx_http_wa_sync_exit_process(wmcf);
    ngx_http_wa_claim_exit_process(wmcf);
    ngx_http_wa_ring_exit_process(wmcf);
}
