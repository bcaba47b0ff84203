
/*
 * paygw: metrics, and /metrics in the Prometheus text format.
 *
 *     location = /metrics { paygw_metrics; }
 *
 * Counters live in paygw_zone (ngx_http_paygw_metrics.h): summed over
 * all workers, kept across "nginx -s reload", bounded whatever clients
 * send.  Requests are counted in the LOG phase, which may not wait on
 * anything: it only adds.
 */


#include "ngx_http_paygw_types.h"
#include "ngx_http_paygw_metrics.h"
#include "ngx_http_paygw_fees.h"
#include "ngx_http_paygw_mysql.h"


#define NGX_HTTP_PAYGW_METRICS_MAX  (128 * 1024)


static ngx_int_t ngx_http_paygw_metrics_handler(ngx_http_request_t *r);
static u_char *ngx_http_paygw_m_render_api(u_char *p, u_char *last,
    ngx_http_paygw_metrics_t *m);
static u_char *ngx_http_paygw_m_render_channels(u_char *p, u_char *last,
    ngx_http_paygw_shctx_t *sh);
static u_char *ngx_http_paygw_m_render_counts(u_char *p, u_char *last,
    ngx_http_paygw_shctx_t *sh);
static u_char *ngx_http_paygw_m_render_gateway(u_char *p, u_char *last,
    ngx_http_paygw_shctx_t *sh);
static u_char *ngx_http_paygw_m_render_heap(u_char *p, u_char *last,
    ngx_http_paygw_shctx_t *sh);
static ngx_int_t ngx_http_paygw_log_handler(ngx_http_request_t *r);
static ngx_uint_t ngx_http_paygw_m_code(ngx_uint_t status);
static ngx_uint_t ngx_http_paygw_m_channel_index(ngx_http_request_t *r,
    ngx_str_t *channel);
static const char *ngx_http_paygw_m_channel_label(ngx_http_paygw_shctx_t *sh,
    ngx_uint_t slot);
static void ngx_http_paygw_m_observe(ngx_http_paygw_hist_t *h, ngx_msec_t ms);
static u_char *ngx_http_paygw_m_hist(u_char *p, u_char *last,
    const char *name, const char *label, const char *value,
    ngx_http_paygw_hist_t *h);


static ngx_str_t  ngx_http_paygw_metrics_type =
    ngx_string("text/plain; version=0.0.4; charset=utf-8");

static const char  *ngx_http_paygw_m_api[NGX_HTTP_PAYGW_M_APIS] = {
    "other", "create_payment", "get_payment", "find_payment", "refund",
    "get_refund", "close_payment", "resolve", "notify", "healthz", "readyz",
    "metrics"
};

static ngx_uint_t  ngx_http_paygw_m_codes[NGX_HTTP_PAYGW_M_CODES - 1] = {
    200, 201, 202, 204, 400, 401, 403, 404, 405, 409, 413, 422, 429,
    500, 502, 503, 504
};

static const char  *ngx_http_paygw_m_results[NGX_HTTP_PAYGW_M_RESULTS] = {
    "ok", "client_error", "server_error", "timeout", "unreachable"
};

/* upper bounds in milliseconds; the last is +Inf */
static ngx_msec_t  ngx_http_paygw_m_bounds[NGX_HTTP_PAYGW_M_BUCKETS - 1] = {
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000
};

static const char  *ngx_http_paygw_m_le[NGX_HTTP_PAYGW_M_BUCKETS] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
    "0.5", "1", "2.5", "5", "10", "+Inf"
};


