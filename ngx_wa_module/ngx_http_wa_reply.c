/*
 * ngx_http_wa_reply: the HTTP side the wa_* handlers share: reading a JSON
 * request body, finding a header, comparing secrets, and answering.
 */

#include "ngx_http_wa_module.h"

#include <openssl/crypto.h>


ngx_int_t
ngx_http_wa_reply_json(ngx_http_request_t *r, ngx_uint_t status, u_char *body,
    size_t len)
{
    static ngx_str_t  json = ngx_string("application/json");

    return ngx_http_wa_reply_body(r, status, &json, body, len);
}


ngx_int_t
ngx_http_wa_reply_body(ngx_http_request_t *r, ngx_uint_t status,
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


/* {"error": "<msg>"}, msg escaped as a JSON string */

ngx_int_t
ngx_http_wa_reply_error(ngx_http_request_t *r, ngx_uint_t status,
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

    return ngx_http_wa_reply_json(r, status, body, p - body);
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
