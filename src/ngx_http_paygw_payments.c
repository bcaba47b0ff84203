
/*
 * paygw: the payment endpoints, each a chain of named steps (see
 * ngx_http_paygw_payments.h) that returns NGX_AGAIN while a backend call
 * it started is running and NGX_OK (or NGX_DECLINED, an error answer)
 * once ctx holds the answer.
 *
 * The order of writes is what keeps money safe:
 *   create: INSERT the payment (processing) -> charge -> settle
 * A lost provider answer leaves "unknown", settled later by a query.
 *
 * The steps, in the order they may run (each named in a debug line):
 *
 *   create:   start [-> risked] -> inserted -> charged -> settled
 *             [-> reread]; or start/risked -> denied (risk refused it),
 *             inserted -> duplicate (the order has a payment already)
 *   get:      start (a hit in the payment cache answers here) -> selected
 *             [-> filled] or [-> queried [-> recharged | expired]
 *             -> settled [-> selected]]
 *   close:    start -> selected [-> at_provider] -> recorded; or
 *             at_provider -> queried -> settled (paid meanwhile)
 *   resolve:  start -> listed, then the get steps for each candidate
 */


#include "ngx_http_paygw_payments.h"
#include "ngx_http_paygw_store.h"
#include "ngx_http_paygw_metrics.h"
#include "ngx_http_paygw_cache.h"


