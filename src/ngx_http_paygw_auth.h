
/*
 * paygw: merchant keys and request authentication (SPEC §2).
 */


#ifndef _NGX_HTTP_PAYGW_AUTH_H_INCLUDED_
#define _NGX_HTTP_PAYGW_AUTH_H_INCLUDED_


#include "ngx_http_paygw.h"
#include <openssl/evp.h>


#define NGX_HTTP_PAYGW_ROLE_VIEWER    1
#define NGX_HTTP_PAYGW_ROLE_MERCHANT  2
#define NGX_HTTP_PAYGW_ROLE_ADMIN     3

#define NGX_HTTP_PAYGW_AUTH_SKEW      300
#define NGX_HTTP_PAYGW_NONCE_TTL      600


typedef struct {
    ngx_str_t                     key_id;
    ngx_str_t                     secret;
    ngx_str_t                     merchant_id;   /* "*": every merchant */
    ngx_uint_t                    role;
    EVP_MAC_CTX                  *hmac;          /* keyed: per process, made
                                                    on first use */
} ngx_http_paygw_key_t;


typedef struct {
    ngx_str_t                     key_id;
    ngx_str_t                     nonce;
    ngx_str_t                     sig;
    time_t                        ts;
    ngx_str_t                     ts_raw;        /* signed as sent */
    ngx_http_paygw_key_t         *key;
    u_char                        body_sha256[32];
    unsigned                      body_hashed:1; /* body_sha256 is set */
} ngx_http_paygw_auth_t;


char *ngx_http_paygw_keys(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_paygw_authenticate(ngx_http_request_t *r,
    ngx_str_t *body, ngx_http_paygw_auth_t *auth, const char **why);
ngx_int_t ngx_http_paygw_auth_key_id(ngx_http_request_t *r, ngx_str_t *id);
ngx_int_t ngx_http_paygw_auth_sign(ngx_http_paygw_key_t *key,
    ngx_str_t *method, ngx_str_t *uri, ngx_str_t *ts, ngx_str_t *nonce,
    u_char *body_sha256, u_char *hex);
ngx_http_paygw_key_t *ngx_http_paygw_key_by_id(ngx_array_t *keys,
    ngx_str_t *key_id);


#endif /* _NGX_HTTP_PAYGW_AUTH_H_INCLUDED_ */
