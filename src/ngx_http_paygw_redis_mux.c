
/*
 * paygw: the Redis round trips of many requests on one connection per
 * worker (paygw_redis_multiplex).
 *
 * Through the upstream (ngx_http_paygw_redis.c) every round trip takes
 * a subrequest and a pooled connection to itself: a write and a read on
 * each end for every request.  Here the commands of all the requests
 * that ask within one turn of the event loop go out in one write on a
 * connection the worker keeps open, and Redis answers them in one go.
 * Redis replies in the order the commands came, so the replies are
 * handed out in the order the round trips were queued.
 *
 * It is used when a location's paygw_redis_location is an exact
 * location ("location = /_paygw/redis") whose paygw_redis_pass is one
 * address and not a cluster; otherwise the upstream carries the calls.
 *
 * Faults: a connection that fails, closes, sends what is not RESP,
 * sends a reply over paygw_redis_max_reply_size, or is silent for
 * paygw_redis_timeout while replies are due, fails every round trip
 * waiting on it (503 unavailable; 504 timed out) and is closed; the
 * next round trip opens a new one.  A command that may have been
 * written is never sent again: Redis may have run it.
 */


#include "ngx_http_paygw_redis.h"
#include "ngx_http_paygw_metrics.h"


#define NGX_HTTP_PAYGW_MUX_READ         16384

/*
 * Commands not yet written past this fail at once (503): a Redis that
 * takes no more bytes times out in paygw_redis_timeout, and this bounds
 * what a busy worker piles up meanwhile.
 */
#define NGX_HTTP_PAYGW_MUX_MAX_PENDING  (32 * 1024 * 1024)

/*
 * The send buffer: at least this, and kept at this size once drained.
 * A burst (a delivery round's XADDs: its events' payloads, 100 kB and
 * more) grows it; kept, it would hold each worker at the largest burst
 * it ever saw, one more step up with every larger one (t/10-redis.t,
 * bench soak 2026-12-03T1330Z under heaptrack: +344 kB in one worker).
 */
#define NGX_HTTP_PAYGW_MUX_BUFFER       16384


typedef enum {
    NGX_HTTP_PAYGW_MUX_CLOSED = 0,
    NGX_HTTP_PAYGW_MUX_CONNECTING,
    NGX_HTTP_PAYGW_MUX_OPEN
} ngx_http_paygw_mux_state_e;


/* a round trip in flight: the replies it waits for, in order */

typedef struct {
    ngx_queue_t                   queue;
    ngx_http_paygw_redis_op_t    *op;        /* NULL: its request ended */
    ngx_uint_t                    expect;
    ngx_uint_t                    got;
    size_t                        received;
    uint64_t                      start;     /* its first byte's offset */
    unsigned                      again:1;   /* kept for a new connection */
} ngx_http_paygw_mux_slot_t;


struct ngx_http_paygw_redis_mux_s {
    /* from the configuration */
    ngx_addr_t                    addr;
    ngx_msec_t                    connect_timeout;
    ngx_msec_t                    timeout;
    size_t                        max_reply;

    /* the worker's own, from its first round trip */
    ngx_http_paygw_mux_state_e    state;
    ngx_peer_connection_t         peer;
    ngx_event_t                   flush;     /* posted: write what queued */
    ngx_queue_t                   waiting;   /* slots, in the order sent */
    ngx_queue_t                   spare;
    u_char                       *start;     /* what is still to be sent */
    u_char                       *pos;
    u_char                       *last;
    u_char                       *end;
    uint64_t                      queued;    /* bytes, since the start */
    uint64_t                      sent;      /*   pos is at this offset */
    redisReader                  *reader;
    unsigned                      ready:1;
};


typedef struct {
    ngx_http_core_loc_conf_t     *clcf;
    ngx_http_paygw_loc_conf_t    *plcf;
} ngx_http_paygw_mux_location_t;


static ngx_http_paygw_redis_mux_t *ngx_http_paygw_mux_create(ngx_conf_t *cf,
    ngx_http_paygw_loc_conf_t *plcf);
static ngx_int_t ngx_http_paygw_mux_ready(ngx_http_paygw_redis_mux_t *mux);
static ngx_int_t ngx_http_paygw_mux_queue(ngx_http_paygw_redis_mux_t *mux,
    ngx_http_paygw_redis_op_t *op);
