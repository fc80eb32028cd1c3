/*
 * ngx_http_wa_claim: client_ref across hosts, PostgreSQL the arbiter.
 *
 * The idempotency zone (ngx_http_wa_idem.c) holds a client_ref per nginx
 * host; a load balancer that sends the same key to two hosts would have
 * both call the provider. With wa_send_idempotency_db, a send with a
 * client_ref first claims it in wa_send_claim (sql/functions/claims.sql):
 * one claim wins, on whichever host; the others get its answer once it
 * has one, 409 while it is in flight, and the same "unknown" a local
 * replay gives once it outlived its life. The claim mirrors the zone's
 * rules: a refused attempt may be attempted again, under the same id.
 *
 * libpq runs on nginx's event loop the way libcurl does: its asynchronous
 * calls (PQconnectStart / PQconnectPoll, PQsendQueryParams, PQflush,
 * PQconsumeInput), the socket wrapped in an nginx connection registered
 * level-triggered while libpq wants it, every wait bounded by a timer.
 * Nothing here blocks: the conninfo must name its host by address (or a
 * socket directory), since libpq resolves host names synchronously; that
 * is checked when the configuration is read.
 *
 * One connection per worker, one query at a time, in order: claims and
 * the ends of claimed sends share the queue. A connection that fails
 * fails what it holds (the sends answer 503, nothing sent) and is made
 * again at the next claim, at most once a second.
 */

#include "ngx_http_wa_claim.h"
#include "ngx_http_wa_idem.h"

#include <ngx_event.h>
#include <arpa/inet.h>
#include <libpq-fe.h>


#define NGX_HTTP_WA_CLAIM_RETRY   1000     /* ms between connects */


typedef enum {
    NGX_HTTP_WA_CLAIMDB_DOWN = 0,
    NGX_HTTP_WA_CLAIMDB_CONNECTING,
    NGX_HTTP_WA_CLAIMDB_IDLE,
    NGX_HTTP_WA_CLAIMDB_BUSY
} ngx_http_wa_claimdb_state_e;


typedef struct {
    PGconn                     *pg;
    ngx_connection_t           *c;          /* wraps PQsocket() */
    ngx_http_wa_claimdb_state_e state;
    ngx_uint_t                  writing;    /* the query is not all out */
    ngx_queue_t                 ops;        /* the head is in flight */
    ngx_event_t                 timer;
    ngx_connection_t            timer_conn;
    ngx_msec_t                  down_since;
    ngx_log_t                  *log;
    char                       *conninfo;
    ngx_msec_t                  timeout;
    char                        host[NGX_MAXHOSTNAMELEN + 24];
} ngx_http_wa_claimdb_t;


/* one query: a claim (cl set) or the end of a claimed send */
typedef struct {
    ngx_queue_t                 queue;
    ngx_http_wa_claim_t        *cl;         /* told when done, or NULL */
    ngx_uint_t                  end;        /* the end of a claimed send */
    const char                 *sql;
    int                         nparams;
    char                       *params[7];   /* NULL: an SQL NULL */
    PGresult                   *res;
} ngx_http_wa_claim_op_t;


static const char  ngx_http_wa_claim_sql[] =
    "SELECT result, local_id, attempt, http_status, answer "
    "FROM wa_send_claim($1::bigint, $2, $3, $4, $5::integer)";

static const char  ngx_http_wa_claim_end_sql[] =
    "SELECT wa_send_claim_end($1::bigint, $2, $3, $4::integer, $5, $6, "
    "$7::integer)";


static ngx_int_t ngx_http_wa_claimdb_connect(ngx_http_wa_claimdb_t *db);
static void ngx_http_wa_claimdb_handler(ngx_event_t *ev);
static void ngx_http_wa_claimdb_timeout(ngx_event_t *ev);
static void ngx_http_wa_claimdb_poll(ngx_http_wa_claimdb_t *db);
static void ngx_http_wa_claimdb_io(ngx_http_wa_claimdb_t *db);
static void ngx_http_wa_claimdb_next(ngx_http_wa_claimdb_t *db);
static ngx_int_t ngx_http_wa_claimdb_want(ngx_http_wa_claimdb_t *db,
    ngx_uint_t read, ngx_uint_t write);