static ngx_int_t ngx_http_paygw_create_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_create_risked(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_create_deny(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_create_denied(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_create_insert(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_create_inserted(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_create_duplicate(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_create_charged(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_create_settled(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_create_reread(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_fallback(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static void ngx_http_paygw_card(ngx_http_paygw_payment_t *p);

static ngx_int_t ngx_http_paygw_get_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_get_selected(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_get_queried(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_get_recharged(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_get_expired(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_get_settled(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_needs_query(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_after_query(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);

static ngx_int_t ngx_http_paygw_close_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_close_selected(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_close_at_provider(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_close_queried(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_close_settled(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_close_local(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_close_recorded(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_close_refused(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);

static ngx_int_t ngx_http_paygw_resolve_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_resolve_listed(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_resolve_next(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_resolve_refunds_listed(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_resolve_claim(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_resolve_refund_next(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);

static ngx_int_t ngx_http_paygw_settle(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_http_paygw_step_pt next);
static void ngx_http_paygw_apply(ngx_http_paygw_payment_t *p,
    ngx_http_paygw_outcome_t *out);
static ngx_int_t ngx_http_paygw_payment_answer(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_uint_t status);


/* POST /v1/payments */

ngx_int_t
ngx_http_paygw_create(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    return ngx_http_paygw_steps(r, ctx, ngx_http_paygw_create_start);
}


static ngx_int_t
ngx_http_paygw_create_start(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_payment_t  *p;

    p = &ctx->payment;

    if (ngx_http_paygw_random_no(r->pool, 'P', &p->payment_no) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw create: step \"start\" payment %V order \"%V\"",
                   &p->payment_no, &p->business_no);

    p->merchant_id = ctx->merchant_id;
    p->status = NGX_HTTP_PAYGW_STATUS_PROCESSING;
    ngx_http_paygw_now(r->pool, &p->created_at);
    p->updated_at = p->created_at;
    ngx_http_paygw_card(p);

    /* an open circuit: refuse before anything is written */

    if (ngx_http_paygw_breaker_allow(r, ctx->channel) != NGX_OK
        && ngx_http_paygw_fallback(r, ctx) != NGX_OK)
    {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "channel_unavailable",
                                   "channel \"%V\" is failing; try "
                                   "again later", &ctx->channel->name);
    }

    if (ngx_http_paygw_risk_enabled(r) != NGX_OK) {
        return ngx_http_paygw_create_insert(r, ctx);
    }

    /* risk first: nothing is written for a refused payment */

    ctx->risk_reason = ngx_http_paygw_risk_ceiling(r, ctx);

    if (ctx->risk_reason) {
        return ngx_http_paygw_create_deny(r, ctx);
    }

    ctx->next = ngx_http_paygw_create_risked;

    return ngx_http_paygw_risk_send(r, ctx) == NGX_OK ? NGX_AGAIN
                                                       : NGX_ERROR;
}


static ngx_int_t
ngx_http_paygw_create_risked(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_verdict_e  verdict;

    if (ngx_http_paygw_redis_noscript(r, ctx->redis) == NGX_OK) {
        ctx->waiting = &ctx->redis->call;
        return NGX_AGAIN;     /* the script again, as EVAL */
    }

    verdict = ngx_http_paygw_risk_result(r, ctx);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw create: step \"risked\" payment %V: verdict %d %s",
                   &ctx->payment.payment_no, verdict,
                   ctx->risk_reason ? ctx->risk_reason : "");

    switch (verdict) {

    case NGX_HTTP_PAYGW_RISK_ALLOW:
        ngx_http_paygw_m_risk(r, 0);
        return ngx_http_paygw_create_insert(r, ctx);

    case NGX_HTTP_PAYGW_RISK_DENY:
        return ngx_http_paygw_create_deny(r, ctx);

    default: /* NGX_HTTP_PAYGW_RISK_UNEVALUATED */
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "backend_unavailable",
                                   "redis: risk rules could not be "
                                   "evaluated");
    }
}


static ngx_int_t
ngx_http_paygw_create_deny(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_m_risk(r, 1);

    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  "paygw risk: refused order \"%V\" of %V: %s",
                  &ctx->payment.business_no, &ctx->merchant_id,
                  ctx->risk_reason);

    /* the refusal is kept as an event: nothing else is written */

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_risk_event(r, ctx->mysql, &ctx->payment,
                                           ctx->risk_reason) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_paygw_mysql_wait(r, ctx, ngx_http_paygw_create_denied);
}


static ngx_int_t
ngx_http_paygw_create_denied(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw create: step \"denied\" payment %V",
                   &ctx->payment.payment_no);

    ngx_str_t  reason;

    if (!ctx->mysql->call.ok || ctx->mysql->err_no) {
        ngx_http_paygw_mysql_reason(ctx->mysql, &reason);
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw: cannot record the risk.block event: %V",
                      &reason);
    }

    return ngx_http_paygw_fail_with(r, ctx, NGX_HTTP_FORBIDDEN,
               "risk_denied",
               json_pack("{s:s}", "reason", ctx->risk_reason),
               "the payment was refused by risk rules (%s)",
               ctx->risk_reason);
}


static ngx_int_t
ngx_http_paygw_create_insert(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    /* the durable guard: one payment per merchant order, before charging */

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_insert_payment(ctx->mysql, &ctx->payment)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_paygw_mysql_wait(r, ctx, ngx_http_paygw_create_inserted);
}


static ngx_int_t
ngx_http_paygw_create_inserted(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_str_t  reason;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw create: step \"inserted\" payment %V, mysql %ud",
                   &ctx->payment.payment_no, ctx->mysql->err_no);

    if (!ctx->mysql->call.ok) {
        /* nothing was written and nothing charged: free the key */
        return ngx_http_paygw_mysql_down(r, ctx);
    }

    if (ctx->mysql->err_no == NGX_HTTP_PAYGW_ER_DUP_ENTRY) {
        return ngx_http_paygw_select(r, ctx, 1,
                                     ngx_http_paygw_create_duplicate);
    }

    if (ctx->mysql->err_no) {
        ngx_http_paygw_mysql_reason(ctx->mysql, &reason);
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw: cannot insert payment: %V", &reason);
        return NGX_ERROR;
    }

    ctx->side_effect = 1;

    return ngx_http_paygw_provider_step(r, ctx, ngx_http_paygw_create_charged,
                                        ctx->channel->provider->charge);
}


static ngx_int_t
ngx_http_paygw_create_duplicate(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_str_t  *v;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw create: step \"duplicate\" order \"%V\"",
                   &ctx->payment.business_no);

    if (!ctx->mysql->call.ok) {
        return ngx_http_paygw_mysql_down(r, ctx);
    }

    v = ngx_http_paygw_sql_value(ctx->mysql->stmts.elts, 0, 0);

    return ngx_http_paygw_fail_with(r, ctx, NGX_HTTP_CONFLICT,
               "duplicate_business_no",
               json_pack("{s:s%}", "payment_no",
                         v && v->data ? (char *) v->data : "",
                         v && v->data ? v->len : 0),
               "business_no \"%V\" already has a payment",
               &ctx->payment.business_no);
}


static ngx_int_t
ngx_http_paygw_create_charged(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t                   rc;
    ngx_http_paygw_provider_t  *pv;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw create: step \"charged\" payment %V, attempt %ui",
                   &ctx->payment.payment_no, ctx->attempt);

    pv = ctx->channel->provider;

    /* charges are idempotent by out_trade_no: retry what failed */

    rc = ngx_http_paygw_retry(r, ctx, pv->charge, pv->charge_outcome);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_http_paygw_settle(r, ctx, ngx_http_paygw_create_settled);
}


static ngx_int_t
ngx_http_paygw_create_settled(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_payment_t  *p;

    p = &ctx->payment;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw create: step \"settled\" payment %V: %V",
                   &p->payment_no,
                   ngx_http_paygw_status_name(ctx->outcome.status));

    if (ctx->mysql->call.ok && ctx->mysql->conflict) {
        ctx->object_no = p->payment_no;
        return ngx_http_paygw_select(r, ctx, 0, ngx_http_paygw_create_reread);
    }

    if (!ctx->mysql->call.ok || ctx->mysql->err_no) {
        /*
         * The provider answered but the answer could not be kept:
         * the row stays "processing" and a query settles it later.
         */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw: payment %V is %V at the provider but "
                      "could not be recorded; it will be resolved",
                      &p->payment_no,
                      ngx_http_paygw_status_name(ctx->outcome.status));
        p->status = NGX_HTTP_PAYGW_STATUS_PROCESSING;
        return ngx_http_paygw_payment_answer(r, ctx, NGX_HTTP_ACCEPTED);
    }

    ngx_http_paygw_apply(p, &ctx->outcome);
    ngx_http_paygw_m_payment(r, &p->channel, p->status);

    return ngx_http_paygw_payment_answer(r, ctx, ctx->outcome.definitive
                                                 ? NGX_HTTP_CREATED
                                                 : NGX_HTTP_ACCEPTED);
}


static ngx_int_t
ngx_http_paygw_create_reread(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t  rc;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw create: step \"reread\" payment %V",
                   &ctx->object_no);

    /* a callback settled it before the create's own answer */

    rc = ngx_http_paygw_selected(r, ctx);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_paygw_payment_answer(r, ctx, NGX_HTTP_CREATED);
}


static ngx_int_t
ngx_http_paygw_fallback(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_channel_t  *fb;

    /* the configured fallback channel, if its own circuit lets us */

    fb = ctx->channel->fallback;

    if (fb == NULL) {
        return NGX_DECLINED;
    }

    /* the merchant's policy must allow the other channel too */

    ctx->payment.channel = fb->name;

    if (ngx_http_paygw_policy_check(r, ctx) != NGX_OK
        || ngx_http_paygw_breaker_allow(r, fb) != NGX_OK)
    {
        ctx->payment.channel = ctx->channel->name;
        return NGX_DECLINED;
    }

    ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                  "paygw: channel \"%V\" is failing: order \"%V\" goes to "
                  "\"%V\"", &ctx->channel->name, &ctx->payment.business_no,
                  &fb->name);

    ctx->channel = fb;

    return NGX_OK;
}


static void
ngx_http_paygw_card(ngx_http_paygw_payment_t *p)
{
    u_char  *n;

    if (p->card_number.len < 12) {
        return;
    }

    n = p->card_number.data;

    p->card_last4.data = n + p->card_number.len - 4;
    p->card_last4.len = 4;

    if (n[0] == '4') {
        ngx_str_set(&p->card_brand, "visa");

    } else if (n[0] == '5' && n[1] >= '1' && n[1] <= '5') {
        ngx_str_set(&p->card_brand, "mastercard");

    } else if (n[0] == '3' && (n[1] == '4' || n[1] == '7')) {
        ngx_str_set(&p->card_brand, "amex");

    } else if (n[0] == '6' && n[1] == '2') {
        ngx_str_set(&p->card_brand, "unionpay");

    } else {
        ngx_str_set(&p->card_brand, "unknown");
    }
}


/* GET /v1/payments/{no}, GET /v1/payments?business_no= */

ngx_int_t
ngx_http_paygw_get(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    return ngx_http_paygw_steps(r, ctx, ngx_http_paygw_get_start);
}


static ngx_int_t
ngx_http_paygw_get_start(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw get: step \"start\" payment %V", &ctx->object_no);

    /* read with the nonce: a final state needs no MySQL */

    if (ngx_http_paygw_cache_hit(r, ctx) == NGX_OK) {
        return NGX_OK;
    }

    return ngx_http_paygw_select(r, ctx,
                                 ctx->api == NGX_HTTP_PAYGW_API_FIND,
                                 ngx_http_paygw_get_selected);
}


static ngx_int_t
ngx_http_paygw_get_selected(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t  rc;

    rc = ngx_http_paygw_selected(r, ctx);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw get: step \"selected\" payment %V: %V%s",
                   &ctx->payment.payment_no,
                   ngx_http_paygw_status_name(ctx->payment.status),
                   ctx->reread ? ", reread" : "");

    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_paygw_needs_query(r, ctx) != NGX_OK) {
        rc = ngx_http_paygw_payment_answer(r, ctx, NGX_HTTP_OK);
        if (rc != NGX_OK) {
            return rc;
        }

        /* kept for the next GET if final and no writer came meanwhile */

        return ngx_http_paygw_cache_fill(r, ctx) == NGX_AGAIN ? NGX_AGAIN
                                                               : NGX_OK;
    }

    return ngx_http_paygw_provider_step(r, ctx, ngx_http_paygw_get_queried,
                                        ctx->channel->provider->query);
}


static ngx_int_t
ngx_http_paygw_get_queried(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t                   rc;
    ngx_http_paygw_provider_t  *pv;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw get: step \"queried\" payment %V, attempt %ui",
                   &ctx->payment.payment_no, ctx->attempt);

    pv = ctx->channel->provider;

    rc = ngx_http_paygw_retry(r, ctx, pv->query, pv->query_outcome);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    return ngx_http_paygw_after_query(r, ctx);
}


/*
 * What the provider's answer to a query leads to: a settlement, or for
 * QR channels the QR code fetched again (the create's answer was lost)
 * or, once the payment expired unpaid, a close at the provider.
 */

static ngx_int_t
ngx_http_paygw_after_query(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_uint_t                  unpaid, open;
    ngx_http_paygw_payment_t   *p;
    ngx_http_paygw_outcome_t   *out;
    ngx_http_paygw_provider_t  *pv;

    p = &ctx->payment;
    out = &ctx->outcome;
    pv = ctx->channel->provider;

    unpaid = out->not_found || out->status == NGX_HTTP_PAYGW_STATUS_PENDING;
    open = p->status != NGX_HTTP_PAYGW_STATUS_PENDING;

    if (pv->close && unpaid) {

        if (p->overdue > 0) {
            return ngx_http_paygw_provider_step(r, ctx,
                                                ngx_http_paygw_get_expired,
                                                pv->close);
        }

        if (open) {
            /* idempotent by out_trade_no: the same code comes back */
            p->expire_seconds = -p->overdue;
            return ngx_http_paygw_provider_step(r, ctx,
                                                ngx_http_paygw_get_recharged,
                                                pv->charge);
        }

        return ngx_http_paygw_payment_answer(r, ctx, NGX_HTTP_OK);
    }

    /* never charged, and long enough ago that no charge is coming */

    if (out->not_found && p->age >= ctx->channel->unknown_grace) {
        ctx->outcome.definitive = 1;
        out->status = NGX_HTTP_PAYGW_STATUS_FAILED;
        ngx_str_set(&out->failure_code, "charge_not_received");
        ngx_str_set(&out->failure_message,
                    "the acquirer never received the charge");
    }

    if (!out->definitive || p->status == out->status) {
        return ngx_http_paygw_payment_answer(r, ctx, NGX_HTTP_OK);
    }

    ngx_http_paygw_now(r->pool, &p->updated_at);

    return ngx_http_paygw_settle(r, ctx, ngx_http_paygw_get_settled);
}


static ngx_int_t
ngx_http_paygw_get_recharged(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t                   rc;
    ngx_http_paygw_provider_t  *pv;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw get: step \"recharged\" payment %V, attempt %ui",
                   &ctx->payment.payment_no, ctx->attempt);

    /* the QR code again (the create's answer was lost) */

    pv = ctx->channel->provider;

    rc = ngx_http_paygw_retry(r, ctx, pv->charge, pv->charge_outcome);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    /*
     * Only the code is wanted here: a refusal of the repeated create
     * says nothing of the trade the first one made.
     */

    if (!ctx->outcome.definitive
        || ctx->outcome.status != NGX_HTTP_PAYGW_STATUS_PENDING)
    {
        return ngx_http_paygw_payment_answer(r, ctx, NGX_HTTP_OK);
    }

    ngx_http_paygw_now(r->pool, &ctx->payment.updated_at);

    return ngx_http_paygw_settle(r, ctx, ngx_http_paygw_get_settled);
}


static ngx_int_t
ngx_http_paygw_get_expired(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t                   rc;
    ngx_http_paygw_provider_t  *pv;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw get: step \"expired\" payment %V, attempt %ui",
                   &ctx->payment.payment_no, ctx->attempt);

    /* expired unpaid: closed at the provider before here */

    pv = ctx->channel->provider;

    rc = ngx_http_paygw_retry(r, ctx, pv->close, pv->close_outcome);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (!ctx->outcome.definitive) {
        return ngx_http_paygw_payment_answer(r, ctx, NGX_HTTP_OK);
    }

    ngx_http_paygw_now(r->pool, &ctx->payment.updated_at);

    return ngx_http_paygw_settle(r, ctx, ngx_http_paygw_get_settled);
}


static ngx_int_t
ngx_http_paygw_get_settled(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_payment_t  *p;

    p = &ctx->payment;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw get: step \"settled\" payment %V: %V",
                   &p->payment_no,
                   ngx_http_paygw_status_name(ctx->outcome.status));

    if (ctx->mysql->call.ok && !ctx->mysql->err_no && !ctx->mysql->conflict)
    {
        ngx_http_paygw_apply(p, &ctx->outcome);
        ngx_http_paygw_m_payment(r, &p->channel, p->status);
        return ngx_http_paygw_payment_answer(r, ctx, NGX_HTTP_OK);
    }

    /* settled meanwhile by someone else, or not recordable now */

    ctx->reread = 1;
    ctx->api = NGX_HTTP_PAYGW_API_GET;
    ctx->object_no = p->payment_no;

    return ngx_http_paygw_select(r, ctx, 0, ngx_http_paygw_get_selected);
}


static ngx_int_t
ngx_http_paygw_needs_query(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_payment_t  *p;

    p = &ctx->payment;

    ctx->channel = ngx_http_paygw_channel_find(r, &p->channel);

    /* one settlement attempt per request: a re-read only reports */

    if (ctx->channel == NULL || ctx->reread) {
        return NGX_DECLINED;
    }

    /* the settler leaves a provider alone while its breaker is open */

    if (ctx->api == NGX_HTTP_PAYGW_API_RESOLVE
        && ngx_http_paygw_breaker_allow(r, ctx->channel) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    /* "unknown" now; "processing" only once its creator must be gone */

    if (p->status == NGX_HTTP_PAYGW_STATUS_UNKNOWN
        || (p->status == NGX_HTTP_PAYGW_STATUS_PROCESSING
            && p->age >= ctx->channel->unknown_grace))
    {
        return NGX_OK;
    }

    /* a QR code past its expiry: paid after all, or to be closed */

    if (p->status == NGX_HTTP_PAYGW_STATUS_PENDING && p->overdue > 0
        && ctx->channel->provider->close)
    {
        return NGX_OK;
    }

    return NGX_DECLINED;
}


/* POST /v1/payments/{no}/close */

ngx_int_t
ngx_http_paygw_close(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    return ngx_http_paygw_steps(r, ctx, ngx_http_paygw_close_start);
}


static ngx_int_t
ngx_http_paygw_close_start(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw close: step \"start\" payment %V", &ctx->object_no);

    return ngx_http_paygw_select(r, ctx, 0, ngx_http_paygw_close_selected);
}


static ngx_int_t
ngx_http_paygw_close_selected(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t                   rc;
    ngx_http_paygw_payment_t   *p;
    ngx_http_paygw_provider_t  *pv;

    p = &ctx->payment;

    rc = ngx_http_paygw_selected(r, ctx);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw close: step \"selected\" payment %V: %V",
                   &ctx->object_no, ngx_http_paygw_status_name(p->status));

    if (rc != NGX_OK) {
        return rc;
    }

    if (p->status == NGX_HTTP_PAYGW_STATUS_CLOSED) {
        return ngx_http_paygw_payment_answer(r, ctx, NGX_HTTP_OK);
    }

    ctx->channel = ngx_http_paygw_channel_find(r, &p->channel);
    pv = ctx->channel ? ctx->channel->provider : NULL;

    /* an "unknown" QR payment never gave its code out: closable */

    if (p->status != NGX_HTTP_PAYGW_STATUS_PENDING
        && !(p->status == NGX_HTTP_PAYGW_STATUS_UNKNOWN && pv && pv->close))
    {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_CONFLICT,
                                   "invalid_state",
                                   "payment %V is %V: only pending "
                                   "payments can be closed",
                                   &p->payment_no,
                                   ngx_http_paygw_status_name(p->status));
    }

    if (pv && pv->close) {
        /* closed there first, so that nobody can pay it any more */
        return ngx_http_paygw_provider_step(r, ctx,
                                            ngx_http_paygw_close_at_provider,
                                            pv->close);
    }

    return ngx_http_paygw_close_local(r, ctx);
}


static ngx_int_t
ngx_http_paygw_close_at_provider(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t                   rc;
    ngx_http_paygw_provider_t  *pv;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw close: step \"at_provider\" payment %V, "
                   "attempt %ui", &ctx->payment.payment_no, ctx->attempt);

    pv = ctx->channel->provider;

    rc = ngx_http_paygw_retry(r, ctx, pv->close, pv->close_outcome);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (ctx->outcome.definitive) {
        return ngx_http_paygw_close_local(r, ctx);
    }

    if (ctx->outcome.not_closable) {
        /* paid meanwhile: record it, then say so */
        return ngx_http_paygw_provider_step(r, ctx,
                                            ngx_http_paygw_close_queried,
                                            pv->query);
    }

    return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_GATEWAY,
                               "provider_error",
                               "%V could not close payment %V: %V; try "
                               "again", &ctx->channel->name,
                               &ctx->payment.payment_no,
                               &ctx->outcome.failure_message);
}


static ngx_int_t
ngx_http_paygw_close_queried(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t                   rc;
    ngx_http_paygw_provider_t  *pv;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw close: step \"queried\" payment %V, attempt %ui",
                   &ctx->payment.payment_no, ctx->attempt);

    pv = ctx->channel->provider;

    rc = ngx_http_paygw_retry(r, ctx, pv->query, pv->query_outcome);
    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (!ctx->outcome.definitive) {
        return ngx_http_paygw_close_refused(r, ctx);
    }

    ngx_http_paygw_now(r->pool, &ctx->payment.updated_at);

    return ngx_http_paygw_settle(r, ctx, ngx_http_paygw_close_settled);
}


static ngx_int_t
ngx_http_paygw_close_settled(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_payment_t  *p;

    p = &ctx->payment;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw close: step \"settled\" payment %V: %V",
                   &p->payment_no,
                   ngx_http_paygw_status_name(ctx->outcome.status));

    if (ctx->mysql->call.ok && !ctx->mysql->err_no && !ctx->mysql->conflict)
    {
        ngx_http_paygw_apply(p, &ctx->outcome);
        ngx_http_paygw_m_payment(r, &p->channel, p->status);
    }

    /* closed there after all (by its expiry): that is what was asked */

    if (ctx->outcome.status == NGX_HTTP_PAYGW_STATUS_CLOSED) {
        p->status = NGX_HTTP_PAYGW_STATUS_CLOSED;
        return ngx_http_paygw_payment_answer(r, ctx, NGX_HTTP_OK);
    }

    return ngx_http_paygw_close_refused(r, ctx);
}


