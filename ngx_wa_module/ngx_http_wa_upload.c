/*
 * wa_media_upload: a file to the Cloud API's media endpoint, recorded
 * before and after, streamed from disk.
 *
 *   POST /media?filename=offer.pdf[&phone_number_id=...]
 *   Content-Type: application/pdf          (the file's own type)
 *   <the file's bytes>
 *
 * The body is the file itself, not a multipart form: its Content-Type is
 * the media type Meta needs, its Content-Length is checked against Meta's
 * limit for that type before a byte is read (413 at once), and the worker
 * never has to parse a form to find the file in it. nginx writes the body
 * to a temp file (client_body_in_file_only, per request); libcurl then
 * pulls it from that file through a read callback, in its upload buffer's
 * steps, inside the multipart/form-data request Meta's /PHONE_NUMBER_ID/
 * media takes (messaging_product, type, file). The SHA-256 is computed in
 * that callback, on the bytes as they leave: no second read, and no copy
 * of the file in worker memory.
 *
 *   1. the type known and allowed, the size within its limit (415 / 413)
 *   2. the body to a temp file; its size checked again (chunked bodies)
 *   3. the upload recorded (WA_REC_MEDIA_UPLOAD "pending"): no room, 503
 *      and nothing sent; with wa_ring ... sync=on, the POST waits until
 *      that record is on disk (a failed sync: 503, recorded failed)
 *   4. the POST, on the worker's libcurl multi handle
 *   5. the outcome recorded (media id, size, sha256, or the error), then
 *      answered: 200 {"id", "status": "uploaded", "media_id", ...}
 *
 * The transfer keeps its own descriptor of the temp file (a dup): a client
 * that leaves does not end the upload, whose outcome is still recorded.
 * Reading the temp file is a plain read(), as nginx's own handlers read
 * the temp files they just wrote (from the page cache).
 */

#include "ngx_http_wa_module.h"
#include "ngx_http_wa_curl.h"
#include "ngx_http_wa_idem.h"
#include "wa_send_parse.h"

#include <openssl/evp.h>


#define NGX_HTTP_WA_KB  1024
#define NGX_HTTP_WA_MB  (1024 * 1024)


/*
 * Meta's supported media types and their limits ("Supported media types",
 * Cloud API reference, Media): audio and video 16 MB, images 5 MB,
 * documents 100 MB, stickers (image/webp) 100 KB static and 500 KB
 * animated.
 */

typedef struct {
    const char   *mime;
    const char   *kind;
    off_t         max;
} ngx_http_wa_upload_type_t;


static const ngx_http_wa_upload_type_t  ngx_http_wa_upload_types[] = {
    { "audio/aac", "audio", 16 * NGX_HTTP_WA_MB },
    { "audio/amr", "audio", 16 * NGX_HTTP_WA_MB },
    { "audio/mpeg", "audio", 16 * NGX_HTTP_WA_MB },
    { "audio/mp4", "audio", 16 * NGX_HTTP_WA_MB },
    { "audio/ogg", "audio", 16 * NGX_HTTP_WA_MB },
    { "text/plain", "document", 100 * NGX_HTTP_WA_MB },
    { "application/pdf", "document", 100 * NGX_HTTP_WA_MB },
    { "application/vnd.ms-excel", "document", 100 * NGX_HTTP_WA_MB },
    { "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
      "document", 100 * NGX_HTTP_WA_MB },
    { "application/msword", "document", 100 * NGX_HTTP_WA_MB },
    { "application/vnd.openxmlformats-officedocument.wordprocessingml"
      ".document", "document", 100 * NGX_HTTP_WA_MB },
    { "application/vnd.ms-powerpoint", "document", 100 * NGX_HTTP_WA_MB },
    { "application/vnd.openxmlformats-officedocument.presentationml"
      ".presentation", "document", 100 * NGX_HTTP_WA_MB },
    { "image/jpeg", "image", 5 * NGX_HTTP_WA_MB },
    { "image/png", "image", 5 * NGX_HTTP_WA_MB },
    /* animated; a static sticker's 100 KB is checked on its header */
    { "image/webp", "sticker", 500 * NGX_HTTP_WA_KB },
    { "video/mp4", "video", 16 * NGX_HTTP_WA_MB },
    { "video/3gpp", "video", 16 * NGX_HTTP_WA_MB },
    { NULL, NULL, 0 }
};

