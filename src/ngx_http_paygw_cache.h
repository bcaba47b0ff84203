
/*
 * paygw: GET /v1/payments/{no} from Redis (docs/architecture.md,
 * "Payment cache").
 */


#ifndef _NGX_HTTP_PAYGW_CACHE_H_INCLUDED_
#define _NGX_HTTP_PAYGW_CACHE_H_INCLUDED_


#include "ngx_http_paygw_types.h"
#include "ngx_http_paygw_redis.h"


/* how long a rendered payment stays, if nothing changes it */
#define NGX_HTTP_PAYGW_CACHE_TTL       600000

/* how long a writer's mark outlives its last mark or unmark */
#define NGX_HTTP_PAYGW_CACHE_FENCE     60000

/* a reader older than this never fills the cache (< FENCE) */
#define NGX_HTTP_PAYGW_CACHE_FILL_AGE  20000


ngx_int_t ngx_http_paygw_cache_read(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_http_paygw_redis_op_t *op);
ngx_int_t ngx_http_paygw_cache_hit(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_cache_fill(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_cache_mark(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_str_t *merchant_id, ngx_str_t *payment_no,
    ngx_int_t delta);
ngx_int_t ngx_http_paygw_cache_marked(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);


#endif /* _NGX_HTTP_PAYGW_CACHE_H_INCLUDED_ */
