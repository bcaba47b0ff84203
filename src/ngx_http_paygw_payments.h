
/*
 * paygw: what the payment and refund state machines share.
 *
 * Each endpoint is a chain of named steps.  A step reads the answer of
 * the backend call before it, then either decides the answer (NGX_OK,
 * NGX_DECLINED, NGX_ERROR) or starts the next call, sets ctx->next to
 * the step that reads its answer and returns NGX_AGAIN.
 */


#ifndef _NGX_HTTP_PAYGW_PAYMENTS_H_INCLUDED_
#define _NGX_HTTP_PAYGW_PAYMENTS_H_INCLUDED_


#include "ngx_http_paygw_api.h"
#include "ngx_http_paygw_channel.h"
#include "ngx_http_paygw_render.h"
#include "ngx_http_paygw_policy.h"
#include "ngx_http_paygw_risk.h"


ngx_int_t ngx_http_paygw_steps(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_http_paygw_step_pt first);
ngx_int_t ngx_http_paygw_mysql_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_mysql_wait(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_http_paygw_step_pt next);
ngx_int_t ngx_http_paygw_mysql_down(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_select(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_uint_t by_business_no,
    ngx_http_paygw_step_pt next);
ngx_int_t ngx_http_paygw_selected(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_provider_step(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_http_paygw_step_pt next,
    ngx_http_paygw_step_pt call);
ngx_int_t ngx_http_paygw_retry(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_http_paygw_step_pt call,
    ngx_http_paygw_outcome_pt outcome);


#endif /* _NGX_HTTP_PAYGW_PAYMENTS_H_INCLUDED_ */