static ngx_int_t
ngx_http_paygw_close_local(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_payment_t  *p;

    p = &ctx->payment;

    ngx_http_paygw_now(r->pool, &p->updated_at);
    p->status = NGX_HTTP_PAYGW_STATUS_CLOSED;

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_close_payment(r, ctx->mysql, p) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_paygw_mysql_wait(r, ctx, ngx_http_paygw_close_recorded);
}


static ngx_int_t
ngx_http_paygw_close_recorded(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_payment_t  *p;

    p = &ctx->payment;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw close: step \"recorded\" payment %V, mysql %ud",
                   &p->payment_no, ctx->mysql->err_no);

    if (!ctx->mysql->call.ok) {
        return ngx_http_paygw_mysql_down(r, ctx);
    }

    if (ctx->mysql->err_no) {
        /* closed at the provider, not yet here: a retry finishes it */
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "backend_unavailable",
                                   "mysql: the close of %V could not be "
                                   "recorded; try again", &p->payment_no);
    }

    if (ctx->mysql->conflict) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_CONFLICT,
                                   "invalid_state",
                                   "payment %V changed state meanwhile",
                                   &p->payment_no);
    }

    ctx->side_effect = 1;
    ngx_http_paygw_m_payment(r, &p->channel, p->status);

    return ngx_http_paygw_payment_answer(r, ctx, NGX_HTTP_OK);
}


