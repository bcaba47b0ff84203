
/*
 * paygw: an upstream connection kept idle between requests by one of
 * the module's balancers (the Redis Cluster client's, per node; the
 * webhook balancer's, per destination), in the manner of nginx's
 * upstream keepalive module: handing it back to a request, parking it
 * idle, noticing that it must close, closing it.  Each balancer keeps
 * its own lists, because what a connection is kept for differs.
 */


#include "ngx_http_paygw.h"


static void ngx_http_paygw_keep_dummy(ngx_event_t *ev);


/* a parked connection goes to the request of pc: nginx sends on it */

void
ngx_http_paygw_keep_reuse(ngx_peer_connection_t *pc, ngx_connection_t *c)
{
    c->idle = 0;
    c->sent = 0;
    c->data = NULL;
    c->log = pc->log;
    c->read->log = pc->log;
    c->write->log = pc->log;
    c->pool->log = pc->log;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    pc->connection = c;
    pc->cached = 1;
}


/*
 * pc's connection parked: the request lets go of it, "idle" handles
 * its read events (c->data = item) and the timeout ends it.  Bytes
 * already waiting are looked at at once.
 */

void
ngx_http_paygw_keep_park(ngx_peer_connection_t *pc, void *item,
    ngx_msec_t timeout, ngx_event_handler_pt idle)
{
    ngx_connection_t  *c;

    c = pc->connection;
    pc->connection = NULL;

    c->read->delayed = 0;
    ngx_add_timer(c->read, timeout);

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    c->write->handler = ngx_http_paygw_keep_dummy;
    c->read->handler = idle;

    c->data = item;
    c->idle = 1;
    c->log = ngx_cycle->log;
    c->read->log = ngx_cycle->log;
    c->write->log = ngx_cycle->log;
    c->pool->log = ngx_cycle->log;

    if (c->read->ready) {
        idle(c->read);
    }
}


/*
 * A read event on a parked connection: 0, it is still idle (nothing
 * came; waiting again); 1, it must close: the peer closed it or sent
 * something, the idle time ran out, or the worker is exiting (c->close).
 */

ngx_uint_t
ngx_http_paygw_keep_ended(ngx_event_t *ev)
{
    int                n;
    char               buf[1];
    ngx_connection_t  *c;

    c = ev->data;

    if (c->close || c->read->timedout) {
        return 1;
    }

    n = recv(c->fd, buf, 1, MSG_PEEK);

    if (n == -1 && ngx_socket_errno == NGX_EAGAIN) {
        ev->ready = 0;

        return ngx_handle_read_event(c->read, 0) != NGX_OK;
    }

    return 1;
}


void
ngx_http_paygw_keep_close(ngx_connection_t *c)
{
#if (NGX_HTTP_SSL)

    if (c->ssl) {
        c->ssl->no_wait_shutdown = 1;
        c->ssl->no_send_shutdown = 1;

        if (ngx_ssl_shutdown(c) == NGX_AGAIN) {
            c->ssl->handler = ngx_http_paygw_keep_close;
            return;
        }
    }

#endif

    if (c->pool) {
        ngx_destroy_pool(c->pool);
    }

    ngx_close_connection(c);
}


static void
ngx_http_paygw_keep_dummy(ngx_event_t *ev)
{
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "paygw keep: idle write event");
}
