
/*
 * paygw: /metrics in the Prometheus text format.
 *
 *     location = /metrics { paygw_metrics; }
 *
 * Values live in paygw_zone, so they are summed over all workers and
 * survive "nginx -s reload".
 */


#include "ngx_http_paygw.h"


#define NGX_HTTP_PAYGW_METRICS_MAX  4096


static ngx_int_t ngx_http_paygw_metrics_handler(ngx_http_request_t *r);


static ngx_str_t  ngx_http_paygw_metrics_type =
    ngx_string("text/plain; version=0.0.4; charset=utf-8");


char *
ngx_http_paygw_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t    *clcf;
    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_paygw_module);

    if (pmcf->shm_zone == NULL) {
        return "requires paygw_zone before it in the http block";
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_paygw_metrics_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_paygw_metrics_handler(ngx_http_request_t *r)
{
    u_char                  *p, *last;
    ngx_int_t                rc;
    ngx_str_t                body;
    ngx_http_paygw_shctx_t  *sh;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_paygw_not_allowed(r, "GET, HEAD");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    sh = ngx_http_paygw_shctx(r);

    p = ngx_pnalloc(r->pool, NGX_HTTP_PAYGW_METRICS_MAX);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.data = p;
    last = p + NGX_HTTP_PAYGW_METRICS_MAX;

    p = ngx_slprintf(p, last,
            "# HELP paygw_zone_reloads_total Reloads that kept paygw_zone.\n"
            "# TYPE paygw_zone_reloads_total counter\n"
            "paygw_zone_reloads_total %uA\n"
            "# HELP paygw_health_requests_total Health checks answered.\n"
            "# TYPE paygw_health_requests_total counter\n"
            "paygw_health_requests_total{check=\"live\"} %uA\n"
            "paygw_health_requests_total{check=\"ready\"} %uA\n"
            "# HELP paygw_readiness_failures_total Readiness checks that "
            "found a backend down.\n"
            "# TYPE paygw_readiness_failures_total counter\n"
            "paygw_readiness_failures_total %uA\n"
            "# HELP paygw_zone_created_seconds When paygw_zone was created.\n"
            "# TYPE paygw_zone_created_seconds gauge\n"
            "paygw_zone_created_seconds %T\n",
            sh->reloads, sh->health_requests, sh->ready_requests,
            sh->ready_failures, sh->created);

    body.len = p - body.data;

    return ngx_http_paygw_send_text(r, NGX_HTTP_OK,
                                    &ngx_http_paygw_metrics_type, &body);
}
