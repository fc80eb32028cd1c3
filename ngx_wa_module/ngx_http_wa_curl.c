/*
 * ngx_http_wa_curl: libcurl's multi-socket interface driven by nginx's
 * events and timers (see ngx_http_wa_curl.h).
 *
 * Why we own the sockets: libcurl may tell us CURL_POLL_REMOVE after it
 * closed a descriptor, whose number nginx may already have reused; opening
 * and closing them ourselves keeps each fd and its nginx connection in
 * step. The one descriptor libcurl opens itself, the threaded resolver's
 * socketpair, it announces with CURL_POLL_REMOVE before closing it (7.88's
 * asyn-thread.c): that one we wrap on first sight and release on REMOVE.
 * Refusing it (-1 from the socket callback) would mark the whole multi
 * handle dead, and every later transfer of the worker with it.
 *
 * A watch timer runs while transfers are in flight: it ends a transfer
 * that outlived its timeout (libcurl's own timer should have; a stuck one
 * must not hold a request and its row forever) and, once the worker is
 * shutting down, one that outlived the shutdown timeout, so a graceful
 * stop (Debian's systemd unit kills nginx 5 s after it) records an outcome
 * for every send.
 */

#include "ngx_http_wa_curl.h"

#include <ngx_event.h>


#define NGX_HTTP_WA_CURL_BODY_MAX  (256 * 1024)

/* finished easy handles kept for the next transfers: an easy handle costs
 * a dozen allocations to make and to free; a handful covers a busy worker's
 * turnover, more would only hold memory after a burst */
#define NGX_HTTP_WA_CURL_IDLE      32

/* ms between looks at the transfers in flight; grace past a timeout */
#define NGX_HTTP_WA_CURL_WATCH     250
#define NGX_HTTP_WA_CURL_GRACE     1000


typedef struct {
    ngx_connection_t    *c;
    ngx_uint_t           foreign;       /* opened by libcurl, not by us */
} ngx_http_wa_curl_sock_t;


struct ngx_http_wa_curl_s {
    CURLM               *multi;
    CURLSH              *share;
    ngx_log_t           *log;

    ngx_event_t          timer;
    ngx_connection_t     timer_conn;    /* ev->data for debug logs */

    ngx_event_t          watch;
    ngx_connection_t     watch_conn;
    ngx_msec_t           exiting_since; /* 0: not shutting down */

    ngx_http_wa_curl_sock_t  *byfd;     /* the connection of each fd */
    ngx_uint_t           nbyfd;

    ngx_queue_t          xfers;         /* in flight */
    ngx_uint_t           active;

    CURL                *idle[NGX_HTTP_WA_CURL_IDLE];   /* reset, unused */
    ngx_uint_t           nidle;
};


/* a transfer's queue link lives in front of it, in its pool */
typedef struct {
    ngx_queue_t          queue;
    ngx_http_wa_xfer_t  *xfer;
} ngx_http_wa_curl_link_t;


static curl_socket_t ngx_http_wa_curl_open(void *data, curlsocktype purpose,
    struct curl_sockaddr *addr);
static int ngx_http_wa_curl_close(void *data, curl_socket_t fd);
static int ngx_http_wa_curl_socket(CURL *easy, curl_socket_t s, int what,
    void *data, void *socketp);
static int ngx_http_wa_curl_timer(CURLM *multi, long timeout_ms, void *data);
static void ngx_http_wa_curl_event_handler(ngx_event_t *ev);
static void ngx_http_wa_curl_timer_handler(ngx_event_t *ev);
static void ngx_http_wa_curl_done(ngx_http_wa_curl_t *curl);
static size_t ngx_http_wa_curl_write(char *ptr, size_t size, size_t n,
    void *data);
static size_t ngx_http_wa_curl_header(char *ptr, size_t size, size_t n,
    void *data);
static void ngx_http_wa_curl_release(ngx_http_wa_curl_t *curl, CURL *easy);
static ngx_int_t ngx_http_wa_curl_byfd(ngx_http_wa_curl_t *curl,
    ngx_socket_t s);
