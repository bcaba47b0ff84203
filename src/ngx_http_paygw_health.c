
/*
 * paygw: liveness and readiness.
 *
 *     location = /healthz { paygw_health live; }
 *     location = /readyz  { paygw_health ready; }
 *
 * "live" answers 200 while the worker runs.  "ready" answers 200 only
 * when a Redis PING and a MySQL SELECT 1 both succeed through the very
 * backends payments use, a Redis Cluster says cluster_state:ok and every
 * MySQL cluster has a writer that its health check did not find
 * unhealthy; else 503 naming what failed.  "backends" tells each side's
 * state: Redis single or cluster, each MySQL node as the shared health
 * check last found it and which one takes the writes (by position in
 * paygw_mysql: 1 is host=, then each failover=; no addresses).
 */


#include "ngx_http_paygw.h"
#include "ngx_http_paygw_redis.h"
#include "ngx_http_paygw_mysql.h"
#include "ngx_http_paygw_metrics.h"


typedef struct {
    ngx_http_paygw_redis_op_t  *redis;
    ngx_http_paygw_mysql_op_t  *mysql;
} ngx_http_paygw_ready_ctx_t;


static ngx_int_t ngx_http_paygw_live_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_paygw_ready_handler(ngx_http_request_t *r);
static void ngx_http_paygw_ready_resume(ngx_http_request_t *r);
static ngx_int_t ngx_http_paygw_ready_mysql(ngx_http_request_t *r,
    ngx_http_paygw_ready_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_ready_respond(ngx_http_request_t *r,
    ngx_http_paygw_ready_ctx_t *ctx);
static const char *ngx_http_paygw_redis_check(ngx_http_paygw_redis_op_t *op,
    ngx_str_t *why);
static const char *ngx_http_paygw_mysql_check(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *why);
static json_t *ngx_http_paygw_ready_redis(ngx_http_paygw_redis_op_t *op,
    const char *failed);
static json_t *ngx_http_paygw_ready_clusters(ngx_http_request_t *r,
    ngx_uint_t select_ok, const char **failed);
static json_t *ngx_http_paygw_ready_cluster(ngx_http_paygw_mysql_srv_t *srv,
    ngx_uint_t select_ok, const char **failed);


char *
ngx_http_paygw_health(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_loc_conf_t *plcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    value = cf->args->elts;
    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (ngx_strcmp(value[1].data, "live") == 0) {
        clcf->handler = ngx_http_paygw_live_handler;
        plcf->metric_api = NGX_HTTP_PAYGW_M_API_HEALTH;
        return NGX_CONF_OK;
    }

    if (ngx_strcmp(value[1].data, "ready") == 0) {
        clcf->handler = ngx_http_paygw_ready_handler;
        plcf->metric_api = NGX_HTTP_PAYGW_M_API_READY;
        return NGX_CONF_OK;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid value \"%V\", expected \"live\" or \"ready\"",
                       &value[1]);

    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_http_paygw_live_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_http_paygw_shctx_t  *sh;
    static ngx_str_t         ok = ngx_string("{\"status\":\"ok\"}");

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_paygw_not_allowed(r, "GET, HEAD");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    sh = ngx_http_paygw_shctx(r);
    if (sh) {
        (void) ngx_atomic_fetch_add(&sh->health_requests, 1);
    }

    return ngx_http_paygw_send_text(r, NGX_HTTP_OK, NULL, &ok);
}


static ngx_int_t
ngx_http_paygw_ready_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_http_paygw_ready_ctx_t  *ctx;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_paygw_not_allowed(r, "GET, HEAD");
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_paygw_ready_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_paygw_module);

    /* a single server refuses CLUSTER INFO: that is how it is told */

    ctx->redis = ngx_http_paygw_redis_create(r);
    if (ctx->redis == NULL
        || ngx_http_paygw_redis_command(r, ctx->redis, "PING") != NGX_OK
        || ngx_http_paygw_redis_command(r, ctx->redis, "CLUSTER INFO")
           != NGX_OK
        || ngx_http_paygw_redis_send(r, ctx->redis) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->write_event_handler = ngx_http_paygw_ready_resume;
    r->main->count++;

    return NGX_DONE;
}


static void
ngx_http_paygw_ready_resume(ngx_http_request_t *r)
{
    ngx_http_paygw_ready_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_paygw_module);

    if (!ctx->redis->call.done) {
        return;
    }

    if (ctx->mysql == NULL) {
        if (ngx_http_paygw_ready_mysql(r, ctx) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        }

        return;
    }

    if (!ctx->mysql->call.done) {
        return;
    }

    ngx_http_finalize_request(r, ngx_http_paygw_ready_respond(r, ctx));
}