static ngx_int_t ngx_http_paygw_mux_reserve(ngx_http_paygw_redis_mux_t *mux,
    size_t size);
static void ngx_http_paygw_mux_flush_handler(ngx_event_t *ev);
static void ngx_http_paygw_mux_connect(ngx_http_paygw_redis_mux_t *mux);
static void ngx_http_paygw_mux_connected(ngx_event_t *wev);
static void ngx_http_paygw_mux_write(ngx_http_paygw_redis_mux_t *mux);
static void ngx_http_paygw_mux_drained(ngx_http_paygw_redis_mux_t *mux);
static void ngx_http_paygw_mux_write_handler(ngx_event_t *wev);
static void ngx_http_paygw_mux_read_handler(ngx_event_t *rev);
static ngx_int_t ngx_http_paygw_mux_dispatch(ngx_http_paygw_redis_mux_t *mux);
static void ngx_http_paygw_mux_arm(ngx_http_paygw_redis_mux_t *mux);
static void ngx_http_paygw_mux_fail(ngx_http_paygw_redis_mux_t *mux,
    ngx_uint_t status, const char *why, ngx_uint_t unsent_too);
static void ngx_http_paygw_mux_timed_out(ngx_http_paygw_redis_mux_t *mux,
    const char *doing);
static void ngx_http_paygw_mux_complete(ngx_http_paygw_redis_op_t *op);
static void ngx_http_paygw_mux_cleanup(void *data);


/* configuration: which locations may skip the subrequest, and to what */


char *
ngx_http_paygw_redis_mux_location(ngx_conf_t *cf,
    ngx_http_paygw_loc_conf_t *plcf)
{
    ngx_http_paygw_main_conf_t     *pmcf;
    ngx_http_paygw_mux_location_t  *loc;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_paygw_module);

    loc = ngx_array_push(&pmcf->redis_locations);
    if (loc == NULL) {
        return NGX_CONF_ERROR;
    }

    loc->clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    loc->plcf = plcf;

    return NGX_CONF_OK;
}


char *
ngx_http_paygw_redis_mux_user(ngx_conf_t *cf, ngx_http_paygw_loc_conf_t *plcf)
{
    ngx_http_paygw_main_conf_t   *pmcf;
    ngx_http_paygw_loc_conf_t   **user;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_paygw_module);

    user = ngx_array_push(&pmcf->redis_users);
    if (user == NULL) {
        return NGX_CONF_ERROR;
    }

    *user = plcf;

    return NGX_CONF_OK;
}


/* postconfiguration: every location finds its Redis location by URI */

ngx_int_t
ngx_http_paygw_redis_mux_postconf(ngx_conf_t *cf)
{
    ngx_uint_t                      i, j;
    ngx_http_paygw_loc_conf_t     **user;
    ngx_http_paygw_main_conf_t     *pmcf;
    ngx_http_paygw_mux_location_t  *loc;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_paygw_module);

    loc = pmcf->redis_locations.elts;
    user = pmcf->redis_users.elts;

    for (i = 0; i < pmcf->redis_locations.nelts; i++) {

        if (!loc[i].clcf->exact_match) {
            continue;
        }

        for (j = 0; j < pmcf->redis_users.nelts; j++) {

            if (user[j]->redis_mux
                || user[j]->redis_uri.len != loc[i].clcf->name.len
                || ngx_strncmp(user[j]->redis_uri.data,
                               loc[i].clcf->name.data,
                               loc[i].clcf->name.len)
                   != 0)
            {
                continue;
            }

            if (loc[i].plcf->redis_mux == NULL) {
                loc[i].plcf->redis_mux = ngx_http_paygw_mux_create(cf,
                                                                loc[i].plcf);
                if (loc[i].plcf->redis_mux == NULL) {
                    break;
                }
            }

            user[j]->redis_mux = loc[i].plcf->redis_mux;
        }
    }

    return NGX_OK;
}


/* NULL when the location's upstream is not one plain address */