char *
ngx_http_paygw_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_loc_conf_t *plcf = conf;

    ngx_http_core_loc_conf_t    *clcf;
    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_paygw_module);

    if (pmcf->shm_zone == NULL) {
        return "requires paygw_zone before it in the http block";
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_paygw_metrics_handler;

    plcf->metric_api = NGX_HTTP_PAYGW_M_API_METRICS;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_paygw_metrics_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_paygw_log_handler;

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_log_handler(ngx_http_request_t *r)
{
    ngx_uint_t                  api;
    ngx_http_paygw_ctx_t       *ctx;
    ngx_http_paygw_loc_conf_t  *plcf;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_paygw_module);

    if (plcf->metric_api == 0 && !plcf->api) {
        return NGX_OK;
    }

    api = plcf->metric_api;

    if (plcf->api) {
        ctx = ngx_http_get_module_ctx(r, ngx_http_paygw_module);
        api = (ctx && ctx->api < NGX_HTTP_PAYGW_M_API_HEALTH)
              ? ctx->api : NGX_HTTP_PAYGW_M_API_OTHER;
    }

    ngx_http_paygw_m_request(r, api);

    return NGX_OK;
}


static ngx_http_paygw_metrics_t *
ngx_http_paygw_m(ngx_http_request_t *r)
{
    ngx_http_paygw_shctx_t  *sh;

    sh = ngx_http_paygw_shctx(r);

    return sh ? &sh->m : NULL;
}


void
ngx_http_paygw_m_request(ngx_http_request_t *r, ngx_uint_t api)
{
    ngx_msec_int_t             ms;
    ngx_time_t                *tp;
    ngx_http_paygw_metrics_t  *m;

    m = ngx_http_paygw_m(r);
    if (m == NULL || api >= NGX_HTTP_PAYGW_M_APIS) {
        return;
    }

    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));

    (void) ngx_atomic_fetch_add(
        &m->requests[api][ngx_http_paygw_m_code(r->headers_out.status)], 1);

    ngx_http_paygw_m_observe(&m->duration[api], ngx_max(ms, 0));
}


/* webhooks: ngx_http_paygw_events.c */

void
ngx_http_paygw_m_webhook(ngx_http_request_t *r, ngx_uint_t result,
    ngx_msec_t ms)
{
    ngx_http_paygw_metrics_t  *m;

    m = ngx_http_paygw_m(r);
    if (m == NULL || result > 3) {
        return;
    }

    (void) ngx_atomic_fetch_add(&m->webhook_deliveries[result], 1);

    if (result != 3) {
        ngx_http_paygw_m_observe(&m->webhook_duration, ms);
    }
}


void
ngx_http_paygw_m_backlog(ngx_http_request_t *r, ngx_uint_t count,
    ngx_uint_t oldest)
{
    ngx_http_paygw_metrics_t  *m;

    m = ngx_http_paygw_m(r);
    if (m == NULL) {
        return;
    }

    m->webhook_backlog = count;
    m->webhook_oldest = oldest;
}


void
ngx_http_paygw_m_payment(ngx_http_request_t *r, ngx_str_t *channel,
    ngx_http_paygw_status_e status)
{
    ngx_uint_t                 i;
    ngx_http_paygw_metrics_t  *m;

    m = ngx_http_paygw_m(r);
    if (m == NULL) {
        return;
    }

    /* slot i counts status i + 1: NONE is never counted */

    i = (ngx_uint_t) status - 1;

    if (status == NGX_HTTP_PAYGW_STATUS_NONE
        || i >= NGX_HTTP_PAYGW_M_STATUSES)
    {
        return;
    }

    (void) ngx_atomic_fetch_add(
        &m->payments[ngx_http_paygw_m_channel_index(r, channel)][i], 1);
}


void
ngx_http_paygw_m_channel(ngx_http_request_t *r, ngx_str_t *channel,
    ngx_uint_t result, ngx_msec_t ms)
{
    ngx_uint_t                 c;
    ngx_http_paygw_metrics_t  *m;

    m = ngx_http_paygw_m(r);
    if (m == NULL || result >= NGX_HTTP_PAYGW_M_RESULTS) {
        return;
    }

    c = ngx_http_paygw_m_channel_index(r, channel);

    (void) ngx_atomic_fetch_add(&m->channel_requests[c][result], 1);

    ngx_http_paygw_m_observe(&m->channel_duration[c], ms);
}


