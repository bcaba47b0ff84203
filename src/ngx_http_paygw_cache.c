
/*
 * paygw: GET /v1/payments/{no} from Redis.
 *
 * A payment whose answer no longer depends on time or a provider
 * (succeeded, failed, closed, partially or fully refunded) is kept
 * rendered in one Redis hash per payment, pg:{<merchant>}:pay:<payment_no>
 * (the merchant's hash tag, as its nonces carry: on a Redis Cluster the
 * read rides in the nonce's pipeline, which must stay in one slot):
 *
 *     b  the answer's body        m  its merchant     c  its channel
 *     g  a generation, bumped by every writer's mark and unmark
 *     w  writers between their mark and their unmark
 *
 * A GET reads b, m, c and g in the round trip that checks its nonce; a
 * hit answers without MySQL.  A miss reads MySQL and fills b only if g
 * is still what it saw and no writer is marked (one Lua script).  A
 * writer of such a payment (a refund's settlement is the only one: every
 * other transition leaves a state that is never cached) marks the key
 * before its transaction and unmarks it after: both drop b and bump g.
 * A writer whose mark fails does not write.  The argument for why no
 * stale body can be served once a writer answered is in
 * docs/architecture.md, "Payment cache".
 */


#include "ngx_http_paygw_cache.h"
#include "ngx_http_paygw_api.h"
#include "ngx_http_paygw_states.h"


static ngx_int_t ngx_http_paygw_cache_key(ngx_http_request_t *r,
    ngx_str_t *merchant_id, ngx_str_t *payment_no, ngx_str_t *key);
