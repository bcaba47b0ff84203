
/*
 * paygw: counting into the metrics of paygw_zone (ngx_http_paygw_zone.h),
 * which all workers add into.
 */


#ifndef _NGX_HTTP_PAYGW_METRICS_H_INCLUDED_
#define _NGX_HTTP_PAYGW_METRICS_H_INCLUDED_


#include "ngx_http_paygw_zone.h"
#include "ngx_http_paygw_states.h"


#define NGX_HTTP_PAYGW_M_API_OTHER     0    /* 1-8: NGX_HTTP_PAYGW_API_* */
#define NGX_HTTP_PAYGW_M_API_HEALTH    9
#define NGX_HTTP_PAYGW_M_API_READY     10
#define NGX_HTTP_PAYGW_M_API_METRICS   11

#define NGX_HTTP_PAYGW_M_RESULT_OK            0
#define NGX_HTTP_PAYGW_M_RESULT_CLIENT_ERROR  1
#define NGX_HTTP_PAYGW_M_RESULT_SERVER_ERROR  2
#define NGX_HTTP_PAYGW_M_RESULT_TIMEOUT       3
#define NGX_HTTP_PAYGW_M_RESULT_UNREACHABLE   4

#define NGX_HTTP_PAYGW_M_IDEM_NEW       0
#define NGX_HTTP_PAYGW_M_IDEM_REPLAYED  1
#define NGX_HTTP_PAYGW_M_IDEM_IN_USE    2
#define NGX_HTTP_PAYGW_M_IDEM_REUSED    3

#define NGX_HTTP_PAYGW_M_BACKEND_REDIS  0
#define NGX_HTTP_PAYGW_M_BACKEND_MYSQL  1


void ngx_http_paygw_m_request(ngx_http_request_t *r, ngx_uint_t api);
void ngx_http_paygw_m_payment(ngx_http_request_t *r, ngx_str_t *channel,
    ngx_http_paygw_status_e status);
void ngx_http_paygw_m_channel(ngx_http_request_t *r, ngx_str_t *channel,
    ngx_uint_t result, ngx_msec_t ms);
void ngx_http_paygw_m_idempotency(ngx_http_request_t *r, ngx_uint_t result);
void ngx_http_paygw_m_risk(ngx_http_request_t *r, ngx_uint_t deny);
void ngx_http_paygw_m_callback(ngx_http_request_t *r, ngx_str_t *channel,
    ngx_uint_t accepted);
void ngx_http_paygw_m_backend_error(ngx_http_request_t *r,
    ngx_uint_t backend);
void ngx_http_paygw_m_round_trip(ngx_http_request_t *r, ngx_uint_t backend);
ngx_int_t ngx_http_paygw_metrics_init(ngx_conf_t *cf);


#endif /* _NGX_HTTP_PAYGW_METRICS_H_INCLUDED_ */
