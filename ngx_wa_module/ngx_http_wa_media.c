/*
 * ngx_http_wa_media: inbound media, fetched and served.
 *
 * wa_media_fetch: GET ?media_id=ID&phone_number_id=PNID, asked by the
 * fetcher (`wa-writer media`). The worker looks the media up at the Cloud
 * API with the channel's token, downloads it to a temporary file under
 * wa_media_path/tmp, hashing it as it arrives, and answers what it wrote:
 * the fetcher syncs, renames and records it. The token never leaves
 * nginx; the download runs on libcurl's multi interface like sends, and
 * writes to the file as data comes (as proxy temp files are written),
 * never holding the file in memory. A failure answers a reason word the
 * fetcher acts on: not_found, too_big, sha256_mismatch, no_space,
 * provider, timeout, local.
 *
 * wa_media_serve: GET a stored file by the relative path the fetcher
 * recorded (ab/<sha256>.<ext>), with the MIME type of its extension,
 * behind wa_send_key like the send API.
 */

#include "ngx_http_wa_module.h"
#include "wa_media_types.h"

#include <openssl/evp.h>
#include <cjson/cJSON.h>


#define NGX_HTTP_WA_MEDIA_ID_MAX   128
#define NGX_HTTP_WA_MEDIA_TMP      "tmp/"


typedef struct {
    ngx_http_wa_xfer_t         xfer;
    ngx_http_request_t        *r;          /* NULL: the client is gone */
    ngx_http_wa_loc_conf_t    *wlcf;
    ngx_http_wa_main_conf_t   *wmcf;
    ngx_http_wa_channel_t     *ch;
    ngx_log_t                 *log;
    ngx_http_wa_curl_conf_t    conf;       /* the location's, with
                                              wa_media_timeout */

    ngx_str_t                  media_id;
    char                      *auth;       /* never logged */
    ngx_uint_t                 downloading;

    /* from the lookup */
    u_char                     sha_want[32];
    ngx_uint_t                 has_sha;
    off_t                      size_want;  /* -1: not given */
    ngx_str_t                  mime;

    /* the download */
    ngx_fd_t                   fd;
    ngx_str_t                  path;       /* full, NUL-terminated */
    ngx_str_t                  rel;        /* tmp/..., for the answer */
    off_t                      got;
    EVP_MD_CTX                *md;
    ngx_err_t                  write_err;
    ngx_uint_t                 too_big;
} ngx_http_wa_media_ctx_t;


static ngx_int_t ngx_http_wa_media_access(ngx_http_request_t *r,
    ngx_uint_t methods);
static ngx_int_t ngx_http_wa_media_start(ngx_http_request_t *r,
    ngx_http_wa_media_ctx_t **pctx);
static void ngx_http_wa_media_cleanup(void *data);
static void ngx_http_wa_media_looked_up(ngx_http_wa_xfer_t *x);
static void ngx_http_wa_media_downloaded(ngx_http_wa_xfer_t *x);
static ngx_int_t ngx_http_wa_media_sink(ngx_http_wa_xfer_t *x, u_char *p,
    size_t len);
static ngx_int_t ngx_http_wa_media_lookup_parse(ngx_http_wa_media_ctx_t *ctx,
    char **url, ngx_uint_t *reason_status, const char **reason,
    const char **msg);
static ngx_int_t ngx_http_wa_media_open(ngx_http_wa_media_ctx_t *ctx);
static ngx_int_t ngx_http_wa_media_sha(ngx_str_t *s, u_char *out);
static void ngx_http_wa_media_fail(ngx_http_wa_media_ctx_t *ctx,
    ngx_uint_t status, const char *reason, const char *msg);
static void ngx_http_wa_media_answer(ngx_http_wa_media_ctx_t *ctx,
    ngx_uint_t status, u_char *body, size_t len);
static void ngx_http_wa_media_free(ngx_http_wa_media_ctx_t *ctx);
static ngx_int_t ngx_http_wa_media_id_ok(ngx_str_t *id);
static void ngx_http_wa_media_count(ngx_http_wa_media_ctx_t *ctx,
    ngx_uint_t ok);


/*
 * What both media locations check first: the method, no body, and
 * wa_send_key's X-WA-Key (allow/deny and auth_request ran before, in
 * their phases). NGX_DECLINED: go on; anything else is the handler's
 * answer (a refusal already sent returns what sending it returned).
 */

