
/*
 * paygw: the active health check of a paygw_mysql cluster's nodes.
 *
 * Every check_interval one worker of the instance (whichever takes the
 * round first: the due time is a compare-and-swap in the shared state)
 * probes every node at once, each on a connection of its own through
 * Connector/C's non-blocking API, bounded by check_timeout:
 *
 *     SHOW GLOBAL VARIABLES LIKE 'wsrep_on'
 *     SHOW GLOBAL STATUS WHERE Variable_name IN
 *         ('wsrep_local_state', 'wsrep_ready')     (Galera only)
 *
 * A node is "synced" when it answers and, if it is a Galera node, is
 * in state 4 (Synced) and ready; "not_synced" when it answers
 * otherwise (joining, donor, desynced, out of the primary component);
 * "unreachable" when it cannot be connected to or does not answer in
 * time.  After each probe the writer is elected again
 * (ngx_http_paygw_mysql_ha.c).  Both SHOWs are allowed on a node out of
 * the primary component, which refuses other statements.  A probe
 * selects no database: a server's process list tells it from the
 * pool's connections.
 */


#include "ngx_http_paygw_mysql.h"
#include <errmsg.h>


#define NGX_HTTP_PAYGW_PROBE_CONNECT   0
#define NGX_HTTP_PAYGW_PROBE_WSREP_ON  1
#define NGX_HTTP_PAYGW_PROBE_ON_ROWS   2
#define NGX_HTTP_PAYGW_PROBE_STATUS    3
#define NGX_HTTP_PAYGW_PROBE_ST_ROWS   4

#define NGX_HTTP_PAYGW_WSREP_SYNCED    4

/* "nothing to wait for": the probe finished (as the driver's STOP) */
#define NGX_HTTP_PAYGW_PROBE_STOP      -1


typedef struct {
    ngx_http_paygw_mysql_srv_t   *srv;
    ngx_event_t                   tick;
    ngx_uint_t                    running;   /* probes of this worker */
} ngx_http_paygw_mysql_checker_t;


typedef struct {
    ngx_http_paygw_mysql_checker_t  *checker;
    ngx_uint_t                    node;
    MYSQL                        *mysql;
    MYSQL                        *ret_mysql;
    int                           ret_int;
    MYSQL_RES                    *ret_res;
    ngx_connection_t             *c;
    ngx_event_t                   timer;     /* check_timeout */
    ngx_event_t                   lib_timer;
    ngx_uint_t                    step;
    int                           wait;
    ngx_uint_t                    galera;
    ngx_uint_t                    wsrep_state;
    ngx_uint_t                    ready;
} ngx_http_paygw_mysql_probe_t;


static void ngx_http_paygw_mysql_check_tick(ngx_event_t *ev);
static void ngx_http_paygw_mysql_probe_start(
    ngx_http_paygw_mysql_checker_t *checker, ngx_uint_t n);
static void ngx_http_paygw_mysql_probe_progress(
    ngx_http_paygw_mysql_probe_t *pr, int status);
static int ngx_http_paygw_mysql_probe_next(ngx_http_paygw_mysql_probe_t *pr);
static int ngx_http_paygw_mysql_probe_query(ngx_http_paygw_mysql_probe_t *pr,
    ngx_uint_t step, const char *q, size_t len);
static int ngx_http_paygw_mysql_probe_error(ngx_http_paygw_mysql_probe_t *pr);
static int ngx_http_paygw_mysql_probe_rows(ngx_http_paygw_mysql_probe_t *pr);
static ngx_int_t ngx_http_paygw_mysql_probe_watch(
    ngx_http_paygw_mysql_probe_t *pr);
static void ngx_http_paygw_mysql_probe_event(ngx_event_t *ev);
static void ngx_http_paygw_mysql_probe_lib_timeout(ngx_event_t *ev);
static void ngx_http_paygw_mysql_probe_resume(
    ngx_http_paygw_mysql_probe_t *pr, int events);
