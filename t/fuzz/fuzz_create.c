
/*
 * libFuzzer: the create-payment and refund JSON bodies, through the
 * module's own validation (ngx_http_paygw_parse_create/_refund of
 * ngx_http_paygw_request.c, with the real channel lookup and error
 * writer), and the close body (parse_empty).  The first byte picks the
 * endpoint (bits 0-1) and paygw_notify_http (bit 2).
 * Properties: an accepted body gives what the API promises (SPEC §3:
 * identifiers, amounts, currency, card checks); a refused one always
 * has a 400 answer with a JSON error body.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_paygw.h"
#include "ngx_http_paygw_channel.h"
#include "ngx_http_paygw_request.h"
#include "shim.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

extern ngx_http_paygw_provider_t  ngx_http_paygw_bank_provider;
extern ngx_http_paygw_provider_t  ngx_http_paygw_alipay_provider;
extern ngx_http_paygw_provider_t  ngx_http_paygw_wechat_provider;


static ngx_http_paygw_main_conf_t  pmcf;
static ngx_http_paygw_loc_conf_t   plcf;
static ngx_http_paygw_channel_t    channels[3];


static void
fz_channels(void)
{
    channels[0].provider = &ngx_http_paygw_bank_provider;
    ngx_str_set(&channels[0].name, "bank_card");
    channels[1].provider = &ngx_http_paygw_alipay_provider;
    ngx_str_set(&channels[1].name, "alipay_qr");
    channels[2].provider = &ngx_http_paygw_wechat_provider;
    ngx_str_set(&channels[2].name, "wechat_native");

    pmcf.channels.elts = channels;
    pmcf.channels.nelts = 3;
    pmcf.channels.size = sizeof(ngx_http_paygw_channel_t);
    pmcf.channels.nalloc = 3;
}


static void
fz_check_payment(ngx_http_paygw_payment_t *p)
{
    if (ngx_http_paygw_identifier(&p->business_no) != NGX_OK
        || p->amount < 1 || p->amount > NGX_HTTP_PAYGW_MAX_AMOUNT
        || p->currency.len != 3 || p->subject.len > 256
        || p->expire_seconds < 60 || p->expire_seconds > 7 * 86400
        || p->metadata.len > 4096
        || (p->card_number.data
            && (p->card_number.len < 12 || p->card_number.len > 19
                || p->card_cvc.len < 3 || p->card_cvc.len > 4
                || p->card_exp_month < 1 || p->card_exp_month > 12)))
    {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                *body;
    json_t                *doc;
    ngx_int_t              rc;
    ngx_uint_t             endpoint;
    json_error_t           err;
    ngx_http_request_t    *r;
    ngx_http_paygw_ctx_t  *ctx;

    if (size < 1) {
        return 0;
    }

    fz_channels();
    endpoint = data[0] & 3;
    plcf.notify_http = (data[0] >> 2) & 1;

    r = fz_request(&pmcf, &plcf);
    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_paygw_ctx_t));

    /* an exact-size copy, as nginx's body: ASan sees any read past it */

    body = ngx_pnalloc(r->pool, size - 1);
    ngx_memcpy(body, data + 1, size - 1);
    ctx->body.data = body;
    ctx->body.len = size - 1;

    rc = (endpoint == 0) ? ngx_http_paygw_parse_create(r, ctx)
         : (endpoint == 1) ? ngx_http_paygw_parse_refund(r, ctx)
         : ngx_http_paygw_parse_empty(r, ctx);

    if (rc == NGX_OK) {
        if (ctx->status != 0) {
            abort();
        }

        if (endpoint > 1) {
            /* close: nothing, or an empty object */

        } else if (endpoint == 1) {
            if (ngx_http_paygw_identifier(&ctx->refund.refund_no) != NGX_OK
                || ctx->refund.amount < 1 || ctx->refund.reason.len > 256)
            {
                abort();
            }

        } else {
            fz_check_payment(&ctx->payment);
        }

    } else if (rc == NGX_DECLINED) {
        doc = json_loadb((char *) ctx->response.data, ctx->response.len, 0,
                         &err);

        if (ctx->status != NGX_HTTP_BAD_REQUEST
            || !json_is_string(json_object_get(json_object_get(doc, "error"),
                                               "message")))
        {
            fprintf(stderr, "fuzz: refused with %lu \"%.*s\"\n",
                    (unsigned long) ctx->status, (int) ctx->response.len,
                    ctx->response.data);
            abort();
        }

        json_decref(doc);

    } else {
        abort();
    }

    fz_pool_reset();

    return 0;
}
