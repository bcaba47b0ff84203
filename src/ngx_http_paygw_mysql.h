
/*
 * paygw: MySQL/MariaDB through MariaDB Connector/C's non-blocking API,
 * driven by nginx events (paygw_mysql, paygw_mysql_pass).
 */


#ifndef _NGX_HTTP_PAYGW_MYSQL_H_INCLUDED_
#define _NGX_HTTP_PAYGW_MYSQL_H_INCLUDED_


#include "ngx_http_paygw.h"
#include "ngx_http_paygw_mysql_ha.h"
#include <mysql.h>


#define NGX_HTTP_PAYGW_SQL_NULL     0
#define NGX_HTTP_PAYGW_SQL_INT      1
#define NGX_HTTP_PAYGW_SQL_STR      2

#define NGX_HTTP_PAYGW_ANY_ROWS     -1

#define NGX_HTTP_PAYGW_ER_LOCK_WAIT_TIMEOUT  1205
#define NGX_HTTP_PAYGW_ER_LOCK_DEADLOCK      1213
#define NGX_HTTP_PAYGW_ER_WSREP_NOT_READY    1047  /* ER_UNKNOWN_COM_ERROR */
#define NGX_HTTP_PAYGW_ER_DURING_COMMIT      1180  /* ER_ERROR_DURING_COMMIT */


typedef struct {
    ngx_uint_t                    type;
    int64_t                       num;
    ngx_str_t                     str;
} ngx_http_paygw_sql_param_t;


/*
 * A statement: SQL text whose "?" are placeholders (the text itself is
 * ours, never input, and holds no other "?"), its parameters, and after
 * it ran its result.  A value whose data is NULL is an SQL NULL.
 */

typedef struct {
    ngx_str_t                     sql;
    ngx_array_t                   params;    /* ngx_http_paygw_sql_param_t */
    ngx_int_t                     expect_affected;

    uint64_t                      affected;
    uint64_t                      insert_id;
    ngx_uint_t                    nfields;
    ngx_str_t                    *fields;
    ngx_uint_t                    nrows;
    ngx_str_t                    *values;    /* nrows * nfields */
} ngx_http_paygw_sql_stmt_t;


typedef struct ngx_http_paygw_mysql_conn_s  ngx_http_paygw_mysql_conn_t;


/*
 * Statements run in order on one pooled connection; with "transaction"
 * inside START TRANSACTION ... COMMIT, rolled back on the first error.
 * "ok" in call means the server answered; err_no tells whether it
 * accepted (0) or which error it gave for statement "failed".
 * "conflict" is set when a statement did not affect the rows expected
 * (a conditional update that lost), which also rolls back.
 * "restartable" says that statements without a transaction may all run
 * again from the first after a deadlock (a claim, a purge): the server
 * rolled back the victim statement only, and running the earlier ones
 * twice changes nothing.
 */

typedef struct ngx_http_paygw_mysql_op_s  ngx_http_paygw_mysql_op_t;

/* all statements ran, the COMMIT too: what was written is there */
typedef void (*ngx_http_paygw_mysql_committed_pt)(
    ngx_http_paygw_mysql_op_t *op);


struct ngx_http_paygw_mysql_op_s {
    ngx_http_paygw_call_t         call;

    ngx_pool_t                   *pool;
    ngx_array_t                   stmts;     /* ngx_http_paygw_sql_stmt_t */
    ngx_http_paygw_mysql_committed_pt
                                  committed;
    void                         *data;      /* committed's */
    unsigned                      transaction:1;
    unsigned                      read_only:1;
    unsigned                      conflict:1;
    unsigned                      restartable:1;  /* may run again whole */

    ngx_uint_t                    failed;
    unsigned int                  err_no;
    ngx_str_t                     err_msg;

    /* driver side */
    ngx_http_request_t           *request;
    ngx_http_paygw_mysql_srv_t   *srv;
    ngx_http_paygw_mysql_conn_t  *conn;
    ngx_http_cleanup_t           *cleanup;
    ngx_event_t                   timer;
    ngx_queue_t                   queue;
    ngx_uint_t                    step;      /* statement being run */
    unsigned                      queued:1;
    unsigned                      retried:1;
    unsigned                      in_transaction:1;
    unsigned                      rerun:1;
    unsigned                      batch:1;   /* one multi-statement text */
    unsigned                      guard:1;   /* next result: a guard's */
    ngx_uint_t                    deadlocks;
};


typedef struct {
    ngx_str_t                     host;      /* an IP address, NUL-ended */
    ngx_uint_t                    port;
} ngx_http_paygw_mysql_node_t;


struct ngx_http_paygw_mysql_srv_s {
    ngx_str_t                     name;
    ngx_str_t                     host;      /* host=: an IP address, */
    ngx_uint_t                    port;      /* NUL-ended */
    ngx_array_t                  *nodes;     /* mysql_node_t: host=, then
                                                every failover= */
    ngx_uint_t                    index;     /* in mysql_servers */
    ngx_msec_t                    check_interval;
    ngx_msec_t                    check_timeout;
    ngx_str_t                     user;
    ngx_str_t                     password;
    ngx_str_t                     database;
    ngx_uint_t                    max_conns; /* per worker */
    ngx_msec_t                    idle_timeout;
    ngx_msec_t                    connect_timeout;
    ngx_msec_t                    query_timeout;

