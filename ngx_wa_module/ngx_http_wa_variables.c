/*
 * $wa_* variables: what a wa_webhook or wa_send request did, for
 * log_format, map, limit_req and anything else that takes variables.
 *
 * The handlers write what they know into the request's ctx as they go
 * (ngx_http_wa_vars()); the get handlers only read it. The variables are
 * not cacheable: the log phase, after the handler, must not see the empty
 * value an earlier phase (limit_req, in preaccess) read before the body.
 *
 * Before the handler ran, $wa_channel and $wa_business are already those
 * of the location when it has exactly one wa_channel, so limit_req can key
 * on them; with several channels they are known only once the body named
 * one, and are empty (limit_req does not count an empty key) before.
 */

#include "ngx_http_wa_module.h"


typedef enum {
    NGX_HTTP_WA_VAR_STR = 0,        /* an ngx_str_t of the ctx */
    NGX_HTTP_WA_VAR_CHANNEL,        /* the same, or the location's only */
    NGX_HTTP_WA_VAR_BUSINESS
} ngx_http_wa_var_kind_e;


static ngx_int_t ngx_http_wa_var_records(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_wa_var_str(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_wa_var_channel(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_http_variable_t  ngx_http_wa_vars_table[] = {

    { ngx_string("wa_records"), NULL, ngx_http_wa_var_records, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("wa_local_id"), NULL, ngx_http_wa_var_str,
      offsetof(ngx_http_wa_vars_t, local_id), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("wa_wamid"), NULL, ngx_http_wa_var_str,
      offsetof(ngx_http_wa_vars_t, wamid), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("wa_error_code"), NULL, ngx_http_wa_var_str,
      offsetof(ngx_http_wa_vars_t, error_code), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("wa_send_status"), NULL, ngx_http_wa_var_str,
      offsetof(ngx_http_wa_vars_t, outcome), NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("wa_channel"), NULL, ngx_http_wa_var_channel,
      NGX_HTTP_WA_VAR_CHANNEL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("wa_business"), NULL, ngx_http_wa_var_channel,
      NGX_HTTP_WA_VAR_BUSINESS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/* preconfiguration: the variables exist before any directive names them */
ngx_int_t
ngx_http_wa_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_wa_vars_table; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


ngx_http_wa_vars_t *
ngx_http_wa_vars(ngx_http_request_t *r)
{
    ngx_http_wa_vars_t  *vars;

    vars = ngx_http_get_module_ctx(r, ngx_http_wa_module);

    if (vars == NULL) {
        vars = ngx_pcalloc(r->pool, sizeof(ngx_http_wa_vars_t));
        if (vars == NULL) {
            return NULL;
        }

        ngx_http_set_ctx(r, vars, ngx_http_wa_module);
    }

    return vars;
}


static ngx_int_t
ngx_http_wa_var_records(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char              *p;
    ngx_http_wa_vars_t  *vars;

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    vars = ngx_http_get_module_ctx(r, ngx_http_wa_module);

    v->len = ngx_sprintf(p, "%ui", vars ? vars->records : 0) - p;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = p;

    return NGX_OK;
}


static ngx_int_t
ngx_http_wa_var_str(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_str_t           *s;
    ngx_http_wa_vars_t  *vars;

    vars = ngx_http_get_module_ctx(r, ngx_http_wa_module);
    s = vars ? (ngx_str_t *) ((u_char *) vars + data) : NULL;

    if (s == NULL || s->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = s->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_wa_var_channel(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_str_t               *s;
    ngx_http_wa_vars_t      *vars;
    ngx_http_wa_channel_t   *ch;
    ngx_http_wa_loc_conf_t  *wlcf;

    vars = ngx_http_get_module_ctx(r, ngx_http_wa_module);
    s = NULL;

    if (vars != NULL) {
        s = (data == NGX_HTTP_WA_VAR_CHANNEL) ? &vars->channel
                                              : &vars->business;
    }

    if (s == NULL || s->len == 0) {
        /* not known from the body (yet): the location's only channel */
        wlcf = ngx_http_get_module_loc_conf(r, ngx_http_wa_module);

        if (wlcf->channels != NULL && wlcf->channels != NGX_CONF_UNSET_PTR
            && wlcf->channels->nelts == 1)
        {
            ch = wlcf->channels->elts;
            s = (data == NGX_HTTP_WA_VAR_CHANNEL) ? &ch->phone_number_id
                                                  : &ch->business;
        }
    }

    if (s == NULL || s->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = s->data;

    return NGX_OK;
}