#define NGX_HTTP_WA_STATIC_STICKER_MAX  (100 * NGX_HTTP_WA_KB)

#define NGX_HTTP_WA_FILENAME_MAX  255


typedef struct {
    ngx_http_request_t               *request;   /* NULL once it left */
    ngx_http_wa_main_conf_t          *wmcf;
    ngx_http_wa_loc_conf_t           *wlcf;
    ngx_http_wa_xfer_t                xfer;
    ngx_log_t                        *log;

    const ngx_http_wa_upload_type_t   *type;
    ngx_http_wa_channel_t            *channel;
    ngx_str_t                         business;
    ngx_str_t                         phone_number_id;
    char                              local_id[NGX_HTTP_WA_LOCAL_ID_LEN];
    char                              filename[NGX_HTTP_WA_FILENAME_MAX + 1];
    char                              size_text[NGX_OFF_T_LEN + 1];
    char                              sha256[EVP_MAX_MD_SIZE * 2 + 1];
    char                              now[NGX_INT64_LEN + 1];

    ngx_fd_t                          fd;        /* ours: a dup */
    off_t                             size;
    off_t                             read;      /* bytes handed to curl */
    EVP_MD_CTX                       *md;

    ngx_http_wa_sync_wait_t           sync;      /* sync=on: the pending
                                                  * record's */
    ngx_http_wa_curl_conf_t           conf;      /* the upload's timeout */
    ngx_pool_cleanup_t               *cln;       /* in the request's pool */
    ngx_str_t                         answer;
    ngx_uint_t                        status;
    unsigned                          counted:1;
} ngx_http_wa_upload_ctx_t;


