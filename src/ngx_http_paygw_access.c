
/*
 * paygw: the ACCESS phase of the merchant API.
 *
 *     read the body -> authenticate (HMAC) -> role -> validate
 *       -> one Redis round trip: nonce replay window + idempotency key
 *       [-> the key given back, if that round trip was cut short]
 *
 * Nothing here writes anything durable: a request rejected in this
 * phase changes nothing.  Whatever the outcome, the response is made by
 * the content handler, so that every error has the API's JSON shape.
 */


#include "ngx_http_paygw_request.h"
#include "ngx_http_paygw_policy.h"
#include "ngx_http_paygw_risk.h"
#include "ngx_http_paygw_api.h"
#include "ngx_http_paygw_channel.h"
#include "ngx_http_paygw_metrics.h"
#include "ngx_http_paygw_webhook.h"
#include "ngx_http_paygw_cache.h"


#define NGX_HTTP_PAYGW_ACCESS_ROUTE    0
#define NGX_HTTP_PAYGW_ACCESS_BODY     1
#define NGX_HTTP_PAYGW_ACCESS_READING  2
#define NGX_HTTP_PAYGW_ACCESS_CHECK    3
#define NGX_HTTP_PAYGW_ACCESS_REDIS    4
#define NGX_HTTP_PAYGW_ACCESS_RELEASE  5
#define NGX_HTTP_PAYGW_ACCESS_DONE     6


