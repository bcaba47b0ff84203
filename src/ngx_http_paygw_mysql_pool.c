
/*
 * paygw: the per-worker pool of MySQL connections, in the way of
 * ngx_http_upstream_keepalive_module and ngx_postgres's keepalive: each
 * paygw_mysql server has at most max_conns connections per worker, the
 * idle ones (most recently used first) and a queue of ops waiting for
 * one.  An idle connection is closed on EOF, after idle_timeout, and when
 * the worker exits; while nginx is exiting none is kept.
 */


#include "ngx_http_paygw_mysql_conn.h"


typedef struct {
    ngx_event_t                   wake;
} ngx_http_paygw_mysql_worker_t;


static ngx_http_paygw_mysql_conn_t *ngx_http_paygw_mysql_get_idle(
    ngx_http_paygw_mysql_srv_t *srv);
static ngx_int_t ngx_http_paygw_mysql_alive(ngx_connection_t *c);
static ngx_uint_t ngx_http_paygw_mysql_retired(
    ngx_http_paygw_mysql_conn_t *mc);
static void ngx_http_paygw_mysql_wake(ngx_event_t *ev);


void
ngx_http_paygw_mysql_init_srv(ngx_http_paygw_mysql_srv_t *srv)
{
    ngx_http_paygw_mysql_worker_t  *w;

    /* configuration memory is private to each worker after fork */

    ngx_queue_init(&srv->idle);
    ngx_queue_init(&srv->waiting);
    srv->nconns = 0;
    srv->initialized = 1;

    w = ngx_pcalloc(ngx_cycle->pool, sizeof(ngx_http_paygw_mysql_worker_t));
    if (w == NULL) {
        return;
    }

    w->wake.handler = ngx_http_paygw_mysql_wake;
    w->wake.data = srv;
    w->wake.log = ngx_cycle->log;

    srv->wake = &w->wake;
}


void
ngx_http_paygw_mysql_dispatch(ngx_http_paygw_mysql_op_t *op)
{
    ngx_http_paygw_mysql_conn_t  *mc;
    ngx_http_paygw_mysql_srv_t   *srv;

    srv = op->srv;

    mc = ngx_http_paygw_mysql_get_idle(srv);

    if (mc) {
        ngx_http_paygw_mysql_run(mc, op);
        return;
    }

    if (srv->nconns < srv->max_conns) {
        ngx_http_paygw_mysql_connect(op);
        return;
    }

    /* the pool is busy: wait in line, bounded by the op's timer */

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, op->request->connection->log, 0,
                   "paygw mysql: all %ui connections busy, waiting",
                   srv->max_conns);

    ngx_queue_insert_tail(&srv->waiting, &op->queue);
    op->queued = 1;
}


static ngx_http_paygw_mysql_conn_t *
ngx_http_paygw_mysql_get_idle(ngx_http_paygw_mysql_srv_t *srv)
{
    ngx_queue_t                  *q;
    ngx_http_paygw_mysql_conn_t  *mc;

    while (!ngx_queue_empty(&srv->idle)) {

        /* most recently used first: the rest may time out and go */

        q = ngx_queue_head(&srv->idle);
        ngx_queue_remove(q);

        mc = ngx_queue_data(q, ngx_http_paygw_mysql_conn_t, queue);

        mc->state = NGX_HTTP_PAYGW_MYSQL_FREE;
        mc->c->idle = 0;

        if (mc->c->read->timer_set) {
            ngx_del_timer(mc->c->read);
        }

        /*
         * The server may have gone away since.  A connection idle for a
         * moment is probed (one non-blocking peek); a hot one is not: the
         * idle handler would have seen its EOF, and a transaction that
         * still meets a lost connection is retried once.
         */

        if ((ngx_current_msec - mc->idle_since > 1000
             && ngx_http_paygw_mysql_alive(mc->c) != NGX_OK)
            || ngx_http_paygw_mysql_retired(mc))
        {

            ngx_http_paygw_mysql_close(mc);
            continue;
        }

        return mc;
    }

    return NULL;
}


/*
 * After the writer changed, every idle connection to the old one goes,
 * not only the ones the next ops pick up: called by each worker's check
 * timer, so a worker with no traffic keeps nothing open there either.
 */

void
ngx_http_paygw_mysql_retire_idle(ngx_http_paygw_mysql_srv_t *srv)
{
    ngx_queue_t                  *q, *next;
    ngx_http_paygw_mysql_conn_t  *mc;

    if (!srv->initialized) {
        return;
    }

    for (q = ngx_queue_head(&srv->idle);
         q != ngx_queue_sentinel(&srv->idle);
         q = next)
    {
        next = ngx_queue_next(q);
        mc = ngx_queue_data(q, ngx_http_paygw_mysql_conn_t, queue);

        if (ngx_http_paygw_mysql_retired(mc)) {
            ngx_http_paygw_mysql_close(mc);
        }
    }
}