static const ngx_http_wa_upload_type_t *ngx_http_wa_upload_type(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_wa_upload_filename(ngx_http_request_t *r,
    char *dst);
static void ngx_http_wa_upload_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_wa_upload_start(ngx_http_request_t *r);
static ngx_int_t ngx_http_wa_upload_sticker_max(ngx_fd_t fd, off_t *max);
static size_t ngx_http_wa_upload_read(char *buf, size_t size, size_t n,
    void *arg);
static int ngx_http_wa_upload_seek(void *arg, curl_off_t offset, int origin);
static void ngx_http_wa_upload_synced(ngx_http_wa_sync_wait_t *w,
    ngx_int_t rc);
static void ngx_http_wa_upload_post(ngx_http_wa_upload_ctx_t *ctx);
static void ngx_http_wa_upload_done(ngx_http_wa_xfer_t *x);
static void ngx_http_wa_upload_finish(ngx_http_wa_upload_ctx_t *ctx,
    wa_send_res_t *res, const char *verdict);
static void ngx_http_wa_upload_fields(ngx_http_wa_upload_ctx_t *ctx,
    wa_record_t *rec, const char *status);
static void ngx_http_wa_upload_record(ngx_http_wa_upload_ctx_t *ctx,
    const char *status, wa_send_res_t *res, long http_status);
static void ngx_http_wa_upload_answer(ngx_http_wa_upload_ctx_t *ctx,
    wa_send_res_t *res, const char *verdict);
static void ngx_http_wa_upload_cleanup(void *data);
static void ngx_http_wa_upload_free(ngx_http_wa_upload_ctx_t *ctx);
static ngx_int_t ngx_http_wa_upload_unavailable(ngx_http_request_t *r,
    ngx_http_wa_upload_ctx_t *ctx);


ngx_int_t
ngx_http_wa_upload_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_http_wa_loc_conf_t          *wlcf;
    const ngx_http_wa_upload_type_t  *type;

    if (!(r->method & NGX_HTTP_POST)) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    wlcf = ngx_http_get_module_loc_conf(r, ngx_http_wa_module);

    if (wlcf->send_keys != NULL && !ngx_http_wa_key_ok(r, wlcf)) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_wa_reply_error(r, NGX_HTTP_UNAUTHORIZED,
                                       "X-WA-Key: missing or wrong");
    }

    type = ngx_http_wa_upload_type(r);

    if (type == NULL) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_wa_reply_error(r, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                       "Content-Type: not a media type the "
                                       "Cloud API takes (image/jpeg, "
                                       "image/png, image/webp, video/mp4, "
                                       "video/3gpp, audio/aac, audio/amr, "
                                       "audio/mpeg, audio/mp4, audio/ogg, "
                                       "text/plain, application/pdf, "
                                       "Office documents)");
    }

    /* over the type's limit: refused before a byte of it is read */
    if (r->headers_in.content_length_n > type->max) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "wa upload: %s of %O bytes refused, over %O",
                      type->mime, r->headers_in.content_length_n, type->max);

        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_wa_reply_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                       "body: larger than the Cloud API "
                                       "takes for this type");
    }

    /* to disk, whatever its size: the file is never held in memory */
    r->request_body_in_file_only = 1;
    r->request_body_file_log_level = 0;

    rc = ngx_http_read_client_request_body(r, ngx_http_wa_upload_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/* the Content-Type's media type (parameters aside), if Meta takes it */

static const ngx_http_wa_upload_type_t *
ngx_http_wa_upload_type(ngx_http_request_t *r)
{
    size_t                           len;
    ngx_table_elt_t                 *ct;
    const ngx_http_wa_upload_type_t  *t;

    ct = r->headers_in.content_type;

    if (ct == NULL) {
        return NULL;
    }

    for (len = 0; len < ct->value.len; len++) {
        if (ct->value.data[len] == ';' || ct->value.data[len] == ' ') {
            break;
        }
    }

    for (t = ngx_http_wa_upload_types; t->mime; t++) {
        if (ngx_strlen(t->mime) == len
            && ngx_strncasecmp(ct->value.data, (u_char *) t->mime, len) == 0)
        {
            return t;
        }
    }

    return NULL;
}


/* ?filename=, unescaped: printable, no path, no quote (it goes into the
 * form's Content-Disposition); "file" when absent. NGX_OK or NGX_DECLINED */

static ngx_int_t
ngx_http_wa_upload_filename(ngx_http_request_t *r, char *dst)
{
    u_char     *p, *q, *buf;
    size_t      i, n;
    ngx_str_t   arg;

    if (ngx_http_arg(r, (u_char *) "filename", sizeof("filename") - 1, &arg)
        != NGX_OK)
    {
        ngx_cpystrn((u_char *) dst, (u_char *) "file", 5);
        return NGX_OK;
    }

    if (arg.len == 0 || arg.len > NGX_HTTP_WA_FILENAME_MAX * 3) {
        return NGX_DECLINED;
    }

    /* unescaping never lengthens */
    buf = ngx_pnalloc(r->pool, arg.len);
    if (buf == NULL) {
        return NGX_DECLINED;
    }

    p = buf;
    q = arg.data;
    ngx_unescape_uri(&p, &q, arg.len, 0);
    n = p - buf;

    if (n == 0 || n > NGX_HTTP_WA_FILENAME_MAX) {
        return NGX_DECLINED;
    }

    for (i = 0; i < n; i++) {
        /* a %00 included */
        if (buf[i] < 0x20 || buf[i] == 0x7f || buf[i] == '"'
            || buf[i] == '/' || buf[i] == '\\')
        {
            return NGX_DECLINED;
        }
    }

    ngx_memcpy(dst, buf, n);
    dst[n] = '\0';

    return NGX_OK;
}


static void
ngx_http_wa_upload_body(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    rc = ngx_http_wa_upload_start(r);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


static ngx_int_t
ngx_http_wa_upload_start(ngx_http_request_t *r)
{
    off_t                      max;
    u_char                     ms[NGX_INT64_LEN + 1];
    ngx_fd_t                   fd;
    ngx_str_t                  id;
    ngx_int_t                  rc;
    ngx_pool_t                *pool;
    ngx_file_info_t            fi;
    wa_record_t                rec;
    ngx_pool_cleanup_t        *cln;
    ngx_http_wa_channel_t     *ch;
    ngx_http_wa_upload_ctx_t   *ctx;
    ngx_http_wa_loc_conf_t    *wlcf;
    ngx_http_wa_main_conf_t   *wmcf;

    wlcf = ngx_http_get_module_loc_conf(r, ngx_http_wa_module);
    wmcf = ngx_http_get_module_main_conf(r, ngx_http_wa_module);

    if (r->request_body == NULL || r->request_body->temp_file == NULL) {
        return ngx_http_wa_reply_error(r, NGX_HTTP_BAD_REQUEST,
                                       "body: the file's bytes are required");
    }

    fd = r->request_body->temp_file->file.fd;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, ngx_errno,
                      "wa upload: fstat() of the body's temp file failed");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    pool = ngx_create_pool(1024, ngx_cycle->log);
    if (pool == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = ngx_pcalloc(pool, sizeof(ngx_http_wa_upload_ctx_t));
    if (ctx == NULL) {
        ngx_destroy_pool(pool);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->fd = NGX_INVALID_FILE;
    ctx->xfer.pool = pool;
    ctx->xfer.data = ctx;
    ctx->xfer.done = ngx_http_wa_upload_done;
    ctx->wmcf = wmcf;
    ctx->wlcf = wlcf;
    ctx->log = ngx_cycle->log;
    ctx->type = ngx_http_wa_upload_type(r);
    ctx->size = ngx_file_size(&fi);

    if (ctx->type == NULL) {
        ngx_http_wa_upload_free(ctx);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->size == 0) {
        ngx_http_wa_upload_free(ctx);
        return ngx_http_wa_reply_error(r, NGX_HTTP_BAD_REQUEST,
                                       "body: the file's bytes are required");
    }

    /* a chunked body's size is known only now; a sticker's limit is its
     * header's (animated or not) */
    max = ctx->type->max;

    if (ngx_strcmp(ctx->type->kind, "sticker") == 0
        && ngx_http_wa_upload_sticker_max(fd, &max) != NGX_OK)
    {
        ngx_http_wa_upload_free(ctx);
        return ngx_http_wa_reply_error(r, NGX_HTTP_BAD_REQUEST,
                                       "body: not a WebP file");
    }

    if (ctx->size > max) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "wa upload: %s of %O bytes refused, over %O",
                      ctx->type->mime, ctx->size, max);
        ngx_http_wa_upload_free(ctx);
        return ngx_http_wa_reply_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                       "body: larger than the Cloud API "
                                       "takes for this type");
    }

    if (ngx_http_wa_upload_filename(r, ctx->filename) != NGX_OK) {
        ngx_http_wa_upload_free(ctx);
        return ngx_http_wa_reply_error(r, NGX_HTTP_BAD_REQUEST,
                                       "filename: 1 to 255 bytes, no control "
                                       "character, quote, '/' or '\\'");
    }

    /* the channel: ?phone_number_id=, or the location's one */

    if (ngx_http_arg(r, (u_char *) "phone_number_id",
                     sizeof("phone_number_id") - 1, &id) == NGX_OK)
    {
        ch = ngx_http_wa_channel_find(wlcf, id.data, id.len);
        if (ch == NULL) {
            ngx_http_wa_upload_free(ctx);
            return ngx_http_wa_reply_error(r, NGX_HTTP_BAD_REQUEST,
                                           "phone_number_id: no wa_channel "
                                           "with this id");
        }

    } else if (wlcf->channels->nelts == 1) {
        ch = wlcf->channels->elts;

    } else {
        ngx_http_wa_upload_free(ctx);
        return ngx_http_wa_reply_error(r, NGX_HTTP_BAD_REQUEST,
                                       "phone_number_id: required, several "
                                       "channels are configured");
    }

    ctx->channel = ch;
    ctx->business = ch->business;
    ctx->phone_number_id = ch->phone_number_id;

    if (wlcf->send_active >= wlcf->send_concurrency) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "wa upload: %ui provider calls of this location in "
                      "flight (wa_send_concurrency), answering 503",
                      wlcf->send_active);
        return ngx_http_wa_upload_unavailable(r, ctx);
    }

    /* the transfer's own descriptor: the request's goes with its pool */
    ctx->fd = dup(fd);
    ctx->md = EVP_MD_CTX_new();

    if (ctx->fd == NGX_INVALID_FILE || ctx->md == NULL
        || EVP_DigestInit_ex(ctx->md, EVP_sha256(), NULL) != 1)
    {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, ngx_errno,
                      "wa upload: dup() or SHA-256 init failed");
        ngx_http_wa_upload_free(ctx);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_wa_local_id(wmcf, ctx->local_id, ms);
    *ngx_sprintf((u_char *) ctx->size_text, "%O", ctx->size) = '\0';

    /* recorded before sent */

    ngx_http_wa_upload_fields(ctx, &rec, "pending");
    wa_record_set(&rec, WA_F_RECEIVED_MS, (char *) ms);

    if (ngx_http_wa_publish(wmcf, r->connection->log, &rec,
                            NGX_HTTP_WA_OPENS)
        != NGX_OK)
    {
        return ngx_http_wa_upload_unavailable(r, ctx);
    }

    /* from here on the upload ends in an outcome record, whether the
     * client waits for it or not */
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln != NULL) {
        cln->handler = ngx_http_wa_upload_cleanup;
        cln->data = ctx;
        ctx->cln = cln;
        ctx->request = r;
    }

    ctx->conf = wlcf->send;
    ctx->conf.timeout = wlcf->upload_timeout;

    rc = (cln != NULL) ? NGX_DONE : NGX_HTTP_INTERNAL_SERVER_ERROR;

    if (!wmcf->sync) {
        ngx_http_wa_upload_post(ctx);
        return rc;
    }

    /* the provider is called only once the pending record is on disk */

    ctx->sync.handler = ngx_http_wa_upload_synced;
    ctx->sync.data = ctx;

    if (ngx_http_wa_sync_wait(wmcf, ctx->xfer.pool, &ctx->sync) != NGX_OK)
    {
        ngx_http_wa_upload_synced(&ctx->sync, NGX_ERROR);
    }

    return rc;
}


