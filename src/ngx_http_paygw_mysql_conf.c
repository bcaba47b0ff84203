
/*
 * paygw: the paygw_mysql and paygw_mysql_pass directives.
 *
 *     paygw_mysql NAME host=IP [port=3306] [failover=IP:PORT ...] user=USER
 *                 password_file=PATH database=DB [max_conns=16]
 *                 [idle_timeout=60s] [connect_timeout=3s]
 *                 [query_timeout=10s] [check_interval=1s]
 *                 [check_timeout=2s];
 */


#include "ngx_http_paygw_mysql.h"


static char *ngx_http_paygw_mysql_param(ngx_conf_t *cf,
    ngx_http_paygw_mysql_srv_t *srv, ngx_str_t *param);
static char *ngx_http_paygw_mysql_msec(ngx_conf_t *cf, ngx_str_t *param,
    size_t skip, ngx_msec_t *msec);
static ngx_int_t ngx_http_paygw_mysql_is_ip(ngx_str_t *host);
static char *ngx_http_paygw_mysql_failover_param(ngx_conf_t *cf,
    ngx_http_paygw_mysql_srv_t *srv, ngx_str_t *param);
static char *ngx_http_paygw_mysql_nodes(ngx_conf_t *cf,
    ngx_http_paygw_mysql_srv_t *srv);