void
ngx_http_paygw_mysql_release(ngx_http_paygw_mysql_conn_t *mc)
{
    ngx_http_paygw_mysql_srv_t  *srv;

    srv = mc->srv;

    if (mc->op) {
        mc->op->conn = NULL;
        mc->op = NULL;
    }

    if (ngx_exiting || ngx_terminate || mc->c == NULL
        || ngx_http_paygw_mysql_retired(mc))
    {
        ngx_http_paygw_mysql_close(mc);
        return;
    }

    mc->state = NGX_HTTP_PAYGW_MYSQL_IDLE;
    mc->reused = 1;
    mc->idle_since = ngx_current_msec;

    ngx_queue_insert_head(&srv->idle, &mc->queue);

    /* idle: closed on EOF, on timeout, or when nginx shuts down */

    mc->c->idle = 1;
    ngx_add_timer(mc->c->read, srv->idle_timeout);

    if (!ngx_queue_empty(&srv->waiting) && srv->wake) {
        ngx_post_event(srv->wake, &ngx_posted_events);
    }
}


void
ngx_http_paygw_mysql_idle_handler(ngx_http_paygw_mysql_conn_t *mc,
    ngx_event_t *ev)
{
    ngx_connection_t  *c;

    c = mc->c;

    if (c->close || ev->timedout
        || ngx_http_paygw_mysql_alive(c) != NGX_OK)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                       "paygw mysql: closing idle connection %d", c->fd);
        ngx_http_paygw_mysql_close(mc);
    }
}


static ngx_int_t
ngx_http_paygw_mysql_alive(ngx_connection_t *c)
{
    int        n;
    char       buf[1];
    ngx_err_t  err;

    /*
     * An idle connection has nothing to read: EOF or data means gone.
     * Connector/C leaves its socket blocking between operations, so
     * the peek must not wait.
     */

    n = recv(c->fd, buf, 1, MSG_PEEK|MSG_DONTWAIT);

    if (n == -1) {
        err = ngx_socket_errno;

        if (err == NGX_EAGAIN) {
            return NGX_OK;
        }
    }

    return NGX_ERROR;
}


/*
 * A connection opened before the writer last changed is never used
 * again, even when its node is the writer once more: the workers follow
 * the shared writer, not what each of them saw.  One opened before its
 * node was known to be a Galera node lacks wsrep_sync_wait.
 */

static ngx_uint_t
ngx_http_paygw_mysql_retired(ngx_http_paygw_mysql_conn_t *mc)
{
    ngx_uint_t  gen;

    (void) ngx_http_paygw_mysql_writer(mc->srv, &gen);

    if (mc->gen != gen) {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "paygw mysql: retiring a connection of writer "
                       "change %ui (now %ui)", mc->gen, gen);
        return 1;
    }

    return !mc->galera && ngx_http_paygw_mysql_galera(mc->srv, mc->node);
}


static void
ngx_http_paygw_mysql_wake(ngx_event_t *ev)
{
    ngx_uint_t                   queued;
    ngx_queue_t                 *q;
    ngx_connection_t            *c;
    ngx_http_paygw_mysql_op_t   *op;
    ngx_http_paygw_mysql_srv_t  *srv;

    srv = ev->data;

    while (!ngx_queue_empty(&srv->waiting)
           && (!ngx_queue_empty(&srv->idle) || srv->nconns < srv->max_conns))
    {
        q = ngx_queue_head(&srv->waiting);
        ngx_queue_remove(q);

        op = ngx_queue_data(q, ngx_http_paygw_mysql_op_t, queue);
        op->queued = 0;

        c = op->request->connection;

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                       "paygw mysql: wake-up dispatches a waiting op");

        ngx_http_paygw_mysql_dispatch(op);

        /*
         * op lives in its request's pool: the posted requests run below
         * may finish that request and free it, so op is not touched
         * after them.
         */

        queued = op->queued;

        ngx_http_run_posted_requests(c);

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                       "paygw mysql: wake-up ran the posted requests, "
                       "queued:%ui", queued);

        if (queued) {
            /* every idle connection proved dead: try again later */
            break;
        }
    }
}


void
ngx_http_paygw_mysql_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                    i;
    ngx_queue_t                  *q;
    ngx_http_paygw_main_conf_t   *pmcf;
    ngx_http_paygw_mysql_srv_t  **srvp;
    ngx_http_paygw_mysql_conn_t  *mc;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_paygw_module);
    if (pmcf == NULL) {
        return;
    }

    srvp = pmcf->mysql_servers.elts;

    for (i = 0; i < pmcf->mysql_servers.nelts; i++) {

        if (!srvp[i]->initialized) {
            continue;
        }

        while (!ngx_queue_empty(&srvp[i]->idle)) {
            q = ngx_queue_head(&srvp[i]->idle);
            mc = ngx_queue_data(q, ngx_http_paygw_mysql_conn_t, queue);
            ngx_http_paygw_mysql_close(mc);
        }
    }
}
