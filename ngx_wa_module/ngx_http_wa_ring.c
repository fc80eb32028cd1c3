/*
 * ngx_http_wa_ring: the ring in nginx. The master creates the file; each
 * worker maps it, checks it is still the file it mapped, and publishes
 * records into it; a ring that is missing, replaced or damaged makes the
 * handlers answer 503 until a valid file is back.
 */

#include "ngx_http_wa_module.h"
#include "wa_send_parse.h"

#include <sys/stat.h>


#define NGX_HTTP_WA_RING_CHECK  1000   /* ms between ring file checks */


static void ngx_http_wa_ring_own(ngx_cycle_t *cycle,
    ngx_http_wa_main_conf_t *wmcf, wa_ring_t *ring, mode_t mode);
static ngx_int_t ngx_http_wa_ring_attach(ngx_cycle_t *cycle,
    ngx_http_wa_main_conf_t *wmcf);
static void ngx_http_wa_ring_check_handler(ngx_event_t *ev);
static void ngx_http_wa_ring_detach(ngx_http_wa_main_conf_t *wmcf);


/*
 * The master creates the ring file once, owned by the worker user, before
 * workers start; workers map it themselves. "nginx -t" only validates an
 * existing file: testing a configuration must not create shared state.
 */

ngx_int_t
ngx_http_wa_ring_create(ngx_cycle_t *cycle, ngx_http_wa_main_conf_t *wmcf)
{
    int        flags;
    char       err[WA_RING_ERR_LEN];
    mode_t     mode;
    wa_ring_t  ring;

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


/*
 * Each worker maps the ring itself and checks every second that the file
 * is still the one it mapped.
 */

void
ngx_http_wa_ring_init_process(ngx_cycle_t *cycle,
    ngx_http_wa_main_conf_t *wmcf)
{
    ngx_event_t  *ev;

    (void) ngx_http_wa_ring_attach(cycle, wmcf);

    /* the timer event's data must look like a connection for debug logs */
    wmcf->ring_check_conn.fd = (ngx_socket_t) -1;

    ev = &wmcf->ring_check;
    ev->handler = ngx_http_wa_ring_check_handler;
    ev->data = &wmcf->ring_check_conn;
    ev->log = cycle->log;
    ev->cancelable = 1;

    ngx_add_timer(ev, NGX_HTTP_WA_RING_CHECK);
}


void
ngx_http_wa_ring_exit_process(ngx_http_wa_main_conf_t *wmcf)
{
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
    wmcf->ring_epoch++;

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

        ngx_http_wa_ring_detach(wmcf);
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

    ngx_http_wa_ring_detach(wmcf);

    return 0;
}


/*
 * Records published in the file before it was found damaged still wait
 * for their sync (sync=on), and wa-writer drains a deleted file before it
 * lets go: the sync keeps the file open for them.
 */

static void
ngx_http_wa_ring_detach(ngx_http_wa_main_conf_t *wmcf)
{
    ngx_http_wa_sync_detach(wmcf);

    wa_ring_close(&wmcf->ring);
    wmcf->ring_ok = 0;
}


/* the head every record of a send, a mark or an upload starts with */

void
ngx_http_wa_record_init(wa_record_t *rec, uint16_t type, const char *local_id,
    ngx_str_t *business, ngx_str_t *phone_number_id)
{
    ngx_memzero(rec, sizeof(wa_record_t));
    rec->type = type;

    wa_record_set(rec, WA_F_LOCAL_ID, local_id);
    rec->f[WA_F_BUSINESS].data = (char *) business->data;
    rec->f[WA_F_BUSINESS].len = business->len;

    if (phone_number_id != NULL) {
        rec->f[WA_F_PHONE_NUMBER_ID].data = (char *) phone_number_id->data;
        rec->f[WA_F_PHONE_NUMBER_ID].len = phone_number_id->len;
    }
}


void
ngx_http_wa_record_error(wa_record_t *rec, wa_send_res_t *res)
{
    if (res->ok) {
        return;
    }

    wa_record_set(rec, WA_F_ERROR_CODE,
                  res->error_code[0] ? res->error_code : NULL);
    wa_record_set(rec, WA_F_ERROR_TITLE, res->error_title);
    wa_record_set(rec, WA_F_ERROR_DETAIL,
                  res->error_detail[0] ? res->error_detail : NULL);
    wa_record_set(rec, WA_F_FBTRACE_ID,
                  res->fbtrace_id[0] ? res->fbtrace_id : NULL);
    wa_record_set(rec, WA_F_RETRYABLE, res->retryable ? "1" : "0");
}


void
ngx_http_wa_outcome_lost(ngx_log_t *log, const char *what,
    const char *local_id, const char *status, const char *id_name,
    const char *id, const char *settled)
{
    ngx_log_error(NGX_LOG_CRIT, log, 0,
                  "wa %s %s: CRITICAL: outcome \"%s\" (%s %s) not recorded, "
                  "the ring refused it: its row stays \"pending\"%s",
                  what, local_id, status, id_name, id ? id : "-", settled);
}


ngx_int_t
ngx_http_wa_publish(ngx_http_wa_main_conf_t *wmcf, ngx_log_t *log,
    wa_record_t *rec, ngx_uint_t opens)
{
    int     rc;
    size_t  size;

    if (!ngx_http_wa_ring_usable(wmcf, log)) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "wa: ring unavailable, refusing a %s record",
                      wa_record_type_name(rec->type));
        return NGX_DECLINED;
    }

    rc = wa_record_put(&wmcf->ring, rec,
                       opens ? wa_ring_keep(&wmcf->ring) : 0);

    if (rc == WA_RING_OK) {
        return NGX_OK;
    }

    size = wa_record_size(rec);

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
                  "wa: ring %s (%uz byte %s record%s), refused",
                  rc == WA_RING_FULL ? "full" : "refused a too big record",
                  size, wa_record_type_name(rec->type),
                  (rc == WA_RING_FULL && opens)
                  ? "; the last sixteenth is kept for outcomes" : "");

    return NGX_BUSY;
}
