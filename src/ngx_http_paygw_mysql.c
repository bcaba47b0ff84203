
/*
 * paygw: MySQL/MariaDB through MariaDB Connector/C's non-blocking API.
 *
 * A paygw_mysql_pass location runs the statements of the op found in
 * its subrequest's ctx on a connection of a per-worker pool.  Every
 * library call is started with *_start() and, while it reports
 * MYSQL_WAIT_*, continued with *_cont() from nginx events on the
 * library's own socket; nginx never reads or writes that socket
 * itself, it only watches it.  Timers bound every wait.  A connection
 * goes back to the pool (ngx_http_paygw_mysql_pool.c) only when its last
 * operation completed; one interrupted mid-operation is shut down and
 * closed, never reused.
 */


#include "ngx_http_paygw_mysql_conn.h"
#include "ngx_http_paygw_metrics.h"
#include <errmsg.h>


static void ngx_http_paygw_mysql_attach(ngx_http_paygw_mysql_conn_t *mc,
    ngx_http_paygw_mysql_op_t *op);
static void ngx_http_paygw_mysql_progress(ngx_http_paygw_mysql_conn_t *mc,
    int status);
static int ngx_http_paygw_mysql_next(ngx_http_paygw_mysql_conn_t *mc);
static int ngx_http_paygw_mysql_connected(ngx_http_paygw_mysql_conn_t *mc);
static int ngx_http_paygw_mysql_start_step(ngx_http_paygw_mysql_conn_t *mc);
static int ngx_http_paygw_mysql_start_batch(ngx_http_paygw_mysql_conn_t *mc);
static ngx_uint_t ngx_http_paygw_mysql_batchable(
    ngx_http_paygw_mysql_op_t *op);
static int ngx_http_paygw_mysql_advanced(ngx_http_paygw_mysql_conn_t *mc);
static int ngx_http_paygw_mysql_query(ngx_http_paygw_mysql_conn_t *mc,
    const char *q, unsigned long len);
static int ngx_http_paygw_mysql_queried(ngx_http_paygw_mysql_conn_t *mc);
static int ngx_http_paygw_mysql_stored(ngx_http_paygw_mysql_conn_t *mc);
static int ngx_http_paygw_mysql_failed(ngx_http_paygw_mysql_conn_t *mc);
static int ngx_http_paygw_mysql_run_again(ngx_http_paygw_mysql_conn_t *mc);
static int ngx_http_paygw_mysql_abort(ngx_http_paygw_mysql_conn_t *mc);
static int ngx_http_paygw_mysql_rolled_back(ngx_http_paygw_mysql_conn_t *mc);
static int ngx_http_paygw_mysql_broken(ngx_http_paygw_mysql_conn_t *mc,
    ngx_uint_t status, const char *what);
static ngx_int_t ngx_http_paygw_mysql_wait(ngx_http_paygw_mysql_conn_t *mc,
    int status);
static ngx_int_t ngx_http_paygw_mysql_watch(ngx_http_paygw_mysql_conn_t *mc);
static void ngx_http_paygw_mysql_read_handler(ngx_event_t *rev);
static void ngx_http_paygw_mysql_write_handler(ngx_event_t *wev);
static void ngx_http_paygw_mysql_lib_timeout(ngx_event_t *ev);
static void ngx_http_paygw_mysql_connect_timeout(ngx_event_t *ev);
static void ngx_http_paygw_mysql_failover(ngx_http_paygw_mysql_conn_t *mc,
    ngx_uint_t state);
static void ngx_http_paygw_mysql_resume(ngx_http_paygw_mysql_conn_t *mc,
    int events);
static void ngx_http_paygw_mysql_op_timeout(ngx_event_t *ev);
static void ngx_http_paygw_mysql_cleanup(void *data);
static void ngx_http_paygw_mysql_finish(ngx_http_paygw_mysql_op_t *op);
static ngx_uint_t ngx_http_paygw_word(u_char c);


/* the caller's side */


ngx_http_paygw_mysql_op_t *
ngx_http_paygw_mysql_create(ngx_http_request_t *r)
{
    ngx_http_paygw_mysql_op_t  *op;

    op = ngx_pcalloc(r->pool, sizeof(ngx_http_paygw_mysql_op_t));
    if (op == NULL) {
        return NULL;
    }

    if (ngx_array_init(&op->stmts, r->pool, 4,
                       sizeof(ngx_http_paygw_sql_stmt_t))
        != NGX_OK)
    {
        return NULL;
    }

    op->call.kind = NGX_HTTP_PAYGW_CALL_MYSQL;
    op->pool = r->pool;

    return op;
}


ngx_http_paygw_sql_stmt_t *
ngx_http_paygw_mysql_add(ngx_http_paygw_mysql_op_t *op, const char *sql)
{
    ngx_http_paygw_sql_stmt_t  *stmt;

    stmt = ngx_array_push(&op->stmts);
    if (stmt == NULL) {
        return NULL;
    }

    ngx_memzero(stmt, sizeof(ngx_http_paygw_sql_stmt_t));

    stmt->sql.data = (u_char *) sql;
    stmt->sql.len = ngx_strlen(sql);
    stmt->expect_affected = NGX_HTTP_PAYGW_ANY_ROWS;

    if (ngx_array_init(&stmt->params, op->pool, 4,
                       sizeof(ngx_http_paygw_sql_param_t))
        != NGX_OK)
    {
        return NULL;
    }

    return stmt;
}


