#ifndef _PAYGW_FUZZ_SHIM_H_INCLUDED_
#define _PAYGW_FUZZ_SHIM_H_INCLUDED_


/* t/fuzz/shim.c: the nginx runtime of the harnesses */

ngx_pool_t *fz_pool(void);
ngx_log_t *fz_log(void);
void fz_pool_reset(void);
ngx_http_request_t *fz_request(void *main_conf, void *loc_conf);
void fz_header(ngx_list_t *list, const char *name, u_char *value,
    size_t len);

extern u_char  fz_conf_error[];


#endif
