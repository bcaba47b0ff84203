
/*
 * paygw: Alipay, open API with RSA2 (SHA256withRSA).
 *
 *     paygw_channel alipay location=URI app_id=ID private_key=PEM
 *                   alipay_public_key=PEM [notify_url=URL] ...;
 *
 * A request is a form POST to gateway.do: the common parameters plus
 * biz_content (JSON), signed over every parameter but "sign", sorted,
 * "k=v&..." with raw values.  The answer is
 * {"<method>_response":{...},"sign":"..."}, signed over the exact bytes
 * of the inner object, so that span is verified as received, never as
 * re-encoded JSON.  Notifies are forms signed without sign and
 * sign_type (Alipay's SDK also accepts them signed with sign_type).
 *
 * Every call is idempotent by out_trade_no / out_request_no (our
 * payment_no and out_refund_no), so unanswered calls may be repeated.
 */


#include "ngx_http_paygw_channel.h"
#include "ngx_http_paygw_crypto.h"


#define NGX_HTTP_PAYGW_ALIPAY_MAX_PARAMS  64


static ngx_int_t ngx_http_paygw_alipay_precreate(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_alipay_query(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_alipay_close(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_alipay_refund(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_alipay_refund_query(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_alipay_trade_call(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, const char *method);
static ngx_int_t ngx_http_paygw_alipay_send(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, const char *method, json_t *biz,
    ngx_str_t *notify_url);
static json_t *ngx_http_paygw_alipay_answer(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_str_t *code, ngx_str_t *sub_code);
static void ngx_http_paygw_alipay_precreate_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static void ngx_http_paygw_alipay_query_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static void ngx_http_paygw_alipay_close_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static void ngx_http_paygw_alipay_refund_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_alipay_notify(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static void ngx_http_paygw_alipay_failed(ngx_http_request_t *r,
    ngx_http_paygw_outcome_t *out, json_t *doc, ngx_str_t *sub_code);
static ngx_int_t ngx_http_paygw_alipay_amount(json_t *doc, const char *name,
    int64_t expect);
static ngx_str_t *ngx_http_paygw_alipay_param(ngx_array_t *params,
    const char *name);
static ngx_int_t ngx_http_paygw_alipay_answer_key(ngx_pool_t *pool,
    u_char *what, ngx_str_t *key);
static u_char *ngx_http_paygw_alipay_span(ngx_str_t *body, ngx_str_t *key,
    size_t *len);
static char *ngx_http_paygw_alipay_conf(ngx_conf_t *cf,
    ngx_http_paygw_channel_t *ch, ngx_str_t *param);
static char *ngx_http_paygw_alipay_check(ngx_conf_t *cf,
    ngx_http_paygw_channel_t *ch);


ngx_http_paygw_provider_t  ngx_http_paygw_alipay_provider = {
    ngx_string("alipay"),
    NGX_HTTP_PAYGW_KIND_QR,
    ngx_string("CNY"),                           /* domestic QR: yuan */
    1,
    ngx_string("success"),
    ngx_string("fail"),             /* anything else: Alipay sends again */

    ngx_http_paygw_alipay_precreate,
    ngx_http_paygw_alipay_query,
    ngx_http_paygw_alipay_close,
    ngx_http_paygw_alipay_refund,
    ngx_http_paygw_alipay_refund_query,
    ngx_http_paygw_alipay_precreate_outcome,
    ngx_http_paygw_alipay_query_outcome,
    ngx_http_paygw_alipay_close_outcome,
    ngx_http_paygw_alipay_refund_outcome,
    ngx_http_paygw_alipay_notify,
    ngx_http_paygw_alipay_conf,
    ngx_http_paygw_alipay_check
};


static ngx_int_t
ngx_http_paygw_alipay_precreate(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    u_char                    *last;
    json_t                    *biz;
    ngx_http_paygw_payment_t  *p;
    u_char                     amount[NGX_INT64_LEN + 4];
    u_char                     expire[NGX_INT64_LEN + 2];

    p = &ctx->payment;

    last = ngx_sprintf(amount, "%L.%02L", p->amount / 100, p->amount % 100);
    *last = '\0';

    /*
     * Whole minutes, rounded down (at least one): the QR code must stop
     * working no later than our expiry, after which we close it.
     */

    last = ngx_sprintf(expire, "%Lm",
                       p->expire_seconds >= 120 ? p->expire_seconds / 60
                                                : (int64_t) 1);
    *last = '\0';

    biz = json_pack("{s:s%, s:s, s:s%, s:s}",
                    "out_trade_no", p->payment_no.data, p->payment_no.len,
                    "total_amount", amount,
                    "subject", p->subject.data ? (char *) p->subject.data
                                               : (char *) p->payment_no.data,
                    p->subject.data ? p->subject.len : p->payment_no.len,
                    "timeout_express", expire);
    if (biz == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_paygw_alipay_send(r, ctx, "alipay.trade.precreate", biz,
                                      &ctx->channel->notify_url);
}


static ngx_int_t
ngx_http_paygw_alipay_query(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    return ngx_http_paygw_alipay_trade_call(r, ctx, "alipay.trade.query");
}


static ngx_int_t
ngx_http_paygw_alipay_close(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    return ngx_http_paygw_alipay_trade_call(r, ctx, "alipay.trade.close");
}


static ngx_int_t
ngx_http_paygw_alipay_trade_call(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, const char *method)
{
    json_t     *biz;

    biz = json_pack("{s:s%}", "out_trade_no", ctx->payment.payment_no.data,
                    ctx->payment.payment_no.len);
    if (biz == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_paygw_alipay_send(r, ctx, method, biz, NULL);
}


static ngx_int_t
ngx_http_paygw_alipay_refund(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    u_char                   *last;
    json_t                   *biz;
    ngx_http_paygw_refund_t  *rf;
    u_char                    amount[NGX_INT64_LEN + 4];

    rf = &ctx->refund;

    last = ngx_sprintf(amount, "%L.%02L", rf->amount / 100, rf->amount % 100);
    *last = '\0';

    biz = json_pack("{s:s%, s:s, s:s%, s:s%}",
                    "out_trade_no", rf->payment_no.data, rf->payment_no.len,
                    "refund_amount", amount,
                    "out_request_no", rf->out_refund_no.data,
                    rf->out_refund_no.len,
                    "refund_reason", rf->reason.data ? (char *) rf->reason.data
                                                     : "",
                    rf->reason.len);
    if (biz == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_paygw_alipay_send(r, ctx, "alipay.trade.refund", biz, NULL);
}


static ngx_int_t
ngx_http_paygw_alipay_refund_query(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    json_t                   *biz;
    ngx_http_paygw_refund_t  *rf;

    rf = &ctx->refund;

    biz = json_pack("{s:s%, s:s%}",
                    "out_trade_no", rf->payment_no.data, rf->payment_no.len,
                    "out_request_no", rf->out_refund_no.data,
                    rf->out_refund_no.len);
    if (biz == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_paygw_alipay_send(r, ctx,
                                      "alipay.trade.fastpay.refund.query", biz,
                                      NULL);
}


/* one signed request; its biz_content (JSON) is released here */

static ngx_int_t
ngx_http_paygw_alipay_send(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    const char *method, json_t *biz, ngx_str_t *notify_url)
{
    u_char                          *last, *ts;
    ngx_tm_t                         tm;
    ngx_int_t                        rc;
    ngx_str_t                        content, canonical, sign, ct;
    ngx_array_t                     *params;
    ngx_keyval_t                    *kv;
    ngx_http_paygw_channel_t        *ch;
    ngx_http_paygw_provider_call_t  *pc;

    ch = ctx->channel;

    rc = ngx_http_paygw_json_dump(r->pool, biz, &content);
    json_decref(biz);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    pc = ngx_http_paygw_provider_create(r, "POST");
    params = ngx_array_create(r->pool, 10, sizeof(ngx_keyval_t));
    ts = ngx_pnalloc(r->pool, sizeof("yyyy-mm-dd hh:mm:ss"));
    if (pc == NULL || params == NULL || ts == NULL) {
        return NGX_ERROR;
    }

    /* Alipay's clock is Beijing time */

    ngx_gmtime(ngx_time() + 8 * 3600, &tm);
    last = ngx_sprintf(ts, "%4d-%02d-%02d %02d:%02d:%02d", tm.ngx_tm_year,
                       tm.ngx_tm_mon, tm.ngx_tm_mday, tm.ngx_tm_hour,
                       tm.ngx_tm_min, tm.ngx_tm_sec);
    *last = '\0';

#define ngx_paygw_param(k, v, n)                                             \
    kv = ngx_array_push(params);                                             \
    if (kv == NULL) {                                                        \
        return NGX_ERROR;                                                    \
    }                                                                        \
    ngx_str_set(&kv->key, k);                                                \
    kv->value.data = (u_char *) (v);                                         \
    kv->value.len = (n)

    ngx_paygw_param("app_id", ch->app_id.data, ch->app_id.len);
    ngx_paygw_param("method", method, ngx_strlen(method));
    ngx_paygw_param("format", "JSON", 4);
    ngx_paygw_param("charset", "utf-8", 5);
    ngx_paygw_param("sign_type", "RSA2", 4);
    ngx_paygw_param("timestamp", ts, last - ts);
    ngx_paygw_param("version", "1.0", 3);

    if (notify_url && notify_url->len) {
        ngx_paygw_param("notify_url", notify_url->data, notify_url->len);
    }

    ngx_paygw_param("biz_content", content.data, content.len);

    if (ngx_http_paygw_alipay_canonical(r->pool, params, 1, &canonical)
        != NGX_OK
        || ngx_http_paygw_rsa_sign(r->pool, ch->private_key, &canonical,
                                   &sign)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw alipay: cannot sign %s", method);
        return NGX_ERROR;
    }

    ngx_paygw_param("sign", sign.data, sign.len);

#undef ngx_paygw_param

    if (ngx_http_paygw_form_encode(r->pool, params, &pc->body) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_str_set(&pc->path, "/gateway.do");
    ngx_str_set(&ct, "application/x-www-form-urlencoded;charset=utf-8");

    pc->what = (u_char *) method;

    if (ngx_http_paygw_provider_header(r, pc, "Content-Type", &ct) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->provider = pc;
    ctx->waiting = &pc->call;

    return ngx_http_paygw_provider_send(r, ch, pc);
}


/*
 * The verified inner object of an answer, with its "code" and
 * "sub_code".  The outcome starts afresh; with no verifiable answer it
 * is "unknown" and NULL is returned.
 */

static json_t *
ngx_http_paygw_alipay_answer(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_str_t *code, ngx_str_t *sub_code)
{
    u_char                          *span;
    size_t                           len;
    json_t                          *doc, *inner;
    ngx_str_t                        key, signed_part, sign;
    json_error_t                     err;
    ngx_http_paygw_provider_call_t  *pc;

    pc = ctx->provider;

    ngx_memzero(&ctx->outcome, sizeof(ngx_http_paygw_outcome_t));
    ngx_http_paygw_outcome_unknown(&ctx->outcome,
                                   "no verifiable answer from Alipay");

    if (!pc->call.ok || pc->status != NGX_HTTP_OK) {
        return NULL;
    }

    if (ngx_http_paygw_alipay_answer_key(r->pool, pc->what, &key) != NGX_OK) {
        return NULL;
    }

    len = 0;
    span = ngx_http_paygw_alipay_span(&pc->response, &key, &len);

    doc = json_loadb((char *) pc->response.data, pc->response.len,
                     JSON_REJECT_DUPLICATES, &err);

    key.data++;
    key.len -= 2;
    key.data[key.len] = '\0';

    inner = doc ? json_object_get(doc, (char *) key.data) : NULL;

    /* (not through json_str: a signature is longer than it keeps) */

    sign.data = (u_char *) json_string_value(json_object_get(doc, "sign"));
    sign.len = sign.data ? ngx_strlen(sign.data) : 0;

    if (span == NULL || !json_is_object(inner) || sign.data == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw alipay: unsigned or malformed answer to %s",
                      pc->what);
        json_decref(doc);
        return NULL;
    }

    signed_part.data = span;
    signed_part.len = len;

    if (ngx_http_paygw_rsa_verify(r->pool, ctx->channel->provider_key,
                                  &signed_part, &sign)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw alipay: answer to %s does not verify with the "
                      "Alipay public key", pc->what);
        json_decref(doc);
        return NULL;
    }

    json_decref(doc);

    /* what was verified is what is read: the signed bytes themselves */

    inner = json_loadb((char *) span, len, JSON_REJECT_DUPLICATES, &err);

    if (!json_is_object(inner)) {
        json_decref(inner);
        return NULL;
    }

    ngx_memzero(&ctx->outcome, sizeof(ngx_http_paygw_outcome_t));

    ngx_http_paygw_json_str(r->pool, inner, "code", code);
    ngx_http_paygw_json_str(r->pool, inner, "sub_code", sub_code);

    if (code->data == NULL) {
        ngx_str_set(code, "");
    }

    if (sub_code->data == NULL) {
        ngx_str_set(sub_code, "");
    }

    return inner;
}


static void
ngx_http_paygw_alipay_precreate_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    json_t                    *doc;
    ngx_str_t                  code, sub;
    ngx_http_paygw_outcome_t  *out;

    out = &ctx->outcome;

    doc = ngx_http_paygw_alipay_answer(r, ctx, &code, &sub);
    if (doc == NULL) {
        return;
    }

    if (ngx_http_paygw_is(&code, "10000")) {
        ngx_http_paygw_json_str(r->pool, doc, "qr_code", &out->qr_code);

        if (ngx_http_paygw_json_is(doc, "out_trade_no",
                                   &ctx->payment.payment_no) != NGX_OK
            || out->qr_code.len == 0)
        {
            ngx_http_paygw_outcome_unknown(out, "Alipay answered for "
                                           "another trade");
        } else {
            ngx_http_paygw_outcome_set(out, NGX_HTTP_PAYGW_STATUS_PENDING);
        }

    } else if (ngx_http_paygw_is(&sub, "ACQ.TRADE_HAS_SUCCESS")
               || ngx_http_paygw_is(&sub, "ACQ.TRADE_HAS_CLOSE"))
    {
        /* a repeat of a trade that moved on: the query tells how */
        ngx_http_paygw_outcome_unknown(out, "the trade moved on at Alipay");

    } else if (ngx_http_paygw_is(&code, "40004")
               || ngx_http_paygw_is(&code, "40002"))
    {
        ngx_http_paygw_alipay_failed(r, out, doc, &sub);

    } else {
        ngx_http_paygw_outcome_unknown(out, "Alipay could not answer");
    }

    json_decref(doc);
}


static void
ngx_http_paygw_alipay_query_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    json_t                    *doc;
    ngx_str_t                  code, sub, status;
    ngx_http_paygw_outcome_t  *out;

    out = &ctx->outcome;

    doc = ngx_http_paygw_alipay_answer(r, ctx, &code, &sub);
    if (doc == NULL) {
        return;
    }

    if (ngx_http_paygw_is(&sub, "ACQ.TRADE_NOT_EXIST")) {
        out->not_found = 1;
        ngx_http_paygw_outcome_unknown(out, "Alipay has no such trade");
        json_decref(doc);
        return;
    }

    if (!ngx_http_paygw_is(&code, "10000")) {
        ngx_http_paygw_outcome_unknown(out, "Alipay could not answer");
        json_decref(doc);
        return;
    }

    if (ngx_http_paygw_json_is(doc, "out_trade_no", &ctx->payment.payment_no)
        != NGX_OK
        || ngx_http_paygw_alipay_amount(doc, "total_amount",
                                        ctx->payment.amount) != NGX_OK
        || ctx->payment.currency.len != 3
        || ngx_strncmp(ctx->payment.currency.data, "CNY", 3) != 0)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw alipay: query answer for %V does not match the "
                      "payment (out_trade_no, total_amount)",
                      &ctx->payment.payment_no);
        ngx_http_paygw_outcome_unknown(out, "Alipay answer does not match");
        json_decref(doc);
        return;
    }

    ngx_http_paygw_json_str(r->pool, doc, "trade_status", &status);
    ngx_http_paygw_json_str(r->pool, doc, "trade_no", &out->provider_no);

    if (status.data == NULL) {
        ngx_http_paygw_outcome_unknown(out, "no trade_status");

    } else if (ngx_http_paygw_is(&status, "TRADE_SUCCESS")
               || ngx_http_paygw_is(&status, "TRADE_FINISHED"))
    {
        ngx_http_paygw_outcome_set(out, NGX_HTTP_PAYGW_STATUS_SUCCEEDED);

    } else if (ngx_http_paygw_is(&status, "TRADE_CLOSED")) {
        ngx_http_paygw_outcome_set(out, NGX_HTTP_PAYGW_STATUS_CLOSED);

    } else if (ngx_http_paygw_is(&status, "WAIT_BUYER_PAY")) {
        ngx_http_paygw_outcome_set(out, NGX_HTTP_PAYGW_STATUS_PENDING);

    } else {
        ngx_http_paygw_outcome_unknown(out, "unknown trade_status");
    }

    json_decref(doc);
}


static void
ngx_http_paygw_alipay_close_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    json_t                    *doc;
    ngx_str_t                  code, sub;
    ngx_http_paygw_outcome_t  *out;

    out = &ctx->outcome;

    doc = ngx_http_paygw_alipay_answer(r, ctx, &code, &sub);
    if (doc == NULL) {
        return;
    }

    if (ngx_http_paygw_is(&code, "10000")) {
        ngx_http_paygw_outcome_set(out, NGX_HTTP_PAYGW_STATUS_CLOSED);

    } else if (ngx_http_paygw_is(&sub, "ACQ.TRADE_NOT_EXIST")) {

        /*
         * Alipay shows a precreated trade only once it is scanned, yet
         * its QR code can be paid until it expires.  "No such trade" is
         * final when nobody has the code (the create's answer was lost)
         * or when it expired; before that it cannot be closed here.
         */

        if (ctx->payment.status != NGX_HTTP_PAYGW_STATUS_PENDING
            || ctx->payment.overdue > 0)
        {
            ngx_http_paygw_outcome_set(out, NGX_HTTP_PAYGW_STATUS_CLOSED);

        } else {
            ngx_http_paygw_outcome_unknown(out, "Alipay does not show the "
                                           "trade yet: its code can be paid "
                                           "until it expires");
        }

    } else if (ngx_http_paygw_is(&sub, "ACQ.TRADE_STATUS_ERROR")) {
        /* paid already: not closable, the query says what it is */
        out->not_closable = 1;
        ngx_http_paygw_outcome_unknown(out, "the trade was paid");

    } else {
        ngx_http_paygw_outcome_unknown(out, "Alipay could not close it");
    }

    json_decref(doc);
}


static void
ngx_http_paygw_alipay_refund_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    json_t                          *doc;
    ngx_str_t                        code, sub, status, fund;
    ngx_http_paygw_outcome_t        *out;
    ngx_http_paygw_provider_call_t  *pc;

    out = &ctx->outcome;
    pc = ctx->provider;

    doc = ngx_http_paygw_alipay_answer(r, ctx, &code, &sub);
    if (doc == NULL) {
        return;
    }

    if (ngx_strcmp(pc->what, "alipay.trade.fastpay.refund.query") == 0) {

        /* a refund Alipay never saw is a success without refund_status */

        ngx_http_paygw_json_str(r->pool, doc, "refund_status", &status);

        if (!ngx_http_paygw_is(&code, "10000")) {
            ngx_http_paygw_outcome_unknown(out, "Alipay could not answer");

        } else if (status.data == NULL) {
            out->not_found = 1;
            ngx_http_paygw_outcome_unknown(out, "Alipay has no such refund");

        } else if (ngx_http_paygw_is(&status, "REFUND_SUCCESS")
                   && ngx_http_paygw_alipay_amount(doc, "refund_amount",
                                                   ctx->refund.amount)
                      == NGX_OK)
        {
            ngx_http_paygw_outcome_set(out, NGX_HTTP_PAYGW_STATUS_SUCCEEDED);

        } else {
            ngx_http_paygw_outcome_unknown(out, "unexpected refund status");
        }

        json_decref(doc);
        return;
    }

    if (ngx_http_paygw_is(&code, "10000")) {

        if (ngx_http_paygw_json_is(doc, "out_trade_no",
                                   &ctx->refund.payment_no) != NGX_OK)
        {
            ngx_http_paygw_outcome_unknown(out, "Alipay answered for "
                                           "another trade");
        } else {
            /*
             * fund_change "Y": the money moved now.  "N" after a try of
             * ours went unanswered is that try's refund repeated; "N"
             * otherwise says nothing for sure: the refund query settles
             * it (as Alipay asks), never a guess.
             */
            ngx_http_paygw_json_str(r->pool, doc, "fund_change", &fund);

            if (ngx_http_paygw_is(&fund, "Y") || ctx->attempt > 1) {
                ngx_http_paygw_outcome_set(out,
                                           NGX_HTTP_PAYGW_STATUS_SUCCEEDED);
                ngx_http_paygw_json_str(r->pool, doc, "trade_no",
                                        &out->provider_no);

            } else {
                ngx_http_paygw_outcome_unknown(out, "Alipay moved no money "
                                               "for it now (fund_change)");
            }
        }

    } else if (ngx_http_paygw_is(&code, "40004")
               && !ngx_http_paygw_is(&sub, "ACQ.SYSTEM_ERROR"))
    {
        ngx_http_paygw_alipay_failed(r, out, doc, &sub);

    } else {
        ngx_http_paygw_outcome_unknown(out, "Alipay could not answer");
    }

    json_decref(doc);
}


static void
ngx_http_paygw_alipay_failed(ngx_http_request_t *r,
    ngx_http_paygw_outcome_t *out, json_t *doc, ngx_str_t *sub_code)
{
    /* Alipay refused the request itself: nothing happened there */

    ngx_http_paygw_outcome_set(out, NGX_HTTP_PAYGW_STATUS_FAILED);
    out->failure_code = *sub_code;
    ngx_http_paygw_json_str(r->pool, doc, "sub_msg", &out->failure_message);

    if (out->failure_code.len == 0) {
        ngx_str_set(&out->failure_code, "provider_rejected");
    }
}


static ngx_int_t
ngx_http_paygw_alipay_amount(json_t *doc, const char *name, int64_t expect)
{
    int64_t    fen;
    json_t    *v;
    ngx_str_t  s;

    v = json_object_get(doc, name);

    if (!json_is_string(v)) {
        return NGX_DECLINED;
    }

    s.data = (u_char *) json_string_value(v);
    s.len = json_string_length(v);

    if (ngx_http_paygw_yuan(&s, &fen) != NGX_OK || fen != expect) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* "alipay.trade.query" answers in "alipay_trade_query_response" */

static ngx_int_t
ngx_http_paygw_alipay_answer_key(ngx_pool_t *pool, u_char *what,
    ngx_str_t *key)
{
    u_char  *p;

    key->len = ngx_strlen(what) + sizeof("\"_response\"") - 1;
    key->data = ngx_pnalloc(pool, key->len);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    (void) ngx_sprintf(key->data, "\"%s_response\"", what);

    for (p = key->data; p < key->data + key->len; p++) {
        if (*p == '.') {
            *p = '_';
        }
    }

    return NGX_OK;
}


/*
 * The bytes of the JSON object that follows KEY (a quoted member name)
 * in BODY, exactly as sent: the signed part of an answer.
 */

static u_char *
ngx_http_paygw_alipay_span(ngx_str_t *body, ngx_str_t *key, size_t *len)
{
    u_char      *p, *last, *start;
    ngx_uint_t   depth, in_string;

    last = body->data + body->len;

    for (p = body->data; p + key->len <= last; p++) {
        if (ngx_memcmp(p, key->data, key->len) == 0) {
            break;
        }
    }

    if (p + key->len > last) {
        return NULL;
    }

    for (p += key->len; p < last && (*p == ' ' || *p == ':'); p++) {
        /* void */
    }

    if (p == last || *p != '{') {
        return NULL;
    }

    start = p;
    depth = 0;
    in_string = 0;

    for ( /* void */ ; p < last; p++) {

        if (in_string) {
            if (*p == '\\') {
                p++;

            } else if (*p == '"') {
                in_string = 0;
            }

            continue;
        }

        if (*p == '"') {
            in_string = 1;

        } else if (*p == '{') {
            depth++;

        } else if (*p == '}' && --depth == 0) {
            *len = p + 1 - start;
            return start;
        }
    }

    return NULL;
}


/* POST /v1/notify/alipay: a form, signed by Alipay */

static ngx_int_t
ngx_http_paygw_alipay_notify(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_str_t                 *v, status;
    ngx_array_t               *params;
    ngx_http_paygw_notice_t   *n;
    ngx_http_paygw_channel_t  *ch;

    ch = ctx->channel;
    n = &ctx->notice;

    if (ngx_http_paygw_alipay_verify_form(r->pool, ch->provider_key,
                                          &ctx->body, &params)
        != NGX_OK)
    {
        ctx->notice_error = "signature does not verify";
        return NGX_DECLINED;
    }

    v = ngx_http_paygw_alipay_param(params, "out_trade_no");
    if (v == NULL) {
        ctx->notice_error = "no out_trade_no";
        return NGX_DECLINED;
    }

    n->out_trade_no = *v;

    v = ngx_http_paygw_alipay_param(params, "total_amount");
    if (v == NULL || ngx_http_paygw_yuan(v, &n->amount) != NGX_OK) {
        ctx->notice_error = "no valid total_amount";
        return NGX_DECLINED;
    }

    v = ngx_http_paygw_alipay_param(params, "app_id");
    if (v == NULL) {
        ctx->notice_error = "no app_id";
        return NGX_DECLINED;
    }

    if (v->len != ch->app_id.len
        || ngx_strncmp(v->data, ch->app_id.data, v->len) != 0)
    {
        ctx->notice_error = "app_id is not ours";
        return NGX_DECLINED;
    }

    /* Alipay trades in CNY: total_amount is yuan */
    ngx_str_set(&n->currency, "CNY");

    v = ngx_http_paygw_alipay_param(params, "trade_no");
    if (v) {
        n->provider_no = *v;
    }

    v = ngx_http_paygw_alipay_param(params, "trade_status");
    status = v ? *v : (ngx_str_t) ngx_null_string;

    if (ngx_http_paygw_is(&status, "TRADE_SUCCESS")
        || ngx_http_paygw_is(&status, "TRADE_FINISHED"))
    {
        n->status = NGX_HTTP_PAYGW_STATUS_SUCCEEDED;

    } else if (ngx_http_paygw_is(&status, "TRADE_CLOSED")) {
        n->status = NGX_HTTP_PAYGW_STATUS_CLOSED;

    } else {
        n->status = NGX_HTTP_PAYGW_STATUS_NONE;
    }

    return NGX_OK;
}


/*
 * A notify's form decoded and verified with Alipay's key: first signed
 * without sign and sign_type (the documented rule), then with sign_type
 * (what Alipay's SDK also accepts).  Used by the test endpoint as well.
 */

ngx_int_t
ngx_http_paygw_alipay_verify_form(ngx_pool_t *pool, EVP_PKEY *key,
    ngx_str_t *form, ngx_array_t **params)
{
    ngx_str_t  *sign, canonical;

    if (ngx_http_paygw_form_decode(pool, form, NGX_HTTP_PAYGW_ALIPAY_MAX_PARAMS,
                                   params)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    sign = ngx_http_paygw_alipay_param(*params, "sign");
    if (sign == NULL) {
        return NGX_DECLINED;
    }

    if (ngx_http_paygw_alipay_canonical(pool, *params, 0, &canonical)
        == NGX_OK
        && ngx_http_paygw_rsa_verify(pool, key, &canonical, sign) == NGX_OK)
    {
        return NGX_OK;
    }

    if (ngx_http_paygw_alipay_canonical(pool, *params, 1, &canonical)
        == NGX_OK
        && ngx_http_paygw_rsa_verify(pool, key, &canonical, sign) == NGX_OK)
    {
        return NGX_OK;
    }

    return NGX_DECLINED;
}


static ngx_str_t *
ngx_http_paygw_alipay_param(ngx_array_t *params, const char *name)
{
    size_t         len;
    ngx_uint_t     i;
    ngx_keyval_t  *kv;

    len = ngx_strlen(name);
    kv = params->elts;

    for (i = 0; i < params->nelts; i++) {
        if (kv[i].key.len == len && ngx_strncmp(kv[i].key.data, name, len) == 0)
        {
            return &kv[i].value;
        }
    }

    return NULL;
}


static char *
ngx_http_paygw_alipay_conf(ngx_conf_t *cf, ngx_http_paygw_channel_t *ch,
    ngx_str_t *param)
{
    ngx_str_t  v;

    if (param->len > 12 && ngx_strncmp(param->data, "private_key=", 12) == 0) {
        v.data = param->data + 12;
        v.len = param->len - 12;
        return ngx_http_paygw_conf_pem(cf, &v, 1, &ch->private_key);
    }

    if (param->len > 18
        && ngx_strncmp(param->data, "alipay_public_key=", 18) == 0)
    {
        v.data = param->data + 18;
        v.len = param->len - 18;
        return ngx_http_paygw_conf_pem(cf, &v, 0, &ch->provider_key);
    }

    return (char *) NGX_DECLINED;
}


static char *
ngx_http_paygw_alipay_check(ngx_conf_t *cf, ngx_http_paygw_channel_t *ch)
{
    if (ch->app_id.len == 0 || ch->private_key == NULL
        || ch->provider_key == NULL)
    {
        return "needs app_id=, private_key= and alipay_public_key=";
    }

    return NGX_CONF_OK;
}


/*
 * SPEC §7: the trade bill's download URL for reconciliation
 * (ngx_http_paygw_reconcile.c): alipay.data.dataservice.bill.downloadurl
 * .query {bill_type: trade, bill_date}, signed, its answer verified.
 */

ngx_int_t
ngx_http_paygw_alipay_statement_query(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_str_t *date)
{
    json_t  *biz;

    biz = json_pack("{s:s, s:s%}", "bill_type", "trade",
                    "bill_date", date->data, date->len);
    if (biz == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_paygw_alipay_send(r, ctx,
                             "alipay.data.dataservice.bill.downloadurl.query",
                             biz, NULL);
}


json_t *
ngx_http_paygw_alipay_statement_answer(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_str_t *code, ngx_str_t *sub_code)
{
    return ngx_http_paygw_alipay_answer(r, ctx, code, sub_code);
}
