
/*
 * libFuzzer: the card acquirer's answers and callbacks as the module
 * reads them (ngx_http_paygw_bank.c through its provider table: the
 * X-Acquirer-* HMAC, each call's outcome; the charge.updated callback).
 * The harness is the acquirer: with bit 3 of the first byte it signs
 * the rest with the shared secret, so the fuzzer reaches what is read
 * after the signature.  Properties: nothing unverified is definitive; a
 * notice names a trade.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_paygw.h"
#include "ngx_http_paygw_channel.h"
#include "ngx_http_paygw_crypto.h"
#include "shim.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

extern ngx_http_paygw_provider_t  ngx_http_paygw_bank_provider;


static ngx_str_t  fz_secret = ngx_string("acq_test_secret_0123456789");


/* X-Acquirer-Timestamp and X-Acquirer-Signature (hex HMAC of ts\nbody) */

static void
fz_sign(ngx_pool_t *pool, ngx_list_t *list, ngx_str_t *body)
{
    u_char     *ts, *hex, mac[32];
    ngx_str_t   message, t;

    ts = ngx_pnalloc(pool, NGX_TIME_T_LEN);
    t.data = ts;
    t.len = ngx_sprintf(ts, "%T", ngx_time()) - ts;

    message.data = ngx_pnalloc(pool, t.len + 1 + body->len);
    message.len = ngx_sprintf(message.data, "%V\n%V", &t, body)
                  - message.data;

    hex = ngx_pnalloc(pool, 64);

    if (ngx_http_paygw_hmac_sha256(&fz_secret, &message, mac) != NGX_OK) {
        abort();
    }

    ngx_hex_dump(hex, mac, 32);

    fz_header(list, "X-Acquirer-Merchant", (u_char *) "M-1001", 6);
    fz_header(list, "X-Acquirer-Timestamp", t.data, t.len);
    fz_header(list, "X-Acquirer-Signature", hex, 64);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_int_t                        rc;
    ngx_str_t                        in;
    ngx_uint_t                       mode, which, sign;
    ngx_http_request_t              *r;
    ngx_http_paygw_ctx_t            *ctx;
    ngx_http_paygw_outcome_pt        outcome[4];
    ngx_http_paygw_provider_call_t  *pc;

    /*
     * one channel for the run, as a worker has: it keeps the secret's
     * keyed HMAC state from the first input on
     */
    static ngx_http_paygw_channel_t  ch;
    static ngx_uint_t                statuses[] = { 200, 402, 404, 401 };

    if (size < 1) {
        return 0;
    }

    mode = data[0];
    which = mode & 7;
    sign = mode & 8;
    in.data = (u_char *) data + 1;
    in.len = size - 1;

    r = fz_request(NULL, NULL);

    if (ch.provider == NULL) {
        ngx_str_set(&ch.name, "bank_card");
        ngx_str_set(&ch.merchant, "M-1001");
        ch.secret = fz_secret;
        ch.provider = &ngx_http_paygw_bank_provider;
    }

    ctx = fz_provider_ctx(r, &ch, "/v1/charges", statuses[(mode >> 4) & 3],
                          fz_copy(in.data, in.len), in.len);
    ngx_str_set(&ctx->payment.currency, "USD");
    pc = ctx->provider;

    if (which >= 4) {
        ctx->body = pc->response;

        if (sign) {
            fz_sign(r->pool, &r->headers_in.headers, &ctx->body);
        }

        rc = ngx_http_paygw_bank_provider.notify(r, ctx);
        fz_count_notice(rc);

        if ((rc == NGX_OK && (!sign || ctx->notice.out_trade_no.data == NULL))
            || (rc != NGX_OK && ctx->notice_error == NULL))
        {
            abort();
        }

        fz_pool_reset();
        return 0;
    }

    /* charge and refund are POSTs; query and refund query GETs */

    if (which & 1) {
        ngx_str_set(&pc->method, "GET");

    } else {
        ngx_str_set(&pc->method, "POST");
    }

    outcome[0] = ngx_http_paygw_bank_provider.charge_outcome;
    outcome[1] = ngx_http_paygw_bank_provider.query_outcome;
    outcome[2] = ngx_http_paygw_bank_provider.refund_outcome;
    outcome[3] = ngx_http_paygw_bank_provider.refund_outcome;

    if (sign) {
        fz_sign(r->pool, pc->response_headers, &pc->response);
    }

    outcome[which](r, ctx);

    fz_check_outcome(&ctx->outcome, sign);

    fz_pool_reset();

    return 0;
}