static void ngx_http_paygw_mysql_probe_timeout(ngx_event_t *ev);
static void ngx_http_paygw_mysql_probe_done(ngx_http_paygw_mysql_probe_t *pr,
    ngx_uint_t state);
static void ngx_http_paygw_mysql_probe_close(
    ngx_http_paygw_mysql_probe_t *pr);


void
ngx_http_paygw_mysql_check_start(ngx_http_paygw_mysql_srv_t *srv,
    ngx_cycle_t *cycle)
{
    ngx_http_paygw_mysql_checker_t  *checker;

    checker = ngx_pcalloc(cycle->pool,
                          sizeof(ngx_http_paygw_mysql_checker_t));
    if (checker == NULL) {
        return;
    }

    checker->srv = srv;
    checker->tick.handler = ngx_http_paygw_mysql_check_tick;
    checker->tick.data = checker;
    checker->tick.log = cycle->log;
    checker->tick.cancelable = 1;

    srv->checker = checker;

    /* the first round soon after start: whichever worker comes first */
    ngx_add_timer(&checker->tick, 1);
}


static void
ngx_http_paygw_mysql_check_tick(ngx_event_t *ev)
{
    ngx_uint_t                       i;
    ngx_msec_t                       now;
    ngx_time_t                      *tp;
    ngx_atomic_uint_t                due;
    ngx_http_paygw_mysql_srv_t      *srv;
    ngx_http_paygw_mysql_checker_t  *checker;

    checker = ev->data;
    srv = checker->srv;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_http_paygw_mysql_retire_idle(srv);

    /* wall clock: the due time is compared across processes */

    tp = ngx_timeofday();
    now = (ngx_msec_t) tp->sec * 1000 + tp->msec;
    due = srv->ha->next_check;

    /* a due time further than an interval ahead: the clock went back */

    if (checker->running == 0
        && (now >= (ngx_msec_t) due
            || (ngx_msec_t) due - now > srv->check_interval)
        && ngx_atomic_cmp_set(&srv->ha->next_check, due,
                              now + srv->check_interval))
    {
        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                       "paygw mysql \"%V\": checking %ui nodes",
                       &srv->name, srv->nodes->nelts);

        for (i = 0; i < srv->nodes->nelts; i++) {
            ngx_http_paygw_mysql_probe_start(checker, i);
        }
    }

    /* half the interval: a round is never late by more than that */

    ngx_add_timer(ev, srv->check_interval / 2 + 1);
}


static void
ngx_http_paygw_mysql_probe_start(ngx_http_paygw_mysql_checker_t *checker,
    ngx_uint_t n)
{
    int                            status;
    my_bool                        off;
    ngx_http_paygw_mysql_srv_t    *srv;
    ngx_http_paygw_mysql_node_t   *node;
    ngx_http_paygw_mysql_probe_t  *pr;

    srv = checker->srv;
    node = ngx_http_paygw_mysql_node(srv, n);

    pr = ngx_calloc(sizeof(ngx_http_paygw_mysql_probe_t), ngx_cycle->log);
    if (pr == NULL) {
        return;
    }

    pr->mysql = mysql_init(NULL);
    if (pr->mysql == NULL) {
        ngx_free(pr);
        return;
    }

    off = 0;

    if (mysql_options(pr->mysql, MYSQL_OPT_NONBLOCK, 0) != 0
        || mysql_options(pr->mysql, MYSQL_OPT_RECONNECT, &off) != 0)
    {
        mysql_close(pr->mysql);
        ngx_free(pr);
        return;
    }

    pr->checker = checker;
    pr->node = n;
    checker->running++;

    pr->timer.handler = ngx_http_paygw_mysql_probe_timeout;
    pr->timer.data = pr;
    pr->timer.log = ngx_cycle->log;
    pr->timer.cancelable = 1;

    pr->lib_timer.handler = ngx_http_paygw_mysql_probe_lib_timeout;
    pr->lib_timer.data = pr;
    pr->lib_timer.log = ngx_cycle->log;
    pr->lib_timer.cancelable = 1;

    ngx_add_timer(&pr->timer, srv->check_timeout);

    pr->step = NGX_HTTP_PAYGW_PROBE_CONNECT;

    status = mysql_real_connect_start(&pr->ret_mysql, pr->mysql,
                                      (char *) node->host.data,
                                      (char *) srv->user.data,
                                      (char *) srv->password.data,
                                      NULL, (unsigned int) node->port, NULL,
                                      0);

    ngx_http_paygw_mysql_probe_progress(pr, status);
}