void
ngx_http_paygw_m_idempotency(ngx_http_request_t *r, ngx_uint_t result)
{
    ngx_http_paygw_metrics_t  *m;

    m = ngx_http_paygw_m(r);

    if (m && result < 4) {
        (void) ngx_atomic_fetch_add(&m->idempotency[result], 1);
    }
}


void
ngx_http_paygw_m_risk(ngx_http_request_t *r, ngx_uint_t deny)
{
    ngx_http_paygw_metrics_t  *m;

    m = ngx_http_paygw_m(r);

    if (m) {
        (void) ngx_atomic_fetch_add(&m->risk_decisions[deny ? 1 : 0], 1);
    }
}


void
ngx_http_paygw_m_callback(ngx_http_request_t *r, ngx_str_t *channel,
    ngx_uint_t accepted)
{
    ngx_http_paygw_metrics_t  *m;

    m = ngx_http_paygw_m(r);

    if (m) {
        (void) ngx_atomic_fetch_add(
            &m->callbacks[ngx_http_paygw_m_channel_index(r, channel)]
                         [accepted ? 0 : 1], 1);
    }
}


void
ngx_http_paygw_m_backend_error(ngx_http_request_t *r, ngx_uint_t backend)
{
    ngx_http_paygw_metrics_t  *m;

    m = ngx_http_paygw_m(r);

    if (m && backend < 2) {
        (void) ngx_atomic_fetch_add(&m->backend_errors[backend], 1);
    }
}


/* a request written to Redis (a pipeline) or MySQL (a query or batch) */

void
ngx_http_paygw_m_round_trip(ngx_http_request_t *r, ngx_uint_t backend)
{
    ngx_http_paygw_metrics_t  *m;

    m = ngx_http_paygw_m(r);

    if (m && backend < 2) {
        (void) ngx_atomic_fetch_add(&m->backend_round_trips[backend], 1);
    }
}


static ngx_uint_t
ngx_http_paygw_m_code(ngx_uint_t status)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_PAYGW_M_CODES - 1; i++) {
        if (ngx_http_paygw_m_codes[i] == status) {
            return i;
        }
    }

    return NGX_HTTP_PAYGW_M_CODES - 1;     /* "other" */
}


/* the channel's slot in the zone (ngx_http_paygw.h) */

static ngx_uint_t
ngx_http_paygw_m_channel_index(ngx_http_request_t *r, ngx_str_t *channel)
{
    ngx_str_t                   *name;
    ngx_uint_t                   i;
    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_paygw_module);
    name = pmcf->slot_names;

    for (i = 0; channel && i < NGX_HTTP_PAYGW_SLOT_OTHER; i++) {
        if (name[i].len && name[i].len == channel->len
            && ngx_strncmp(name[i].data, channel->data, channel->len) == 0)
        {
            return i;
        }
    }

    return NGX_HTTP_PAYGW_SLOT_OTHER;
}


/* a slot's label, as the zone knows it (all workers agree); NULL: unused */

static const char *
ngx_http_paygw_m_channel_label(ngx_http_paygw_shctx_t *sh, ngx_uint_t slot)
{
    if (slot == NGX_HTTP_PAYGW_SLOT_OTHER) {
        return "other";
    }

    return sh->slot_name[slot][0] ? (const char *) sh->slot_name[slot] : NULL;
}


static void
ngx_http_paygw_m_observe(ngx_http_paygw_hist_t *h, ngx_msec_t ms)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_PAYGW_M_BUCKETS - 1; i++) {
        if (ms <= ngx_http_paygw_m_bounds[i]) {
            break;
        }
    }

    /* one bucket each; cumulative sums are made when rendering */

    (void) ngx_atomic_fetch_add(&h->bucket[i], 1);
    (void) ngx_atomic_fetch_add(&h->sum_us, (ngx_atomic_int_t) ms * 1000);
    (void) ngx_atomic_fetch_add(&h->count, 1);
}