static ngx_int_t
ngx_http_wa_media_access(ngx_http_request_t *r, ngx_uint_t methods)
{
    ngx_int_t                rc;
    ngx_http_wa_loc_conf_t  *wlcf;

    if (!(r->method & methods)) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    wlcf = ngx_http_get_module_loc_conf(r, ngx_http_wa_module);

    if (wlcf->send_keys != NULL && !ngx_http_wa_key_ok(r, wlcf)) {
        return ngx_http_wa_reply_error(r, NGX_HTTP_UNAUTHORIZED,
                                       "X-WA-Key: missing or wrong");
    }

    return NGX_DECLINED;
}


/* ---- wa_media_fetch ---------------------------------------------------- */


ngx_int_t
ngx_http_wa_media_fetch_handler(ngx_http_request_t *r)
{
    ngx_int_t                 rc;
    ngx_http_wa_media_ctx_t  *ctx;

    rc = ngx_http_wa_media_access(r, NGX_HTTP_GET);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    ngx_http_wa_media_report(r);

    ctx = NULL;
    rc = ngx_http_wa_media_start(r, &ctx);

    if (rc != NGX_DONE) {
        if (ctx) {
            ngx_http_wa_media_free(ctx);
        }

        return rc;
    }

    r->main->count++;

    return NGX_DONE;
}