static ngx_http_paygw_redis_mux_t *
ngx_http_paygw_mux_create(ngx_conf_t *cf, ngx_http_paygw_loc_conf_t *plcf)
{
    ngx_http_paygw_redis_mux_t    *mux;
    ngx_http_upstream_server_t    *us;
    ngx_http_upstream_srv_conf_t  *uscf;

    uscf = plcf->redis.upstream;

    if (!plcf->redis_multiplex || plcf->redis_rc || uscf == NULL
        || uscf->servers == NULL || uscf->servers->nelts != 1)
    {
        return NULL;
    }

    us = uscf->servers->elts;

    if (us->naddrs != 1 || us->backup || us->down) {
        return NULL;
    }

    mux = ngx_pcalloc(cf->pool, sizeof(ngx_http_paygw_redis_mux_t));
    if (mux == NULL) {
        return NULL;
    }

    mux->addr = us->addrs[0];
    mux->connect_timeout = plcf->redis.connect_timeout;
    mux->timeout = plcf->redis.read_timeout;
    mux->max_reply = plcf->redis_max_reply;

    return mux;
}


/* the worker's part, made on its first round trip */

static ngx_int_t
ngx_http_paygw_mux_ready(ngx_http_paygw_redis_mux_t *mux)
{
    ngx_pool_cleanup_t  *cln;

    if (mux->ready) {
        return NGX_OK;
    }

    cln = ngx_pool_cleanup_add(ngx_cycle->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_paygw_mux_cleanup;
    cln->data = mux;

    ngx_queue_init(&mux->waiting);
    ngx_queue_init(&mux->spare);

    mux->flush.handler = ngx_http_paygw_mux_flush_handler;
    mux->flush.data = mux;
    mux->flush.log = ngx_cycle->log;

    mux->state = NGX_HTTP_PAYGW_MUX_CLOSED;
    mux->ready = 1;

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_redis_mux_send(ngx_http_request_t *r,
    ngx_http_paygw_redis_mux_t *mux, ngx_http_paygw_redis_op_t *op)
{
    size_t       size;
    ngx_str_t   *cmd;
    ngx_uint_t   i;

    if (ngx_http_paygw_mux_ready(mux) != NGX_OK) {
        return NGX_ERROR;
    }

    if (mux->reader == NULL) {
        mux->reader = redisReaderCreate();
        if (mux->reader == NULL) {
            return NGX_ERROR;
        }
    }

    /* all or nothing: a command without its slot would shift every reply */

    cmd = op->out;
    size = 0;

    for (i = 0; i < op->nout; i++) {
        size += cmd[i].len;
    }

    if (ngx_http_paygw_mux_reserve(mux, size) != NGX_OK
        || ngx_http_paygw_mux_queue(mux, op) != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < op->nout; i++) {
        mux->last = ngx_cpymem(mux->last, cmd[i].data, cmd[i].len);
    }

    mux->queued += size;

    op->call.started = 1;
    op->call.done = 0;
    op->call.ok = 0;
    op->call.status = 0;
    op->call.sr = NULL;
    ngx_str_null(&op->call.error);

    ngx_http_paygw_m_round_trip(r, NGX_HTTP_PAYGW_M_BACKEND_REDIS);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw redis mux: %ui commands, %uz bytes queued, "
                   "state %d", op->nout, size, mux->state);

    /* written once this turn of the event loop has queued all it has */

    ngx_post_event(&mux->flush, &ngx_posted_events);

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_mux_queue(ngx_http_paygw_redis_mux_t *mux,
    ngx_http_paygw_redis_op_t *op)
{
    ngx_queue_t                *q;
    ngx_http_paygw_mux_slot_t  *slot;

    if (!ngx_queue_empty(&mux->spare)) {
        q = ngx_queue_head(&mux->spare);
        ngx_queue_remove(q);
        slot = ngx_queue_data(q, ngx_http_paygw_mux_slot_t, queue);

    } else {
        slot = ngx_palloc(ngx_cycle->pool, sizeof(ngx_http_paygw_mux_slot_t));
        if (slot == NULL) {
            return NGX_ERROR;
        }
    }

    slot->op = op;
    slot->expect = op->nout;
    slot->got = 0;
    slot->received = 0;
    slot->start = mux->queued;
    slot->again = 0;

    ngx_queue_insert_tail(&mux->waiting, &slot->queue);

    op->mux_slot = slot;

    return NGX_OK;
}


/* room for size more bytes: commands are copied, their request may end */

static ngx_int_t
ngx_http_paygw_mux_reserve(ngx_http_paygw_redis_mux_t *mux, size_t size)
{
    size_t   pending, total;
    u_char  *p;

    if ((size_t) (mux->end - mux->last) >= size) {
        return NGX_OK;
    }

    pending = mux->last - mux->pos;

    if (pending + size > NGX_HTTP_PAYGW_MUX_MAX_PENDING) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "paygw redis: %uz bytes of commands wait to be sent "
                      "to %V, no more are queued", pending, &mux->addr.name);
        return NGX_ERROR;
    }

    total = ngx_max(2 * (pending + size),
                    (size_t) NGX_HTTP_PAYGW_MUX_BUFFER);

    p = ngx_alloc(total, ngx_cycle->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (pending) {
        ngx_memcpy(p, mux->pos, pending);
    }

    if (mux->start) {
        ngx_free(mux->start);
    }

    mux->start = p;
    mux->pos = p;
    mux->last = p + pending;
    mux->end = p + total;

    return NGX_OK;
}


static void
ngx_http_paygw_mux_flush_handler(ngx_event_t *ev)
{
    ngx_http_paygw_redis_mux_t *mux = ev->data;

    switch (mux->state) {

    case NGX_HTTP_PAYGW_MUX_CLOSED:
        if (!ngx_queue_empty(&mux->waiting)) {
            ngx_http_paygw_mux_connect(mux);
        }
        return;

    case NGX_HTTP_PAYGW_MUX_CONNECTING:
        return;

    default: /* NGX_HTTP_PAYGW_MUX_OPEN */
        ngx_http_paygw_mux_write(mux);
    }
}


static void
ngx_http_paygw_mux_connect(ngx_http_paygw_redis_mux_t *mux)
{
    ngx_int_t          rc;
    ngx_connection_t  *c;

    ngx_memzero(&mux->peer, sizeof(ngx_peer_connection_t));

    mux->peer.sockaddr = mux->addr.sockaddr;
    mux->peer.socklen = mux->addr.socklen;
    mux->peer.name = &mux->addr.name;
    mux->peer.get = ngx_event_get_peer;
    mux->peer.log = ngx_cycle->log;
    mux->peer.log_error = NGX_ERROR_ERR;

    rc = ngx_event_connect_peer(&mux->peer);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "paygw redis mux: connect to %V: %i", &mux->addr.name, rc);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        mux->peer.connection = NULL;
        ngx_http_paygw_mux_fail(mux, NGX_HTTP_SERVICE_UNAVAILABLE,
                                "unavailable", 1);
        return;
    }

    c = mux->peer.connection;

    c->data = mux;
    c->read->handler = ngx_http_paygw_mux_read_handler;
    c->write->handler = ngx_http_paygw_mux_connected;

    mux->state = NGX_HTTP_PAYGW_MUX_CONNECTING;

    if (rc == NGX_AGAIN) {
        ngx_add_timer(c->write, mux->connect_timeout);
        return;
    }

    ngx_http_paygw_mux_connected(c->write);
}


