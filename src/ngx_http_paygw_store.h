
/*
 * paygw: payments, refunds and outbox events in MySQL.  The only place
 * with SQL text.
 */


#ifndef _NGX_HTTP_PAYGW_STORE_H_INCLUDED_
#define _NGX_HTTP_PAYGW_STORE_H_INCLUDED_


#include "ngx_http_paygw_types.h"


ngx_int_t ngx_http_paygw_store_insert_payment(ngx_http_paygw_mysql_op_t *op,
    ngx_http_paygw_payment_t *p);
ngx_int_t ngx_http_paygw_store_select_payment(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *merchant_id, ngx_str_t *payment_no, ngx_str_t *business_no);
ngx_int_t ngx_http_paygw_store_row_payment(ngx_http_paygw_sql_stmt_t *stmt,
    ngx_http_paygw_payment_t *p);
ngx_int_t ngx_http_paygw_store_settle_payment(ngx_http_request_t *r,
    ngx_http_paygw_mysql_op_t *op, ngx_http_paygw_payment_t *p,
    ngx_http_paygw_outcome_t *out);
ngx_int_t ngx_http_paygw_store_close_payment(ngx_http_request_t *r,
    ngx_http_paygw_mysql_op_t *op, ngx_http_paygw_payment_t *p);
ngx_int_t ngx_http_paygw_store_reserve_refund(ngx_http_paygw_mysql_op_t *op,
    ngx_http_paygw_refund_t *rf);
ngx_int_t ngx_http_paygw_store_settle_refund(ngx_http_request_t *r,
    ngx_http_paygw_mysql_op_t *op, ngx_http_paygw_refund_t *rf,
    ngx_http_paygw_outcome_t *out);
ngx_int_t ngx_http_paygw_store_select_refund(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *merchant_id, ngx_str_t *refund_no);
ngx_int_t ngx_http_paygw_store_row_refund(ngx_http_paygw_sql_stmt_t *stmt,
    ngx_http_paygw_refund_t *rf, ngx_str_t *channel);
ngx_int_t ngx_http_paygw_store_risk_event(ngx_http_request_t *r,
    ngx_http_paygw_mysql_op_t *op, ngx_http_paygw_payment_t *p,
    const char *reason);
ngx_int_t ngx_http_paygw_store_select_refund_out(
    ngx_http_paygw_mysql_op_t *op, ngx_str_t *out_refund_no);
ngx_int_t ngx_http_paygw_store_select_stale_refunds(
    ngx_http_paygw_mysql_op_t *op, ngx_uint_t limit);
ngx_int_t ngx_http_paygw_store_claim_stale(ngx_http_paygw_mysql_op_t *op,
    ngx_uint_t refunds, ngx_str_t *claim, ngx_uint_t due, ngx_uint_t limit);
ngx_int_t ngx_http_paygw_store_select_stale(ngx_http_paygw_mysql_op_t *op,
    time_t older_than, ngx_uint_t limit);


#endif /* _NGX_HTTP_PAYGW_STORE_H_INCLUDED_ */