static ngx_int_t
ngx_http_wa_media_start(ngx_http_request_t *r, ngx_http_wa_media_ctx_t **pctx)
{
    u_char                   *url;
    size_t                    len;
    ngx_str_t                 id, pnid;
    ngx_pool_t               *pool;
    ngx_http_cleanup_t       *cln;
    ngx_http_wa_channel_t    *ch;
    ngx_http_wa_media_ctx_t  *ctx;
    ngx_http_wa_loc_conf_t   *wlcf;
    ngx_http_wa_main_conf_t  *wmcf;

    wlcf = ngx_http_get_module_loc_conf(r, ngx_http_wa_module);
    wmcf = ngx_http_get_module_main_conf(r, ngx_http_wa_module);

    if (ngx_http_arg(r, (u_char *) "report", 6, &id) == NGX_OK) {
        /* the fetcher's periodic report: counts taken above */
        return ngx_http_wa_reply_json(r, NGX_HTTP_OK,
                                      (u_char *) "{\"ok\":true}", 11);
    }

    if (ngx_http_arg(r, (u_char *) "media_id", 8, &id) != NGX_OK
        || ngx_http_wa_media_id_ok(&id) != NGX_OK)
    {
        return ngx_http_wa_reply_error(r, NGX_HTTP_BAD_REQUEST,
                                       "media_id: letters, digits, '.', "
                                       "'_' or '-', at most 128");
    }

    if (ngx_http_arg(r, (u_char *) "phone_number_id", 15, &pnid) != NGX_OK) {
        return ngx_http_wa_reply_error(r, NGX_HTTP_BAD_REQUEST,
                                       "phone_number_id: required");
    }

    ch = ngx_http_wa_channel_find(wlcf, pnid.data, pnid.len);
    if (ch == NULL) {
        return ngx_http_wa_reply_error(r, NGX_HTTP_BAD_REQUEST,
                                       "phone_number_id: no wa_channel "
                                       "has it");
    }

    /* the transfer may outlive the request (a client that goes away):
     * its memory is its own */
    pool = ngx_create_pool(4096, ngx_cycle->log);
    if (pool == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = ngx_pcalloc(pool, sizeof(ngx_http_wa_media_ctx_t));
    if (ctx == NULL) {
        ngx_destroy_pool(pool);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *pctx = ctx;

    ctx->xfer.pool = pool;
    ctx->xfer.data = ctx;
    ctx->xfer.done = ngx_http_wa_media_looked_up;
    ctx->wlcf = wlcf;
    ctx->wmcf = wmcf;
    ctx->ch = ch;
    ctx->log = ngx_cycle->log;
    ctx->fd = NGX_INVALID_FILE;
    ctx->size_want = -1;
    ctx->conf = wlcf->send;
    ctx->conf.timeout = wlcf->media_timeout;

    ctx->media_id.data = ngx_pstrdup(pool, &id);
    ctx->media_id.len = id.len;

    len = sizeof("Authorization: Bearer ") + ch->token.len;
    ctx->auth = ngx_pnalloc(pool, len);

    len = wlcf->api_base.len + 1 + id.len + 1;
    url = ngx_pnalloc(pool, len);

    if (ctx->media_id.data == NULL || ctx->auth == NULL || url == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_sprintf((u_char *) ctx->auth, "Authorization: Bearer %V%Z",
                &ch->token);
    (void) ngx_sprintf(url, "%V/%V%Z", &wlcf->api_base, &id);

    cln = ngx_http_cleanup_add(r, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_wa_curl_get(wmcf->curl, &ctx->xfer, (char *) url,
                             ctx->auth, &ctx->conf)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "wa media: media %V: could not start the lookup",
                      &ctx->media_id);
        return ngx_http_wa_reply_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "could not start the lookup");
    }

    cln->handler = ngx_http_wa_media_cleanup;
    cln->data = ctx;
    ctx->r = r;

    return NGX_DONE;
}


/* the request ends before the transfer (nginx terminated it): the
 * transfer goes on, answers nobody, and removes its file */

static void
ngx_http_wa_media_cleanup(void *data)
{
    ngx_http_wa_media_ctx_t *ctx = data;

    ctx->r = NULL;
}


static void
ngx_http_wa_media_looked_up(ngx_http_wa_xfer_t *x)
{
    ngx_http_wa_media_ctx_t *ctx = x->data;

    char        *url;
    const char  *reason, *msg;
    ngx_uint_t   status;

    if (x->exiting) {
        ngx_http_wa_media_free(ctx);
        return;
    }

    if (x->result != CURLE_OK) {
        ngx_log_error(NGX_LOG_ERR, ctx->log, 0,
                      "wa media: media %V: lookup failed: %s",
                      &ctx->media_id, x->error[0] ? x->error
                                      : curl_easy_strerror(x->result));
        ngx_http_wa_media_fail(ctx,
                               x->result == CURLE_OPERATION_TIMEDOUT
                               ? NGX_HTTP_GATEWAY_TIME_OUT
                               : NGX_HTTP_BAD_GATEWAY,
                               x->result == CURLE_OPERATION_TIMEDOUT
                               ? "timeout" : "provider",
                               "the media lookup failed");
        return;
    }

    if (ngx_http_wa_media_lookup_parse(ctx, &url, &status, &reason, &msg)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, ctx->log, 0,
                      "wa media: media %V: lookup answered %l: %s",
                      &ctx->media_id, x->status, msg);
        ngx_http_wa_media_fail(ctx, status, reason, msg);
        return;
    }

    if (ngx_http_wa_media_open(ctx) != NGX_OK) {
        ngx_http_wa_media_fail(ctx, ctx->write_err == NGX_ENOSPC
                               ? 507 : NGX_HTTP_INTERNAL_SERVER_ERROR,
                               ctx->write_err == NGX_ENOSPC
                               ? "no_space" : "local",
                               "cannot create the temporary file");
        return;
    }

    ctx->downloading = 1;
    x->done = ngx_http_wa_media_downloaded;
    x->sink = ngx_http_wa_media_sink;

    /* the download url is the provider's to give, and may be signed:
     * it is not logged, the media id says which */
    if (ngx_http_wa_curl_get(ctx->wmcf->curl, x, url, ctx->auth, &ctx->conf)
        != NGX_OK)
    {
        ngx_http_wa_media_fail(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR, "local",
                               "could not start the download");
    }
}


/*
 * The lookup's answer: {"url", "mime_type", "sha256", "file_size", "id"}.
 * A 404, or Meta's "does not exist" (code 100), is the media id gone for
 * good: not_found; a file_size over wa_media_max_size is too_big, known
 * before a byte is downloaded.
 */

