
/*
 * paygw: webhook delivery rounds and the merchant's events API.
 *
 *   POST /v1/admin/webhooks/deliver   (admin; sent by each worker's
 *        ticker, ngx_http_paygw_webhook.c): one delivery round:
 *        claimed -> streamed -> sent -> recorded
 *   GET  /v1/events?after=EVENT_ID&limit=N      the merchant's events
 *   POST /v1/events/{id}/redeliver               one more attempt now
 *
 * A round claims up to "batch" due events with a lease, appends the new
 * ones to the Redis stream paygw:events (XADD ... MAXLEN ~), POSTs each
 * to its notify_url through a subrequest to the webhook location
 * (proxy_pass: nginx's TLS, resolver and timeouts), up to "parallel"
 * at a time, signed per Standard Webhooks, and writes each
 * outcome back under its lease: 2xx delivered; 410 disables the
 * endpoint; anything else retries on the schedule.
 */


#include "ngx_http_paygw_webhook.h"
#include "ngx_http_paygw_payments.h"
#include "ngx_http_paygw_crypto.h"
#include "ngx_http_paygw_request.h"
#include <openssl/rand.h>


#define NGX_HTTP_PAYGW_EV_LIMIT     100

/* how an outcome is written (deliver_batch) */
#define NGX_HTTP_PAYGW_EV_ONE        0   /* a statement of its own */
#define NGX_HTTP_PAYGW_EV_SKIPPED    1   /* no destination: streamed */
#define NGX_HTTP_PAYGW_EV_DELIVERED  2   /* 2xx, by status */
#define NGX_HTTP_PAYGW_EV_DEFERRED   3   /* not started: put back */


typedef struct {
    ngx_http_paygw_call_t         group;     /* done when all POSTs are */
    ngx_str_t                     owner;     /* the lease's name */
    ngx_http_paygw_wh_event_t    *events;
    ngx_uint_t                    nevents;
    ngx_uint_t                    next;      /* the next to start */
    ngx_uint_t                    running;
    ngx_msec_t                    half;      /* half its events' lease
                                                gone: start no POST */
    ngx_uint_t                    delivered;
    ngx_uint_t                    failed;
    ngx_http_paygw_redis_op_t    *redis;
    ngx_uint_t                    limit;     /* events API */
    ngx_str_t                     after;
    unsigned                      sending:1;
    unsigned                      cleanup:1;
    unsigned                      handed:1;  /* handed off, not claimed */
} ngx_http_paygw_wh_round_t;


