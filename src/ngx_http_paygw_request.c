
/*
 * paygw: routing and validation of merchant API requests (SPEC §3).
 *
 * A rejected request changes nothing: everything here runs before any
 * backend is touched, and every message names the offending field.
 */


#include "ngx_http_paygw_request.h"
#include "ngx_http_paygw_api.h"
#include "ngx_http_paygw_channel.h"
#include "ngx_http_paygw_webhook.h"

/* after nginx's headers, which define _GNU_SOURCE before any libc one */
#include <malloc.h>


typedef struct {
    const char                   *name;
    int                           type;
    ngx_uint_t                    required;
} ngx_http_paygw_field_t;


/* endpoints at one exact path */

typedef struct {
    ngx_str_t                     path;
    ngx_uint_t                    method;
    ngx_uint_t                    api;
} ngx_http_paygw_exact_t;


static ngx_int_t ngx_http_paygw_route_recon(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, u_char *p, u_char *last);
static ngx_int_t ngx_http_paygw_route_payment(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, u_char *p, u_char *last);
static ngx_int_t ngx_http_paygw_route_events(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, u_char *p, u_char *last);
static ngx_int_t ngx_http_paygw_method(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_uint_t method, ngx_uint_t api);
static json_t *ngx_http_paygw_load(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_check_fields(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, json_t *doc, ngx_http_paygw_field_t *fields,
    const char *prefix);
static ngx_int_t ngx_http_paygw_str(json_t *doc, const char *name,
    ngx_str_t *out);
static ngx_int_t ngx_http_paygw_parse_options(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, json_t *doc);
static ngx_int_t ngx_http_paygw_parse_channel(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, json_t *doc);
static ngx_int_t ngx_http_paygw_parse_card(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, json_t *card);
static ngx_int_t ngx_http_paygw_luhn(ngx_str_t *number);
static ngx_int_t ngx_http_paygw_currency(ngx_str_t *c);
static void ngx_http_paygw_json_error(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, json_error_t *err);
static void ngx_http_paygw_json_cleanup(void *data);
static void ngx_http_paygw_card_wipe(void *data);
static void ngx_http_paygw_body_wipe(void *data);
static void ngx_http_paygw_json_free(void *p);


static ngx_str_t *ngx_http_paygw_quote(ngx_http_request_t *r, ngx_str_t *s);


typedef struct {
    ngx_http_request_t           *request;
    ngx_http_paygw_ctx_t         *ctx;
} ngx_http_paygw_card_wipe_t;


static ngx_http_paygw_exact_t  ngx_http_paygw_exact_routes[] = {

    /* SPEC §7 */
    { ngx_string("/v1/settlements"), NGX_HTTP_GET,
      NGX_HTTP_PAYGW_API_SETTLEMENTS },

    /* the scheduled reconciliation run (ngx_http_paygw_reconciler.c) */
    { ngx_string("/v1/admin/reconcile"), NGX_HTTP_POST,
      NGX_HTTP_PAYGW_API_RECON_RUN },

    /* a webhook delivery round (ngx_http_paygw_webhook.c) */
    { ngx_string("/v1/admin/webhooks/deliver"), NGX_HTTP_POST,
      NGX_HTTP_PAYGW_API_DELIVER },

    /* the settler (ngx_http_paygw_settler.c) */
    { ngx_string("/v1/admin/resolve"), NGX_HTTP_POST,
      NGX_HTTP_PAYGW_API_RESOLVE },

    { ngx_null_string, 0, 0 }
};


static ngx_http_paygw_field_t  ngx_http_paygw_create_fields[] = {
    { "business_no",    JSON_STRING,  1 },
    { "amount",         JSON_INTEGER, 1 },
    { "currency",       JSON_STRING,  1 },
    { "channel",        JSON_STRING,  1 },
    { "subject",        JSON_STRING,  0 },
    { "notify_url",     JSON_STRING,  0 },
    { "expire_seconds", JSON_INTEGER, 0 },
    { "metadata",       JSON_OBJECT,  0 },
    { "card",           JSON_OBJECT,  0 },
    { NULL, 0, 0 }
};


static ngx_http_paygw_field_t  ngx_http_paygw_card_fields[] = {
    { "number",         JSON_STRING,  1 },
    { "exp_month",      JSON_INTEGER, 1 },
    { "exp_year",       JSON_INTEGER, 1 },
    { "cvc",            JSON_STRING,  1 },
    { NULL, 0, 0 }
};


static ngx_http_paygw_field_t  ngx_http_paygw_refund_fields[] = {
    { "refund_no",      JSON_STRING,  1 },
    { "amount",         JSON_INTEGER, 1 },
    { "reason",         JSON_STRING,  0 },
    { NULL, 0, 0 }
};


/* ISO 4217 active codes (2024), three letters each, no separators */

static const char  ngx_http_paygw_iso4217[] =
    "AEDAFNALLAMDANGAOAARSAUDAWGAZNBAMBBDBDTBGNBHDBIFBMDBNDBOBBOVBRLBSD"
    "BTNBWPBYNBZDCADCDFCHECHFCHWCLFCLPCNYCOPCOUCRCCUCCUPCVECZKDJFDKKDOP"
    "DZDEGPERNETBEURFJDFKPGBPGELGHSGIPGMDGNFGTQGYDHKDHNLHTGHUFIDRILSINR"
    "IQDIRRISKJMDJODJPYKESKGSKHRKMFKPWKRWKWDKYDKZTLAKLBPLKRLRDLSLLYDMAD"
    "MDLMGAMKDMMKMNTMOPMRUMURMVRMWKMXNMXVMYRMZNNADNGNNIONOKNPRNZDOMRPAB"
    "PENPGKPHPPKRPLNPYGQARRONRSDRUBRWFSARSBDSCRSDGSEKSGDSHPSLESLLSOSSRD"
    "SSPSTNSVCSYPSZLTHBTJSTMTTNDTOPTRYTTDTWDTZSUAHUGXUSDUSNUYIUYUUYWUZS"
    "VEDVESVNDVUVWSTXAFXAGXAUXBAXBBXBCXBDXCDXDRXOFXPDXPFXPTXSUXUAYERZAR"
    "ZMWZWL";


ngx_int_t
ngx_http_paygw_route(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    u_char                  *p, *last;
    ngx_http_paygw_exact_t  *e;

    p = r->uri.data;
    last = p + r->uri.len;

    for (e = ngx_http_paygw_exact_routes; e->path.len; e++) {
        if (r->uri.len == e->path.len
            && ngx_strncmp(p, e->path.data, e->path.len) == 0)
        {
            return ngx_http_paygw_method(r, ctx, e->method, e->api);
        }
    }

#define ngx_paygw_prefix(s)                                                  \
    ((size_t) (last - p) >= sizeof(s) - 1                                    \
     && ngx_strncmp(p, s, sizeof(s) - 1) == 0)

    if (ngx_paygw_prefix("/v1/payments")) {
        p += sizeof("/v1/payments") - 1;

        if (p == last) {
            return ngx_http_paygw_method(r, ctx,
                                         r->args.len ? NGX_HTTP_GET
                                                     : NGX_HTTP_POST,
                                         r->args.len
                                         ? NGX_HTTP_PAYGW_API_FIND
                                         : (r->method == NGX_HTTP_GET
                                            ? NGX_HTTP_PAYGW_API_FIND
                                            : NGX_HTTP_PAYGW_API_CREATE));
        }

        if (*p == '/') {
            return ngx_http_paygw_route_payment(r, ctx, p + 1, last);
        }

    } else if (ngx_paygw_prefix("/v1/refunds/")) {
        ctx->object_no.data = p + sizeof("/v1/refunds/") - 1;
        ctx->object_no.len = last - ctx->object_no.data;

        if (ngx_http_paygw_identifier(&ctx->object_no) == NGX_OK) {
            return ngx_http_paygw_method(r, ctx, NGX_HTTP_GET,
                                         NGX_HTTP_PAYGW_API_GET_REFUND);
        }

    } else if (ngx_paygw_prefix("/v1/notify/")) {
        ctx->object_no.data = p + sizeof("/v1/notify/") - 1;
        ctx->object_no.len = last - ctx->object_no.data;

        if (ngx_http_paygw_identifier(&ctx->object_no) == NGX_OK) {
            return ngx_http_paygw_method(r, ctx, NGX_HTTP_POST,
                                         NGX_HTTP_PAYGW_API_NOTIFY);
        }

    } else if (ngx_paygw_prefix("/v1/reconciliations")) {
        /* SPEC §7 */
        return ngx_http_paygw_route_recon(r, ctx,
                                          p + sizeof("/v1/reconciliations")
                                          - 1, last);

    } else if (ngx_paygw_prefix("/v1/events")) {
        /* webhooks and events: ngx_http_paygw_events.c */
        return ngx_http_paygw_route_events(r, ctx,
                                           p + sizeof("/v1/events") - 1,
                                           last);
    }

#undef ngx_paygw_prefix

    return ngx_http_paygw_fail(r, ctx, NGX_HTTP_NOT_FOUND, "not_found",
                               "no such endpoint: %V",
                               ngx_http_paygw_quote(r, &r->uri));
}


static ngx_int_t
ngx_http_paygw_route_recon(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    u_char *p, u_char *last)
{
    if (p == last) {
        return ngx_http_paygw_method(r, ctx, NGX_HTTP_POST,
                                     NGX_HTTP_PAYGW_API_RECONCILE);
    }

    ctx->object_no.data = p + 1;
    ctx->object_no.len = last - ctx->object_no.data;

    if (*p == '/' && ngx_http_paygw_identifier(&ctx->object_no) == NGX_OK) {
        return ngx_http_paygw_method(r, ctx, NGX_HTTP_GET,
                                     NGX_HTTP_PAYGW_API_GET_RECON);
    }

    return ngx_http_paygw_fail(r, ctx, NGX_HTTP_NOT_FOUND, "not_found",
                               "no such endpoint: %V",
                               ngx_http_paygw_quote(r, &r->uri));
}


static ngx_int_t
ngx_http_paygw_route_payment(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    u_char *p, u_char *last)
{
    u_char     *slash;
    ngx_str_t   action;

    slash = ngx_strlchr(p, last, '/');

    ctx->object_no.data = p;
    ctx->object_no.len = (slash ? slash : last) - p;

    if (ngx_http_paygw_identifier(&ctx->object_no) != NGX_OK) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_NOT_FOUND, "not_found",
                                   "no such endpoint: %V",
                               ngx_http_paygw_quote(r, &r->uri));
    }

    if (slash == NULL) {
        return ngx_http_paygw_method(r, ctx, NGX_HTTP_GET,
                                     NGX_HTTP_PAYGW_API_GET);
    }

    action.data = slash + 1;
    action.len = last - action.data;

    if (action.len == 7 && ngx_strncmp(action.data, "refunds", 7) == 0) {
        return ngx_http_paygw_method(r, ctx, NGX_HTTP_POST,
                                     NGX_HTTP_PAYGW_API_REFUND);
    }

    if (action.len == 5 && ngx_strncmp(action.data, "close", 5) == 0) {
        return ngx_http_paygw_method(r, ctx, NGX_HTTP_POST,
                                     NGX_HTTP_PAYGW_API_CLOSE);
    }

    return ngx_http_paygw_fail(r, ctx, NGX_HTTP_NOT_FOUND, "not_found",
                               "no such endpoint: %V",
                               ngx_http_paygw_quote(r, &r->uri));
}