static ngx_int_t
ngx_http_paygw_close_refused(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_outcome_t  *out;

    out = &ctx->outcome;

    if (out->status == NGX_HTTP_PAYGW_STATUS_SUCCEEDED) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_CONFLICT, "invalid_state",
                                   "payment %V was paid at %V: it cannot "
                                   "be closed", &ctx->payment.payment_no,
                                   &ctx->channel->name);
    }

    if (out->definitive) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_CONFLICT, "invalid_state",
                                   "payment %V is %V at %V: it cannot be "
                                   "closed", &ctx->payment.payment_no,
                                   ngx_http_paygw_status_name(out->status),
                                   &ctx->channel->name);
    }

    return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_GATEWAY, "provider_error",
                               "%V refused to close payment %V and could "
                               "not say why (%V); try again",
                               &ctx->channel->name, &ctx->payment.payment_no,
                               &out->failure_message);
}


/*
 * POST /v1/admin/resolve: settle payments left "unknown", or left
 * "processing" by a request that died, by running each through the GET
 * steps, which query the provider.
 */

ngx_int_t
ngx_http_paygw_resolve(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t  rc;

    if (ctx->candidates == NULL) {
        return ngx_http_paygw_steps(r, ctx, ngx_http_paygw_resolve_start);
    }

    if (ctx->refunds_phase) {

        /* the refunds' list is awaited, or a refund's GET steps go on */

        if (ctx->next == ngx_http_paygw_resolve_refunds_listed) {
            return ngx_http_paygw_resolve_refunds_listed(r, ctx);
        }

        rc = ngx_http_paygw_get_refund(r, ctx);
        if (rc == NGX_AGAIN) {
            return NGX_AGAIN;
        }

        if (ctx->outcome.definitive) {
            ctx->settled++;
        }

        return ngx_http_paygw_resolve_refund_next(r, ctx);
    }

    /* a candidate's GET steps go on */

    rc = ngx_http_paygw_get(r, ctx);
    if (rc == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    if (ctx->outcome.definitive) {
        ctx->settled++;
    }

    return ngx_http_paygw_resolve_next(r, ctx);
}


static ngx_int_t
ngx_http_paygw_resolve_start(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw resolve: step \"start\"");

    if (ngx_http_paygw_resolve_claim(r, ctx) != NGX_OK
        || ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_claim_stale(ctx->mysql, 0, &ctx->claim,
                                            ctx->due, 100)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_paygw_mysql_wait(r, ctx, ngx_http_paygw_resolve_listed);
}


static ngx_int_t
ngx_http_paygw_resolve_listed(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw resolve: step \"listed\"");

    if (!ctx->mysql->call.ok) {
        return ngx_http_paygw_mysql_down(r, ctx);
    }

    ctx->candidates = ctx->mysql;

    return ngx_http_paygw_resolve_next(r, ctx);
}


