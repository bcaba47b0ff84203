
/*
 * paygw: the paygw_zone shared memory zone, created the way
 * ngx_http_limit_req_module creates its zones: a slab pool whose state
 * the new cycle adopts on "nginx -s reload", so counters and breakers
 * survive it.
 *
 *     paygw_zone NAME:SIZE;
 */


#include "ngx_http_paygw_zone.h"


typedef struct {
    ngx_http_paygw_shctx_t  *sh;
    ngx_slab_pool_t         *shpool;
} ngx_http_paygw_zone_ctx_t;


static ngx_int_t ngx_http_paygw_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);


char *
ngx_http_paygw_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_main_conf_t *pmcf = conf;

    u_char                     *p;
    ssize_t                     size;
    ngx_str_t                  *value, name, s;
    ngx_http_paygw_zone_ctx_t  *ctx;

    if (pmcf->shm_zone) {
        return "is duplicate";
    }

    value = cf->args->elts;

    p = ngx_strlchr(value[1].data, value[1].data + value[1].len, ':');

    if (p == NULL || p == value[1].data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone \"%V\", expected NAME:SIZE",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    name.data = value[1].data;
    name.len = p - value[1].data;

    s.data = p + 1;
    s.len = value[1].data + value[1].len - s.data;

    size = ngx_parse_size(&s);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid zone size \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is too small: at least %uz bytes",
                           &value[1], 8 * ngx_pagesize);
        return NGX_CONF_ERROR;
    }

    ctx = ngx_pcalloc(cf->pool, sizeof(ngx_http_paygw_zone_ctx_t));
    if (ctx == NULL) {
        return NGX_CONF_ERROR;
    }

    pmcf->shm_zone = ngx_shared_memory_add(cf, &name, size,
                                           &ngx_http_paygw_module);
    if (pmcf->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (pmcf->shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "zone \"%V\" is already used", &name);
        return NGX_CONF_ERROR;
    }

    pmcf->shm_zone->init = ngx_http_paygw_init_zone;
    pmcf->shm_zone->data = ctx;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_paygw_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_paygw_zone_ctx_t  *octx = data;

    size_t                      len;
    ngx_http_paygw_zone_ctx_t  *ctx;

    ctx = shm_zone->data;

    if (octx) {
        /* a reload: keep what the previous cycle counted */

        ctx->sh = octx->sh;
        ctx->shpool = octx->shpool;

        if (ctx->sh->layout == NGX_HTTP_PAYGW_M_LAYOUT) {
            (void) ngx_atomic_fetch_add(&ctx->sh->reloads, 1);
            return NGX_OK;
        }

        /* a module built differently: its counters start afresh */

        ctx->sh = ngx_slab_calloc(ctx->shpool,
                                  sizeof(ngx_http_paygw_shctx_t));
        if (ctx->sh == NULL) {
            return NGX_ERROR;
        }

        ctx->shpool->data = ctx->sh;
        ctx->sh->layout = NGX_HTTP_PAYGW_M_LAYOUT;
        ctx->sh->created = ngx_time();

        return NGX_OK;
    }

    ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        ctx->sh = ctx->shpool->data;
        return NGX_OK;
    }

    ctx->sh = ngx_slab_calloc(ctx->shpool, sizeof(ngx_http_paygw_shctx_t));
    if (ctx->sh == NULL) {
        return NGX_ERROR;
    }

    ctx->shpool->data = ctx->sh;
    ctx->sh->layout = NGX_HTTP_PAYGW_M_LAYOUT;
    ctx->sh->created = ngx_time();

    len = sizeof(" in paygw_zone \"\"") + shm_zone->shm.name.len;

    ctx->shpool->log_ctx = ngx_slab_alloc(ctx->shpool, len);
    if (ctx->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(ctx->shpool->log_ctx, " in paygw_zone \"%V\"%Z",
                &shm_zone->shm.name);

    return NGX_OK;
}


static ngx_http_paygw_zone_ctx_t *
ngx_http_paygw_zone_ctx(ngx_http_request_t *r)
{
    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_paygw_module);

    return pmcf->shm_zone ? pmcf->shm_zone->data : NULL;
}


ngx_http_paygw_shctx_t *
ngx_http_paygw_shctx(ngx_http_request_t *r)
{
    ngx_http_paygw_zone_ctx_t  *ctx;

    ctx = ngx_http_paygw_zone_ctx(r);

    return ctx ? ctx->sh : NULL;
}


ngx_slab_pool_t *
ngx_http_paygw_shpool(ngx_http_request_t *r)
{
    ngx_http_paygw_zone_ctx_t  *ctx;

    ctx = ngx_http_paygw_zone_ctx(r);

    return ctx ? ctx->shpool : NULL;
}
