#ifndef _PAYGW_FUZZ_SHIM_H_INCLUDED_
#define _PAYGW_FUZZ_SHIM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_paygw.h"
#include "ngx_http_paygw_channel.h"


/* t/fuzz/shim.c: the nginx runtime of the harnesses */

ngx_pool_t *fz_pool(void);
ngx_log_t *fz_log(void);
void fz_pool_reset(void);
ngx_http_request_t *fz_request(void *main_conf, void *loc_conf);
void fz_header(ngx_list_t *list, const char *name, u_char *value,
    size_t len);

EVP_PKEY *fz_rsa_key(void);
ngx_http_paygw_ctx_t *fz_provider_ctx(ngx_http_request_t *r,
    ngx_http_paygw_channel_t *ch, const char *what, ngx_uint_t status,
    u_char *body, size_t len);
u_char *fz_copy(const u_char *data, size_t len);
void fz_count_notice(ngx_int_t rc);
void fz_check_outcome(ngx_http_paygw_outcome_t *out, ngx_uint_t verified);

extern u_char  fz_conf_error[];


#endif