/* /v1/events, /v1/events/{id}/redeliver */

static ngx_int_t
ngx_http_paygw_route_events(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    u_char *p, u_char *last)
{
    u_char  *slash;

    if (p == last) {
        return ngx_http_paygw_method(r, ctx, NGX_HTTP_GET,
                                     NGX_HTTP_PAYGW_API_EVENTS);
    }

    if (*p++ == '/') {
        slash = ngx_strlchr(p, last, '/');

        ctx->object_no.data = p;
        ctx->object_no.len = (slash ? slash : last) - p;

        if (slash && ngx_http_paygw_identifier(&ctx->object_no) == NGX_OK
            && (size_t) (last - slash) == sizeof("/redeliver") - 1
            && ngx_strncmp(slash, "/redeliver", sizeof("/redeliver") - 1)
               == 0)
        {
            return ngx_http_paygw_method(r, ctx, NGX_HTTP_POST,
                                         NGX_HTTP_PAYGW_API_REDELIVER);
        }
    }

    return ngx_http_paygw_fail(r, ctx, NGX_HTTP_NOT_FOUND, "not_found",
                               "no such endpoint: %V",
                               ngx_http_paygw_quote(r, &r->uri));
}


static ngx_int_t
ngx_http_paygw_method(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_uint_t method, ngx_uint_t api)
{
    if (r->method != method) {
        ctx->allow = (method == NGX_HTTP_GET) ? "GET" : "POST";

        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_NOT_ALLOWED,
                                   "method_not_allowed",
                                   "%V is not allowed on %V",
                                   ngx_http_paygw_quote(r, &r->method_name),
                                   ngx_http_paygw_quote(r, &r->uri));
    }

    ctx->api = api;

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_identifier(ngx_str_t *s)
{
    u_char  *p, c;

    /* business_no, refund_no, payment_no: 1-64 of [A-Za-z0-9_.:-] */

    if (s->len == 0 || s->len > 64) {
        return NGX_ERROR;
    }

    for (p = s->data; p < s->data + s->len; p++) {
        c = *p;

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
            || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':'
            || c == '-')
        {
            continue;
        }

        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_parse_create(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    json_t                    *doc;
    ngx_int_t                  rc;
    ngx_http_paygw_payment_t  *pay;

    doc = ngx_http_paygw_load(r, ctx);
    if (doc == NULL) {
        return NGX_DECLINED;
    }

    if (ngx_http_paygw_check_fields(r, ctx, doc, ngx_http_paygw_create_fields,
                                    "")
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    pay = &ctx->payment;

    (void) ngx_http_paygw_str(doc, "business_no", &pay->business_no);
    (void) ngx_http_paygw_str(doc, "currency", &pay->currency);
    (void) ngx_http_paygw_str(doc, "channel", &pay->channel);
    (void) ngx_http_paygw_str(doc, "subject", &pay->subject);
    (void) ngx_http_paygw_str(doc, "notify_url", &pay->notify_url);

    if (ngx_http_paygw_identifier(&pay->business_no) != NGX_OK) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "invalid_request", "business_no must be 1-64 characters "
                   "of [A-Za-z0-9_.:-]");
    }

    pay->amount = json_integer_value(json_object_get(doc, "amount"));

    if (pay->amount < 1 || pay->amount > NGX_HTTP_PAYGW_MAX_AMOUNT) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "invalid_request", "amount must be an integer from 1 to "
                   "1000000000000 (minor units)");
    }

    if (ngx_http_paygw_currency(&pay->currency) != NGX_OK) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "invalid_request", "currency must be an upper-case "
                   "ISO 4217 code");
    }

    if (pay->subject.len > 256) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "invalid_request", "subject must be at most 256 bytes");
    }

    rc = ngx_http_paygw_parse_options(r, ctx, doc);
    if (rc != NGX_OK) {
        return rc;
    }

    return ngx_http_paygw_parse_channel(r, ctx, doc);
}