static ngx_int_t ngx_http_paygw_access_handler(ngx_http_request_t *r);
static void ngx_http_paygw_access_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_paygw_access_collect(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_access_text(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_access_check(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_access_guards(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_access_send(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_access_role(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_access_validate(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static void ngx_http_paygw_access_redis(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_access_release(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);


ngx_int_t
ngx_http_paygw_access_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt         *h;
    ngx_http_core_main_conf_t   *cmcf;
    ngx_http_paygw_main_conf_t  *pmcf;
    static ngx_str_t             request_id = ngx_string("request_id");
    static ngx_str_t             trace_id = ngx_string("paygw_trace_id");

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_paygw_module);

    pmcf->request_id_index = ngx_http_get_variable_index(cf, &request_id);
    pmcf->trace_id_index = ngx_http_get_variable_index(cf, &trace_id);

    if (pmcf->request_id_index == NGX_ERROR
        || pmcf->trace_id_index == NGX_ERROR)
    {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_paygw_access_handler;

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_access_handler(ngx_http_request_t *r)
{
    ngx_int_t                   rc;
    ngx_http_paygw_ctx_t       *ctx;
    ngx_http_paygw_loc_conf_t  *plcf;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_paygw_module);

    if (!plcf->api || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_paygw_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_paygw_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_http_set_ctx(r, ctx, ngx_http_paygw_module);

        if (ngx_http_paygw_access_text(r, ctx) != NGX_OK
            || ngx_http_paygw_route(r, ctx) != NGX_OK)
        {
            ctx->access = NGX_HTTP_PAYGW_ACCESS_DONE;
            return NGX_OK;
        }

        ctx->access = NGX_HTTP_PAYGW_ACCESS_BODY;
    }

    switch (ctx->access) {

    case NGX_HTTP_PAYGW_ACCESS_BODY:

        if (r->headers_in.content_length_n > (off_t) plcf->max_body) {
            (void) ngx_http_paygw_fail(r, ctx,
                                       NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                       "request_too_large",
                                       "the body is over %uz bytes",
                                       plcf->max_body);
            ctx->access = NGX_HTTP_PAYGW_ACCESS_DONE;
            return NGX_OK;
        }

        ctx->access = NGX_HTTP_PAYGW_ACCESS_READING;

        rc = ngx_http_read_client_request_body(r, ngx_http_paygw_access_body);

        if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            return rc;
        }

        /* the body handler runs the phases again, in time */

        ngx_http_finalize_request(r, NGX_DONE);
        return NGX_DONE;

    case NGX_HTTP_PAYGW_ACCESS_CHECK:

        if (ngx_http_paygw_access_check(r, ctx) == NGX_AGAIN) {
            ctx->access = NGX_HTTP_PAYGW_ACCESS_REDIS;
            return NGX_AGAIN;
        }

        ctx->access = NGX_HTTP_PAYGW_ACCESS_DONE;
        return NGX_OK;

    case NGX_HTTP_PAYGW_ACCESS_REDIS:

        if (!ctx->redis->call.done) {
            return NGX_AGAIN;
        }

        /* a Redis that lost its script cache: once more, as EVAL */

        if (ngx_http_paygw_redis_noscript(r, ctx->redis) == NGX_OK) {
            return NGX_AGAIN;
        }

        ngx_http_paygw_access_redis(r, ctx);

        if (ngx_http_paygw_access_release(r, ctx) == NGX_AGAIN) {
            ctx->access = NGX_HTTP_PAYGW_ACCESS_RELEASE;
            return NGX_AGAIN;
        }

        ctx->access = NGX_HTTP_PAYGW_ACCESS_DONE;
        return NGX_OK;

    case NGX_HTTP_PAYGW_ACCESS_RELEASE:

        if (!ctx->redis->call.done) {
            return NGX_AGAIN;
        }

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "paygw access: idempotency key given back: %s",
                       ctx->redis->call.ok ? "done" : "failed, it expires");

        ctx->access = NGX_HTTP_PAYGW_ACCESS_DONE;
        return NGX_OK;

    case NGX_HTTP_PAYGW_ACCESS_DONE:
        return NGX_OK;

    default: /* NGX_HTTP_PAYGW_ACCESS_READING */
        return NGX_AGAIN;
    }
}


static void
ngx_http_paygw_access_body(ngx_http_request_t *r)
{
    ngx_http_paygw_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_paygw_module);

    ctx->access = NGX_HTTP_PAYGW_ACCESS_CHECK;

    r->preserve_body = 1;
    r->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(r);
}


static ngx_int_t
ngx_http_paygw_access_text(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    /*
     * The decoded path and the query (raw and decoded) are the client's
     * text: refused here unless valid UTF-8, before anything routes on
     * or quotes them.
     */

    u_char  *dst, *src, *args;

    /* the query's values, as a reader of them would decode them */

    args = ngx_pnalloc(r->pool, r->args.len + 1);
    if (args == NULL) {
        return NGX_ERROR;
    }

    src = r->args.data;
    dst = args;

    ngx_unescape_uri(&dst, &src, r->args.len, 0);

    if (ngx_http_paygw_utf8_valid(r->uri.data, r->uri.len) != NGX_OK
        || ngx_http_paygw_utf8_valid(r->args.data, r->args.len) != NGX_OK
        || ngx_http_paygw_utf8_valid(args, dst - args) != NGX_OK)
    {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request",
                                   "the request path or query is not "
                                   "valid UTF-8");
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_access_check(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t   rc;
    const char *why;

    if (ngx_http_paygw_access_collect(r, ctx) != NGX_OK) {
        return NGX_OK;
    }

    /* a provider's callback is authenticated by its own signature */

    if (ctx->api == NGX_HTTP_PAYGW_API_NOTIFY) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "paygw access: callback, passed to its verifier");
        ctx->access_passed = 1;
        return NGX_OK;
    }

    rc = ngx_http_paygw_authenticate(r, &ctx->body, &ctx->auth, &why);

    if (rc == NGX_ERROR) {
        (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error", "%s", why);
        return NGX_OK;
    }

    if (rc != NGX_OK) {
        (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_UNAUTHORIZED,
                                   "unauthenticated", "%s", why);
        return NGX_OK;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw access: key \"%V\" authenticated",
                   &ctx->auth.key_id);

    ctx->merchant_id = ctx->auth.key->merchant_id;

    if (ngx_http_paygw_access_guards(r, ctx) != NGX_OK) {

        /*
         * Refused after a valid signature: the nonce is spent all the
         * same (one Redis round trip, no idempotency key), so the same
         * signed bytes sent again are a replay, not a second try.
         */

        if (ctx->status == 0) {
            ngx_http_paygw_fixed_error(r, ctx,
                                       NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "internal_error");
        }

        ngx_str_null(&ctx->idem.key);
    }

    return ngx_http_paygw_access_send(r, ctx);
}


static ngx_int_t
ngx_http_paygw_access_guards(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    const char  *why, *code;

    if (ngx_http_paygw_access_role(r, ctx) != NGX_OK
        || ngx_http_paygw_access_validate(r, ctx) != NGX_OK
        || ngx_http_paygw_policy_check(r, ctx) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (r->method == NGX_HTTP_POST
        && ngx_http_paygw_idem_header(r, &ctx->idem.key, &code, &why)
           != NGX_OK)
    {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST, code,
                                   "%s", why);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_access_send(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_msec_t                   lock;
    ngx_http_paygw_loc_conf_t   *plcf;
    ngx_http_paygw_main_conf_t  *pmcf;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_paygw_module);
    pmcf = ngx_http_get_module_main_conf(r, ngx_http_paygw_module);

    /*
     * The lock must not expire while the request still runs: no shorter
     * than the longest create (its MySQL writes and every provider try,
     * see ngx_http_paygw_channels_budget()).
     */

    lock = ngx_max(plcf->idem_lock, pmcf->create_budget);

    ctx->redis = ngx_http_paygw_redis_create(r);

    if (ctx->redis == NULL
        || ngx_http_paygw_idem_prepare(r, &ctx->idem, &ctx->auth,
                                       &ctx->merchant_id, &ctx->body)
           != NGX_OK
        || ngx_http_paygw_idem_begin(r, &ctx->idem, ctx->redis, lock)
           != NGX_OK
        || ngx_http_paygw_cache_read(r, ctx, ctx->redis) != NGX_OK
        || ngx_http_paygw_redis_send(r, ctx->redis) != NGX_OK)
    {
        /* a refusal already decided stands; otherwise nothing is safe */

        if (ctx->status == 0) {
            (void) ngx_http_paygw_fail(r, ctx,
                                       NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "internal_error",
                                       "cannot reach Redis");
        }

        return NGX_OK;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw access: nonce%s sent to Redis%s",
                   ctx->idem.key.len ? " and idempotency key" : "",
                   ctx->status ? " (request refused)" : "");

    return NGX_AGAIN;
}


/*
 * The idempotency round trip was cut off (Redis dropped the connection)
 * after its script may have run: the key may be locked by nobody.  One
 * more round trip deletes the lock if it is the one this request wrote,
 * so that the client's retry runs instead of answering 409 until the
 * lock expires.  Not after a timeout: a Redis that hangs would only hang
 * again, and the client would wait twice.  The answer stays the 503.
 */

static ngx_int_t
ngx_http_paygw_access_release(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_redis_op_t  *op;

    if (ctx->redis->call.ok
        || ctx->redis->call.status != NGX_HTTP_SERVICE_UNAVAILABLE
        || ctx->idem.record.len == 0
        || ctx->status != NGX_HTTP_SERVICE_UNAVAILABLE)
    {
        return NGX_DECLINED;
    }

    op = ngx_http_paygw_redis_create(r);
    if (op == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_paygw_idem_release(r, &ctx->idem, op) != NGX_OK
        || ngx_http_paygw_redis_send(r, op) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw access: idempotency round trip cut short, "
                   "giving the key back");

    /* the failed op has nothing more to read (a POST reads no cache) */

    ctx->redis = op;

    return NGX_AGAIN;
}


static ngx_int_t
ngx_http_paygw_access_collect(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    u_char                     *p;
    size_t                      len;
    ngx_chain_t                *cl;
    ngx_http_paygw_loc_conf_t  *plcf;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_paygw_module);

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        ngx_str_set(&ctx->body, "");
        return NGX_OK;
    }

    if (ngx_http_paygw_body_wipe_add(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    /* a body nginx had to write to disk would need a blocking read */

    if (r->request_body->temp_file) {
        (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                   "request_too_large",
                                   "the body is larger than "
                                   "client_body_buffer_size");
        return NGX_DECLINED;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += cl->buf->last - cl->buf->pos;
    }

    if (len > plcf->max_body) {
        (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                   "request_too_large",
                                   "the body is over %uz bytes",
                                   plcf->max_body);
        return NGX_DECLINED;
    }

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->body.data = p;
    ctx->body.len = len;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        if (cl->buf->last > cl->buf->pos) {
            p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
        }
    }

    *p = '\0';

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_access_role(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_str_t              merchant;
    ngx_http_paygw_key_t  *key;

    key = ctx->auth.key;

    if (key->role == NGX_HTTP_PAYGW_ROLE_VIEWER && r->method != NGX_HTTP_GET)
    {
        (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_FORBIDDEN, "forbidden",
                                   "key \"%V\" may only read",
                                   &key->key_id);
        return NGX_DECLINED;
    }

    if (ctx->api == NGX_HTTP_PAYGW_API_RESOLVE
        && key->role != NGX_HTTP_PAYGW_ROLE_ADMIN)
    {
        (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_FORBIDDEN, "forbidden",
                                   "only admin keys may resolve payments");
        return NGX_DECLINED;
    }

    /* webhooks: only an admin key runs a delivery round */

    if (ctx->api == NGX_HTTP_PAYGW_API_DELIVER
        && key->role != NGX_HTTP_PAYGW_ROLE_ADMIN)
    {
        (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_FORBIDDEN, "forbidden",
                                   "only admin keys may deliver webhooks");
        return NGX_DECLINED;
    }

    if (ctx->api == NGX_HTTP_PAYGW_API_CREATE
        && ctx->merchant_id.len == 1 && ctx->merchant_id.data[0] == '*')
    {
        (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_FORBIDDEN, "forbidden",
                                   "key \"%V\" belongs to no merchant and "
                                   "cannot create payments", &key->key_id);
        return NGX_DECLINED;
    }

    /*
     * A key of every merchant ("*") reading by a merchant's own number
     * (business_no, refund_no) names the merchant with merchant_id=;
     * without it a number that several merchants use is ambiguous (409).
     */

    if ((ctx->api == NGX_HTTP_PAYGW_API_FIND
         || ctx->api == NGX_HTTP_PAYGW_API_GET_REFUND)
        && ctx->merchant_id.len == 1 && ctx->merchant_id.data[0] == '*'
        && ngx_http_arg(r, (u_char *) "merchant_id", 11, &merchant)
           == NGX_OK)
    {
        if (ngx_http_paygw_identifier(&merchant) != NGX_OK) {
            (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                       "invalid_request",
                                       "merchant_id must be 1-64 "
                                       "characters of [A-Za-z0-9_.:-]");
            return NGX_DECLINED;
        }

        ctx->merchant_id = merchant;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_access_validate(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t  rc;

    switch (ctx->api) {

    case NGX_HTTP_PAYGW_API_CREATE:
        rc = ngx_http_paygw_parse_create(r, ctx);
        if (rc != NGX_OK) {
            return rc;
        }

        ctx->channel = ngx_http_paygw_channel_find(r, &ctx->payment.channel);

        if (ctx->channel == NULL) {
            (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                       "invalid_request",
                                       "channel is unknown or not enabled");
            return NGX_DECLINED;
        }

        return NGX_OK;

    case NGX_HTTP_PAYGW_API_REFUND:
        return ngx_http_paygw_parse_refund(r, ctx);

    case NGX_HTTP_PAYGW_API_CLOSE:
    case NGX_HTTP_PAYGW_API_RESOLVE:
    case NGX_HTTP_PAYGW_API_DELIVER:
    case NGX_HTTP_PAYGW_API_REDELIVER:
        return ngx_http_paygw_parse_empty(r, ctx);

    case NGX_HTTP_PAYGW_API_FIND:
        if (ngx_http_arg(r, (u_char *) "business_no", 11, &ctx->object_no)
            != NGX_OK
            || ngx_http_paygw_identifier(&ctx->object_no) != NGX_OK)
        {
            (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                       "invalid_request",
                                       "business_no must be 1-64 "
                                       "characters of [A-Za-z0-9_.:-]");
            return NGX_DECLINED;
        }

        return NGX_OK;
    }

    return NGX_OK;
}


static void
ngx_http_paygw_access_redis(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_idem_t  *idem;

    idem = &ctx->idem;

    /*
     * Without the replay window there is no safe answer: fail closed.
     * A request refused before the round trip keeps its refusal.
     */

    if (!ctx->redis->call.ok) {
        if (ctx->status == 0) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "paygw: redis unavailable: %V",
                          &ctx->redis->call.error);

            (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       "backend_unavailable",
                                       "redis is unavailable; retry");
        }

        return;
    }

    if (ngx_http_paygw_idem_result(r, idem, ctx->redis) != NGX_OK) {
        if (ctx->status == 0) {
            (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                       "backend_unavailable",
                                       "redis answered unexpectedly");
        }

        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw access: redis says state %ui, refused: %ui",
                   idem->state, ctx->status);

    if (idem->state == NGX_HTTP_PAYGW_NONCE_REPLAYED) {
        (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_UNAUTHORIZED,
                                   "unauthenticated",
                                   "nonce already used (replay)");
        return;
    }

    if (ctx->status != 0) {
        return;
    }

    switch (idem->state) {

    case NGX_HTTP_PAYGW_IDEM_LOCKED:
        ngx_http_paygw_m_idempotency(r, NGX_HTTP_PAYGW_M_IDEM_NEW);

        /* the last check: every one before it passed */
        ctx->access_passed = 1;
        return;

    case NGX_HTTP_PAYGW_IDEM_NONE:
        ctx->access_passed = 1;
        return;

    case NGX_HTTP_PAYGW_IDEM_REUSED:
        ngx_http_paygw_m_idempotency(r, NGX_HTTP_PAYGW_M_IDEM_REUSED);
        (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_PAYGW_UNPROCESSABLE,
                                   "idempotency_key_reused",
                                   "this Idempotency-Key was used for a "
                                   "different request");
        return;

    case NGX_HTTP_PAYGW_IDEM_IN_USE:
        ngx_http_paygw_m_idempotency(r, NGX_HTTP_PAYGW_M_IDEM_IN_USE);
        (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_CONFLICT,
                                   "idempotency_key_in_use",
                                   "a request with this Idempotency-Key is "
                                   "still running");
        return;

    case NGX_HTTP_PAYGW_IDEM_REPLAY:
        ngx_http_paygw_m_idempotency(r, NGX_HTTP_PAYGW_M_IDEM_REPLAYED);
        ctx->replayed = 1;
        ctx->status = idem->status;
        ctx->response = idem->body;
        return;
    }
}
