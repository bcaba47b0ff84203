
/*
 * paygw: payment channels and calls to providers through nginx
 * upstreams.
 */


#ifndef _NGX_HTTP_PAYGW_CHANNEL_H_INCLUDED_
#define _NGX_HTTP_PAYGW_CHANNEL_H_INCLUDED_


#include "ngx_http_paygw_types.h"
#include <openssl/evp.h>


#define NGX_HTTP_PAYGW_CALL_PROVIDER  3


/* what a payment is at a provider: a card charge or a QR code */

typedef enum {
    NGX_HTTP_PAYGW_KIND_CARD = 1,
    NGX_HTTP_PAYGW_KIND_QR
} ngx_http_paygw_kind_e;


/*
 * A provider: a row of the registry (ngx_http_paygw_providers.c).  Its
 * name is what "paygw_channel NAME" or "provider=NAME" selects; a
 * channel named after a provider that has a fixed zone slot (the first
 * three) counts in that slot, any other channel gets a slot of its own.
 *
 * Its protocol: each call sends one request (a subrequest) and each
 * outcome reads its answer into ctx->outcome.  close is NULL where
 * nothing can be closed at the provider (bank cards settle at once).
 * Callbacks are answered with notify_ok / notify_fail as text when
 * these are set, else with 204 / a JSON error.
 */

typedef void (*ngx_http_paygw_outcome_pt)(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);

typedef struct {
    ngx_str_t                     name;
    ngx_http_paygw_kind_e         kind;
    ngx_str_t                     currency;      /* the only one; "": any */
    ngx_int_t                     slot;          /* fixed, or -1 */
    ngx_str_t                     notify_ok;
    ngx_str_t                     notify_fail;

    ngx_http_paygw_step_pt        charge;        /* precreate, native, charge */
    ngx_http_paygw_step_pt        query;
    ngx_http_paygw_step_pt        close;
    ngx_http_paygw_step_pt        refund;
    ngx_http_paygw_step_pt        refund_query;
    ngx_http_paygw_outcome_pt     charge_outcome;
    ngx_http_paygw_outcome_pt     query_outcome;
    ngx_http_paygw_outcome_pt     close_outcome;
    ngx_http_paygw_outcome_pt     refund_outcome;
    ngx_http_paygw_step_pt        notify;        /* verify, read a callback */
    char                       *(*conf)(ngx_conf_t *cf,
                                        ngx_http_paygw_channel_t *ch,
                                        ngx_str_t *param);
    char                       *(*check)(ngx_conf_t *cf,
                                         ngx_http_paygw_channel_t *ch);
} ngx_http_paygw_provider_t;


typedef struct {
    ngx_str_t                     serial;
    EVP_PKEY                     *key;
} ngx_http_paygw_platform_key_t;


struct ngx_http_paygw_channel_s {
    ngx_str_t                     name;          /* in the API and metrics */
    ngx_http_paygw_provider_t    *provider;
    ngx_uint_t                    slot;          /* in paygw_zone */
    ngx_str_t                     location;      /* internal, proxy_pass */
    ngx_str_t                     merchant;      /* our id at the provider */
    ngx_str_t                     secret;        /* HMAC; WeChat APIv3 key */
    EVP_MAC_CTX                  *hmac;          /* bank: keyed, per process */
    ngx_uint_t                    attempts;
    time_t                        unknown_grace;
    unsigned                      grace_set:1;   /* unknown_grace= given */
    ngx_uint_t                    breaker_failures;   /* 0: no breaker */
    ngx_msec_t                    breaker_timeout;
    ngx_str_t                     fallback_name;
    ngx_http_paygw_channel_t     *fallback;

    /* RSA providers (Alipay, WeChat Pay v3) */
    ngx_str_t                     app_id;
    ngx_str_t                     serial_no;     /* of our certificate */
    ngx_str_t                     notify_url;
    EVP_PKEY                     *private_key;   /* signs our requests */
    EVP_PKEY                     *provider_key;  /* Alipay's public key */
    ngx_array_t                   platform_keys; /* WeChat, by serial */
};


/*
 * One HTTP exchange with a provider: a subrequest to the channel's
 * internal location (whose proxy_pass gives nginx's TLS, keepalive,
 * balancing) with our method, body and headers, the response kept in
 * memory.  "status" is 0 when the provider did not answer at all.
 */

typedef struct {
    ngx_http_paygw_call_t         call;
    ngx_str_t                     method;
    ngx_str_t                     path;
    ngx_str_t                     body;
    ngx_array_t                   headers;       /* ngx_keyval_t */

    u_char                       *what;          /* the call, for logs */
    ngx_str_t                     channel;       /* for metrics */
    ngx_http_paygw_channel_t     *ch;
    ngx_msec_t                    start;

    ngx_uint_t                    status;
    ngx_str_t                     response;
    ngx_list_t                   *response_headers;

    /* a statement (SPEC §7): the body goes to a filter, not to memory */
    unsigned                      stream:1;
} ngx_http_paygw_provider_call_t;