static ngx_int_t
ngx_http_wa_media_lookup_parse(ngx_http_wa_media_ctx_t *ctx, char **url,
    ngx_uint_t *reason_status, const char **reason, const char **msg)
{
    ngx_http_wa_xfer_t  *x = &ctx->xfer;

    cJSON      *root, *u, *m, *s, *z, *err, *code;
    ngx_str_t   sha;
    ngx_int_t   rc;

    *reason_status = NGX_HTTP_BAD_GATEWAY;
    *reason = "provider";
    *msg = "the media lookup's answer is not usable";

    root = cJSON_ParseWithLength((char *) x->body, x->body_len);

    if (x->status != 200) {
        err = root ? cJSON_GetObjectItemCaseSensitive(root, "error") : NULL;
        code = err ? cJSON_GetObjectItemCaseSensitive(err, "code") : NULL;

        if (x->status == 404
            || (cJSON_IsNumber(code) && code->valueint == 100))
        {
            *reason_status = NGX_HTTP_NOT_FOUND;
            *reason = "not_found";
            *msg = "the provider does not know this media id (expired or "
                   "deleted)";
        } else {
            *msg = "the media lookup was refused";
        }

        cJSON_Delete(root);
        return NGX_ERROR;
    }

    u = root ? cJSON_GetObjectItemCaseSensitive(root, "url") : NULL;

    if (!cJSON_IsString(u)
        || (ngx_strncmp(u->valuestring, "https://", 8) != 0
            && ngx_strncmp(u->valuestring, "http://", 7) != 0))
    {
        cJSON_Delete(root);
        return NGX_ERROR;
    }

    rc = NGX_ERROR;

    *url = ngx_pnalloc(x->pool, ngx_strlen(u->valuestring) + 1);
    if (*url == NULL) {
        goto done;
    }

    ngx_cpystrn((u_char *) *url, (u_char *) u->valuestring,
                ngx_strlen(u->valuestring) + 1);

    m = cJSON_GetObjectItemCaseSensitive(root, "mime_type");
    if (cJSON_IsString(m)) {
        ctx->mime.len = ngx_strlen(m->valuestring);
        ctx->mime.data = ngx_pnalloc(x->pool, ctx->mime.len);
        if (ctx->mime.data == NULL) {
            goto done;
        }

        ngx_memcpy(ctx->mime.data, m->valuestring, ctx->mime.len);
    }

    s = cJSON_GetObjectItemCaseSensitive(root, "sha256");
    if (cJSON_IsString(s)) {
        sha.data = (u_char *) s->valuestring;
        sha.len = ngx_strlen(s->valuestring);

        if (ngx_http_wa_media_sha(&sha, ctx->sha_want) != NGX_OK) {
            *msg = "the media lookup's sha256 is neither hex nor base64";
            goto done;
        }

        ctx->has_sha = 1;
    }

    /* Meta sends file_size as a number; a string of digits is taken too */
    z = cJSON_GetObjectItemCaseSensitive(root, "file_size");
    if (cJSON_IsNumber(z) && z->valuedouble >= 0) {
        ctx->size_want = (off_t) z->valuedouble;

    } else if (cJSON_IsString(z)) {
        ctx->size_want = ngx_atoof((u_char *) z->valuestring,
                                   ngx_strlen(z->valuestring));
    }

    if (ctx->size_want > (off_t) ctx->wlcf->media_max_size) {
        *reason_status = NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
        *reason = "too_big";
        *msg = "the media is larger than wa_media_max_size";
        goto done;
    }

    rc = NGX_OK;

done:

    cJSON_Delete(root);
    return rc;
}


/* tmp/wa-<nonce>-<seq>.part under wa_media_path; tmp/ made if missing */