/*
 * Synced, or not: the pending record may not be on disk (a failed sync),
 * or the worker exits before it is. Then the provider is not called, the
 * outcome "failed" (retryable) settles the row, and the client gets 503.
 */

static void
ngx_http_wa_upload_synced(ngx_http_wa_sync_wait_t *w, ngx_int_t rc)
{
    ngx_http_wa_upload_ctx_t *ctx = w->data;

    wa_send_res_t  res;

    if (rc == NGX_OK) {
        ngx_http_wa_upload_post(ctx);
        return;
    }

    ngx_memzero(&res, sizeof(wa_send_res_t));
    res.retryable = 1;
    ngx_cpystrn((u_char *) res.error_title,
                (u_char *) (rc == NGX_ABORT
                            ? "not uploaded: nginx exited before the "
                              "upload's record was synced to disk"
                            : "not uploaded: the ring could not be synced "
                              "to disk (wa_ring sync=on)"),
                sizeof(res.error_title));

    ngx_log_error(NGX_LOG_ERR, ctx->log, 0, "wa upload %s: %s, recorded as "
                  "failed", ctx->local_id, res.error_title);

    ctx->status = NGX_HTTP_SERVICE_UNAVAILABLE;
    ctx->xfer.exiting = (rc == NGX_ABORT);

    ngx_http_wa_upload_finish(ctx, &res, "failed");
}