static ngx_int_t
ngx_http_paygw_resolve_next(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t                   rc;
    ngx_str_t                  *v;
    ngx_http_paygw_sql_stmt_t  *stmt;

    /* the claim's SELECT, after its UPDATE */

    stmt = ctx->candidates->stmts.elts;
    stmt += ctx->candidates->stmts.nelts - 1;

    while (ctx->candidate < stmt->nrows) {

        v = ngx_http_paygw_sql_value(stmt, ctx->candidate++, 0);

        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "paygw resolve: step \"next\" payment %V (%ui of %ui)",
                       v, ctx->candidate, stmt->nrows);

        /* each candidate starts the GET steps afresh, merchant-blind */

        ngx_memzero(&ctx->payment, sizeof(ngx_http_paygw_payment_t));
        ngx_memzero(&ctx->outcome, sizeof(ngx_http_paygw_outcome_t));
        ngx_str_null(&ctx->response);
        ngx_str_set(&ctx->merchant_id, "*");
        ctx->object_no = *v;
        ctx->status = 0;
        ctx->next = NULL;
        ctx->reread = 0;

        rc = ngx_http_paygw_get(r, ctx);
        if (rc == NGX_AGAIN) {
            return NGX_AGAIN;
        }
    }

    /* then the refunds still open */

    ctx->examined = stmt->nrows;
    ctx->refunds_phase = 1;
    ctx->status = 0;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw resolve: step \"refunds\"");

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_claim_stale(ctx->mysql, 1, &ctx->claim,
                                            ctx->due, 100)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_paygw_mysql_wait(r, ctx,
                                     ngx_http_paygw_resolve_refunds_listed);
}