static ngx_int_t
ngx_http_wa_media_open(ngx_http_wa_media_ctx_t *ctx)
{
    u_char      *p;
    size_t       len;
    ngx_str_t   *dir;
    ngx_uint_t   tries;

    dir = &ctx->wlcf->media_path;
    len = dir->len + sizeof("/" NGX_HTTP_WA_MEDIA_TMP "wa--.part")
          + 2 * NGX_INT64_LEN;

    ctx->path.data = ngx_pnalloc(ctx->xfer.pool, len);
    if (ctx->path.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(ctx->path.data, "%V/", dir);
    ctx->rel.data = p;
    p = ngx_sprintf(p, NGX_HTTP_WA_MEDIA_TMP "wa-%016xL-%xi.part",
                    ctx->wmcf->send_nonce, ++ctx->wmcf->send_seq);
    ctx->rel.len = p - ctx->rel.data;
    ctx->path.len = p - ctx->path.data;
    *p = '\0';

    for (tries = 0; tries < 2; tries++) {
        ctx->fd = ngx_open_file(ctx->path.data, NGX_FILE_WRONLY,
                                NGX_FILE_CREATE_OR_OPEN | O_EXCL, 0640);

        if (ctx->fd != NGX_INVALID_FILE) {
            break;
        }

        ctx->write_err = ngx_errno;

        if (ctx->write_err != NGX_ENOENT || tries) {
            ngx_log_error(NGX_LOG_ERR, ctx->log, ctx->write_err,
                          "wa media: media %V: cannot create \"%V\"",
                          &ctx->media_id, &ctx->path);
            return NGX_ERROR;
        }

        /* the first fetch into a new directory */
        *(ctx->rel.data + sizeof(NGX_HTTP_WA_MEDIA_TMP) - 2) = '\0';

        if (ngx_create_dir(ctx->path.data, 0770) == NGX_FILE_ERROR
            && ngx_errno != NGX_EEXIST)
        {
            ctx->write_err = ngx_errno;
            ngx_log_error(NGX_LOG_ERR, ctx->log, ctx->write_err,
                          "wa media: cannot create \"%s\"", ctx->path.data);
            return NGX_ERROR;
        }

        *(ctx->rel.data + sizeof(NGX_HTTP_WA_MEDIA_TMP) - 2) = '/';
    }

    ctx->md = EVP_MD_CTX_new();

    if (ctx->md == NULL || EVP_DigestInit_ex(ctx->md, EVP_sha256(), NULL) != 1)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the download's bytes, as they arrive: to the file and the hash */

static ngx_int_t
ngx_http_wa_media_sink(ngx_http_wa_xfer_t *x, u_char *p, size_t len)
{
    ngx_http_wa_media_ctx_t *ctx = x->data;

    ssize_t  n;

    /* an error body is not the file: the status says what happened */
    if (x->easy) {
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
    }

    if (x->status != 200) {
        return NGX_OK;
    }

    if (ctx->got + (off_t) len > (off_t) ctx->wlcf->media_max_size) {
        ctx->too_big = 1;
        return NGX_ERROR;
    }

    EVP_DigestUpdate(ctx->md, p, len);
    ctx->got += len;

    while (len) {
        n = write(ctx->fd, p, len);

        if (n == -1) {
            if (ngx_errno == NGX_EINTR) {
                continue;
            }

            ctx->write_err = ngx_errno;
            return NGX_ERROR;
        }

        p += n;
        len -= n;
    }

    return NGX_OK;
}


static void
ngx_http_wa_media_downloaded(ngx_http_wa_xfer_t *x)
{
    ngx_http_wa_media_ctx_t *ctx = x->data;

    u_char        sha[32], *body, *p;
    size_t        len;
    unsigned int  n;

    if (x->exiting) {
        ngx_http_wa_media_free(ctx);
        return;
    }

    if (ctx->write_err) {
        ngx_log_error(NGX_LOG_ERR, ctx->log, ctx->write_err,
                      "wa media: media %V: writing \"%V\" failed",
                      &ctx->media_id, &ctx->path);
        ngx_http_wa_media_fail(ctx, ctx->write_err == NGX_ENOSPC
                                    || ctx->write_err == EDQUOT
                               ? 507 : NGX_HTTP_INTERNAL_SERVER_ERROR,
                               ctx->write_err == NGX_ENOSPC
                               || ctx->write_err == EDQUOT
                               ? "no_space" : "local",
                               "cannot write the temporary file");
        return;
    }

    if (ctx->too_big) {
        ngx_log_error(NGX_LOG_ERR, ctx->log, 0,
                      "wa media: media %V: more than wa_media_max_size "
                      "bytes, download ended", &ctx->media_id);
        ngx_http_wa_media_fail(ctx, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                               "too_big", "the media is larger than "
                               "wa_media_max_size");
        return;
    }

    if (x->result != CURLE_OK || x->status != 200) {
        ngx_log_error(NGX_LOG_ERR, ctx->log, 0,
                      "wa media: media %V: download failed: HTTP %l, %s",
                      &ctx->media_id, x->status,
                      x->error[0] ? x->error : curl_easy_strerror(x->result));
        ngx_http_wa_media_fail(ctx,
                               x->result == CURLE_OPERATION_TIMEDOUT
                               ? NGX_HTTP_GATEWAY_TIME_OUT
                               : NGX_HTTP_BAD_GATEWAY,
                               x->result == CURLE_OPERATION_TIMEDOUT
                               ? "timeout" : "provider",
                               "the download failed");
        return;
    }

    EVP_DigestFinal_ex(ctx->md, sha, &n);

    if ((ctx->has_sha && ngx_memcmp(sha, ctx->sha_want, 32) != 0)
        || (ctx->size_want >= 0 && ctx->size_want != ctx->got))
    {
        ngx_log_error(NGX_LOG_ERR, ctx->log, 0,
                      "wa media: media %V: %O bytes whose sha256 or size "
                      "is not the lookup's", &ctx->media_id, ctx->got);
        ngx_http_wa_media_fail(ctx, NGX_HTTP_BAD_GATEWAY, "sha256_mismatch",
                               "the file is not the one the lookup "
                               "announced");
        return;
    }

    if (ngx_close_file(ctx->fd) == NGX_FILE_ERROR) {
        ctx->fd = NGX_INVALID_FILE;
        ctx->write_err = ngx_errno;
        ngx_http_wa_media_fail(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR, "local",
                               "cannot close the temporary file");
        return;
    }

    ctx->fd = NGX_INVALID_FILE;

    len = sizeof("{\"file\":\"\",\"size\":,\"sha256\":\"\",\"mime_type\":\"\"}")
          + ctx->rel.len + NGX_OFF_T_LEN + 64
          + ngx_escape_json(NULL, ctx->mime.data, ctx->mime.len)
          + ctx->mime.len;

    body = ngx_pnalloc(x->pool, len);
    if (body == NULL) {
        ngx_http_wa_media_fail(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR, "local",
                               "out of memory");
        return;
    }

    p = ngx_sprintf(body, "{\"file\":\"%V\",\"size\":%O,\"sha256\":\"",
                    &ctx->rel, ctx->got);
    p = ngx_hex_dump(p, sha, 32);
    p = ngx_cpymem(p, "\",\"mime_type\":\"", 15);
    p = (u_char *) ngx_escape_json(p, ctx->mime.data, ctx->mime.len);
    p = ngx_cpymem(p, "\"}", 2);

    ngx_log_error(NGX_LOG_INFO, ctx->log, 0,
                  "wa media: media %V: %O bytes downloaded", &ctx->media_id,
                  ctx->got);

    /* the file is the fetcher's now */
    ctx->path.len = 0;

    ngx_http_wa_media_count(ctx, 1);
    ngx_http_wa_media_answer(ctx, NGX_HTTP_OK, body, p - body);
}


/* the sha256 a lookup gives: 64 hex digits, or base64 of 32 bytes */

static ngx_int_t
ngx_http_wa_media_sha(ngx_str_t *s, u_char *out)
{
    u_char      buf[48];
    ngx_str_t   dst;
    ngx_int_t   hi, lo;
    ngx_uint_t  i;

    if (s->len == 64) {
        for (i = 0; i < 32; i++) {
            hi = ngx_hextoi(&s->data[2 * i], 1);
            lo = ngx_hextoi(&s->data[2 * i + 1], 1);

            if (hi == NGX_ERROR || lo == NGX_ERROR) {
                return NGX_ERROR;
            }

            out[i] = (u_char) (hi << 4 | lo);
        }

        return NGX_OK;
    }

    if (s->len != 44) {
        return NGX_ERROR;
    }

    dst.data = buf;

    if (ngx_decode_base64(&dst, s) != NGX_OK || dst.len != 32) {
        return NGX_ERROR;
    }

    ngx_memcpy(out, buf, 32);

    return NGX_OK;
}


static void
ngx_http_wa_media_fail(ngx_http_wa_media_ctx_t *ctx, ngx_uint_t status,
    const char *reason, const char *msg)
{
    u_char  *body, *p;
    size_t   len;

    ngx_http_wa_media_count(ctx, 0);

    len = sizeof("{\"error\":\"\",\"reason\":\"\",\"provider_status\":}")
          + ngx_strlen(msg) + ngx_strlen(reason) + NGX_INT_T_LEN;

    body = ngx_pnalloc(ctx->xfer.pool, len);
    if (body == NULL) {
        ngx_http_wa_media_answer(ctx, NGX_HTTP_INTERNAL_SERVER_ERROR, NULL, 0);
        return;
    }

    /* msg and reason are ours: nothing to escape */
    p = ngx_sprintf(body, "{\"error\":\"%s\",\"reason\":\"%s\","
                    "\"provider_status\":%l}", msg, reason, ctx->xfer.status);

    ngx_http_wa_media_answer(ctx, status, body, p - body);
}


static void
ngx_http_wa_media_answer(ngx_http_wa_media_ctx_t *ctx, ngx_uint_t status,
    u_char *body, size_t len)
{
    ngx_int_t            rc;
    ngx_http_request_t  *r;

    r = ctx->r;

    if (r == NULL) {
        ngx_log_error(NGX_LOG_WARN, ctx->log, 0,
                      "wa media: media %V: the fetcher went away before "
                      "the answer", &ctx->media_id);
        ngx_http_wa_media_free(ctx);
        return;
    }

    /* answered from the pool of the request, which outlives ours */
    rc = NGX_HTTP_INTERNAL_SERVER_ERROR;

    if (body) {
        u_char *copy = ngx_pnalloc(r->pool, len);

        if (copy) {
            ngx_memcpy(copy, body, len);
            rc = ngx_http_wa_reply_json(r, status, copy, len);
        }
    }

    ngx_http_wa_media_free(ctx);
    ngx_http_finalize_request(r, rc);
}


/* the temporary file goes unless the answer handed it over */

static void
ngx_http_wa_media_free(ngx_http_wa_media_ctx_t *ctx)
{
    ngx_http_cleanup_t  *cln;

    if (ctx->r) {
        for (cln = ctx->r->cleanup; cln; cln = cln->next) {
            if (cln->data == ctx) {
                cln->handler = NULL;
            }
        }

        ctx->r = NULL;
    }

    if (ctx->fd != NGX_INVALID_FILE) {
        (void) ngx_close_file(ctx->fd);
        ctx->fd = NGX_INVALID_FILE;
    }

    if (ctx->path.len) {
        (void) ngx_delete_file(ctx->path.data);
        ctx->path.len = 0;
    }

    if (ctx->md) {
        EVP_MD_CTX_free(ctx->md);
        ctx->md = NULL;
    }

    ngx_destroy_pool(ctx->xfer.pool);
}


static ngx_int_t
ngx_http_wa_media_id_ok(ngx_str_t *id)
{
    ngx_uint_t  i;
    u_char      c;

    if (id->len == 0 || id->len > NGX_HTTP_WA_MEDIA_ID_MAX) {
        return NGX_ERROR;
    }

    for (i = 0; i < id->len; i++) {
        c = id->data[i];

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')
              || (c >= 'A' && c <= 'Z') || c == '.' || c == '_' || c == '-'))
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_http_wa_media_count(ngx_http_wa_media_ctx_t *ctx, ngx_uint_t ok)
{
    ngx_http_wa_webhook_counters_t  *c;

    c = ngx_http_wa_webhook_counters(ctx->wmcf);
    if (c == NULL) {
        return;
    }

    (void) __atomic_fetch_add(ok ? &c->media_downloaded : &c->media_errors,
                              1, __ATOMIC_RELAXED);
}


/*
 * What only the database knows (media waiting, given up) the fetcher says
 * with each call: X-WA-Media-Waiting and X-WA-Media-Failed. Kept as the
 * latest report with its time, for wa_status.
 */

void
ngx_http_wa_media_report(ngx_http_request_t *r)
{
    ngx_int_t                        waiting, failed;
    ngx_time_t                      *tp;
    ngx_table_elt_t                 *h;
    ngx_http_wa_main_conf_t         *wmcf;
    ngx_http_wa_webhook_counters_t  *c;

    wmcf = ngx_http_get_module_main_conf(r, ngx_http_wa_module);
    c = ngx_http_wa_webhook_counters(wmcf);

    if (c == NULL) {
        return;
    }

    h = ngx_http_wa_header(r, "X-WA-Media-Waiting",
                           sizeof("X-WA-Media-Waiting") - 1);
    waiting = h ? ngx_atoi(h->value.data, h->value.len) : NGX_ERROR;

    h = ngx_http_wa_header(r, "X-WA-Media-Failed",
                           sizeof("X-WA-Media-Failed") - 1);
    failed = h ? ngx_atoi(h->value.data, h->value.len) : NGX_ERROR;

    if (waiting == NGX_ERROR || failed == NGX_ERROR) {
        return;
    }

    tp = ngx_timeofday();

    __atomic_store_n(&c->media_waiting, (uint64_t) waiting, __ATOMIC_RELAXED);
    __atomic_store_n(&c->media_failed, (uint64_t) failed, __ATOMIC_RELAXED);
    __atomic_store_n(&c->media_report_ms,
                     (uint64_t) tp->sec * 1000 + tp->msec, __ATOMIC_RELAXED);
}


/* ---- wa_media_serve ---------------------------------------------------- */


/*
 * GET {location}/ab/<64 hex>.<ext>: the name the fetcher gave a file; any
 * other name is 404 without touching the file system, so nothing but
 * stored media can be read through it.
 */

ngx_int_t
ngx_http_wa_media_serve_handler(ngx_http_request_t *r)
{
    u_char                    *last, *p;
    size_t                     root;
    ngx_str_t                  name, path;
    ngx_int_t                  rc;
    ngx_uint_t                 i;
    ngx_buf_t                 *b;
    ngx_chain_t                out;
    const char                *mime;
    ngx_open_file_info_t       of;
    ngx_http_core_loc_conf_t  *clcf;
    ngx_http_wa_loc_conf_t    *wlcf;

    rc = ngx_http_wa_media_access(r, NGX_HTTP_GET|NGX_HTTP_HEAD);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    wlcf = ngx_http_get_module_loc_conf(r, ngx_http_wa_module);

    /* the part of the URI after the location's name */
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (r->uri.len <= clcf->name.len) {
        return NGX_HTTP_NOT_FOUND;
    }

    name.data = r->uri.data + clcf->name.len;
    name.len = r->uri.len - clcf->name.len;

    if (name.len < 2 + 1 + 64 + 2 || name.len > 2 + 1 + 64 + 1 + 8
        || name.data[2] != '/' || name.data[3 + 64] != '.'
        || ngx_strncmp(name.data, name.data + 3, 2) != 0)
    {
        return NGX_HTTP_NOT_FOUND;
    }

    for (i = 0; i < name.len; i++) {
        if (i == 2 || i == 3 + 64) {
            continue;
        }

        if (!((name.data[i] >= '0' && name.data[i] <= '9')
              || (name.data[i] >= 'a' && name.data[i] <= 'z')))
        {
            return NGX_HTTP_NOT_FOUND;
        }
    }

    root = wlcf->media_path.len;
    path.len = root + 1 + name.len;
    path.data = ngx_pnalloc(r->pool, path.len + 1);
    if (path.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    last = ngx_sprintf(path.data, "%V/%V", &wlcf->media_path, &name);
    *last = '\0';

    ngx_memzero(&of, sizeof(ngx_open_file_info_t));

    of.read_ahead = clcf->read_ahead;
    of.directio = clcf->directio;
    of.valid = clcf->open_file_cache_valid;
    of.min_uses = clcf->open_file_cache_min_uses;
    of.errors = clcf->open_file_cache_errors;
    of.events = clcf->open_file_cache_events;

    if (ngx_open_cached_file(clcf->open_file_cache, &path, &of, r->pool)
        != NGX_OK)
    {
        if (of.err == NGX_ENOENT || of.err == NGX_ENOTDIR) {
            return NGX_HTTP_NOT_FOUND;
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, of.err,
                      "wa media: %s \"%V\" failed", of.failed, &path);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!of.is_file) {
        return NGX_HTTP_NOT_FOUND;
    }

    p = name.data + 3 + 64 + 1;
    mime = wa_media_mime((char *) p, name.data + name.len - p);

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = of.size;
    r->headers_out.last_modified_time = of.mtime;
    r->headers_out.content_type.data = (u_char *) mime;
    r->headers_out.content_type.len = ngx_strlen(mime);
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->allow_ranges = 1;

    if (ngx_http_set_etag(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->file = ngx_pcalloc(r->pool, sizeof(ngx_file_t));
    if (b->file == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b->file_pos = 0;
    b->file_last = of.size;
    b->in_file = of.size ? 1 : 0;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;
    b->sync = of.size ? 0 : 1;

    b->file->fd = of.fd;
    b->file->name = path;
    b->file->log = r->connection->log;
    b->file->directio = of.is_directio;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