static ngx_connection_t *ngx_http_wa_curl_wrap(ngx_http_wa_curl_t *curl,
    ngx_socket_t s, ngx_uint_t foreign);
static void ngx_http_wa_curl_unwrap(ngx_http_wa_curl_t *curl,
    ngx_socket_t s, ngx_uint_t closed);
static int ngx_http_wa_curl_prereq(void *data, char *primary_ip,
    char *local_ip, int primary_port, int local_port);
static void ngx_http_wa_curl_watch_handler(ngx_event_t *ev);
static void ngx_http_wa_curl_end(ngx_http_wa_curl_t *curl,
    ngx_http_wa_xfer_t *x, CURLcode result);
static void ngx_http_wa_curl_abort_all(ngx_http_wa_curl_t *curl);
static void ngx_http_wa_curl_finish(ngx_http_wa_curl_t *curl, CURL *easy,
    CURLcode result);
static ngx_int_t ngx_http_wa_curl_start(ngx_http_wa_curl_t *curl,
    ngx_http_wa_xfer_t *x, const char *url, const char *authorization,
    const char *body, size_t len, const char *const *fields,
    ngx_http_wa_curl_file_t *file, ngx_http_wa_curl_conf_t *conf);
static curl_mime *ngx_http_wa_curl_form(CURL *easy,
    const char *const *fields, ngx_http_wa_curl_file_t *file);