char *ngx_http_paygw_channel(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_http_paygw_channel_t *ngx_http_paygw_channel_find(ngx_http_request_t *r,
    ngx_str_t *name);
ngx_int_t ngx_http_paygw_channel_known(ngx_conf_t *cf, ngx_str_t *name);

/* ngx_http_paygw_providers.c: the registry */
ngx_http_paygw_provider_t *ngx_http_paygw_provider_find(ngx_str_t *name);
ngx_int_t ngx_http_paygw_provider_slot(ngx_str_t *name);
void ngx_http_paygw_provider_slots(ngx_str_t *slot_names);
u_char *ngx_http_paygw_provider_names(u_char *p, u_char *last);

ngx_http_paygw_provider_call_t *ngx_http_paygw_provider_create(
    ngx_http_request_t *r, const char *method);
ngx_int_t ngx_http_paygw_provider_header(ngx_http_request_t *r,
    ngx_http_paygw_provider_call_t *pc, const char *name, ngx_str_t *value);
ngx_int_t ngx_http_paygw_provider_send(ngx_http_request_t *r,
    ngx_http_paygw_channel_t *ch, ngx_http_paygw_provider_call_t *pc);
ngx_str_t *ngx_http_paygw_provider_response_header(
    ngx_http_paygw_provider_call_t *pc, const char *name);

ngx_int_t ngx_http_paygw_provider_retryable(ngx_http_paygw_ctx_t *ctx);
char *ngx_http_paygw_conf_pem(ngx_conf_t *cf, ngx_str_t *path,
    ngx_uint_t private_key, EVP_PKEY **key);
ngx_int_t ngx_http_paygw_channels_budget(ngx_conf_t *cf);
char *ngx_http_paygw_channels_init(ngx_conf_t *cf,
    ngx_http_paygw_main_conf_t *pmcf);
ngx_int_t ngx_http_paygw_yuan(ngx_str_t *s, int64_t *fen);
ngx_int_t ngx_http_paygw_json_is(json_t *doc, const char *name,
    ngx_str_t *expect);
void ngx_http_paygw_json_str(ngx_pool_t *pool, json_t *doc, const char *name,
    ngx_str_t *out);

/* ngx_http_paygw_breaker.c */
ngx_int_t ngx_http_paygw_breaker_allow(ngx_http_request_t *r,
    ngx_http_paygw_channel_t *ch);
void ngx_http_paygw_breaker_record(ngx_http_request_t *r,
    ngx_http_paygw_channel_t *ch, ngx_uint_t failed);

/* ngx_http_paygw_form.c: application/x-www-form-urlencoded */
ngx_int_t ngx_http_paygw_form_encode(ngx_pool_t *pool, ngx_array_t *params,
    ngx_str_t *out);
ngx_int_t ngx_http_paygw_form_decode(ngx_pool_t *pool, ngx_str_t *form,
    ngx_uint_t max, ngx_array_t **params);

/* verification of callbacks, also for the test endpoint */
ngx_int_t ngx_http_paygw_alipay_verify_form(ngx_pool_t *pool, EVP_PKEY *key,
    ngx_str_t *form, ngx_array_t **params);
ngx_int_t ngx_http_paygw_alipay_statement_query(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_str_t *date);
json_t *ngx_http_paygw_alipay_statement_answer(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_str_t *code, ngx_str_t *sub_code);
ngx_int_t ngx_http_paygw_wechat_statement_send(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_str_t *path, ngx_uint_t stream);
json_t *ngx_http_paygw_wechat_statement_answer(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_wechat_verify(ngx_pool_t *pool, ngx_array_t *keys,
    ngx_str_t *serial, ngx_str_t *ts, ngx_str_t *nonce, ngx_str_t *sig,
    ngx_str_t *body, time_t now, const char **why);
ngx_int_t ngx_http_paygw_wechat_resource(ngx_pool_t *pool,
    ngx_str_t *apiv3_key, ngx_str_t *body, ngx_str_t *event_type,
    ngx_str_t *plain, const char **why);

/* shared by the providers' outcome readers */
void ngx_http_paygw_outcome_unknown(ngx_http_paygw_outcome_t *out,
    const char *why);
void ngx_http_paygw_outcome_set(ngx_http_paygw_outcome_t *out,
    ngx_http_paygw_status_e status);


#endif /* _NGX_HTTP_PAYGW_CHANNEL_H_INCLUDED_ */