static ngx_int_t ngx_http_paygw_cache_filled(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_uint_t ngx_http_paygw_cache_final(ngx_http_paygw_status_e s);


/* KEYS[1] the payment; ARGV: generation seen, body, merchant, channel, ttl */

static const char  ngx_http_paygw_cache_fill_script[] =
    "local v = redis.call('HMGET', KEYS[1], 'g', 'w') "
    "if (v[1] or '') ~= ARGV[1] then return 0 end "
    "if tonumber(v[2] or '0') > 0 then return 0 end "
    "redis.call('HSET', KEYS[1], 'b', ARGV[2], 'm', ARGV[3], 'c', ARGV[4]) "
    "redis.call('PEXPIRE', KEYS[1], ARGV[5]) "
    "return 1";


/* KEYS[1] the payment; ARGV: +1 (mark) or -1 (unmark), fence ttl */

static const char  ngx_http_paygw_cache_mark_script[] =
    "redis.call('HDEL', KEYS[1], 'b', 'm', 'c') "
    "redis.call('HINCRBY', KEYS[1], 'g', 1) "
    "local w = redis.call('HINCRBY', KEYS[1], 'w', ARGV[1]) "
    "if w <= 0 then redis.call('HDEL', KEYS[1], 'w') end "
    "redis.call('PEXPIRE', KEYS[1], ARGV[2]) "
    "return 1";


static ngx_int_t
ngx_http_paygw_cache_key(ngx_http_request_t *r, ngx_str_t *merchant_id,
    ngx_str_t *payment_no, ngx_str_t *key)
{
    /* the merchant is the hash tag: the slot of its nonces and records */

    key->data = ngx_pnalloc(r->pool, merchant_id->len + payment_no->len
                                     + sizeof("pg:{}:pay:"));
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    key->len = ngx_sprintf(key->data, "pg:{%V}:pay:%V", merchant_id,
                           payment_no)
               - key->data;

    return NGX_OK;
}


/*
 * Appended to the access round trip (the nonce) of GET /v1/payments/{no}:
 * no round trip of its own.
 */

ngx_int_t
ngx_http_paygw_cache_read(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_http_paygw_redis_op_t *op)
{
    ngx_str_t  argv[6];

    /*
     * An admin key's GET names no merchant, so not the key either: it
     * reads MySQL.
     */

    if (ctx->api != NGX_HTTP_PAYGW_API_GET || ctx->object_no.len == 0
        || ctx->merchant_id.len == 0
        || (ctx->merchant_id.len == 1 && ctx->merchant_id.data[0] == '*'))
    {
        return NGX_OK;
    }

    ngx_str_set(&argv[0], "HMGET");

    if (ngx_http_paygw_cache_key(r, &ctx->merchant_id, &ctx->object_no,
                                 &argv[1])
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_str_set(&argv[2], "b");
    ngx_str_set(&argv[3], "m");
    ngx_str_set(&argv[4], "c");
    ngx_str_set(&argv[5], "g");

    if (ngx_http_paygw_redis_command_argv(r, op, 6, argv) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->cache_reply = op->cmds.nelts - 1;
    ctx->cache_at = ngx_current_msec;
    ctx->cache_read = 1;

    return NGX_OK;
}


/*
 * NGX_OK: the answer is in ctx.  NGX_DECLINED: ask MySQL; a miss that
 * can be filled keeps the generation it saw.
 */

ngx_int_t
ngx_http_paygw_cache_hit(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    redisReply  *reply, **e;

    if (!ctx->cache_read) {
        return NGX_DECLINED;
    }

    reply = ctx->redis->call.ok ? ctx->redis->replies[ctx->cache_reply]
                                : NULL;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 4)
    {
        /* whatever Redis said, MySQL answers; nothing is filled */
        ctx->cache_read = 0;
        return NGX_DECLINED;
    }

    e = reply->element;

    if (e[3]->type == REDIS_REPLY_STRING) {
        ctx->cache_gen.data = (u_char *) e[3]->str;
        ctx->cache_gen.len = e[3]->len;

    } else {
        ngx_str_set(&ctx->cache_gen, "");
    }

    if (e[0]->type != REDIS_REPLY_STRING || e[1]->type != REDIS_REPLY_STRING
        || e[2]->type != REDIS_REPLY_STRING)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "paygw cache: miss payment %V", &ctx->object_no);
        return NGX_DECLINED;
    }

    /* another merchant's payment: MySQL says 404 as it always did */

    if (!(ctx->merchant_id.len == 1 && ctx->merchant_id.data[0] == '*')
        && (ctx->merchant_id.len != e[1]->len
            || ngx_strncmp(ctx->merchant_id.data, e[1]->str, e[1]->len) != 0))
    {
        ctx->cache_read = 0;
        return NGX_DECLINED;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw cache: hit payment %V", &ctx->object_no);

    ctx->payment.payment_no = ctx->object_no;
    ctx->payment.merchant_id.data = (u_char *) e[1]->str;
    ctx->payment.merchant_id.len = e[1]->len;
    ctx->payment.channel.data = (u_char *) e[2]->str;
    ctx->payment.channel.len = e[2]->len;

    ctx->response.data = (u_char *) e[0]->str;
    ctx->response.len = e[0]->len;
    ctx->status = NGX_HTTP_OK;

    return NGX_OK;
}


/*
 * After a miss answered 200 from MySQL with no change: keep the answer
 * if the payment's state is final and no writer came since the read.
 * NGX_DECLINED: nothing to do; NGX_AGAIN: wait for Redis.
 */

ngx_int_t
ngx_http_paygw_cache_fill(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_str_t                   argv[9];
    ngx_http_paygw_payment_t   *p;
    ngx_http_paygw_redis_op_t  *op;
    u_char                      ttl[NGX_INT_T_LEN];

    p = &ctx->payment;

    /*
     * A reader older than the fence's life could miss a writer's mark
     * that expired meanwhile: it does not fill.
     */

    if (!ctx->cache_read || ctx->api != NGX_HTTP_PAYGW_API_GET
        || ctx->status != NGX_HTTP_OK || ctx->reread
        || !ngx_http_paygw_cache_final(p->status)
        || ngx_current_msec - ctx->cache_at >= NGX_HTTP_PAYGW_CACHE_FILL_AGE)
    {
        return NGX_DECLINED;
    }

    ctx->cache_read = 0;

    op = ngx_http_paygw_redis_create(r);
    if (op == NULL) {
        return NGX_DECLINED;
    }

    ngx_str_set(&argv[0], "EVAL");
    argv[1].data = (u_char *) ngx_http_paygw_cache_fill_script;
    argv[1].len = sizeof(ngx_http_paygw_cache_fill_script) - 1;
    ngx_str_set(&argv[2], "1");

    if (ngx_http_paygw_cache_key(r, &p->merchant_id, &p->payment_no,
                                 &argv[3])
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    argv[4] = ctx->cache_gen;
    argv[5] = ctx->response;
    argv[6] = p->merchant_id;
    argv[7] = p->channel;
    argv[8].data = ttl;
    argv[8].len = ngx_sprintf(ttl, "%M", (ngx_msec_t)
                              NGX_HTTP_PAYGW_CACHE_TTL) - ttl;

    if (ngx_http_paygw_redis_command_argv(r, op, 9, argv) != NGX_OK
        || ngx_http_paygw_redis_send(r, op) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    ctx->cache = op;
    ctx->waiting = &op->call;
    ctx->next = ngx_http_paygw_cache_filled;

    return NGX_AGAIN;
}


static ngx_int_t
ngx_http_paygw_cache_filled(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    /* the answer stands whatever Redis said */

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw cache: fill payment %V: %s",
                   &ctx->payment.payment_no,
                   !ctx->cache->call.ok ? "redis failed"
                   : ctx->cache->replies[0]->type == REDIS_REPLY_INTEGER
                     && ctx->cache->replies[0]->integer == 1
                     ? "kept" : "refused (a writer came)");

    return NGX_OK;
}


/*
 * A writer's mark (+1, before its transaction) or unmark (-1, after
 * it, whatever became of it).  The caller sets ctx->next and returns
 * NGX_AGAIN on NGX_OK; NGX_ERROR: nothing was sent.
 */

ngx_int_t
ngx_http_paygw_cache_mark(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_str_t *merchant_id, ngx_str_t *payment_no, ngx_int_t delta)
{
    ngx_str_t                   argv[6];
    ngx_http_paygw_redis_op_t  *op;
    u_char                      ttl[NGX_INT_T_LEN];

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw cache: %s payment %V",
                   delta > 0 ? "mark" : "unmark", payment_no);

    op = ngx_http_paygw_redis_create(r);
    if (op == NULL) {
        return NGX_ERROR;
    }

    ngx_str_set(&argv[0], "EVAL");
    argv[1].data = (u_char *) ngx_http_paygw_cache_mark_script;
    argv[1].len = sizeof(ngx_http_paygw_cache_mark_script) - 1;
    ngx_str_set(&argv[2], "1");

    if (ngx_http_paygw_cache_key(r, merchant_id, payment_no, &argv[3])
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (delta > 0) {
        ngx_str_set(&argv[4], "1");

    } else {
        ngx_str_set(&argv[4], "-1");
    }

    argv[5].data = ttl;
    argv[5].len = ngx_sprintf(ttl, "%M", (ngx_msec_t)
                              NGX_HTTP_PAYGW_CACHE_FENCE) - ttl;

    if (ngx_http_paygw_redis_command_argv(r, op, 6, argv) != NGX_OK
        || ngx_http_paygw_redis_send(r, op) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ctx->cache = op;
    ctx->waiting = &op->call;

    return NGX_OK;
}


/* whether the last mark or unmark is in Redis */

ngx_int_t
ngx_http_paygw_cache_marked(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    redisReply  *reply;

    if (!ctx->cache->call.ok) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw cache: redis unavailable: %V",
                      &ctx->cache->call.error);
        return NGX_ERROR;
    }

    reply = ctx->cache->replies[0];

    if (reply->type != REDIS_REPLY_INTEGER) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw cache: unexpected Redis reply%s%s",
                      reply->type == REDIS_REPLY_ERROR ? ": " : "",
                      reply->type == REDIS_REPLY_ERROR ? reply->str : "");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_http_paygw_cache_final(ngx_http_paygw_status_e s)
{
    /* what a GET answers without a provider, and the same at any time */

    switch (s) {

    case NGX_HTTP_PAYGW_STATUS_SUCCEEDED:
    case NGX_HTTP_PAYGW_STATUS_FAILED:
    case NGX_HTTP_PAYGW_STATUS_CLOSED:
    case NGX_HTTP_PAYGW_STATUS_PARTIALLY_REFUNDED:
    case NGX_HTTP_PAYGW_STATUS_REFUNDED:
        return 1;

    default:
        return 0;
    }
}