ngx_http_wa_curl_t *
ngx_http_wa_curl_create(ngx_log_t *log)
{
    ngx_http_wa_curl_t  *curl;

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        ngx_log_error(NGX_LOG_EMERG, log, 0,
                      "wa send: curl_global_init failed");
        return NULL;
    }

    curl = ngx_calloc(sizeof(ngx_http_wa_curl_t), log);
    if (curl == NULL) {
        return NULL;
    }

    curl->log = log;
    ngx_queue_init(&curl->xfers);

    curl->multi = curl_multi_init();
    curl->share = curl_share_init();

    if (curl->multi == NULL || curl->share == NULL) {
        ngx_log_error(NGX_LOG_EMERG, log, 0, "wa send: libcurl init failed");
        ngx_http_wa_curl_destroy(curl);
        return NULL;
    }

    /* one worker thread: sharing needs no locks; TLS sessions and DNS
     * answers are reused across transfers */
    curl_share_setopt(curl->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_share_setopt(curl->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);

    curl_multi_setopt(curl->multi, CURLMOPT_SOCKETFUNCTION,
                      ngx_http_wa_curl_socket);
    curl_multi_setopt(curl->multi, CURLMOPT_SOCKETDATA, curl);
    curl_multi_setopt(curl->multi, CURLMOPT_TIMERFUNCTION,
                      ngx_http_wa_curl_timer);
    curl_multi_setopt(curl->multi, CURLMOPT_TIMERDATA, curl);
    curl_multi_setopt(curl->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    curl_multi_setopt(curl->multi, CURLMOPT_MAXCONNECTS, 64L);

    curl->timer_conn.fd = (ngx_socket_t) -1;
    curl->timer_conn.data = curl;
    curl->timer.data = &curl->timer_conn;
    curl->timer.handler = ngx_http_wa_curl_timer_handler;
    curl->timer.log = log;
    curl->timer.cancelable = 1;

    /* not cancelable: a worker that shuts down keeps watching its sends */
    curl->watch_conn.fd = (ngx_socket_t) -1;
    curl->watch_conn.data = curl;
    curl->watch.data = &curl->watch_conn;
    curl->watch.handler = ngx_http_wa_curl_watch_handler;
    curl->watch.log = log;

    return curl;
}


void
ngx_http_wa_curl_destroy(ngx_http_wa_curl_t *curl)
{
    /* transfers still in flight get their outcome first */
    ngx_http_wa_curl_abort_all(curl);

    while (curl->nidle) {
        curl_easy_cleanup(curl->idle[--curl->nidle]);
    }

    if (curl->timer.timer_set) {
        ngx_del_timer(&curl->timer);
    }

    if (curl->watch.timer_set) {
        ngx_del_timer(&curl->watch);
    }

    if (curl->multi) {
        curl_multi_cleanup(curl->multi);
    }

    if (curl->share) {
        curl_share_cleanup(curl->share);
    }

    if (curl->byfd) {
        ngx_free(curl->byfd);
    }

    ngx_free(curl);
}


ngx_int_t
ngx_http_wa_curl_post(ngx_http_wa_curl_t *curl, ngx_http_wa_xfer_t *x,
    const char *url, const char *authorization, const char *body, size_t len,
    ngx_http_wa_curl_conf_t *conf)
{
    return ngx_http_wa_curl_start(curl, x, url, authorization, body, len,
                                  NULL, NULL, conf);
}


ngx_int_t
ngx_http_wa_curl_get(ngx_http_wa_curl_t *curl, ngx_http_wa_xfer_t *x,
    const char *url, const char *authorization, ngx_http_wa_curl_conf_t *conf)
{
    return ngx_http_wa_curl_start(curl, x, url, authorization, NULL, 0,
                                  NULL, NULL, conf);
}


ngx_int_t
ngx_http_wa_curl_upload(ngx_http_wa_curl_t *curl, ngx_http_wa_xfer_t *x,
    const char *url, const char *authorization, const char *const *fields,
    ngx_http_wa_curl_file_t *file, ngx_http_wa_curl_conf_t *conf)
{
    return ngx_http_wa_curl_start(curl, x, url, authorization, NULL, 0,
                                  fields, file, conf);
}


/* body NULL and no file: a GET; a file: a multipart/form-data POST */

static ngx_int_t
ngx_http_wa_curl_start(ngx_http_wa_curl_t *curl, ngx_http_wa_xfer_t *x,
    const char *url, const char *authorization, const char *body, size_t len,
    const char *const *fields, ngx_http_wa_curl_file_t *file,
    ngx_http_wa_curl_conf_t *conf)
{
    CURL                     *easy;
    ngx_uint_t                i, n;
    const char               *line[3];
    struct curl_slist        *h, *t;
    ngx_http_wa_curl_link_t  *link;

    link = ngx_palloc(x->pool, sizeof(ngx_http_wa_curl_link_t));
    if (link == NULL) {
        return NGX_ERROR;
    }

    if (body) {
        x->req = ngx_pnalloc(x->pool, len);
        if (x->req == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(x->req, body, len);
    }

    easy = curl->nidle ? curl->idle[--curl->nidle] : curl_easy_init();
    if (easy == NULL) {
        return NGX_ERROR;
    }

    n = 0;
    line[n++] = authorization;

    if (body) {
        line[n++] = "Content-Type: application/json";
        line[n++] = "Expect:";
    }

    /* a form: libcurl writes its Content-Type with the boundary; no
     * "Expect: 100-continue" round trip before the file */
    if (file) {
        line[n++] = "Expect:";
    }

    /* a failed append leaves the list as it was: free what was made */
    h = NULL;

    for (i = 0; i < n; i++) {
        t = curl_slist_append(h, line[i]);

        if (t == NULL) {
            curl_slist_free_all(h);
            ngx_http_wa_curl_release(curl, easy);
            return NGX_ERROR;
        }

        h = t;
    }

    x->mime = NULL;

    if (file) {
        x->mime = ngx_http_wa_curl_form(easy, fields, file);

        if (x->mime == NULL) {
            curl_slist_free_all(h);
            ngx_http_wa_curl_release(curl, easy);
            return NGX_ERROR;
        }
    }

    x->easy = easy;
    x->headers = h;
    x->curl = curl;
    x->body = NULL;
    x->body_len = 0;
    x->body_cap = 0;
    x->status = 0;
    x->error[0] = '\0';
    x->retry_after = -1;
    x->sent = 0;
    x->aborted = 0;
    x->exiting = 0;
    x->resent = 0;
    x->start = ngx_current_msec;
    x->timeout = conf->timeout;
    x->shutdown_timeout = conf->shutdown_timeout;

    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, h);

    if (body) {
        /* the body lives in x->pool for the whole transfer: no copy */
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) len);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, x->req);
        curl_easy_setopt(easy, CURLOPT_PREREQFUNCTION,
                         ngx_http_wa_curl_prereq);
        curl_easy_setopt(easy, CURLOPT_PREREQDATA, x);

    } else if (file) {
        /* the file is read by the owner's callback as the socket takes
         * it; a re-send is refused as a JSON POST's is */
        curl_easy_setopt(easy, CURLOPT_MIMEPOST, x->mime);
        curl_easy_setopt(easy, CURLOPT_PREREQFUNCTION,
                         ngx_http_wa_curl_prereq);
        curl_easy_setopt(easy, CURLOPT_PREREQDATA, x);

    } else {
        curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    }

    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, ngx_http_wa_curl_write);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, ngx_http_wa_curl_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, x->error);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) conf->timeout);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                     (long) conf->connect_timeout);
    curl_easy_setopt(easy, CURLOPT_SHARE, curl->share);
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, conf->verify ? 1L : 0L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, conf->verify ? 2L : 0L);

    if (conf->trusted_certificate.len) {
        /* NUL-terminated: a configuration argument */
        curl_easy_setopt(easy, CURLOPT_CAINFO,
                         (char *) conf->trusted_certificate.data);
    }

    /* waiting to multiplex only pays over TLS (HTTP/2): on plain HTTP every
     * send of a fresh worker would queue behind the first answer */
    if (ngx_strncasecmp((u_char *) url, (u_char *) "https://", 8) == 0) {
        curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 1L);
    }

    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, ngx_http_wa_curl_open);
    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, curl);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION,
                     ngx_http_wa_curl_close);
    curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, curl);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, link);

    if (curl_multi_add_handle(curl->multi, easy) != CURLM_OK) {
        curl_slist_free_all(h);
        x->easy = NULL;
        x->headers = NULL;
        ngx_http_wa_curl_release(curl, easy);

        if (x->mime) {
            curl_mime_free(x->mime);
            x->mime = NULL;
        }

        return NGX_ERROR;
    }

    link->xfer = x;
    ngx_queue_insert_tail(&curl->xfers, &link->queue);

    curl->active++;

    if (!curl->watch.timer_set) {
        ngx_add_timer(&curl->watch, NGX_HTTP_WA_CURL_WATCH);
    }

    return NGX_OK;
}


