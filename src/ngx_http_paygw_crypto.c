
/*
 * paygw: the cryptography of the provider protocols and webhooks.
 *
 *   SHA256withRSA   RSASSA-PKCS1-v1_5 over SHA-256, base64 signatures:
 *                   Alipay RSA2 requests and notifies, WeChat Pay v3
 *                   requests, responses and callbacks
 *   AEAD-AES-GCM    WeChat Pay v3 resources: key = APIv3 key bytes (16:
 *                   AES-128, as the published vectors; 32: AES-256, as
 *                   real keys), IV = nonce, ciphertext = data || 16-byte tag
 *   HMAC-SHA256     the acquirer; Standard Webhooks ("v1," base64 over
 *                   id.timestamp.body, key = base64 of whsec_...)
 *
 * Every length is checked; every comparison of secrets is constant-time.
 */


#include "ngx_http_paygw_crypto.h"
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>


static int ngx_http_paygw_kv_cmp(const void *one, const void *two);


EVP_PKEY *
ngx_http_paygw_pem_key(ngx_str_t *pem, ngx_uint_t private_key)
{
    BIO       *bio;
    EVP_PKEY  *key;

    bio = BIO_new_mem_buf(pem->data, (int) pem->len);
    if (bio == NULL) {
        return NULL;
    }

    key = private_key ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)
                      : PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);

    BIO_free(bio);

    return key;
}


ngx_int_t
ngx_http_paygw_rsa_sign(ngx_pool_t *pool, EVP_PKEY *key, ngx_str_t *data,
    ngx_str_t *sig_b64)
{
    size_t       len;
    ngx_str_t    raw;
    EVP_MD_CTX  *md;

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        return NGX_ERROR;
    }

    raw.data = NULL;
    len = 0;

    if (EVP_DigestSignInit(md, NULL, ngx_http_paygw_sha256(), NULL, key)
        != 1
        || EVP_DigestSign(md, NULL, &len, data->data, data->len) != 1
        || (raw.data = ngx_pnalloc(pool, len)) == NULL
        || EVP_DigestSign(md, raw.data, &len, data->data, data->len) != 1)
    {
        EVP_MD_CTX_free(md);
        return NGX_ERROR;
    }

    EVP_MD_CTX_free(md);

    raw.len = len;

    sig_b64->data = ngx_pnalloc(pool, ngx_base64_encoded_length(len));
    if (sig_b64->data == NULL) {
        return NGX_ERROR;
    }

    ngx_encode_base64(sig_b64, &raw);

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_rsa_verify(ngx_pool_t *pool, EVP_PKEY *key, ngx_str_t *data,
    ngx_str_t *sig_b64)
{
    int          rc;
    ngx_str_t    raw;
    EVP_MD_CTX  *md;

    raw.data = ngx_pnalloc(pool, ngx_base64_decoded_length(sig_b64->len));
    if (raw.data == NULL) {
        return NGX_ERROR;
    }

    if (ngx_decode_base64(&raw, sig_b64) != NGX_OK) {
        return NGX_DECLINED;
    }

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        return NGX_ERROR;
    }

    rc = EVP_DigestVerifyInit(md, NULL, ngx_http_paygw_sha256(), NULL,
                              key);

    if (rc == 1) {
        rc = EVP_DigestVerify(md, raw.data, raw.len, data->data, data->len);
    }

    EVP_MD_CTX_free(md);

    return (rc == 1) ? NGX_OK : NGX_DECLINED;
}