/* the pending record is stored (and synced, with sync=on): the POST */

static void
ngx_http_wa_upload_post(ngx_http_wa_upload_ctx_t *ctx)
{
    u_char                    *url, *auth;
    ngx_uint_t                 i;
    ngx_pool_t                *pool;
    ngx_http_wa_channel_t     *ch;
    ngx_http_wa_curl_file_t    file;
    ngx_http_wa_loc_conf_t    *wlcf;
    const char                *fields[5];

    wlcf = ctx->wlcf;
    pool = ctx->xfer.pool;
    ch = ctx->channel;

    /* the upload */

    url = ngx_pnalloc(pool, wlcf->api_base.len + ch->phone_number_id.len
                            + sizeof("//media"));
    auth = ngx_pnalloc(pool, sizeof("Authorization: Bearer ")
                             + ch->token.len);

    if (url == NULL || auth == NULL) {
        goto failed;
    }

    ngx_sprintf(url, "%V/%V/media%Z", &wlcf->api_base, &ch->phone_number_id);
    ngx_sprintf(auth, "Authorization: Bearer %V%Z", &ch->token);

    i = 0;
    fields[i++] = "messaging_product";
    fields[i++] = "whatsapp";
    fields[i++] = "type";
    fields[i++] = ctx->type->mime;
    fields[i] = NULL;

    file.field = "file";
    file.type = ctx->type->mime;
    file.filename = ctx->filename;
    file.size = (curl_off_t) ctx->size;
    file.read = ngx_http_wa_upload_read;
    file.seek = ngx_http_wa_upload_seek;
    file.arg = ctx;

    if (ngx_http_wa_curl_upload(ctx->wmcf->curl, &ctx->xfer, (char *) url,
                                (char *) auth, fields, &file, &ctx->conf)
        != NGX_OK)
    {
        goto failed;
    }

    wlcf->send_active++;
    ctx->counted = 1;

    return;

failed:

    ngx_log_error(NGX_LOG_ALERT, ctx->log, 0,
                  "wa upload %s: could not start the upload", ctx->local_id);

    ngx_memzero(&ctx->xfer.error, sizeof(ctx->xfer.error));
    ctx->xfer.result = CURLE_FAILED_INIT;
    ctx->xfer.sent = 0;
    ngx_http_wa_upload_done(&ctx->xfer);
}