/* the form Meta's media endpoint takes: the fields (name, value pairs),
 * then the file, its size known up front (a Content-Length, no chunks),
 * its bytes pulled by the owner's callback; NULL: out of memory */

static curl_mime *
ngx_http_wa_curl_form(CURL *easy, const char *const *fields,
    ngx_http_wa_curl_file_t *file)
{
    ngx_uint_t      i;
    curl_mime      *mime;
    curl_mimepart  *part;

    mime = curl_mime_init(easy);
    if (mime == NULL) {
        return NULL;
    }

    for (i = 0; fields[i] != NULL; i += 2) {
        part = curl_mime_addpart(mime);

        if (part == NULL
            || curl_mime_name(part, fields[i]) != CURLE_OK
            || curl_mime_data(part, fields[i + 1], CURL_ZERO_TERMINATED)
               != CURLE_OK)
        {
            goto failed;
        }
    }

    part = curl_mime_addpart(mime);

    if (part == NULL
        || curl_mime_name(part, file->field) != CURLE_OK
        || curl_mime_filename(part, file->filename) != CURLE_OK
        || curl_mime_type(part, file->type) != CURLE_OK
        || curl_mime_data_cb(part, file->size, file->read, file->seek, NULL,
                             file->arg) != CURLE_OK)
    {
        goto failed;
    }

    return mime;

failed:

    curl_mime_free(mime);
    return NULL;
}