/*
 * This run's claim token; "X-Paygw-Settle: due" (the periodic settler)
 * claims only the rows whose next try has come.
 */

static ngx_int_t
ngx_http_paygw_resolve_claim(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_uint_t        n;
    ngx_table_elt_t  *h;
    u_char            rnd[16];

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return NGX_ERROR;
    }

    ctx->claim.data = ngx_pnalloc(r->pool, 2 * sizeof(rnd));
    if (ctx->claim.data == NULL) {
        return NGX_ERROR;
    }

    ctx->claim.len = ngx_hex_dump(ctx->claim.data, rnd, sizeof(rnd))
                     - ctx->claim.data;

    h = ngx_http_paygw_header(&r->headers_in.headers, "X-Paygw-Settle", &n);

    ctx->due = (h && n == 1 && h->value.len == 3
                && ngx_strncmp(h->value.data, "due", 3) == 0);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw resolve: claim %V%s", &ctx->claim,
                   ctx->due ? ", due only" : "");

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_resolve_refunds_listed(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw resolve: step \"refunds listed\"");

    ctx->next = NULL;

    if (!ctx->mysql->call.ok) {
        return ngx_http_paygw_mysql_down(r, ctx);
    }

    ctx->candidates = ctx->mysql;
    ctx->candidate = 0;

    return ngx_http_paygw_resolve_refund_next(r, ctx);
}


