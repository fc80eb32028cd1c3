/*
 * ngx_http_wa_sync: "wa_ring ... sync=on", acknowledged means on disk.
 *
 * A record in the ring's mapped pages survives any process's death but
 * not a power cut or a kernel panic: the kernel writes dirty pages back
 * when it gets to them. Under sync=on, a webhook's 200 and a send's
 * provider call wait until the ring file is synced (fdatasync, which on
 * Linux writes the pages dirtied through the mapping, the header's tail
 * among them).
 *
 * The sync runs on one of nginx's thread pools, never on the event loop,
 * and each worker has at most one in flight. Group commit: syncs are
 * numbered; a waiter registered while sync N runs (or before anything
 * runs, N being the last one started) needs sync N + 1, which starts as
 * soon as N ends and covers everyone who registered meanwhile. A sync
 * covers every record published before it started, whichever worker
 * published it, but each worker syncs for its own waiters: nothing
 * depends on another worker's syncs.
 *
 * A sync is started from a posted event, after the event loop has handled
 * every event of its round: the requests read in one round wait for the
 * same sync, rather than the first starting one for itself alone.
 *
 * A failed sync (EIO, ENOSPC, ...) fails every waiter it was to cover:
 * they answer 503, and a CRITICAL line says the disk under the ring is
 * failing. The next sync is a new attempt for later waiters only.
 */

#include "ngx_http_wa_module.h"


#if (NGX_THREADS)

#include <ngx_thread_pool.h>
#include <sys/vfs.h>
#include <linux/magic.h>


#define NGX_HTTP_WA_SYNC_SLOW  1000    /* ms: a sync slower than this is
                                        * logged */


/*
 * What the thread sees: nothing of nginx's. It syncs the ring file, and a
 * file detached since its records were published (deleted, replaced),
 * if any.
 */
typedef struct {
    ngx_uint_t                n;
    int                       fd[2];    /* dups: the event loop may close
                                         * the ring meanwhile */
    int                       err[2];   /* errno of a failed fdatasync */
    uint64_t                  epoch[2]; /* the ring mapping each one is */
    ngx_msec_t                start;
} ngx_http_wa_sync_task_ctx_t;


static ngx_int_t ngx_http_wa_sync_start(ngx_http_wa_main_conf_t *wmcf,
    ngx_log_t *log);
static void ngx_http_wa_sync_thread(void *data, ngx_log_t *log);
static void ngx_http_wa_sync_event(ngx_event_t *ev);
static void ngx_http_wa_sync_posted(ngx_event_t *ev);
static void ngx_http_wa_sync_slow(ngx_event_t *ev);
static void ngx_http_wa_sync_fail_all(ngx_http_wa_main_conf_t *wmcf,
    ngx_int_t rc);
static void ngx_http_wa_sync_cleanup(void *data);


/*
 * A ring in memory (tmpfs, ramfs) is gone after a power cut whatever is
 * synced: sync=on there would only slow every answer down and promise
 * what it cannot keep. The file may not exist yet: then its directory.
 */

