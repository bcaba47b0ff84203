
/*
 * paygw: payment channels and calls to providers through nginx
 * upstreams.
 */


#ifndef _NGX_HTTP_PAYGW_CHANNEL_H_INCLUDED_
#define _NGX_HTTP_PAYGW_CHANNEL_H_INCLUDED_


#include "ngx_http_paygw_api.h"


#define NGX_HTTP_PAYGW_CALL_PROVIDER  3


struct ngx_http_paygw_channel_s {
    ngx_str_t                     name;
    ngx_str_t                     location;      /* internal, proxy_pass */
    ngx_str_t                     merchant;      /* our id at the provider */
    ngx_str_t                     secret;
    ngx_uint_t                    attempts;
    time_t                        unknown_grace;
    ngx_uint_t                    breaker_failures;   /* 0: no breaker */
    ngx_msec_t                    breaker_timeout;
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

    ngx_str_t                     channel;       /* for metrics */
    ngx_http_paygw_channel_t     *ch;
    ngx_msec_t                    start;

    ngx_uint_t                    status;
    ngx_str_t                     response;
    ngx_list_t                   *response_headers;
} ngx_http_paygw_provider_call_t;


char *ngx_http_paygw_channel(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_http_paygw_channel_t *ngx_http_paygw_channel_find(ngx_http_request_t *r,
    ngx_str_t *name);

ngx_http_paygw_provider_call_t *ngx_http_paygw_provider_create(
    ngx_http_request_t *r, const char *method);
ngx_int_t ngx_http_paygw_provider_header(ngx_http_request_t *r,
    ngx_http_paygw_provider_call_t *pc, const char *name, ngx_str_t *value);
ngx_int_t ngx_http_paygw_provider_send(ngx_http_request_t *r,
    ngx_http_paygw_channel_t *ch, ngx_http_paygw_provider_call_t *pc);
ngx_str_t *ngx_http_paygw_provider_response_header(
    ngx_http_paygw_provider_call_t *pc, const char *name);

/* ngx_http_paygw_breaker.c */
ngx_int_t ngx_http_paygw_breaker_allow(ngx_http_request_t *r,
    ngx_http_paygw_channel_t *ch);
void ngx_http_paygw_breaker_record(ngx_http_request_t *r,
    ngx_http_paygw_channel_t *ch, ngx_uint_t failed);

/* ngx_http_paygw_bank.c: the bank-card acquirer */
ngx_int_t ngx_http_paygw_bank_charge(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_bank_query(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_bank_refund(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_bank_refund_query(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
void ngx_http_paygw_bank_charge_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_uint_t query);
void ngx_http_paygw_bank_refund_outcome(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_bank_retryable(ngx_http_paygw_ctx_t *ctx);


#endif /* _NGX_HTTP_PAYGW_CHANNEL_H_INCLUDED_ */