static ngx_int_t
ngx_http_paygw_resolve_refund_next(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t                   rc;
    ngx_str_t                  *v;
    ngx_http_paygw_sql_stmt_t  *stmt;

    stmt = ctx->candidates->stmts.elts;
    stmt += ctx->candidates->stmts.nelts - 1;

    while (ctx->candidate < stmt->nrows) {

        v = ngx_http_paygw_sql_value(stmt, ctx->candidate++, 0);

        ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "paygw resolve: step \"next\" refund %V (%ui of %ui)",
                       v, ctx->candidate, stmt->nrows);

        /* each refund runs the GET steps afresh, merchant-blind */

        ngx_memzero(&ctx->payment, sizeof(ngx_http_paygw_payment_t));
        ngx_memzero(&ctx->refund, sizeof(ngx_http_paygw_refund_t));
        ngx_memzero(&ctx->outcome, sizeof(ngx_http_paygw_outcome_t));
        ngx_str_null(&ctx->response);
        ngx_str_set(&ctx->merchant_id, "*");
        ctx->object_no = *v;
        ctx->status = 0;
        ctx->next = NULL;
        ctx->resent = 0;

        rc = ngx_http_paygw_get_refund(r, ctx);
        if (rc == NGX_AGAIN) {
            return NGX_AGAIN;
        }

        if (ctx->outcome.definitive) {
            ctx->settled++;
        }
    }

    ctx->status = 0;

    return ngx_http_paygw_respond(r, ctx, NGX_HTTP_OK,
                                  json_pack("{s:I, s:I}",
                                            "examined",
                                            (json_int_t) (ctx->examined
                                                          + stmt->nrows),
                                            "settled",
                                            (json_int_t) ctx->settled));
}


/* the steps' shared moves */


ngx_int_t
ngx_http_paygw_steps(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_http_paygw_step_pt first)
{
    /* the endpoint's first step, or the one its last backend call set */

    if (ctx->next == NULL) {
        ctx->next = first;
    }

    return ctx->next(r, ctx);
}