static char *
ngx_http_wa_sync_memory_fs(ngx_conf_t *cf, ngx_http_wa_main_conf_t *wmcf)
{
    u_char         *path, *p;
    struct statfs   fs;

    path = ngx_pnalloc(cf->temp_pool, wmcf->ring_path.len + 1);
    if (path == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_cpymem(path, wmcf->ring_path.data, wmcf->ring_path.len);
    *p = '\0';

    if (statfs((char *) path, &fs) == -1) {

        /* its directory: the path before its last slash ("/ring": "/") */
        while (p > path && p[-1] != '/') {
            p--;
        }

        if (p == path) {
            return NGX_CONF_OK;
        }

        p[p - 1 == path ? 0 : -1] = '\0';

        if (statfs((char *) path, &fs) == -1) {
            /* no directory either: opening the ring will say so */
            return NGX_CONF_OK;
        }
    }

    if (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"wa_ring\": \"sync=on\" with the ring \"%V\" "
                           "in memory (%s): no sync makes it survive a power "
                           "cut; put the ring on a disk file system, or drop "
                           "\"sync=on\"", &wmcf->ring_path,
                           fs.f_type == TMPFS_MAGIC ? "tmpfs" : "ramfs");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_wa_sync_conf(ngx_conf_t *cf, ngx_http_wa_main_conf_t *wmcf,
    ngx_str_t *pool_name)
{
    if (ngx_http_wa_sync_memory_fs(cf, wmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    wmcf->sync_pool = ngx_thread_pool_add(cf, pool_name->len ? pool_name
                                                             : NULL);
    if (wmcf->sync_pool == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_wa_sync_init_process(ngx_cycle_t *cycle,
    ngx_http_wa_main_conf_t *wmcf)
{
    ngx_thread_task_t            *task;
    ngx_http_wa_sync_task_ctx_t  *tc;

    ngx_queue_init(&wmcf->sync_waiters);
    wmcf->sync_prev_fd = -1;

    if (!wmcf->sync) {
        return NGX_OK;
    }

    task = ngx_thread_task_alloc(cycle->pool,
                                 sizeof(ngx_http_wa_sync_task_ctx_t));
    if (task == NULL) {
        return NGX_ERROR;
    }

    tc = task->ctx;
    tc->n = 0;

    task->handler = ngx_http_wa_sync_thread;
    task->event.handler = ngx_http_wa_sync_event;
    task->event.data = &wmcf->sync_conn;
    task->event.log = cycle->log;

    wmcf->sync_conn.fd = (ngx_socket_t) -1;
    wmcf->sync_task = task;

    /*
     * Not cancelable: a worker that is shutting down waits for its sync,
     * so the requests it covers get their answer.
     */
    wmcf->sync_timer.handler = ngx_http_wa_sync_slow;
    wmcf->sync_timer.data = &wmcf->sync_conn;
    wmcf->sync_timer.log = cycle->log;

    wmcf->sync_post.handler = ngx_http_wa_sync_posted;
    wmcf->sync_post.data = &wmcf->sync_conn;
    wmcf->sync_post.log = cycle->log;

    return NGX_OK;
}


/*
 * Call right after the last publish of a request: w->handler will be
 * called once, later, from the event loop, with NGX_OK (synced), NGX_ERROR
 * (not synced: answer 503) or NGX_ABORT (the worker exits). NGX_ERROR
 * here: not queued, the caller answers 503 itself.
 */

ngx_int_t
ngx_http_wa_sync_wait(ngx_http_wa_main_conf_t *wmcf, ngx_pool_t *pool,
    ngx_http_wa_sync_wait_t *w)
{
    ngx_pool_cleanup_t  *cln;

    if (wmcf->sync_task == NULL) {
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_wa_sync_cleanup;
    cln->data = w;

    /* one sync running: its start may predate the records, wait for the
     * next one; none running: the one started at the end of this round */
    w->gen = wmcf->sync_started + 1;
    w->epoch = wmcf->ring_epoch;
    w->queued = 1;
    ngx_queue_insert_tail(&wmcf->sync_waiters, &w->queue);

    if (!wmcf->sync_busy && !wmcf->sync_post.posted) {
        ngx_post_event(&wmcf->sync_post, &ngx_posted_events);
    }

    return NGX_OK;
}


static void
ngx_http_wa_sync_posted(ngx_event_t *ev)
{
    ngx_http_wa_main_conf_t  *wmcf;

    wmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_http_wa_module);

    if (wmcf->sync_busy || ngx_queue_empty(&wmcf->sync_waiters)) {
        return;
    }

    /* also while shutting down gracefully: its requests are served */
    if (ngx_http_wa_sync_start(wmcf, ev->log) != NGX_OK) {
        ngx_http_wa_sync_fail_all(wmcf, NGX_ERROR);
    }
}


/* the request (or the send's pool) goes away: forget it */

static void
ngx_http_wa_sync_cleanup(void *data)
{
    ngx_http_wa_sync_wait_t  *w = data;

    if (w->queued) {
        ngx_queue_remove(&w->queue);
        w->queued = 0;
    }
}


static ngx_int_t
ngx_http_wa_sync_start(ngx_http_wa_main_conf_t *wmcf, ngx_log_t *log)
{
    ngx_uint_t                    i;
    ngx_thread_task_t            *task;
    ngx_http_wa_sync_task_ctx_t  *tc;

    task = wmcf->sync_task;
    tc = task->ctx;
    tc->n = 0;

    if (wmcf->ring_ok) {
        tc->fd[0] = dup(wmcf->ring.fd);

        if (tc->fd[0] == -1) {
            ngx_log_error(NGX_LOG_ALERT, log, ngx_errno,
                          "wa_ring sync: dup() failed, answering 503");
            return NGX_ERROR;
        }

        tc->epoch[0] = wmcf->ring_epoch;
        tc->n = 1;
    }

    if (wmcf->sync_prev_fd != -1) {
        /* the task owns it now: after this sync nobody waits for it */
        tc->fd[tc->n] = wmcf->sync_prev_fd;
        tc->epoch[tc->n] = wmcf->sync_prev_epoch;
        tc->n++;
        wmcf->sync_prev_fd = -1;
    }

    if (tc->n == 0) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "wa_ring sync: the ring is unavailable, answering 503");
        return NGX_ERROR;
    }

    tc->start = ngx_current_msec;

    if (ngx_thread_task_post(wmcf->sync_pool, task) != NGX_OK) {
        /* the pool's queue is full; it logged why */
        for (i = 0; i < tc->n; i++) {
            close(tc->fd[i]);
        }

        tc->n = 0;
        return NGX_ERROR;
    }

    wmcf->sync_started++;
    wmcf->sync_busy = 1;

    ngx_add_timer(&wmcf->sync_timer, NGX_HTTP_WA_SYNC_SLOW);

    return NGX_OK;
}


void
ngx_http_wa_sync_detach(ngx_http_wa_main_conf_t *wmcf)
{
    if (wmcf->sync_task == NULL || ngx_queue_empty(&wmcf->sync_waiters)) {
        return;
    }

    /* a file detached before this one: its waiters get 503 */
    if (wmcf->sync_prev_fd != -1) {
        close(wmcf->sync_prev_fd);
    }

    wmcf->sync_prev_fd = dup(wmcf->ring.fd);
    wmcf->sync_prev_epoch = wmcf->ring_epoch;
}


/* in a pool thread: no nginx function here */

static void
ngx_http_wa_sync_thread(void *data, ngx_log_t *log)
{
    ngx_http_wa_sync_task_ctx_t  *tc = data;

    (void) log;

    ngx_uint_t  i;

    for (i = 0; i < tc->n; i++) {
        tc->err[i] = (fdatasync(tc->fd[i]) == -1) ? errno : 0;
    }
}


/* back on the event loop: answer those it covers, start the next one */

static void
ngx_http_wa_sync_event(ngx_event_t *ev)
{
    int                           err;
    uint64_t                      done;
    ngx_int_t                     rc;
    ngx_uint_t                    i;
    ngx_queue_t                   ready, *q;
    ngx_http_wa_sync_wait_t      *w;
    ngx_http_wa_main_conf_t      *wmcf;
    ngx_http_wa_sync_task_ctx_t  *tc;

    wmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_http_wa_module);

    tc = ((ngx_thread_task_t *) wmcf->sync_task)->ctx;

    wmcf->sync_busy = 0;
    done = wmcf->sync_started;

    if (wmcf->sync_timer.timer_set) {
        ngx_del_timer(&wmcf->sync_timer);
    }

    for (i = 0; i < tc->n; i++) {
        close(tc->fd[i]);

        if (tc->err[i]) {
            wmcf->sync_failures++;
            ngx_log_error(NGX_LOG_CRIT, ev->log, tc->err[i],
                          "wa_ring \"%V\": CRITICAL: fdatasync failed after "
                          "%M ms: records are not on disk, their requests "
                          "are answered 503 and nothing is sent; check the "
                          "disk under the ring", &wmcf->ring_path,
                          ngx_current_msec - tc->start);
        }
    }

    /* taken off first: a handler may register a new waiter */
    ngx_queue_init(&ready);

    while (!ngx_queue_empty(&wmcf->sync_waiters)) {
        q = ngx_queue_head(&wmcf->sync_waiters);
        w = ngx_queue_data(q, ngx_http_wa_sync_wait_t, queue);

        if (w->gen > done) {
            break;
        }

        ngx_queue_remove(q);
        ngx_queue_insert_tail(&ready, q);
    }

    while (!ngx_queue_empty(&ready)) {
        q = ngx_queue_head(&ready);
        w = ngx_queue_data(q, ngx_http_wa_sync_wait_t, queue);
        ngx_queue_remove(q);
        w->queued = 0;

        /* synced only if the file its records went into was */
        err = -1;

        for (i = 0; i < tc->n; i++) {
            if (tc->epoch[i] == w->epoch) {
                err = tc->err[i];
            }
        }

        rc = (err == 0) ? NGX_OK : NGX_ERROR;

        if (err == -1) {
            ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                          "wa_ring sync: the ring file was closed before "
                          "its records were synced, answering 503");
        }

        w->handler(w, rc);
    }

    tc->n = 0;

    if (!ngx_queue_empty(&wmcf->sync_waiters) && !wmcf->sync_post.posted) {
        ngx_post_event(&wmcf->sync_post, &ngx_posted_events);
    }
}


static void
ngx_http_wa_sync_fail_all(ngx_http_wa_main_conf_t *wmcf, ngx_int_t rc)
{
    ngx_queue_t              *q;
    ngx_http_wa_sync_wait_t  *w;

    while (!ngx_queue_empty(&wmcf->sync_waiters)) {
        q = ngx_queue_head(&wmcf->sync_waiters);
        w = ngx_queue_data(q, ngx_http_wa_sync_wait_t, queue);
        ngx_queue_remove(q);
        w->queued = 0;
        w->handler(w, rc);
    }
}


static void
ngx_http_wa_sync_slow(ngx_event_t *ev)
{
    ngx_http_wa_main_conf_t      *wmcf;
    ngx_http_wa_sync_task_ctx_t  *tc;

    wmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_http_wa_module);
    tc = ((ngx_thread_task_t *) wmcf->sync_task)->ctx;

    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "wa_ring \"%V\": fdatasync has taken %M ms so far, "
                  "webhooks and sends wait for it",
                  &wmcf->ring_path, ngx_current_msec - tc->start);

    ngx_add_timer(ev, NGX_HTTP_WA_SYNC_SLOW * 10);
}