static void
ngx_http_paygw_mysql_probe_progress(ngx_http_paygw_mysql_probe_t *pr,
    int status)
{
    while (status == 0) {
        status = ngx_http_paygw_mysql_probe_next(pr);
    }

    if (status == NGX_HTTP_PAYGW_PROBE_STOP) {
        return;
    }

    pr->wait = status;

    if ((status & MYSQL_WAIT_TIMEOUT) && !pr->lib_timer.timer_set) {
        ngx_add_timer(&pr->lib_timer,
                      mysql_get_timeout_value_ms(pr->mysql));
    }

    if (!(status & (MYSQL_WAIT_READ|MYSQL_WAIT_WRITE))) {
        return;
    }

    if (pr->c == NULL && ngx_http_paygw_mysql_probe_watch(pr) != NGX_OK) {
        ngx_http_paygw_mysql_probe_done(pr, NGX_HTTP_PAYGW_NODE_UNKNOWN);
        return;
    }

    if (ngx_add_conn) {
        return;
    }

    if (((status & MYSQL_WAIT_READ)
         && ngx_handle_read_event(pr->c->read, 0) != NGX_OK)
        || ((status & MYSQL_WAIT_WRITE)
            && ngx_handle_write_event(pr->c->write, 0) != NGX_OK))
    {
        ngx_http_paygw_mysql_probe_done(pr, NGX_HTTP_PAYGW_NODE_UNKNOWN);
    }
}


/* the library call of pr->step completed: the next one, or the verdict */

static int
ngx_http_paygw_mysql_probe_next(ngx_http_paygw_mysql_probe_t *pr)
{
    static const char  on[] = "SHOW GLOBAL VARIABLES LIKE 'wsrep_on'";
    static const char  st[] = "SHOW GLOBAL STATUS WHERE Variable_name IN "
                              "('wsrep_local_state', 'wsrep_ready')";

    switch (pr->step) {

    case NGX_HTTP_PAYGW_PROBE_CONNECT:
        if (pr->ret_mysql == NULL) {
            ngx_http_paygw_mysql_probe_done(pr,
                                            NGX_HTTP_PAYGW_NODE_UNREACHABLE);
            return NGX_HTTP_PAYGW_PROBE_STOP;
        }

        return ngx_http_paygw_mysql_probe_query(pr,
                                                NGX_HTTP_PAYGW_PROBE_WSREP_ON,
                                                on, sizeof(on) - 1);

    case NGX_HTTP_PAYGW_PROBE_WSREP_ON:
    case NGX_HTTP_PAYGW_PROBE_STATUS:
        if (pr->ret_int != 0) {
            return ngx_http_paygw_mysql_probe_error(pr);
        }

        pr->step++;
        return mysql_store_result_start(&pr->ret_res, pr->mysql);

    case NGX_HTTP_PAYGW_PROBE_ON_ROWS:
    case NGX_HTTP_PAYGW_PROBE_ST_ROWS:
        if (pr->ret_res == NULL) {
            return ngx_http_paygw_mysql_probe_error(pr);
        }

        if (ngx_http_paygw_mysql_probe_rows(pr) != NGX_OK) {
            return NGX_HTTP_PAYGW_PROBE_STOP;
        }

        return ngx_http_paygw_mysql_probe_query(pr,
                                                NGX_HTTP_PAYGW_PROBE_STATUS,
                                                st, sizeof(st) - 1);
    }

    return NGX_HTTP_PAYGW_PROBE_STOP;
}


