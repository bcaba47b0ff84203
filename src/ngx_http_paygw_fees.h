
/*
 * paygw: transaction fees, settlements and reconciliation (SPEC §7).
 */


#ifndef _NGX_HTTP_PAYGW_FEES_H_INCLUDED_
#define _NGX_HTTP_PAYGW_FEES_H_INCLUDED_


#include "ngx_http_paygw_types.h"


char *ngx_http_paygw_fees(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
void ngx_http_paygw_fees_compute(ngx_http_request_t *r,
    ngx_http_paygw_payment_t *p);
int64_t ngx_http_paygw_fee(int64_t amount, int64_t bps, int64_t fixed,
    int64_t min, int64_t max);

/* ngx_http_paygw_settlements.c: GET /v1/settlements */
ngx_int_t ngx_http_paygw_settlements(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_store_select_settlements(
    ngx_http_paygw_mysql_op_t *op, ngx_str_t *merchant_id, ngx_str_t *date);

/* ngx_http_paygw_reconcile.c: /v1/reconciliations */
ngx_int_t ngx_http_paygw_recon_init(ngx_conf_t *cf);
char *ngx_http_paygw_reconcile_schedule(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_paygw_reconciler_init_process(ngx_cycle_t *cycle);
ngx_int_t ngx_http_paygw_recon_run(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_store_recon_lease(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *holder, time_t seconds);
ngx_int_t ngx_http_paygw_store_recon_release(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *holder);
ngx_int_t ngx_http_paygw_store_recon_event(ngx_http_request_t *r,
    ngx_http_paygw_mysql_op_t *op, ngx_str_t *id, json_t *data);
void ngx_http_paygw_m_reconciliation(ngx_http_request_t *r,
    ngx_str_t *channel, ngx_uint_t differences);
char *ngx_http_paygw_statement_hosts(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_paygw_reconcile(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_get_recon(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_store_select_recon_local(
    ngx_http_paygw_mysql_op_t *op, ngx_str_t *channel, ngx_str_t *date,
    ngx_int_t tz_hours);
ngx_int_t ngx_http_paygw_store_insert_recon(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *id, ngx_str_t *channel, ngx_str_t *date, ngx_uint_t failed,
    ngx_uint_t differences, ngx_str_t *holder, ngx_str_t *report);
ngx_int_t ngx_http_paygw_store_select_recon(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *id);


#endif /* _NGX_HTTP_PAYGW_FEES_H_INCLUDED_ */