static void
ngx_http_paygw_mux_connected(ngx_event_t *wev)
{
    int                          err;
    socklen_t                    len;
    ngx_connection_t            *c;
    ngx_http_paygw_redis_mux_t  *mux;

    c = wev->data;
    mux = c->data;

    if (wev->timedout) {
        ngx_http_paygw_mux_timed_out(mux, "connect to");
        return;
    }

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err) {
        ngx_log_error(NGX_LOG_ERR, c->log, err,
                      "paygw redis: connect to %V failed", &mux->addr.name);
        ngx_http_paygw_mux_fail(mux, NGX_HTTP_SERVICE_UNAVAILABLE,
                                "unavailable", 1);
        return;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "paygw redis mux: connected");

    mux->state = NGX_HTTP_PAYGW_MUX_OPEN;
    wev->handler = ngx_http_paygw_mux_write_handler;

    ngx_http_paygw_mux_write(mux);
}


static void
ngx_http_paygw_mux_write(ngx_http_paygw_redis_mux_t *mux)
{
    ssize_t            n;
    ngx_uint_t         progress;
    ngx_connection_t  *c;

    c = mux->peer.connection;
    progress = 0;

    while (mux->pos < mux->last) {

        n = c->send(c, mux->pos, mux->last - mux->pos);

        if (n == NGX_AGAIN) {
            break;
        }

        /* nothing taken of a non-empty write: a socket that is not usable */

        if (n == NGX_ERROR || n == 0) {
            ngx_http_paygw_mux_fail(mux, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "unavailable", 0);
            return;
        }

        mux->pos += n;
        mux->sent += n;
        progress = 1;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "paygw redis mux: %uz bytes left to send",
                   (size_t) (mux->last - mux->pos));

    if (mux->pos == mux->last) {
        ngx_http_paygw_mux_drained(mux);

        if (c->write->timer_set) {
            ngx_del_timer(c->write);
        }

    } else if (progress || !c->write->timer_set) {

        /* paygw_redis_timeout from the last bytes Redis took, not the last
         * command queued: steady traffic must not keep a stuck Redis alive */

        ngx_add_timer(c->write, mux->timeout);
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        ngx_http_paygw_mux_fail(mux, NGX_HTTP_SERVICE_UNAVAILABLE,
                                "unavailable", 0);
        return;
    }

    ngx_http_paygw_mux_arm(mux);
}


