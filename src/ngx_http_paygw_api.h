
/*
 * paygw: the merchant API's CONTENT phase: the driver (api.c) and the
 * endpoints it runs.
 */


#ifndef _NGX_HTTP_PAYGW_API_H_INCLUDED_
#define _NGX_HTTP_PAYGW_API_H_INCLUDED_


#include "ngx_http_paygw_types.h"


/* ngx_http_paygw_payments.c: the endpoints */
ngx_int_t ngx_http_paygw_create(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_get(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_close(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_resolve(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);

/* ngx_http_paygw_refunds.c */
ngx_int_t ngx_http_paygw_refund(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_get_refund(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);

/* ngx_http_paygw_notify.c: provider callbacks */
ngx_int_t ngx_http_paygw_notify(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);

/* ngx_http_paygw_api.c */
ngx_int_t ngx_http_paygw_fail(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_uint_t status, const char *code,
    const char *fmt, ...);
ngx_int_t ngx_http_paygw_fail_with(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_uint_t status, const char *code,
    json_t *extra, const char *fmt, ...);
ngx_int_t ngx_http_paygw_respond(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_uint_t status, json_t *doc);
void ngx_http_paygw_fixed_error(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_uint_t status, const char *code);
char *ngx_http_paygw_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_paygw_access_init(ngx_conf_t *cf);


#endif /* _NGX_HTTP_PAYGW_API_H_INCLUDED_ */