/* what a create may add: notify_url, expire_seconds, metadata */

static ngx_int_t
ngx_http_paygw_parse_options(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    json_t *doc)
{
    char                       *meta;
    json_t                     *v;
    ngx_http_paygw_payment_t   *pay;
    ngx_http_paygw_loc_conf_t  *plcf;

    pay = &ctx->payment;
    plcf = ngx_http_get_module_loc_conf(r, ngx_http_paygw_module);

    /*
     * The gateway will POST to it: https:// only, unless the operator
     * allows http:// (paygw_notify_http on; for local stacks and tests).
     */

    if (pay->notify_url.data
        && (pay->notify_url.len > 1024
            || ngx_http_paygw_url_unsafe(&pay->notify_url)
            || !((pay->notify_url.len > 8
                  && ngx_strncmp(pay->notify_url.data, "https://", 8) == 0)
                 || (plcf->notify_http && pay->notify_url.len > 7
                     && ngx_strncmp(pay->notify_url.data, "http://", 7)
                        == 0))))
    {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "invalid_request", plcf->notify_http
                   ? "notify_url must be an http(s) URL of at most 1024 "
                     "bytes, without spaces or control characters"
                   : "notify_url must be an https URL of at most 1024 bytes, "
                     "without spaces or control characters");
    }

    v = json_object_get(doc, "expire_seconds");
    pay->expire_seconds = v ? json_integer_value(v) : 900;

    if (pay->expire_seconds < 60 || pay->expire_seconds > 7 * 86400) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "invalid_request", "expire_seconds must be from 60 to "
                   "604800");
    }

    v = json_object_get(doc, "metadata");

    if (v) {
        meta = json_dumps(v, JSON_COMPACT|JSON_SORT_KEYS);
        if (meta == NULL) {
            return NGX_ERROR;
        }

        pay->metadata.len = ngx_strlen(meta);
        pay->metadata.data = ngx_pnalloc(r->pool, pay->metadata.len);

        if (pay->metadata.data) {
            ngx_memcpy(pay->metadata.data, meta, pay->metadata.len);
        }

        free(meta);

        if (pay->metadata.data == NULL) {
            return NGX_ERROR;
        }

        if (pay->metadata.len > 4096) {
            return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                       "invalid_request", "metadata must serialize to at "
                       "most 4096 bytes");
        }
    }

    return NGX_OK;
}