/* all written: the buffer starts over, at its usual size */

static void
ngx_http_paygw_mux_drained(ngx_http_paygw_redis_mux_t *mux)
{
    if (mux->start
        && (size_t) (mux->end - mux->start) > NGX_HTTP_PAYGW_MUX_BUFFER)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                       "paygw redis mux: send buffer of %uz bytes freed",
                       (size_t) (mux->end - mux->start));

        ngx_free(mux->start);
        mux->start = NULL;
        mux->end = NULL;
    }

    mux->pos = mux->start;
    mux->last = mux->start;
}


static void
ngx_http_paygw_mux_write_handler(ngx_event_t *wev)
{
    ngx_connection_t            *c;
    ngx_http_paygw_redis_mux_t  *mux;

    c = wev->data;
    mux = c->data;

    if (wev->timedout) {
        ngx_http_paygw_mux_timed_out(mux, "sending to");
        return;
    }

    ngx_http_paygw_mux_write(mux);
}


static void
ngx_http_paygw_mux_read_handler(ngx_event_t *rev)
{
    ssize_t                      n;
    ngx_uint_t                   progress;
    ngx_connection_t            *c;
    ngx_http_paygw_redis_mux_t  *mux;
    u_char                       buf[NGX_HTTP_PAYGW_MUX_READ];

    c = rev->data;
    mux = c->data;

    if (rev->timedout) {
        ngx_http_paygw_mux_timed_out(mux, "waiting for");
        return;
    }

    /* the worker is exiting: an idle connection goes now */

    if (c->close) {
        ngx_http_paygw_mux_fail(mux, NGX_HTTP_SERVICE_UNAVAILABLE,
                                "unavailable", 1);
        return;
    }

    progress = 0;

    for ( ;; ) {

        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            if (!ngx_queue_empty(&mux->waiting)) {
                ngx_log_error(NGX_LOG_ERR, c->log, 0,
                              "paygw redis: %V closed the connection with "
                              "replies due", &mux->addr.name);
            }

            ngx_http_paygw_mux_fail(mux, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "unavailable", 0);
            return;
        }

        progress = 1;

        if (redisReaderFeed(mux->reader, (char *) buf, n) != REDIS_OK
            || ngx_http_paygw_mux_dispatch(mux) != NGX_OK)
        {
            ngx_http_paygw_mux_fail(mux, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "unavailable", 0);
            return;
        }

        if (mux->state != NGX_HTTP_PAYGW_MUX_OPEN) {
            return;
        }
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_paygw_mux_fail(mux, NGX_HTTP_SERVICE_UNAVAILABLE,
                                "unavailable", 0);
        return;
    }

    /*
     * Redis answered: paygw_redis_timeout starts again from here (within
     * NGX_TIMER_LAZY_DELAY, as for nginx's own upstreams: no tree update
     * on every read)
     */

    if (progress && !ngx_queue_empty(&mux->waiting)) {
        ngx_add_timer(rev, mux->timeout);
    }

    ngx_http_paygw_mux_arm(mux);
}


/*
 * Replies to the round trip at the head of the queue; one whose last
 * reply came is taken off the queue before its request is woken (that
 * request may queue its next round trip at once).
 */

