
/*
 * paygw: the webhook balancer, with connections kept alive per worker.
 *
 *     upstream paygw_webhook {
 *         paygw_webhook_peer [keepalive=128] [timeout=2s] [requests=1000];
 *     }
 *
 *     location = /_paygw/webhook {
 *         internal;
 *         proxy_pass  $paygw_webhook_scheme://paygw_webhook$paygw_webhook_uri;
 *         proxy_next_upstream  error non_idempotent;
 *         ...
 *     }
 *
 * With proxy_pass $paygw_webhook_url every delivery opened a connection
 * of its own (nginx keeps connections only for upstream{} blocks), and
 * the TCP (and TLS) handshake cost the gateway and the merchant more
 * than the delivery itself.  This balancer sends a delivery to the
 * address its round checked (ngx_http_paygw_webhook_destination, _pin:
 * never one nginx or DNS picks later), and keeps the connection once
 * the answer was read whole.  A kept connection is reused only for the
 * same address, scheme and host name: a TLS connection was verified for
 * one name, and another name at the same address must make its own.
 *
 * Idle connections close after timeout=, shorter than common receivers'
 * own idle timeouts (Node's 5 s), so that a receiver seldom closes one
 * just as it is reused.  When that happens nginx tries once more on a
 * new connection ("non_idempotent": the receiver never answered, and a
 * webhook may be delivered more than once anyway; its webhook-id is
 * the same).  Timeouts are not tried again here: the round's retry
 * schedule does that.
 */


#include "ngx_http_paygw_webhook.h"


#define NGX_HTTP_PAYGW_WH_PEER_HOST  256


typedef struct {
    ngx_uint_t                     max_cached;
    ngx_msec_t                     timeout;
    ngx_uint_t                     requests;

    /* per worker: idle connections, most recently used first */
    ngx_queue_t                    cache;
    ngx_queue_t                    free;
    ngx_uint_t                     ready;
} ngx_http_paygw_wh_peer_conf_t;


typedef struct {
    ngx_queue_t                    queue;
    ngx_http_paygw_wh_peer_conf_t *conf;
    ngx_connection_t              *connection;
    socklen_t                      socklen;
    ngx_sockaddr_t                 sockaddr;
    unsigned                       ssl:1;
    size_t                         host_len;
    u_char                         host[NGX_HTTP_PAYGW_WH_PEER_HOST];
} ngx_http_paygw_wh_idle_t;


typedef struct {
    ngx_http_paygw_wh_peer_conf_t *conf;
    ngx_http_request_t            *request;
    ngx_http_paygw_wh_event_t     *ev;
    ngx_uint_t                     gets;
} ngx_http_paygw_wh_peer_data_t;


static ngx_int_t ngx_http_paygw_wh_peer_init_upstream(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_paygw_wh_peer_init(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_paygw_wh_peer_get(ngx_peer_connection_t *pc,
    void *data);
static void ngx_http_paygw_wh_peer_free(ngx_peer_connection_t *pc,
    void *data, ngx_uint_t state);
static ngx_uint_t ngx_http_paygw_wh_peer_reusable(ngx_peer_connection_t *pc,
    ngx_http_paygw_wh_peer_data_t *pd, ngx_uint_t state);
static ngx_uint_t ngx_http_paygw_wh_peer_chunked_whole(ngx_http_request_t *r,
    ngx_buf_t *buf);
static void ngx_http_paygw_wh_peer_keep(ngx_peer_connection_t *pc,
    ngx_http_paygw_wh_peer_data_t *pd);
static ngx_int_t ngx_http_paygw_wh_peer_match(ngx_http_paygw_wh_idle_t *item,
    ngx_peer_connection_t *pc, ngx_http_paygw_wh_peer_data_t *pd);
static void ngx_http_paygw_wh_peer_idle_handler(ngx_event_t *ev);
#if (NGX_HTTP_SSL)
static ngx_int_t ngx_http_paygw_wh_peer_set_session(
    ngx_peer_connection_t *pc, void *data);
static void ngx_http_paygw_wh_peer_save_session(ngx_peer_connection_t *pc,
    void *data);
#endif


char *
ngx_http_paygw_webhook_peer(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_str_t                      *value, v;
    ngx_int_t                       n;
    ngx_msec_t                      ms;
    ngx_uint_t                      i;
    ngx_http_upstream_server_t     *us;
    ngx_http_upstream_srv_conf_t   *uscf;
    ngx_http_paygw_wh_peer_conf_t  *pc;

    uscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_upstream_module);

    if (uscf->peer.init_upstream) {
        return "is duplicate, or load balancing is already set";
    }

    pc = ngx_pcalloc(cf->pool, sizeof(ngx_http_paygw_wh_peer_conf_t));
    if (pc == NULL) {
        return NGX_CONF_ERROR;
    }

    pc->max_cached = 128;
    pc->timeout = 2000;
    pc->requests = 1000;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "keepalive=", 10) == 0) {
            n = ngx_atoi(value[i].data + 10, value[i].len - 10);
            if (n == NGX_ERROR || n > 4096) {
                goto invalid;
            }

            pc->max_cached = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "requests=", 9) == 0) {
            n = ngx_atoi(value[i].data + 9, value[i].len - 9);
            if (n == NGX_ERROR || n == 0) {
                goto invalid;
            }

            pc->requests = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            v.data = value[i].data + 8;
            v.len = value[i].len - 8;

            ms = ngx_parse_time(&v, 0);
            if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
                goto invalid;
            }

            pc->timeout = ms;
            continue;
        }

        goto invalid;
    }

    /*
     * The addresses are the events' own: nginx still wants a server in
     * every upstream{}, so the block gets an inert one of its own.
     */

    if (uscf->servers->nelts == 0) {
        us = ngx_array_push(uscf->servers);
        if (us == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(us, sizeof(ngx_http_upstream_server_t));
    }

    uscf->peer.init_upstream = ngx_http_paygw_wh_peer_init_upstream;
    uscf->peer.data = pc;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid paygw_webhook_peer parameter \"%V\"",
                       &value[i]);

    return NGX_CONF_ERROR;
}


