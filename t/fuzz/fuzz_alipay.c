
/*
 * libFuzzer: Alipay's answers and callbacks as the module reads them
 * (ngx_http_paygw_alipay.c through its provider table: the answer's
 * signed span, the RSA2 verification, each call's outcome; the notify
 * form, its verification and what it reports).  The harness is Alipay:
 * with bit 3 of the first byte it signs the rest (an answer's inner
 * object, or a notify form) with its key, so the fuzzer also reaches
 * what is read after the signature; without, the bytes go as they are.
 * Properties: nothing unverified is definitive; a notice names a trade.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_paygw.h"
#include "ngx_http_paygw_channel.h"
#include "ngx_http_paygw_crypto.h"
#include "shim.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

extern ngx_http_paygw_provider_t  ngx_http_paygw_alipay_provider;


static const char  *whats[] = {
    "alipay.trade.precreate", "alipay.trade.query", "alipay.trade.close",
    "alipay.trade.refund", "alipay.trade.fastpay.refund.query"
};


/* {"<method>_response":<inner>,"sign":"<RSA2 of inner>"} */

static ngx_str_t
fz_signed_answer(ngx_pool_t *pool, const char *what, ngx_str_t *inner)
{
    u_char     *p, *last;
    ngx_str_t   sig, body;

    if (ngx_http_paygw_rsa_sign(pool, fz_rsa_key(), inner, &sig) != NGX_OK) {
        abort();
    }

    body.len = ngx_strlen(what) + inner->len + sig.len + 64;
    body.data = ngx_pnalloc(pool, body.len);

    last = ngx_sprintf(body.data, "{\"%s_response\":%V,\"sign\":\"%V\"}",
                       what, inner, &sig);

    for (p = body.data + 2; *p != '"'; p++) {
        if (*p == '.') {
            *p = '_';
        }
    }

    body.len = last - body.data;

    return body;
}


/* the form and "&sign=<RSA2 of its canonical string>" */

static ngx_str_t
fz_signed_form(ngx_pool_t *pool, ngx_str_t *form)
{
    u_char       *p, *s;
    ngx_str_t     canonical, sig, body;
    ngx_array_t  *params;

    if (ngx_http_paygw_form_decode(pool, form, 64, &params) != NGX_OK
        || ngx_http_paygw_alipay_canonical(pool, params, 0, &canonical)
           != NGX_OK
        || ngx_http_paygw_rsa_sign(pool, fz_rsa_key(), &canonical, &sig)
           != NGX_OK)
    {
        return *form;
    }

    body.data = ngx_pnalloc(pool, form->len + 3 * sig.len + 8);
    p = ngx_sprintf(body.data, "%V&sign=", form);

    for (s = sig.data; s < sig.data + sig.len; s++) {
        p = (*s == '+') ? ngx_cpymem(p, "%2B", 3)
            : (*s == '/') ? ngx_cpymem(p, "%2F", 3)
            : (*s == '=') ? ngx_cpymem(p, "%3D", 3)
            : (*p = *s, p + 1);
    }

    body.len = p - body.data;

    return body;
}


static void
fz_notify(ngx_http_request_t *r, ngx_http_paygw_channel_t *ch,
    ngx_str_t *body)
{
    ngx_int_t              rc;
    ngx_http_paygw_ctx_t  *ctx;

    ctx = fz_provider_ctx(r, ch, "notify", 0, NULL, 0);
    ctx->body.data = fz_copy(body->data, body->len);
    ctx->body.len = body->len;

    rc = ngx_http_paygw_alipay_provider.notify(r, ctx);
    fz_count_notice(rc);

    if (rc == NGX_OK) {
        if (ctx->notice.out_trade_no.data == NULL
            || ctx->notice.currency.len != 3)
        {
            abort();
        }

    } else if (rc != NGX_DECLINED || ctx->notice_error == NULL) {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_str_t                  in, body;
    ngx_uint_t                 mode, sign, status, which;
    const char                *what;
    ngx_http_request_t        *r;
    ngx_http_paygw_ctx_t      *ctx;
    ngx_http_paygw_channel_t   ch;
    ngx_http_paygw_outcome_pt  outcome[5];

    if (size < 1) {
        return 0;
    }

    mode = data[0];
    sign = mode & 8;
    status = (mode & 16) ? ((mode & 32) ? 400 : 502) : 200;
    in.data = (u_char *) data + 1;
    in.len = size - 1;

    ngx_memzero(&ch, sizeof(ch));
    ngx_str_set(&ch.name, "alipay");
    ngx_str_set(&ch.app_id, "2021000000000001");
    ch.provider = &ngx_http_paygw_alipay_provider;
    ch.provider_key = fz_rsa_key();

    r = fz_request(NULL, NULL);
    which = mode & 7;

    if (which >= 5) {
        body = sign ? fz_signed_form(r->pool, &in) : in;
        fz_notify(r, &ch, &body);
        fz_pool_reset();
        return 0;
    }

    what = whats[which];
    body = sign ? fz_signed_answer(r->pool, what, &in) : in;

    outcome[0] = ngx_http_paygw_alipay_provider.charge_outcome;
    outcome[1] = ngx_http_paygw_alipay_provider.query_outcome;
    outcome[2] = ngx_http_paygw_alipay_provider.close_outcome;
    outcome[3] = ngx_http_paygw_alipay_provider.refund_outcome;
    outcome[4] = ngx_http_paygw_alipay_provider.refund_outcome;

    ctx = fz_provider_ctx(r, &ch, what, status, fz_copy(body.data, body.len),
                          body.len);

    outcome[which](r, ctx);

    fz_check_outcome(&ctx->outcome, sign && status == 200);

    fz_pool_reset();

    return 0;
}
