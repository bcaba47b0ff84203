
/*
 * libFuzzer: WeChat Pay v3 answers and callbacks as the module reads
 * them (ngx_http_paygw_wechat.c through its provider table: the
 * Wechatpay-* signature, each call's outcome; the callback's signature,
 * its AES-GCM resource and what it reports).  The harness is WeChat Pay:
 * with bit 3 of the first byte it signs what it sends with its platform
 * key; for a callback with bit 4 it encrypts the rest as the resource
 * with the APIv3 key.  Without, the bytes go as they are.  Properties:
 * nothing unverified is definitive; a notice names a trade.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_paygw.h"
#include "ngx_http_paygw_channel.h"
#include "ngx_http_paygw_crypto.h"
#include "shim.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

extern ngx_http_paygw_provider_t  ngx_http_paygw_wechat_provider;


#define FZ_APIV3_KEY  "fuzzApiV3Key0123456789abcdefghij"
#define FZ_IV         "n0nce1234567"


static ngx_str_t  fz_nonce = ngx_string("5K8264ILTKCH16CQ2502SI8ZNMTM67VS");
static ngx_str_t  fz_serial = ngx_string("5157F09EFDC096DE15EBE81A47057A72");


/* the four Wechatpay-* headers of BODY into LIST */

static void
fz_sign(ngx_pool_t *pool, ngx_list_t *list, ngx_str_t *body)
{
    u_char     *ts;
    ngx_str_t   message, sig;

    ts = ngx_pnalloc(pool, NGX_TIME_T_LEN);
    message.data = ngx_pnalloc(pool, NGX_TIME_T_LEN + fz_nonce.len
                                     + body->len + 3);

    message.len = ngx_sprintf(message.data, "%T\n%V\n%V\n", ngx_time(),
                              &fz_nonce, body)
                  - message.data;

    if (ngx_http_paygw_rsa_sign(pool, fz_rsa_key(), &message, &sig)
        != NGX_OK)
    {
        abort();
    }

    fz_header(list, "Wechatpay-Serial", fz_serial.data, fz_serial.len);
    fz_header(list, "Wechatpay-Timestamp", ts,
              ngx_sprintf(ts, "%T", ngx_time()) - ts);
    fz_header(list, "Wechatpay-Nonce", fz_nonce.data, fz_nonce.len);
    fz_header(list, "Wechatpay-Signature", sig.data, sig.len);
}


/* a callback whose resource is PLAIN, AES-256-GCM with the APIv3 key */

static ngx_str_t
fz_envelope(ngx_pool_t *pool, ngx_str_t *plain, const char *event)
{
    int              len;
    u_char          *ct;
    ngx_str_t        raw, b64, body;
    EVP_CIPHER_CTX  *c;

    ct = ngx_pnalloc(pool, plain->len + 16);
    c = EVP_CIPHER_CTX_new();

    if (c == NULL
        || EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL,
                              (u_char *) FZ_APIV3_KEY, (u_char *) FZ_IV) != 1
        || EVP_EncryptUpdate(c, NULL, &len, (u_char *) "transaction", 11)
           != 1
        || EVP_EncryptUpdate(c, ct, &len, plain->data, (int) plain->len) != 1
        || EVP_EncryptFinal_ex(c, ct + len, &len) != 1
        || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, ct + plain->len)
           != 1)
    {
        abort();
    }

    EVP_CIPHER_CTX_free(c);

    raw.data = ct;
    raw.len = plain->len + 16;
    b64.data = ngx_pnalloc(pool, ngx_base64_encoded_length(raw.len) + 1);
    ngx_encode_base64(&b64, &raw);

    body.data = ngx_pnalloc(pool, b64.len + 512);
    body.len = ngx_sprintf(body.data,
                   "{\"id\":\"EV-1\",\"create_time\":"
                   "\"2024-01-01T00:00:00+08:00\",\"resource_type\":"
                   "\"encrypt-resource\",\"event_type\":\"%s\","
                   "\"summary\":\"ok\",\"resource\":{\"original_type\":"
                   "\"transaction\",\"algorithm\":\"AEAD_AES_256_GCM\","
                   "\"ciphertext\":\"%V\",\"associated_data\":\"transaction\","
                   "\"nonce\":\"" FZ_IV "\"}}", event, &b64)
               - body.data;

    return body;
}


