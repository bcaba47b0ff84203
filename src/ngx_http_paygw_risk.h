
/*
 * paygw: the risk rules (paygw_risk), checked in Redis on create.
 */


#ifndef _NGX_HTTP_PAYGW_RISK_H_INCLUDED_
#define _NGX_HTTP_PAYGW_RISK_H_INCLUDED_


#include "ngx_http_paygw_types.h"


ngx_int_t ngx_http_paygw_risk_enabled(ngx_http_request_t *r);
const char *ngx_http_paygw_risk_ceiling(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_risk_send(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_http_paygw_verdict_e ngx_http_paygw_risk_result(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);


#endif /* _NGX_HTTP_PAYGW_RISK_H_INCLUDED_ */
