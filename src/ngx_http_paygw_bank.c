
/*
 * paygw: the bank-card acquirer (a JSON API signed with HMAC-SHA256).
 *
 *     request:  X-Acquirer-Merchant, X-Acquirer-Timestamp,
 *               X-Acquirer-Signature = hex(HMAC(secret,
 *                   ts "\n" METHOD "\n" path "\n" body))
 *     response: X-Acquirer-Timestamp, X-Acquirer-Signature =
 *               hex(HMAC(secret, ts "\n" body))
 *
 * Charges are idempotent at the acquirer by out_trade_no (our
 * payment_no) and refunds by out_refund_no, so both may be retried.
 * Only a verified, matching answer settles a payment; anything else
 * leaves it "unknown" until a query settles it.
 */


#include "ngx_http_paygw_channel.h"
#include "ngx_http_paygw_crypto.h"
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>


static ngx_int_t ngx_http_paygw_bank_charge(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_bank_query(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_bank_refund(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_bank_refund_query(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static void ngx_http_paygw_bank_charge_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static void ngx_http_paygw_bank_query_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static void ngx_http_paygw_bank_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_uint_t query);
static void ngx_http_paygw_bank_refund_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_bank_notify(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static char *ngx_http_paygw_bank_check(ngx_conf_t *cf,
    ngx_http_paygw_channel_t *ch);
static ngx_int_t ngx_http_paygw_bank_get(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, const char *prefix, ngx_str_t *no);
static ngx_int_t ngx_http_paygw_bank_send(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, const char *method, ngx_str_t *path,
    json_t *doc);
static ngx_int_t ngx_http_paygw_bank_sign(ngx_http_paygw_channel_t *ch,
    ngx_str_t *parts, ngx_uint_t n, u_char *hex);
static json_t *ngx_http_paygw_bank_verified(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static void ngx_http_paygw_bank_cleanse(void *data);
static void ngx_http_paygw_bank_wipe(json_t *card);


ngx_http_paygw_provider_t  ngx_http_paygw_bank_provider = {
    ngx_string("bank_card"),
    NGX_HTTP_PAYGW_KIND_CARD,
    ngx_null_string,                             /* any currency */
    0,
    ngx_null_string,
    ngx_null_string,

    ngx_http_paygw_bank_charge,
    ngx_http_paygw_bank_query,
    NULL,
    ngx_http_paygw_bank_refund,
    ngx_http_paygw_bank_refund_query,
    ngx_http_paygw_bank_charge_outcome,
    ngx_http_paygw_bank_query_outcome,
    NULL,
    ngx_http_paygw_bank_refund_outcome,
    ngx_http_paygw_bank_notify,
    NULL,
    ngx_http_paygw_bank_check
};


static char *
ngx_http_paygw_bank_check(ngx_conf_t *cf, ngx_http_paygw_channel_t *ch)
{
    if (ch->merchant.len == 0 || ch->secret.len == 0) {
        return "needs merchant_id= and secret_file=";
    }

    return NGX_CONF_OK;
}


static void
ngx_http_paygw_bank_charge_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_bank_outcome(r, ctx, 0);
}


static void
ngx_http_paygw_bank_query_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_bank_outcome(r, ctx, 1);
}


static ngx_int_t
ngx_http_paygw_bank_charge(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    json_t                    *doc;
    ngx_str_t                  path;
    ngx_http_paygw_payment_t  *p;

    p = &ctx->payment;

    doc = json_pack("{s:s%, s:I, s:s%, s:{s:s%, s:I, s:I, s:s%}, s:s%}",
                    "out_trade_no", p->payment_no.data, p->payment_no.len,
                    "amount", (json_int_t) p->amount,
                    "currency", p->currency.data, p->currency.len,
                    "card",
                      "number", p->card_number.data, p->card_number.len,
                      "exp_month", (json_int_t) p->card_exp_month,
                      "exp_year", (json_int_t) p->card_exp_year,
                      "cvc", p->card_cvc.data, p->card_cvc.len,
                    "description", p->subject.data ? (char *) p->subject.data
                                                   : "",
                    p->subject.len);
    if (doc == NULL) {
        return NGX_ERROR;
    }

    ngx_str_set(&path, "/acquirer/v1/charges");

    return ngx_http_paygw_bank_send(r, ctx, "POST", &path, doc);
}


static ngx_int_t
ngx_http_paygw_bank_query(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    return ngx_http_paygw_bank_get(r, ctx, "/acquirer/v1/charges/",
                                   &ctx->payment.payment_no);
}


static ngx_int_t
ngx_http_paygw_bank_refund(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    json_t                   *doc;
    ngx_str_t                 path;
    ngx_http_paygw_refund_t  *rf;

    rf = &ctx->refund;

    doc = json_pack("{s:s%, s:s%, s:I, s:s%, s:s%}",
                    "out_trade_no", rf->payment_no.data, rf->payment_no.len,
                    "out_refund_no", rf->out_refund_no.data,
                    rf->out_refund_no.len,
                    "amount", (json_int_t) rf->amount,
                    "currency", rf->currency.data, rf->currency.len,
                    "reason", rf->reason.data ? (char *) rf->reason.data : "",
                    rf->reason.len);
    if (doc == NULL) {
        return NGX_ERROR;
    }

    ngx_str_set(&path, "/acquirer/v1/refunds");

    return ngx_http_paygw_bank_send(r, ctx, "POST", &path, doc);
}


static ngx_int_t
ngx_http_paygw_bank_refund_query(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    return ngx_http_paygw_bank_get(r, ctx, "/acquirer/v1/refunds/",
                                   &ctx->refund.out_refund_no);
}


static ngx_int_t
ngx_http_paygw_bank_get(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    const char *prefix, ngx_str_t *no)
{
    u_char     *p;
    ngx_str_t   path;

    /* a query: GET prefix + our number for the charge or refund */

    path.len = ngx_strlen(prefix) + no->len;
    path.data = ngx_pnalloc(r->pool, path.len);
    if (path.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(path.data, prefix, ngx_strlen(prefix));
    ngx_memcpy(p, no->data, no->len);

    return ngx_http_paygw_bank_send(r, ctx, "GET", &path, NULL);
}


/* one signed request; the JSON body (if any) is released here */

static ngx_int_t
ngx_http_paygw_bank_send(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    const char *method, ngx_str_t *path, json_t *doc)
{
    char                            *dump;
    ngx_str_t                        parts[4], v;
    ngx_pool_cleanup_t              *cln;
    ngx_http_paygw_channel_t        *ch;
    ngx_http_paygw_provider_call_t  *pc;

    ch = ctx->channel;

    pc = ngx_http_paygw_provider_create(r, method);
    if (pc == NULL) {
        json_decref(doc);
        return NGX_ERROR;
    }

    pc->path = *path;

    if (doc) {
        dump = json_dumps(doc, JSON_COMPACT);

        /* the card's strings inside the document, before it is freed */

        ngx_http_paygw_bank_wipe(json_object_get(doc, "card"));
        json_decref(doc);

        if (dump == NULL) {
            return NGX_ERROR;
        }

        pc->body.len = ngx_strlen(dump);
        pc->body.data = ngx_pnalloc(r->pool, pc->body.len);

        if (pc->body.data) {
            ngx_memcpy(pc->body.data, dump, pc->body.len);
        }

        /* the body may carry a card number: wipe every copy we made */

        OPENSSL_cleanse(dump, pc->body.len);
        free(dump);

        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (pc->body.data == NULL || cln == NULL) {
            return NGX_ERROR;
        }

        cln->handler = ngx_http_paygw_bank_cleanse;
        cln->data = &pc->body;
    }

    parts[0].data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    v.data = ngx_pnalloc(r->pool, 2 * EVP_MAX_MD_SIZE);
    if (parts[0].data == NULL || v.data == NULL) {
        return NGX_ERROR;
    }

    parts[0].len = ngx_sprintf(parts[0].data, "%T", ngx_time())
                   - parts[0].data;
    parts[1] = pc->method;
    parts[2] = pc->path;
    parts[3] = pc->body;

    v.len = ngx_http_paygw_bank_sign(ch, parts, 4, v.data);

    if (v.len == 0
        || ngx_http_paygw_provider_header(r, pc, "X-Acquirer-Merchant",
                                          &ch->merchant) != NGX_OK
        || ngx_http_paygw_provider_header(r, pc, "X-Acquirer-Timestamp",
                                          &parts[0]) != NGX_OK
        || ngx_http_paygw_provider_header(r, pc, "X-Acquirer-Signature", &v)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (pc->body.len) {
        ngx_str_set(&v, "application/json");

        if (ngx_http_paygw_provider_header(r, pc, "Content-Type", &v)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    ctx->provider = pc;
    ctx->waiting = &pc->call;

    return ngx_http_paygw_provider_send(r, ch, pc);
}


static ngx_int_t
ngx_http_paygw_bank_sign(ngx_http_paygw_channel_t *ch, ngx_str_t *parts,
    ngx_uint_t n, u_char *hex)
{
    size_t        mdlen;
    ngx_uint_t    i;
    EVP_MAC_CTX  *mctx;
    u_char        md[EVP_MAX_MD_SIZE];

    /* the secret's HMAC state is made once per process, copied per use */

    if (ch->hmac == NULL) {
        ch->hmac = ngx_http_paygw_hmac_keyed(&ch->secret);
        if (ch->hmac == NULL) {
            return 0;
        }
    }

    mctx = EVP_MAC_CTX_dup(ch->hmac);
    if (mctx == NULL) {
        return 0;
    }

    mdlen = 0;

    for (i = 0; i < n; i++) {
        if ((i && EVP_MAC_update(mctx, (u_char *) "\n", 1) != 1)
            || EVP_MAC_update(mctx, parts[i].data, parts[i].len) != 1)
        {
            goto done;
        }
    }

    if (EVP_MAC_final(mctx, md, &mdlen, sizeof(md)) != 1) {
        mdlen = 0;
    }

done:

    EVP_MAC_CTX_free(mctx);

    ngx_hex_dump(hex, md, mdlen);

    return 2 * mdlen;
}


static json_t *
ngx_http_paygw_bank_verified(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    time_t                           ts;
    json_t                          *doc;
    ngx_str_t                       *h_ts, *h_sig, parts[2];
    json_error_t                     err;
    ngx_http_paygw_provider_call_t  *pc;
    u_char                           hex[2 * EVP_MAX_MD_SIZE];
    size_t                           len;

    pc = ctx->provider;

    h_ts = ngx_http_paygw_provider_response_header(pc,
                                                   "X-Acquirer-Timestamp");
    h_sig = ngx_http_paygw_provider_response_header(pc,
                                                    "X-Acquirer-Signature");

    if (h_ts == NULL || h_sig == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw bank_card: unsigned acquirer response (%ui)",
                      pc->status);
        return NULL;
    }

    ts = ngx_atotm(h_ts->data, h_ts->len);

    if (ts == NGX_ERROR || ts > ngx_time() + 300 || ts < ngx_time() - 300) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw bank_card: acquirer response timestamp out of "
                      "the allowed window");
        return NULL;
    }

    parts[0] = *h_ts;
    parts[1] = pc->response;

    len = ngx_http_paygw_bank_sign(ctx->channel, parts, 2, hex);

    if (len == 0 || h_sig->len != len
        || CRYPTO_memcmp(hex, h_sig->data, len) != 0)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw bank_card: acquirer response signature does "
                      "not verify");
        return NULL;
    }

    doc = json_loadb((char *) pc->response.data, pc->response.len, 0, &err);

    if (doc == NULL || !json_is_object(doc)) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw bank_card: acquirer response is not a JSON "
                      "object");
        json_decref(doc);
        return NULL;
    }

    return doc;
}