static void
fz_notify(ngx_http_request_t *r, ngx_http_paygw_channel_t *ch,
    ngx_str_t *body, ngx_uint_t sign)
{
    ngx_int_t              rc;
    ngx_http_paygw_ctx_t  *ctx;

    ctx = fz_provider_ctx(r, ch, "notify", 0, NULL, 0);
    ctx->body.data = fz_copy(body->data, body->len);
    ctx->body.len = body->len;

    if (sign) {
        fz_sign(r->pool, &r->headers_in.headers, &ctx->body);
    }

    rc = ngx_http_paygw_wechat_provider.notify(r, ctx);
    fz_count_notice(rc);

    if (rc == NGX_OK) {
        if (!sign || ctx->notice.out_trade_no.data == NULL) {
            abort();
        }

    } else if (rc != NGX_DECLINED || ctx->notice_error == NULL) {
        abort();
    }
}


static void
fz_answer(ngx_http_request_t *r, ngx_http_paygw_channel_t *ch,
    ngx_uint_t which, ngx_uint_t status, ngx_str_t *body, ngx_uint_t sign)
{
    ngx_http_paygw_ctx_t            *ctx;
    ngx_http_paygw_outcome_pt        outcome[5];
    ngx_http_paygw_provider_call_t  *pc;

    static const char  *whats[] = {
        "/v3/pay/transactions/native",
        "/v3/pay/transactions/out-trade-no/pay_0123456789abcdef",
        "/v3/pay/transactions/out-trade-no/pay_0123456789abcdef/close",
        "/v3/refund/domestic/refunds",
        "/v3/refund/domestic/refunds/ref_0123456789abcdef"
    };

    outcome[0] = ngx_http_paygw_wechat_provider.charge_outcome;
    outcome[1] = ngx_http_paygw_wechat_provider.query_outcome;
    outcome[2] = ngx_http_paygw_wechat_provider.close_outcome;
    outcome[3] = ngx_http_paygw_wechat_provider.refund_outcome;
    outcome[4] = ngx_http_paygw_wechat_provider.refund_outcome;

    ctx = fz_provider_ctx(r, ch, whats[which], status,
                          fz_copy(body->data, body->len), body->len);
    pc = ctx->provider;

    if (which == 1 || which == 4) {
        ngx_str_set(&pc->method, "GET");

    } else {
        ngx_str_set(&pc->method, "POST");
    }

    if (sign) {
        fz_sign(r->pool, pc->response_headers, &pc->response);
    }

    outcome[which](r, ctx);

    fz_check_outcome(&ctx->outcome, sign);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ngx_str_t                       in, body;
    ngx_uint_t                      mode, which, status;
    ngx_http_request_t             *r;
    ngx_http_paygw_channel_t        ch;
    ngx_http_paygw_platform_key_t   key;

    static ngx_uint_t  statuses[] = { 200, 204, 404, 400 };

    if (size < 1) {
        return 0;
    }

    mode = data[0];
    which = mode & 7;
    status = statuses[(mode >> 4) & 3];
    in.data = (u_char *) data + 1;
    in.len = size - 1;

    r = fz_request(NULL, NULL);

    ngx_memzero(&ch, sizeof(ch));
    ngx_str_set(&ch.name, "wechat");
    ngx_str_set(&ch.app_id, "wxd678efh567hg6787");
    ngx_str_set(&ch.merchant, "1230000109");
    ngx_str_set(&ch.secret, FZ_APIV3_KEY);
    ch.provider = &ngx_http_paygw_wechat_provider;

    key.serial = fz_serial;
    key.key = fz_rsa_key();
    ch.platform_keys.elts = &key;
    ch.platform_keys.nelts = 1;
    ch.platform_keys.size = sizeof(key);
    ch.platform_keys.nalloc = 1;
    ch.platform_keys.pool = r->pool;

    if (which < 5) {
        fz_answer(r, &ch, which, status, &in, mode & 8);

    } else {
        body = (mode & 16)
               ? fz_envelope(r->pool, &in, (mode & 32) ? "REFUND.SUCCESS"
                                                       : "TRANSACTION.SUCCESS")
               : in;
        fz_notify(r, &ch, &body, mode & 8);
    }

    fz_pool_reset();

    return 0;
}
