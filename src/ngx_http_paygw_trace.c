
/*
 * paygw: W3C Trace Context and the module's nginx variables.
 *
 * A valid incoming traceparent names the trace; otherwise a new one
 * starts (nginx's $request_id: 32 hex digits from a CSPRNG).  The trace
 * id is the X-Request-Id of the response, the request_id of its errors,
 * $paygw_trace_id for logs, and travels on to providers in a traceparent
 * of our own span.
 *
 *     $paygw_key_id       the key the Authorization header names (not yet
 *                         verified: usable in PREACCESS, for limit_req)
 *     $paygw_merchant_id  the merchant of a verified key
 *     $paygw_payment_no   $paygw_channel   $paygw_idempotency
 *     $paygw_trace_id
 */


#include "ngx_http_paygw_types.h"
#include "ngx_http_paygw_trace.h"
#include <openssl/rand.h>


static ngx_int_t ngx_http_paygw_trace_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_paygw_key_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_paygw_ctx_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_table_elt_t *ngx_http_paygw_traceparent_header(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_paygw_hexlc(u_char *p, size_t n);
static ngx_int_t ngx_http_paygw_nonzero(u_char *p, size_t n);


#define NGX_HTTP_PAYGW_VAR_MERCHANT     0
#define NGX_HTTP_PAYGW_VAR_PAYMENT      1
#define NGX_HTTP_PAYGW_VAR_CHANNEL      2
#define NGX_HTTP_PAYGW_VAR_IDEMPOTENCY  3


static ngx_http_variable_t  ngx_http_paygw_vars[] = {

    { ngx_string("paygw_trace_id"), NULL,
      ngx_http_paygw_trace_id_variable, 0, 0, 0 },

    { ngx_string("paygw_key_id"), NULL,
      ngx_http_paygw_key_id_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("paygw_merchant_id"), NULL, ngx_http_paygw_ctx_variable,
      NGX_HTTP_PAYGW_VAR_MERCHANT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("paygw_payment_no"), NULL, ngx_http_paygw_ctx_variable,
      NGX_HTTP_PAYGW_VAR_PAYMENT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("paygw_channel"), NULL, ngx_http_paygw_ctx_variable,
      NGX_HTTP_PAYGW_VAR_CHANNEL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("paygw_idempotency"), NULL, ngx_http_paygw_ctx_variable,
      NGX_HTTP_PAYGW_VAR_IDEMPOTENCY, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_paygw_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_paygw_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_trace_parse(ngx_str_t *value, u_char *trace_id,
    u_char *flags)
{
    u_char  *p, *last;
    size_t   len;

    p = value->data;
    last = p + value->len;

    /* OWS around a field value is not part of it */

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    while (last > p && (last[-1] == ' ' || last[-1] == '\t')) {
        last--;
    }

    len = last - p;

    /* version "-" trace-id(32) "-" parent-id(16) "-" flags(2) */

    if (len < 55 || p[2] != '-' || p[35] != '-' || p[52] != '-'
        || ngx_http_paygw_hexlc(p, 2) != NGX_OK
        || (p[0] == 'f' && p[1] == 'f')
        || ngx_http_paygw_hexlc(p + 3, 32) != NGX_OK
        || ngx_http_paygw_hexlc(p + 36, 16) != NGX_OK
        || ngx_http_paygw_hexlc(p + 53, 2) != NGX_OK
        || ngx_http_paygw_nonzero(p + 3, 32) != NGX_OK
        || ngx_http_paygw_nonzero(p + 36, 16) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    /* version 00 has exactly these fields; later ones may add "-..." */

    if (p[0] == '0' && p[1] == '0') {
        if (len != 55) {
            return NGX_DECLINED;
        }

    } else if (len > 55 && p[55] != '-') {
        return NGX_DECLINED;
    }

    ngx_memcpy(trace_id, p + 3, 32);
    ngx_memcpy(flags, p + 53, 2);

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_hexlc(u_char *p, size_t n)
{
    while (n--) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) {
            return NGX_ERROR;
        }

        p++;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_nonzero(u_char *p, size_t n)
{
    while (n--) {
        if (*p++ != '0') {
            return NGX_OK;
        }
    }

    return NGX_ERROR;
}


static ngx_table_elt_t *
ngx_http_paygw_traceparent_header(ngx_http_request_t *r)
{
    ngx_uint_t        n;
    ngx_table_elt_t  *h;

    h = ngx_http_paygw_header(&r->headers_in.headers, "traceparent", &n);

    /* two traceparent headers: which is right cannot be told */

    return (n == 1) ? h : NULL;
}


static ngx_int_t
ngx_http_paygw_trace_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                      *id;
    ngx_table_elt_t             *h;
    ngx_http_variable_value_t   *rid;
    ngx_http_paygw_main_conf_t  *pmcf;
    u_char                       flags[2];

    id = ngx_pnalloc(r->pool, 32);
    if (id == NULL) {
        return NGX_ERROR;
    }

    h = ngx_http_paygw_traceparent_header(r->main);

    if (h == NULL
        || ngx_http_paygw_trace_parse(&h->value, id, flags) != NGX_OK)
    {
        /* a new trace: nginx's own random request id */

        pmcf = ngx_http_get_module_main_conf(r, ngx_http_paygw_module);

        rid = ngx_http_get_indexed_variable(r->main,
                                            pmcf->request_id_index);
        if (rid == NULL || rid->not_found || rid->len != 32) {
            return NGX_ERROR;
        }

        ngx_memcpy(id, rid->data, 32);
    }

    v->data = id;
    v->len = 32;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_traceparent(ngx_http_request_t *r, ngx_str_t *out)
{
    u_char                      *p;
    ngx_table_elt_t             *h;
    ngx_http_variable_value_t   *vv;
    ngx_http_paygw_main_conf_t  *pmcf;
    u_char                       span[8], id[32], flags[2];

    /* our span: the trace goes on, the parent is this call */

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_paygw_module);

    vv = ngx_http_get_indexed_variable(r->main, pmcf->trace_id_index);
    if (vv == NULL || vv->not_found || vv->len != 32
        || RAND_bytes(span, sizeof(span)) != 1)
    {
        return NGX_ERROR;
    }

    h = ngx_http_paygw_traceparent_header(r->main);

    if (h == NULL
        || ngx_http_paygw_trace_parse(&h->value, id, flags) != NGX_OK)
    {
        flags[0] = '0';
        flags[1] = '1';
    }

    out->data = ngx_pnalloc(r->pool, 55);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(out->data, "00-", 3);
    p = ngx_cpymem(p, vv->data, 32);
    *p++ = '-';
    p = ngx_hex_dump(p, span, sizeof(span));
    *p++ = '-';
    *p++ = flags[0];
    *p++ = flags[1];

    out->len = p - out->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_key_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t  id;

    if (ngx_http_paygw_auth_key_id(r->main, &id) != NGX_OK) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = id.data;
    v->len = id.len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_ctx_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                   s;
    ngx_http_paygw_ctx_t       *ctx;
    ngx_http_paygw_loc_conf_t  *plcf;
    static const char          *idem[] = { "none", "new", "replayed",
                                           "in_use", "reused", "none" };

    /* only API requests carry the API ctx */

    plcf = ngx_http_get_module_loc_conf(r->main, ngx_http_paygw_module);
    ctx = plcf->api ? ngx_http_get_module_ctx(r->main, ngx_http_paygw_module)
                    : NULL;

    ngx_str_null(&s);

    if (ctx) {
        switch (data) {

        case NGX_HTTP_PAYGW_VAR_MERCHANT:
            if (ctx->auth.key && ctx->merchant_id.len) {
                s = ctx->merchant_id;
            }
            break;

        case NGX_HTTP_PAYGW_VAR_PAYMENT:
            s = ctx->payment.payment_no.len ? ctx->payment.payment_no
                                            : ctx->refund.payment_no;
            if (s.len == 0 && ctx->api != NGX_HTTP_PAYGW_API_GET_REFUND) {
                s = ctx->object_no;
            }
            break;

        case NGX_HTTP_PAYGW_VAR_CHANNEL:
            s = ctx->payment.channel;
            break;

        default: /* NGX_HTTP_PAYGW_VAR_IDEMPOTENCY */
            if (ctx->idem.key.len && ctx->idem.state < 6) {
                s.data = (u_char *) idem[ctx->idem.state];
                s.len = ngx_strlen(s.data);
            }
        }
    }

    if (s.data == NULL || s.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->data = s.data;
    v->len = s.len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}