static void
ngx_http_paygw_bank_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_uint_t query)
{
    json_t                          *doc, *amount;
    ngx_str_t                        status;
    ngx_http_paygw_payment_t        *p;
    ngx_http_paygw_outcome_t        *out;
    ngx_http_paygw_provider_call_t  *pc;

    p = &ctx->payment;
    out = &ctx->outcome;
    pc = ctx->provider;

    ngx_memzero(out, sizeof(ngx_http_paygw_outcome_t));

    if (!pc->call.ok) {
        ngx_http_paygw_outcome_unknown(out, "no answer from the acquirer");
        return;
    }

    if (pc->status >= 500) {
        ngx_http_paygw_outcome_unknown(out, "the acquirer failed");
        return;
    }

    doc = ngx_http_paygw_bank_verified(r, ctx);
    if (doc == NULL) {
        ngx_http_paygw_outcome_unknown(out, "unverifiable acquirer answer");
        return;
    }

    if (query && pc->status == NGX_HTTP_NOT_FOUND) {
        out->not_found = 1;
        ngx_http_paygw_outcome_unknown(out, "the acquirer has no such charge");
        json_decref(doc);
        return;
    }

    if (pc->status != NGX_HTTP_OK && query) {
        /*
         * A refused query (401 on clock skew, 429, 4xx) says nothing of
         * the charge asked about: it stays as it was, never a guess.
         */
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "paygw bank_card: the acquirer refused the query of "
                      "%V with %ui", &p->payment_no, pc->status);
        ngx_http_paygw_outcome_unknown(out, "the acquirer refused the query");
        json_decref(doc);
        return;
    }

    if (pc->status != NGX_HTTP_OK) {
        /* the acquirer refused the request itself: nothing was charged */
        out->definitive = 1;
        out->status = NGX_HTTP_PAYGW_STATUS_FAILED;
        ngx_str_set(&out->failure_code, "acquirer_rejected");
        ngx_http_paygw_json_str(r->pool, doc, "error", &out->failure_message);
        json_decref(doc);
        return;
    }

    amount = json_object_get(doc, "amount");

    if (ngx_http_paygw_json_is(doc, "out_trade_no", &p->payment_no) != NGX_OK
        || ngx_http_paygw_json_is(doc, "currency", &p->currency) != NGX_OK
        || !json_is_integer(amount) || json_integer_value(amount) != p->amount)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw bank_card: acquirer answer for %V does not "
                      "match the payment (out_trade_no, amount, currency)",
                      &p->payment_no);
        ngx_http_paygw_outcome_unknown(out, "acquirer answer does not match");
        json_decref(doc);
        return;
    }

    ngx_http_paygw_json_str(r->pool, doc, "status", &status);
    ngx_http_paygw_json_str(r->pool, doc, "charge_id", &out->provider_no);
    ngx_http_paygw_json_str(r->pool, doc, "card_brand", &out->card_brand);
    ngx_http_paygw_json_str(r->pool, doc, "card_last4", &out->card_last4);

    if (ngx_http_paygw_is(&status, "approved")) {
        out->definitive = 1;
        out->status = NGX_HTTP_PAYGW_STATUS_SUCCEEDED;

    } else if (ngx_http_paygw_is(&status, "declined")) {
        out->definitive = 1;
        out->status = NGX_HTTP_PAYGW_STATUS_FAILED;
        ngx_http_paygw_json_str(r->pool, doc, "decline_code",
                                &out->failure_code);
        ngx_str_set(&out->failure_message, "declined by the card issuer");

    } else {
        ngx_http_paygw_outcome_unknown(out, "unknown charge status");
    }

    json_decref(doc);
}


