
/*
 * paygw: the authorization policy (paygw_policy).
 */


#ifndef _NGX_HTTP_PAYGW_POLICY_H_INCLUDED_
#define _NGX_HTTP_PAYGW_POLICY_H_INCLUDED_


#include "ngx_http_paygw_types.h"


ngx_int_t ngx_http_paygw_policy_check(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);


#endif /* _NGX_HTTP_PAYGW_POLICY_H_INCLUDED_ */
