
/*
 * paygw: the JSON objects the API answers with.
 */


#include "ngx_http_paygw_render.h"


static void ngx_http_paygw_set(json_t *doc, const char *name, ngx_str_t *v);


json_t *
ngx_http_paygw_payment_json(ngx_http_paygw_payment_t *p)
{
    json_t        *doc, *meta;
    json_error_t   err;

    doc = json_object();
    if (doc == NULL) {
        return NULL;
    }

    ngx_http_paygw_set(doc, "payment_no", &p->payment_no);
    ngx_http_paygw_set(doc, "merchant_id", &p->merchant_id);
    ngx_http_paygw_set(doc, "business_no", &p->business_no);
    json_object_set_new(doc, "amount", json_integer(p->amount));
    ngx_http_paygw_set(doc, "currency", &p->currency);
    ngx_http_paygw_set(doc, "channel", &p->channel);
    ngx_http_paygw_set(doc, "status", ngx_http_paygw_status_name(p->status));
    ngx_http_paygw_set(doc, "channel_trade_no", &p->channel_trade_no);
    json_object_set_new(doc, "refunded_amount",
                        json_integer(p->refunded_amount));

    /* fees (SPEC §7): null until the payment succeeded */
    json_object_set_new(doc, "fee", p->fee_set ? json_integer(p->fee)
                                               : json_null());
    json_object_set_new(doc, "net_amount",
                        p->fee_set ? json_integer(p->net_amount)
                                   : json_null());

    if (p->subject.data) {
        ngx_http_paygw_set(doc, "subject", &p->subject);
    }

    if (p->notify_url.data) {
        ngx_http_paygw_set(doc, "notify_url", &p->notify_url);
    }

    if (p->metadata.data) {
        meta = json_loadb((char *) p->metadata.data, p->metadata.len, 0,
                          &err);
        if (meta) {
            json_object_set_new(doc, "metadata", meta);
        }
    }

    if (p->pay_url.data) {
        ngx_http_paygw_set(doc, "pay_url", &p->pay_url);
    }

    if (p->qr_code.data) {
        ngx_http_paygw_set(doc, "qr_code", &p->qr_code);
    }

    if (p->code_url.data) {
        ngx_http_paygw_set(doc, "code_url", &p->code_url);
    }

    if (p->card_last4.data) {
        json_object_set_new(doc, "card",
                            json_pack("{s:s%, s:s%}",
                                      "brand", p->card_brand.data
                                               ? (char *) p->card_brand.data
                                               : "unknown",
                                      p->card_brand.data ? p->card_brand.len
                                                         : 7,
                                      "last4", p->card_last4.data,
                                      p->card_last4.len));
    }

    if (p->failure_code.data) {
        ngx_http_paygw_set(doc, "failure_code", &p->failure_code);
        ngx_http_paygw_set(doc, "failure_message", &p->failure_message);
    }

    ngx_http_paygw_set(doc, "created_at", &p->created_at);
    ngx_http_paygw_set(doc, "updated_at", &p->updated_at);

    return doc;
}


json_t *
ngx_http_paygw_refund_json(ngx_http_paygw_refund_t *rf)
{
    json_t  *doc;

    doc = json_object();
    if (doc == NULL) {
        return NULL;
    }

    ngx_http_paygw_set(doc, "refund_no", &rf->refund_no);
    ngx_http_paygw_set(doc, "payment_no", &rf->payment_no);
    ngx_http_paygw_set(doc, "merchant_id", &rf->merchant_id);
    json_object_set_new(doc, "amount", json_integer(rf->amount));
    ngx_http_paygw_set(doc, "currency", &rf->currency);
    ngx_http_paygw_set(doc, "status", ngx_http_paygw_status_name(rf->status));

    if (rf->reason.data) {
        ngx_http_paygw_set(doc, "reason", &rf->reason);
    }

    ngx_http_paygw_set(doc, "channel_refund_no", &rf->channel_refund_no);

    if (rf->failure_code.data) {
        ngx_http_paygw_set(doc, "failure_code", &rf->failure_code);
    }

    ngx_http_paygw_set(doc, "created_at", &rf->created_at);
    ngx_http_paygw_set(doc, "updated_at", &rf->updated_at);

    return doc;
}


static void
ngx_http_paygw_set(json_t *doc, const char *name, ngx_str_t *v)
{
    json_t  *s;

    /* absent is null; text that is not UTF-8 never came from us */

    s = v->data ? json_stringn((char *) v->data, v->len) : NULL;

    json_object_set_new(doc, name, s ? s : json_null());
}
