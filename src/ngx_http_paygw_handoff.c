
/*
 * paygw: webhook events handed off from the request that wrote them to
 * the next delivery round, without a claim.
 *
 *   INSERT, leased to this nginx -> COMMIT -> queued in paygw_zone ->
 *   taken by a round of any worker -> sent -> outcome under the lease
 *
 * A claim round pays for every event twice in MariaDB: its UPDATE
 * writes the lease (a row and an idx_due entry), and its read-back
 * SELECT fetches the payload the gateway had in memory a moment
 * before.  Here the request that writes an event inserts it already
 * leased (lease_owner: this instance's name, kept in the zone; its due
 * time at the lease's end, out of the claims' way), and once its
 * transaction committed queues it in the zone.  The worker's ticker is
 * brought forward, so the event goes out within tens of milliseconds
 * instead of at the next interval.
 *
 * Nothing depends on the queue for safety: an event whose queueing
 * failed (zone full, worker killed, nginx restarted) is an ordinary
 * leased row, claimed by a round when its lease ends.  A reload keeps
 * the zone and with it the queue and the instance's name.
 */


#include "ngx_http_paygw_webhook.h"
#include "ngx_http_paygw_zone.h"
#include <openssl/rand.h>


/* an event in the zone's queue */

typedef struct {
    ngx_queue_t                   queue;
    size_t                        size;          /* allocated */
    ngx_msec_t                    half;          /* half its lease gone */
    uint64_t                      id;            /* outbox_events.id */
    uint32_t                      len[NGX_HTTP_PAYGW_HO_FIELDS];
    u_char                        data[1];
} ngx_http_paygw_handoff_item_t;


/* an event of a transaction, until it commits */

typedef struct {
    ngx_uint_t                    stmt;          /* its INSERT */
    ngx_msec_t                    half;          /* counted from before
                                                    the INSERT ran */
    ngx_str_t                     field[NGX_HTTP_PAYGW_HO_FIELDS];
} ngx_http_paygw_handoff_ev_t;


static ngx_http_paygw_handoff_sh_t *ngx_http_paygw_handoff_sh(
    ngx_http_request_t *r, ngx_slab_pool_t **shpool);
static void ngx_http_paygw_handoff_committed(ngx_http_paygw_mysql_op_t *op);
static ngx_uint_t ngx_http_paygw_handoff_push(ngx_slab_pool_t *shpool,
    ngx_http_paygw_handoff_sh_t *ho, ngx_uint_t max,
    ngx_http_paygw_handoff_ev_t *he, uint64_t id);
static ngx_int_t ngx_http_paygw_handoff_event(ngx_pool_t *pool,
    ngx_http_paygw_handoff_item_t *it, ngx_http_paygw_wh_event_t *ev);


ngx_int_t
ngx_http_paygw_handoff_init(ngx_http_paygw_handoff_sh_t *ho,
    ngx_slab_pool_t *shpool)
{
    u_char  rnd[NGX_HTTP_PAYGW_HANDOFF_OWNER_LEN / 2];

    /* the instance's lease name: unique among the gateways on one DB */

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return NGX_ERROR;
    }

    (void) ngx_hex_dump(ho->owner, rnd, sizeof(rnd));

    ngx_queue_init(&ho->queue);
    ho->cap = (shpool->end - (u_char *) shpool) / 4;

    return NGX_OK;
}


/*
 * Webhooks, a zone, and room in its queue: the lease name for the
 * event's INSERT; otherwise NULL and the event waits for a claim round.
 * Half the room is kept for the events of transactions running now.
 */

ngx_str_t *
ngx_http_paygw_handoff_lease(ngx_http_request_t *r)
{
    ngx_str_t                      *owner;
    ngx_slab_pool_t                *shpool;
    ngx_http_paygw_handoff_sh_t    *ho;
    ngx_http_paygw_webhook_conf_t  *wc;

    wc = ngx_http_paygw_webhook_conf(r);
    ho = ngx_http_paygw_handoff_sh(r, &shpool);

    if (ho == NULL || wc->handoff == 0
        || ho->count >= (wc->handoff + 1) / 2 || ho->bytes >= ho->cap / 2)
    {
        return NULL;
    }

    owner = ngx_palloc(r->pool, sizeof(ngx_str_t));
    if (owner == NULL) {
        return NULL;
    }

    owner->data = ho->owner;
    owner->len = NGX_HTTP_PAYGW_HANDOFF_OWNER_LEN;

    return owner;
}


static ngx_http_paygw_handoff_sh_t *
ngx_http_paygw_handoff_sh(ngx_http_request_t *r, ngx_slab_pool_t **shpool)
{
    ngx_http_paygw_shctx_t         *sh;
    ngx_http_paygw_webhook_conf_t  *wc;

    wc = ngx_http_paygw_webhook_conf(r);
    sh = ngx_http_paygw_shctx(r);

    /*
     * Not "handoff": a reload that turned it off still sends what the
     * queue holds.
     */

    if (wc == NULL || wc->self.addr == NULL || sh == NULL) {
        return NULL;
    }

    *shpool = ngx_http_paygw_shpool(r);

    return &sh->handoff;
}


