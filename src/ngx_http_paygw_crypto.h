
/*
 * paygw: the cryptography of the provider protocols and webhooks, on
 * OpenSSL: SHA256withRSA (Alipay RSA2, WeChat Pay v3), AEAD-AES-GCM
 * (WeChat Pay v3 resources), HMAC-SHA256 (acquirer, Standard Webhooks).
 */


#ifndef _NGX_HTTP_PAYGW_CRYPTO_H_INCLUDED_
#define _NGX_HTTP_PAYGW_CRYPTO_H_INCLUDED_


#include "ngx_http_paygw.h"
#include <openssl/evp.h>


EVP_PKEY *ngx_http_paygw_pem_key(ngx_str_t *pem, ngx_uint_t private_key);
const EVP_MD *ngx_http_paygw_sha256(void);
EVP_MAC *ngx_http_paygw_hmac(void);
ngx_int_t ngx_http_paygw_rsa_sign(ngx_pool_t *pool, EVP_PKEY *key,
    ngx_str_t *data, ngx_str_t *sig_b64);
ngx_int_t ngx_http_paygw_rsa_verify(ngx_pool_t *pool, EVP_PKEY *key,
    ngx_str_t *data, ngx_str_t *sig_b64);
ngx_int_t ngx_http_paygw_aes_gcm_decrypt(ngx_pool_t *pool, ngx_str_t *key,
    ngx_str_t *nonce, ngx_str_t *aad, ngx_str_t *ct_b64, ngx_str_t *plain);
ngx_int_t ngx_http_paygw_hmac_sha256(ngx_str_t *key, ngx_str_t *data,
    u_char *mac);
EVP_MAC_CTX *ngx_http_paygw_hmac_keyed(ngx_str_t *key);
ngx_int_t ngx_http_paygw_hmac_keyed_sign(EVP_MAC_CTX *keyed, u_char *data,
    size_t len, u_char *mac);
EVP_MAC_CTX *ngx_http_paygw_webhook_key(ngx_pool_t *pool, ngx_str_t *secret);
ngx_int_t ngx_http_paygw_webhook_sign(ngx_pool_t *pool, EVP_MAC_CTX *keyed,
    ngx_str_t *id, ngx_str_t *ts, ngx_str_t *body, ngx_str_t *sig);
ngx_int_t ngx_http_paygw_alipay_canonical(ngx_pool_t *pool,
    ngx_array_t *params, ngx_uint_t keep_sign_type, ngx_str_t *out);


#endif /* _NGX_HTTP_PAYGW_CRYPTO_H_INCLUDED_ */
