/*
 * ngx_http_wa_module: configuration, the ring's life in the master and the
 * workers, and the helpers every wa_* handler shares.
 */

#include "ngx_http_wa_module.h"

#include <sys/stat.h>
#include <openssl/crypto.h>


#define NGX_HTTP_WA_RING_CHECK  1000   /* ms between ring file checks */


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
static char *ngx_http_wa_business(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_wa_set_handler(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_wa_digits(ngx_str_t *s);
static ngx_int_t ngx_http_wa_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_wa_init_process(ngx_cycle_t *cycle);
static void ngx_http_wa_ring_own(ngx_cycle_t *cycle,
    ngx_http_wa_main_conf_t *wmcf, wa_ring_t *ring, mode_t mode);
static void ngx_http_wa_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_wa_ring_attach(ngx_cycle_t *cycle,
    ngx_http_wa_main_conf_t *wmcf);
static void ngx_http_wa_ring_check_handler(ngx_event_t *ev);


static char *ngx_http_wa_positive_msec_check(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_wa_readable_file_check(ngx_conf_t *cf, void *post,
    void *data);


/* 0 would mean "wait forever" to libcurl: a send must always end */
static ngx_conf_post_t  ngx_http_wa_positive_msec =
    { ngx_http_wa_positive_msec_check };

static ngx_conf_post_t  ngx_http_wa_readable_file =
    { ngx_http_wa_readable_file_check };


static ngx_command_t  ngx_http_wa_commands[] = {

    { ngx_string("wa_ring"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE123,
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
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE3,
      ngx_http_wa_channel,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("wa_default_business"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_wa_business,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, default_business),
      NULL },

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

    { ngx_string("wa_send_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_array_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, send_keys),
      NULL },

    { ngx_string("wa_api_base"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_wa_api_base,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, api_base),
      NULL },

    { ngx_string("wa_send_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, send_timeout),
      &ngx_http_wa_positive_msec },

    { ngx_string("wa_send_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, send_connect_timeout),
      &ngx_http_wa_positive_msec },

    { ngx_string("wa_send_shutdown_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, send_shutdown_timeout),
      NULL },

    { ngx_string("wa_ssl_trusted_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, ssl_trusted_certificate),
      &ngx_http_wa_readable_file },

    { ngx_string("wa_ssl_verify"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_wa_loc_conf_t, ssl_verify),
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

    { ngx_string("wa_send_idempotency_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_wa_main_conf_t, idem_size),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_wa_module_ctx = {
    NULL,                                  /* preconfiguration */
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

    return wmcf;
}


static ngx_int_t
ngx_http_wa_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_wa_main_conf_t  *wmcf;

    wmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_wa_module);

    if (!wmcf->has_send) {
        return NGX_OK;
    }

    return ngx_http_wa_send_init_conf(cf, wmcf);
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
    wlcf->send_timeout = NGX_CONF_UNSET_MSEC;
    wlcf->send_connect_timeout = NGX_CONF_UNSET_MSEC;
    wlcf->send_shutdown_timeout = NGX_CONF_UNSET_MSEC;
    wlcf->send_concurrency = NGX_CONF_UNSET_UINT;
    wlcf->send_max_body = NGX_CONF_UNSET_SIZE;
    wlcf->ssl_verify = NGX_CONF_UNSET;

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
    ngx_conf_merge_msec_value(conf->send_timeout, prev->send_timeout, 10000);
    ngx_conf_merge_msec_value(conf->send_connect_timeout,
                              prev->send_connect_timeout, 3000);
    ngx_conf_merge_msec_value(conf->send_shutdown_timeout,
                              prev->send_shutdown_timeout, 3000);
    ngx_conf_merge_uint_value(conf->send_concurrency, prev->send_concurrency,
                              256);
    ngx_conf_merge_str_value(conf->ssl_trusted_certificate,
                             prev->ssl_trusted_certificate, "");
    ngx_conf_merge_value(conf->ssl_verify, prev->ssl_verify, 1);
    ngx_conf_merge_size_value(conf->send_max_body, prev->send_max_body,
                              64 * 1024);

    if (conf->handler == NULL || conf->handler == ngx_http_wa_status_handler) {
        return NGX_CONF_OK;
    }

    wmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_wa_module);

    if (wmcf->ring_path.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "wa_webhook and wa_send need \"wa_ring\" in the "
                           "http block");
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

        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
        clcf->client_max_body_size = conf->send_max_body;
        clcf->client_body_buffer_size = conf->send_max_body;
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


/*
 * wa_ring PATH [size=64m] [group=NAME];
 *
 * The file is 0600, owned by the worker user; with group= it is 0660 and
 * of that group, so a writer running as another user of the group can map it.
 */

static char *
ngx_http_wa_ring(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_wa_main_conf_t *wmcf = conf;

    off_t           size;
    ngx_str_t      *value, s;
    ngx_uint_t      i;
    struct group   *grp;

    if (wmcf->ring_path.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    wmcf->ring_path = value[1];
    wmcf->ring_size = WA_RING_DEFAULT_SIZE;

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

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": invalid parameter \"%V\"",
                           &cmd->name, &value[i]);
        return NGX_CONF_ERROR;
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


/* wa_channel PHONE_NUMBER_ID business=ID token=TOKEN; */

static char *
ngx_http_wa_channel(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_wa_loc_conf_t *wlcf = conf;

    ngx_str_t              *value;
    ngx_uint_t              i;
    ngx_http_wa_channel_t  *ch;

    value = cf->args->elts;

    if (wlcf->channels == NGX_CONF_UNSET_PTR || wlcf->channels == NULL) {
        wlcf->channels = ngx_array_create(cf->pool, 2,
                                          sizeof(ngx_http_wa_channel_t));
        if (wlcf->channels == NULL) {
            return NGX_CONF_ERROR;
        }
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

        /* the parameter may hold a token: name its key only */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": invalid parameter number %ui, "
                           "\"business=\" or \"token=\" expected",
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


static char *
ngx_http_wa_business(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char  *rv;
    ngx_str_t  *s;

    rv = ngx_conf_set_str_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    s = (ngx_str_t *) ((u_char *) conf + cmd->offset);

    if (ngx_http_wa_digits(s) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": invalid business \"%V\", a numeric id "
                           "is expected", &cmd->name, s);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
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
 * The master creates the ring file once, owned by the worker user, before
 * workers start; workers map it themselves. "nginx -t" only validates an
 * existing file: testing a configuration must not create shared state.
 */

static ngx_int_t
ngx_http_wa_init_module(ngx_cycle_t *cycle)
{
    int                       flags;
    char                      err[WA_RING_ERR_LEN];
    mode_t                    mode;
    wa_ring_t                 ring;
    ngx_http_wa_main_conf_t  *wmcf;

    wmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_wa_module);

    if (wmcf == NULL || wmcf->ring_path.len == 0) {
        return NGX_OK;
    }

    flags = ngx_test_config ? 0 : WA_RING_CREATE;

    if (ngx_test_config && access((char *) wmcf->ring_path.data, F_OK) != 0) {
        return NGX_OK;
    }

    mode = (wmcf->ring_gid == (ngx_gid_t) NGX_CONF_UNSET_UINT) ? 0600 : 0660;

    if (wa_ring_open(&ring, (char *) wmcf->ring_path.data, wmcf->ring_size,
                     flags, mode, err, sizeof(err))
        != WA_RING_OK)
    {
        /* not fatal: workers answer 503 and retry every second */
        ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                      "wa_ring \"%V\" is unusable, webhooks and sends will "
                      "get 503: %s", &wmcf->ring_path, err);
        return NGX_OK;
    }

    if (!ngx_test_config) {
        ngx_http_wa_ring_own(cycle, wmcf, &ring, mode);
    }

    ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                  "wa_ring \"%V\": %uL bytes, %uL bytes waiting",
                  &wmcf->ring_path, ring.capacity,
                  wa_ring_tail(&ring) - wa_ring_head(&ring));

    wa_ring_close(&ring);

    return NGX_OK;
}


/*
 * The workers (the "user" directive) own the ring, the group= group shares
 * it; the mode is set on every start, so adding or removing group= on an
 * existing file takes effect and no other user can write it.
 */

static void
ngx_http_wa_ring_own(ngx_cycle_t *cycle, ngx_http_wa_main_conf_t *wmcf,
    wa_ring_t *ring, mode_t mode)
{
    uid_t             uid;
    gid_t             gid;
    struct stat       st;
    ngx_core_conf_t  *ccf;

    ccf = (ngx_core_conf_t *) ngx_get_conf(cycle->conf_ctx, ngx_core_module);

    uid = (uid_t) -1;
    gid = (gid_t) -1;

    if (geteuid() == 0 && ccf->user != (ngx_uid_t) NGX_CONF_UNSET_UINT) {
        uid = ccf->user;
        gid = ccf->group;
    }

    if (wmcf->ring_gid != (ngx_gid_t) NGX_CONF_UNSET_UINT) {
        gid = wmcf->ring_gid;
    }

    if ((uid != (uid_t) -1 || gid != (gid_t) -1)
        && fchown(ring->fd, uid, gid) == -1)
    {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                      "wa_ring: fchown(\"%V\") failed", &wmcf->ring_path);
    }

    if (fstat(ring->fd, &st) == 0 && (st.st_mode & 0777) != mode
        && fchmod(ring->fd, mode) == -1)
    {
        ngx_log_error(NGX_LOG_ALERT, cycle->log, ngx_errno,
                      "wa_ring: fchmod(\"%V\", %04o) failed",
                      &wmcf->ring_path, mode);
    }
}


static ngx_int_t
ngx_http_wa_init_process(ngx_cycle_t *cycle)
{
    ngx_event_t              *ev;
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

    (void) ngx_http_wa_ring_attach(cycle, wmcf);

    if (wmcf->has_send
        && ngx_http_wa_send_init_process(cycle, wmcf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the timer event's data must look like a connection for debug logs */
    wmcf->ring_check_conn.fd = (ngx_socket_t) -1;

    ev = &wmcf->ring_check;
    ev->handler = ngx_http_wa_ring_check_handler;
    ev->data = &wmcf->ring_check_conn;
    ev->log = cycle->log;
    ev->cancelable = 1;

    ngx_add_timer(ev, NGX_HTTP_WA_RING_CHECK);

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

    ngx_http_wa_send_exit_process(wmcf);

    if (wmcf->ring_ok) {
        wa_ring_close(&wmcf->ring);
        wmcf->ring_ok = 0;
    }
}


static ngx_int_t
ngx_http_wa_ring_attach(ngx_cycle_t *cycle, ngx_http_wa_main_conf_t *wmcf)
{
    char  err[WA_RING_ERR_LEN];

    if (wa_ring_open(&wmcf->ring, (char *) wmcf->ring_path.data,
                     wmcf->ring_size, 0, 0600, err, sizeof(err))
        != WA_RING_OK)
    {
        /* log once per distinct error, not once per second */
        if (ngx_strcmp(wmcf->ring_error, err) != 0) {
            ngx_log_error(NGX_LOG_ALERT, cycle->log, 0,
                          "wa_ring \"%V\" unavailable, answering 503: %s",
                          &wmcf->ring_path, err);
            ngx_cpystrn(wmcf->ring_error, (u_char *) err, sizeof(err));
        }

        wmcf->ring_ok = 0;
        return NGX_ERROR;
    }

    if (wmcf->ring_error[0]) {
        ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                      "wa_ring \"%V\" available again", &wmcf->ring_path);
        wmcf->ring_error[0] = '\0';
    }

    wmcf->ring_ok = 1;

    return NGX_OK;
}


/*
 * A ring file deleted, replaced or truncated under a running nginx would
 * take records nowhere (or fault on access): detect it, answer 503, and
 * attach again once a valid file is back.
 */

static void
ngx_http_wa_ring_check_handler(ngx_event_t *ev)
{
    char                      err[WA_RING_ERR_LEN];
    ngx_http_wa_main_conf_t  *wmcf;

    wmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_http_wa_module);

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    /*
     * Detached: try again. Attached: a deleted or truncated file takes the
     * same detach and message as a publish that finds it; a replaced one
     * only this check sees.
     */
    if (!wmcf->ring_ok) {
        (void) ngx_http_wa_ring_attach((ngx_cycle_t *) ngx_cycle, wmcf);

    } else if (ngx_http_wa_ring_usable(wmcf, ev->log)
               && wa_ring_check(&wmcf->ring, (char *) wmcf->ring_path.data,
                                err, sizeof(err))
                  != WA_RING_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                      "wa_ring \"%V\" changed under nginx, answering "
                      "503: %s", &wmcf->ring_path, err);
        ngx_cpystrn(wmcf->ring_error, (u_char *) err, sizeof(err));

        wa_ring_close(&wmcf->ring);
        wmcf->ring_ok = 0;
    }

    ngx_add_timer(ev, NGX_HTTP_WA_RING_CHECK);
}


/*
 * A truncated ring file faults (SIGBUS) on the next access to the pages it
 * lost, and a record put in a deleted file is lost once the writer has
 * drained it and moved on; the 1 s check is too late for both, so every
 * use looks first (one fstat) and detaches at once.
 */

ngx_int_t
ngx_http_wa_ring_usable(ngx_http_wa_main_conf_t *wmcf, ngx_log_t *log)
{
    const char  *damage;

    if (!wmcf->ring_ok) {
        return 0;
    }

    damage = wa_ring_damage(&wmcf->ring);

    if (damage == NULL) {
        return 1;
    }

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "wa_ring \"%V\" was %s under nginx, answering 503 until "
                  "a valid file is back (nginx -s reload creates one)",
                  &wmcf->ring_path, damage);
    ngx_cpystrn(wmcf->ring_error, (u_char *) damage, WA_RING_ERR_LEN);

    wa_ring_close(&wmcf->ring);
    wmcf->ring_ok = 0;

    return 0;
}


ngx_int_t
ngx_http_wa_publish(ngx_http_request_t *r, wa_record_t *rec)
{
    return ngx_http_wa_ring_publish(
               ngx_http_get_module_main_conf(r, ngx_http_wa_module),
               r->connection->log, rec);
}


ngx_int_t
ngx_http_wa_ring_publish(ngx_http_wa_main_conf_t *wmcf, ngx_log_t *log,
    wa_record_t *rec)
{
    int              rc;
    size_t           size;
    wa_ring_claim_t  claim;

    if (!ngx_http_wa_ring_usable(wmcf, log)) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "wa: ring unavailable, refusing a %s record",
                      wa_record_type_name(rec->type));
        return NGX_DECLINED;
    }

    size = wa_record_size(rec);

    if (size > wa_ring_max_payload(&wmcf->ring)) {
        rc = WA_RING_TOO_BIG;

    } else {
        rc = wa_ring_claim(&wmcf->ring, rec->type, (uint32_t) size, &claim);
    }

    if (rc == WA_RING_OK) {
        wa_record_encode(rec, claim.payload);
        rc = wa_ring_commit(&wmcf->ring, &claim);

        if (rc == WA_RING_OK) {
            return NGX_OK;
        }
    }

    if (rc == WA_RING_ABANDONED) {
        /* this worker stalled between claim and commit and wa-writer moved
         * past the record: not stored, so the request must not get 200 */
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "wa: a %uz byte %s record was abandoned by the "
                      "consumer after a stall of over %d s between its "
                      "claim and its publish, refused",
                      size, wa_record_type_name(rec->type),
                      WA_RING_STUCK_SEC);
        return NGX_BUSY;
    }

    ngx_log_error(NGX_LOG_ERR, log, 0,
                  "wa: ring %s (%uz byte %s record), refused",
                  rc == WA_RING_FULL ? "full" : "refused a too big record",
                  size, wa_record_type_name(rec->type));

    return NGX_BUSY;
}


ngx_int_t
ngx_http_wa_send_json(ngx_http_request_t *r, ngx_uint_t status, u_char *body,
    size_t len)
{
    static ngx_str_t  json = ngx_string("application/json");

    return ngx_http_wa_send_body(r, status, &json, body, len);
}


ngx_int_t
ngx_http_wa_send_body(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, u_char *body, size_t len)
{
    ngx_int_t    rc;
    ngx_buf_t   *b;
    ngx_chain_t  out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;
    r->headers_out.content_type_lowcase = NULL;

    if (len == 0 || r->method == NGX_HTTP_HEAD) {
        r->header_only = 1;
        return ngx_http_send_header(r);
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = body;
    b->last = body + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, &out);
}


/*
 * A POST with a JSON body, read without blocking; post() runs when it is
 * all in. The handler's return value. Both wa_webhook and wa_send raise
 * client_body_buffer_size to their body limit, so the body is one memory
 * buffer.
 */

ngx_int_t
ngx_http_wa_read_json(ngx_http_request_t *r,
    ngx_http_client_body_handler_pt post)
{
    size_t            len;
    ngx_int_t         rc;
    ngx_table_elt_t  *ct;

    if (!(r->method & NGX_HTTP_POST)) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    ct = r->headers_in.content_type;

    len = sizeof("application/json") - 1;

    /* application/json, with parameters or not; not application/jsonx */
    if (ct != NULL
        && (ct->value.len < len
            || ngx_strncasecmp(ct->value.data, (u_char *) "application/json",
                               len) != 0
            || (ct->value.len > len && ct->value.data[len] != ';'
                && ct->value.data[len] != ' ')))
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "wa: Content-Type \"%V\" refused", &ct->value);
        return NGX_HTTP_UNSUPPORTED_MEDIA_TYPE;
    }

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, post);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/* the body as one contiguous buffer; usually the single memory buffer */

u_char *
ngx_http_wa_body(ngx_http_request_t *r, size_t *len)
{
    u_char       *p, *body;
    size_t        size;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    cl = r->request_body->bufs;

    if (cl == NULL) {
        *len = 0;
        return (u_char *) "";
    }

    if (cl->next == NULL && !cl->buf->in_file) {
        /* an empty body may come as a buffer with no memory at all */
        if (cl->buf->pos == NULL) {
            *len = 0;
            return (u_char *) "";
        }

        *len = cl->buf->last - cl->buf->pos;
        return cl->buf->pos;
    }

    size = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        size += b->in_file ? (size_t) (b->file_last - b->file_pos)
                           : (size_t) (b->last - b->pos);
    }

    body = ngx_pnalloc(r->pool, size + 1);
    if (body == NULL) {
        return NULL;
    }

    p = body;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (!b->in_file) {
            /* a chunked body's chain has empty buffers with no memory */
            if (b->pos != b->last) {
                p = ngx_cpymem(p, b->pos, b->last - b->pos);
            }

            continue;
        }

        /* only when client_body_in_file_only forces a temp file */
        n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                          b->file_pos);
        if (n != b->file_last - b->file_pos) {
            return NULL;
        }

        p += n;
    }

    *len = p - body;

    return body;
}


/* constant-time equality for secrets (the length is not secret) */

ngx_int_t
ngx_http_wa_streq(ngx_str_t *a, ngx_str_t *b)
{
    if (a->len != b->len) {
        return 0;
    }

    return CRYPTO_memcmp(a->data, b->data, a->len) == 0;
}


/* a request header by name, case-insensitive */

ngx_table_elt_t *
ngx_http_wa_header(ngx_http_request_t *r, const char *name,
    size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


/* {"error": "<msg>"}, msg escaped as a JSON string */

ngx_int_t
ngx_http_wa_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *msg)
{
    u_char  *body, *p;
    size_t   len;

    len = ngx_strlen(msg);

    body = ngx_pnalloc(r->pool, sizeof("{\"error\":\"\"}") + len * 6);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(body, "{\"error\":\"", sizeof("{\"error\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, (u_char *) msg, len);
    p = ngx_cpymem(p, "\"}", 2);

    return ngx_http_wa_send_json(r, status, body, p - body);
}
