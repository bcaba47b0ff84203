
/*
 * paygw: provider callbacks (SPEC §4).
 *
 *     POST /v1/notify/alipay    a form signed with RSA2; reply "success"
 *     POST /v1/notify/wechat    signed JSON, encrypted resource; reply 204,
 *                               or 4xx/5xx {"code":"FAIL","message":...}
 *
 * The provider's own code verifies the callback and says what it
 * reports (ngx_http_paygw_notice_t).  Then it must match the stored
 * payment (channel, amount, currency) and is applied as a conditional
 * update with its outbox event: states only move forward, so a
 * duplicate, a late or an out-of-order callback changes nothing and is
 * acknowledged; one that cannot be trusted is refused and changes
 * nothing.  Either way it is counted in paygw_callbacks_total.
 *
 *   notify:  start -> selected -> settled [-> selected -> settled]
 *   refund:  start -> the GET steps of the refund it names (a query)
 *
 * A refund's callback (WeChat Pay REFUND.*) is a verified hint: the
 * refund is settled by what the provider answers to a query, as the
 * settler would, and the callback acknowledged.
 */


#include "ngx_http_paygw_payments.h"
#include "ngx_http_paygw_metrics.h"
#include "ngx_http_paygw_store.h"


static ngx_int_t ngx_http_paygw_notify_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_notify_refund(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_notify_selected(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_notify_settle(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_notify_settled(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_notify_check(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_notify_select(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_notify_ack(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, const char *what);
static ngx_int_t ngx_http_paygw_notify_refuse(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_uint_t status, const char *why);


static ngx_str_t  ngx_http_paygw_text_type = ngx_string("text/plain");


ngx_int_t
ngx_http_paygw_notify(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    if (ctx->notice.out_refund_no.len) {
        return ngx_http_paygw_notify_refund(r, ctx);
    }

    return ngx_http_paygw_steps(r, ctx, ngx_http_paygw_notify_start);
}


static ngx_int_t
ngx_http_paygw_notify_refund(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t                  rc;
    ngx_http_paygw_channel_t  *ch;

    ch = ctx->notify_channel;

    rc = ngx_http_paygw_get_refund(r, ctx);
    if (rc == NGX_AGAIN || rc == NGX_ERROR) {
        return rc;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw notify: refund %V queried: %ui",
                   &ctx->notice.out_refund_no, ctx->status);

    /* the answers below are the callback's, not the refund's */

    ctx->content_type = NULL;
    ctx->channel = ch;

    if (ctx->status == NGX_HTTP_NOT_FOUND) {
        return ngx_http_paygw_notify_refuse(r, ctx, NGX_HTTP_NOT_FOUND,
                                            "no such out_refund_no");
    }

    if (ctx->status != NGX_HTTP_OK) {
        return ngx_http_paygw_notify_refuse(r, ctx,
                                            NGX_HTTP_SERVICE_UNAVAILABLE,
                                            "storage unavailable; retry");
    }

    return ngx_http_paygw_notify_ack(r, ctx, "refund");
}


static ngx_int_t
ngx_http_paygw_notify_start(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw notify: step \"start\" channel \"%V\"",
                   &ctx->object_no);

    ctx->channel = ngx_http_paygw_channel_find(r, &ctx->object_no);

    if (ctx->channel == NULL || ctx->channel->provider->notify == NULL) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_NOT_FOUND,
                                   "not_found", "no callbacks for "
                                   "channel \"%V\"", &ctx->object_no);
    }

    if (ctx->channel->provider->notify(r, ctx) != NGX_OK) {
        return ngx_http_paygw_notify_refuse(r, ctx, NGX_HTTP_UNAUTHORIZED,
                                            ctx->notice_error);
    }

    if (ctx->notice.out_refund_no.len) {
        ctx->notify_channel = ctx->channel;
        ctx->object_no = ctx->notice.out_refund_no;
        ctx->next = NULL;
        return ngx_http_paygw_notify_refund(r, ctx);
    }

    return ngx_http_paygw_notify_select(r, ctx);
}


static ngx_int_t
ngx_http_paygw_notify_selected(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_payment_t  *p;

    p = &ctx->payment;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw notify: step \"selected\" payment %V, "
                   "notified \"%V\"%s", &ctx->notice.out_trade_no,
                   ngx_http_paygw_status_name(ctx->notice.status),
                   ctx->reread ? ", reread" : "");

    if (!ctx->mysql->call.ok) {
        return ngx_http_paygw_notify_refuse(r, ctx,
                                            NGX_HTTP_SERVICE_UNAVAILABLE,
                                            "storage unavailable; retry");
    }

    if (ctx->mysql->err_no) {
        return ngx_http_paygw_notify_refuse(r, ctx,
                                            NGX_HTTP_SERVICE_UNAVAILABLE,
                                            "storage failed; retry");
    }

    if (ngx_http_paygw_store_row_payment(ctx->mysql->stmts.elts, p)
        != NGX_OK)
    {
        return ngx_http_paygw_notify_refuse(r, ctx, NGX_HTTP_NOT_FOUND,
                                            "no such out_trade_no");
    }

    if (ngx_http_paygw_notify_check(r, ctx) != NGX_OK) {
        /* answered: refused, or nothing to change */
        return NGX_OK;
    }

    return ngx_http_paygw_notify_settle(r, ctx);
}


static ngx_int_t
ngx_http_paygw_notify_settle(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_payment_t  *p;

    p = &ctx->payment;

    ctx->outcome.definitive = 1;
    ctx->outcome.status = ctx->notice.status;
    ctx->outcome.provider_no = ctx->notice.provider_no;
    ngx_http_paygw_now(r->pool, &p->updated_at);

    /* the outbox event carries the payment as it will be */

    p->status = ctx->outcome.status;

    if (ctx->outcome.provider_no.data) {
        p->channel_trade_no = ctx->outcome.provider_no;
    }

    ctx->mysql = ngx_http_paygw_mysql_create(r);

    if (ctx->mysql == NULL
        || ngx_http_paygw_store_settle_payment(r, ctx->mysql, p,
                                               &ctx->outcome)
           != NGX_OK
        || ngx_http_paygw_mysql_send(r, ctx->mysql) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ctx->waiting = &ctx->mysql->call;
    ctx->next = ngx_http_paygw_notify_settled;

    return NGX_AGAIN;
}


static ngx_int_t
ngx_http_paygw_notify_settled(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_payment_t  *p;

    p = &ctx->payment;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw notify: step \"settled\" payment %V: %V",
                   &p->payment_no, ngx_http_paygw_status_name(p->status));

    if (!ctx->mysql->call.ok || ctx->mysql->err_no) {
        return ngx_http_paygw_notify_refuse(r, ctx,
                                            NGX_HTTP_SERVICE_UNAVAILABLE,
                                            "storage unavailable; retry");
    }

    if (ctx->mysql->conflict) {
        /* settled meanwhile (the create, a query, another callback) */

        if (ctx->reread) {
            return ngx_http_paygw_notify_ack(r, ctx, "settled meanwhile");
        }

        ctx->reread = 1;
        return ngx_http_paygw_notify_select(r, ctx);
    }

    ngx_http_paygw_m_payment(r, &p->channel, p->status);

    return ngx_http_paygw_notify_ack(r, ctx, "applied");
}


static ngx_int_t
ngx_http_paygw_notify_select(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_str_t  any;

    ngx_str_set(&any, "*");

    ctx->mysql = ngx_http_paygw_mysql_create(r);

    if (ctx->mysql == NULL
        || ngx_http_paygw_store_select_payment(ctx->mysql, &any,
                                               &ctx->notice.out_trade_no,
                                               NULL)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ctx->mysql->read_only = 1;
    ctx->waiting = &ctx->mysql->call;
    ctx->next = ngx_http_paygw_notify_selected;

    return ngx_http_paygw_mysql_send(r, ctx->mysql) == NGX_OK ? NGX_AGAIN
                                                               : NGX_ERROR;
}


/*
 * NGX_OK: apply the notice.  NGX_DECLINED: the answer is decided,
 * refused (it does not match the payment) or acknowledged (nothing to
 * change).
 */

static ngx_int_t
ngx_http_paygw_notify_check(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_uint_t                 level;
    ngx_http_paygw_notice_t   *n;
    ngx_http_paygw_payment_t  *p;

    p = &ctx->payment;
    n = &ctx->notice;

    if (p->channel.len != ctx->channel->name.len
        || ngx_strncmp(p->channel.data, ctx->channel->name.data,
                       p->channel.len) != 0
        || p->amount != n->amount
        || p->currency.len != n->currency.len
        || ngx_strncmp(p->currency.data, n->currency.data, p->currency.len)
           != 0)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "paygw %V callback for %V does not match the payment "
                      "(channel %V, amount %L %V, notified %L %V)",
                      &ctx->channel->name, &p->payment_no, &p->channel,
                      p->amount, &p->currency, n->amount, &n->currency);
        (void) ngx_http_paygw_notify_refuse(r, ctx, NGX_HTTP_BAD_REQUEST,
                                            "does not match the payment");
        return NGX_DECLINED;
    }

    if (n->status == NGX_HTTP_PAYGW_STATUS_NONE) {
        (void) ngx_http_paygw_notify_ack(r, ctx, "nothing final to apply");
        return NGX_DECLINED;
    }

    if (p->status == n->status) {
        (void) ngx_http_paygw_notify_ack(r, ctx, "a duplicate");
        return NGX_DECLINED;
    }

    if (!ngx_http_paygw_pay_transition_ok(p->status, n->status)) {
        /*
         * States only move forward: a late callback changes nothing.  A
         * success for a payment closed or failed here means money was
         * taken for it: that needs a refund, so it is logged as an error.
         */

        level = (n->status == NGX_HTTP_PAYGW_STATUS_SUCCEEDED
                 && (p->status == NGX_HTTP_PAYGW_STATUS_CLOSED
                     || p->status == NGX_HTTP_PAYGW_STATUS_FAILED))
                ? NGX_LOG_ERR : NGX_LOG_WARN;

        ngx_log_error(level, r->connection->log, 0,
                      "paygw %V callback says %V %V, which is %V already: "
                      "kept", &ctx->channel->name, &p->payment_no,
                      ngx_http_paygw_status_name(n->status),
                      ngx_http_paygw_status_name(p->status));

        (void) ngx_http_paygw_notify_ack(r, ctx, "out of order");
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_notify_ack(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    const char *what)
{
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "paygw %V callback for %V: %s", &ctx->channel->name,
                  &ctx->notice.out_trade_no, what);

    ngx_http_paygw_m_callback(r, &ctx->channel->name, 1);

    if (ctx->channel->provider->notify_ok.len) {
        ctx->status = NGX_HTTP_OK;
        ctx->content_type = &ngx_http_paygw_text_type;
        ctx->response = ctx->channel->provider->notify_ok;
        return NGX_OK;
    }

    ctx->status = NGX_HTTP_NO_CONTENT;
    ngx_str_set(&ctx->response, "");

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_notify_refuse(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_uint_t status, const char *why)
{
    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "paygw %V callback refused: %s", &ctx->channel->name, why);

    ngx_http_paygw_m_callback(r, &ctx->channel->name, 0);

    if (ctx->channel->provider->notify_fail.len) {
        /* a provider that wants text, e.g. Alipay: it sends again later */
        ctx->status = status;
        ctx->content_type = &ngx_http_paygw_text_type;
        ctx->response = ctx->channel->provider->notify_fail;
        return NGX_OK;
    }

    return ngx_http_paygw_respond(r, ctx, status,
                                  json_pack("{s:s, s:s}", "code", "FAIL",
                                            "message", why));
}