/*
 * Called each time libcurl is about to send the request on a connection:
 * once normally, again only when it means to send it a second time (a
 * reused connection died before any answer, an HTTP/2 stream was refused).
 * The provider may have processed the first copy, and the Cloud API has no
 * idempotency key: refuse, so the transfer ends as unknown rather than as
 * a second WhatsApp message. From the first call on the request may reach
 * the provider (x->sent); before it, nothing of it has left.
 */

static int
ngx_http_wa_curl_prereq(void *data, char *primary_ip, char *local_ip,
    int primary_port, int local_port)
{
    ngx_http_wa_xfer_t *x = data;

    if (x->sent) {
        x->resent = 1;
        return CURL_PREREQFUNC_ABORT;
    }

    x->sent = 1;

    return CURL_PREREQFUNC_OK;
}


/* a table slot for fd s; NGX_ERROR: out of memory */

static ngx_int_t
ngx_http_wa_curl_byfd(ngx_http_wa_curl_t *curl, ngx_socket_t s)
{
    size_t                    n;
    ngx_http_wa_curl_sock_t  *byfd;

    if ((ngx_uint_t) s < curl->nbyfd) {
        return NGX_OK;
    }

    n = ngx_max((size_t) s + 1, curl->nbyfd * 2);
    n = ngx_max(n, 64);

    byfd = ngx_alloc(n * sizeof(ngx_http_wa_curl_sock_t), curl->log);
    if (byfd == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(byfd, n * sizeof(ngx_http_wa_curl_sock_t));

    if (curl->byfd) {
        ngx_memcpy(byfd, curl->byfd,
                   curl->nbyfd * sizeof(ngx_http_wa_curl_sock_t));
        ngx_free(curl->byfd);
    }

    curl->byfd = byfd;
    curl->nbyfd = n;

    return NGX_OK;
}


/* an nginx connection for fd s; counts against worker_connections, as any
 * upstream socket does */

static ngx_connection_t *
ngx_http_wa_curl_wrap(ngx_http_wa_curl_t *curl, ngx_socket_t s,
    ngx_uint_t foreign)
{
    ngx_connection_t  *c;

    if (ngx_http_wa_curl_byfd(curl, s) != NGX_OK) {
        return NULL;
    }

    if (curl->byfd[s].c != NULL) {
        /* the number came back: the descriptor it named is closed, and
         * closing took it out of epoll */
        ngx_http_wa_curl_unwrap(curl, s, 1);
    }

    c = ngx_get_connection(s, curl->log);
    if (c == NULL) {
        return NULL;
    }

    c->data = curl;
    c->read->handler = ngx_http_wa_curl_event_handler;
    c->write->handler = ngx_http_wa_curl_event_handler;
    c->read->log = curl->log;
    c->write->log = curl->log;

    curl->byfd[s].c = c;
    curl->byfd[s].foreign = foreign;

    return c;
}


/* forget fd s's connection; closed: the fd is already gone from epoll */

static void
ngx_http_wa_curl_unwrap(ngx_http_wa_curl_t *curl, ngx_socket_t s,
    ngx_uint_t closed)
{
    ngx_connection_t  *c;

    c = curl->byfd[s].c;
    curl->byfd[s].c = NULL;
    curl->byfd[s].foreign = 0;

    ngx_http_wa_conn_release(c, closed);
}


/* let go of a connection whose descriptor another library closes (or
 * closed: then it is out of epoll already) */

void
ngx_http_wa_conn_release(ngx_connection_t *c, ngx_uint_t closed)
{
    ngx_uint_t  flags;

    flags = closed ? NGX_CLOSE_EVENT : 0;

    if (c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, flags);
    }

    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, flags);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    /* as ngx_close_connection: events of this fd still queued in this
     * loop see it closed */
    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;
}


static curl_socket_t
ngx_http_wa_curl_open(void *data, curlsocktype purpose,
    struct curl_sockaddr *addr)
{
    ngx_http_wa_curl_t *curl = data;

    ngx_socket_t  s;