/*
 * A WebP sticker is animated when its VP8X chunk says so (RIFF header,
 * "WEBP", "VP8X", the chunk size, then the flags byte whose bit 1 is
 * animation): 500 KB then, 100 KB for a static one. 21 bytes of the file.
 */

static ngx_int_t
ngx_http_wa_upload_sticker_max(ngx_fd_t fd, off_t *max)
{
    u_char   h[21];
    ssize_t  n;

    n = pread(fd, h, sizeof(h), 0);

    if (n < 16 || ngx_memcmp(h, "RIFF", 4) != 0
        || ngx_memcmp(h + 8, "WEBP", 4) != 0)
    {
        return NGX_ERROR;
    }

    *max = (n == (ssize_t) sizeof(h) && ngx_memcmp(h + 12, "VP8X", 4) == 0
            && (h[20] & 0x02))
           ? 500 * NGX_HTTP_WA_KB : NGX_HTTP_WA_STATIC_STICKER_MAX;

    return NGX_OK;
}


/* libcurl wants the next bytes of the file: read them, hash them */

static size_t
ngx_http_wa_upload_read(char *buf, size_t size, size_t n, void *arg)
{
    ngx_http_wa_upload_ctx_t *ctx = arg;

    ssize_t  got;

    got = pread(ctx->fd, buf, size * n, ctx->read);

    if (got < 0) {
        ngx_log_error(NGX_LOG_ERR, ctx->log, ngx_errno,
                      "wa upload %s: reading the temp file failed",
                      ctx->local_id);
        return CURL_READFUNC_ABORT;
    }

    if (got > 0 && EVP_DigestUpdate(ctx->md, buf, (size_t) got) != 1) {
        return CURL_READFUNC_ABORT;
    }

    ctx->read += got;

    return (size_t) got;
}


/* libcurl rewinds the file (a redirect or an auth retry): so does the
 * hash, which covers the bytes of the last sending */

static int
ngx_http_wa_upload_seek(void *arg, curl_off_t offset, int origin)
{
    ngx_http_wa_upload_ctx_t *ctx = arg;

    if (origin != SEEK_SET || offset < 0 || offset > ctx->size) {
        return CURL_SEEKFUNC_CANTSEEK;
    }

    if (offset != 0) {
        return CURL_SEEKFUNC_CANTSEEK;    /* the hash cannot resume */
    }

    if (EVP_DigestInit_ex(ctx->md, EVP_sha256(), NULL) != 1) {
        return CURL_SEEKFUNC_FAIL;
    }

    ctx->read = 0;

    return CURL_SEEKFUNC_OK;
}