ngx_int_t
ngx_http_paygw_aes_gcm_decrypt(ngx_pool_t *pool, ngx_str_t *key,
    ngx_str_t *nonce, ngx_str_t *aad, ngx_str_t *ct_b64, ngx_str_t *plain)
{
    int                  len, fin;
    ngx_str_t            ct;
    ngx_int_t            rc;
    EVP_CIPHER_CTX      *cctx;
    const EVP_CIPHER    *cipher;

    /* the variant follows the key: 16 bytes AES-128, 32 bytes AES-256 */

    if (key->len == 16) {
        cipher = EVP_aes_128_gcm();

    } else if (key->len == 32) {
        cipher = EVP_aes_256_gcm();

    } else {
        return NGX_DECLINED;
    }

    ct.data = ngx_pnalloc(pool, ngx_base64_decoded_length(ct_b64->len) + 1);
    if (ct.data == NULL) {
        return NGX_ERROR;
    }

    if (ngx_decode_base64(&ct, ct_b64) != NGX_OK || ct.len < 16
        || nonce->len == 0)
    {
        return NGX_DECLINED;
    }

    plain->data = ngx_pnalloc(pool, ct.len - 16 + 1);
    if (plain->data == NULL) {
        return NGX_ERROR;
    }

    cctx = EVP_CIPHER_CTX_new();
    if (cctx == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_DECLINED;

    if (EVP_DecryptInit_ex(cctx, cipher, NULL, NULL, NULL) != 1
        || EVP_CIPHER_CTX_ctrl(cctx, EVP_CTRL_GCM_SET_IVLEN,
                               (int) nonce->len, NULL) != 1
        || EVP_DecryptInit_ex(cctx, NULL, NULL, key->data, nonce->data) != 1
        || (aad->len
            && EVP_DecryptUpdate(cctx, NULL, &len, aad->data, (int) aad->len)
               != 1)
        || EVP_DecryptUpdate(cctx, plain->data, &len, ct.data,
                             (int) (ct.len - 16)) != 1
        || EVP_CIPHER_CTX_ctrl(cctx, EVP_CTRL_GCM_SET_TAG, 16,
                               ct.data + ct.len - 16) != 1)
    {
        goto done;
    }

    /* the tag is checked here: nothing is returned unless it matches */

    if (EVP_DecryptFinal_ex(cctx, plain->data + len, &fin) != 1) {
        goto done;
    }

    plain->len = len + fin;
    plain->data[plain->len] = '\0';
    rc = NGX_OK;

done:

    EVP_CIPHER_CTX_free(cctx);

    return rc;
}


ngx_int_t
ngx_http_paygw_hmac_sha256(ngx_str_t *key, ngx_str_t *data, u_char *mac)
{
    unsigned int  len;

    if (HMAC(ngx_http_paygw_sha256(), key->data, (int) key->len,
             data->data, data->len, mac, &len)
        == NULL || len != 32)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * HMAC-SHA256 under a key that signs many messages (an API key): the
 * keyed state is made once (the algorithm and the digest looked up, the
 * key's pads hashed) and copied for each message.  HMAC() would fetch
 * the MAC and the digest again on every call.
 */

EVP_MAC_CTX *
ngx_http_paygw_hmac_keyed(ngx_str_t *key)
{
    EVP_MAC_CTX  *ctx;
    OSSL_PARAM    params[2];

    if (ngx_http_paygw_hmac() == NULL) {
        return NULL;
    }

    ctx = EVP_MAC_CTX_new(ngx_http_paygw_hmac());
    if (ctx == NULL) {
        return NULL;
    }

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *) "SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();

    if (EVP_MAC_init(ctx, key->data, key->len, params) != 1) {
        EVP_MAC_CTX_free(ctx);
        return NULL;
    }

    return ctx;
}


ngx_int_t
ngx_http_paygw_hmac_keyed_sign(EVP_MAC_CTX *keyed, u_char *data, size_t len,
    u_char *mac)
{
    size_t        n;
    ngx_int_t     rc;
    EVP_MAC_CTX  *ctx;

    ctx = EVP_MAC_CTX_dup(keyed);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    rc = (EVP_MAC_update(ctx, data, len) == 1
          && EVP_MAC_final(ctx, mac, &n, 32) == 1 && n == 32)
         ? NGX_OK : NGX_ERROR;

    EVP_MAC_CTX_free(ctx);

    return rc;
}


/* a Standard Webhooks secret "whsec_<base64>", keyed once per process */

EVP_MAC_CTX *
ngx_http_paygw_webhook_key(ngx_pool_t *pool, ngx_str_t *secret)
{
    ngx_str_t     b64, key;
    EVP_MAC_CTX  *keyed;

    if (secret->len <= 6 || ngx_strncmp(secret->data, "whsec_", 6) != 0) {
        return NULL;
    }

    b64.data = secret->data + 6;
    b64.len = secret->len - 6;

    key.data = ngx_pnalloc(pool, ngx_base64_decoded_length(b64.len));
    if (key.data == NULL) {
        return NULL;
    }

    if (ngx_decode_base64(&key, &b64) != NGX_OK) {
        return NULL;
    }

    keyed = ngx_http_paygw_hmac_keyed(&key);

    OPENSSL_cleanse(key.data, key.len);

    return keyed;
}


ngx_int_t
ngx_http_paygw_webhook_sign(ngx_pool_t *pool, EVP_MAC_CTX *keyed,
    ngx_str_t *id, ngx_str_t *ts, ngx_str_t *body, ngx_str_t *sig)
{
    u_char     *p;
    ngx_str_t   b64, content, mac;
    u_char      md[32];

    content.len = id->len + ts->len + body->len + 2;
    content.data = ngx_pnalloc(pool, content.len);
    sig->data = ngx_pnalloc(pool, 3 + ngx_base64_encoded_length(32));

    if (content.data == NULL || sig->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(content.data, id->data, id->len);
    *p++ = '.';
    p = ngx_cpymem(p, ts->data, ts->len);
    *p++ = '.';
    ngx_memcpy(p, body->data, body->len);

    if (ngx_http_paygw_hmac_keyed_sign(keyed, content.data, content.len, md)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    mac.data = md;
    mac.len = sizeof(md);

    ngx_memcpy(sig->data, "v1,", 3);
    b64.data = sig->data + 3;
    ngx_encode_base64(&b64, &mac);
    sig->len = 3 + b64.len;

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_alipay_canonical(ngx_pool_t *pool, ngx_array_t *params,
    ngx_uint_t keep_sign_type, ngx_str_t *out)
{
    u_char               *p;
    size_t                len;
    ngx_uint_t            i, n;
    ngx_keyval_t  *kv, *sorted;

    /*
     * Every parameter but "sign" (and, for notifies, "sign_type"), with
     * a value, sorted by key in byte order, joined "k=v&k=v" with raw,
     * unencoded values.
     */

    kv = params->elts;

    sorted = ngx_palloc(pool, (params->nelts + 1) * sizeof(ngx_keyval_t));
    if (sorted == NULL) {
        return NGX_ERROR;
    }

    n = 0;
    len = 0;

    for (i = 0; i < params->nelts; i++) {

        if (kv[i].value.len == 0
            || (kv[i].key.len == 4
                && ngx_strncmp(kv[i].key.data, "sign", 4) == 0)
            || (!keep_sign_type && kv[i].key.len == 9
                && ngx_strncmp(kv[i].key.data, "sign_type", 9) == 0))
        {
            continue;
        }

        sorted[n++] = kv[i];
        len += kv[i].key.len + kv[i].value.len + 2;
    }

    ngx_qsort(sorted, n, sizeof(ngx_keyval_t), ngx_http_paygw_kv_cmp);

    out->data = ngx_pnalloc(pool, len + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    p = out->data;

    for (i = 0; i < n; i++) {
        if (i) {
            *p++ = '&';
        }

        p = ngx_cpymem(p, sorted[i].key.data, sorted[i].key.len);
        *p++ = '=';
        p = ngx_cpymem(p, sorted[i].value.data, sorted[i].value.len);
    }

    out->len = p - out->data;

    return NGX_OK;
}


static int
ngx_http_paygw_kv_cmp(const void *one, const void *two)
{
    const ngx_keyval_t  *a = one, *b = two;

    return (int) ngx_memn2cmp(a->key.data, b->key.data, a->key.len,
                              b->key.len);
}


/*
 * SHA-256 and HMAC, fetched from the provider once per process and kept
 * (EVP_sha256() and a MAC fetch per call each look the algorithm up
 * again); the legacy EVP_sha256() only if the fetch fails.
 */

const EVP_MD *
ngx_http_paygw_sha256(void)
{
    static EVP_MD  *md;

    if (md == NULL) {
        md = EVP_MD_fetch(NULL, "SHA256", NULL);

        if (md == NULL) {
            return EVP_sha256();
        }
    }

    return md;
}


EVP_MAC *
ngx_http_paygw_hmac(void)
{
    static EVP_MAC  *mac;

    if (mac == NULL) {
        mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    }

    return mac;
}