    s = ngx_socket(addr->family, addr->socktype, addr->protocol);
    if (s == (ngx_socket_t) -1) {
        ngx_log_error(NGX_LOG_ERR, curl->log, ngx_socket_errno,
                      "wa send: socket() failed");
        return CURL_SOCKET_BAD;
    }

    if (ngx_http_wa_curl_wrap(curl, s, 0) == NULL) {
        ngx_close_socket(s);
        return CURL_SOCKET_BAD;
    }

    return s;
}


static int
ngx_http_wa_curl_close(void *data, curl_socket_t fd)
{
    ngx_http_wa_curl_t *curl = data;

    if ((ngx_uint_t) fd < curl->nbyfd && curl->byfd[fd].c != NULL) {
        /* the close below drops the fd from epoll: no syscall needed */
        ngx_http_wa_curl_unwrap(curl, fd, 1);
    }

    return ngx_close_socket(fd) == -1 ? 1 : 0;
}


static int
ngx_http_wa_curl_socket(CURL *easy, curl_socket_t s, int what, void *data,
    void *socketp)
{
    ngx_http_wa_curl_t *curl = data;

    ngx_connection_t  *c;

    c = ((ngx_uint_t) s < curl->nbyfd) ? curl->byfd[s].c : NULL;

    if (what == CURL_POLL_REMOVE) {
        /* ours: watching ends here, the close callback frees it; libcurl's
         * own (the resolver's): still open, so epoll is told */
        if (c != NULL) {
            if (curl->byfd[s].foreign) {
                ngx_http_wa_curl_unwrap(curl, s, 0);

            } else {
                (void) ngx_http_wa_level_event(c->read, 0, NGX_READ_EVENT);
                (void) ngx_http_wa_level_event(c->write, 0, NGX_WRITE_EVENT);
            }
        }

        return 0;
    }

    if (c == NULL) {
        c = ngx_http_wa_curl_wrap(curl, s, 1);

        if (c == NULL) {
            /* -1 would kill the multi handle and every transfer on it;
             * this transfer ends by its timeout instead */
            ngx_log_error(NGX_LOG_ALERT, curl->log, 0,
                          "wa send: no connection for libcurl's socket %d",
                          (int) s);
            return 0;
        }
    }

    /* level-triggered: libcurl need not drain a socket in one call */
    if (ngx_http_wa_level_event(c->read,
                               what == CURL_POLL_IN || what == CURL_POLL_INOUT,
                               NGX_READ_EVENT) != NGX_OK
        || ngx_http_wa_level_event(c->write,
                                  what == CURL_POLL_OUT
                                  || what == CURL_POLL_INOUT,
                                  NGX_WRITE_EVENT) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, curl->log, 0,
                      "wa send: cannot watch libcurl's socket %d", (int) s);
    }

    return 0;
}


ngx_int_t
ngx_http_wa_level_event(ngx_event_t *ev, ngx_uint_t want, ngx_int_t type)
{
    if (want && !ev->active) {
        return ngx_add_event(ev, type, NGX_LEVEL_EVENT);
    }

    if (!want && ev->active) {
        return ngx_del_event(ev, type, 0);
    }

    return NGX_OK;
}


/* libcurl's timer; "do not call libcurl from here": only arm nginx's */

static int
ngx_http_wa_curl_timer(CURLM *multi, long timeout_ms, void *data)
{
    ngx_http_wa_curl_t *curl = data;

    if (curl->timer.timer_set) {
        ngx_del_timer(&curl->timer);
    }

    if (timeout_ms >= 0) {
        /* a reload waits for sends in flight (their timer is not
         * cancelable), bounded by the watch; an idle one does not */
        curl->timer.cancelable = curl->active ? 0 : 1;
        ngx_add_timer(&curl->timer, (ngx_msec_t) timeout_ms);
    }

    return 0;
}


static void
ngx_http_wa_curl_event_handler(ngx_event_t *ev)
{
    int                  running;
    ngx_connection_t    *c;
    ngx_http_wa_curl_t  *curl;

    c = ev->data;
    curl = c->data;

    curl_multi_socket_action(curl->multi, c->fd,
                             ev->write ? CURL_CSELECT_OUT : CURL_CSELECT_IN,
                             &running);

    ngx_http_wa_curl_done(curl);
}