static void
ngx_http_paygw_bank_refund_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    json_t                          *doc, *amount;
    ngx_str_t                        status;
    ngx_http_paygw_refund_t         *rf;
    ngx_http_paygw_outcome_t        *out;
    ngx_http_paygw_provider_call_t  *pc;

    rf = &ctx->refund;
    out = &ctx->outcome;
    pc = ctx->provider;

    ngx_memzero(out, sizeof(ngx_http_paygw_outcome_t));

    if (!pc->call.ok || pc->status >= 500) {
        ngx_http_paygw_outcome_unknown(out, "no answer from the acquirer");
        return;
    }

    doc = ngx_http_paygw_bank_verified(r, ctx);
    if (doc == NULL) {
        ngx_http_paygw_outcome_unknown(out, "unverifiable acquirer answer");
        return;
    }

    if (pc->status == NGX_HTTP_NOT_FOUND) {
        out->not_found = 1;
        ngx_http_paygw_outcome_unknown(out, "the acquirer has no such refund");
        json_decref(doc);
        return;
    }

    if (pc->status != NGX_HTTP_OK
        && pc->method.len == 3 && ngx_strncmp(pc->method.data, "GET", 3) == 0)
    {
        /* a refused query says nothing: the amount stays reserved */
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "paygw bank_card: the acquirer refused the query of "
                      "refund %V with %ui", &rf->refund_no, pc->status);
        ngx_http_paygw_outcome_unknown(out, "the acquirer refused the query");
        json_decref(doc);
        return;
    }

    if (pc->status != NGX_HTTP_OK) {
        out->definitive = 1;
        out->status = NGX_HTTP_PAYGW_STATUS_FAILED;
        ngx_str_set(&out->failure_code, "acquirer_rejected");
        json_decref(doc);
        return;
    }

    amount = json_object_get(doc, "amount");

    if (ngx_http_paygw_json_is(doc, "out_refund_no", &rf->out_refund_no)
        != NGX_OK
        || !json_is_integer(amount) || json_integer_value(amount) != rf->amount)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw bank_card: acquirer refund answer for %V does "
                      "not match the refund", &rf->refund_no);
        ngx_http_paygw_outcome_unknown(out, "acquirer answer does not match");
        json_decref(doc);
        return;
    }

    ngx_http_paygw_json_str(r->pool, doc, "status", &status);
    ngx_http_paygw_json_str(r->pool, doc, "refund_id", &out->provider_no);

    /* the acquirer names refund states as we do */

    switch (ngx_http_paygw_status_parse(&status)) {

    case NGX_HTTP_PAYGW_STATUS_SUCCEEDED:
        ngx_http_paygw_outcome_set(out, NGX_HTTP_PAYGW_STATUS_SUCCEEDED);
        break;

    case NGX_HTTP_PAYGW_STATUS_FAILED:
        ngx_http_paygw_outcome_set(out, NGX_HTTP_PAYGW_STATUS_FAILED);
        ngx_http_paygw_json_str(r->pool, doc, "failure_code",
                                &out->failure_code);
        break;

    default:
        ngx_http_paygw_outcome_unknown(out, "unknown refund status");
    }

    json_decref(doc);
}