/*
 * From nginx 1.31 on, the keepalive module keeps connections for every
 * upstream{} without "keepalive 0" and wraps its peer.init after ours:
 * its cache is keyed by the address only, so a TLS connection verified
 * for one name could carry another name's webhook.  This balancer keeps
 * its own connections: the keepalive module's wrapper is taken off
 * (postconfiguration runs after every module's init_main_conf).
 */

ngx_int_t
ngx_http_paygw_webhook_peer_postconf(ngx_conf_t *cf)
{
    ngx_uint_t                       i;
    ngx_http_upstream_srv_conf_t   **uscfp;
    ngx_http_upstream_main_conf_t   *umcf;

    umcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_upstream_module);
    if (umcf == NULL) {
        return NGX_OK;
    }

    uscfp = umcf->upstreams.elts;

    for (i = 0; i < umcf->upstreams.nelts; i++) {
        if (uscfp[i]->peer.init_upstream
            == ngx_http_paygw_wh_peer_init_upstream)
        {
            uscfp[i]->peer.init = ngx_http_paygw_wh_peer_init;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_wh_peer_init_upstream(ngx_conf_t *cf,
    ngx_http_upstream_srv_conf_t *us)
{
    us->peer.init = ngx_http_paygw_wh_peer_init;

    return NGX_OK;
}


/* the idle lists are made in the worker, on its first delivery */

static ngx_int_t
ngx_http_paygw_wh_peer_ready(ngx_http_paygw_wh_peer_conf_t *conf)
{
    ngx_uint_t                 i;
    ngx_http_paygw_wh_idle_t  *items;

    ngx_queue_init(&conf->cache);
    ngx_queue_init(&conf->free);

    if (conf->max_cached) {
        items = ngx_pcalloc(ngx_cycle->pool,
                            sizeof(ngx_http_paygw_wh_idle_t)
                            * conf->max_cached);
        if (items == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < conf->max_cached; i++) {
            items[i].conf = conf;
            ngx_queue_insert_head(&conf->free, &items[i].queue);
        }
    }

    conf->ready = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_wh_peer_init(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_http_upstream_t            *u;
    ngx_http_paygw_wh_event_t      *ev;
    ngx_http_paygw_wh_peer_conf_t  *conf;
    ngx_http_paygw_wh_peer_data_t  *pd;

    conf = us->peer.data;

    ev = ngx_http_paygw_call_ctx(r, NGX_HTTP_PAYGW_CALL_WEBHOOK);

    /* only a delivery knows where it goes */

    if (ev == NULL || ev->socklen == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw webhook peer: not a webhook delivery");
        return NGX_ERROR;
    }

    if (!conf->ready && ngx_http_paygw_wh_peer_ready(conf) != NGX_OK) {
        return NGX_ERROR;
    }

    pd = ngx_pcalloc(r->pool, sizeof(ngx_http_paygw_wh_peer_data_t));
    if (pd == NULL) {
        return NGX_ERROR;
    }

    pd->conf = conf;
    pd->request = r;
    pd->ev = ev;

    u = r->upstream;

    u->peer.data = pd;
    u->peer.get = ngx_http_paygw_wh_peer_get;
    u->peer.free = ngx_http_paygw_wh_peer_free;
    u->peer.tries = 1;
#if (NGX_HTTP_SSL)
    u->peer.set_session = ngx_http_paygw_wh_peer_set_session;
    u->peer.save_session = ngx_http_paygw_wh_peer_save_session;
#endif

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_wh_peer_get(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_paygw_wh_peer_data_t *pd = data;

    ngx_queue_t                    *q;
    ngx_http_paygw_wh_idle_t       *item;
    ngx_http_paygw_wh_peer_conf_t  *conf;

    conf = pd->conf;

    pc->sockaddr = &pd->ev->sockaddr.sockaddr;
    pc->socklen = pd->ev->socklen;
    pc->name = &pd->ev->authority;
    pc->cached = 0;
    pc->connection = NULL;

    /* a kept connection that failed is not followed by another one */

    if (pd->gets++) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                       "paygw webhook peer: a new connection after a kept "
                       "one failed");
        return NGX_OK;
    }

    for (q = ngx_queue_head(&conf->cache);
         q != ngx_queue_sentinel(&conf->cache);
         q = ngx_queue_next(q))
    {
        item = ngx_queue_data(q, ngx_http_paygw_wh_idle_t, queue);

        if (ngx_http_paygw_wh_peer_match(item, pc, pd) != NGX_OK) {
            continue;
        }

        ngx_queue_remove(q);
        ngx_queue_insert_head(&conf->free, q);

        ngx_http_paygw_keep_reuse(pc, item->connection);
        item->connection = NULL;

        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                       "paygw webhook peer: kept connection %p reused",
                       pc->connection);

        return NGX_DONE;
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "paygw webhook peer: new connection");

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_wh_peer_match(ngx_http_paygw_wh_idle_t *item,
    ngx_peer_connection_t *pc, ngx_http_paygw_wh_peer_data_t *pd)
{
    ngx_uint_t  ssl;

#if (NGX_HTTP_SSL)
    ssl = pd->request->upstream->ssl;
#else
    ssl = 0;
#endif

    if (item->ssl != ssl
        || item->host_len != pd->ev->host.len
        || ngx_memn2cmp((u_char *) &item->sockaddr, (u_char *) pc->sockaddr,
                        item->socklen, pc->socklen)
           != 0
        || ngx_strncasecmp(item->host, pd->ev->host.data, item->host_len)
           != 0)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_http_paygw_wh_peer_free(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state)
{
    ngx_http_paygw_wh_peer_data_t *pd = data;

    if (pc->tries) {
        pc->tries--;
    }

    if (!ngx_http_paygw_wh_peer_reusable(pc, pd, state)) {
        /* nginx closes pc->connection */
        return;
    }

    ngx_http_paygw_wh_peer_keep(pc, pd);
}


/*
 * A connection is kept when the answer was read whole and nothing
 * more: a delivery reads only the header (header_only, u->header_sent
 * once it is all there), so the answer had no body (u->keepalive), or a
 * small one (Content-Length or chunked) that came in whole with it, and
 * no byte is left after it.
 */

static ngx_uint_t
ngx_http_paygw_wh_peer_reusable(ngx_peer_connection_t *pc,
    ngx_http_paygw_wh_peer_data_t *pd, ngx_uint_t state)
{
    off_t                 rest;
    ngx_connection_t     *c;
    ngx_http_upstream_t  *u;

    c = pc->connection;
    u = pd->request->upstream;

    if ((state & NGX_PEER_FAILED)
        || c == NULL
        || pd->conf->max_cached == 0
        || c->read->eof || c->read->error || c->read->timedout
        || c->write->error || c->write->timedout
        || c->requests >= pd->conf->requests
        || !u->request_body_sent
        || !u->header_sent
        || ngx_terminate || ngx_exiting)
    {
        return 0;
    }

    /* nothing more than the answer may wait on the connection */

    if (u->buffer.last == u->buffer.end) {
        return 0;
    }

#if (NGX_HTTP_SSL)

    if (c->ssl && SSL_pending(c->ssl->connection) > 0) {
        return 0;
    }

#endif

    if (u->keepalive) {
        return u->buffer.pos == u->buffer.last;
    }

    if (u->headers_in.connection_close) {
        return 0;
    }

    if (u->headers_in.chunked) {
        return ngx_http_paygw_wh_peer_chunked_whole(pd->request, &u->buffer);
    }

    rest = u->buffer.last - u->buffer.pos;

    return u->headers_in.content_length_n >= 0
           && rest == u->headers_in.content_length_n;
}


/* the buffer holds a chunked body to its last chunk, and nothing more */

static ngx_uint_t
ngx_http_paygw_wh_peer_chunked_whole(ngx_http_request_t *r, ngx_buf_t *buf)
{
    off_t               size;
    ngx_int_t           rc;
    ngx_buf_t           b;
    ngx_http_chunked_t  ch;

    b = *buf;
    ngx_memzero(&ch, sizeof(ngx_http_chunked_t));

    for ( ;; ) {
#if (NGX_HTTP_PAYGW_CHUNKED_TRAILERS)
        rc = ngx_http_parse_chunked(r, &b, &ch, 0);
#else
        rc = ngx_http_parse_chunked(r, &b, &ch);
#endif

        if (rc == NGX_OK) {
            size = ngx_min(ch.size, b.last - b.pos);
            b.pos += size;
            ch.size -= size;
            continue;
        }

        return rc == NGX_DONE && b.pos == b.last;
    }
}


static void
ngx_http_paygw_wh_peer_keep(ngx_peer_connection_t *pc,
    ngx_http_paygw_wh_peer_data_t *pd)
{
    ngx_queue_t                    *q;
    ngx_connection_t               *c;
    ngx_http_paygw_wh_idle_t       *item;
    ngx_http_paygw_wh_peer_conf_t  *conf;

    c = pc->connection;
    conf = pd->conf;

    if (pd->ev->host.len > NGX_HTTP_PAYGW_WH_PEER_HOST
        || ngx_handle_read_event(c->read, 0) != NGX_OK)
    {
        return;
    }

    /* full: the least recently used one goes */

    if (ngx_queue_empty(&conf->free)) {
        q = ngx_queue_last(&conf->cache);
        item = ngx_queue_data(q, ngx_http_paygw_wh_idle_t, queue);

        ngx_queue_remove(q);
        ngx_http_paygw_keep_close(item->connection);
        item->connection = NULL;

    } else {
        q = ngx_queue_head(&conf->free);
        ngx_queue_remove(q);
        item = ngx_queue_data(q, ngx_http_paygw_wh_idle_t, queue);
    }

    ngx_queue_insert_head(&conf->cache, q);

    item->connection = c;
    item->socklen = pc->socklen;
    ngx_memcpy(&item->sockaddr, pc->sockaddr, pc->socklen);
    item->host_len = pd->ev->host.len;
    ngx_memcpy(item->host, pd->ev->host.data, item->host_len);
#if (NGX_HTTP_SSL)
    item->ssl = c->ssl ? 1 : 0;
#else
    item->ssl = 0;
#endif

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->log, 0,
                   "paygw webhook peer: connection %p kept", c);

    ngx_http_paygw_keep_park(pc, item, conf->timeout,
                             ngx_http_paygw_wh_peer_idle_handler);
}


/* an idle connection: the receiver closed it, sent something, or the
 * idle time ran out (or the worker is exiting: c->close) */

static void
ngx_http_paygw_wh_peer_idle_handler(ngx_event_t *ev)
{
    ngx_connection_t          *c;
    ngx_http_paygw_wh_idle_t  *item;

    if (!ngx_http_paygw_keep_ended(ev)) {
        return;
    }

    c = ev->data;
    item = c->data;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ev->log, 0,
                   "paygw webhook peer: kept connection %p closed", c);

    ngx_http_paygw_keep_close(c);

    item->connection = NULL;
    ngx_queue_remove(&item->queue);
    ngx_queue_insert_head(&item->conf->free, &item->queue);
}


#if (NGX_HTTP_SSL)

/* TLS sessions are not kept: a kept connection is what saves the work */

static ngx_int_t
ngx_http_paygw_wh_peer_set_session(ngx_peer_connection_t *pc, void *data)
{
    return NGX_OK;
}


static void
ngx_http_paygw_wh_peer_save_session(ngx_peer_connection_t *pc, void *data)
{
    return;
}

#endif