ngx_int_t
ngx_http_paygw_sql_int(ngx_http_paygw_mysql_op_t *op,
    ngx_http_paygw_sql_stmt_t *stmt, int64_t v)
{
    ngx_http_paygw_sql_param_t  *p;

    p = ngx_array_push(&stmt->params);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p->type = NGX_HTTP_PAYGW_SQL_INT;
    p->num = v;

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_sql_str(ngx_http_paygw_mysql_op_t *op,
    ngx_http_paygw_sql_stmt_t *stmt, ngx_str_t *v)
{
    ngx_http_paygw_sql_param_t  *p;

    p = ngx_array_push(&stmt->params);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p->type = NGX_HTTP_PAYGW_SQL_STR;
    p->str = *v;

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_sql_null(ngx_http_paygw_mysql_op_t *op,
    ngx_http_paygw_sql_stmt_t *stmt)
{
    ngx_http_paygw_sql_param_t  *p;

    p = ngx_array_push(&stmt->params);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p->type = NGX_HTTP_PAYGW_SQL_NULL;

    return NGX_OK;
}


ngx_str_t *
ngx_http_paygw_sql_value(ngx_http_paygw_sql_stmt_t *stmt, ngx_uint_t row,
    ngx_uint_t col)
{
    if (row >= stmt->nrows || col >= stmt->nfields) {
        return NULL;
    }

    return &stmt->values[row * stmt->nfields + col];
}


ngx_int_t
ngx_http_paygw_mysql_send(ngx_http_request_t *r, ngx_http_paygw_mysql_op_t *op)
{
    ngx_http_paygw_loc_conf_t  *plcf;

    if (op->stmts.nelts == 0) {
        return NGX_ERROR;
    }

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_paygw_module);

    op->conflict = 0;
    op->err_no = 0;
    op->retried = 0;

    /* more than one statement: one round trip (mysql_start_batch()) */
    op->batch = ngx_http_paygw_mysql_batchable(op);

    return ngx_http_paygw_call_start(r, &plcf->mysql_uri, &op->call);
}


/*
 * Why an op failed, for the log: the call's own error (connection, timeout)
 * or the server's errno and message.  The message quotes values ("Duplicate
 * entry 'B-1' for key ..."): every quoted run is blanked, so that no value
 * of a statement reaches the log.
 */

void
ngx_http_paygw_mysql_reason(ngx_http_paygw_mysql_op_t *op, ngx_str_t *reason)
{
    u_char      *p, *last, *end;
    ngx_uint_t   quoted;

    if (!op->call.ok) {
        if (op->call.error.len) {
            *reason = op->call.error;
        } else {
            ngx_str_set(reason, "no answer");
        }
        return;
    }

    if (op->err_no == 0) {
        ngx_str_set(reason, "no error");
        return;
    }

    reason->len = NGX_INT_T_LEN + sizeof("error : ") - 1 + op->err_msg.len;
    reason->data = ngx_pnalloc(op->pool, reason->len);
    if (reason->data == NULL) {
        ngx_str_set(reason, "server error");
        return;
    }

    p = ngx_sprintf(reason->data, "error %ud: ", op->err_no);
    end = op->err_msg.data + op->err_msg.len;
    quoted = 0;

    /* a quote opens after a non-word byte and closes before one */

    for (last = op->err_msg.data; last < end; last++) {

        if (*last == '\'' && !quoted
            && (last == op->err_msg.data || !ngx_http_paygw_word(last[-1])))
        {
            p = ngx_cpymem(p, "'?", 2);
            quoted = 1;
            continue;
        }

        if (*last == '\'' && quoted
            && (last + 1 == end || !ngx_http_paygw_word(last[1])))
        {
            *p++ = '\'';
            quoted = 0;
            continue;
        }

        if (!quoted) {
            *p++ = *last;
        }
    }

    reason->len = p - reason->data;
}


static ngx_uint_t
ngx_http_paygw_word(u_char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
}


static ngx_uint_t
ngx_http_paygw_mysql_batchable(ngx_http_paygw_mysql_op_t *op)
{
    ngx_uint_t                  i;
    ngx_http_paygw_sql_stmt_t  *stmt;

    if (!op->transaction && op->stmts.nelts < 2) {
        return 0;
    }

    /*
     * A batch is escaped before any of it runs, in the connection's
     * sql_mode as it was: a statement that may change it (SET SESSION
     * sql_mode = ...) must run before the next one is escaped.  SET
     * TRANSACTION and SET @user_variable change no escaping.
     */

    stmt = op->stmts.elts;

    for (i = 0; i < op->stmts.nelts; i++) {
        if (stmt[i].sql.len >= 4
            && ngx_strncasecmp(stmt[i].sql.data, (u_char *) "SET ", 4) == 0
            && stmt[i].sql.data[4] != '@'
            && (stmt[i].sql.len < 16
                || ngx_strncasecmp(stmt[i].sql.data + 4,
                                   (u_char *) "TRANSACTION ", 12)
                   != 0))
        {
            return 0;
        }
    }

    return 1;
}


/* the location handler: runs in the subrequest */


ngx_int_t
ngx_http_paygw_mysql_handler(ngx_http_request_t *r)
{
    ngx_http_cleanup_t          *cln;
    ngx_http_paygw_loc_conf_t   *plcf;
    ngx_http_paygw_mysql_op_t   *op;
    ngx_http_paygw_mysql_srv_t  *srv;

    op = ngx_http_paygw_call_ctx(r, NGX_HTTP_PAYGW_CALL_MYSQL);
    if (op == NULL) {
        return NGX_HTTP_NOT_FOUND;
    }

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_paygw_module);
    srv = plcf->mysql;

    if (!srv->initialized) {
        ngx_http_paygw_mysql_init_srv(srv);
    }

    /* the main request's cleanups also run when it is terminated */

    cln = ngx_http_cleanup_add(r->main, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_paygw_mysql_cleanup;
    cln->data = op;

    op->cleanup = cln;
    op->request = r;
    op->srv = srv;
    op->conn = NULL;

    op->timer.handler = ngx_http_paygw_mysql_op_timeout;
    op->timer.data = op;
    op->timer.log = r->connection->log;

    ngx_add_timer(&op->timer, srv->query_timeout);

    r->main->count++;

    ngx_http_paygw_mysql_dispatch(op);

    return NGX_DONE;
}


void
ngx_http_paygw_mysql_connect(ngx_http_paygw_mysql_op_t *op)
{
    int                           status;
    my_bool                       off;
    ngx_uint_t                    n, gen;
    unsigned int                  no_infile;
    ngx_http_paygw_mysql_srv_t   *srv;
    ngx_http_paygw_mysql_conn_t  *mc;
    ngx_http_paygw_mysql_node_t  *node;

    srv = op->srv;
    n = ngx_http_paygw_mysql_writer(srv, &gen);
    node = ngx_http_paygw_mysql_node(srv, n);

    mc = ngx_calloc(sizeof(ngx_http_paygw_mysql_conn_t),
                    op->request->connection->log);
    if (mc == NULL) {
        goto failed;
    }

    mc->mysql = mysql_init(NULL);
    if (mc->mysql == NULL) {
        ngx_free(mc);
        goto failed;
    }

    off = 0;
    no_infile = 0;

    if (mysql_options(mc->mysql, MYSQL_OPT_NONBLOCK, 0) != 0
        || mysql_options(mc->mysql, MYSQL_SET_CHARSET_NAME, "utf8mb4") != 0
        || mysql_options(mc->mysql, MYSQL_OPT_RECONNECT, &off) != 0
        || mysql_options(mc->mysql, MYSQL_OPT_LOCAL_INFILE, &no_infile) != 0
        || mysql_options(mc->mysql, MYSQL_INIT_COMMAND,
                         "SET time_zone = '+00:00'")
           != 0)
    {
        mysql_close(mc->mysql);
        ngx_free(mc);
        goto failed;
    }

    /*
     * On a Galera node every read waits until the node applied what the
     * cluster committed before it (wsrep_sync_wait = 1: SELECT, SHOW and
     * START TRANSACTION): a read after a failover, or after a write that
     * another nginx sent to another node, sees that write.
     */

    if (ngx_http_paygw_mysql_galera(srv, n)) {
        if (mysql_options(mc->mysql, MYSQL_INIT_COMMAND,
                          "SET SESSION wsrep_sync_wait = 1")
            != 0)
        {
            mysql_close(mc->mysql);
            ngx_free(mc);
            goto failed;
        }

        mc->galera = 1;
    }

    mc->srv = srv;
    mc->node = n;
    mc->gen = gen;
    srv->nconns++;

    mc->connect_timer.handler = ngx_http_paygw_mysql_connect_timeout;
    mc->connect_timer.data = mc;
    mc->connect_timer.log = ngx_cycle->log;

    mc->lib_timer.handler = ngx_http_paygw_mysql_lib_timeout;
    mc->lib_timer.data = mc;
    mc->lib_timer.log = ngx_cycle->log;

    ngx_http_paygw_mysql_attach(mc, op);

    op->step = 0;
    op->in_transaction = 0;
    op->guard = 0;

    mc->state = NGX_HTTP_PAYGW_MYSQL_CONNECT;
    ngx_add_timer(&mc->connect_timer, srv->connect_timeout);

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, op->request->connection->log, 0,
                   "paygw mysql: connecting to %V:%ui (writer change %ui%s)",
                   &node->host, node->port, gen,
                   mc->galera ? ", Galera" : "");

    /*
     * CLIENT_FOUND_ROWS: affected rows count the rows a WHERE matched;
     * CLIENT_MULTI_STATEMENTS: an op's statements go in one round trip
     * (values are always escaped: ngx_http_paygw_sql_render())
     */

    status = mysql_real_connect_start(&mc->ret_mysql, mc->mysql,
                                      (char *) node->host.data,
                                      (char *) srv->user.data,
                                      (char *) srv->password.data,
                                      (char *) srv->database.data,
                                      (unsigned int) node->port, NULL,
                                      CLIENT_FOUND_ROWS
                                      |CLIENT_MULTI_STATEMENTS);

    ngx_http_paygw_mysql_progress(mc, status);
    return;

failed:

    ngx_http_paygw_call_fail(&op->call, op->pool,
                             NGX_HTTP_INTERNAL_SERVER_ERROR,
                             "mysql: out of memory");
    ngx_http_paygw_mysql_finish(op);
}


