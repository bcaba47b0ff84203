
/*
 * paygw: backend calls through subrequests to internal locations.
 *
 * The parent hands its work to the subrequest through the subrequest's
 * ctx and is woken (posted) by nginx when the subrequest finishes, the
 * way ngx_http_auth_request_module does it.  The subrequest is
 * header-only: nothing of it ever reaches the client.
 */


#include "ngx_http_paygw_metrics.h"
#include "ngx_http_paygw_redis.h"


static ngx_int_t ngx_http_paygw_call_done(ngx_http_request_t *r, void *data,
    ngx_int_t rc);


ngx_int_t
ngx_http_paygw_call_start(ngx_http_request_t *r, ngx_str_t *uri,
    ngx_http_paygw_call_t *call)
{
    ngx_http_request_t          *sr;
    ngx_http_post_subrequest_t  *ps;

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_ERROR;
    }

    ps->handler = ngx_http_paygw_call_done;
    ps->data = call;

    call->started = 1;
    call->done = 0;
    call->ok = 0;
    call->status = 0;
    ngx_str_null(&call->error);

    if (ngx_http_subrequest(r, uri, NULL, &sr, ps,
                            NGX_HTTP_SUBREQUEST_WAITED)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    sr->header_only = 1;

    ngx_http_set_ctx(sr, call, ngx_http_paygw_module);

    call->sr = sr;

    if (call->kind == NGX_HTTP_PAYGW_CALL_REDIS) {
        /* one op, one pipeline; MySQL counts its queries as it sends */
        ngx_http_paygw_m_round_trip(r, NGX_HTTP_PAYGW_M_BACKEND_REDIS);
    }

    return NGX_OK;
}


void *
ngx_http_paygw_call_ctx(ngx_http_request_t *r, ngx_uint_t kind)
{
    ngx_http_paygw_call_t  *call;

    /* only our own subrequests carry work; anything else is not found */

    if (r == r->main) {
        return NULL;
    }

    call = ngx_http_get_module_ctx(r, ngx_http_paygw_module);

    if (call == NULL || call->kind != kind || call->sr != r) {
        return NULL;
    }

    return call;
}


void
ngx_http_paygw_call_fail(ngx_http_paygw_call_t *call, ngx_pool_t *pool,
    ngx_uint_t status, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;
    u_char    buf[NGX_MAX_ERROR_STR];

    call->ok = 0;
    call->status = status;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + sizeof(buf), fmt, args);
    va_end(args);

    call->error.data = ngx_pnalloc(pool, p - buf);
    if (call->error.data == NULL) {
        call->error.len = 0;
        return;
    }

    call->error.len = p - buf;
    ngx_memcpy(call->error.data, buf, p - buf);
}


static ngx_int_t
ngx_http_paygw_call_done(ngx_http_request_t *r, void *data, ngx_int_t rc)
{
    ngx_http_paygw_call_t *call = data;

    /* nginx may call this twice for a waited subrequest */

    if (call->done || call->sr != r) {
        return rc;
    }

    if (call->kind == NGX_HTTP_PAYGW_CALL_REDIS
        && ngx_http_paygw_redis_done(r, call) == NGX_AGAIN)
    {
        return rc;
    }

    call->done = 1;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw call done: \"%V\" rc:%i ok:%d",
                   &r->uri, rc, call->ok);

    if (!call->ok) {
        ngx_http_paygw_m_backend_error(r,
                                       call->kind == NGX_HTTP_PAYGW_CALL_REDIS
                                       ? NGX_HTTP_PAYGW_M_BACKEND_REDIS
                                       : NGX_HTTP_PAYGW_M_BACKEND_MYSQL);
    }

    if (call->ok || call->status) {
        return rc;
    }

    /* the backend module did not record an outcome: nginx did */

    switch (rc) {

    case NGX_HTTP_GATEWAY_TIME_OUT:
        ngx_http_paygw_call_fail(call, r->pool, NGX_HTTP_GATEWAY_TIME_OUT,
                                 "timed out");
        break;

    case NGX_HTTP_BAD_GATEWAY:
    case NGX_HTTP_SERVICE_UNAVAILABLE:
        ngx_http_paygw_call_fail(call, r->pool, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 "unavailable");
        break;

    case NGX_HTTP_NOT_FOUND:
    case NGX_HTTP_FORBIDDEN:
    case NGX_HTTP_NOT_ALLOWED:
        ngx_http_paygw_call_fail(call, r->pool,
                                 NGX_HTTP_INTERNAL_SERVER_ERROR,
                                 "location \"%V\" is not a paygw backend",
                                 &r->uri);
        break;

    default:
        ngx_http_paygw_call_fail(call, r->pool,
                                 NGX_HTTP_INTERNAL_SERVER_ERROR,
                                 "failed (%i)", rc);
    }

    return rc;
}
