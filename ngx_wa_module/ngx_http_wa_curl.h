/*
 * ngx_http_wa_curl: libcurl's multi interface on nginx's event loop.
 *
 * One CURLM per worker. The sockets of transfers are opened and closed by
 * us (libcurl's open/close socket callbacks), each wrapped in an nginx
 * connection whose read/write events are registered level-triggered while
 * libcurl wants them; libcurl's timer is an nginx timer. Descriptors that
 * libcurl opens itself (the threaded resolver's socketpair, on every host
 * name) are wrapped on first sight and released, not closed, on
 * CURL_POLL_REMOVE. Nothing here blocks.
 *
 * A POST is never sent twice: libcurl re-sends a request by itself when a
 * reused connection dies before any answer; its pre-request callback,
 * called before each sending, refuses the second, so libcurl gives up
 * instead (x->resent), and the caller learns the request may have reached
 * the provider (x->sent).
 */

#ifndef NGX_HTTP_WA_CURL_H
#define NGX_HTTP_WA_CURL_H

#include <ngx_config.h>
#include <ngx_core.h>

#include <curl/curl.h>


typedef struct ngx_http_wa_curl_s  ngx_http_wa_curl_t;
typedef struct ngx_http_wa_xfer_s  ngx_http_wa_xfer_t;

typedef void (*ngx_http_wa_xfer_done_pt)(ngx_http_wa_xfer_t *x);
/* takes the answer's body as it arrives: NGX_OK, or NGX_ERROR to end the
 * transfer (CURLE_WRITE_ERROR) */
typedef ngx_int_t (*ngx_http_wa_xfer_sink_pt)(ngx_http_wa_xfer_t *x,
    u_char *p, size_t len);


/* how a transfer is made: from the location's configuration */
typedef struct {
    ngx_msec_t                 timeout;
    ngx_msec_t                 connect_timeout;
    ngx_msec_t                 shutdown_timeout;   /* once the worker exits */
    ngx_str_t                  trusted_certificate; /* "" for the system's */
    ngx_flag_t                 verify;
} ngx_http_wa_curl_conf_t;


struct ngx_http_wa_xfer_s {
    /* set by the caller */
    ngx_pool_t                *pool;        /* the transfer's own */
    ngx_http_wa_xfer_done_pt   done;
    ngx_http_wa_xfer_sink_pt   sink;        /* NULL: the body in memory,
                                               up to 256 KB */
    void                      *data;

    /* results, valid in done() */
    CURLcode                   result;
    long                       status;
    u_char                    *body;
    size_t                     body_len;
    char                       error[CURL_ERROR_SIZE];
    ngx_int_t                  retry_after; /* s, the answer's Retry-After;
                                               -1: none */
    unsigned                   sent:1;      /* the request went out: the
                                               provider may have it */
    unsigned                   resent:1;    /* libcurl's re-send refused */
    unsigned                   aborted:1;   /* ended by us, see error */
    unsigned                   exiting:1;   /* no event loop any more:
                                               record, answer nobody */

    /* private */
    CURL                      *easy;
    curl_mime                 *mime;        /* an upload's parts */
    struct curl_slist         *headers;
    size_t                     body_cap;
    u_char                    *req;         /* the request body */
    ngx_msec_t                 start;
    ngx_msec_t                 timeout;
    ngx_msec_t                 shutdown_timeout;
    ngx_http_wa_curl_t        *curl;
};


ngx_http_wa_curl_t *ngx_http_wa_curl_create(ngx_log_t *log);

/* the worker exits: every transfer in flight ends first, done() called
 * with x->exiting set */
void ngx_http_wa_curl_destroy(ngx_http_wa_curl_t *curl);

/* start a POST of body (len bytes, copied to x->pool); done() is called
 * once, from the event loop, never from inside this call */
ngx_int_t ngx_http_wa_curl_post(ngx_http_wa_curl_t *curl,
    ngx_http_wa_xfer_t *x, const char *url, const char *authorization,
    const char *body, size_t len, ngx_http_wa_curl_conf_t *conf);

/* start a GET, the same way; libcurl may repeat it on a dead reused
 * connection (a GET changes nothing at the provider) */
ngx_int_t ngx_http_wa_curl_get(ngx_http_wa_curl_t *curl,
    ngx_http_wa_xfer_t *x, const char *url, const char *authorization,
    ngx_http_wa_curl_conf_t *conf);


/* a file to upload, read by its owner's callbacks as libcurl sends it */
typedef struct {
    const char                *field;       /* the form field: "file" */
    const char                *type;        /* its MIME type */
    const char                *filename;
    curl_off_t                 size;
    curl_read_callback         read;
    curl_seek_callback         seek;
    void                      *arg;
} ngx_http_wa_curl_file_t;


/* start a multipart/form-data POST: the fields (name, value pairs, names
 * NULL-terminated), then the file, streamed through its callbacks (never
 * held in memory); done() as for ngx_http_wa_curl_post */
ngx_int_t ngx_http_wa_curl_upload(ngx_http_wa_curl_t *curl,
    ngx_http_wa_xfer_t *x, const char *url, const char *authorization,
    const char *const *fields, ngx_http_wa_curl_file_t *file,
    ngx_http_wa_curl_conf_t *conf);


/* a level-triggered read or write event on (want) or off: the sockets of
 * libraries that read until they have enough, not until EAGAIN */
ngx_int_t ngx_http_wa_level_event(ngx_event_t *ev, ngx_uint_t want,
    ngx_int_t type);

/* let go of an nginx connection whose descriptor is another library's to
 * close; closed: it is closed already (out of epoll) */
void ngx_http_wa_conn_release(ngx_connection_t *c, ngx_uint_t closed);


#endif /* NGX_HTTP_WA_CURL_H */