static void
ngx_http_paygw_mysql_attach(ngx_http_paygw_mysql_conn_t *mc,
    ngx_http_paygw_mysql_op_t *op)
{
    mc->op = op;
    op->conn = mc;
}


/* an op on a connection from the pool: straight to its statements */

void
ngx_http_paygw_mysql_run(ngx_http_paygw_mysql_conn_t *mc,
    ngx_http_paygw_mysql_op_t *op)
{
    ngx_http_paygw_mysql_attach(mc, op);
    mc->reused = 1;

    op->step = 0;
    op->in_transaction = 0;
    op->guard = 0;

    ngx_http_paygw_mysql_progress(mc, ngx_http_paygw_mysql_start_step(mc));
}


/* the state machine */


static void
ngx_http_paygw_mysql_progress(ngx_http_paygw_mysql_conn_t *mc, int status)
{
    while (status == 0) {
        status = ngx_http_paygw_mysql_next(mc);
    }

    if (status == NGX_HTTP_PAYGW_MYSQL_STOP) {
        return;
    }

    if (ngx_http_paygw_mysql_wait(mc, status) != NGX_OK) {
        (void) ngx_http_paygw_mysql_broken(mc, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                           "cannot watch the connection");
    }
}


static int
ngx_http_paygw_mysql_next(ngx_http_paygw_mysql_conn_t *mc)
{
    /* the library call in progress has just completed */

    switch (mc->state) {

    case NGX_HTTP_PAYGW_MYSQL_CONNECT:
        return ngx_http_paygw_mysql_connected(mc);

    case NGX_HTTP_PAYGW_MYSQL_QUERY:
        return ngx_http_paygw_mysql_queried(mc);

    case NGX_HTTP_PAYGW_MYSQL_NEXT:
        return ngx_http_paygw_mysql_advanced(mc);

    case NGX_HTTP_PAYGW_MYSQL_STORE:
        return ngx_http_paygw_mysql_stored(mc);

    case NGX_HTTP_PAYGW_MYSQL_ROLLBACK:
        return ngx_http_paygw_mysql_rolled_back(mc);
    }

    return NGX_HTTP_PAYGW_MYSQL_STOP;
}