static ngx_int_t ngx_http_wa_claimdb_wrap(ngx_http_wa_claimdb_t *db);
static void ngx_http_wa_claimdb_unwrap(ngx_http_wa_claimdb_t *db);
static void ngx_http_wa_claimdb_fail(ngx_http_wa_claimdb_t *db,
    const char *what);
static void ngx_http_wa_claim_complete(ngx_http_wa_claimdb_t *db,
    ngx_http_wa_claim_op_t *op);
static ngx_http_wa_claim_op_t *ngx_http_wa_claim_op(ngx_uint_t n,
    const char *sql, ngx_log_t *log);
static void ngx_http_wa_claim_op_free(ngx_http_wa_claim_op_t *op);
static ngx_int_t ngx_http_wa_claim_param(ngx_http_wa_claim_op_t *op,
    ngx_uint_t i, u_char *data, size_t len, ngx_log_t *log);
static u_char *ngx_http_wa_claim_line(const char *msg);


/* ---- configuration --------------------------------------------------- */


/*
 * wa_send_idempotency_db CONNINFO;
 *
 * Parsed by libpq now, so a typo fails nginx -t; a host name is refused:
 * libpq would resolve it with a blocking call in the worker.
 */

char *
ngx_http_wa_claim_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_wa_main_conf_t *wmcf = conf;

    char              *err, one[256];
    size_t             len;
    ngx_str_t         *value;
    ngx_uint_t         has_addr;
    const char        *host, *p, *end;
    struct in6_addr    a6;
    PQconninfoOption  *opts, *o;

    if (wmcf->claim_conninfo.len) {
        return "is duplicate";
    }

    value = cf->args->elts;
    wmcf->claim_conninfo = value[1];

    /* NUL-terminated by the configuration parser */
    err = NULL;
    opts = PQconninfoParse((char *) value[1].data, &err);

    if (opts == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\": not a libpq connection string: %s",
                           &cmd->name, err ? err : "out of memory");
        if (err) {
            PQfreemem(err);
        }
        return NGX_CONF_ERROR;
    }

    host = NULL;
    has_addr = 0;

    for (o = opts; o->keyword; o++) {
        if (o->val == NULL || o->val[0] == '\0') {
            continue;
        }

        if (ngx_strcmp(o->keyword, "hostaddr") == 0) {
            has_addr = 1;
        }

        if (ngx_strcmp(o->keyword, "host") == 0) {
            host = o->val;
        }
    }

    /* host: comma-separated, each an address or an absolute directory */
    for (p = host; !has_addr && p != NULL && *p; p = end + (*end == ',')) {
        end = p + strcspn(p, ",");
        len = ngx_min((size_t) (end - p), sizeof(one) - 1);
        ngx_memcpy(one, p, len);
        one[len] = '\0';

        if (one[0] != '/' && inet_pton(AF_INET, one, &a6) != 1
            && inet_pton(AF_INET6, one, &a6) != 1)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\": host \"%s\" is a name, which libpq "
                               "resolves with a blocking call: give its "
                               "address (host=10.0.0.5, or hostaddr=) or a "
                               "socket directory", &cmd->name, one);
            PQconninfoFree(opts);
            return NGX_CONF_ERROR;
        }
    }

    PQconninfoFree(opts);

    return NGX_CONF_OK;
}


/* ---- the worker's connection ------------------------------------------- */


ngx_int_t
ngx_http_wa_claim_init_process(ngx_cycle_t *cycle,
    ngx_http_wa_main_conf_t *wmcf)
{
    size_t                  n;
    ngx_http_wa_claimdb_t  *db;

    if (wmcf->claim_conninfo.len == 0) {
        return NGX_OK;
    }

    db = ngx_pcalloc(cycle->pool, sizeof(ngx_http_wa_claimdb_t));
    if (db == NULL) {
        return NGX_ERROR;
    }

    db->log = cycle->log;
    db->conninfo = (char *) wmcf->claim_conninfo.data;
    db->timeout = wmcf->claim_timeout;
    ngx_queue_init(&db->ops);

    /* who claimed, for people reading wa_send_claim: never an identity */
    n = ngx_min(ngx_strlen(cycle->hostname.data), NGX_MAXHOSTNAMELEN);
    ngx_sprintf((u_char *) db->host, "%*s/%016xL%Z", n,
                cycle->hostname.data, wmcf->send_nonce);

    db->timer_conn.fd = (ngx_socket_t) -1;
    db->timer_conn.data = db;
    db->timer.data = &db->timer_conn;
    db->timer.handler = ngx_http_wa_claimdb_timeout;
    db->timer.log = cycle->log;
    db->timer.cancelable = 1;

    wmcf->claimdb = db;

    return NGX_OK;
}


