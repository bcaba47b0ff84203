
/*
 * paygw: the refund endpoints, chains of named steps like the payment
 * ones (see ngx_http_paygw_payments.h).
 *
 * The order of writes is what keeps money safe:
 *   refund: reserve the amount (row lock) -> refund -> settle
 * A lost provider answer leaves the refund "unknown", settled later by
 * a query.
 *
 * The steps, in the order they may run (each named in a debug line):
 *
 *   refund:      start -> selected -> reserved -> sent -> settlement;
 *                or reserved -> raced (lost to a concurrent change)
 *   get_refund:  start -> selected [-> queried -> settlement]; or
 *                queried -> sent -> settlement (the provider had no
 *                trace of it: sent again, idempotent by out_refund_no)
 *   settlement:  [marked ->] settled [-> answered [-> reread]]: a
 *                definitive answer marks the payment cache before MySQL
 *                and unmarks it after (ngx_http_paygw_cache.c); one that
 *                did not commit answers the row as it is (reread)
 *
 * A refund is never settled "failed" on absence alone: its reservation
 * is released only by the provider's own answer.
 */


#include "ngx_http_paygw_payments.h"
#include "ngx_http_paygw_store.h"
#include "ngx_http_paygw_cache.h"


static ngx_int_t ngx_http_paygw_refund_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_refund_selected(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_refund_reserve(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_refund_reserved(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_refund_raced(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_refund_sent(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_refund_refused(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);

static ngx_int_t ngx_http_paygw_get_refund_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_get_refund_selected(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_get_refund_queried(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);

static ngx_int_t ngx_http_paygw_refund_settle(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_refund_marked(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_refund_unmarked(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_refund_settled(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_refund_answered(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_refund_reread(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_refund_reread_done(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_refund_answer(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);


/* POST /v1/payments/{no}/refunds */

ngx_int_t
ngx_http_paygw_refund(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    return ngx_http_paygw_steps(r, ctx, ngx_http_paygw_refund_start);
}


static ngx_int_t
ngx_http_paygw_refund_start(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw refund: step \"start\" payment %V refund \"%V\"",
                   &ctx->object_no, &ctx->refund.refund_no);

    return ngx_http_paygw_select(r, ctx, 0, ngx_http_paygw_refund_selected);
}


static ngx_int_t
ngx_http_paygw_refund_selected(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t                  rc;
    ngx_http_paygw_payment_t  *p;

    p = &ctx->payment;

    rc = ngx_http_paygw_selected(r, ctx);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw refund: step \"selected\" payment %V: %V",
                   &ctx->object_no, ngx_http_paygw_status_name(p->status));

    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_paygw_refund_refused(r, ctx) != NGX_OK) {
        return NGX_DECLINED;
    }

    ctx->channel = ngx_http_paygw_channel_find(r, &p->channel);
    if (ctx->channel == NULL
        || ngx_http_paygw_breaker_allow(r, ctx->channel) != NGX_OK)
    {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "channel_unavailable",
                                   "channel \"%V\" is not available",
                                   &p->channel);
    }

    return ngx_http_paygw_refund_reserve(r, ctx);
}


static ngx_int_t
ngx_http_paygw_refund_reserve(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_refund_t   *rf;
    ngx_http_paygw_payment_t  *p;

    p = &ctx->payment;
    rf = &ctx->refund;

    if (ngx_http_paygw_random_no(r->pool, 'R', &rf->out_refund_no)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    rf->payment_no = p->payment_no;
    rf->merchant_id = p->merchant_id;
    rf->currency = p->currency;
    rf->status = NGX_HTTP_PAYGW_STATUS_PENDING;
    ngx_http_paygw_now(r->pool, &rf->created_at);
    rf->updated_at = rf->created_at;

    /* the amount is held on the payment row before anything is sent */

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_reserve_refund(ctx->mysql, rf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_paygw_mysql_wait(r, ctx,
                                     ngx_http_paygw_refund_reserved);
}


static ngx_int_t
ngx_http_paygw_refund_reserved(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_refund_t  *rf;

    rf = &ctx->refund;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw refund: step \"reserved\" refund %V of %V, "
                   "mysql %ud", &rf->out_refund_no, &rf->payment_no,
                   ctx->mysql->err_no);

    if (!ctx->mysql->call.ok) {
        return ngx_http_paygw_mysql_down(r, ctx);
    }

    if (ctx->mysql->err_no == NGX_HTTP_PAYGW_ER_DUP_ENTRY) {
        return ngx_http_paygw_fail_with(r, ctx, NGX_HTTP_CONFLICT,
                   "duplicate_refund_no",
                   json_pack("{s:s%}", "refund_no", rf->refund_no.data,
                             rf->refund_no.len),
                   "refund_no \"%V\" is already used", &rf->refund_no);
    }

    if (ctx->mysql->conflict) {
        /* lost to a concurrent refund or state change: say which */
        return ngx_http_paygw_select(r, ctx, 0, ngx_http_paygw_refund_raced);
    }

    if (ctx->mysql->err_no) {
        return NGX_ERROR;
    }

    ctx->side_effect = 1;

    return ngx_http_paygw_provider_step(r, ctx, ngx_http_paygw_refund_sent,
                                        ctx->channel->provider->refund);
}


static ngx_int_t
ngx_http_paygw_refund_raced(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t  rc;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw refund: step \"raced\" payment %V",
                   &ctx->object_no);

    rc = ngx_http_paygw_selected(r, ctx);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_paygw_refund_refused(r, ctx) == NGX_OK) {
        (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_PAYGW_UNPROCESSABLE,
                                   "refund_exceeds_payment",
                                   "the refunds of payment %V would "
                                   "exceed its amount",
                                   &ctx->payment.payment_no);
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_paygw_refund_sent(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t                   rc;
    ngx_http_paygw_provider_t  *pv;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw refund: step \"sent\" refund %V, attempt %ui",
                   &ctx->refund.out_refund_no, ctx->attempt);

    pv = ctx->channel->provider;

    rc = ngx_http_paygw_retry(r, ctx, pv->refund, pv->refund_outcome);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_http_paygw_refund_settle(r, ctx);
}


static ngx_int_t
ngx_http_paygw_refund_refused(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_payment_t  *p;

    p = &ctx->payment;

    /* a fully refunded payment has nothing left: 422 like any excess */

    if (p->status != NGX_HTTP_PAYGW_STATUS_SUCCEEDED
        && p->status != NGX_HTTP_PAYGW_STATUS_PARTIALLY_REFUNDED
        && p->status != NGX_HTTP_PAYGW_STATUS_REFUNDED)
    {
        (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_CONFLICT, "invalid_state",
                                   "payment %V is %V: only succeeded "
                                   "payments can be refunded",
                                   &p->payment_no,
                                   ngx_http_paygw_status_name(p->status));
        return NGX_DECLINED;
    }

    if (p->amount - p->refunded_amount - p->refund_reserved
        < ctx->refund.amount)
    {
        (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_PAYGW_UNPROCESSABLE,
                                   "refund_exceeds_payment",
                                   "payment %V has %L left to refund",
                                   &p->payment_no,
                                   p->amount - p->refunded_amount
                                   - p->refund_reserved);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* GET /v1/refunds/{refund_no} */

ngx_int_t
ngx_http_paygw_get_refund(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    return ngx_http_paygw_steps(r, ctx, ngx_http_paygw_get_refund_start);
}


static ngx_int_t
ngx_http_paygw_get_refund_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw get_refund: step \"start\" refund %V",
                   &ctx->object_no);

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    /* the settler names refunds by out_refund_no, unique everywhere */

    if ((ctx->api == NGX_HTTP_PAYGW_API_RESOLVE
         || ctx->api == NGX_HTTP_PAYGW_API_NOTIFY
         ? ngx_http_paygw_store_select_refund_out(ctx->mysql, &ctx->object_no)
         : ngx_http_paygw_store_select_refund(ctx->mysql, &ctx->merchant_id,
                                              &ctx->object_no))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ctx->mysql->read_only = 1;

    return ngx_http_paygw_mysql_wait(r, ctx,
                                     ngx_http_paygw_get_refund_selected);
}


static ngx_int_t
ngx_http_paygw_get_refund_selected(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_str_t                   channel;
    ngx_http_paygw_refund_t    *rf;
    ngx_http_paygw_sql_stmt_t  *stmt;

    rf = &ctx->refund;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw get_refund: step \"selected\" refund %V",
                   &ctx->object_no);

    if (!ctx->mysql->call.ok) {
        return ngx_http_paygw_mysql_down(r, ctx);
    }

    stmt = ctx->mysql->stmts.elts;

    if (ctx->mysql->err_no
        || ngx_http_paygw_store_row_refund(stmt, rf, &channel) != NGX_OK)
    {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_NOT_FOUND,
                                   "not_found", "no refund %V",
                                   &ctx->object_no);
    }

    if (stmt->nrows > 1) {
        /* an admin's lookup by a refund_no that merchants share */
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_CONFLICT, "ambiguous",
                                   "refund_no %V is used by several "
                                   "merchants: add merchant_id=",
                                   &ctx->object_no);
    }

    ctx->channel = ngx_http_paygw_channel_find(r, &channel);

    /* what a refund sent again needs of its payment */

    ctx->payment.payment_no = rf->payment_no;
    ctx->payment.amount = rf->payment_amount;
    ctx->payment.currency = rf->currency;

    /*
     * Still open ("pending": in flight here, or still processing there;
     * or "unknown"): the provider says what became of it.
     */

    if (!ngx_http_paygw_refund_transition_ok(rf->status,
                                             NGX_HTTP_PAYGW_STATUS_SUCCEEDED)
        || ctx->channel == NULL
        || (ctx->api == NGX_HTTP_PAYGW_API_RESOLVE
            && ngx_http_paygw_breaker_allow(r, ctx->channel) != NGX_OK))
    {
        return ngx_http_paygw_refund_answer(r, ctx);
    }

    ctx->next = ngx_http_paygw_get_refund_queried;

    return ctx->channel->provider->refund_query(r, ctx) == NGX_OK
           ? NGX_AGAIN : NGX_ERROR;
}


static ngx_int_t
ngx_http_paygw_get_refund_queried(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_refund_t  *rf;

    rf = &ctx->refund;

    ctx->channel->provider->refund_outcome(r, ctx);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw get_refund: step \"queried\" refund %V: %V",
                   &rf->refund_no,
                   ngx_http_paygw_status_name(ctx->outcome.status));

    /*
     * The provider has no trace of it: its request never arrived, or is
     * still on its way.  Absence says nothing, so the reservation stays;
     * the refund is sent again instead (idempotent by out_refund_no: a
     * request still on its way refunds nothing twice), and settled by
     * the provider's answer to that.
     */

    if (ctx->outcome.not_found && !ctx->resent
        && ngx_http_paygw_breaker_allow(r, ctx->channel) == NGX_OK)
    {
        ctx->resent = 1;

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "paygw: %V has no trace of refund %V: sending it "
                      "again", &ctx->channel->name, &rf->out_refund_no);

        return ngx_http_paygw_provider_step(r, ctx,
                                            ngx_http_paygw_refund_sent,
                                            ctx->channel->provider->refund);
    }

    if (!ctx->outcome.definitive) {
        return ngx_http_paygw_refund_answer(r, ctx);
    }

    return ngx_http_paygw_refund_settle(r, ctx);
}


/* the steps' shared moves */


/*
 * A settlement changes the payment (refunded_amount, status, updated_at)
 * while a GET may have it cached: the payment cache is marked first, and
 * without that mark nothing is written; the refund stays open and is
 * settled later, like one whose answer could not be recorded.
 */

static ngx_int_t
ngx_http_paygw_refund_settle(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    /* an answer that decides nothing changes only the refund's row */

    if (!ctx->outcome.definitive) {
        return ngx_http_paygw_refund_marked(r, ctx);
    }

    ctx->cache_marked = 1;

    if (ngx_http_paygw_cache_mark(r, ctx, &ctx->refund.merchant_id,
                                  &ctx->refund.payment_no, 1)
        != NGX_OK)
    {
        return ngx_http_paygw_refund_unmarked(r, ctx);
    }

    ctx->next = ngx_http_paygw_refund_marked;

    return NGX_AGAIN;
}


static ngx_int_t
ngx_http_paygw_refund_marked(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_refund_t  *rf;

    rf = &ctx->refund;

    if (ctx->cache_marked && ngx_http_paygw_cache_marked(r, ctx) != NGX_OK)
    {
        return ngx_http_paygw_refund_unmarked(r, ctx);
    }

    ngx_http_paygw_now(r->pool, &rf->updated_at);

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_settle_refund(r, ctx->mysql, rf,
                                              &ctx->outcome) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_paygw_mysql_wait(r, ctx, ngx_http_paygw_refund_settled);
}


/* the refund as settled, or as it was if the settlement did not commit */

static ngx_int_t
ngx_http_paygw_refund_settled(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_refund_t  *rf;

    rf = &ctx->refund;

    /* unmarked whatever became of the transaction; the answer waits */

    ctx->next = ngx_http_paygw_refund_answered;

    if (ctx->cache_marked) {
        ctx->cache_marked = 0;

        if (ngx_http_paygw_cache_mark(r, ctx, &rf->merchant_id,
                                      &rf->payment_no, -1)
            == NGX_OK)
        {
            return NGX_AGAIN;
        }
    }

    return ngx_http_paygw_refund_answered(r, ctx);
}


static ngx_int_t
ngx_http_paygw_refund_answered(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_refund_t  *rf;

    rf = &ctx->refund;

    /*
     * An unmark that failed leaves the key marked until its fence
     * expires: GETs of the payment go to MySQL meanwhile.
     */

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw refund: step \"settled\" refund %V: %V, mysql %ud",
                   &rf->refund_no,
                   ngx_http_paygw_status_name(ctx->outcome.status),
                   ctx->mysql->err_no);

    if (ctx->mysql->call.ok && !ctx->mysql->err_no && !ctx->mysql->conflict)
    {
        rf->status = ctx->outcome.status;
        rf->channel_refund_no = ctx->outcome.provider_no;
        rf->failure_code = ctx->outcome.failure_code;

        return ngx_http_paygw_refund_answer(r, ctx);
    }

    /*
     * A definitive answer that did not commit most often lost to the
     * settler, which claims open refunds, this one in flight too, and
     * settled it first on the provider's same answer: the refund's row
     * says what became of it, not "pending".
     */

    if (ctx->outcome.definitive && ctx->mysql->call.ok) {
        return ngx_http_paygw_refund_reread(r, ctx);
    }

    return ngx_http_paygw_refund_answer(r, ctx);
}


static ngx_int_t
ngx_http_paygw_refund_reread(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw refund: step \"reread\" refund %V, the settlement "
                   "did not commit (mysql %ud)", &ctx->refund.refund_no,
                   ctx->mysql->err_no);

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_select_refund_out(ctx->mysql,
                                                  &ctx->refund.out_refund_no)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ctx->mysql->read_only = 1;

    return ngx_http_paygw_mysql_wait(r, ctx, ngx_http_paygw_refund_reread_done);
}


/* the row as it is now; still open, or unreadable: "pending" as before */

static ngx_int_t
ngx_http_paygw_refund_reread_done(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_str_t                   channel;
    ngx_http_paygw_refund_t     row;
    ngx_http_paygw_sql_stmt_t  *stmt;

    stmt = ctx->mysql->stmts.elts;
    row = ctx->refund;

    if (ctx->mysql->call.ok && !ctx->mysql->err_no
        && ngx_http_paygw_store_row_refund(stmt, &row, &channel) == NGX_OK)
    {
        ctx->refund = row;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw refund: step \"reread\" done, refund %V is %V",
                   &ctx->refund.refund_no,
                   ngx_http_paygw_status_name(ctx->refund.status));

    return ngx_http_paygw_refund_answer(r, ctx);
}


static ngx_int_t
ngx_http_paygw_refund_unmarked(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ctx->cache_marked = 0;

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "paygw: refund %V is %V at the provider but the payment "
                  "cache could not be marked; it will be settled later",
                  &ctx->refund.refund_no,
                  ngx_http_paygw_status_name(ctx->outcome.status));

    /* nothing recorded: the resolver does not count it as settled */

    ctx->outcome.definitive = 0;

    return ngx_http_paygw_refund_answer(r, ctx);
}


static ngx_int_t
ngx_http_paygw_refund_answer(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_uint_t  status;

    if (ctx->api != NGX_HTTP_PAYGW_API_REFUND) {
        status = NGX_HTTP_OK;

    } else if (ctx->refund.status == NGX_HTTP_PAYGW_STATUS_SUCCEEDED
               || ctx->refund.status == NGX_HTTP_PAYGW_STATUS_FAILED)
    {
        status = NGX_HTTP_CREATED;

    } else {
        status = NGX_HTTP_ACCEPTED;
    }

    return ngx_http_paygw_respond(r, ctx, status,
                                  ngx_http_paygw_refund_json(&ctx->refund));
}