static int
ngx_http_paygw_mysql_probe_query(ngx_http_paygw_mysql_probe_t *pr,
    ngx_uint_t step, const char *q, size_t len)
{
    pr->step = step;

    return mysql_real_query_start(&pr->ret_int, pr->mysql, q, len);
}


/*
 * The connection broke: unreachable.  The server refused a SHOW: a node
 * out of the cluster (1047) is not synced; any other refusal still
 * proves a server that answers, and one that says nothing of Galera.
 */

static int
ngx_http_paygw_mysql_probe_error(ngx_http_paygw_mysql_probe_t *pr)
{
    unsigned int  err;

    err = mysql_errno(pr->mysql);

    if (err >= CR_MIN_ERROR) {
        ngx_http_paygw_mysql_probe_done(pr, NGX_HTTP_PAYGW_NODE_UNREACHABLE);

    } else if (err == NGX_HTTP_PAYGW_ER_WSREP_NOT_READY || pr->galera) {
        ngx_http_paygw_mysql_probe_done(pr, NGX_HTTP_PAYGW_NODE_NOT_SYNCED);

    } else {
        ngx_http_paygw_mysql_probe_done(pr, NGX_HTTP_PAYGW_NODE_SYNCED);
    }

    return NGX_HTTP_PAYGW_PROBE_STOP;
}


/* NGX_OK: ask for wsrep status next; else the probe is done */

static int
ngx_http_paygw_mysql_probe_rows(ngx_http_paygw_mysql_probe_t *pr)
{
    size_t           len;
    ngx_int_t        n;
    MYSQL_ROW        row;
    ngx_uint_t       state;
    unsigned long   *lengths;

    while ((row = mysql_fetch_row(pr->ret_res)) != NULL) {
        lengths = mysql_fetch_lengths(pr->ret_res);

        if (row[0] == NULL || row[1] == NULL || lengths == NULL) {
            continue;
        }

        len = lengths[1];

        if (ngx_strcasecmp((u_char *) row[0], (u_char *) "wsrep_on") == 0) {
            pr->galera = (len == 2
                          && ngx_strncasecmp((u_char *) row[1],
                                             (u_char *) "ON", 2) == 0);

        } else if (ngx_strcasecmp((u_char *) row[0],
                                  (u_char *) "wsrep_ready") == 0)
        {
            pr->ready = (len == 2
                         && ngx_strncasecmp((u_char *) row[1],
                                            (u_char *) "ON", 2) == 0);

        } else if (ngx_strcasecmp((u_char *) row[0],
                                  (u_char *) "wsrep_local_state") == 0)
        {
            n = ngx_atoi((u_char *) row[1], len);
            pr->wsrep_state = (n == NGX_ERROR) ? 0 : (ngx_uint_t) n;
        }
    }

    mysql_free_result(pr->ret_res);
    pr->ret_res = NULL;

    if (pr->step == NGX_HTTP_PAYGW_PROBE_ON_ROWS) {
        if (pr->galera) {
            return NGX_OK;
        }

        /* not a Galera node (or Galera off): answering is healthy */
        state = NGX_HTTP_PAYGW_NODE_SYNCED;

    } else if (pr->ready && pr->wsrep_state == NGX_HTTP_PAYGW_WSREP_SYNCED) {
        state = NGX_HTTP_PAYGW_NODE_SYNCED;

    } else {
        state = NGX_HTTP_PAYGW_NODE_NOT_SYNCED;
    }

    ngx_http_paygw_mysql_probe_done(pr, state);

    return NGX_DONE;
}