void
ngx_http_wa_claim_exit_process(ngx_http_wa_main_conf_t *wmcf)
{
    ngx_http_wa_claimdb_t  *db;

    db = wmcf->claimdb;
    if (db == NULL) {
        return;
    }

    /* claims still waiting answer 503: their sends are not made */
    ngx_http_wa_claimdb_fail(db, "nginx is stopping");

    if (db->timer.timer_set) {
        ngx_del_timer(&db->timer);
    }

    wmcf->claimdb = NULL;
}


/* ---- claims -------------------------------------------------------------- */


ngx_int_t
ngx_http_wa_claim_begin(ngx_http_wa_main_conf_t *wmcf, ngx_http_wa_claim_t *cl)
{
    u_char                   life[NGX_TIME_T_LEN];
    ngx_http_wa_claimdb_t   *db;
    ngx_http_wa_claim_op_t  *op;

    db = wmcf->claimdb;

    op = ngx_http_wa_claim_op(5, ngx_http_wa_claim_sql, db->log);
    if (op == NULL) {
        return NGX_ERROR;
    }

    op->cl = cl;

    if (ngx_http_wa_claim_param(op, 0, cl->business.data, cl->business.len,
                                db->log) != NGX_OK
        || ngx_http_wa_claim_param(op, 1, cl->client_ref.data,
                                   cl->client_ref.len, db->log) != NGX_OK
        || ngx_http_wa_claim_param(op, 2, (u_char *) cl->local_id,
                                   ngx_strlen(cl->local_id), db->log)
           != NGX_OK
        || ngx_http_wa_claim_param(op, 3, (u_char *) db->host,
                                   ngx_strlen(db->host), db->log) != NGX_OK
        || ngx_http_wa_claim_param(op, 4, life,
                                   ngx_sprintf(life, "%T", cl->life) - life,
                                   db->log) != NGX_OK)
    {
        ngx_http_wa_claim_op_free(op);
        return NGX_ERROR;
    }

    /* a database just found down is not tried again for a second: the
     * send answers 503 at once instead of each waiting for a timeout */
    if (db->state == NGX_HTTP_WA_CLAIMDB_DOWN && db->down_since
        && ngx_current_msec - db->down_since < NGX_HTTP_WA_CLAIM_RETRY)
    {
        ngx_http_wa_claim_op_free(op);
        return NGX_ERROR;
    }

    ngx_queue_insert_tail(&db->ops, &op->queue);

    if (db->state == NGX_HTTP_WA_CLAIMDB_DOWN) {
        if (ngx_http_wa_claimdb_connect(db) != NGX_OK) {
            ngx_queue_remove(&op->queue);
            ngx_http_wa_claim_op_free(op);
            ngx_http_wa_claimdb_fail(db, "cannot connect");
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    if (db->state == NGX_HTTP_WA_CLAIMDB_IDLE) {
        ngx_http_wa_claimdb_next(db);
    }

    return NGX_OK;
}


void
ngx_http_wa_claim_end(ngx_http_wa_main_conf_t *wmcf, ngx_str_t *business,
    ngx_str_t *client_ref, const char *local_id, ngx_uint_t status,
    ngx_str_t *answer, u_char verdict, ngx_uint_t attempt,
    ngx_http_wa_claim_t *cl)
{
    u_char                   st[NGX_INT_T_LEN], at[NGX_INT_T_LEN];
    ngx_http_wa_claimdb_t   *db;
    ngx_http_wa_claim_op_t  *op;

    db = wmcf->claimdb;

    op = ngx_http_wa_claim_op(7, ngx_http_wa_claim_end_sql, db->log);
    if (op == NULL) {
        goto lost;
    }

    op->cl = cl;
    op->end = 1;

    if (ngx_http_wa_claim_param(op, 0, business->data, business->len,
                                db->log) != NGX_OK
        || ngx_http_wa_claim_param(op, 1, client_ref->data, client_ref->len,
                                   db->log) != NGX_OK
        || ngx_http_wa_claim_param(op, 2, (u_char *) local_id,
                                   ngx_strlen(local_id), db->log) != NGX_OK
        || ngx_http_wa_claim_param(op, 3, st,
                                   ngx_sprintf(st, "%ui", status) - st,
                                   db->log) != NGX_OK
        || (answer && answer->len
            && ngx_http_wa_claim_param(op, 4, answer->data, answer->len,
                                       db->log) != NGX_OK)
        || ngx_http_wa_claim_param(op, 5, &verdict, verdict ? 1 : 0,
                                   db->log) != NGX_OK
        || (attempt
            && ngx_http_wa_claim_param(op, 6, at,
                                       ngx_sprintf(at, "%ui", attempt) - at,
                                       db->log) != NGX_OK))
    {
        ngx_http_wa_claim_op_free(op);
        goto lost;
    }

    ngx_queue_insert_tail(&db->ops, &op->queue);

    if (db->state == NGX_HTTP_WA_CLAIMDB_DOWN) {
        if (ngx_http_wa_claimdb_connect(db) != NGX_OK) {
            ngx_http_wa_claimdb_fail(db, "cannot connect");
        }

        return;
    }

    if (db->state == NGX_HTTP_WA_CLAIMDB_IDLE) {
        ngx_http_wa_claimdb_next(db);
    }

    return;

lost:

    ngx_log_error(NGX_LOG_ERR, db->log, 0,
                  "wa send %s: the end of its client_ref claim was not "
                  "recorded (out of memory): other hosts answer 409, then "
                  "\"unknown\" once its life is over", local_id);

    if (cl) {
        cl->result = NGX_HTTP_WA_CLAIM_ERROR;
        cl->done(cl);
    }
}


/* ---- the connection's life ----------------------------------------------- */


static ngx_int_t
ngx_http_wa_claimdb_connect(ngx_http_wa_claimdb_t *db)
{
    db->pg = PQconnectStart(db->conninfo);

    if (db->pg == NULL || PQstatus(db->pg) == CONNECTION_BAD) {
        ngx_log_error(NGX_LOG_ERR, db->log, 0,
                      "wa_send_idempotency_db: cannot connect: %s",
                      db->pg ? ngx_http_wa_claim_line(PQerrorMessage(db->pg))
                             : (u_char *) "out of memory");
        return NGX_ERROR;
    }

    if (ngx_http_wa_claimdb_wrap(db) != NGX_OK) {
        return NGX_ERROR;
    }

    db->state = NGX_HTTP_WA_CLAIMDB_CONNECTING;
    ngx_add_timer(&db->timer, db->timeout);

    /* as libpq's docs say: poll as if the last answer was "writing" */
    if (ngx_http_wa_claimdb_want(db, 0, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_wa_claimdb_handler(ngx_event_t *ev)
{
    ngx_connection_t       *c;
    ngx_http_wa_claimdb_t  *db;

    c = ev->data;
    db = c->data;

    if (db->state == NGX_HTTP_WA_CLAIMDB_CONNECTING) {
        ngx_http_wa_claimdb_poll(db);
        return;
    }

    ngx_http_wa_claimdb_io(db);
}


static void
ngx_http_wa_claimdb_timeout(ngx_event_t *ev)
{
    ngx_connection_t       *c;
    ngx_http_wa_claimdb_t  *db;

    c = ev->data;
    db = c->data;

    ngx_http_wa_claimdb_fail(db, "no answer within "
                             "wa_send_idempotency_db_timeout");
}


static void
ngx_http_wa_claimdb_poll(ngx_http_wa_claimdb_t *db)
{
    PostgresPollingStatusType  st;

    st = PQconnectPoll(db->pg);

    /* libpq may try the next host of a list on a new socket */
    if (st != PGRES_POLLING_FAILED && PQsocket(db->pg) != db->c->fd) {
        ngx_http_wa_claimdb_unwrap(db);

        if (ngx_http_wa_claimdb_wrap(db) != NGX_OK) {
            ngx_http_wa_claimdb_fail(db, "out of connections");
            return;
        }
    }

    switch (st) {

    case PGRES_POLLING_READING:
        (void) ngx_http_wa_claimdb_want(db, 1, 0);
        return;

    case PGRES_POLLING_WRITING:
        (void) ngx_http_wa_claimdb_want(db, 0, 1);
        return;

    case PGRES_POLLING_OK:
        if (PQsetnonblocking(db->pg, 1) != 0) {
            ngx_http_wa_claimdb_fail(db, "cannot make it non-blocking");
            return;
        }

        ngx_log_error(NGX_LOG_INFO, db->log, 0,
                      "wa_send_idempotency_db: connected to %s port %s",
                      PQhost(db->pg), PQport(db->pg));

        db->down_since = 0;
        db->state = NGX_HTTP_WA_CLAIMDB_IDLE;
        ngx_del_timer(&db->timer);
        (void) ngx_http_wa_claimdb_want(db, 0, 0);
        ngx_http_wa_claimdb_next(db);
        return;

    default:
        ngx_http_wa_claimdb_fail(db, "cannot connect");
        return;
    }
}


/* send the head of the queue */

static void
ngx_http_wa_claimdb_next(ngx_http_wa_claimdb_t *db)
{
    ngx_http_wa_claim_op_t  *op;

    if (ngx_queue_empty(&db->ops)) {
        return;
    }

    op = ngx_queue_data(ngx_queue_head(&db->ops), ngx_http_wa_claim_op_t,
                        queue);

    if (PQsendQueryParams(db->pg, op->sql, op->nparams, NULL,
                          (const char * const *) op->params, NULL, NULL, 0)
        == 0)
    {
        ngx_http_wa_claimdb_fail(db, "cannot send the query");
        return;
    }

    db->state = NGX_HTTP_WA_CLAIMDB_BUSY;
    db->writing = 1;
    ngx_add_timer(&db->timer, db->timeout);

    /*
     * The rest from the event loop, never from here: a result read at once
     * (the server quicker than this worker, which a busy machine makes
     * likely) would call a claim's done() before ngx_http_wa_claim_begin()
     * returned to its caller.
     */
    if (ngx_http_wa_claimdb_want(db, 1, 1) != NGX_OK) {
        ngx_http_wa_claimdb_fail(db, "cannot watch its socket");
    }
}


static void
ngx_http_wa_claimdb_io(ngx_http_wa_claimdb_t *db)
{
    int                      rc;
    PGresult                *res;
    ngx_http_wa_claim_op_t  *op;

    if (db->state != NGX_HTTP_WA_CLAIMDB_BUSY) {
        /* idle: the server closed it, or told something; read it */
        if (db->pg && PQconsumeInput(db->pg) == 0) {
            ngx_http_wa_claimdb_fail(db, "connection lost");
        }

        return;
    }

    if (db->writing) {
        rc = PQflush(db->pg);

        if (rc == -1) {
            ngx_http_wa_claimdb_fail(db, "cannot send the query");
            return;
        }

        if (rc == 1) {
            (void) ngx_http_wa_claimdb_want(db, 1, 1);
            return;
        }

        db->writing = 0;
    }

    if (PQconsumeInput(db->pg) == 0) {
        ngx_http_wa_claimdb_fail(db, "connection lost");
        return;
    }

    op = ngx_queue_data(ngx_queue_head(&db->ops), ngx_http_wa_claim_op_t,
                        queue);

    while (!PQisBusy(db->pg)) {
        res = PQgetResult(db->pg);

        if (res == NULL) {
            /* the query is over */
            ngx_del_timer(&db->timer);
            ngx_queue_remove(&op->queue);
            db->state = NGX_HTTP_WA_CLAIMDB_IDLE;

            ngx_http_wa_claim_complete(db, op);

            if (db->state == NGX_HTTP_WA_CLAIMDB_IDLE) {
                if (ngx_queue_empty(&db->ops)) {
                    (void) ngx_http_wa_claimdb_want(db, 1, 0);
                    return;
                }

                ngx_http_wa_claimdb_next(db);
            }

            return;
        }

        if (op->res == NULL) {
            op->res = res;
        } else {
            PQclear(res);
        }
    }

    (void) ngx_http_wa_claimdb_want(db, 1, 0);
}


/* a query's result: a claim's verdict to its send, or an end's errors */

static void
ngx_http_wa_claim_complete(ngx_http_wa_claimdb_t *db,
    ngx_http_wa_claim_op_t *op)
{
    char                 *v;
    size_t                len;
    ngx_http_wa_claim_t  *cl;

    cl = op->cl;

    if (PQresultStatus(op->res) != PGRES_TUPLES_OK
        || PQntuples(op->res) != 1
        || (!op->end && PQnfields(op->res) != 5))
    {
        ngx_log_error(NGX_LOG_ERR, db->log, 0,
                      "wa_send_idempotency_db: %s failed: %s",
                      op->end ? "the end of a claim" : "a claim",
                      ngx_http_wa_claim_line(PQresultErrorMessage(op->res)));

        ngx_http_wa_claim_op_free(op);

        if (cl) {
            cl->result = NGX_HTTP_WA_CLAIM_ERROR;
            cl->done(cl);
        }

        return;
    }

    if (op->end) {
        ngx_http_wa_claim_op_free(op);

        if (cl) {
            cl->result = NGX_HTTP_WA_CLAIM_OURS;
            cl->done(cl);
        }

        return;
    }

    v = PQgetvalue(op->res, 0, 0);

    cl->result = ngx_strcmp(v, "ours") == 0 ? NGX_HTTP_WA_CLAIM_OURS
                 : ngx_strcmp(v, "answered") == 0 ? NGX_HTTP_WA_CLAIM_ANSWERED
                 : ngx_strcmp(v, "busy") == 0 ? NGX_HTTP_WA_CLAIM_BUSY
                 : ngx_strcmp(v, "interrupted") == 0
                   ? NGX_HTTP_WA_CLAIM_INTERRUPTED
                 : NGX_HTTP_WA_CLAIM_ERROR;

    v = PQgetvalue(op->res, 0, 1);
    len = ngx_strlen(v);

    if (len == 0 || len >= NGX_HTTP_WA_LOCAL_ID_LEN) {
        cl->result = NGX_HTTP_WA_CLAIM_ERROR;
    } else {
        ngx_memcpy(cl->local_id, v, len + 1);
    }

    cl->attempt = ngx_atoi((u_char *) PQgetvalue(op->res, 0, 2),
                           PQgetlength(op->res, 0, 2));

    if (cl->result == NGX_HTTP_WA_CLAIM_ANSWERED
        || cl->result == NGX_HTTP_WA_CLAIM_INTERRUPTED)
    {
        cl->status = ngx_atoi((u_char *) PQgetvalue(op->res, 0, 3),
                              PQgetlength(op->res, 0, 3));
        cl->answer.len = PQgetlength(op->res, 0, 4);
        cl->answer.data = ngx_pnalloc(cl->pool, cl->answer.len);

        if (cl->answer.data == NULL || cl->status == (ngx_uint_t) NGX_ERROR
            || cl->answer.len == 0)
        {
            cl->result = NGX_HTTP_WA_CLAIM_ERROR;
        } else {
            ngx_memcpy(cl->answer.data, PQgetvalue(op->res, 0, 4),
                       cl->answer.len);
        }
    }

    ngx_http_wa_claim_op_free(op);
    cl->done(cl);
}


/* the connection goes; what it held fails: claims answer 503 */

static void
ngx_http_wa_claimdb_fail(ngx_http_wa_claimdb_t *db, const char *what)
{
    ngx_queue_t             *q;
    ngx_http_wa_claim_t     *cl;
    ngx_http_wa_claim_op_t  *op;

    if (db->pg) {
        ngx_log_error(NGX_LOG_ERR, db->log, 0,
                      "wa_send_idempotency_db: %s: %s; sends with a "
                      "client_ref answer 503 until it is back", what,
                      ngx_http_wa_claim_line(PQerrorMessage(db->pg)));

        if (db->c) {
            ngx_http_wa_claimdb_unwrap(db);
        }

        PQfinish(db->pg);
        db->pg = NULL;
    }

    if (db->timer.timer_set) {
        ngx_del_timer(&db->timer);
    }

    db->state = NGX_HTTP_WA_CLAIMDB_DOWN;
    db->down_since = ngx_current_msec ? ngx_current_msec : 1;

    while (!ngx_queue_empty(&db->ops)) {
        q = ngx_queue_head(&db->ops);
        ngx_queue_remove(q);
        op = ngx_queue_data(q, ngx_http_wa_claim_op_t, queue);
        cl = op->cl;

        if (op->end) {
            ngx_log_error(NGX_LOG_ERR, db->log, 0,
                          "wa send %s: the end of its client_ref claim was "
                          "not recorded: other hosts answer 409, then "
                          "\"unknown\" once its life is over",
                          op->params[2]);
        }

        ngx_http_wa_claim_op_free(op);

        if (cl) {
            cl->result = NGX_HTTP_WA_CLAIM_ERROR;
            cl->done(cl);
        }
    }
}


/* ---- the socket ---------------------------------------------------------- */


static ngx_int_t
ngx_http_wa_claimdb_wrap(ngx_http_wa_claimdb_t *db)
{
    ngx_socket_t       s;
    ngx_connection_t  *c;

    s = PQsocket(db->pg);
    if (s == (ngx_socket_t) -1) {
        return NGX_ERROR;
    }

    c = ngx_get_connection(s, db->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = db;
    c->read->handler = ngx_http_wa_claimdb_handler;
    c->write->handler = ngx_http_wa_claimdb_handler;
    c->read->log = db->log;
    c->write->log = db->log;

    db->c = c;

    return NGX_OK;
}


/* libpq owns the descriptor and closes it: nginx lets go without closing */

static void
ngx_http_wa_claimdb_unwrap(ngx_http_wa_claimdb_t *db)
{
    ngx_connection_t  *c;

    c = db->c;
    db->c = NULL;

    /* libpq closes the socket itself when the server hangs up: the kernel
     * took it out of epoll already */
    ngx_http_wa_conn_release(c, !(db->pg && PQsocket(db->pg) == c->fd));
}


static ngx_int_t
ngx_http_wa_claimdb_want(ngx_http_wa_claimdb_t *db, ngx_uint_t read,
    ngx_uint_t write)
{
    if (ngx_http_wa_level_event(db->c->read, read, NGX_READ_EVENT) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_wa_level_event(db->c->write, write, NGX_WRITE_EVENT);
}


/* ---- queries ------------------------------------------------------------- */


static ngx_http_wa_claim_op_t *
ngx_http_wa_claim_op(ngx_uint_t n, const char *sql, ngx_log_t *log)
{
    ngx_http_wa_claim_op_t  *op;

    op = ngx_calloc(sizeof(ngx_http_wa_claim_op_t), log);
    if (op == NULL) {
        return NULL;
    }

    op->sql = sql;
    op->nparams = (int) n;

    return op;
}


/* a text parameter, NUL-terminated (NULL stays NULL: SQL NULL) */

static ngx_int_t
ngx_http_wa_claim_param(ngx_http_wa_claim_op_t *op, ngx_uint_t i,
    u_char *data, size_t len, ngx_log_t *log)
{
    if (len == 0) {
        return NGX_OK;
    }

    op->params[i] = ngx_alloc(len + 1, log);
    if (op->params[i] == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(op->params[i], data, len);
    op->params[i][len] = '\0';

    return NGX_OK;
}


static void
ngx_http_wa_claim_op_free(ngx_http_wa_claim_op_t *op)
{
    ngx_uint_t  i;

    for (i = 0; i < sizeof(op->params) / sizeof(op->params[0]); i++) {
        if (op->params[i]) {
            ngx_free(op->params[i]);
        }
    }

    if (op->res) {
        PQclear(op->res);
    }

    ngx_free(op);
}


/* libpq's messages span lines ("...\n\tIs the server running..."): one
 * log line per event */

static u_char *
ngx_http_wa_claim_line(const char *msg)
{
    u_char         *p, *last;
    static u_char   line[512];

    last = ngx_cpystrn(line, (u_char *) msg, sizeof(line));

    while (last > line && (last[-1] == '\n' || last[-1] == ' ')) {
        *--last = '\0';
    }

    for (p = line; p < last; p++) {
        if (*p == '\n' || *p == '\t' || *p == '\r') {
            *p = ' ';
        }
    }

    return line;
}