static ngx_int_t ngx_http_paygw_deliver_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_deliver_claimed(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_deliver_take(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_deliver_taken(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_deliver_ready(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_deliver_streamed(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_deliver_send(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_uint_t ngx_http_paygw_deliver_late(
    ngx_http_paygw_wh_round_t *rd);
static ngx_uint_t ngx_http_paygw_deliver_merchants(
    ngx_http_paygw_wh_event_t *ev);
static ngx_int_t ngx_http_paygw_deliver_one(ngx_http_request_t *r,
    ngx_http_paygw_webhook_conf_t *wc, ngx_http_paygw_wh_round_t *rd,
    ngx_http_paygw_wh_event_t *ev);
static ngx_int_t ngx_http_paygw_deliver_record(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_deliver_recorded(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_deliver_kept(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_deliver_answer(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_deliver_stream(ngx_http_request_t *r,
    ngx_http_paygw_wh_round_t *rd);
static ngx_int_t ngx_http_paygw_deliver_resolve(ngx_http_request_t *r,
    ngx_http_paygw_wh_round_t *rd, ngx_http_paygw_wh_event_t *ev);
static void ngx_http_paygw_deliver_resolved(ngx_resolver_ctx_t *rctx);
static void ngx_http_paygw_deliver_cleanup(void *data);
static ngx_int_t ngx_http_paygw_deliver_post(ngx_http_request_t *r,
    ngx_http_paygw_webhook_conf_t *wc, ngx_http_paygw_wh_round_t *rd,
    ngx_http_paygw_wh_event_t *ev);
static ngx_int_t ngx_http_paygw_deliver_sign(ngx_http_request_t *r,
    ngx_http_paygw_webhook_conf_t *wc, ngx_http_paygw_wh_event_t *ev);
static ngx_int_t ngx_http_paygw_deliver_request(ngx_http_request_t *sr,
    ngx_http_paygw_wh_event_t *ev);
static ngx_uint_t ngx_http_paygw_deliver_slot(ngx_http_paygw_wh_round_t *rd);
static ngx_int_t ngx_http_paygw_deliver_done(ngx_http_request_t *r,
    void *data, ngx_int_t rc);
static ngx_int_t ngx_http_paygw_deliver_batch(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_uint_t ngx_http_paygw_deliver_kind(ngx_http_paygw_wh_event_t *ev);
static ngx_uint_t ngx_http_paygw_deliver_ok(ngx_http_paygw_wh_event_t *ev);
static ngx_uint_t ngx_http_paygw_deliver_skipped(
    ngx_http_paygw_wh_event_t *ev);
static const char *ngx_http_paygw_deliver_outcome(
    ngx_http_paygw_webhook_conf_t *wc, ngx_http_paygw_wh_event_t *ev,
    ngx_msec_t *delay);
static ngx_int_t ngx_http_paygw_events_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_events_listed(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static json_t *ngx_http_paygw_events_row(ngx_http_paygw_sql_stmt_t *s,
    ngx_uint_t row);
static ngx_int_t ngx_http_paygw_redeliver_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_redeliver_done(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_uint_t ngx_http_paygw_ev_uint(ngx_str_t *v);
static ngx_uint_t ngx_http_paygw_ev_eq(ngx_str_t *a, ngx_str_t *b);
static json_t *ngx_http_paygw_ev_str(ngx_str_t *v);


ngx_int_t
ngx_http_paygw_deliver(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    return ngx_http_paygw_steps(r, ctx, ngx_http_paygw_deliver_start);
}


static ngx_int_t
ngx_http_paygw_deliver_start(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    u_char                         *p;
    ngx_http_paygw_wh_round_t      *rd;
    ngx_http_paygw_webhook_conf_t  *wc;
    u_char                          rnd[16];

    wc = ngx_http_paygw_webhook_conf(r);

    if (wc == NULL) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_NOT_FOUND, "not_found",
                                   "webhooks are not configured");
    }

    rd = ngx_pcalloc(r->pool, sizeof(ngx_http_paygw_wh_round_t));
    if (rd == NULL) {
        return NGX_ERROR;
    }

    rd->half = ngx_current_msec + wc->lease / 2;
    ctx->events = rd;

    if (!ngx_http_paygw_handoff_claim_turn(r, wc)) {
        return ngx_http_paygw_deliver_take(r, ctx);
    }

    p = ngx_pnalloc(r->pool, 2 * sizeof(rnd));
    if (p == NULL || RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return NGX_ERROR;
    }

    rd->owner.data = p;
    rd->owner.len = ngx_hex_dump(p, rnd, sizeof(rnd)) - p;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw deliver: step \"start\" lease %V", &rd->owner);

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_claim_events(ctx->mysql, &rd->owner,
                                             wc->lease, wc->batch)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_paygw_mysql_wait(r, ctx, ngx_http_paygw_deliver_claimed);
}


static ngx_int_t
ngx_http_paygw_deliver_claimed(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_uint_t                  i;
    ngx_str_t                  *v;
    ngx_http_paygw_sql_stmt_t  *s;
    ngx_http_paygw_wh_round_t  *rd;
    ngx_http_paygw_wh_event_t  *ev;

    rd = ctx->events;

    if (!ctx->mysql->call.ok || ctx->mysql->err_no) {
        return ngx_http_paygw_mysql_down(r, ctx);
    }

    s = ctx->mysql->stmts.elts;
    s = &s[3];   /* SET, SET TRANSACTION, UPDATE, SELECT */

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw deliver: step \"claimed\" %ui events", s->nrows);

    rd->nevents = s->nrows;

    if (rd->nevents == 0) {
        return ngx_http_paygw_deliver_record(r, ctx);
    }

    rd->events = ngx_pcalloc(r->pool,
                             rd->nevents * sizeof(ngx_http_paygw_wh_event_t));
    if (rd->events == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < rd->nevents; i++) {
        ev = &rd->events[i];
        v = ngx_http_paygw_sql_value(s, i, 0);

        ev->round = rd;
        ev->id = v[0];
        ev->event_id = v[1];
        ev->merchant_id = v[2];
        ev->type = v[3];
        ev->url = v[4];
        ev->payload = v[5];
        ev->attempts = ngx_http_paygw_ev_uint(&v[6]);
        ev->streamed = ngx_http_paygw_ev_uint(&v[7]);
        ev->disabled = ngx_http_paygw_ev_uint(&v[8]);
    }

    return ngx_http_paygw_deliver_ready(r, ctx);
}


/*
 * Events handed off by the requests that wrote them (handoff.c): already
 * leased, in memory; only whether their endpoints are disabled is read.
 */

static ngx_int_t
ngx_http_paygw_deliver_take(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_uint_t                      i;
    ngx_http_paygw_wh_round_t      *rd;
    ngx_http_paygw_webhook_conf_t  *wc;

    rd = ctx->events;
    wc = ngx_http_paygw_webhook_conf(r);

    rd->nevents = ngx_http_paygw_handoff_take(r, wc, &rd->events,
                                              &rd->half, &rd->owner);
    rd->handed = 1;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw deliver: step \"take\" %ui events handed off",
                   rd->nevents);

    if (rd->nevents == 0) {
        /* another worker's round took them */
        return ngx_http_paygw_deliver_answer(r, ctx);
    }

    for (i = 0; i < rd->nevents; i++) {
        rd->events[i].round = rd;
    }

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_disabled(ctx->mysql, rd->events, rd->nevents)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* a read: run again on another connection if a pooled one was lost */

    ctx->mysql->read_only = 1;

    return ngx_http_paygw_mysql_wait(r, ctx, ngx_http_paygw_deliver_taken);
}


static ngx_int_t
ngx_http_paygw_deliver_taken(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_str_t                  *v;
    ngx_uint_t                  i, row;
    ngx_http_paygw_sql_stmt_t  *s;
    ngx_http_paygw_wh_round_t  *rd;
    ngx_http_paygw_wh_event_t  *ev;

    rd = ctx->events;

    if (!ctx->mysql->call.ok || ctx->mysql->err_no) {
        /* sent after their lease, by a claim round */
        return ngx_http_paygw_mysql_down(r, ctx);
    }

    s = ctx->mysql->stmts.elts;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw deliver: step \"taken\" %ui endpoints disabled",
                   s->nrows);

    for (row = 0; row < s->nrows; row++) {
        v = ngx_http_paygw_sql_value(s, row, 0);

        for (i = 0; i < rd->nevents; i++) {
            ev = &rd->events[i];

            if (ev->url.data && ngx_http_paygw_ev_eq(&ev->merchant_id, &v[0])
                && ngx_http_paygw_ev_eq(&ev->url, &v[1]))
            {
                ev->disabled = 1;
            }
        }
    }

    return ngx_http_paygw_deliver_ready(r, ctx);
}


/* the events of a round known: to the stream, then to the merchants */

static ngx_int_t
ngx_http_paygw_deliver_ready(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t                   rc;
    ngx_http_paygw_wh_round_t  *rd;

    rd = ctx->events;

    rc = ngx_http_paygw_deliver_stream(r, rd);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_paygw_deliver_send(r, ctx);
    }

    ctx->waiting = &rd->redis->call;
    ctx->next = ngx_http_paygw_deliver_streamed;

    return NGX_AGAIN;
}


/* new events go to the Redis stream first (at least once, like the POST) */

static ngx_int_t
ngx_http_paygw_deliver_stream(ngx_http_request_t *r,
    ngx_http_paygw_wh_round_t *rd)
{
    u_char                         *p;
    ngx_str_t                       argv[14];
    ngx_uint_t                      i, n;
    ngx_http_paygw_wh_event_t      *ev;
    ngx_http_paygw_webhook_conf_t  *wc;

    wc = ngx_http_paygw_webhook_conf(r);

    rd->redis = NULL;

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < rd->nevents; i++) {
        ev = &rd->events[i];

        if (ev->streamed) {
            continue;
        }

        if (rd->redis == NULL) {
            rd->redis = ngx_http_paygw_redis_create(r);
            if (rd->redis == NULL) {
                return NGX_ERROR;
            }
        }

        ngx_str_set(&argv[0], "XADD");
        ngx_str_set(&argv[1], "paygw:events");
        ngx_str_set(&argv[2], "MAXLEN");
        ngx_str_set(&argv[3], "~");
        argv[4].data = p;
        argv[4].len = ngx_sprintf(p, "%ui", wc->stream_maxlen) - p;
        ngx_str_set(&argv[5], "*");
        ngx_str_set(&argv[6], "id");
        argv[7] = ev->event_id;
        ngx_str_set(&argv[8], "type");
        argv[9] = ev->type;
        ngx_str_set(&argv[10], "merchant_id");
        argv[11] = ev->merchant_id;
        ngx_str_set(&argv[12], "event");
        argv[13] = ev->payload;
        n = 14;

        if (ngx_http_paygw_redis_command_argv(r, rd->redis, n, argv)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (rd->redis == NULL
        || ngx_http_paygw_redis_send(r, rd->redis) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_deliver_streamed(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_uint_t                  i, k;
    redisReply                 *reply;
    ngx_http_paygw_wh_round_t  *rd;
    ngx_http_paygw_wh_event_t  *ev;

    rd = ctx->events;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw deliver: step \"streamed\" ok:%d",
                   rd->redis->call.ok);

    if (!rd->redis->call.ok) {
        /* the stream gets them next time; the merchant now */
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "paygw deliver: events not streamed: %V",
                      &rd->redis->call.error);
        return ngx_http_paygw_deliver_send(r, ctx);
    }

    for (i = 0, k = 0; i < rd->nevents; i++) {
        ev = &rd->events[i];

        if (ev->streamed) {
            continue;
        }

        reply = rd->redis->replies[k++];

        if (reply && reply->type == REDIS_REPLY_STRING) {
            ev->streamed = 1;
        }
    }

    return ngx_http_paygw_deliver_send(r, ctx);
}


/*
 * Up to "parallel" POSTs at a time: the step runs again whenever one
 * ends while events wait, and goes on to "record" when the last one
 * ended.  Events not started by half the lease are put back, due at
 * once, for the next round: a round never sends past its lease.
 */

static ngx_int_t
ngx_http_paygw_deliver_send(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_uint_t                      late;
    ngx_http_paygw_wh_round_t      *rd;
    ngx_http_paygw_wh_event_t      *ev;
    ngx_http_paygw_webhook_conf_t  *wc;

    rd = ctx->events;
    wc = ngx_http_paygw_webhook_conf(r);

    rd->group.done = 0;
    late = ngx_http_paygw_deliver_late(rd);

    for ( /* void */ ; rd->next < rd->nevents; rd->next++) {
        ev = &rd->events[rd->next];

        if (!ngx_http_paygw_deliver_merchants(ev)) {
            continue;
        }

        if (late) {
            ev->deferred = 1;
            continue;
        }

        if (rd->running >= wc->parallel) {
            break;
        }

        if (ngx_http_paygw_deliver_one(r, wc, rd, ev) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw deliver: step \"send\" %ui running, %ui of %ui "
                   "started", rd->running, rd->next, rd->nevents);

    if (rd->running == 0) {
        return ngx_http_paygw_deliver_record(r, ctx);
    }

    ctx->waiting = &rd->group;
    ctx->next = ngx_http_paygw_deliver_send;

    return NGX_AGAIN;
}


/*
 * Half the lease gone: a POST started now might still run when the
 * lease ends (docs/directives.md: lease= at least twice what a POST can
 * take), and another round may then claim the event.
 */

static ngx_uint_t
ngx_http_paygw_deliver_late(ngx_http_paygw_wh_round_t *rd)
{
    return (ngx_msec_int_t) (ngx_current_msec - rd->half) >= 0;
}


/* only payment and refund events with a notify_url are the merchant's */

static ngx_uint_t
ngx_http_paygw_deliver_merchants(ngx_http_paygw_wh_event_t *ev)
{
    return ev->url.data != NULL && ev->url.len != 0
           && ((ev->type.len > 8
                && ngx_strncmp(ev->type.data, "payment.", 8) == 0)
               || (ev->type.len > 7
                   && ngx_strncmp(ev->type.data, "refund.", 7) == 0));
}


static ngx_int_t
ngx_http_paygw_deliver_one(ngx_http_request_t *r,
    ngx_http_paygw_webhook_conf_t *wc, ngx_http_paygw_wh_round_t *rd,
    ngx_http_paygw_wh_event_t *ev)
{
    ngx_int_t  rc;

    if (ev->disabled) {
        ev->error = "the endpoint is disabled (it answered 410)";
        return NGX_OK;
    }

    rc = ngx_http_paygw_webhook_destination(wc, ev, r->pool);

    if (rc == NGX_DECLINED) {
        ev->refused = 1;
        ngx_http_paygw_m_webhook(r, NGX_HTTP_PAYGW_M_WH_REFUSED, 0);
        return NGX_OK;
    }

    rd->sending = 1;

    rc = (rc == NGX_AGAIN) ? ngx_http_paygw_deliver_resolve(r, rd, ev)
                           : ngx_http_paygw_deliver_post(r, wc, rd, ev);

    rd->sending = 0;

    return rc;
}


/* a host name: nginx's resolver, then every address it gave is checked */

static ngx_int_t
ngx_http_paygw_deliver_resolve(ngx_http_request_t *r,
    ngx_http_paygw_wh_round_t *rd, ngx_http_paygw_wh_event_t *ev)
{
    ngx_pool_cleanup_t        *cln;
    ngx_resolver_ctx_t        *rctx, temp;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    temp.name = ev->host;

    rctx = ngx_resolve_start(clcf->resolver, &temp);
    if (rctx == NULL) {
        return NGX_ERROR;
    }

    if (rctx == NGX_NO_RESOLVER) {
        ev->error = "no resolver is configured for host names";
        ev->refused = 1;
        ngx_http_paygw_m_webhook(r, NGX_HTTP_PAYGW_M_WH_REFUSED, 0);
        return NGX_OK;
    }

    if (!rd->cleanup) {
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            ngx_resolve_name_done(rctx);
            return NGX_ERROR;
        }

        cln->handler = ngx_http_paygw_deliver_cleanup;
        cln->data = rd;
        rd->cleanup = 1;
    }

    rctx->name = ev->host;
    rctx->handler = ngx_http_paygw_deliver_resolved;
    rctx->data = ev;
    rctx->timeout = clcf->resolver_timeout;

    ev->request = r;
    ev->rctx = rctx;
    rd->running++;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw deliver: resolving \"%V\"", &ev->host);

    if (ngx_resolve_name(rctx) != NGX_OK) {
        ev->rctx = NULL;
        rd->running--;
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_paygw_deliver_resolved(ngx_resolver_ctx_t *rctx)
{
    ngx_http_paygw_wh_event_t *ev = rctx->data;

    ngx_uint_t                      i;
    ngx_connection_t               *c;
    ngx_http_request_t             *r;
    ngx_http_paygw_wh_round_t      *rd;
    ngx_http_paygw_webhook_conf_t  *wc;

    r = ev->request;
    c = r->connection;
    rd = ev->round;
    wc = ngx_http_paygw_webhook_conf(r);

    ev->error = NULL;

    if (rctx->state || rctx->naddrs == 0) {
        ev->error = "the host name does not resolve";
    }

    for (i = 0; ev->error == NULL && i < rctx->naddrs; i++) {
        ev->error = ngx_http_paygw_webhook_address(wc,
                                                   rctx->addrs[i].sockaddr);
    }

    if (ev->error == NULL
        && ngx_http_paygw_webhook_pin(r->pool, ev, rctx->addrs[0].sockaddr,
                                      rctx->addrs[0].socklen)
           != NGX_OK)
    {
        ev->error = "the request could not be made";
    }

    ngx_resolve_name_done(rctx);
    ev->rctx = NULL;
    rd->running--;

    if (ev->error) {
        ev->refused = 1;
        ngx_http_paygw_m_webhook(r, NGX_HTTP_PAYGW_M_WH_REFUSED, 0);

    } else if (ngx_http_paygw_deliver_late(rd)) {
        ev->deferred = 1;

    } else if (ngx_http_paygw_deliver_post(r, wc, rd, ev) != NGX_OK) {
        /* retried on the schedule */
        ev->error = "the request could not be made";
        ev->send = 1;
        ev->status = 0;
    }

    if (rd->sending) {
        return;
    }

    if (ngx_http_paygw_deliver_slot(rd)) {
        (void) ngx_http_post_request(r, NULL);
    }

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_paygw_deliver_cleanup(void *data)
{
    ngx_http_paygw_wh_round_t *rd = data;

    ngx_uint_t  i;

    /* the round ended early: no resolver answer may come back to it */

    for (i = 0; i < rd->nevents; i++) {
        if (rd->events[i].rctx) {
            ngx_resolve_name_done(rd->events[i].rctx);
            rd->events[i].rctx = NULL;
        }
    }
}


static ngx_int_t
ngx_http_paygw_deliver_post(ngx_http_request_t *r,
    ngx_http_paygw_webhook_conf_t *wc, ngx_http_paygw_wh_round_t *rd,
    ngx_http_paygw_wh_event_t *ev)
{
    ngx_int_t                    rc;
    ngx_http_request_t          *sr;
    ngx_http_post_subrequest_t  *ps;

    rc = ngx_http_paygw_deliver_sign(r, wc, ev);

    if (rc == NGX_DECLINED) {
        ev->error = "no webhook secret for the merchant";
        ev->send = 1;
        return NGX_OK;
    }

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_ERROR;
    }

    ps->handler = ngx_http_paygw_deliver_done;
    ps->data = ev;

    ev->call.kind = NGX_HTTP_PAYGW_CALL_WEBHOOK;
    ev->call.started = 1;
    ev->send = 1;
    ev->start = ngx_current_msec;

    if (ngx_http_subrequest(r, &wc->location, NULL, &sr, ps,
                            NGX_HTTP_SUBREQUEST_WAITED)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /*
     * Header only: the receiver's status is all we need; nginx closes
     * the connection after the header instead of reading a body, so an
     * endpoint cannot make us read more than proxy_buffer_size.
     */

    sr->header_only = 1;
    ev->call.sr = sr;
    ngx_http_set_ctx(sr, ev, ngx_http_paygw_module);

    rd->running++;

    return ngx_http_paygw_deliver_request(sr, ev);
}


/* webhook-signature: "v1,<base64>" per active secret, space separated */

static ngx_int_t
ngx_http_paygw_deliver_sign(ngx_http_request_t *r,
    ngx_http_paygw_webhook_conf_t *wc, ngx_http_paygw_wh_event_t *ev)
{
    u_char                      *p;
    ngx_uint_t                   i;
    ngx_str_t                    sig[NGX_HTTP_PAYGW_WH_MAX_SECRETS];
    ngx_http_paygw_wh_secret_t  *s;

    s = ngx_http_paygw_webhook_secret(wc, &ev->merchant_id);
    if (s == NULL) {
        return NGX_DECLINED;
    }

    p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ev->timestamp.data = p;
    ev->timestamp.len = ngx_sprintf(p, "%T", ngx_time()) - p;

    ev->signature.len = 0;

    for (i = 0; i < s->nsecrets; i++) {
        if (s->keyed[i] == NULL) {
            s->keyed[i] = ngx_http_paygw_webhook_key(r->pool,
                                                     &s->secrets[i]);
            if (s->keyed[i] == NULL) {
                return NGX_ERROR;
            }
        }

        if (ngx_http_paygw_webhook_sign(r->pool, s->keyed[i],
                                        &ev->event_id, &ev->timestamp,
                                        &ev->payload, &sig[i])
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        ev->signature.len += sig[i].len + 1;
    }

    p = ngx_pnalloc(r->pool, ev->signature.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ev->signature.data = p;

    for (i = 0; i < s->nsecrets; i++) {
        if (i) {
            *p++ = ' ';
        }

        p = ngx_cpymem(p, sig[i].data, sig[i].len);
    }

    ev->signature.len = p - ev->signature.data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_deliver_request(ngx_http_request_t *sr,
    ngx_http_paygw_wh_event_t *ev)
{
    ngx_uint_t                i;
    ngx_buf_t                *b;
    ngx_table_elt_t          *h;
    ngx_http_request_body_t  *rb;
    ngx_keyval_t              hs[5];

    sr->method = NGX_HTTP_POST;
    ngx_str_set(&sr->method_name, "POST");

    ngx_str_set(&hs[0].key, "Content-Type");
    ngx_str_set(&hs[0].value, "application/json");
    ngx_str_set(&hs[1].key, "User-Agent");
    ngx_str_set(&hs[1].value, "paygw-webhooks/1");
    ngx_str_set(&hs[2].key, "webhook-id");
    hs[2].value = ev->event_id;
    ngx_str_set(&hs[3].key, "webhook-timestamp");
    hs[3].value = ev->timestamp;
    ngx_str_set(&hs[4].key, "webhook-signature");
    hs[4].value = ev->signature;

    /* the ticker's headers and body are not the merchant's business */

    if (ngx_list_init(&sr->headers_in.headers, sr->pool, 5,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < 5; i++) {
        h = ngx_list_push(&sr->headers_in.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->key = hs[i].key;
        h->value = hs[i].value;
        h->lowcase_key = ngx_pnalloc(sr->pool, h->key.len);
        if (h->lowcase_key == NULL) {
            return NGX_ERROR;
        }

        h->hash = ngx_hash_strlow(h->lowcase_key, h->key.data, h->key.len);
    }

    sr->headers_in.content_type = NULL;
    sr->headers_in.chunked = 0;
    sr->headers_in.content_length = NULL;
    sr->headers_in.transfer_encoding = NULL;

    rb = ngx_pcalloc(sr->pool, sizeof(ngx_http_request_body_t));
    b = ngx_calloc_buf(sr->pool);
    if (rb == NULL || b == NULL) {
        return NGX_ERROR;
    }

    b->pos = ev->payload.data;
    b->last = ev->payload.data + ev->payload.len;
    b->start = b->pos;
    b->end = b->last;
    b->memory = 1;
    b->last_buf = 1;

    rb->bufs = ngx_alloc_chain_link(sr->pool);
    if (rb->bufs == NULL) {
        return NGX_ERROR;
    }

    rb->bufs->buf = b;
    rb->bufs->next = NULL;
    rb->buf = b;

    sr->request_body = rb;
    sr->headers_in.content_length_n = ev->payload.len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_deliver_done(ngx_http_request_t *r, void *data, ngx_int_t rc)
{
    ngx_http_paygw_wh_event_t *ev = data;

    ngx_msec_t                  ms;
    ngx_http_paygw_wh_round_t  *rd;

    if (ev->call.done) {
        return rc;
    }

    ev->call.done = 1;
    rd = ev->round;
    ms = ngx_current_msec - ev->start;

    /*
     * The receiver's status (its body is not read); none: nginx could
     * not reach it, or it did not answer in time.
     */

    if (r->upstream && r->headers_out.status) {
        ev->status = r->headers_out.status;

    } else {
        ev->error = (rc == NGX_HTTP_GATEWAY_TIME_OUT)
                    ? "the endpoint timed out"
                    : "the endpoint could not be reached";
    }

    if (ev->status >= 200 && ev->status < 300) {
        rd->delivered++;
        ngx_http_paygw_m_webhook(r, NGX_HTTP_PAYGW_M_WH_DELIVERED, ms);

    } else if (ev->status == NGX_HTTP_PAYGW_GONE) {
        ngx_http_paygw_m_webhook(r, NGX_HTTP_PAYGW_M_WH_DISABLED, ms);

    } else {
        rd->failed++;
        ngx_http_paygw_m_webhook(r, NGX_HTTP_PAYGW_M_WH_FAILED, ms);

        if (ev->status >= 300 && ev->status < 400) {
            ev->error = "the endpoint redirected (not followed)";

        } else if (ev->status) {
            ev->error = "the endpoint did not answer 2xx";
        }
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw deliver: event %V answered %ui rc:%i",
                   &ev->event_id, ev->status, rc);

    rd->running--;
    (void) ngx_http_paygw_deliver_slot(rd);

    return rc;
}


/* a POST ended: the round goes on if it was the last or others wait */

static ngx_uint_t
ngx_http_paygw_deliver_slot(ngx_http_paygw_wh_round_t *rd)
{
    if (rd->running == 0 || rd->next < rd->nevents) {
        rd->group.done = 1;
    }

    return rd->group.done;
}


static ngx_int_t
ngx_http_paygw_deliver_record(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_uint_t                      i;
    ngx_msec_t                      delay;
    const char                     *status;
    ngx_http_paygw_wh_round_t      *rd;
    ngx_http_paygw_wh_event_t      *ev;
    ngx_http_paygw_webhook_conf_t  *wc;

    rd = ctx->events;
    wc = ngx_http_paygw_webhook_conf(r);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw deliver: step \"record\" %ui delivered, "
                   "%ui failed", rd->delivered, rd->failed);

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_deliver_batch(r, ctx) != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < rd->nevents; i++) {
        ev = &rd->events[i];

        if (ev->recorded) {
            continue;
        }

        status = ngx_http_paygw_deliver_outcome(wc, ev, &delay);

        if (ngx_http_paygw_store_event_result(ctx->mysql, &rd->owner, ev,
                                              status, delay)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (rd->nevents == 0) {
        return ngx_http_paygw_deliver_recorded(r, ctx);
    }

    /*
     * One transaction: one commit for the round, and the driver retries
     * it whole after a deadlock with another round's claim.
     */

    ctx->mysql->transaction = 1;

    return ngx_http_paygw_mysql_wait(r, ctx, ngx_http_paygw_deliver_recorded);
}


/*
 * The events delivered, a statement per HTTP status (200 mostly), the
 * events skipped (no destination: streamed only) and those put back
 * (not started in time), a statement per stream flag; the rest one
 * statement each.
 */

static ngx_int_t
ngx_http_paygw_deliver_batch(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t                    rc;
    ngx_uint_t                   i, j, n, kind;
    ngx_http_paygw_wh_round_t   *rd;
    ngx_http_paygw_wh_event_t   *ev, *e, **evs;

    rd = ctx->events;

    if (rd->nevents == 0) {
        return NGX_OK;
    }

    evs = ngx_palloc(r->pool, rd->nevents * sizeof(void *));
    if (evs == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < rd->nevents; i++) {
        ev = &rd->events[i];
        kind = ngx_http_paygw_deliver_kind(ev);

        if (ev->recorded || kind == NGX_HTTP_PAYGW_EV_ONE) {
            continue;
        }

        n = 0;

        for (j = i; j < rd->nevents; j++) {
            e = &rd->events[j];

            if (!e->recorded && e->streamed == ev->streamed
                && ngx_http_paygw_deliver_kind(e) == kind
                && (kind != NGX_HTTP_PAYGW_EV_DELIVERED
                    || e->status == ev->status))
            {
                e->recorded = 1;
                evs[n++] = e;
            }
        }

        switch (kind) {

        case NGX_HTTP_PAYGW_EV_SKIPPED:
            rc = ngx_http_paygw_store_events_skipped(ctx->mysql, &rd->owner,
                                                     evs, n);
            break;

        case NGX_HTTP_PAYGW_EV_DEFERRED:
            rc = ngx_http_paygw_store_events_released(ctx->mysql,
                                                      &rd->owner, evs, n);
            break;

        default: /* NGX_HTTP_PAYGW_EV_DELIVERED */
            rc = ngx_http_paygw_store_events_delivered(ctx->mysql,
                                                       &rd->owner, evs, n);
        }

        if (rc != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* how an event's outcome is written: with others like it, or alone */

static ngx_uint_t
ngx_http_paygw_deliver_kind(ngx_http_paygw_wh_event_t *ev)
{
    if (ngx_http_paygw_deliver_skipped(ev)) {
        return NGX_HTTP_PAYGW_EV_SKIPPED;
    }

    if (ev->deferred && !ev->send) {
        return NGX_HTTP_PAYGW_EV_DEFERRED;
    }

    if (ngx_http_paygw_deliver_ok(ev)) {
        return NGX_HTTP_PAYGW_EV_DELIVERED;
    }

    return NGX_HTTP_PAYGW_EV_ONE;
}


static ngx_uint_t
ngx_http_paygw_deliver_ok(ngx_http_paygw_wh_event_t *ev)
{
    return ev->send && ev->status >= 200 && ev->status < 300;
}


/* not sent, and nothing to record but that (see deliver_outcome) */

static ngx_uint_t
ngx_http_paygw_deliver_skipped(ngx_http_paygw_wh_event_t *ev)
{
    return !ev->send && !ev->disabled && !ev->refused && !ev->deferred;
}


static const char *
ngx_http_paygw_deliver_outcome(ngx_http_paygw_webhook_conf_t *wc,
    ngx_http_paygw_wh_event_t *ev, ngx_msec_t *delay)
{
    *delay = 0;

    /* the same tests as the round's batches (deliver_batch) */

    if (ngx_http_paygw_deliver_skipped(ev)) {
        return "skipped";
    }


    if (!ev->send) {
        return ev->disabled ? "disabled" : "failed";
    }

    if (ngx_http_paygw_deliver_ok(ev)) {
        return "delivered";
    }

    if (ev->status == NGX_HTTP_PAYGW_GONE) {
        ev->error = "the endpoint answered 410 Gone: disabled";
        return "disabled";
    }

    *delay = ngx_http_paygw_webhook_delay(wc, ev->attempts + 1);

    if (*delay == (ngx_msec_t) NGX_ERROR) {
        *delay = 0;
        return "failed";
    }

    return "pending";
}


static ngx_int_t
ngx_http_paygw_deliver_recorded(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_wh_round_t      *rd;
    ngx_http_paygw_webhook_conf_t  *wc;

    rd = ctx->events;
    wc = ngx_http_paygw_webhook_conf(r);

    if (rd->nevents
        && (!ctx->mysql->call.ok || ctx->mysql->err_no))
    {
        /* not recorded: the leases run out and the events are sent again */

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw deliver: the outcomes of %ui events could not "
                      "be recorded", rd->nevents);

        return ngx_http_paygw_mysql_down(r, ctx);
    }

    if (rd->handed) {
        return ngx_http_paygw_deliver_answer(r, ctx);
    }

    ngx_http_paygw_handoff_claimed(r, rd->nevents >= wc->batch);

    if (rd->nevents >= wc->batch) {
        return ngx_http_paygw_deliver_answer(r, ctx);
    }

    /* an idle round: the housekeeping, which no answer waits for */

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_housekeeping(ctx->mysql, wc->retention)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_paygw_mysql_wait(r, ctx, ngx_http_paygw_deliver_kept);
}


static ngx_int_t
ngx_http_paygw_deliver_kept(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_str_t                  *v, reason;
    ngx_http_paygw_sql_stmt_t  *s;

    s = ctx->mysql->stmts.elts;
    s = &s[ctx->mysql->stmts.nelts - 1];

    if (ctx->mysql->call.ok && !ctx->mysql->err_no && s->nfields == 2
        && s->nrows == 1)
    {
        v = ngx_http_paygw_sql_value(s, 0, 0);
        ngx_http_paygw_m_backlog(r, ngx_http_paygw_ev_uint(&v[0]),
                                 ngx_http_paygw_ev_uint(&v[1]));

    } else {
        ngx_http_paygw_mysql_reason(ctx->mysql, &reason);
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "paygw deliver: the outbox housekeeping failed: %V",
                      &reason);
    }

    return ngx_http_paygw_deliver_answer(r, ctx);
}


static ngx_int_t
ngx_http_paygw_deliver_answer(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_wh_round_t  *rd;

    rd = ctx->events;

    return ngx_http_paygw_respond(r, ctx, NGX_HTTP_OK,
                                  json_pack("{s:I, s:b, s:I, s:I}",
                                            "claimed",
                                            (json_int_t) rd->nevents,
                                            "handed_off", rd->handed,
                                            "delivered",
                                            (json_int_t) rd->delivered,
                                            "failed",
                                            (json_int_t) rd->failed));
}


/* GET /v1/events?after=EVENT_ID&limit=N */

ngx_int_t
ngx_http_paygw_events(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    return ngx_http_paygw_steps(r, ctx, ngx_http_paygw_events_start);
}


static ngx_int_t
ngx_http_paygw_events_start(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t                   n;
    ngx_str_t                   v;
    ngx_http_paygw_wh_round_t  *rd;

    rd = ngx_pcalloc(r->pool, sizeof(ngx_http_paygw_wh_round_t));
    if (rd == NULL) {
        return NGX_ERROR;
    }

    ctx->events = rd;
    rd->limit = 20;

    if (ngx_http_arg(r, (u_char *) "limit", 5, &v) == NGX_OK) {
        n = ngx_atoi(v.data, v.len);

        if (n < 1 || n > NGX_HTTP_PAYGW_EV_LIMIT) {
            return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                       "invalid_request",
                                       "limit must be 1-%d",
                                       NGX_HTTP_PAYGW_EV_LIMIT);
        }

        rd->limit = n;
    }

    if (ngx_http_arg(r, (u_char *) "after", 5, &v) == NGX_OK) {
        if (ngx_http_paygw_identifier(&v) != NGX_OK) {
            return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                       "invalid_request",
                                       "after must be an event id");
        }

        rd->after = v;
    }

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_list_events(ctx->mysql, &ctx->merchant_id,
                                            &rd->after, rd->limit)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ctx->mysql->read_only = 1;

    return ngx_http_paygw_mysql_wait(r, ctx, ngx_http_paygw_events_listed);
}


static ngx_int_t
ngx_http_paygw_events_listed(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    json_t                     *list, *ev;
    ngx_uint_t                  i, n;
    ngx_http_paygw_sql_stmt_t  *s;
    ngx_http_paygw_wh_round_t  *rd;

    rd = ctx->events;

    if (!ctx->mysql->call.ok || ctx->mysql->err_no) {
        return ngx_http_paygw_mysql_down(r, ctx);
    }

    s = ctx->mysql->stmts.elts;
    n = ngx_min(s->nrows, rd->limit);

    list = json_array();
    if (list == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        ev = ngx_http_paygw_events_row(s, i);

        if (ev == NULL || json_array_append_new(list, ev) != 0) {
            json_decref(list);
            return NGX_ERROR;
        }
    }

    return ngx_http_paygw_respond(r, ctx, NGX_HTTP_OK,
               json_pack("{s:o, s:b, s:o}",
                         "data", list,
                         "has_more", s->nrows > rd->limit,
                         "next_after",
                         n ? ngx_http_paygw_ev_str(
                                 ngx_http_paygw_sql_value(s, n - 1, 0))
                           : json_null()));
}


/* the event as it was sent, and how its delivery stands */

static json_t *
ngx_http_paygw_events_row(ngx_http_paygw_sql_stmt_t *s, ngx_uint_t row)
{
    json_t     *ev, *delivery;
    ngx_str_t  *v;

    v = ngx_http_paygw_sql_value(s, row, 0);

    ev = json_loadb((char *) v[1].data, v[1].len, 0, NULL);
    if (ev == NULL || !json_is_object(ev)) {
        json_decref(ev);
        ev = json_pack("{s:o}", "id", ngx_http_paygw_ev_str(&v[0]));
        if (ev == NULL) {
            return NULL;
        }
    }

    delivery = json_pack("{s:o, s:I, s:o, s:o, s:o, s:o, s:o, s:b}",
                         "status", ngx_http_paygw_ev_str(&v[2]),
                         "attempts",
                         (json_int_t) ngx_http_paygw_ev_uint(&v[3]),
                         "last_status",
                         v[4].data ? json_integer(ngx_http_paygw_ev_uint(
                                                      &v[4]))
                                   : json_null(),
                         "last_error", ngx_http_paygw_ev_str(&v[5]),
                         "next_attempt_at",
                         (v[2].len == 7
                          && ngx_strncmp(v[2].data, "pending", 7) == 0)
                         ? ngx_http_paygw_ev_str(&v[6]) : json_null(),
                         "delivered_at", ngx_http_paygw_ev_str(&v[7]),
                         "last_attempt_at", ngx_http_paygw_ev_str(&v[8]),
                         "endpoint_disabled",
                         v[9].len == 1 && v[9].data[0] == '1');

    if (delivery == NULL || json_object_set_new(ev, "delivery", delivery)) {
        json_decref(ev);
        return NULL;
    }

    return ev;
}


/* POST /v1/events/{id}/redeliver */

ngx_int_t
ngx_http_paygw_redeliver(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    return ngx_http_paygw_steps(r, ctx, ngx_http_paygw_redeliver_start);
}


static ngx_int_t
ngx_http_paygw_redeliver_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw redeliver: step \"start\" event %V",
                   &ctx->object_no);

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_redeliver(ctx->mysql, &ctx->merchant_id,
                                          &ctx->object_no)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ctx->mysql->transaction = 1;

    return ngx_http_paygw_mysql_wait(r, ctx, ngx_http_paygw_redeliver_done);
}


static ngx_int_t
ngx_http_paygw_redeliver_done(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_str_t                  *v;
    ngx_http_paygw_sql_stmt_t  *s;

    if (!ctx->mysql->call.ok || ctx->mysql->err_no) {
        return ngx_http_paygw_mysql_down(r, ctx);
    }

    s = ctx->mysql->stmts.elts;
    s = &s[2];

    if (s->nrows == 0) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_NOT_FOUND, "not_found",
                                   "no such event");
    }

    ctx->side_effect = 1;

    v = ngx_http_paygw_sql_value(s, 0, 0);

    return ngx_http_paygw_respond(r, ctx, NGX_HTTP_ACCEPTED,
                                  json_pack("{s:o, s:{s:o, s:I}}",
                                            "id", ngx_http_paygw_ev_str(&v[0]),
                                            "delivery",
                                            "status",
                                            ngx_http_paygw_ev_str(&v[1]),
                                            "attempts",
                                            (json_int_t)
                                            ngx_http_paygw_ev_uint(&v[2])));
}


static ngx_uint_t
ngx_http_paygw_ev_uint(ngx_str_t *v)
{
    ngx_int_t  n;

    if (v->data == NULL) {
        return 0;
    }

    n = ngx_atoi(v->data, v->len);

    return n == NGX_ERROR ? 0 : (ngx_uint_t) n;
}


static ngx_uint_t
ngx_http_paygw_ev_eq(ngx_str_t *a, ngx_str_t *b)
{
    return a->data && b->data && a->len == b->len
           && ngx_strncmp(a->data, b->data, a->len) == 0;
}


/* a column as a JSON string, or null */

static json_t *
ngx_http_paygw_ev_str(ngx_str_t *v)
{
    if (v == NULL || v->data == NULL) {
        return json_null();
    }

    return json_stringn((char *) v->data, v->len);
}