static void
ngx_http_wa_upload_done(ngx_http_wa_xfer_t *x)
{
    u_char                    md[EVP_MAX_MD_SIZE];
    unsigned int              mdlen;
    const char               *verdict;
    wa_send_res_t             res;
    ngx_http_wa_upload_ctx_t  *ctx;

    ctx = x->data;

    if (ctx->counted) {
        ctx->wlcf->send_active--;
        ctx->counted = 0;
    }

    ngx_memzero(&res, sizeof(wa_send_res_t));

    if (x->result == CURLE_OK) {
        wa_send_parse_answer(WA_SEND_ANSWER_MEDIA, x->status,
                             (char *) x->body, x->body_len, &res);

        verdict = res.ok ? "uploaded" : (res.unknown ? "unknown" : "failed");
        ctx->status = res.ok ? NGX_HTTP_OK : NGX_HTTP_BAD_GATEWAY;

    } else {
        /* as a send: a file that may have arrived is not uploaded again
         * by us; an unread media id costs nothing but storage at Meta */
        verdict = x->sent ? "unknown" : "failed";
        res.retryable = !x->sent;

        ngx_snprintf((u_char *) res.error_title, sizeof(res.error_title),
                     "%s: %s%Z",
                     x->result == CURLE_OPERATION_TIMEDOUT
                     ? "provider timed out"
                     : (x->sent ? "no answer from the provider"
                                : "provider unreachable"),
                     x->error[0] ? x->error : curl_easy_strerror(x->result));

        ctx->status = (x->result == CURLE_OPERATION_TIMEDOUT)
                      ? NGX_HTTP_GATEWAY_TIME_OUT : NGX_HTTP_BAD_GATEWAY;
    }

    /* the hash of the whole file, when the whole file left */
    if (ctx->md != NULL && ctx->read == ctx->size
        && EVP_DigestFinal_ex(ctx->md, md, &mdlen) == 1)
    {
        *ngx_hex_dump((u_char *) ctx->sha256, md, mdlen) = '\0';
    }

    if (x->aborted || x->exiting) {
        ngx_log_error(NGX_LOG_WARN, ctx->log, 0,
                      "wa upload %s: %s, recorded as %s", ctx->local_id,
                      x->error, verdict);
    }

    ngx_http_wa_upload_finish(ctx, &res, verdict);
}


/* the outcome recorded, the client (if still there) answered, ctx freed */

static void
ngx_http_wa_upload_finish(ngx_http_wa_upload_ctx_t *ctx, wa_send_res_t *res,
    const char *verdict)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;
    ngx_http_wa_xfer_t  *x;

    x = &ctx->xfer;

    ngx_http_wa_upload_record(ctx, verdict, res, x->status);
    ngx_http_wa_upload_answer(ctx, res, verdict);

    r = ctx->request;

    if (x->exiting || r == NULL) {
        ngx_http_wa_upload_free(ctx);
        return;
    }

    if (ctx->cln) {
        ctx->cln->handler = NULL;
    }

    ctx->request = NULL;
    c = r->connection;

    if (ctx->answer.len == 0) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);

    } else {
        /* the answer outlives ctx: the request's pool keeps it */
        u_char  *p = ngx_pnalloc(r->pool, ctx->answer.len);

        if (p == NULL) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);

        } else {
            ngx_memcpy(p, ctx->answer.data, ctx->answer.len);
            ngx_http_finalize_request(r,
                ngx_http_wa_reply_json(r, ctx->status, p, ctx->answer.len));
        }
    }

    ngx_http_run_posted_requests(c);

    ngx_http_wa_upload_free(ctx);
}


/* what the pending record and the outcome record both carry */

static void
ngx_http_wa_upload_fields(ngx_http_wa_upload_ctx_t *ctx, wa_record_t *rec,
    const char *status)
{
    ngx_http_wa_record_init(rec, WA_REC_MEDIA_UPLOAD, ctx->local_id,
                            &ctx->business, &ctx->phone_number_id);
    wa_record_set(rec, WA_F_STATUS, status);
    wa_record_set(rec, WA_F_MSG_TYPE, ctx->type->kind);
    wa_record_set(rec, WA_F_MIME_TYPE, ctx->type->mime);
    wa_record_set(rec, WA_F_NAME, ctx->filename);
    wa_record_set(rec, WA_F_SIZE, ctx->size_text);
}


/* the outcome record: everything the row needs, should the pending one
 * have been lost */

