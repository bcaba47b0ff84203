
/*
 * paygw: the paygw_zone shared memory zone, created the way
 * ngx_http_limit_req_module creates its zones: a slab pool whose state
 * the new cycle adopts on "nginx -s reload", so counters and breakers
 * survive it.  A channel slot whose channel changed on reload (see
 * ngx_http_paygw.h) starts afresh.
 *
 *     paygw_zone NAME:SIZE;
 */


#include "ngx_http_paygw_zone.h"


typedef struct {
    ngx_http_paygw_shctx_t  *sh;
    ngx_slab_pool_t         *shpool;
    ngx_str_t               *slot_names;   /* of the configuration */
    ngx_array_t             *mysql_servers;
} ngx_http_paygw_zone_ctx_t;


static ngx_int_t ngx_http_paygw_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_paygw_zone_create(ngx_http_paygw_zone_ctx_t *ctx);
static void ngx_http_paygw_zone_slots(ngx_http_paygw_zone_ctx_t *ctx);
static void ngx_http_paygw_zone_clear(ngx_http_paygw_shctx_t *sh,
    ngx_uint_t slot);


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

    /* filled in after the http block, before the zone is initialized */
    ctx->slot_names = pmcf->slot_names;
    ctx->mysql_servers = &pmcf->mysql_servers;

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
            ngx_http_paygw_zone_slots(ctx);
            ngx_http_paygw_mysql_ha_adopt(ctx->mysql_servers,
                                          ctx->sh->mysql_ha,
                                          NGX_HTTP_PAYGW_MYSQL_HA_SHARED);
            return NGX_OK;
        }

        /* a module built differently: its counters start afresh */

        return ngx_http_paygw_zone_create(ctx);
    }

    ctx->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        ctx->sh = ctx->shpool->data;
        ngx_http_paygw_zone_slots(ctx);
        ngx_http_paygw_mysql_ha_adopt(ctx->mysql_servers, ctx->sh->mysql_ha,
                                      NGX_HTTP_PAYGW_MYSQL_HA_SHARED);
        return NGX_OK;
    }

    if (ngx_http_paygw_zone_create(ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    len = sizeof(" in paygw_zone \"\"") + shm_zone->shm.name.len;

    ctx->shpool->log_ctx = ngx_slab_alloc(ctx->shpool, len);
    if (ctx->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(ctx->shpool->log_ctx, " in paygw_zone \"%V\"%Z",
                &shm_zone->shm.name);

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_zone_create(ngx_http_paygw_zone_ctx_t *ctx)
{
    ctx->sh = ngx_slab_calloc(ctx->shpool, sizeof(ngx_http_paygw_shctx_t));
    if (ctx->sh == NULL) {
        return NGX_ERROR;
    }

    ctx->shpool->data = ctx->sh;
    ctx->sh->layout = NGX_HTTP_PAYGW_M_LAYOUT;
    ctx->sh->created = ngx_time();

    if (ngx_http_paygw_handoff_init(&ctx->sh->handoff, ctx->shpool)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_paygw_zone_slots(ctx);
    ngx_http_paygw_mysql_ha_adopt(ctx->mysql_servers, ctx->sh->mysql_ha,
                                  NGX_HTTP_PAYGW_MYSQL_HA_SHARED);

    return NGX_OK;
}


/*
 * The channel each slot now counts for.  A slot that counted for another
 * channel before this reload (or for none) starts afresh: its counters
 * and its breaker are cleared.  Workers of the previous cycle may still
 * add to it until they exit.
 */

static void
ngx_http_paygw_zone_slots(ngx_http_paygw_zone_ctx_t *ctx)
{
    ngx_str_t               *name;
    ngx_uint_t               i;
    ngx_http_paygw_shctx_t  *sh;

    sh = ctx->sh;

    ngx_shmtx_lock(&ctx->shpool->mutex);

    for (i = 0; i < NGX_HTTP_PAYGW_SLOT_OTHER; i++) {
        name = &ctx->slot_names[i];

        /* an unused slot has no name: data is NULL, len 0 */

        if (ngx_strlen(sh->slot_name[i]) == name->len
            && (name->len == 0
                || ngx_strncmp(sh->slot_name[i], name->data, name->len) == 0))
        {
            continue;
        }

        ngx_http_paygw_zone_clear(sh, i);

        if (name->len) {
            ngx_memcpy(sh->slot_name[i], name->data, name->len);
        }

        sh->slot_name[i][name->len] = '\0';
    }

    ngx_shmtx_unlock(&ctx->shpool->mutex);
}


static void
ngx_http_paygw_zone_clear(ngx_http_paygw_shctx_t *sh, ngx_uint_t slot)
{
    ngx_http_paygw_metrics_t  *m;

    m = &sh->m;

    /* in the master, before any worker of this cycle counts */

    ngx_memzero((void *) m->payments[slot], sizeof(m->payments[slot]));
    ngx_memzero((void *) m->channel_requests[slot],
                sizeof(m->channel_requests[slot]));
    ngx_memzero(&m->channel_duration[slot], sizeof(ngx_http_paygw_hist_t));
    ngx_memzero((void *) m->callbacks[slot], sizeof(m->callbacks[slot]));
    m->reconciliation_diffs[slot] = 0;

    ngx_memzero(&sh->breaker[slot], sizeof(ngx_http_paygw_breaker_t));
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


ngx_http_paygw_shctx_t *
ngx_http_paygw_shctx_cycle(ngx_cycle_t *cycle)
{
    ngx_http_paygw_zone_ctx_t   *ctx;
    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_paygw_module);

    if (pmcf == NULL || pmcf->shm_zone == NULL) {
        return NULL;
    }

    ctx = pmcf->shm_zone->data;

    return ctx->sh;
}