static ngx_int_t
ngx_http_paygw_mysql_probe_watch(ngx_http_paygw_mysql_probe_t *pr)
{
    return ngx_http_paygw_mysql_socket(pr->mysql, pr, &pr->c,
                                       ngx_http_paygw_mysql_probe_event,
                                       ngx_http_paygw_mysql_probe_event);
}


static void
ngx_http_paygw_mysql_probe_event(ngx_event_t *ev)
{
    ngx_connection_t  *c;

    c = ev->data;

    ngx_http_paygw_mysql_probe_resume(c->data,
                                      ev->write ? MYSQL_WAIT_WRITE
                                                : MYSQL_WAIT_READ);
}


static void
ngx_http_paygw_mysql_probe_lib_timeout(ngx_event_t *ev)
{
    ngx_http_paygw_mysql_probe_resume(ev->data, MYSQL_WAIT_TIMEOUT);
}


static void
ngx_http_paygw_mysql_probe_resume(ngx_http_paygw_mysql_probe_t *pr,
    int events)
{
    int  result;

    if (!(pr->wait & events)) {
        return;
    }

    pr->wait = 0;

    if (pr->lib_timer.timer_set) {
        ngx_del_timer(&pr->lib_timer);
    }

    switch (pr->step) {

    case NGX_HTTP_PAYGW_PROBE_CONNECT:
        result = mysql_real_connect_cont(&pr->ret_mysql, pr->mysql, events);
        break;

    case NGX_HTTP_PAYGW_PROBE_WSREP_ON:
    case NGX_HTTP_PAYGW_PROBE_STATUS:
        result = mysql_real_query_cont(&pr->ret_int, pr->mysql, events);
        break;

    default:
        result = mysql_store_result_cont(&pr->ret_res, pr->mysql, events);
        break;
    }

    ngx_http_paygw_mysql_probe_progress(pr, result);
}


static void
ngx_http_paygw_mysql_probe_timeout(ngx_event_t *ev)
{
    ngx_http_paygw_mysql_probe_t *pr = ev->data;

    ngx_http_paygw_mysql_probe_done(pr, NGX_HTTP_PAYGW_NODE_UNREACHABLE);
}


static void
ngx_http_paygw_mysql_probe_done(ngx_http_paygw_mysql_probe_t *pr,
    ngx_uint_t state)
{
    ngx_http_paygw_mysql_srv_t      *srv;
    ngx_http_paygw_mysql_checker_t  *checker;

    checker = pr->checker;
    srv = checker->srv;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "paygw mysql \"%V\": node %ui checked: %s "
                   "(wsrep_local_state %ui)",
                   &srv->name, pr->node,
                   ngx_http_paygw_mysql_state_name(state), pr->wsrep_state);

    if (state != NGX_HTTP_PAYGW_NODE_UNKNOWN) {
        if (state != NGX_HTTP_PAYGW_NODE_UNREACHABLE) {
            srv->ha->node[pr->node].galera = pr->galera;
            srv->ha->node[pr->node].wsrep_state = pr->wsrep_state;
        }

        ngx_http_paygw_mysql_set_state(srv, pr->node, state, ngx_cycle->log);
        ngx_http_paygw_mysql_elect(srv, ngx_cycle->log);
    }

    ngx_http_paygw_mysql_probe_close(pr);

    checker->running--;
}


static void
ngx_http_paygw_mysql_probe_close(ngx_http_paygw_mysql_probe_t *pr)
{
    if (pr->timer.timer_set) {
        ngx_del_timer(&pr->timer);
    }

    if (pr->lib_timer.timer_set) {
        ngx_del_timer(&pr->lib_timer);
    }

    if (pr->ret_res) {
        mysql_free_result(pr->ret_res);
    }

    if (pr->c) {
        ngx_http_paygw_mysql_unwatch(pr->c);
    }

    mysql_close(pr->mysql);
    ngx_free(pr);
}