ngx_int_t
ngx_http_paygw_mysql_start(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ctx->mysql = ngx_http_paygw_mysql_create(r);
    if (ctx->mysql == NULL) {
        return NGX_ERROR;
    }

    ctx->waiting = &ctx->mysql->call;

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_mysql_wait(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_http_paygw_step_pt next)
{
    ctx->next = next;

    return ngx_http_paygw_mysql_send(r, ctx->mysql) == NGX_OK ? NGX_AGAIN
                                                               : NGX_ERROR;
}


ngx_int_t
ngx_http_paygw_mysql_down(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_str_t  reason;

    /* the driver's words go to the log, never to the client */

    ngx_http_paygw_mysql_reason(ctx->mysql, &reason);

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "paygw: mysql unavailable: %V", &reason);

    return ngx_http_paygw_fail(r, ctx,
                               ctx->mysql->call.status
                               == NGX_HTTP_GATEWAY_TIME_OUT
                               ? NGX_HTTP_GATEWAY_TIME_OUT
                               : NGX_HTTP_SERVICE_UNAVAILABLE,
                               "backend_unavailable",
                               "the database is unavailable; retry");
}


ngx_int_t
ngx_http_paygw_select(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_uint_t by_business_no, ngx_http_paygw_step_pt next)
{
    ngx_str_t  *no;

    no = by_business_no ? (ctx->api == NGX_HTTP_PAYGW_API_CREATE
                           ? &ctx->payment.business_no : &ctx->object_no)
                        : &ctx->object_no;

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_select_payment(ctx->mysql, &ctx->merchant_id,
                                               by_business_no ? NULL : no,
                                               by_business_no ? no : NULL)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ctx->mysql->read_only = 1;

    return ngx_http_paygw_mysql_wait(r, ctx, next);
}


ngx_int_t
ngx_http_paygw_selected(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_sql_stmt_t  *stmt;

    if (!ctx->mysql->call.ok) {
        return ngx_http_paygw_mysql_down(r, ctx);
    }

    stmt = ctx->mysql->stmts.elts;

    if (ctx->mysql->err_no
        || ngx_http_paygw_store_row_payment(stmt, &ctx->payment) != NGX_OK)
    {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_NOT_FOUND, "not_found",
                                   "no payment %V", &ctx->object_no);
    }

    if (stmt->nrows > 1) {
        /* an admin's lookup by business_no that merchants share */
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_CONFLICT, "ambiguous",
                                   "business_no %V is used by several "
                                   "merchants: add merchant_id=",
                                   &ctx->object_no);
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_provider_step(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_http_paygw_step_pt next, ngx_http_paygw_step_pt call)
{
    ctx->next = next;
    ctx->attempt = 1;

    return call(r, ctx) == NGX_OK ? NGX_AGAIN : NGX_ERROR;
}


ngx_int_t
ngx_http_paygw_retry(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_http_paygw_step_pt call, ngx_http_paygw_outcome_pt outcome)
{
    /*
     * Provider calls are idempotent (out_trade_no, out_refund_no): one
     * without an answer, or answered with a 5xx, is made again while
     * attempts remain.  NGX_DECLINED: no retry; the answer is read into
     * ctx->outcome.
     */

    if (ngx_http_paygw_provider_retryable(ctx) != NGX_OK
        || ctx->attempt >= ctx->channel->attempts)
    {
        outcome(r, ctx);
        return NGX_DECLINED;
    }

    ctx->attempt++;

    return call(r, ctx) == NGX_OK ? NGX_AGAIN : NGX_ERROR;
}


static ngx_int_t
ngx_http_paygw_settle(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_http_paygw_step_pt next)
{
    ngx_http_paygw_payment_t  *p;

    p = &ctx->payment;

    /* the event carries the payment as it will be */

    ngx_http_paygw_apply(p, &ctx->outcome);

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_settle_payment(r, ctx->mysql, p,
                                               &ctx->outcome) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_paygw_mysql_wait(r, ctx, next);
}


static void
ngx_http_paygw_apply(ngx_http_paygw_payment_t *p,
    ngx_http_paygw_outcome_t *out)
{
    p->status = out->status;

    if (out->provider_no.data) {
        p->channel_trade_no = out->provider_no;
    }

    if (out->card_brand.data) {
        p->card_brand = out->card_brand;
    }

    if (out->card_last4.data) {
        p->card_last4 = out->card_last4;
    }

    if (out->qr_code.data) {
        p->qr_code = out->qr_code;
    }

    if (out->code_url.data) {
        p->code_url = out->code_url;
    }

    if (out->definitive && out->failure_code.data) {
        p->failure_code = out->failure_code;
        p->failure_message = out->failure_message;
    }
}


static ngx_int_t
ngx_http_paygw_payment_answer(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_uint_t status)
{
    return ngx_http_paygw_respond(r, ctx, status,
                                  ngx_http_paygw_payment_json(&ctx->payment));
}