static ngx_int_t
ngx_http_paygw_ready_mysql(ngx_http_request_t *r,
    ngx_http_paygw_ready_ctx_t *ctx)
{
    ctx->mysql = ngx_http_paygw_mysql_create(r);
    if (ctx->mysql == NULL) {
        return NGX_ERROR;
    }

    ctx->mysql->read_only = 1;

    if (ngx_http_paygw_mysql_add(ctx->mysql, "SELECT 1") == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_paygw_mysql_send(r, ctx->mysql);
}


static ngx_int_t
ngx_http_paygw_ready_respond(ngx_http_request_t *r,
    ngx_http_paygw_ready_ctx_t *ctx)
{
    json_t                  *doc, *checks, *backends;
    ngx_int_t                rc;
    ngx_str_t                id, redis_why, mysql_why;
    ngx_uint_t               ready;
    const char              *redis, *mysql, *writer;
    ngx_http_paygw_shctx_t  *sh;

    redis = ngx_http_paygw_redis_check(ctx->redis, &redis_why);
    mysql = ngx_http_paygw_mysql_check(ctx->mysql, &mysql_why);
    writer = NULL;

    backends = json_pack("{s:o?, s:o?}",
                         "redis", ngx_http_paygw_ready_redis(ctx->redis,
                                                             redis),
                         "mysql", ngx_http_paygw_ready_clusters(r,
                                                         mysql == NULL,
                                                         &writer));
    if (backends == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (mysql == NULL && writer) {
        mysql = writer;
        ngx_str_set(&mysql_why, "see the health check's log lines");
    }

    ready = (redis == NULL && mysql == NULL);

    /*
     * A backend's own words (addresses, user names, its error text) go
     * to the error log; the answer names only what failed.
     */

    if (redis) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw readyz: %s: %V", redis, &redis_why);
    }

    if (mysql) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw readyz: %s: %V", mysql, &mysql_why);
    }

    checks = json_pack("{s:s, s:s}",
                       "redis", redis ? "unavailable" : "ok",
                       "mysql", mysql ? "unavailable" : "ok");
    if (checks == NULL) {
        json_decref(backends);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ready) {
        doc = json_pack("{s:s, s:o, s:o}", "status", "ready",
                        "checks", checks, "backends", backends);

    } else {
        ngx_http_paygw_request_id(r, &id);

        doc = json_pack("{s:s, s:o, s:o, s:{s:s, s:s, s:s%}}",
                        "status", "unavailable", "checks", checks,
                        "backends", backends,
                        "error", "code", "not_ready",
                        "message", redis ? redis : mysql,
                        "request_id", id.data, id.len);
    }

    if (doc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    sh = ngx_http_paygw_shctx(r);
    if (sh) {
        (void) ngx_atomic_fetch_add(&sh->ready_requests, 1);

        if (!ready) {
            (void) ngx_atomic_fetch_add(&sh->ready_failures, 1);
        }
    }

    rc = ngx_http_paygw_send_json(r, ready ? NGX_HTTP_OK
                                           : NGX_HTTP_SERVICE_UNAVAILABLE,
                                  doc);
    json_decref(doc);

    return rc;
}


static const char *
ngx_http_paygw_redis_check(ngx_http_paygw_redis_op_t *op, ngx_str_t *why)
{
    redisReply  *reply;

    if (!op->call.ok) {
        *why = op->call.error;

        if (why->data == NULL) {
            ngx_str_set(why, "failed");
        }

        return "redis is not answering";
    }

    reply = op->replies[0];

    if (reply->type != REDIS_REPLY_STATUS
        || ngx_strcmp(reply->str, "PONG") != 0)
    {
        ngx_str_set(why, "unexpected reply to PING");
        return "redis answered PING wrongly";
    }

    reply = op->replies[1];

    if (reply->type == REDIS_REPLY_ERROR) {
        /* a single server */
        ngx_str_set(why, "ok");
        return NULL;
    }

    if (reply->type != REDIS_REPLY_STRING
        || ngx_strstrn((u_char *) reply->str, "cluster_state:ok", 16 - 1)
           == NULL)
    {
        ngx_str_set(why, "CLUSTER INFO: cluster_state is not ok");
        return "redis cluster is down";
    }

    ngx_str_set(why, "ok");
    return NULL;
}


/*
 * {"mode": "single"|"cluster", "reachable": bool, "cluster_state": ...}
 * (cluster_state in cluster mode only, as the node asked said it).
 */

static json_t *
ngx_http_paygw_ready_redis(ngx_http_paygw_redis_op_t *op, const char *failed)
{
    u_char      *p, *end;
    redisReply  *reply;

    if (!op->call.ok) {
        return json_pack("{s:s, s:b}", "mode", "unknown", "reachable", 0);
    }

    reply = op->replies[1];

    if (reply->type != REDIS_REPLY_STRING) {
        return json_pack("{s:s, s:b}", "mode", "single",
                         "reachable", failed == NULL);
    }

    p = (u_char *) ngx_strstrn((u_char *) reply->str, "cluster_state:",
                               14 - 1);

    if (p == NULL) {
        return json_pack("{s:s, s:b, s:s}", "mode", "cluster",
                         "reachable", 1, "cluster_state", "unknown");
    }

    p += 14;

    for (end = p; *end && *end != '\r' && *end != '\n'; end++) {
        /* void */
    }

    return json_pack("{s:s, s:b, s:s%}", "mode", "cluster", "reachable", 1,
                     "cluster_state", p, (size_t) (end - p));
}


/* {"NAME": {...}} for every paygw_mysql; failed: a cluster's writer */

static json_t *
ngx_http_paygw_ready_clusters(ngx_http_request_t *r, ngx_uint_t select_ok,
    const char **failed)
{
    json_t                       *all, *one;
    ngx_uint_t                    i;
    ngx_http_paygw_main_conf_t   *pmcf;
    ngx_http_paygw_mysql_srv_t  **srvp;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_paygw_module);
    srvp = pmcf->mysql_servers.elts;

    all = json_object();
    if (all == NULL) {
        return NULL;
    }

    for (i = 0; i < pmcf->mysql_servers.nelts; i++) {
        one = ngx_http_paygw_ready_cluster(srvp[i], select_ok, failed);

        if (one == NULL
            || json_object_setn_new(all, (char *) srvp[i]->name.data,
                                    srvp[i]->name.len, one)
               != 0)
        {
            json_decref(all);
            return NULL;
        }
    }

    return all;
}


