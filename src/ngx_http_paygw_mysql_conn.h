
/*
 * paygw: a MySQL connection as the driver (ngx_http_paygw_mysql.c) and
 * the pool (ngx_http_paygw_mysql_pool.c) share it.  No other file
 * includes this header.
 */


#ifndef _NGX_HTTP_PAYGW_MYSQL_CONN_H_INCLUDED_
#define _NGX_HTTP_PAYGW_MYSQL_CONN_H_INCLUDED_


#include "ngx_http_paygw_mysql.h"


#define NGX_HTTP_PAYGW_MYSQL_FREE      0
#define NGX_HTTP_PAYGW_MYSQL_CONNECT   1
#define NGX_HTTP_PAYGW_MYSQL_QUERY     2
#define NGX_HTTP_PAYGW_MYSQL_STORE     3
#define NGX_HTTP_PAYGW_MYSQL_ROLLBACK  4
#define NGX_HTTP_PAYGW_MYSQL_IDLE      5
#define NGX_HTTP_PAYGW_MYSQL_NEXT      6

/* "nothing to wait for": the op finished or moved elsewhere */
#define NGX_HTTP_PAYGW_MYSQL_STOP      -1


struct ngx_http_paygw_mysql_conn_s {
    MYSQL                        *mysql;
    ngx_connection_t             *c;
    ngx_http_paygw_mysql_srv_t   *srv;
    ngx_http_paygw_mysql_op_t    *op;
    ngx_queue_t                   queue;
    ngx_event_t                   connect_timer;
    ngx_event_t                   lib_timer;
    ngx_uint_t                    state;
    int                           wait;

    MYSQL                        *ret_mysql;
    int                           ret_int;
    MYSQL_RES                    *ret_res;

    ngx_msec_t                    idle_since;
    ngx_uint_t                    node;      /* the writer when opened */
    ngx_uint_t                    gen;       /* ... and its generation */

    unsigned                      reused:1;
    unsigned                      galera:1;  /* wsrep_sync_wait is set */
};


/* ngx_http_paygw_mysql.c: the driver */
void ngx_http_paygw_mysql_connect(ngx_http_paygw_mysql_op_t *op);
void ngx_http_paygw_mysql_run(ngx_http_paygw_mysql_conn_t *mc,
    ngx_http_paygw_mysql_op_t *op);
void ngx_http_paygw_mysql_close(ngx_http_paygw_mysql_conn_t *mc);

/* ngx_http_paygw_mysql_pool.c: the pool */
void ngx_http_paygw_mysql_init_srv(ngx_http_paygw_mysql_srv_t *srv);
void ngx_http_paygw_mysql_dispatch(ngx_http_paygw_mysql_op_t *op);
void ngx_http_paygw_mysql_release(ngx_http_paygw_mysql_conn_t *mc);
void ngx_http_paygw_mysql_idle_handler(ngx_http_paygw_mysql_conn_t *mc,
    ngx_event_t *ev);


#endif /* _NGX_HTTP_PAYGW_MYSQL_CONN_H_INCLUDED_ */
