
/*
 * paygw: a payment gateway inside nginx.
 *
 * This file is the table of contents: the module, its directives and
 * its configuration.  Each concern lives in its own file under src/.
 */


#include "ngx_http_paygw.h"
#include "ngx_http_paygw_redis_cluster.h"
#include "ngx_http_paygw_mysql.h"
#include "ngx_http_paygw_api.h"
#include "ngx_http_paygw_channel.h"
#include "ngx_http_paygw_metrics.h"
#include "ngx_http_paygw_trace.h"
#include "ngx_http_paygw_fees.h"
#include "ngx_http_paygw_webhook.h"
#include "ngx_http_paygw_request.h"


static void *ngx_http_paygw_create_main_conf(ngx_conf_t *cf);
static ngx_int_t ngx_http_paygw_postconfiguration(ngx_conf_t *cf);
static char *ngx_http_paygw_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_paygw_create_loc_conf(ngx_conf_t *cf);
static ngx_int_t ngx_http_paygw_init_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_paygw_body_conf(ngx_conf_t *cf,
    ngx_http_paygw_loc_conf_t *conf);
static char *ngx_http_paygw_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_paygw_redis_timeout(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void ngx_http_paygw_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_paygw_preconfiguration(ngx_conf_t *cf);


static ngx_command_t  ngx_http_paygw_commands[] = {

    { ngx_string("paygw_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_paygw_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_memory_trim"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_paygw_memory_trim,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_redis_pass"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_paygw_redis_pass,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_redis_cluster"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_paygw_loc_conf_t, redis_cluster),
      NULL },

    { ngx_string("paygw_redis_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_paygw_loc_conf_t, redis.connect_timeout),
      NULL },

    { ngx_string("paygw_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_paygw_redis_timeout,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_redis_multiplex"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_paygw_loc_conf_t, redis_multiplex),
      NULL },

    { ngx_string("paygw_redis_max_reply_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_paygw_loc_conf_t, redis_max_reply),
      NULL },

    { ngx_string("paygw_redis_location"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_paygw_loc_conf_t, redis_uri),
      NULL },

    { ngx_string("paygw_mysql"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_paygw_mysql_block,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_mysql_pass"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_paygw_mysql_pass,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_mysql_location"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_paygw_loc_conf_t, mysql_uri),
      NULL },

    { ngx_string("paygw_keys"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_paygw_keys,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_channel"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_paygw_channel,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_resolver"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_paygw_settler,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_fees"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_paygw_fees,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_statement_hosts"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_paygw_statement_hosts,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_reconcile_schedule"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_paygw_reconcile_schedule,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    /* merchant webhooks: ngx_http_paygw_webhook.c */

    { ngx_string("paygw_webhook"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_paygw_webhook,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_webhook_secrets"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_paygw_webhook_secrets,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_webhook_retry"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_paygw_webhook_retry,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_webhook_peer"),
      NGX_HTTP_UPS_CONF|NGX_CONF_ANY,
      ngx_http_paygw_webhook_peer,
      0,
      0,
      NULL },

    { ngx_string("paygw_webhook_allow_loopback"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_paygw_webhook_flag,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_policy"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_paygw_policy,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_risk"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_paygw_risk,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_paygw_api,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_max_body_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_paygw_loc_conf_t, max_body),
      NULL },

    { ngx_string("paygw_notify_http"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_paygw_loc_conf_t, notify_http),
      NULL },

    { ngx_string("paygw_idempotency_retention"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_paygw_loc_conf_t, idem_retention),
      NULL },

    { ngx_string("paygw_idempotency_lock_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_paygw_loc_conf_t, idem_lock),
      NULL },

    { ngx_string("paygw_health"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_paygw_health,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_paygw_metrics,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("paygw_error"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_paygw_error,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_paygw_module_ctx = {
    ngx_http_paygw_preconfiguration,       /* preconfiguration */
    ngx_http_paygw_postconfiguration,      /* postconfiguration */

    ngx_http_paygw_create_main_conf,       /* create main configuration */
    ngx_http_paygw_init_main_conf,         /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_paygw_create_loc_conf,        /* create location configuration */
    ngx_http_paygw_merge_loc_conf          /* merge location configuration */
};


ngx_module_t  ngx_http_paygw_module = {
    NGX_MODULE_V1,
    &ngx_http_paygw_module_ctx,            /* module context */
    ngx_http_paygw_commands,               /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_paygw_init_process,           /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_paygw_exit_process,           /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_paygw_preconfiguration(ngx_conf_t *cf)
{
    if (ngx_http_paygw_add_variables(cf) != NGX_OK
        || ngx_http_paygw_webhook_add_variables(cf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void *
ngx_http_paygw_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_paygw_main_conf_t));
    if (pmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&pmcf->mysql_servers, cf->pool, 1,
                       sizeof(ngx_http_paygw_mysql_srv_t *))
        != NGX_OK
        || ngx_array_init(&pmcf->logs, cf->pool, 4, sizeof(ngx_log_t *))
           != NGX_OK
        || ngx_array_init(&pmcf->redis_locations, cf->pool, 1,
                          2 * sizeof(void *))
           != NGX_OK
        || ngx_array_init(&pmcf->redis_users, cf->pool, 16,
                          sizeof(ngx_http_paygw_loc_conf_t *))
           != NGX_OK)
    {
        return NULL;
    }

    pmcf->memory_trim = NGX_CONF_UNSET_MSEC;
    pmcf->memory_mmap = NGX_CONF_UNSET_SIZE;

    return pmcf;
}


static ngx_int_t
ngx_http_paygw_postconfiguration(ngx_conf_t *cf)
{
    if (ngx_http_paygw_access_init(cf) != NGX_OK
        || ngx_http_paygw_metrics_init(cf) != NGX_OK
        || ngx_http_paygw_recon_init(cf) != NGX_OK
        || ngx_http_paygw_channels_budget(cf) != NGX_OK
        || ngx_http_paygw_webhook_peer_postconf(cf) != NGX_OK
        || ngx_http_paygw_redis_mux_postconf(cf) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static char *
ngx_http_paygw_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_paygw_main_conf_t *pmcf = conf;

    if (ngx_http_paygw_settler_check(cf, pmcf) != NGX_OK
        || ngx_http_paygw_webhook_check(cf, pmcf) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    ngx_http_paygw_memory_init_conf(pmcf);

    return ngx_http_paygw_channels_init(cf, pmcf);
}


static void *
ngx_http_paygw_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_paygw_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_paygw_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->mysql = NULL;
     *     conf->mysql_name = { 0, NULL };
     *     conf->redis_uri = { 0, NULL };
     *     conf->mysql_uri = { 0, NULL };
     */

    ngx_http_paygw_redis_init_conf(conf);

    conf->redis_max_reply = NGX_CONF_UNSET_SIZE;
    conf->redis_cluster = NGX_CONF_UNSET;
    conf->api = NGX_CONF_UNSET;
    conf->max_body = NGX_CONF_UNSET_SIZE;
    conf->idem_retention = NGX_CONF_UNSET_MSEC;
    conf->idem_lock = NGX_CONF_UNSET_MSEC;
    conf->notify_http = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_paygw_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_paygw_loc_conf_t *prev = parent;
    ngx_http_paygw_loc_conf_t *conf = child;

    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_paygw_module);

    if (ngx_http_paygw_redact_collect(cf, pmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_paygw_redis_merge_conf(cf, prev, conf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_paygw_rc_merge_conf(cf, prev, conf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_conf_merge_size_value(conf->redis_max_reply, prev->redis_max_reply,
                              8 * 1024 * 1024);

    ngx_conf_merge_value(conf->api, prev->api, 0);
    ngx_conf_merge_size_value(conf->max_body, prev->max_body, 16 * 1024);

    if (conf->api && ngx_http_paygw_body_conf(cf, conf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }
    ngx_conf_merge_msec_value(conf->idem_retention, prev->idem_retention,
                              24 * 60 * 60 * 1000);
    ngx_conf_merge_msec_value(conf->idem_lock, prev->idem_lock, 60 * 1000);
    ngx_conf_merge_value(conf->notify_http, prev->notify_http, 0);

    ngx_conf_merge_str_value(conf->redis_uri, prev->redis_uri,
                             "/_paygw/redis");
    ngx_conf_merge_str_value(conf->mysql_uri, prev->mysql_uri,
                             "/_paygw/mysql");

    return ngx_http_paygw_mysql_merge_conf(cf, prev, conf);
}


/*
 * An API request's body carries card data: it must stay in memory, where
 * the module wipes it (nginx merges its own module's settings first).
 */

static ngx_int_t
ngx_http_paygw_body_conf(ngx_conf_t *cf, ngx_http_paygw_loc_conf_t *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->client_body_in_file_only) {           /* "on" or "clean" */
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "paygw_api: client_body_in_file_only would write "
                           "card data to disk");
        return NGX_ERROR;
    }

    if ((size_t) clcf->client_body_buffer_size < conf->max_body) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "paygw_api: client_body_buffer_size %uz is "
                           "smaller than paygw_max_body_size %uz: larger "
                           "bodies go to a temporary file (refused, but "
                           "written to disk)",
                           (size_t) clcf->client_body_buffer_size,
                           conf->max_body);
    }

    return NGX_OK;
}


static char *
ngx_http_paygw_redis_timeout(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_loc_conf_t *plcf = conf;

    ngx_str_t   *value;
    ngx_msec_t   timeout;

    if (plcf->redis.read_timeout != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    timeout = ngx_parse_time(&value[1], 0);
    if (timeout == (ngx_msec_t) NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid timeout \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    /* a reply must both be sent and come back within it */

    plcf->redis.read_timeout = timeout;
    plcf->redis.send_timeout = timeout;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_paygw_init_process(ngx_cycle_t *cycle)
{
    ngx_http_paygw_json_init();
    ngx_http_paygw_redact_init_process(cycle);

    if (ngx_http_paygw_mysql_init_process(cycle) != NGX_OK
        || ngx_http_paygw_reconciler_init_process(cycle) != NGX_OK
        || ngx_http_paygw_webhook_init_process(cycle) != NGX_OK
        || ngx_http_paygw_memory_init_process(cycle) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_paygw_settler_init_process(cycle);
}


static void
ngx_http_paygw_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_paygw_mysql_exit_process(cycle);
    ngx_http_paygw_redact_exit_process(cycle);
}