static ngx_int_t
ngx_http_paygw_metrics_handler(ngx_http_request_t *r)
{
    u_char                    *p, *last;
    ngx_int_t                  rc;
    ngx_str_t                  body;
    ngx_http_paygw_shctx_t    *sh;
    ngx_http_paygw_metrics_t  *m;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_paygw_not_allowed(r, "GET, HEAD");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    sh = ngx_http_paygw_shctx(r);
    m = &sh->m;

    p = ngx_pnalloc(r->pool, NGX_HTTP_PAYGW_METRICS_MAX);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.data = p;
    last = p + NGX_HTTP_PAYGW_METRICS_MAX;

    p = ngx_http_paygw_m_render_api(p, last, m);
    p = ngx_http_paygw_m_render_channels(p, last, sh);
    p = ngx_http_paygw_m_render_counts(p, last, sh);
    p = ngx_http_paygw_m_render_gateway(p, last, sh);
    p = ngx_http_paygw_mysql_metrics(r, p, last);

    body.len = p - body.data;

    return ngx_http_paygw_send_text(r, NGX_HTTP_OK,
                                    &ngx_http_paygw_metrics_type, &body);
}


#define ngx_paygw_head(name, type, help)                                     \
    p = ngx_slprintf(p, last, "# HELP " name " " help "\n"                   \
                              "# TYPE " name " " type "\n")


/* API requests and their durations */

static u_char *
ngx_http_paygw_m_render_api(u_char *p, u_char *last,
    ngx_http_paygw_metrics_t *m)
{
    ngx_uint_t  i, j;

    ngx_paygw_head("paygw_requests_total", "counter",
                   "API requests answered, by endpoint and HTTP status.");

    for (i = 0; i < NGX_HTTP_PAYGW_M_APIS; i++) {
        for (j = 0; j < NGX_HTTP_PAYGW_M_CODES; j++) {
            if (m->requests[i][j] == 0) {
                continue;
            }

            if (j < NGX_HTTP_PAYGW_M_CODES - 1) {
                p = ngx_slprintf(p, last, "paygw_requests_total"
                                 "{api=\"%s\",code=\"%ui\"} %uA\n",
                                 ngx_http_paygw_m_api[i],
                                 ngx_http_paygw_m_codes[j],
                                 m->requests[i][j]);
            } else {
                p = ngx_slprintf(p, last, "paygw_requests_total"
                                 "{api=\"%s\",code=\"other\"} %uA\n",
                                 ngx_http_paygw_m_api[i], m->requests[i][j]);
            }
        }
    }

    ngx_paygw_head("paygw_request_duration_seconds", "histogram",
                   "Time to answer API requests.");

    for (i = 0; i < NGX_HTTP_PAYGW_M_APIS; i++) {
        if (m->duration[i].count) {
            p = ngx_http_paygw_m_hist(p, last,
                                      "paygw_request_duration_seconds",
                                      "api", ngx_http_paygw_m_api[i],
                                      &m->duration[i]);
        }
    }

    return p;
}


/* payments and provider calls, by channel */