/* the INSERT just added to op writes a leased event: queue it on COMMIT */

ngx_int_t
ngx_http_paygw_handoff_add(ngx_http_request_t *r,
    ngx_http_paygw_mysql_op_t *op, ngx_str_t *fields)
{
    ngx_uint_t                    i;
    ngx_array_t                  *evs;
    ngx_http_paygw_handoff_ev_t  *he;

    evs = op->data;

    if (evs == NULL) {
        evs = ngx_array_create(r->pool, 2,
                               sizeof(ngx_http_paygw_handoff_ev_t));
        if (evs == NULL) {
            return NGX_ERROR;
        }

        op->data = evs;
        op->committed = ngx_http_paygw_handoff_committed;
    }

    he = ngx_array_push(evs);
    if (he == NULL) {
        return NGX_ERROR;
    }

    he->stmt = op->stmts.nelts - 1;
    he->half = ngx_current_msec + ngx_http_paygw_webhook_conf(r)->lease / 2;

    for (i = 0; i < NGX_HTTP_PAYGW_HO_FIELDS; i++) {
        he->field[i] = fields[i];
    }

    return NGX_OK;
}


static void
ngx_http_paygw_handoff_committed(ngx_http_paygw_mysql_op_t *op)
{
    ngx_uint_t                      i, n;
    ngx_array_t                    *evs;
    ngx_slab_pool_t                *shpool;
    ngx_http_request_t             *r;
    ngx_http_paygw_sql_stmt_t      *s;
    ngx_http_paygw_handoff_sh_t    *ho;
    ngx_http_paygw_handoff_ev_t    *he;
    ngx_http_paygw_webhook_conf_t  *wc;

    r = op->request;
    evs = op->data;

    if (r == NULL || evs == NULL) {
        return;
    }

    ho = ngx_http_paygw_handoff_sh(r, &shpool);
    if (ho == NULL) {
        return;
    }

    wc = ngx_http_paygw_webhook_conf(r);
    he = evs->elts;
    s = op->stmts.elts;
    n = 0;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < evs->nelts; i++) {
        if (s[he[i].stmt].insert_id) {
            n += ngx_http_paygw_handoff_push(shpool, ho, wc->handoff,
                                             &he[i], s[he[i].stmt].insert_id);
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw handoff: %ui of %ui events queued", n, evs->nelts);

    if (n) {
        ngx_http_paygw_self_soon(&wc->self,
                                 ngx_min(wc->self.interval,
                                         NGX_HTTP_PAYGW_HO_DELAY));
    }
}


/* under the zone's lock; full: the event waits for its lease to end */

static ngx_uint_t
ngx_http_paygw_handoff_push(ngx_slab_pool_t *shpool,
    ngx_http_paygw_handoff_sh_t *ho, ngx_uint_t max,
    ngx_http_paygw_handoff_ev_t *he, uint64_t id)
{
    u_char                         *p;
    size_t                          size;
    ngx_uint_t                      i, log_nomem;
    ngx_http_paygw_handoff_item_t  *it;

    size = offsetof(ngx_http_paygw_handoff_item_t, data);

    for (i = 0; i < NGX_HTTP_PAYGW_HO_FIELDS; i++) {
        size += he->field[i].len;
    }

    if (ho->count >= max || ho->bytes + size > ho->cap) {
        return 0;
    }

    /* a full zone is an expected outcome here, not an error to log */

    log_nomem = shpool->log_nomem;
    shpool->log_nomem = 0;
    it = ngx_slab_alloc_locked(shpool, size);
    shpool->log_nomem = log_nomem;

    if (it == NULL) {
        return 0;
    }

    it->size = size;
    it->half = he->half;
    it->id = id;
    p = it->data;

    for (i = 0; i < NGX_HTTP_PAYGW_HO_FIELDS; i++) {
        it->len[i] = (uint32_t) he->field[i].len;

        /* no destination: no data to copy */

        if (he->field[i].len) {
            p = ngx_cpymem(p, he->field[i].data, he->field[i].len);
        }
    }

    ngx_queue_insert_tail(&ho->queue, &it->queue);
    ho->count++;
    ho->bytes += size;

    return 1;
}


/*
 * Whether this round claims due rows (retries, events whose lease ran
 * out, events that found no room) instead of taking handed-off ones:
 * once an interval for the whole instance, and again at once after a
 * claim that filled its batch (a backlog).
 */

ngx_uint_t
ngx_http_paygw_handoff_claim_turn(ngx_http_request_t *r,
    ngx_http_paygw_webhook_conf_t *wc)
{
    ngx_slab_pool_t              *shpool;
    ngx_http_paygw_handoff_sh_t  *ho;

    ho = ngx_http_paygw_handoff_sh(r, &shpool);

    if (ho == NULL) {
        return 1;
    }

    if (ho->count
        && (ngx_msec_int_t) (ngx_current_msec - ho->claimed_at)
           < (ngx_msec_int_t) wc->self.interval)
    {
        return 0;
    }

    ho->claimed_at = ngx_current_msec;

    return 1;
}


void
ngx_http_paygw_handoff_claimed(ngx_http_request_t *r, ngx_uint_t full)
{
    ngx_slab_pool_t              *shpool;
    ngx_http_paygw_handoff_sh_t  *ho;

    ho = ngx_http_paygw_handoff_sh(r, &shpool);

    if (ho && full) {
        /* a backlog: the next round claims again */
        ho->claimed_at = 0;
    }
}


/*
 * Up to "batch" events from the queue, oldest first, into the round's
 * pool: unlinked under the zone's lock, copied without it.  *half: when
 * half the lease of the earliest leased of them has gone.
 */

ngx_uint_t
ngx_http_paygw_handoff_take(ngx_http_request_t *r,
    ngx_http_paygw_webhook_conf_t *wc, ngx_http_paygw_wh_event_t **events,
    ngx_msec_t *half, ngx_str_t *owner)
{
    ngx_int_t                       rc;
    ngx_uint_t                      n, i;
    ngx_queue_t                    *q, taken;
    ngx_slab_pool_t                *shpool;
    ngx_http_paygw_wh_event_t      *evs;
    ngx_http_paygw_handoff_sh_t    *ho;
    ngx_http_paygw_handoff_item_t  *it;

    ho = ngx_http_paygw_handoff_sh(r, &shpool);

    if (ho == NULL || ho->count == 0) {
        return 0;
    }

    ngx_queue_init(&taken);
    n = 0;

    ngx_shmtx_lock(&shpool->mutex);

    while (n < wc->batch && !ngx_queue_empty(&ho->queue)) {
        q = ngx_queue_head(&ho->queue);
        ngx_queue_remove(q);
        ngx_queue_insert_tail(&taken, q);
        n++;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (n == 0) {
        return 0;
    }

    evs = ngx_pcalloc(r->pool, n * sizeof(ngx_http_paygw_wh_event_t));
    rc = (evs == NULL) ? NGX_ERROR : NGX_OK;
    i = 0;

    q = ngx_queue_head(&taken);
    it = ngx_queue_data(q, ngx_http_paygw_handoff_item_t, queue);
    *half = it->half;

    while (q != ngx_queue_sentinel(&taken)) {
        it = ngx_queue_data(q, ngx_http_paygw_handoff_item_t, queue);

        /* COMMIT order is not lease order: the earliest lease counts */

        if ((ngx_msec_int_t) (it->half - *half) < 0) {
            *half = it->half;
        }

        if (rc == NGX_OK) {
            rc = ngx_http_paygw_handoff_event(r->pool, it, &evs[i++]);
        }

        q = ngx_queue_next(q);
    }

    /* not copied (out of memory): back to the claim rounds, by lease */

    ngx_shmtx_lock(&shpool->mutex);

    while (!ngx_queue_empty(&taken)) {
        q = ngx_queue_head(&taken);
        it = ngx_queue_data(q, ngx_http_paygw_handoff_item_t, queue);
        ngx_queue_remove(q);
        ho->count--;
        ho->bytes -= it->size;
        ngx_slab_free_locked(shpool, it);
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (rc != NGX_OK) {
        return 0;
    }

    *events = evs;
    owner->data = ho->owner;
    owner->len = NGX_HTTP_PAYGW_HANDOFF_OWNER_LEN;

    return n;
}


static ngx_int_t
ngx_http_paygw_handoff_event(ngx_pool_t *pool,
    ngx_http_paygw_handoff_item_t *it, ngx_http_paygw_wh_event_t *ev)
{
    u_char      *p, *q;
    size_t       len;
    ngx_str_t   *f[NGX_HTTP_PAYGW_HO_FIELDS];
    ngx_uint_t   i;

    len = it->size - offsetof(ngx_http_paygw_handoff_item_t, data);

    p = ngx_pnalloc(pool, len + NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    f[NGX_HTTP_PAYGW_HO_EVENT_ID] = &ev->event_id;
    f[NGX_HTTP_PAYGW_HO_MERCHANT] = &ev->merchant_id;
    f[NGX_HTTP_PAYGW_HO_TYPE] = &ev->type;
    f[NGX_HTTP_PAYGW_HO_URL] = &ev->url;
    f[NGX_HTTP_PAYGW_HO_PAYLOAD] = &ev->payload;

    q = it->data;

    for (i = 0; i < NGX_HTTP_PAYGW_HO_FIELDS; i++) {
        f[i]->data = p;
        f[i]->len = it->len[i];
        p = ngx_cpymem(p, q, it->len[i]);
        q += it->len[i];
    }

    /* no destination: as a claim reads it back, SQL NULL */

    if (ev->url.len == 0) {
        ev->url.data = NULL;
    }

    ev->id.data = p;
    ev->id.len = ngx_sprintf(p, "%uL", it->id) - p;

    return NGX_OK;
}


ngx_uint_t
ngx_http_paygw_handoff_waiting(ngx_cycle_t *cycle)
{
    ngx_http_paygw_shctx_t  *sh;

    sh = ngx_http_paygw_shctx_cycle(cycle);

    return sh ? sh->handoff.count : 0;
}