static int
ngx_http_paygw_mysql_connected(ngx_http_paygw_mysql_conn_t *mc)
{
    if (mc->connect_timer.timer_set) {
        ngx_del_timer(&mc->connect_timer);
    }

    if (mc->ret_mysql == NULL) {
        ngx_http_paygw_mysql_failover(mc, NGX_HTTP_PAYGW_NODE_UNREACHABLE);
        return ngx_http_paygw_mysql_broken(mc, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "connect");
    }

    if (mc->c == NULL && ngx_http_paygw_mysql_watch(mc) != NGX_OK) {
        return ngx_http_paygw_mysql_broken(mc, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                           "cannot watch the connection");
    }

    return ngx_http_paygw_mysql_start_step(mc);
}


static int
ngx_http_paygw_mysql_start_step(ngx_http_paygw_mysql_conn_t *mc)
{
    ngx_str_t                   sql;
    ngx_uint_t                  n, tx;
    ngx_http_paygw_mysql_op_t  *op;
    ngx_http_paygw_sql_stmt_t  *stmt;

    op = mc->op;
    tx = op->transaction ? 1 : 0;
    n = op->stmts.nelts;

    /* steps (results): [START TRANSACTION] statements... [COMMIT] */

    if (op->step == n + 2 * tx) {
        op->call.ok = 1;

        if (op->committed && !op->conflict && op->err_no == 0) {
            op->committed(op);
        }

        ngx_http_paygw_mysql_release(mc);
        ngx_http_paygw_mysql_finish(op);
        return NGX_HTTP_PAYGW_MYSQL_STOP;
    }

    if (op->batch) {
        return ngx_http_paygw_mysql_start_batch(mc);
    }

    /* one statement per round trip */

    if (tx && op->step == 0) {
        ngx_str_set(&sql, "START TRANSACTION");

    } else if (tx && op->step == n + 1) {
        ngx_str_set(&sql, "COMMIT");

    } else {
        stmt = (ngx_http_paygw_sql_stmt_t *) op->stmts.elts + op->step - tx;

        if (ngx_http_paygw_sql_render(mc->mysql, op->pool, stmt, &sql)
            != NGX_OK)
        {
            ngx_log_error(NGX_LOG_ALERT, op->request->connection->log, 0,
                          "paygw mysql: statement %ui does not match its "
                          "parameters", op->step - tx);
            op->failed = op->step - tx;
            ngx_http_paygw_call_fail(&op->call, op->pool,
                                     NGX_HTTP_INTERNAL_SERVER_ERROR,
                                     "statement does not match its "
                                     "parameters");
            return ngx_http_paygw_mysql_abort(mc);
        }
    }

    mc->state = NGX_HTTP_PAYGW_MYSQL_QUERY;

    return ngx_http_paygw_mysql_query(mc, (char *) sql.data, sql.len);
}


static int
ngx_http_paygw_mysql_start_batch(ngx_http_paygw_mysql_conn_t *mc)
{
    ngx_int_t                   rc;
    ngx_str_t                   sql;
    ngx_uint_t                  failed;
    ngx_http_paygw_mysql_op_t  *op;

    op = mc->op;

    /*
     * The batch was sent: its next result (a statement's or a guard's).
     * The server runs all of it whether or not we read: a failure of
     * ours midway (out of memory for a result) is reported as a failure
     * though the batch may have committed; callers treat a failed write
     * as unknown (a payment stays "processing" until resolved).
     */

    if (op->step > 0 || op->guard) {
        mc->state = NGX_HTTP_PAYGW_MYSQL_NEXT;
        return mysql_next_result_start(&mc->ret_int, mc->mysql);
    }

    failed = 0;

    rc = ngx_http_paygw_sql_render_batch(mc->mysql, op->pool, &op->stmts,
                                         op->transaction, &failed, &sql);

    if (rc != NGX_OK) {
        if (rc == NGX_DECLINED) {
            ngx_log_error(NGX_LOG_ALERT, op->request->connection->log, 0,
                          "paygw mysql: statement %ui does not match its "
                          "parameters", failed);
        }

        op->failed = failed;
        ngx_http_paygw_call_fail(&op->call, op->pool,
                                 NGX_HTTP_INTERNAL_SERVER_ERROR,
                                 rc == NGX_DECLINED
                                 ? "statement does not match its parameters"
                                 : "out of memory for a statement");
        return ngx_http_paygw_mysql_abort(mc);
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, op->request->connection->log, 0,
                   "paygw mysql: %ui statements in one batch%s",
                   op->stmts.nelts, op->transaction ? ", a transaction" : "");

    mc->state = NGX_HTTP_PAYGW_MYSQL_QUERY;

    return ngx_http_paygw_mysql_query(mc, (char *) sql.data, sql.len);
}