/* the worker exits: who still waits gets NGX_ABORT (a send records that
 * it was not attempted) */

void
ngx_http_wa_sync_exit_process(ngx_http_wa_main_conf_t *wmcf)
{
    if (wmcf->sync_task == NULL) {
        return;
    }

    if (wmcf->sync_post.posted) {
        ngx_delete_posted_event(&wmcf->sync_post);
    }

    ngx_http_wa_sync_fail_all(wmcf, NGX_ABORT);
}


#else /* !NGX_THREADS */


char *
ngx_http_wa_sync_conf(ngx_conf_t *cf, ngx_http_wa_main_conf_t *wmcf,
    ngx_str_t *pool_name)
{
    return "sync=on needs nginx built --with-threads";
}


ngx_int_t
ngx_http_wa_sync_init_process(ngx_cycle_t *cycle,
    ngx_http_wa_main_conf_t *wmcf)
{
    ngx_queue_init(&wmcf->sync_waiters);
    return NGX_OK;
}


ngx_int_t
ngx_http_wa_sync_wait(ngx_http_wa_main_conf_t *wmcf, ngx_pool_t *pool,
    ngx_http_wa_sync_wait_t *w)
{
    return NGX_ERROR;
}


void
ngx_http_wa_sync_exit_process(ngx_http_wa_main_conf_t *wmcf)
{
}


void
ngx_http_wa_sync_detach(ngx_http_wa_main_conf_t *wmcf)
{
}

#endif