static void
ngx_http_wa_curl_timer_handler(ngx_event_t *ev)
{
    int                  running;
    ngx_http_wa_curl_t  *curl;

    curl = ((ngx_connection_t *) ev->data)->data;

    curl_multi_socket_action(curl->multi, CURL_SOCKET_TIMEOUT, 0, &running);

    ngx_http_wa_curl_done(curl);
}


/*
 * Every NGX_HTTP_WA_CURL_WATCH ms while transfers are in flight: end those
 * past their timeout (plus grace: libcurl should have ended them) and, once
 * the worker is shutting down, those past the shutdown timeout.
 */

static void
ngx_http_wa_curl_watch_handler(ngx_event_t *ev)
{
    ngx_msec_t                end;
    ngx_queue_t              *q, *next;
    ngx_http_wa_xfer_t       *x;
    ngx_http_wa_curl_t       *curl;
    ngx_http_wa_curl_link_t  *link;

    curl = ((ngx_connection_t *) ev->data)->data;

    if (ngx_exiting && curl->exiting_since == 0) {
        curl->exiting_since = ngx_current_msec;
        ngx_log_error(NGX_LOG_NOTICE, curl->log, 0,
                      "wa send: worker shutting down with %ui provider "
                      "call(s) in flight", curl->active);
    }

    for (q = ngx_queue_head(&curl->xfers);
         q != ngx_queue_sentinel(&curl->xfers);
         q = next)
    {
        next = ngx_queue_next(q);
        link = ngx_queue_data(q, ngx_http_wa_curl_link_t, queue);
        x = link->xfer;

        if ((ngx_msec_int_t) (ngx_current_msec - x->start)
            > (ngx_msec_int_t) (x->timeout + NGX_HTTP_WA_CURL_GRACE))
        {
            ngx_snprintf((u_char *) x->error, CURL_ERROR_SIZE,
                         "no answer within wa_send_timeout (ended by the "
                         "watch, not by libcurl)%Z");
            ngx_log_error(NGX_LOG_ALERT, curl->log, 0,
                          "wa send: a provider call outlived its timeout "
                          "by %M ms, ended", ngx_current_msec - x->start
                                             - x->timeout);
            ngx_http_wa_curl_end(curl, x, CURLE_OPERATION_TIMEDOUT);
            continue;
        }

        if (curl->exiting_since == 0) {
            continue;
        }

        end = ngx_max(curl->exiting_since, x->start) + x->shutdown_timeout;

        if ((ngx_msec_int_t) (ngx_current_msec - end) >= 0) {
            ngx_snprintf((u_char *) x->error, CURL_ERROR_SIZE,
                         "nginx is shutting down: no answer within "
                         "wa_send_shutdown_timeout%Z");
            ngx_http_wa_curl_end(curl, x, CURLE_OPERATION_TIMEDOUT);
        }
    }

    if (curl->active) {
        ngx_add_timer(&curl->watch, NGX_HTTP_WA_CURL_WATCH);
    }
}


static void
ngx_http_wa_curl_abort_all(ngx_http_wa_curl_t *curl)
{
    ngx_queue_t              *q;
    ngx_http_wa_xfer_t       *x;
    ngx_http_wa_curl_link_t  *link;

    while (!ngx_queue_empty(&curl->xfers)) {
        q = ngx_queue_head(&curl->xfers);
        link = ngx_queue_data(q, ngx_http_wa_curl_link_t, queue);
        x = link->xfer;

        x->exiting = 1;
        ngx_snprintf((u_char *) x->error, CURL_ERROR_SIZE,
                     "nginx stopped while the provider call was in flight%Z");
        ngx_http_wa_curl_end(curl, x, CURLE_ABORTED_BY_CALLBACK);
    }
}


/* end a transfer libcurl has not finished: ours to decide */