static u_char *
ngx_http_paygw_m_render_channels(u_char *p, u_char *last,
    ngx_http_paygw_shctx_t *sh)
{
    ngx_uint_t                 i, j;
    const char                *ch;
    ngx_http_paygw_metrics_t  *m;

    m = &sh->m;

    ngx_paygw_head("paygw_payments_total", "counter",
                   "Payments reaching a status, by channel.");

    for (i = 0; i < NGX_HTTP_PAYGW_M_CHANNELS; i++) {
        ch = ngx_http_paygw_m_channel_label(sh, i);

        for (j = 0; ch && j < NGX_HTTP_PAYGW_M_STATUSES; j++) {
            if (m->payments[i][j]) {
                p = ngx_slprintf(p, last, "paygw_payments_total"
                                 "{channel=\"%s\",status=\"%V\"} %uA\n",
                                 ch, ngx_http_paygw_status_name(j + 1),
                                 m->payments[i][j]);
            }
        }
    }

    ngx_paygw_head("paygw_channel_requests_total", "counter",
                   "Calls to providers, by channel and result.");

    for (i = 0; i < NGX_HTTP_PAYGW_M_CHANNELS; i++) {
        ch = ngx_http_paygw_m_channel_label(sh, i);

        for (j = 0; ch && j < NGX_HTTP_PAYGW_M_RESULTS; j++) {
            if (m->channel_requests[i][j]) {
                p = ngx_slprintf(p, last, "paygw_channel_requests_total"
                                 "{channel=\"%s\",result=\"%s\"} %uA\n",
                                 ch, ngx_http_paygw_m_results[j],
                                 m->channel_requests[i][j]);
            }
        }
    }

    ngx_paygw_head("paygw_channel_duration_seconds", "histogram",
                   "Time providers took to answer.");

    for (i = 0; i < NGX_HTTP_PAYGW_M_CHANNELS; i++) {
        ch = ngx_http_paygw_m_channel_label(sh, i);

        if (ch && m->channel_duration[i].count) {
            p = ngx_http_paygw_m_hist(p, last,
                                      "paygw_channel_duration_seconds",
                                      "channel", ch, &m->channel_duration[i]);
        }
    }

    ngx_paygw_head("paygw_circuit_state", "gauge",
                   "Circuit breaker: 0 closed, 1 open, 2 half-open.");

    for (i = 0; i < NGX_HTTP_PAYGW_SLOT_OTHER; i++) {
        ch = ngx_http_paygw_m_channel_label(sh, i);

        if (ch) {
            p = ngx_slprintf(p, last,
                             "paygw_circuit_state{channel=\"%s\"} %ui\n",
                             ch, sh->breaker[i].state);
        }
    }

    return p;
}


/* idempotency, callbacks, backends, reconciliation */

static u_char *
ngx_http_paygw_m_render_counts(u_char *p, u_char *last,
    ngx_http_paygw_shctx_t *sh)
{
    ngx_uint_t                 i;
    const char                *ch;
    ngx_http_paygw_metrics_t  *m;

    m = &sh->m;

    ngx_paygw_head("paygw_idempotency_total", "counter",
                   "Idempotency-Key outcomes.");

    p = ngx_slprintf(p, last,
                     "paygw_idempotency_total{result=\"new\"} %uA\n"
                     "paygw_idempotency_total{result=\"replayed\"} %uA\n"
                     "paygw_idempotency_total{result=\"in_use\"} %uA\n"
                     "paygw_idempotency_total{result=\"reused\"} %uA\n",
                     m->idempotency[0], m->idempotency[1],
                     m->idempotency[2], m->idempotency[3]);

    ngx_paygw_head("paygw_callbacks_total", "counter",
                   "Provider callbacks, by channel and result.");

    for (i = 0; i < NGX_HTTP_PAYGW_SLOT_OTHER; i++) {
        ch = ngx_http_paygw_m_channel_label(sh, i);

        if (ch) {
            p = ngx_slprintf(p, last,
                             "paygw_callbacks_total{channel=\"%s\","
                             "result=\"accepted\"} %uA\n"
                             "paygw_callbacks_total{channel=\"%s\","
                             "result=\"rejected\"} %uA\n",
                             ch, m->callbacks[i][0], ch, m->callbacks[i][1]);
        }
    }

    ngx_paygw_head("paygw_backend_errors_total", "counter",
                   "Redis and MySQL calls that got no answer.");

    p = ngx_slprintf(p, last,
                     "paygw_backend_errors_total{backend=\"redis\"} %uA\n"
                     "paygw_backend_errors_total{backend=\"mysql\"} %uA\n",
                     m->backend_errors[0], m->backend_errors[1]);

    ngx_paygw_head("paygw_backend_round_trips_total", "counter",
                   "Requests written to Redis (a pipeline of commands) and "
                   "MySQL (a query or a batch of statements).");

    p = ngx_slprintf(p, last,
                     "paygw_backend_round_trips_total{backend=\"redis\"} "
                     "%uA\n"
                     "paygw_backend_round_trips_total{backend=\"mysql\"} "
                     "%uA\n",
                     m->backend_round_trips[0], m->backend_round_trips[1]);

    ngx_paygw_head("paygw_reconciliation_differences", "gauge",
                   "Differences found by the last reconciliation.");

    for (i = 0; i < NGX_HTTP_PAYGW_SLOT_OTHER; i++) {
        ch = ngx_http_paygw_m_channel_label(sh, i);

        if (ch) {
            p = ngx_slprintf(p, last,
                             "paygw_reconciliation_differences"
                             "{channel=\"%s\"} %uA\n",
                             ch, m->reconciliation_diffs[i]);
        }
    }

    return p;
}