/* a configured channel, and what its provider's kind asks of a payment */

static ngx_int_t
ngx_http_paygw_parse_channel(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    json_t *doc)
{
    json_t                    *v;
    ngx_int_t                  rc;
    ngx_http_paygw_channel_t  *ch;
    ngx_http_paygw_payment_t  *pay;

    pay = &ctx->payment;

    ch = ngx_http_paygw_channel_find(r, &pay->channel);

    if (ch == NULL) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "invalid_request", "channel \"%V\" is unknown or not "
                   "enabled", ngx_http_paygw_quote(r, &pay->channel));
    }

    v = json_object_get(doc, "card");

    if (ch->provider->kind == NGX_HTTP_PAYGW_KIND_CARD) {
        if (v == NULL) {
            return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                       "invalid_request", "card is required for the %V "
                       "channel", &ch->name);
        }

        rc = ngx_http_paygw_parse_card(r, ctx, v);
        if (rc != NGX_OK) {
            return rc;
        }

    } else if (v) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "invalid_request", "card is only accepted for the "
                   "bank_card channel");
    }

    /* a provider's only currency: QR payments (domestic) are in yuan */

    if (ch->provider->currency.len
        && (pay->currency.len != ch->provider->currency.len
            || ngx_strncmp(pay->currency.data, ch->provider->currency.data,
                           pay->currency.len) != 0))
    {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "invalid_request", "currency must be %V for the %V "
                   "channel", &ch->provider->currency, &pay->channel);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_parse_card(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    json_t *card)
{
    u_char                      *p;
    ngx_pool_cleanup_t          *cln;
    ngx_http_paygw_payment_t    *pay;
    ngx_http_paygw_card_wipe_t  *w;

    pay = &ctx->payment;

    /*
     * The card's strings are wiped where they lie when the request ends,
     * whatever its outcome: this cleanup runs before the document's own
     * (pool cleanups run newest first), so the strings are still there.
     */

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_paygw_card_wipe_t));
    if (cln == NULL) {
        return NGX_ERROR;
    }

    w = cln->data;
    w->request = r;
    w->ctx = ctx;
    cln->handler = ngx_http_paygw_card_wipe;

    if (ngx_http_paygw_check_fields(r, ctx, card, ngx_http_paygw_card_fields,
                                    "card.")
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    (void) ngx_http_paygw_str(card, "number", &pay->card_number);
    (void) ngx_http_paygw_str(card, "cvc", &pay->card_cvc);
    pay->card_exp_month = json_integer_value(json_object_get(card,
                                                             "exp_month"));
    pay->card_exp_year = json_integer_value(json_object_get(card,
                                                            "exp_year"));

    if (pay->card_number.len < 12 || pay->card_number.len > 19
        || ngx_http_paygw_luhn(&pay->card_number) != NGX_OK)
    {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "invalid_request", "card.number must be 12-19 digits "
                   "with a valid check digit");
    }

    if (pay->card_exp_month < 1 || pay->card_exp_month > 12) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "invalid_request", "card.exp_month must be from 1 to 12");
    }

    if (pay->card_exp_year < 2000 || pay->card_exp_year > 2100) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "invalid_request", "card.exp_year must be a four-digit "
                   "year");
    }

    for (p = pay->card_cvc.data; p < pay->card_cvc.data + pay->card_cvc.len;
         p++)
    {
        if (*p < '0' || *p > '9') {
            break;
        }
    }

    if (pay->card_cvc.len < 3 || pay->card_cvc.len > 4
        || p != pay->card_cvc.data + pay->card_cvc.len)
    {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "invalid_request", "card.cvc must be 3 or 4 digits");
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_parse_refund(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    json_t                   *doc;
    ngx_http_paygw_refund_t  *rf;

    doc = ngx_http_paygw_load(r, ctx);
    if (doc == NULL) {
        return NGX_DECLINED;
    }

    if (ngx_http_paygw_check_fields(r, ctx, doc, ngx_http_paygw_refund_fields,
                                    "")
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    rf = &ctx->refund;

    (void) ngx_http_paygw_str(doc, "refund_no", &rf->refund_no);
    (void) ngx_http_paygw_str(doc, "reason", &rf->reason);
    rf->amount = json_integer_value(json_object_get(doc, "amount"));

    if (ngx_http_paygw_identifier(&rf->refund_no) != NGX_OK) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "invalid_request", "refund_no must be 1-64 characters "
                   "of [A-Za-z0-9_.:-]");
    }

    if (rf->amount < 1 || rf->amount > NGX_HTTP_PAYGW_MAX_AMOUNT) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "invalid_request", "amount must be an integer from 1 to "
                   "1000000000000 (minor units)");
    }

    if (rf->reason.len > 256) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "invalid_request", "reason must be at most 256 bytes");
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_parse_empty(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    json_t     *doc;
    ngx_str_t   name;

    /* close takes no parameters: no body, or an empty object */

    if (ctx->body.len == 0) {
        return NGX_OK;
    }

    doc = ngx_http_paygw_load(r, ctx);
    if (doc == NULL) {
        return NGX_DECLINED;
    }

    if (json_object_size(doc) != 0) {
        name.data = (u_char *) json_object_iter_key(json_object_iter(doc));
        name.len = ngx_strlen(name.data);

        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                   "invalid_request", "unknown field \"%V\"",
                   ngx_http_paygw_quote(r, &name));
    }

    return NGX_OK;
}


