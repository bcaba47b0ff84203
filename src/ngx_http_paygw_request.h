
/*
 * paygw: routing of API requests and their validation.
 */


#ifndef _NGX_HTTP_PAYGW_REQUEST_H_INCLUDED_
#define _NGX_HTTP_PAYGW_REQUEST_H_INCLUDED_


#include "ngx_http_paygw_types.h"


ngx_int_t ngx_http_paygw_route(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_parse_create(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_parse_refund(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_parse_empty(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_identifier(ngx_str_t *s);
ngx_int_t ngx_http_paygw_body_wipe_add(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
void ngx_http_paygw_json_init(void);


#endif /* _NGX_HTTP_PAYGW_REQUEST_H_INCLUDED_ */