static ngx_int_t
ngx_http_paygw_mux_dispatch(ngx_http_paygw_redis_mux_t *mux)
{
    void                       *reply;
    size_t                      before, after;
    ngx_queue_t                *q;
    redisReader                *reader;
    ngx_http_paygw_redis_op_t  *op;
    ngx_http_paygw_mux_slot_t  *slot;

    reader = mux->reader;

    while (!ngx_queue_empty(&mux->waiting)) {

        q = ngx_queue_head(&mux->waiting);
        slot = ngx_queue_data(q, ngx_http_paygw_mux_slot_t, queue);

        before = reader->len - reader->pos;

        /* a reply before its command was written (an error on accept, or
         * bytes nobody asked for) would shift every reply after it */

        if (before && slot->start >= mux->sent) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "redis sent a reply to a command not yet sent");
            return NGX_ERROR;
        }

        if (redisReaderGetReply(reader, &reply) != REDIS_OK) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "redis sent an invalid reply: %s", reader->errstr);
            return NGX_ERROR;
        }

        after = reader->len - reader->pos;
        slot->received += before - after;

        if (slot->received + (reply ? 0 : after) > mux->max_reply) {
            if (reply) {
                freeReplyObject(reply);
            }

            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "redis replies exceed paygw_redis_max_reply_size "
                          "(%uz bytes)", mux->max_reply);
            return NGX_ERROR;
        }

        if (reply == NULL) {
            return NGX_OK;
        }

        op = slot->op;

        if (op) {
            op->in[slot->got] = reply;

        } else {
            freeReplyObject(reply);
        }

        if (++slot->got < slot->expect) {
            continue;
        }

        ngx_queue_remove(q);
        ngx_queue_insert_tail(&mux->spare, q);

        if (op) {
            op->mux_slot = NULL;
            op->got = slot->got;
            op->call.ok = 1;
            ngx_http_paygw_mux_complete(op);

            if (mux->state != NGX_HTTP_PAYGW_MUX_OPEN) {
                return NGX_OK;
            }
        }
    }

    if (reader->pos < reader->len) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "redis sent more than the replies asked for");
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * While replies are due, Redis has paygw_redis_timeout to send the next
 * bytes of them (as an upstream's read timeout); a connection with none
 * due is idle, and goes when the worker exits.
 */

static void
ngx_http_paygw_mux_arm(ngx_http_paygw_redis_mux_t *mux)
{
    ngx_connection_t  *c;

    c = mux->peer.connection;

    if (ngx_queue_empty(&mux->waiting)) {
        if (c->read->timer_set) {
            ngx_del_timer(c->read);
        }

        c->idle = 1;

        if (ngx_exiting) {
            ngx_http_paygw_mux_fail(mux, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "unavailable", 1);
        }

        return;
    }

    c->idle = 0;

    /* pushed back only when Redis answers (the read handler), never by
     * more commands queued behind a silent Redis */

    if (!c->read->timer_set) {
        ngx_add_timer(c->read, mux->timeout);
    }
}


/*
 * The connection is closed and the round trips that may have reached
 * Redis fail: nothing tells which of their commands ran.  Those not
 * written at all go on a new connection, unless unsent_too (a connect
 * that failed, a Redis that hangs: they would only wait for the same).
 * The failed are taken off first: a request woken may queue another
 * round trip at once.
 */

static void
ngx_http_paygw_mux_fail(ngx_http_paygw_redis_mux_t *mux, ngx_uint_t status,
    const char *why, ngx_uint_t unsent_too)
{
    ngx_queue_t                 failed, *q;
    ngx_http_paygw_redis_op_t  *op;
    ngx_http_paygw_mux_slot_t  *slot;

    /*
     * Kept only once, and only from a connection that was open: one
     * that closes again before they are written (or never opened) is
     * not going to take them.
     */

    if (mux->state != NGX_HTTP_PAYGW_MUX_OPEN) {
        unsent_too = 1;
    }

    for (q = ngx_queue_last(&mux->waiting);
         q != ngx_queue_sentinel(&mux->waiting) && !unsent_too;
         q = ngx_queue_prev(q))
    {
        slot = ngx_queue_data(q, ngx_http_paygw_mux_slot_t, queue);

        if (slot->start < mux->sent) {
            break;
        }

        if (slot->again) {
            unsent_too = 1;
        }

        slot->again = 1;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "paygw redis mux: closed, state %d, %s, unsent too: %ui",
                   mux->state, why, unsent_too);

    if (mux->peer.connection) {
        ngx_close_connection(mux->peer.connection);
        mux->peer.connection = NULL;
    }

    mux->state = NGX_HTTP_PAYGW_MUX_CLOSED;

    if (mux->reader) {
        redisReaderFree(mux->reader);
        mux->reader = NULL;
    }

    /* every slot then fails as written; the buffer is dropped below */

    if (unsent_too) {
        mux->sent = mux->queued;
    }

    ngx_queue_init(&failed);

    while (!ngx_queue_empty(&mux->waiting)) {
        q = ngx_queue_head(&mux->waiting);
        slot = ngx_queue_data(q, ngx_http_paygw_mux_slot_t, queue);

        if (slot->start >= mux->sent) {
            break;
        }

        ngx_queue_remove(q);
        ngx_queue_insert_tail(&failed, q);
    }

    /* the rest of a command cut short in the middle is never sent */

    if (ngx_queue_empty(&mux->waiting)) {
        ngx_http_paygw_mux_drained(mux);
        mux->sent = mux->queued;

    } else {
        q = ngx_queue_head(&mux->waiting);
        slot = ngx_queue_data(q, ngx_http_paygw_mux_slot_t, queue);

        mux->pos += slot->start - mux->sent;
        mux->sent = slot->start;

        mux->reader = redisReaderCreate();

        if (mux->reader == NULL) {
            ngx_http_paygw_mux_fail(mux, status, why, 1);

        } else {
            ngx_post_event(&mux->flush, &ngx_posted_events);
        }
    }

    while (!ngx_queue_empty(&failed)) {
        q = ngx_queue_head(&failed);
        ngx_queue_remove(q);
        ngx_queue_insert_tail(&mux->spare, q);

        slot = ngx_queue_data(q, ngx_http_paygw_mux_slot_t, queue);
        op = slot->op;

        if (op == NULL) {
            continue;
        }

        op->mux_slot = NULL;

        ngx_http_paygw_call_fail(&op->call, op->request->pool, status,
                                 "%s", why);
        ngx_http_paygw_mux_complete(op);
    }
}


/* nothing else is tried on a Redis that hangs: it would hang again */

static void
ngx_http_paygw_mux_timed_out(ngx_http_paygw_redis_mux_t *mux,
    const char *doing)
{
    ngx_log_error(NGX_LOG_ERR, mux->peer.connection->log, NGX_ETIMEDOUT,
                  "paygw redis: %s %V timed out", doing, &mux->addr.name);

    ngx_http_paygw_mux_fail(mux, NGX_HTTP_GATEWAY_TIME_OUT, "timed out", 1);
}


/* as nginx wakes a parent when its subrequest ends */

static void
ngx_http_paygw_mux_complete(ngx_http_paygw_redis_op_t *op)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = op->request;
    c = r->connection;

    op->call.done = 1;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "paygw redis mux: round trip done, ok:%d", op->call.ok);

    if (!op->call.ok) {
        ngx_http_paygw_m_backend_error(r, NGX_HTTP_PAYGW_M_BACKEND_REDIS);
    }

    if (ngx_http_post_request(r, NULL) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_ERROR);
    }

    ngx_http_run_posted_requests(c);
}


/* the op's request ends with its round trip in flight */

void
ngx_http_paygw_redis_mux_forget(ngx_http_paygw_redis_op_t *op)
{
    ngx_http_paygw_mux_slot_t  *slot;

    slot = op->mux_slot;

    if (slot == NULL) {
        return;
    }

    /* its replies still come, in their turn: they are dropped then */

    slot->op = NULL;
    op->mux_slot = NULL;

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "paygw redis mux: round trip left by its request");
}


static void
ngx_http_paygw_mux_cleanup(void *data)
{
    ngx_http_paygw_redis_mux_t *mux = data;

    if (mux->flush.posted) {
        ngx_delete_posted_event(&mux->flush);
    }

    if (mux->peer.connection) {
        ngx_close_connection(mux->peer.connection);
        mux->peer.connection = NULL;
    }

    if (mux->reader) {
        redisReaderFree(mux->reader);
        mux->reader = NULL;
    }

    if (mux->start) {
        ngx_free(mux->start);
        mux->start = NULL;
    }
}
