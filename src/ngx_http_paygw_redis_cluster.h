
/*
 * paygw: the Redis Cluster client of paygw_redis_pass
 * (paygw_redis_cluster on).
 */


#ifndef _NGX_HTTP_PAYGW_REDIS_CLUSTER_H_INCLUDED_
#define _NGX_HTTP_PAYGW_REDIS_CLUSTER_H_INCLUDED_


#include "ngx_http_paygw_redis.h"


#define NGX_HTTP_PAYGW_RC_SLOTS      16384


typedef struct ngx_http_paygw_rc_s     ngx_http_paygw_rc_t;
typedef struct ngx_http_paygw_rc_op_s  ngx_http_paygw_rc_op_t;


ngx_int_t ngx_http_paygw_rc_key_slot(u_char *key, size_t len);

char *ngx_http_paygw_rc_merge_conf(ngx_conf_t *cf,
    ngx_http_paygw_loc_conf_t *prev, ngx_http_paygw_loc_conf_t *conf);

ngx_int_t ngx_http_paygw_rc_start(ngx_http_request_t *r,
    ngx_http_paygw_redis_op_t *op);
void ngx_http_paygw_rc_replies(ngx_http_request_t *r,
    ngx_http_paygw_redis_op_t *op);
ngx_int_t ngx_http_paygw_rc_done(ngx_http_request_t *r,
    ngx_http_paygw_redis_op_t *op);
void ngx_http_paygw_rc_cleanup(ngx_http_paygw_redis_op_t *op);


#endif /* _NGX_HTTP_PAYGW_REDIS_CLUSTER_H_INCLUDED_ */