/*
 * {"writer": 1, "writer_available": true, "writer_changes": 0,
 *  "nodes": [{"node": 1, "state": "synced", "writer": true}, ...]}
 * A single server is not checked: its one node is "healthy" when the
 * SELECT 1 of this request went through, else "unreachable".
 */

static json_t *
ngx_http_paygw_ready_cluster(ngx_http_paygw_mysql_srv_t *srv,
    ngx_uint_t select_ok, const char **failed)
{
    json_t       *nodes, *node;
    ngx_uint_t    i, writer, gen, state, available;
    const char   *name;

    writer = ngx_http_paygw_mysql_writer(srv, &gen);

    nodes = json_array();
    if (nodes == NULL) {
        return NULL;
    }

    available = select_ok;

    for (i = 0; i < srv->nodes->nelts; i++) {

        if (srv->nodes->nelts == 1) {
            name = select_ok ? "healthy" : "unreachable";

        } else {
            state = srv->ha ? srv->ha->node[i].state
                            : NGX_HTTP_PAYGW_NODE_UNKNOWN;

            if (state == NGX_HTTP_PAYGW_NODE_SYNCED
                && !ngx_http_paygw_mysql_galera(srv, i))
            {
                name = "healthy";

            } else {
                name = ngx_http_paygw_mysql_state_name(state);
            }

            if (i == writer
                && state != NGX_HTTP_PAYGW_NODE_SYNCED
                && state != NGX_HTTP_PAYGW_NODE_UNKNOWN)
            {
                available = 0;
                *failed = "mysql cluster has no healthy writer";
            }
        }

        node = json_pack("{s:i, s:s, s:b}", "node", (json_int_t) i + 1,
                         "state", name, "writer", i == writer);

        if (node == NULL || json_array_append_new(nodes, node) != 0) {
            json_decref(nodes);
            return NULL;
        }
    }

    return json_pack("{s:i, s:b, s:i, s:o}", "writer",
                     (json_int_t) writer + 1, "writer_available", available,
                     "writer_changes", (json_int_t) gen, "nodes", nodes);
}


static const char *
ngx_http_paygw_mysql_check(ngx_http_paygw_mysql_op_t *op, ngx_str_t *why)
{
    ngx_http_paygw_sql_stmt_t  *stmt;

    if (!op->call.ok) {
        *why = op->call.error;

        if (why->data == NULL) {
            ngx_str_set(why, "failed");
        }

        return "mysql is not answering";
    }

    stmt = op->stmts.elts;

    if (op->err_no || stmt->nrows != 1) {
        *why = op->err_msg;

        if (why->data == NULL) {
            ngx_str_set(why, "unexpected result");
        }

        return "mysql refused SELECT 1";
    }

    ngx_str_set(why, "ok");
    return NULL;
}