/* risk, webhooks, and the gateway itself: zone, health checks */

static u_char *
ngx_http_paygw_m_render_gateway(u_char *p, u_char *last,
    ngx_http_paygw_shctx_t *sh)
{
    ngx_http_paygw_metrics_t  *m;

    m = &sh->m;

    ngx_paygw_head("paygw_risk_decisions_total", "counter",
                   "Risk rule decisions.");

    p = ngx_slprintf(p, last,
                     "paygw_risk_decisions_total{decision=\"allow\"} %uA\n"
                     "paygw_risk_decisions_total{decision=\"deny\"} %uA\n",
                     m->risk_decisions[0], m->risk_decisions[1]);

    ngx_paygw_head("paygw_webhook_deliveries_total", "counter",
                   "Merchant webhook deliveries, by result.");

    p = ngx_slprintf(p, last,
                     "paygw_webhook_deliveries_total{result=\"delivered\"} "
                     "%uA\n"
                     "paygw_webhook_deliveries_total{result=\"failed\"} %uA\n"
                     "paygw_webhook_deliveries_total{result=\"disabled\"} "
                     "%uA\n"
                     "paygw_webhook_deliveries_total{result=\"refused\"} "
                     "%uA\n", m->webhook_deliveries[0],
                     m->webhook_deliveries[1], m->webhook_deliveries[2],
                     m->webhook_deliveries[3]);

    ngx_paygw_head("paygw_webhook_duration_seconds", "histogram",
                   "Time merchant endpoints took to answer a webhook.");
    p = ngx_http_paygw_m_hist(p, last, "paygw_webhook_duration_seconds",
                              "endpoint", "merchant", &m->webhook_duration);

    ngx_paygw_head("paygw_webhook_backlog", "gauge",
                   "Outbox events not yet delivered (last measured).");
    p = ngx_slprintf(p, last, "paygw_webhook_backlog %uA\n",
                     m->webhook_backlog);

    ngx_paygw_head("paygw_webhook_backlog_oldest_seconds", "gauge",
                   "Age of the oldest undelivered event (last measured).");
    p = ngx_slprintf(p, last, "paygw_webhook_backlog_oldest_seconds %uA\n",
                     m->webhook_oldest);

    ngx_paygw_head("paygw_zone_reloads_total", "counter",
                   "Reloads that kept paygw_zone.");
    p = ngx_slprintf(p, last, "paygw_zone_reloads_total %uA\n", sh->reloads);

    ngx_paygw_head("paygw_health_requests_total", "counter",
                   "Health checks answered.");
    p = ngx_slprintf(p, last,
                     "paygw_health_requests_total{check=\"live\"} %uA\n"
                     "paygw_health_requests_total{check=\"ready\"} %uA\n",
                     sh->health_requests, sh->ready_requests);

    ngx_paygw_head("paygw_readiness_failures_total", "counter",
                   "Readiness checks that found a backend down.");
    p = ngx_slprintf(p, last, "paygw_readiness_failures_total %uA\n",
                     sh->ready_failures);

    ngx_paygw_head("paygw_zone_created_seconds", "gauge",
                   "When paygw_zone was created.");
    p = ngx_slprintf(p, last, "paygw_zone_created_seconds %T\n", sh->created);

    return ngx_http_paygw_m_render_heap(p, last, sh);
}