static int
ngx_http_paygw_mysql_advanced(ngx_http_paygw_mysql_conn_t *mc)
{
    /* mysql_next_result(): 0 the next result is there, -1 none is left */

    if (mc->ret_int == -1) {
        return ngx_http_paygw_mysql_broken(mc, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                           "batch (it ended early)");
    }

    return ngx_http_paygw_mysql_queried(mc);
}


static int
ngx_http_paygw_mysql_queried(ngx_http_paygw_mysql_conn_t *mc)
{
    ngx_uint_t                  tx;
    ngx_http_paygw_mysql_op_t  *op;
    ngx_http_paygw_sql_stmt_t  *stmt;

    op = mc->op;
    tx = op->transaction ? 1 : 0;

    if (mc->ret_int != 0) {
        return ngx_http_paygw_mysql_failed(mc);
    }

    if (op->guard) {
        op->guard = 0;

        if (op->conflict) {
            /* cannot happen: the guard let the rest of the batch run */
            ngx_log_error(NGX_LOG_ALERT, op->request->connection->log, 0,
                          "paygw mysql: statement %ui affected other rows "
                          "than expected but its guard passed", op->failed);
            return ngx_http_paygw_mysql_broken(mc,
                                               NGX_HTTP_INTERNAL_SERVER_ERROR,
                                               "guard");
        }

        op->step++;
        return ngx_http_paygw_mysql_start_step(mc);
    }

    if (tx && op->step == 0) {
        op->in_transaction = 1;
        op->step++;
        return ngx_http_paygw_mysql_start_step(mc);
    }

    if (tx && op->step == op->stmts.nelts + 1) {
        op->in_transaction = 0;
        op->step++;
        return ngx_http_paygw_mysql_start_step(mc);
    }

    if (mysql_field_count(mc->mysql) > 0) {
        mc->state = NGX_HTTP_PAYGW_MYSQL_STORE;
        return mysql_store_result_start(&mc->ret_res, mc->mysql);
    }

    stmt = (ngx_http_paygw_sql_stmt_t *) op->stmts.elts + op->step - tx;

    stmt->affected = mysql_affected_rows(mc->mysql);
    stmt->insert_id = mysql_insert_id(mc->mysql);

    if (stmt->expect_affected != NGX_HTTP_PAYGW_ANY_ROWS
        && stmt->affected != (uint64_t) stmt->expect_affected)
    {
        /* a conditional write lost: undo everything before it */

        op->conflict = 1;
        op->failed = op->step - tx;
        op->call.ok = 1;

        if (op->batch) {
            /* its guard's error comes next; then nothing more runs */
            op->guard = 1;
            return ngx_http_paygw_mysql_start_step(mc);
        }

        return ngx_http_paygw_mysql_abort(mc);
    }

    if (op->batch && stmt->expect_affected != NGX_HTTP_PAYGW_ANY_ROWS) {
        op->guard = 1;
        return ngx_http_paygw_mysql_start_step(mc);
    }

    op->step++;

    return ngx_http_paygw_mysql_start_step(mc);
}


static int
ngx_http_paygw_mysql_stored(ngx_http_paygw_mysql_conn_t *mc)
{
    ngx_int_t                   rc;
    ngx_uint_t                  tx;
    ngx_http_paygw_mysql_op_t  *op;
    ngx_http_paygw_sql_stmt_t  *stmt;

    op = mc->op;
    tx = op->transaction ? 1 : 0;

    if (mc->ret_res == NULL) {
        return ngx_http_paygw_mysql_failed(mc);
    }

    stmt = (ngx_http_paygw_sql_stmt_t *) op->stmts.elts + op->step - tx;

    rc = ngx_http_paygw_sql_store_result(mc->ret_res, op->pool, stmt);

    mysql_free_result(mc->ret_res);
    mc->ret_res = NULL;

    if (rc != NGX_OK) {
        op->failed = op->step - tx;
        ngx_http_paygw_call_fail(&op->call, op->pool,
                                 NGX_HTTP_INTERNAL_SERVER_ERROR,
                                 "out of memory for a result");
        return ngx_http_paygw_mysql_abort(mc);
    }

    op->step++;

    return ngx_http_paygw_mysql_start_step(mc);
}