char *
ngx_http_paygw_mysql_block(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_main_conf_t *pmcf = conf;

    char                         *rv;
    ngx_str_t                    *value;
    ngx_uint_t                    i;
    ngx_http_paygw_mysql_srv_t   *srv, **srvp;

    value = cf->args->elts;

    srvp = pmcf->mysql_servers.elts;

    for (i = 0; i < pmcf->mysql_servers.nelts; i++) {
        if (srvp[i]->name.len == value[1].len
            && ngx_strncmp(srvp[i]->name.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate paygw_mysql \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    srv = ngx_pcalloc(cf->pool, sizeof(ngx_http_paygw_mysql_srv_t));
    if (srv == NULL) {
        return NGX_CONF_ERROR;
    }

    srv->name = value[1];
    srv->port = 3306;
    srv->max_conns = 16;
    srv->idle_timeout = 60000;
    srv->connect_timeout = 3000;
    srv->query_timeout = 10000;
    srv->check_interval = 1000;
    srv->check_timeout = 2000;

    for (i = 2; i < cf->args->nelts; i++) {
        rv = ngx_http_paygw_mysql_param(cf, srv, &value[i]);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    if (ngx_http_paygw_mysql_nodes(cf, srv) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (srv->host.data == NULL || srv->user.data == NULL
        || srv->password.data == NULL || srv->database.data == NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "paygw_mysql \"%V\" needs host=, user=, "
                           "password_file= and database=", &srv->name);
        return NGX_CONF_ERROR;
    }

    srv->index = pmcf->mysql_servers.nelts;

    srvp = ngx_array_push(&pmcf->mysql_servers);
    if (srvp == NULL) {
        return NGX_CONF_ERROR;
    }

    *srvp = srv;

    return NGX_CONF_OK;
}


static char *
ngx_http_paygw_mysql_param(ngx_conf_t *cf, ngx_http_paygw_mysql_srv_t *srv,
    ngx_str_t *param)
{
    ngx_int_t  n;
    ngx_str_t  v;

#define ngx_paygw_is(name)                                                   \
    (param->len > sizeof(name) - 1                                           \
     && ngx_strncmp(param->data, name, sizeof(name) - 1) == 0)

    if (ngx_paygw_is("host=")) {
        srv->host.data = param->data + 5;
        srv->host.len = param->len - 5;

        /* Connector/C resolves names with a blocking call: IPs only */

        if (ngx_http_paygw_mysql_is_ip(&srv->host) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" is not an IP address: paygw_mysql "
                               "takes IP addresses only, because resolving "
                               "a name would block the worker", &srv->host);
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    if (ngx_paygw_is("failover=")) {
        return ngx_http_paygw_mysql_failover_param(cf, srv, param);
    }

    if (ngx_paygw_is("port=")) {
        n = ngx_atoi(param->data + 5, param->len - 5);
        if (n < 1 || n > 65535) {
            goto invalid;
        }

        srv->port = n;
        return NGX_CONF_OK;
    }

    if (ngx_paygw_is("user=")) {
        srv->user.data = param->data + 5;
        srv->user.len = param->len - 5;
        return NGX_CONF_OK;
    }

    if (ngx_paygw_is("database=")) {
        srv->database.data = param->data + 9;
        srv->database.len = param->len - 9;
        return NGX_CONF_OK;
    }

    if (ngx_paygw_is("password_file=")) {
        v.data = param->data + 14;
        v.len = param->len - 14;
        return ngx_http_paygw_read_secret(cf, &v, "password_file",
                                          &srv->password);
    }

    if (ngx_paygw_is("max_conns=")) {
        n = ngx_atoi(param->data + 10, param->len - 10);
        if (n < 1) {
            goto invalid;
        }

        srv->max_conns = n;
        return NGX_CONF_OK;
    }

    if (ngx_paygw_is("idle_timeout=")) {
        return ngx_http_paygw_mysql_msec(cf, param, 13, &srv->idle_timeout);
    }

    if (ngx_paygw_is("connect_timeout=")) {
        return ngx_http_paygw_mysql_msec(cf, param, 16,
                                         &srv->connect_timeout);
    }

    if (ngx_paygw_is("query_timeout=")) {
        return ngx_http_paygw_mysql_msec(cf, param, 14, &srv->query_timeout);
    }

    if (ngx_paygw_is("check_interval=")) {
        return ngx_http_paygw_mysql_msec(cf, param, 15,
                                         &srv->check_interval);
    }

    if (ngx_paygw_is("check_timeout=")) {
        return ngx_http_paygw_mysql_msec(cf, param, 14, &srv->check_timeout);
    }

#undef ngx_paygw_is

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\"", param);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_paygw_mysql_msec(ngx_conf_t *cf, ngx_str_t *param, size_t skip,
    ngx_msec_t *msec)
{
    ngx_str_t  v;

    v.data = param->data + skip;
    v.len = param->len - skip;

    *msec = ngx_parse_time(&v, 0);

    if (*msec == (ngx_msec_t) NGX_ERROR || *msec == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid time in \"%V\"", param);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_paygw_mysql_is_ip(ngx_str_t *host)
{
#if (NGX_HAVE_INET6)
    struct in6_addr  inaddr6;
#endif

    if (ngx_inet_addr(host->data, host->len) != INADDR_NONE) {
        return NGX_OK;
    }

#if (NGX_HAVE_INET6)
    if (ngx_inet6_addr(host->data, host->len, inaddr6.s6_addr) == NGX_OK) {
        return NGX_OK;
    }
#endif

    return NGX_ERROR;
}


char *
ngx_http_paygw_mysql_pass(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_loc_conf_t *plcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    if (plcf->mysql_name.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* resolved in merge: paygw_mysql may come later in the file */

    plcf->mysql_name = value[1];
    plcf->mysql_file = &cf->conf_file->file.name;
    plcf->mysql_line = cf->conf_file->line;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    clcf->handler = ngx_http_paygw_mysql_handler;

    return NGX_CONF_OK;
}


char *
ngx_http_paygw_mysql_merge_conf(ngx_conf_t *cf,
    ngx_http_paygw_loc_conf_t *prev, ngx_http_paygw_loc_conf_t *conf)
{
    ngx_uint_t                    i;
    ngx_http_paygw_main_conf_t   *pmcf;
    ngx_http_paygw_mysql_srv_t  **srvp;

    if (conf->mysql_name.data == NULL || conf->mysql) {
        return NGX_CONF_OK;
    }

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_paygw_module);

    srvp = pmcf->mysql_servers.elts;

    for (i = 0; i < pmcf->mysql_servers.nelts; i++) {
        if (srvp[i]->name.len == conf->mysql_name.len
            && ngx_strncmp(srvp[i]->name.data, conf->mysql_name.data,
                           conf->mysql_name.len) == 0)
        {
            conf->mysql = srvp[i];
            return NGX_CONF_OK;
        }
    }

    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                  "unknown paygw_mysql \"%V\" in %V:%ui",
                  &conf->mysql_name, conf->mysql_file, conf->mysql_line);

    return NGX_CONF_ERROR;
}


/* failover=IP:PORT: another node of the cluster, in the order given */

static char *
ngx_http_paygw_mysql_failover_param(ngx_conf_t *cf,
    ngx_http_paygw_mysql_srv_t *srv, ngx_str_t *param)
{
    u_char                       *colon;
    ngx_int_t                     port;
    ngx_str_t                     v;
    ngx_http_paygw_mysql_node_t  *node;

    v.data = param->data + sizeof("failover=") - 1;
    v.len = param->len - (sizeof("failover=") - 1);

    for (colon = v.data + v.len - 1; colon > v.data && *colon != ':'; colon--)
    {
        /* void */
    }

    port = ngx_atoi(colon + 1, v.data + v.len - colon - 1);

    if (srv->nodes == NULL) {
        srv->nodes = ngx_array_create(cf->pool, 3,
                                      sizeof(ngx_http_paygw_mysql_node_t));
        if (srv->nodes == NULL) {
            return NGX_CONF_ERROR;
        }

        /* host= comes first: filled in once every parameter was read */

        if (ngx_array_push(srv->nodes) == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    node = ngx_array_push(srv->nodes);
    if (node == NULL) {
        return NGX_CONF_ERROR;
    }

    node->host.len = colon - v.data;
    node->host.data = ngx_pnalloc(cf->pool, node->host.len + 1);
    if (node->host.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(node->host.data, v.data, node->host.len);
    node->host.data[node->host.len] = '\0';
    node->port = port;

    if (colon == v.data || port < 1 || port > 65535
        || ngx_http_paygw_mysql_is_ip(&node->host) != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid paygw_mysql \"%V\": IP:PORT expected "
                           "(IP addresses only: resolving a name would "
                           "block the worker)", param);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_paygw_mysql_nodes(ngx_conf_t *cf, ngx_http_paygw_mysql_srv_t *srv)
{
    ngx_http_paygw_mysql_node_t  *nodes;

    /* a single server is a list of one: the writer is always node 0 */

    if (srv->nodes == NULL) {
        srv->nodes = ngx_array_create(cf->pool, 1,
                                      sizeof(ngx_http_paygw_mysql_node_t));
        if (srv->nodes == NULL || ngx_array_push(srv->nodes) == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (srv->nodes->nelts > NGX_HTTP_PAYGW_MYSQL_MAX_NODES) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "paygw_mysql \"%V\" has more than %d nodes",
                           &srv->name, NGX_HTTP_PAYGW_MYSQL_MAX_NODES);
        return NGX_CONF_ERROR;
    }

    nodes = srv->nodes->elts;
    nodes[0].host = srv->host;
    nodes[0].port = srv->port;

    return NGX_CONF_OK;
}