static json_t *
ngx_http_paygw_load(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    json_t              *doc;
    json_error_t         err;
    ngx_pool_cleanup_t  *cln;

    /* jansson rejects invalid UTF-8 and, with the flag, duplicate keys */

    doc = json_loadb((char *) ctx->body.data, ctx->body.len,
                     JSON_REJECT_DUPLICATES, &err);

    if (doc == NULL) {
        ngx_http_paygw_json_error(r, ctx, &err);
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        json_decref(doc);
        return NULL;
    }

    cln->handler = ngx_http_paygw_json_cleanup;
    cln->data = doc;

    if (!json_is_object(doc)) {
        (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request",
                                   "the body must be a JSON object");
        return NULL;
    }

    return doc;
}


static ngx_int_t
ngx_http_paygw_check_fields(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    json_t *doc, ngx_http_paygw_field_t *fields, const char *prefix)
{
    json_t                  *v;
    ngx_str_t                name;
    const char              *key;
    ngx_http_paygw_field_t  *f;

    json_object_foreach(doc, key, v) {

        for (f = fields; f->name; f++) {
            if (ngx_strcmp(f->name, key) == 0) {
                break;
            }
        }

        if (f->name == NULL) {
            name.data = (u_char *) key;
            name.len = ngx_strlen(key);

            (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                       "invalid_request",
                                       "unknown field \"%s%V\"", prefix,
                                       ngx_http_paygw_quote(r, &name));
            return NGX_DECLINED;
        }

        if ((int) json_typeof(v) != f->type) {
            (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                       "invalid_request",
                                       "%s%s must be %s", prefix, key,
                                       f->type == JSON_STRING ? "a string"
                                       : f->type == JSON_INTEGER
                                         ? "an integer" : "an object");
            return NGX_DECLINED;
        }
    }

    for (f = fields; f->name; f++) {
        if (f->required && json_object_get(doc, f->name) == NULL) {
            (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                       "invalid_request",
                                       "%s%s is required", prefix, f->name);
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_str(json_t *doc, const char *name, ngx_str_t *out)
{
    json_t  *v;

    v = json_object_get(doc, name);

    if (v == NULL || !json_is_string(v)) {
        ngx_str_null(out);
        return NGX_DECLINED;
    }

    /* owned by the document, which lives as long as the request */

    out->data = (u_char *) json_string_value(v);
    out->len = json_string_length(v);

    return NGX_OK;
}


/* PAN and CVC out of the parsed JSON strings at the request's end */

static void
ngx_http_paygw_card_wipe(void *data)
{
    ngx_http_paygw_card_wipe_t *w = data;

    ngx_http_paygw_payment_t  *pay;

    pay = &w->ctx->payment;

    if (pay->card_number.data) {
        OPENSSL_cleanse(pay->card_number.data, pay->card_number.len);
    }

    if (pay->card_cvc.data) {
        OPENSSL_cleanse(pay->card_cvc.data, pay->card_cvc.len);
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, w->request->connection->log, 0,
                   "paygw: card strings wiped");
}


/*
 * Whatever body a request had -- a card in it or not, valid JSON or not
 * -- is wiped at its end: our copy of it and nginx's request body buffers
 * (only the body's own bytes: a pipelined request after it stays as it
 * is; the buffers may be the connection's header buffer, which outlives
 * the request).
 */

ngx_int_t
ngx_http_paygw_body_wipe_add(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_pool_cleanup_t          *cln;
    ngx_http_paygw_card_wipe_t  *w;

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_paygw_card_wipe_t));
    if (cln == NULL) {
        return NGX_ERROR;
    }

    w = cln->data;
    w->request = r;
    w->ctx = ctx;
    cln->handler = ngx_http_paygw_body_wipe;

    return NGX_OK;
}


static void
ngx_http_paygw_body_wipe(void *data)
{
    ngx_http_paygw_card_wipe_t *w = data;

    ngx_buf_t           *b;
    ngx_chain_t         *cl;
    ngx_http_request_t  *r;

    r = w->request;

    if (w->ctx->body.len) {
        OPENSSL_cleanse(w->ctx->body.data, w->ctx->body.len);
    }

    if (r->request_body == NULL) {
        return;
    }

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (!b->in_file && b->pos && b->last > b->pos) {
            OPENSSL_cleanse(b->pos, b->last - b->pos);
        }
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw: request body wiped");
}


/*
 * Every block jansson frees is wiped first: the documents parsed from
 * request bodies and built for providers, and the scratch buffers of its
 * lexer and of json_dumps(), which held card numbers on their way.
 */

static void
ngx_http_paygw_json_free(void *p)
{
    if (p) {
        OPENSSL_cleanse(p, malloc_usable_size(p));
        free(p);
    }
}


void
ngx_http_paygw_json_init(void)
{
    json_set_alloc_funcs(malloc, ngx_http_paygw_json_free);
}


static ngx_int_t
ngx_http_paygw_luhn(ngx_str_t *number)
{
    ngx_int_t   sum, d;
    ngx_uint_t  i, odd;

    sum = 0;
    odd = 0;

    for (i = number->len; i > 0; i--) {
        if (number->data[i - 1] < '0' || number->data[i - 1] > '9') {
            return NGX_ERROR;
        }

        d = number->data[i - 1] - '0';

        if (odd) {
            d *= 2;
            if (d > 9) {
                d -= 9;
            }
        }

        sum += d;
        odd = !odd;
    }

    return (sum % 10 == 0) ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_paygw_currency(ngx_str_t *c)
{
    const char  *p;

    if (c->len != 3) {
        return NGX_ERROR;
    }

    for (p = ngx_http_paygw_iso4217; *p; p += 3) {
        if (ngx_strncmp(p, c->data, 3) == 0) {
            return NGX_OK;
        }
    }

    return NGX_ERROR;
}


static void
ngx_http_paygw_json_error(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    json_error_t *err)
{
    u_char     *p, *start, *end;
    ngx_str_t   name;

    /*
     * jansson reports an integer beyond int64 as a syntax error; it is a
     * range error of whichever field it belongs to: name that field (if
     * what the scan found looks like one: the client's bytes, a NUL too,
     * never go into the message).
     */

    if (json_error_code(err) == json_error_numeric_overflow
        && err->position > 0 && (size_t) err->position <= ctx->body.len)
    {
        /* the position counts the bytes read: the last one is before it */
        p = ctx->body.data + err->position - 1;

        while (p > ctx->body.data && *p != ':') {
            p--;
        }

        end = p;

        while (end > ctx->body.data && end[-1] != '"') {
            end--;
        }

        start = (end > ctx->body.data) ? end - 1 : end;

        while (start > ctx->body.data && start[-1] != '"') {
            start--;
        }

        name.data = start;
        name.len = (end > start) ? (size_t) (end - 1 - start) : 0;

        if (ngx_http_paygw_identifier(&name) == NGX_OK) {
            (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                       "invalid_request",
                                       "%V is out of range", &name);
            return;
        }
    }

    (void) ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                               "invalid_request", "malformed JSON body: %s",
                               err->text);
}


static void
ngx_http_paygw_json_cleanup(void *data)
{
    json_decref(data);
}


static ngx_str_t *
ngx_http_paygw_quote(ngx_http_request_t *r, ngx_str_t *s)
{
    ngx_str_t  *q;

    static ngx_str_t  cut = ngx_string("...");

    /* the client's text as an error quotes it: short, valid UTF-8 */

    q = ngx_palloc(r->pool, sizeof(ngx_str_t));
    if (q == NULL) {
        return &cut;
    }

    ngx_http_paygw_utf8_quote(r->pool, s->data, s->len,
                              NGX_HTTP_PAYGW_MAX_QUOTE, q);

    return q;
}