/*
 * Each worker's malloc heap as of its last trim (memory.c): blocks in
 * use, free blocks the arena keeps, blocks mapped on their own.  Only
 * this configuration's workers: a slot of a worker_processes since
 * lowered by a reload would show an exited worker's last figures.
 */

static u_char *
ngx_http_paygw_m_render_heap(u_char *p, u_char *last,
    ngx_http_paygw_shctx_t *sh)
{
    ngx_uint_t              i, n;
    ngx_core_conf_t        *ccf;
    ngx_http_paygw_heap_t  *heap;

    ccf = (ngx_core_conf_t *) ngx_get_conf(ngx_cycle->conf_ctx,
                                           ngx_core_module);

    n = ngx_min((ngx_uint_t) ccf->worker_processes, NGX_HTTP_PAYGW_M_WORKERS);

    ngx_paygw_head("paygw_worker_heap_bytes", "gauge",
                   "A worker's malloc heap after its last trim, by state: "
                   "in use, free but kept, mapped on their own.");

    for (i = 0; i < n; i++) {
        heap = &sh->heap[i];

        if (heap->pid == 0) {
            continue;
        }

        p = ngx_slprintf(p, last,
                         "paygw_worker_heap_bytes{worker=\"%ui\","
                         "state=\"in_use\"} %uA\n"
                         "paygw_worker_heap_bytes{worker=\"%ui\","
                         "state=\"free\"} %uA\n"
                         "paygw_worker_heap_bytes{worker=\"%ui\","
                         "state=\"mapped\"} %uA\n",
                         i, heap->in_use, i, heap->free, i, heap->mapped);
    }

    ngx_paygw_head("paygw_worker_heap_trim_seconds", "gauge",
                   "How long a worker's last malloc_trim took.");

    for (i = 0; i < n; i++) {
        heap = &sh->heap[i];

        if (heap->pid) {
            p = ngx_slprintf(p, last,
                             "paygw_worker_heap_trim_seconds{worker=\"%ui\"} "
                             "%uA.%06uA\n", i, heap->trim_us / 1000000,
                             heap->trim_us % 1000000);
        }
    }

    return p;
}


#undef ngx_paygw_head


static u_char *
ngx_http_paygw_m_hist(u_char *p, u_char *last, const char *name,
    const char *label, const char *value, ngx_http_paygw_hist_t *h)
{
    ngx_uint_t    i;
    ngx_atomic_uint_t  cum, sum;

    cum = 0;

    for (i = 0; i < NGX_HTTP_PAYGW_M_BUCKETS; i++) {
        cum += h->bucket[i];
        p = ngx_slprintf(p, last, "%s_bucket{%s=\"%s\",le=\"%s\"} %uA\n",
                         name, label, value, ngx_http_paygw_m_le[i], cum);
    }

    sum = h->sum_us;

    p = ngx_slprintf(p, last, "%s_sum{%s=\"%s\"} %uA.%06uA\n"
                     "%s_count{%s=\"%s\"} %uA\n",
                     name, label, value, sum / 1000000, sum % 1000000,
                     name, label, value, cum);

    return p;
}


/* SPEC §7: the differences the last scheduled reconciliation found */

void
ngx_http_paygw_m_reconciliation(ngx_http_request_t *r, ngx_str_t *channel,
    ngx_uint_t differences)
{
    ngx_http_paygw_metrics_t  *m;

    m = ngx_http_paygw_m(r);

    if (m) {
        m->reconciliation_diffs[ngx_http_paygw_m_channel_index(r, channel)]
            = differences;
    }
}
