
/*
 * paygw: trace context (W3C traceparent) and the $paygw_* variables.
 */


#ifndef _NGX_HTTP_PAYGW_TRACE_H_INCLUDED_
#define _NGX_HTTP_PAYGW_TRACE_H_INCLUDED_


#include "ngx_http_paygw.h"


ngx_int_t ngx_http_paygw_add_variables(ngx_conf_t *cf);
ngx_int_t ngx_http_paygw_trace_parse(ngx_str_t *value, u_char *trace_id,
    u_char *flags);
ngx_int_t ngx_http_paygw_traceparent(ngx_http_request_t *r, ngx_str_t *out);


#endif /* _NGX_HTTP_PAYGW_TRACE_H_INCLUDED_ */