static void
ngx_http_paygw_bank_wipe(json_t *card)
{
    json_t      *v;
    const char  *name;

    json_object_foreach(card, name, v) {
        if (json_is_string(v)) {
            OPENSSL_cleanse((void *) json_string_value(v),
                            json_string_length(v));
        }
    }
}


static void
ngx_http_paygw_bank_cleanse(void *data)
{
    ngx_str_t *body = data;

    if (body->data) {
        OPENSSL_cleanse(body->data, body->len);
    }
}


/*
 * POST /v1/notify/bank_card: {"event":"charge.updated","charge":{...}}
 * with X-Acquirer-Merchant, X-Acquirer-Timestamp and X-Acquirer-Signature
 * = hex(HMAC(secret, ts "\n" body)), as the acquirer signs its answers.
 */

static ngx_int_t
ngx_http_paygw_bank_notify(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    time_t                     ts;
    json_t                    *doc, *charge, *amount;
    size_t                     len;
    ngx_str_t                  parts[2], status;
    ngx_uint_t                 n, once;
    json_error_t               err;
    ngx_table_elt_t           *h_merchant, *h_ts, *h_sig;
    ngx_http_paygw_notice_t   *nt;
    ngx_http_paygw_channel_t  *ch;
    u_char                     hex[2 * EVP_MAX_MD_SIZE];

    ch = ctx->channel;
    nt = &ctx->notice;

    /* each exactly once: a repeated signature header is not a signature */

    h_merchant = ngx_http_paygw_header(&r->headers_in.headers,
                                       "X-Acquirer-Merchant", &n);
    once = (n == 1);
    h_ts = ngx_http_paygw_header(&r->headers_in.headers,
                                 "X-Acquirer-Timestamp", &n);
    once &= (n == 1);
    h_sig = ngx_http_paygw_header(&r->headers_in.headers,
                                  "X-Acquirer-Signature", &n);
    once &= (n == 1);

    if (h_merchant == NULL || h_ts == NULL || h_sig == NULL || !once) {
        ctx->notice_error = "unsigned (no X-Acquirer-* headers)";
        return NGX_DECLINED;
    }

    ts = ngx_atotm(h_ts->value.data, h_ts->value.len);

    if (ts == NGX_ERROR || ts > ngx_time() + 300 || ts < ngx_time() - 300) {
        ctx->notice_error = "X-Acquirer-Timestamp out of the allowed window";
        return NGX_DECLINED;
    }

    parts[0] = h_ts->value;
    parts[1] = ctx->body;

    len = ngx_http_paygw_bank_sign(ch, parts, 2, hex);

    if (len == 0 || h_sig->value.len != len
        || CRYPTO_memcmp(hex, h_sig->value.data, len) != 0)
    {
        ctx->notice_error = "signature does not verify";
        return NGX_DECLINED;
    }

    if (h_merchant->value.len != ch->merchant.len
        || ngx_strncmp(h_merchant->value.data, ch->merchant.data,
                       ch->merchant.len) != 0)
    {
        ctx->notice_error = "X-Acquirer-Merchant is not ours";
        return NGX_DECLINED;
    }

    doc = json_loadb((char *) ctx->body.data, ctx->body.len,
                     JSON_REJECT_DUPLICATES, &err);
    charge = json_object_get(doc, "charge");
    amount = json_object_get(charge, "amount");

    ngx_http_paygw_json_str(r->pool, charge, "out_trade_no",
                            &nt->out_trade_no);
    ngx_http_paygw_json_str(r->pool, charge, "currency", &nt->currency);
    ngx_http_paygw_json_str(r->pool, charge, "charge_id", &nt->provider_no);
    ngx_http_paygw_json_str(r->pool, charge, "status", &status);

    if (!json_is_integer(amount) || nt->out_trade_no.data == NULL
        || nt->currency.data == NULL || status.data == NULL)
    {
        json_decref(doc);
        ctx->notice_error = "not a charge event";
        return NGX_DECLINED;
    }

    nt->amount = json_integer_value(amount);
    json_decref(doc);

    if (ngx_http_paygw_is(&status, "approved")) {
        nt->status = NGX_HTTP_PAYGW_STATUS_SUCCEEDED;

    } else if (ngx_http_paygw_is(&status, "declined")) {
        nt->status = NGX_HTTP_PAYGW_STATUS_FAILED;

    } else {
        nt->status = NGX_HTTP_PAYGW_STATUS_NONE;
    }

    return NGX_OK;
}
