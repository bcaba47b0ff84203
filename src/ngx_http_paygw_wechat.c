
/*
 * paygw: WeChat Pay API v3.
 *
 *     paygw_channel wechat location=URI merchant_id=MCHID app_id=APPID
 *                   private_key=PEM serial_no=SERIAL apiv3_key_file=PATH
 *                   platform_key=SERIAL:PEM [platform_key=...]
 *                   [notify_url=URL] ...;
 *
 * Requests carry Authorization: WECHATPAY2-SHA256-RSA2048 with a
 * SHA256withRSA signature of "METHOD\nURL\nTS\nNONCE\nBODY\n" by our key.
 * Answers and callbacks are signed over "TS\nNONCE\nBODY\n" by the
 * platform key named in Wechatpay-Serial (several may be configured, so
 * keys can rotate); a timestamp 300 s or more away is refused.  Callback
 * resources are AEAD-AES-GCM encrypted with the APIv3 key.
 *
 * Every call is idempotent by out_trade_no / out_refund_no.
 */


#include "ngx_http_paygw_channel.h"
#include "ngx_http_paygw_crypto.h"
#include <openssl/rand.h>


#define NGX_HTTP_PAYGW_WECHAT_SKEW  300


static ngx_int_t ngx_http_paygw_wechat_native(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_wechat_query(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_wechat_close(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_wechat_refund(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_wechat_refund_query(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_wechat_send(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, const char *method, ngx_str_t *path,
    json_t *doc);
static json_t *ngx_http_paygw_wechat_answer(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static void ngx_http_paygw_wechat_native_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static void ngx_http_paygw_wechat_query_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static void ngx_http_paygw_wechat_close_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static void ngx_http_paygw_wechat_refund_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_wechat_notify(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_wechat_authorize(ngx_http_request_t *r,
    ngx_http_paygw_channel_t *ch, ngx_http_paygw_provider_call_t *pc,
    ngx_str_t *auth);
static ngx_http_paygw_status_e ngx_http_paygw_wechat_trade_state(
    ngx_str_t *state);
static ngx_int_t ngx_http_paygw_wechat_amount(json_t *doc, const char *name,
    int64_t expect, ngx_str_t *currency);
static void ngx_http_paygw_wechat_failed(ngx_http_request_t *r,
    ngx_http_paygw_outcome_t *out, json_t *doc);
static ngx_str_t *ngx_http_paygw_wechat_header(ngx_http_request_t *r,
    ngx_list_t *headers, const char *name);
static char *ngx_http_paygw_wechat_conf(ngx_conf_t *cf,
    ngx_http_paygw_channel_t *ch, ngx_str_t *param);
static char *ngx_http_paygw_wechat_check(ngx_conf_t *cf,
    ngx_http_paygw_channel_t *ch);


ngx_http_paygw_provider_t  ngx_http_paygw_wechat_provider = {
    ngx_string("wechat"),
    NGX_HTTP_PAYGW_KIND_QR,
    ngx_string("CNY"),                           /* domestic QR: yuan */
    2,
    ngx_null_string,
    ngx_null_string,

    ngx_http_paygw_wechat_native,
    ngx_http_paygw_wechat_query,
    ngx_http_paygw_wechat_close,
    ngx_http_paygw_wechat_refund,
    ngx_http_paygw_wechat_refund_query,
    ngx_http_paygw_wechat_native_outcome,
    ngx_http_paygw_wechat_query_outcome,
    ngx_http_paygw_wechat_close_outcome,
    ngx_http_paygw_wechat_refund_outcome,
    ngx_http_paygw_wechat_notify,
    ngx_http_paygw_wechat_conf,
    ngx_http_paygw_wechat_check
};


static ngx_int_t
ngx_http_paygw_wechat_native(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    u_char                    *last;
    json_t                    *doc;
    ngx_tm_t                   tm;
    ngx_str_t                  path;
    ngx_http_paygw_channel_t  *ch;
    ngx_http_paygw_payment_t  *p;
    u_char                     expire[sizeof("yyyy-mm-ddThh:mm:ss+00:00")];

    ch = ctx->channel;
    p = &ctx->payment;

    /* the code stops working at expiry */

    ngx_gmtime(ngx_time() + (p->expire_seconds > 60 ? p->expire_seconds : 60),
               &tm);
    last = ngx_sprintf(expire, "%4d-%02d-%02dT%02d:%02d:%02d+00:00",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);
    *last = '\0';

    doc = json_pack("{s:s%, s:s%, s:s%, s:s%, s:s, s:s%, s:{s:I, s:s%}}",
                    "appid", ch->app_id.data, ch->app_id.len,
                    "mchid", ch->merchant.data, ch->merchant.len,
                    "description",
                    p->subject.data ? (char *) p->subject.data
                                    : (char *) p->payment_no.data,
                    p->subject.data ? p->subject.len : p->payment_no.len,
                    "out_trade_no", p->payment_no.data, p->payment_no.len,
                    "time_expire", expire,
                    "notify_url", ch->notify_url.data, ch->notify_url.len,
                    "amount",
                      "total", (json_int_t) p->amount,
                      "currency", p->currency.data, p->currency.len);
    if (doc == NULL) {
        return NGX_ERROR;
    }

    ngx_str_set(&path, "/v3/pay/transactions/native");

    return ngx_http_paygw_wechat_send(r, ctx, "POST", &path, doc);
}


static ngx_int_t
ngx_http_paygw_wechat_query(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_str_t  path;

    path.data = ngx_pnalloc(r->pool, sizeof("/v3/pay/transactions/out-trade-no/"
                                            "?mchid=") - 1
                                     + ctx->payment.payment_no.len
                                     + ctx->channel->merchant.len);
    if (path.data == NULL) {
        return NGX_ERROR;
    }

    path.len = ngx_sprintf(path.data,
                           "/v3/pay/transactions/out-trade-no/%V?mchid=%V",
                           &ctx->payment.payment_no, &ctx->channel->merchant)
               - path.data;

    return ngx_http_paygw_wechat_send(r, ctx, "GET", &path, NULL);
}


static ngx_int_t
ngx_http_paygw_wechat_close(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    json_t     *doc;
    ngx_str_t   path;

    path.data = ngx_pnalloc(r->pool, sizeof("/v3/pay/transactions/out-trade-no/"
                                            "/close") - 1
                                     + ctx->payment.payment_no.len);
    if (path.data == NULL) {
        return NGX_ERROR;
    }

    path.len = ngx_sprintf(path.data,
                           "/v3/pay/transactions/out-trade-no/%V/close",
                           &ctx->payment.payment_no)
               - path.data;

    doc = json_pack("{s:s%}", "mchid", ctx->channel->merchant.data,
                    ctx->channel->merchant.len);
    if (doc == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_paygw_wechat_send(r, ctx, "POST", &path, doc);
}


static ngx_int_t
ngx_http_paygw_wechat_refund(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    json_t                   *doc;
    ngx_str_t                 path;
    ngx_http_paygw_refund_t  *rf;

    rf = &ctx->refund;

    doc = json_pack("{s:s%, s:s%, s:s%, s:{s:I, s:I, s:s%}}",
                    "out_trade_no", rf->payment_no.data, rf->payment_no.len,
                    "out_refund_no", rf->out_refund_no.data,
                    rf->out_refund_no.len,
                    "reason", rf->reason.data ? (char *) rf->reason.data : "",
                    rf->reason.len,
                    "amount",
                      "refund", (json_int_t) rf->amount,
                      "total", (json_int_t) ctx->payment.amount,
                      "currency", rf->currency.data, rf->currency.len);
    if (doc == NULL) {
        return NGX_ERROR;
    }

    ngx_str_set(&path, "/v3/refund/domestic/refunds");

    return ngx_http_paygw_wechat_send(r, ctx, "POST", &path, doc);
}


static ngx_int_t
ngx_http_paygw_wechat_refund_query(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_str_t  path;

    path.data = ngx_pnalloc(r->pool, sizeof("/v3/refund/domestic/refunds/") - 1
                                     + ctx->refund.out_refund_no.len);
    if (path.data == NULL) {
        return NGX_ERROR;
    }

    path.len = ngx_sprintf(path.data, "/v3/refund/domestic/refunds/%V",
                           &ctx->refund.out_refund_no)
               - path.data;

    return ngx_http_paygw_wechat_send(r, ctx, "GET", &path, NULL);
}


/* one signed request; the JSON body (if any) is released here */

static ngx_int_t
ngx_http_paygw_wechat_send(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    const char *method, ngx_str_t *path, json_t *doc)
{
    ngx_int_t                        rc;
    ngx_str_t                        auth, v;
    ngx_http_paygw_channel_t        *ch;
    ngx_http_paygw_provider_call_t  *pc;

    ch = ctx->channel;

    pc = ngx_http_paygw_provider_create(r, method);
    if (pc == NULL) {
        json_decref(doc);
        return NGX_ERROR;
    }

    pc->path = *path;

    rc = doc ? ngx_http_paygw_json_dump(r->pool, doc, &pc->body) : NGX_OK;
    json_decref(doc);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    /* for logs: the path, NUL-terminated */

    pc->what = ngx_pnalloc(r->pool, path->len + 1);
    if (pc->what == NULL) {
        return NGX_ERROR;
    }

    *ngx_cpymem(pc->what, path->data, path->len) = '\0';

    if (ngx_http_paygw_wechat_authorize(r, ch, pc, &auth) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_paygw_provider_header(r, pc, "Authorization", &auth)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_str_set(&v, "application/json");

    if (ngx_http_paygw_provider_header(r, pc, "Accept", &v) != NGX_OK
        || (pc->body.len
            && ngx_http_paygw_provider_header(r, pc, "Content-Type", &v)
               != NGX_OK))
    {
        return NGX_ERROR;
    }

    ctx->provider = pc;
    ctx->waiting = &pc->call;

    return ngx_http_paygw_provider_send(r, ch, pc);
}


/*
 * The verified answer: a JSON object (an empty one for 204).  The
 * outcome starts afresh; with no answer we can trust it is "unknown" and
 * NULL is returned.
 */

static json_t *
ngx_http_paygw_wechat_answer(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    json_t                          *doc;
    ngx_str_t                       *serial, *ts, *nonce, *sig;
    const char                      *why;
    json_error_t                     err;
    ngx_http_paygw_provider_call_t  *pc;

    pc = ctx->provider;

    ngx_memzero(&ctx->outcome, sizeof(ngx_http_paygw_outcome_t));
    ngx_http_paygw_outcome_unknown(&ctx->outcome,
                                   "no verifiable answer from WeChat Pay");

    if (!pc->call.ok || pc->status >= 500) {
        return NULL;
    }

    serial = ngx_http_paygw_provider_response_header(pc, "Wechatpay-Serial");
    ts = ngx_http_paygw_provider_response_header(pc, "Wechatpay-Timestamp");
    nonce = ngx_http_paygw_provider_response_header(pc, "Wechatpay-Nonce");
    sig = ngx_http_paygw_provider_response_header(pc, "Wechatpay-Signature");

    if (ngx_http_paygw_wechat_verify(r->pool, &ctx->channel->platform_keys,
                                     serial, ts, nonce, sig, &pc->response,
                                     ngx_time(), &why)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw wechat: answer to %s (%ui) refused: %s",
                      pc->what, pc->status, why);
        return NULL;
    }

    ngx_memzero(&ctx->outcome, sizeof(ngx_http_paygw_outcome_t));

    if (pc->response.len == 0) {
        return json_object();
    }

    doc = json_loadb((char *) pc->response.data, pc->response.len,
                     JSON_REJECT_DUPLICATES, &err);

    if (!json_is_object(doc)) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw wechat: answer to %s is not a JSON object",
                      pc->what);
        json_decref(doc);
        ngx_http_paygw_outcome_unknown(&ctx->outcome, "unreadable answer");
        return NULL;
    }

    return doc;
}


/*
 * A signature of WeChat Pay (an answer or a callback): the platform key
 * is the one of Wechatpay-Serial, the timestamp within 300 s of now.
 */

ngx_int_t
ngx_http_paygw_wechat_verify(ngx_pool_t *pool, ngx_array_t *keys,
    ngx_str_t *serial, ngx_str_t *ts, ngx_str_t *nonce, ngx_str_t *sig,
    ngx_str_t *body, time_t now, const char **why)
{
    time_t                          t;
    ngx_str_t                       message;
    ngx_uint_t                      i;
    ngx_http_paygw_platform_key_t  *k, *key;

    if (serial == NULL || ts == NULL || nonce == NULL || sig == NULL) {
        *why = "unsigned (no Wechatpay-* headers)";
        return NGX_DECLINED;
    }

    key = NULL;
    k = keys->elts;

    for (i = 0; i < keys->nelts; i++) {
        if (k[i].serial.len == serial->len
            && ngx_strncasecmp(k[i].serial.data, serial->data, serial->len)
               == 0)
        {
            key = &k[i];
            break;
        }
    }

    if (key == NULL) {
        *why = "unknown Wechatpay-Serial";
        return NGX_DECLINED;
    }

    t = ngx_atotm(ts->data, ts->len);

    if (t == NGX_ERROR || t - now >= NGX_HTTP_PAYGW_WECHAT_SKEW
        || now - t >= NGX_HTTP_PAYGW_WECHAT_SKEW)
    {
        *why = "Wechatpay-Timestamp is 300 s or more away";
        return NGX_DECLINED;
    }

    message.len = ts->len + nonce->len + body->len + 3;
    message.data = ngx_pnalloc(pool, message.len);
    if (message.data == NULL) {
        *why = "no memory";
        return NGX_ERROR;
    }

    ngx_sprintf(message.data, "%V\n%V\n%V\n", ts, nonce, body);

    if (ngx_http_paygw_rsa_verify(pool, key->key, &message, sig) != NGX_OK) {
        *why = "signature does not verify";
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_http_paygw_wechat_native_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    json_t                          *doc;
    ngx_str_t                        code;
    ngx_http_paygw_outcome_t        *out;
    ngx_http_paygw_provider_call_t  *pc;

    out = &ctx->outcome;
    pc = ctx->provider;

    doc = ngx_http_paygw_wechat_answer(r, ctx);
    if (doc == NULL) {
        return;
    }

    ngx_http_paygw_json_str(r->pool, doc, "code", &code);

    if (pc->status == NGX_HTTP_OK) {
        ngx_http_paygw_json_str(r->pool, doc, "code_url", &out->code_url);

        if (out->code_url.len) {
            ngx_http_paygw_outcome_set(out, NGX_HTTP_PAYGW_STATUS_PENDING);

        } else {
            ngx_http_paygw_outcome_unknown(out, "no code_url");
        }

    } else if (ngx_http_paygw_is(&code, "ORDERPAID")
               || ngx_http_paygw_is(&code, "ORDER_CLOSED")
               || pc->status == 429)
    {
        /* a repeat of an order that moved on: the query tells how */
        ngx_http_paygw_outcome_unknown(out, "the order moved on at WeChat "
                                       "Pay");

    } else if (pc->status >= 400) {
        ngx_http_paygw_wechat_failed(r, out, doc);

    } else {
        ngx_http_paygw_outcome_unknown(out, "unexpected answer");
    }

    json_decref(doc);
}


static void
ngx_http_paygw_wechat_query_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    json_t                          *doc;
    ngx_str_t                        state;
    ngx_http_paygw_status_e          status;
    ngx_http_paygw_payment_t        *p;
    ngx_http_paygw_outcome_t        *out;
    ngx_http_paygw_provider_call_t  *pc;

    out = &ctx->outcome;
    pc = ctx->provider;
    p = &ctx->payment;

    doc = ngx_http_paygw_wechat_answer(r, ctx);
    if (doc == NULL) {
        return;
    }

    if (pc->status == NGX_HTTP_NOT_FOUND) {
        out->not_found = 1;
        ngx_http_paygw_outcome_unknown(out, "WeChat Pay has no such order");
        json_decref(doc);
        return;
    }

    if (pc->status != NGX_HTTP_OK
        || ngx_http_paygw_json_is(doc, "out_trade_no", &p->payment_no)
           != NGX_OK
        || ngx_http_paygw_json_is(doc, "mchid", &ctx->channel->merchant)
           != NGX_OK
        || ngx_http_paygw_wechat_amount(doc, "total", p->amount, &p->currency)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw wechat: query answer for %V (%ui) does not "
                      "match the payment (out_trade_no, mchid, amount, "
                      "currency)", &p->payment_no, pc->status);
        ngx_http_paygw_outcome_unknown(out, "WeChat Pay answer does not "
                                       "match");
        json_decref(doc);
        return;
    }

    ngx_http_paygw_json_str(r->pool, doc, "trade_state", &state);
    ngx_http_paygw_json_str(r->pool, doc, "transaction_id", &out->provider_no);

    status = ngx_http_paygw_wechat_trade_state(&state);

    if (status != NGX_HTTP_PAYGW_STATUS_NONE) {
        ngx_http_paygw_outcome_set(out, status);

    } else {
        ngx_http_paygw_outcome_unknown(out, "unknown trade_state");
    }

    json_decref(doc);
}


/* the Authorization header: the request signed with the merchant key */

static ngx_int_t
ngx_http_paygw_wechat_authorize(ngx_http_request_t *r,
    ngx_http_paygw_channel_t *ch, ngx_http_paygw_provider_call_t *pc,
    ngx_str_t *auth)
{
    u_char     *p;
    size_t      ts_len;
    ngx_str_t   message, sig;
    u_char      rnd[16];
    u_char      nonce[32];
    u_char      ts[NGX_TIME_T_LEN];

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return NGX_ERROR;
    }

    ngx_hex_dump(nonce, rnd, sizeof(rnd));
    ts_len = ngx_sprintf(ts, "%T", ngx_time()) - ts;

    /* METHOD\nURL\nTS\nNONCE\nBODY\n */

    message.len = pc->method.len + pc->path.len + ts_len + sizeof(nonce)
                  + pc->body.len + 5;
    message.data = ngx_pnalloc(r->pool, message.len);
    if (message.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(message.data, "%V\n%V\n%*s\n%*s\n%V\n", &pc->method,
                &pc->path, ts_len, ts, sizeof(nonce), nonce, &pc->body);

    if (ngx_http_paygw_rsa_sign(r->pool, ch->private_key, &message, &sig)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw wechat: cannot sign the request");
        return NGX_ERROR;
    }

    auth->len = sizeof("WECHATPAY2-SHA256-RSA2048 mchid=\"\",nonce_str=\"\","
                       "timestamp=\"\",serial_no=\"\",signature=\"\"") - 1
                + ch->merchant.len + sizeof(nonce) + ts_len
                + ch->serial_no.len + sig.len;
    auth->data = ngx_pnalloc(r->pool, auth->len);
    if (auth->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(auth->data, "WECHATPAY2-SHA256-RSA2048 mchid=\"%V\","
                    "nonce_str=\"%*s\",timestamp=\"%*s\",serial_no=\"%V\","
                    "signature=\"%V\"", &ch->merchant, sizeof(nonce), nonce,
                    ts_len, ts, &ch->serial_no, &sig);
    auth->len = p - auth->data;

    return NGX_OK;
}


/* trade_state -> our status; NONE for a state we do not know */

static ngx_http_paygw_status_e
ngx_http_paygw_wechat_trade_state(ngx_str_t *state)
{
    if (ngx_http_paygw_is(state, "SUCCESS")
        || ngx_http_paygw_is(state, "REFUND"))
    {
        return NGX_HTTP_PAYGW_STATUS_SUCCEEDED;
    }

    if (ngx_http_paygw_is(state, "CLOSED")
        || ngx_http_paygw_is(state, "REVOKED"))
    {
        return NGX_HTTP_PAYGW_STATUS_CLOSED;
    }

    if (ngx_http_paygw_is(state, "PAYERROR")) {
        return NGX_HTTP_PAYGW_STATUS_FAILED;
    }

    if (ngx_http_paygw_is(state, "NOTPAY")
        || ngx_http_paygw_is(state, "USERPAYING"))
    {
        return NGX_HTTP_PAYGW_STATUS_PENDING;
    }

    return NGX_HTTP_PAYGW_STATUS_NONE;
}


static void
ngx_http_paygw_wechat_close_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    json_t                          *doc;
    ngx_str_t                        code;
    ngx_http_paygw_outcome_t        *out;
    ngx_http_paygw_provider_call_t  *pc;

    out = &ctx->outcome;
    pc = ctx->provider;

    doc = ngx_http_paygw_wechat_answer(r, ctx);
    if (doc == NULL) {
        return;
    }

    ngx_http_paygw_json_str(r->pool, doc, "code", &code);

    if (pc->status == NGX_HTTP_NO_CONTENT
        || pc->status == NGX_HTTP_NOT_FOUND)
    {
        /* closed, or never created: either way it cannot be paid now */
        ngx_http_paygw_outcome_set(out, NGX_HTTP_PAYGW_STATUS_CLOSED);

    } else if (ngx_http_paygw_is(&code, "ORDERPAID")) {
        out->not_closable = 1;
        ngx_http_paygw_outcome_unknown(out, "the order was paid");

    } else {
        ngx_http_paygw_outcome_unknown(out, "WeChat Pay could not close it");
    }

    json_decref(doc);
}


static void
ngx_http_paygw_wechat_refund_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    json_t                          *doc;
    ngx_str_t                        status;
    ngx_http_paygw_outcome_t        *out;
    ngx_http_paygw_provider_call_t  *pc;

    out = &ctx->outcome;
    pc = ctx->provider;

    doc = ngx_http_paygw_wechat_answer(r, ctx);
    if (doc == NULL) {
        return;
    }

    if (pc->status == NGX_HTTP_NOT_FOUND && pc->method.len == 3) {
        out->not_found = 1;
        ngx_http_paygw_outcome_unknown(out, "WeChat Pay has no such refund");
        json_decref(doc);
        return;
    }

    if (pc->status != NGX_HTTP_OK) {

        /* a refused refund failed; a refused query says nothing of it */

        if (pc->status >= 400 && pc->status != 429 && pc->method.len == 4) {
            ngx_http_paygw_wechat_failed(r, out, doc);

        } else {
            ngx_http_paygw_outcome_unknown(out, "unexpected answer");
        }

        json_decref(doc);
        return;
    }

    if (ngx_http_paygw_json_is(doc, "out_refund_no", &ctx->refund.out_refund_no)
        != NGX_OK
        || ngx_http_paygw_wechat_amount(doc, "refund", ctx->refund.amount,
                                        NULL) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw wechat: refund answer for %V does not match "
                      "the refund", &ctx->refund.refund_no);
        ngx_http_paygw_outcome_unknown(out, "WeChat Pay answer does not "
                                       "match");
        json_decref(doc);
        return;
    }

    ngx_http_paygw_json_str(r->pool, doc, "status", &status);
    ngx_http_paygw_json_str(r->pool, doc, "refund_id", &out->provider_no);

    if (ngx_http_paygw_is(&status, "SUCCESS")) {
        ngx_http_paygw_outcome_set(out, NGX_HTTP_PAYGW_STATUS_SUCCEEDED);

    } else if (ngx_http_paygw_is(&status, "CLOSED")
               || ngx_http_paygw_is(&status, "ABNORMAL"))
    {
        ngx_http_paygw_outcome_set(out, NGX_HTTP_PAYGW_STATUS_FAILED);
        out->failure_code = status;

    } else {
        /* PROCESSING: WeChat Pay settles it later; a query will tell */
        out->definitive = 0;
        out->status = NGX_HTTP_PAYGW_STATUS_PENDING;
    }

    json_decref(doc);
}


static void
ngx_http_paygw_wechat_failed(ngx_http_request_t *r,
    ngx_http_paygw_outcome_t *out, json_t *doc)
{
    /* WeChat Pay refused the request itself: nothing happened there */

    ngx_http_paygw_outcome_set(out, NGX_HTTP_PAYGW_STATUS_FAILED);
    ngx_http_paygw_json_str(r->pool, doc, "code", &out->failure_code);
    ngx_http_paygw_json_str(r->pool, doc, "message", &out->failure_message);

    if (out->failure_code.len == 0) {
        ngx_str_set(&out->failure_code, "provider_rejected");
    }
}


/* amount.NAME == expect (and amount.currency == currency, if given) */

static ngx_int_t
ngx_http_paygw_wechat_amount(json_t *doc, const char *name, int64_t expect,
    ngx_str_t *currency)
{
    json_t  *amount, *v;

    amount = json_object_get(doc, "amount");
    v = json_object_get(amount, name);

    if (!json_is_integer(v) || json_integer_value(v) != expect) {
        return NGX_DECLINED;
    }

    if (currency
        && ngx_http_paygw_json_is(amount, "currency", currency) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* POST /v1/notify/wechat: a signed JSON event with an encrypted resource */

static ngx_int_t
ngx_http_paygw_wechat_notify(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    json_t                    *doc, *amount;
    ngx_str_t                  event, plain, state;
    ngx_str_t                 *serial, *ts, *nonce, *sig;
    json_error_t               err;
    ngx_http_paygw_notice_t   *n;
    ngx_http_paygw_channel_t  *ch;

    ch = ctx->channel;
    n = &ctx->notice;

    serial = ngx_http_paygw_wechat_header(r, &r->headers_in.headers,
                                          "Wechatpay-Serial");
    ts = ngx_http_paygw_wechat_header(r, &r->headers_in.headers,
                                      "Wechatpay-Timestamp");
    nonce = ngx_http_paygw_wechat_header(r, &r->headers_in.headers,
                                         "Wechatpay-Nonce");
    sig = ngx_http_paygw_wechat_header(r, &r->headers_in.headers,
                                       "Wechatpay-Signature");

    if (ngx_http_paygw_wechat_verify(r->pool, &ch->platform_keys, serial, ts,
                                     nonce, sig, &ctx->body, ngx_time(),
                                     &ctx->notice_error)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (ngx_http_paygw_wechat_resource(r->pool, &ch->secret, &ctx->body,
                                       &event, &plain, &ctx->notice_error)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    doc = json_loadb((char *) plain.data, plain.len, JSON_REJECT_DUPLICATES,
                     &err);
    amount = json_object_get(doc, "amount");

    /*
     * REFUND.*: a verified refund callback is a hint only: the refund it
     * names is settled by querying WeChat Pay (ngx_http_paygw_notify.c).
     */

    if (event.len > 7 && ngx_strncmp(event.data, "REFUND.", 7) == 0) {

        ngx_http_paygw_json_str(r->pool, doc, "out_trade_no",
                                &n->out_trade_no);
        ngx_http_paygw_json_str(r->pool, doc, "out_refund_no",
                                &n->out_refund_no);

        if (n->out_trade_no.data == NULL || n->out_refund_no.data == NULL
            || ngx_http_paygw_json_is(doc, "mchid", &ch->merchant) != NGX_OK)
        {
            json_decref(doc);
            ctx->notice_error = "the resource is not a refund of ours";
            return NGX_DECLINED;
        }

        json_decref(doc);
        n->status = NGX_HTTP_PAYGW_STATUS_NONE;

        return NGX_OK;
    }

    ngx_http_paygw_json_str(r->pool, doc, "out_trade_no", &n->out_trade_no);
    ngx_http_paygw_json_str(r->pool, doc, "transaction_id", &n->provider_no);
    ngx_http_paygw_json_str(r->pool, doc, "trade_state", &state);
    ngx_http_paygw_json_str(r->pool, amount, "currency", &n->currency);

    if (!json_is_integer(json_object_get(amount, "total"))
        || n->out_trade_no.data == NULL
        || n->currency.data == NULL || state.data == NULL)
    {
        json_decref(doc);
        ctx->notice_error = "the resource is not a transaction";
        return NGX_DECLINED;
    }

    n->amount = json_integer_value(json_object_get(amount, "total"));

    if (ngx_http_paygw_json_is(doc, "mchid", &ch->merchant) != NGX_OK
        || ngx_http_paygw_json_is(doc, "appid", &ch->app_id) != NGX_OK)
    {
        json_decref(doc);
        ctx->notice_error = "mchid or appid is not ours";
        return NGX_DECLINED;
    }

    json_decref(doc);

    n->status = ngx_http_paygw_wechat_trade_state(&state);

    if (n->status == NGX_HTTP_PAYGW_STATUS_PENDING) {
        n->status = NGX_HTTP_PAYGW_STATUS_NONE;
    }

    return NGX_OK;
}


/*
 * The "resource" of a verified callback, decrypted: AEAD-AES-GCM with
 * the APIv3 key, the nonce and the associated data it names.  Used by
 * the test endpoint as well.
 */

ngx_int_t
ngx_http_paygw_wechat_resource(ngx_pool_t *pool, ngx_str_t *apiv3_key,
    ngx_str_t *body, ngx_str_t *event_type, ngx_str_t *plain,
    const char **why)
{
    json_t        *doc, *res;
    ngx_int_t      rc;
    ngx_str_t      ct, nonce, aad;
    json_error_t   err;

    doc = json_loadb((char *) body->data, body->len, JSON_REJECT_DUPLICATES,
                     &err);
    res = json_object_get(doc, "resource");

    ngx_http_paygw_json_str(pool, doc, "event_type", event_type);
    ngx_http_paygw_json_str(pool, res, "nonce", &nonce);
    ngx_http_paygw_json_str(pool, res, "associated_data", &aad);

    ct.data = (u_char *) json_string_value(json_object_get(res,
                                                           "ciphertext"));
    ct.len = ct.data ? json_string_length(json_object_get(res, "ciphertext"))
                     : 0;

    if (ct.data == NULL || nonce.data == NULL || event_type->data == NULL) {
        json_decref(doc);
        *why = "no encrypted resource";
        return NGX_DECLINED;
    }

    if (aad.data == NULL) {
        ngx_str_set(&aad, "");
    }

    rc = ngx_http_paygw_aes_gcm_decrypt(pool, apiv3_key, &nonce, &aad, &ct,
                                        plain);
    json_decref(doc);

    if (rc != NGX_OK) {
        *why = "the resource does not decrypt with the APIv3 key";
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_str_t *
ngx_http_paygw_wechat_header(ngx_http_request_t *r, ngx_list_t *headers,
    const char *name)
{
    ngx_uint_t        n;
    ngx_table_elt_t  *h;

    h = ngx_http_paygw_header(headers, name, &n);

    /* a repeated signature header is not a signature */

    return (h && n == 1) ? &h->value : NULL;
}


static char *
ngx_http_paygw_wechat_conf(ngx_conf_t *cf, ngx_http_paygw_channel_t *ch,
    ngx_str_t *param)
{
    char                           *rv;
    u_char                         *colon;
    ngx_str_t                       v;
    ngx_http_paygw_platform_key_t  *pk;

    if (param->len > 12 && ngx_strncmp(param->data, "private_key=", 12) == 0) {
        v.data = param->data + 12;
        v.len = param->len - 12;
        return ngx_http_paygw_conf_pem(cf, &v, 1, &ch->private_key);
    }

    if (param->len > 10 && ngx_strncmp(param->data, "serial_no=", 10) == 0) {
        ch->serial_no.data = param->data + 10;
        ch->serial_no.len = param->len - 10;
        return NGX_CONF_OK;
    }

    if (param->len > 15
        && ngx_strncmp(param->data, "apiv3_key_file=", 15) == 0)
    {
        v.data = param->data + 15;
        v.len = param->len - 15;

        rv = ngx_http_paygw_read_secret(cf, &v, "apiv3_key_file",
                                        &ch->secret);
        if (rv != NGX_CONF_OK) {
            return rv;
        }

        if (ch->secret.len != 32 && ch->secret.len != 16) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "apiv3_key_file \"%V\" must hold a 32-byte "
                               "key", &v);
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    if (param->len > 13 && ngx_strncmp(param->data, "platform_key=", 13) == 0)
    {
        v.data = param->data + 13;
        v.len = param->len - 13;

        colon = ngx_strlchr(v.data, v.data + v.len, ':');
        if (colon == NULL || colon == v.data) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "platform_key=%V: SERIAL:FILE expected", &v);
            return NGX_CONF_ERROR;
        }

        if (ch->platform_keys.elts == NULL
            && ngx_array_init(&ch->platform_keys, cf->pool, 2,
                              sizeof(ngx_http_paygw_platform_key_t))
               != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        pk = ngx_array_push(&ch->platform_keys);
        if (pk == NULL) {
            return NGX_CONF_ERROR;
        }

        pk->serial.data = v.data;
        pk->serial.len = colon - v.data;

        v.len -= colon + 1 - v.data;
        v.data = colon + 1;

        return ngx_http_paygw_conf_pem(cf, &v, 0, &pk->key);
    }

    return (char *) NGX_DECLINED;
}


static char *
ngx_http_paygw_wechat_check(ngx_conf_t *cf, ngx_http_paygw_channel_t *ch)
{
    if (ch->merchant.len == 0 || ch->app_id.len == 0
        || ch->private_key == NULL || ch->serial_no.len == 0
        || ch->secret.len == 0 || ch->platform_keys.nelts == 0)
    {
        return "needs merchant_id=, app_id=, private_key=, serial_no=, "
               "apiv3_key_file= and at least one platform_key=";
    }

    if (ch->notify_url.len == 0) {
        return "needs notify_url= (WeChat Pay requires one)";
    }

    return NGX_CONF_OK;
}


/*
 * SPEC §7: the trade bill for reconciliation (ngx_http_paygw_reconcile.c).
 * GET /v3/bill/tradebill, signed like every call, its answer verified;
 * then the download, signed the same way, its body streamed (stream) to
 * the statement filter instead of being kept.
 */

ngx_int_t
ngx_http_paygw_wechat_statement_send(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_str_t *path, ngx_uint_t stream)
{
    ngx_str_t                        auth, v;
    ngx_http_paygw_channel_t        *ch;
    ngx_http_paygw_provider_call_t  *pc;

    ch = ctx->channel;

    pc = ngx_http_paygw_provider_create(r, "GET");
    if (pc == NULL) {
        return NGX_ERROR;
    }

    pc->path = *path;
    pc->stream = stream;

    pc->what = ngx_pnalloc(r->pool, path->len + 1);
    if (pc->what == NULL) {
        return NGX_ERROR;
    }

    *ngx_cpymem(pc->what, path->data, path->len) = '\0';

    if (ngx_http_paygw_wechat_authorize(r, ch, pc, &auth) != NGX_OK
        || ngx_http_paygw_provider_header(r, pc, "Authorization", &auth)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!stream) {
        ngx_str_set(&v, "application/json");

        if (ngx_http_paygw_provider_header(r, pc, "Accept", &v) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    ctx->provider = pc;
    ctx->waiting = &pc->call;

    return ngx_http_paygw_provider_send(r, ch, pc);
}


json_t *
ngx_http_paygw_wechat_statement_answer(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    return ngx_http_paygw_wechat_answer(r, ctx);
}
