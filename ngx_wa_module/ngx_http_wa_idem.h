/*
 * The idempotency zone of wa_send: a client_ref is sent once per business,
 * its answer replayed; see ngx_http_wa_idem.c.
 */

#ifndef NGX_HTTP_WA_IDEM_H
#define NGX_HTTP_WA_IDEM_H

#include "ngx_http_wa_module.h"


#define NGX_HTTP_WA_LOCAL_ID_LEN      64     /* a send's id, NUL included */
#define NGX_HTTP_WA_IDEM_SLACK        5      /* s past a send's longest
                                                life: its worker died */

/* what ngx_http_wa_idem_begin() found; NGX_ERROR: the zone is full */
#define NGX_HTTP_WA_IDEM_NEW          0
#define NGX_HTTP_WA_IDEM_BUSY         1
#define NGX_HTTP_WA_IDEM_DONE         2
#define NGX_HTTP_WA_IDEM_INTERRUPTED  3
#define NGX_HTTP_WA_IDEM_RETRY        4


/* the shared zone, sized by wa_send_idempotency_zone */
ngx_int_t ngx_http_wa_idem_init_conf(ngx_conf_t *cf,
    ngx_http_wa_main_conf_t *wmcf);

/*
 * Before a send with a client_ref: key is "business:client_ref", life the
 * longest a send may take (s). Fills local_id and attempt (RETRY,
 * INTERRUPTED), status and answer (DONE, INTERRUPTED; in pool).
 */
ngx_int_t ngx_http_wa_idem_begin(ngx_http_wa_main_conf_t *wmcf,
    ngx_str_t *key, time_t life, char *local_id, ngx_uint_t *attempt,
    ngx_uint_t *status, ngx_str_t *answer, ngx_pool_t *pool);

/* After it: status 0 when nothing was sent; verdict 's', 'u' or 'f';
 * attempt the send's last (automatic retries count up from the first) */
void ngx_http_wa_idem_end(ngx_http_wa_main_conf_t *wmcf, ngx_str_t *key,
    ngx_uint_t status, ngx_str_t *answer, u_char verdict, ngx_uint_t attempt);

#endif /* NGX_HTTP_WA_IDEM_H */
