
/*
 * paygw: idempotency keys (draft-ietf-httpapi-idempotency-key-header,
 * Stripe semantics) and the nonce replay window, both in Redis.
 */


#ifndef _NGX_HTTP_PAYGW_IDEMPOTENCY_H_INCLUDED_
#define _NGX_HTTP_PAYGW_IDEMPOTENCY_H_INCLUDED_


#include "ngx_http_paygw.h"
#include "ngx_http_paygw_redis.h"
#include "ngx_http_paygw_auth.h"


#define NGX_HTTP_PAYGW_IDEM_NONE      0   /* a request without a key */
#define NGX_HTTP_PAYGW_IDEM_LOCKED    1   /* ours to run */
#define NGX_HTTP_PAYGW_IDEM_REPLAY    2   /* done before: answer the same */
#define NGX_HTTP_PAYGW_IDEM_IN_USE    3   /* still running elsewhere */
#define NGX_HTTP_PAYGW_IDEM_REUSED    4   /* same key, other request */
#define NGX_HTTP_PAYGW_NONCE_REPLAYED 5


typedef struct {
    ngx_str_t                     key;          /* as the client sent it */
    ngx_str_t                     redis_key;
    ngx_str_t                     nonce_key;
    u_char                        fingerprint[32];
    ngx_uint_t                    state;
    ngx_uint_t                    status;       /* a replayed response */
    ngx_str_t                     body;
    ngx_str_t                     record;       /* our running record */
    unsigned                      held:1;       /* we hold the lock */
} ngx_http_paygw_idem_t;


ngx_int_t ngx_http_paygw_idem_header(ngx_http_request_t *r, ngx_str_t *key,
    const char **code, const char **why);
ngx_int_t ngx_http_paygw_idem_prepare(ngx_http_request_t *r,
    ngx_http_paygw_idem_t *idem, ngx_http_paygw_auth_t *auth,
    ngx_str_t *merchant, ngx_str_t *body);
ngx_int_t ngx_http_paygw_idem_begin(ngx_http_request_t *r,
    ngx_http_paygw_idem_t *idem, ngx_http_paygw_redis_op_t *op,
    ngx_msec_t lock_ttl);
ngx_int_t ngx_http_paygw_idem_result(ngx_http_request_t *r,
    ngx_http_paygw_idem_t *idem, ngx_http_paygw_redis_op_t *op);
ngx_int_t ngx_http_paygw_idem_release(ngx_http_request_t *r,
    ngx_http_paygw_idem_t *idem, ngx_http_paygw_redis_op_t *op);
ngx_int_t ngx_http_paygw_idem_finish(ngx_http_request_t *r,
    ngx_http_paygw_idem_t *idem, ngx_http_paygw_redis_op_t *op,
    ngx_uint_t store, ngx_uint_t status, ngx_str_t *body,
    ngx_msec_t retention);


#endif /* _NGX_HTTP_PAYGW_IDEMPOTENCY_H_INCLUDED_ */