static int
ngx_http_paygw_mysql_failed(ngx_http_paygw_mysql_conn_t *mc)
{
    size_t                       len;
    const char                  *msg;
    unsigned int                 err;
    ngx_uint_t                   tx;
    ngx_http_paygw_mysql_op_t   *op;

    op = mc->op;
    tx = op->transaction ? 1 : 0;
    err = mysql_errno(mc->mysql);

    op->guard = 0;

    if (op->conflict && err < CR_MIN_ERROR) {
        /* the guard of a write that lost stopped the batch: roll back */
        return ngx_http_paygw_mysql_abort(mc);
    }

    if (err >= CR_MIN_ERROR) {

        /*
         * The connection broke.  A pooled connection that the server
         * dropped while idle fails on its very first statement; when
         * that statement changes nothing (START TRANSACTION, or a
         * read-only op) it is safe to run the op again on another one.
         */

        if (mc->reused && op->step == 0 && !op->retried
            && (tx || op->read_only)
            && (err == CR_SERVER_GONE_ERROR || err == CR_SERVER_LOST))
        {
            ngx_log_error(NGX_LOG_INFO, op->request->connection->log, 0,
                          "paygw mysql: pooled connection was lost (%s), "
                          "retrying once", mysql_error(mc->mysql));

            return ngx_http_paygw_mysql_run_again(mc);
        }

        return ngx_http_paygw_mysql_broken(mc, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "query");
    }

    /*
     * A Galera node out of the primary component (or not yet synced)
     * refuses every statement: the next node takes the writes.  An op
     * refused on its first statement changed nothing and runs there.
     */

    if (err == NGX_HTTP_PAYGW_ER_WSREP_NOT_READY) {
        ngx_http_paygw_mysql_failover(mc, NGX_HTTP_PAYGW_NODE_NOT_SYNCED);

        if (op->step == 0 && !op->retried) {
            return ngx_http_paygw_mysql_run_again(mc);
        }

        return ngx_http_paygw_mysql_broken(mc, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "query");
    }

    /*
     * A Galera node that lost the primary component while committing
     * ("Error while appending streaming replication fragment ... Not
     * connected to Primary Component") rolled the transaction back; it
     * is not run again (a commit is never assumed either way): the
     * request answers 503 and its retry meets the durable unique keys.
     */

    if (err == NGX_HTTP_PAYGW_ER_DURING_COMMIT) {
        ngx_http_paygw_mysql_failover(mc, NGX_HTTP_PAYGW_NODE_NOT_SYNCED);

        return ngx_http_paygw_mysql_broken(mc, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "query");
    }

    /*
     * A deadlock victim's transaction was rolled back whole by the
     * server: running it again from the start is what InnoDB expects
     * (and what a restartable op without a transaction allows).
     */

    if ((err == NGX_HTTP_PAYGW_ER_LOCK_DEADLOCK
         || err == NGX_HTTP_PAYGW_ER_LOCK_WAIT_TIMEOUT)
        && (tx || op->restartable) && op->deadlocks < 3)
    {
        ngx_log_error(NGX_LOG_INFO, op->request->connection->log, 0,
                      "paygw mysql: %s, running the transaction again",
                      mysql_error(mc->mysql));

        op->deadlocks++;
        op->step = 0;

        if (err == NGX_HTTP_PAYGW_ER_LOCK_WAIT_TIMEOUT && op->in_transaction)
        {
            /* a lock wait timeout rolls back the statement only */
            op->in_transaction = 0;
            mc->state = NGX_HTTP_PAYGW_MYSQL_ROLLBACK;
            op->rerun = 1;
            return ngx_http_paygw_mysql_query(mc, "ROLLBACK",
                                              sizeof("ROLLBACK") - 1);
        }

        op->in_transaction = 0;
        return ngx_http_paygw_mysql_start_step(mc);
    }

    /* the server refused the statement; the connection is fine */

    op->call.ok = 1;
    op->err_no = err;
    op->failed = op->step > tx ? op->step - tx : 0;

    msg = mysql_error(mc->mysql);
    len = ngx_strlen(msg);

    op->err_msg.data = ngx_pnalloc(op->pool, len);
    if (op->err_msg.data) {
        ngx_memcpy(op->err_msg.data, msg, len);
        op->err_msg.len = len;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, op->request->connection->log, 0,
                   "paygw mysql: error %ud: %V", err, &op->err_msg);

    return ngx_http_paygw_mysql_abort(mc);
}


/*
 * The op changed nothing on this connection: it runs once more on
 * another (a pooled connection that was lost, a Galera node that left).
 */

static int
ngx_http_paygw_mysql_run_again(ngx_http_paygw_mysql_conn_t *mc)
{
    ngx_http_paygw_mysql_op_t  *op;

    op = mc->op;

    op->retried = 1;
    mc->op = NULL;
    op->conn = NULL;
    ngx_http_paygw_mysql_close(mc);
    ngx_http_paygw_mysql_dispatch(op);

    return NGX_HTTP_PAYGW_MYSQL_STOP;
}


static int
ngx_http_paygw_mysql_abort(ngx_http_paygw_mysql_conn_t *mc)
{
    ngx_http_paygw_mysql_op_t  *op;

    op = mc->op;

    if (op->in_transaction) {
        op->in_transaction = 0;
        mc->state = NGX_HTTP_PAYGW_MYSQL_ROLLBACK;
        return ngx_http_paygw_mysql_query(mc, "ROLLBACK",
                                          sizeof("ROLLBACK") - 1);
    }

    ngx_http_paygw_mysql_release(mc);
    ngx_http_paygw_mysql_finish(op);

    return NGX_HTTP_PAYGW_MYSQL_STOP;
}


static int
ngx_http_paygw_mysql_rolled_back(ngx_http_paygw_mysql_conn_t *mc)
{
    ngx_http_paygw_mysql_op_t  *op;

    op = mc->op;

    if (op->rerun && mc->ret_int == 0) {
        op->rerun = 0;
        return ngx_http_paygw_mysql_start_step(mc);
    }

    if (mc->ret_int != 0) {
        /* the outcome recorded before stands; the connection does not */
        mc->op = NULL;
        op->conn = NULL;
        ngx_http_paygw_mysql_close(mc);

    } else {
        ngx_http_paygw_mysql_release(mc);
    }

    ngx_http_paygw_mysql_finish(op);

    return NGX_HTTP_PAYGW_MYSQL_STOP;
}


static int
ngx_http_paygw_mysql_broken(ngx_http_paygw_mysql_conn_t *mc,
    ngx_uint_t status, const char *what)
{
    ngx_http_paygw_mysql_op_t    *op;
    ngx_http_paygw_mysql_node_t  *node;

    op = mc->op;
    node = ngx_http_paygw_mysql_node(mc->srv, mc->node);

    ngx_log_error(NGX_LOG_ERR, op->request->connection->log, 0,
                  "paygw mysql %V:%ui %s failed: %s",
                  &node->host, node->port, what, mysql_error(mc->mysql));

    ngx_http_paygw_call_fail(&op->call, op->pool, status,
                             "mysql %s failed: %s", what,
                             mysql_error(mc->mysql));

    mc->op = NULL;
    op->conn = NULL;
    ngx_http_paygw_mysql_close(mc);

    ngx_http_paygw_mysql_finish(op);

    return NGX_HTTP_PAYGW_MYSQL_STOP;
}


