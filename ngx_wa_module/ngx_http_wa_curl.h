/*
 * ngx_http_wa_curl: libcurl's multi interface on nginx's event loop.
 *
 * One CURLM per worker. Sockets are opened and closed by us (libcurl's
 * open/close socket callbacks), each wrapped in an nginx connection whose
 * read/write events are registered level-triggered while libcurl wants
 * them; libcurl's timer is an nginx timer. Nothing here blocks.
 */

#ifndef NGX_HTTP_WA_CURL_H
#define NGX_HTTP_WA_CURL_H

#include <ngx_config.h>
#include <ngx_core.h>

#include <curl/curl.h>


typedef struct ngx_http_wa_curl_s  ngx_http_wa_curl_t;
typedef struct ngx_http_wa_xfer_s  ngx_http_wa_xfer_t;

typedef void (*ngx_http_wa_xfer_done_pt)(ngx_http_wa_xfer_t *x);


struct ngx_http_wa_xfer_s {
    /* set by the caller */
    ngx_pool_t                *pool;        /* the transfer's own */
    ngx_http_wa_xfer_done_pt   done;
    void                      *data;

    /* results, valid in done() */
    CURLcode                   result;
    long                       status;
    u_char                    *body;
    size_t                     body_len;
    char                       error[CURL_ERROR_SIZE];

    /* private */
    CURL                      *easy;
    struct curl_slist         *headers;
    size_t                     body_cap;
    ngx_http_wa_curl_t        *curl;
};


ngx_http_wa_curl_t *ngx_http_wa_curl_create(ngx_log_t *log);
void ngx_http_wa_curl_destroy(ngx_http_wa_curl_t *curl);

/* transfers in flight in this worker */
ngx_uint_t ngx_http_wa_curl_active(ngx_http_wa_curl_t *curl);

/* start a POST; done() is called once, from the event loop, never from
 * inside this call */
ngx_int_t ngx_http_wa_curl_post(ngx_http_wa_curl_t *curl,
    ngx_http_wa_xfer_t *x, const char *url, const char *authorization,
    const char *body, size_t len, ngx_msec_t timeout,
    ngx_msec_t connect_timeout);

#endif /* NGX_HTTP_WA_CURL_H */