    /* per worker, set up lazily after fork */
    ngx_queue_t                   idle;
    ngx_queue_t                   waiting;
    ngx_uint_t                    nconns;
    ngx_event_t                  *wake;      /* hands freed slots on */
    ngx_http_paygw_mysql_ha_t    *ha;        /* the zone's or our own */
    void                         *checker;   /* mysql_check.c's */
    unsigned                      initialized:1;
};


ngx_http_paygw_mysql_op_t *ngx_http_paygw_mysql_create(ngx_http_request_t *r);
ngx_http_paygw_sql_stmt_t *ngx_http_paygw_mysql_add(
    ngx_http_paygw_mysql_op_t *op, const char *sql);
ngx_int_t ngx_http_paygw_sql_int(ngx_http_paygw_mysql_op_t *op,
    ngx_http_paygw_sql_stmt_t *stmt, int64_t v);
ngx_int_t ngx_http_paygw_sql_str(ngx_http_paygw_mysql_op_t *op,
    ngx_http_paygw_sql_stmt_t *stmt, ngx_str_t *v);
ngx_int_t ngx_http_paygw_sql_null(ngx_http_paygw_mysql_op_t *op,
    ngx_http_paygw_sql_stmt_t *stmt);
ngx_str_t *ngx_http_paygw_sql_value(ngx_http_paygw_sql_stmt_t *stmt,
    ngx_uint_t row, ngx_uint_t col);
void ngx_http_paygw_mysql_reason(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *reason);
ngx_int_t ngx_http_paygw_mysql_send(ngx_http_request_t *r,
    ngx_http_paygw_mysql_op_t *op);
ngx_int_t ngx_http_paygw_mysql_socket(MYSQL *mysql, void *data,
    ngx_connection_t **cp, ngx_event_handler_pt read,
    ngx_event_handler_pt write);
void ngx_http_paygw_mysql_unwatch(ngx_connection_t *c);

/* ngx_http_paygw_sql.c: the text sent to the server */
ngx_int_t ngx_http_paygw_sql_render(MYSQL *mysql, ngx_pool_t *pool,
    ngx_http_paygw_sql_stmt_t *stmt, ngx_str_t *out);
ngx_int_t ngx_http_paygw_sql_render_batch(MYSQL *mysql, ngx_pool_t *pool,
    ngx_array_t *stmts, ngx_uint_t transaction, ngx_uint_t *failed,
    ngx_str_t *out);
ngx_int_t ngx_http_paygw_sql_store_result(MYSQL_RES *res, ngx_pool_t *pool,
    ngx_http_paygw_sql_stmt_t *stmt);

/* ngx_http_paygw_mysql_conf.c: directives */
char *ngx_http_paygw_mysql_block(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_paygw_mysql_pass(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_paygw_mysql_merge_conf(ngx_conf_t *cf,
    ngx_http_paygw_loc_conf_t *prev, ngx_http_paygw_loc_conf_t *conf);

/* ngx_http_paygw_mysql.c: the location handler and worker hooks */
ngx_int_t ngx_http_paygw_mysql_handler(ngx_http_request_t *r);
void ngx_http_paygw_mysql_exit_process(ngx_cycle_t *cycle);

/* ngx_http_paygw_mysql_ha.c: the agreed writer and the nodes' health */
ngx_int_t ngx_http_paygw_mysql_init_process(ngx_cycle_t *cycle);
ngx_http_paygw_mysql_node_t *ngx_http_paygw_mysql_node(
    ngx_http_paygw_mysql_srv_t *srv, ngx_uint_t n);
ngx_uint_t ngx_http_paygw_mysql_writer(ngx_http_paygw_mysql_srv_t *srv,
    ngx_uint_t *gen);
ngx_uint_t ngx_http_paygw_mysql_galera(ngx_http_paygw_mysql_srv_t *srv,
    ngx_uint_t n);
void ngx_http_paygw_mysql_set_state(ngx_http_paygw_mysql_srv_t *srv,
    ngx_uint_t n, ngx_uint_t state, ngx_log_t *log);
void ngx_http_paygw_mysql_elect(ngx_http_paygw_mysql_srv_t *srv,
    ngx_log_t *log);
const char *ngx_http_paygw_mysql_state_name(ngx_uint_t state);
u_char *ngx_http_paygw_mysql_metrics(ngx_http_request_t *r, u_char *p,
    u_char *last);

/* ngx_http_paygw_mysql_pool.c */
void ngx_http_paygw_mysql_retire_idle(ngx_http_paygw_mysql_srv_t *srv);

/* ngx_http_paygw_mysql_check.c: the active health check */
void ngx_http_paygw_mysql_check_start(ngx_http_paygw_mysql_srv_t *srv,
    ngx_cycle_t *cycle);


#endif /* _NGX_HTTP_PAYGW_MYSQL_H_INCLUDED_ */