static int
ngx_http_paygw_mysql_query(ngx_http_paygw_mysql_conn_t *mc, const char *q,
    unsigned long len)
{
    /* every query (or batch) sent is one round trip to count */

    ngx_http_paygw_m_round_trip(mc->op->request,
                                NGX_HTTP_PAYGW_M_BACKEND_MYSQL);

    return mysql_real_query_start(&mc->ret_int, mc->mysql, q, len);
}


/* events */


static ngx_int_t
ngx_http_paygw_mysql_wait(ngx_http_paygw_mysql_conn_t *mc, int status)
{
    mc->wait = status;

    if (status & MYSQL_WAIT_TIMEOUT) {
        ngx_add_timer(&mc->lib_timer, mysql_get_timeout_value_ms(mc->mysql));
    }

    if (!(status & (MYSQL_WAIT_READ|MYSQL_WAIT_WRITE))) {
        return NGX_OK;
    }

    if (mc->c == NULL && ngx_http_paygw_mysql_watch(mc) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_add_conn) {
        /* edge-triggered and registered once: nothing to change */
        return NGX_OK;
    }

    if ((status & MYSQL_WAIT_READ)
        && ngx_handle_read_event(mc->c->read, 0) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if ((status & MYSQL_WAIT_WRITE)
        && ngx_handle_write_event(mc->c->write, 0) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_mysql_watch(ngx_http_paygw_mysql_conn_t *mc)
{
    return ngx_http_paygw_mysql_socket(mc->mysql, mc, &mc->c,
                                       ngx_http_paygw_mysql_read_handler,
                                       ngx_http_paygw_mysql_write_handler);
}


/*
 * Connector/C's socket as an nginx connection, so that its readiness
 * comes through nginx's event loop; *cp is set before the connection is
 * added, so the caller's close finds it even when the add fails.
 * Shared by the pool's connections and the health check's probes.
 */

ngx_int_t
ngx_http_paygw_mysql_socket(MYSQL *mysql, void *data, ngx_connection_t **cp,
    ngx_event_handler_pt read, ngx_event_handler_pt write)
{
    ngx_socket_t       fd;
    ngx_connection_t  *c;

    fd = (ngx_socket_t) mysql_get_socket(mysql);

    if (fd == (ngx_socket_t) -1) {
        return NGX_ERROR;
    }

    c = ngx_get_connection(fd, ngx_cycle->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = data;
    c->log = ngx_cycle->log;
    c->read->log = c->log;
    c->write->log = c->log;
    c->read->handler = read;
    c->write->handler = write;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);

    *cp = c;

    if (ngx_add_conn && ngx_add_conn(c) == NGX_ERROR) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Forget the nginx side of Connector/C's socket before mysql_close():
 * the library closes the socket itself.  mysql_close() is a blocking
 * call: it writes COM_QUIT and may wait on the socket, so the socket is
 * shut down first, whatever the state, and it cannot wait in a worker
 * (the server sees the connection end without COM_QUIT: "Aborted
 * connection" in its log, nothing more).
 */

void
ngx_http_paygw_mysql_unwatch(ngx_connection_t *c)
{
    ngx_socket_t  fd;

    fd = c->fd;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (ngx_del_conn) {
        ngx_del_conn(c, NGX_CLOSE_EVENT);

    } else {
        if (c->read->active || c->read->disabled) {
            ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
        }

        if (c->write->active || c->write->disabled) {
            ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
        }
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    c->read->closed = 1;
    c->write->closed = 1;

    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;

    (void) shutdown(fd, SHUT_RDWR);
}


static void
ngx_http_paygw_mysql_read_handler(ngx_event_t *rev)
{
    ngx_connection_t             *c;
    ngx_http_paygw_mysql_conn_t  *mc;

    c = rev->data;
    mc = c->data;

    if (mc->op == NULL) {
        ngx_http_paygw_mysql_idle_handler(mc, rev);
        return;
    }

    if (mc->wait & MYSQL_WAIT_READ) {
        ngx_http_paygw_mysql_resume(mc, MYSQL_WAIT_READ);
    }
}


static void
ngx_http_paygw_mysql_write_handler(ngx_event_t *wev)
{
    ngx_connection_t             *c;
    ngx_http_paygw_mysql_conn_t  *mc;

    c = wev->data;
    mc = c->data;

    if (mc->op && (mc->wait & MYSQL_WAIT_WRITE)) {
        ngx_http_paygw_mysql_resume(mc, MYSQL_WAIT_WRITE);
    }
}


static void
ngx_http_paygw_mysql_lib_timeout(ngx_event_t *ev)
{
    ngx_http_paygw_mysql_conn_t *mc = ev->data;

    if (mc->op && (mc->wait & MYSQL_WAIT_TIMEOUT)) {
        ngx_http_paygw_mysql_resume(mc, MYSQL_WAIT_TIMEOUT);
    }
}


/*
 * Single writer: every connection of every worker goes to the node the
 * shared state names (ngx_http_paygw_mysql_ha.c).  A node that cannot
 * be connected to, or says it is not part of the cluster (1047), is
 * marked so at once, without waiting for the next check: if it was the
 * writer, the first healthy node takes over for every worker.
 * Connections left to the old writer are not used again; a transaction
 * that broke is never assumed committed: the op fails and the durable
 * unique keys decide when it is sent again.
 */

static void
ngx_http_paygw_mysql_failover(ngx_http_paygw_mysql_conn_t *mc,
    ngx_uint_t state)
{
    ngx_http_paygw_mysql_srv_t  *srv;

    srv = mc->srv;

    if (srv->nodes->nelts < 2) {
        return;
    }

    ngx_http_paygw_mysql_set_state(srv, mc->node, state, ngx_cycle->log);
    ngx_http_paygw_mysql_elect(srv, ngx_cycle->log);
}


static void
ngx_http_paygw_mysql_connect_timeout(ngx_event_t *ev)
{
    ngx_connection_t             *c;
    ngx_http_paygw_mysql_conn_t  *mc;

    mc = ev->data;

    if (mc->op == NULL) {
        return;
    }

    c = mc->op->request->connection;

    ngx_http_paygw_mysql_failover(mc, NGX_HTTP_PAYGW_NODE_UNREACHABLE);

    (void) ngx_http_paygw_mysql_broken(mc, NGX_HTTP_GATEWAY_TIME_OUT,
                                       "connect (timed out)");

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_paygw_mysql_resume(ngx_http_paygw_mysql_conn_t *mc, int events)
{
    int                result;
    ngx_connection_t  *c;

    /* the client connection whose requests our subrequest belongs to */

    c = mc->op->request->connection;

    mc->wait = 0;

    if (mc->lib_timer.timer_set) {
        ngx_del_timer(&mc->lib_timer);
    }

    switch (mc->state) {

    case NGX_HTTP_PAYGW_MYSQL_CONNECT:
        result = mysql_real_connect_cont(&mc->ret_mysql, mc->mysql, events);
        break;

    case NGX_HTTP_PAYGW_MYSQL_QUERY:
    case NGX_HTTP_PAYGW_MYSQL_ROLLBACK:
        result = mysql_real_query_cont(&mc->ret_int, mc->mysql, events);
        break;

    case NGX_HTTP_PAYGW_MYSQL_STORE:
        result = mysql_store_result_cont(&mc->ret_res, mc->mysql, events);
        break;

    case NGX_HTTP_PAYGW_MYSQL_NEXT:
        result = mysql_next_result_cont(&mc->ret_int, mc->mysql, events);
        break;

    default:
        return;
    }

    ngx_http_paygw_mysql_progress(mc, result);

    ngx_http_run_posted_requests(c);
}


void
ngx_http_paygw_mysql_close(ngx_http_paygw_mysql_conn_t *mc)
{
    ngx_http_paygw_mysql_srv_t  *srv;

    srv = mc->srv;

    if (mc->state == NGX_HTTP_PAYGW_MYSQL_IDLE) {
        ngx_queue_remove(&mc->queue);
    }

    if (mc->connect_timer.timer_set) {
        ngx_del_timer(&mc->connect_timer);
    }

    if (mc->lib_timer.timer_set) {
        ngx_del_timer(&mc->lib_timer);
    }

    if (mc->c) {
        ngx_http_paygw_mysql_unwatch(mc->c);
    }

    mysql_close(mc->mysql);
    ngx_free(mc);

    srv->nconns--;

    if (!ngx_queue_empty(&srv->waiting) && srv->wake) {
        ngx_post_event(srv->wake, &ngx_posted_events);
    }
}


/* the op's own end */


static void
ngx_http_paygw_mysql_op_timeout(ngx_event_t *ev)
{
    ngx_uint_t                    n, gen;
    ngx_connection_t             *c;
    ngx_http_paygw_mysql_op_t    *op;
    ngx_http_paygw_mysql_conn_t  *mc;
    ngx_http_paygw_mysql_node_t  *node;

    op = ev->data;
    c = op->request->connection;
    mc = op->conn;

    n = mc ? mc->node : ngx_http_paygw_mysql_writer(op->srv, &gen);
    node = ngx_http_paygw_mysql_node(op->srv, n);

    ngx_log_error(NGX_LOG_ERR, c->log, 0,
                  "paygw mysql %V:%ui: timed out after %M ms%s",
                  &node->host, node->port, op->srv->query_timeout,
                  mc ? "" : " waiting for a free connection");

    ngx_http_paygw_call_fail(&op->call, op->pool, NGX_HTTP_GATEWAY_TIME_OUT,
                             "mysql timed out");

    if (mc) {
        /* a started operation cannot be abandoned: close the connection */
        mc->op = NULL;
        op->conn = NULL;
        ngx_http_paygw_mysql_close(mc);
    }

    ngx_http_paygw_mysql_finish(op);

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_paygw_mysql_cleanup(void *data)
{
    ngx_http_paygw_mysql_op_t *op = data;

    ngx_http_paygw_mysql_conn_t  *mc;

    /* the request went away while the op was still running */

    if (op->request == NULL) {
        return;
    }

    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }

    if (op->queued) {
        ngx_queue_remove(&op->queue);
        op->queued = 0;
    }

    mc = op->conn;

    if (mc) {
        mc->op = NULL;
        op->conn = NULL;
        ngx_http_paygw_mysql_close(mc);
    }

    op->request = NULL;
}


static void
ngx_http_paygw_mysql_finish(ngx_http_paygw_mysql_op_t *op)
{
    ngx_http_request_t  *r;

    r = op->request;

    if (r == NULL) {
        return;
    }

    if (op->timer.timer_set) {
        ngx_del_timer(&op->timer);
    }

    if (op->queued) {
        ngx_queue_remove(&op->queue);
        op->queued = 0;
    }

    op->conn = NULL;
    op->request = NULL;

    if (op->cleanup) {
        op->cleanup->handler = NULL;
    }

    r->headers_out.status = op->call.ok ? NGX_HTTP_OK : op->call.status;

    ngx_http_finalize_request(r, NGX_OK);
}