static void
ngx_http_wa_curl_end(ngx_http_wa_curl_t *curl, ngx_http_wa_xfer_t *x,
    CURLcode result)
{
    x->aborted = 1;
    ngx_http_wa_curl_finish(curl, x->easy, result);
}


/* hand finished transfers to their owners, outside libcurl's callbacks */

static void
ngx_http_wa_curl_done(ngx_http_wa_curl_t *curl)
{
    int       left;
    CURLMsg  *msg;

    while ((msg = curl_multi_info_read(curl->multi, &left)) != NULL) {
        if (msg->msg == CURLMSG_DONE) {
            ngx_http_wa_curl_finish(curl, msg->easy_handle, msg->data.result);
        }
    }
}


/* take a transfer off the multi handle, then tell its owner */

static void
ngx_http_wa_curl_finish(ngx_http_wa_curl_t *curl, CURL *easy,
    CURLcode result)
{
    ngx_http_wa_xfer_t       *x;
    ngx_http_wa_curl_link_t  *link;

    link = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **) &link);
    x = link->xfer;

    x->result = result;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &x->status);

    ngx_queue_remove(&link->queue);
    curl_multi_remove_handle(curl->multi, easy);
    ngx_http_wa_curl_release(curl, easy);
    curl_slist_free_all(x->headers);

    /* the reset handle no longer points at the parts */
    if (x->mime) {
        curl_mime_free(x->mime);
        x->mime = NULL;
    }

    x->easy = NULL;
    x->headers = NULL;
    curl->active--;

    if (curl->active == 0 && curl->watch.timer_set) {
        ngx_del_timer(&curl->watch);
    }

    x->done(x);
}


/* keep a finished handle for the next transfer; reset now, so it holds no
 * pointer into the pool of the transfer that is ending */

static void
ngx_http_wa_curl_release(ngx_http_wa_curl_t *curl, CURL *easy)
{
    if (curl->nidle == NGX_HTTP_WA_CURL_IDLE) {
        curl_easy_cleanup(easy);
        return;
    }

    curl_easy_reset(easy);
    curl->idle[curl->nidle++] = easy;
}


static size_t
ngx_http_wa_curl_write(char *ptr, size_t size, size_t n, void *data)
{
    ngx_http_wa_xfer_t *x = data;

    u_char  *p;
    size_t   len, cap;

    len = size * n;

    if (x->sink) {
        return x->sink(x, (u_char *) ptr, len) == NGX_OK ? len : 0;
    }

    if (x->body_len + len > NGX_HTTP_WA_CURL_BODY_MAX) {
        return 0;          /* an answer this big is not the Cloud API's */
    }

    if (x->body_len + len > x->body_cap) {
        cap = ngx_max(x->body_cap * 2, x->body_len + len);
        cap = ngx_max(cap, 1024);

        p = ngx_pnalloc(x->pool, cap);
        if (p == NULL) {
            return 0;
        }

        if (x->body_len) {
            ngx_memcpy(p, x->body, x->body_len);
        }

        x->body = p;
        x->body_cap = cap;
    }

    ngx_memcpy(x->body + x->body_len, ptr, len);
    x->body_len += len;

    return len;
}


/* the answer's Retry-After, in seconds (an HTTP date is not read: the
 * backoff applies) */

static size_t
ngx_http_wa_curl_header(char *ptr, size_t size, size_t n, void *data)
{
    ngx_http_wa_xfer_t *x = data;

    size_t     len, i;
    ngx_int_t  v;

    len = size * n;

    if (len > sizeof("Retry-After:") - 1
        && ngx_strncasecmp((u_char *) ptr, (u_char *) "Retry-After:",
                           sizeof("Retry-After:") - 1) == 0)
    {
        i = sizeof("Retry-After:") - 1;

        while (i < len && ptr[i] == ' ') {
            i++;
        }

        n = i;

        while (n < len && ptr[n] >= '0' && ptr[n] <= '9') {
            n++;
        }

        v = ngx_atoi((u_char *) ptr + i, n - i);

        if (v >= 0) {
            x->retry_after = v;
        }
    }

    return len;
}