static void
ngx_http_wa_upload_record(ngx_http_wa_upload_ctx_t *ctx, const char *status,
    wa_send_res_t *res, long http_status)
{
    u_char       http[NGX_INT_T_LEN + 1];
    wa_record_t  rec;
    ngx_time_t  *tp;

    tp = ngx_timeofday();
    *ngx_sprintf((u_char *) ctx->now, "%uL",
                 (uint64_t) tp->sec * 1000 + tp->msec) = '\0';
    *ngx_sprintf(http, "%l", http_status) = '\0';

    ngx_http_wa_upload_fields(ctx, &rec, status);
    wa_record_set(&rec, WA_F_SHA256, ctx->sha256[0] ? ctx->sha256 : NULL);
    wa_record_set(&rec, WA_F_MEDIA_ID, res->ok ? res->wamid : NULL);
    wa_record_set(&rec, WA_F_HTTP_STATUS, http_status ? (char *) http : NULL);
    wa_record_set(&rec, WA_F_RECEIVED_MS, ctx->now);

    ngx_http_wa_record_error(&rec, res);

    if (ngx_http_wa_publish(ctx->wmcf, ctx->log, &rec, NGX_HTTP_WA_CLOSES)
        != NGX_OK)
    {
        ngx_http_wa_outcome_lost(ctx->log, "upload", ctx->local_id, status,
                                 "media id", res->ok ? res->wamid : NULL,
                                 "");
    }
}


static void
ngx_http_wa_upload_answer(ngx_http_wa_upload_ctx_t *ctx, wa_send_res_t *res,
    const char *verdict)
{
    u_char              *p;
    size_t               len;
    ngx_http_wa_xfer_t  *x;

    x = &ctx->xfer;

    len = 512 + sizeof(ctx->local_id) + sizeof(ctx->filename) * 6
          + sizeof(ctx->sha256) + ngx_strlen(ctx->type->mime)
          + (ngx_strlen(res->wamid) + ngx_strlen(res->error_title)
             + ngx_strlen(res->error_detail) + ngx_strlen(res->fbtrace_id))
            * 6
          + (res->json ? x->body_len : 0);

    p = ngx_pnalloc(x->pool, len);
    if (p == NULL) {
        ctx->answer.len = 0;
        return;
    }

    ctx->answer.data = p;

    p = ngx_sprintf(p, "{\"id\":\"%s\",\"status\":\"%s\",\"type\":\"%s\","
                    "\"mime_type\":\"%s\",\"size\":%O,\"filename\":\"",
                    ctx->local_id, verdict, ctx->type->kind,
                    ctx->type->mime, ctx->size);
    p = (u_char *) ngx_escape_json(p, (u_char *) ctx->filename,
                                   ngx_strlen(ctx->filename));
    p = ngx_sprintf(p, "\"");

    if (ctx->sha256[0]) {
        p = ngx_sprintf(p, ",\"sha256\":\"%s\"", ctx->sha256);
    }

    if (res->ok) {
        p = ngx_sprintf(p, ",\"media_id\":\"");
        p = (u_char *) ngx_escape_json(p, (u_char *) res->wamid,
                                       ngx_strlen(res->wamid));
        p = ngx_sprintf(p, "\"}");
        ctx->answer.len = p - ctx->answer.data;
        return;
    }

    p = ngx_http_wa_send_error_json(p, res, x);
    ctx->answer.len = p - ctx->answer.data;
}


static void
ngx_http_wa_upload_cleanup(void *data)
{
    ngx_http_wa_upload_ctx_t  *ctx = data;

    ctx->request = NULL;
}


static ngx_int_t
ngx_http_wa_upload_unavailable(ngx_http_request_t *r,
    ngx_http_wa_upload_ctx_t *ctx)
{
    ngx_table_elt_t  *h;

    ngx_http_wa_upload_free(ctx);

    h = ngx_list_push(&r->headers_out.headers);
    if (h != NULL) {
        h->hash = 1;
        ngx_str_set(&h->key, "Retry-After");
        ngx_str_set(&h->value, "1");
    }

    return ngx_http_wa_reply_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "ring full, ring unavailable or too many "
                                   "calls in flight: nothing was uploaded, "
                                   "retry");
}


static void
ngx_http_wa_upload_free(ngx_http_wa_upload_ctx_t *ctx)
{
    if (ctx->md) {
        EVP_MD_CTX_free(ctx->md);
    }

    if (ctx->fd != NGX_INVALID_FILE) {
        (void) ngx_close_file(ctx->fd);
    }

    ngx_destroy_pool(ctx->xfer.pool);
}
