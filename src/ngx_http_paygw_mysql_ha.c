
/*
 * paygw: one writer for every worker of an nginx instance.
 *
 * A paygw_mysql with failover= nodes writes to one node at a time, so
 * that Galera never certifies the transactions of two workers against
 * each other.  Which node that is lives in paygw_zone (for the first
 * NGX_HTTP_PAYGW_MYSQL_HA_SHARED paygw_mysql blocks; without a zone,
 * or beyond them, each worker keeps its own) as one word: the node and
 * a generation that counts the changes.  Every worker's pool follows
 * it: a connection opened under another generation is never used
 * again (ngx_http_paygw_mysql_pool.c).
 *
 * The writer changes only when it is found unhealthy, by the active
 * check (ngx_http_paygw_mysql_check.c) or by a call that could not
 * connect or was refused with error 1047; then the first healthy node
 * in the configured order takes over.  It is sticky: a node that comes
 * back does not take the writes back while the writer stays healthy.
 * The change is one compare-and-swap: workers that see the same failure
 * at once move the writer once.
 */


#include "ngx_http_paygw_mysql.h"
#include "ngx_http_paygw_zone.h"


static uint32_t ngx_http_paygw_mysql_fingerprint(
    ngx_http_paygw_mysql_srv_t *srv);
static ngx_int_t ngx_http_paygw_mysql_pick(ngx_http_paygw_mysql_srv_t *srv,
    ngx_uint_t current);


static const char  *ngx_http_paygw_mysql_states[] = {
    "unknown", "synced", "not_synced", "unreachable"
};


/*
 * In the master, when the zone is created or a reload adopts it: a
 * paygw_mysql whose node list is the one before keeps its writer (a
 * reload must not move the writes back to host=); any other starts
 * afresh with host= as the writer.
 */

void
ngx_http_paygw_mysql_ha_adopt(ngx_array_t *servers,
    ngx_http_paygw_mysql_ha_t *ha, ngx_uint_t n)
{
    uint32_t                      fp;
    ngx_uint_t                    i;
    ngx_http_paygw_mysql_srv_t  **srvp;

    srvp = servers->elts;

    for (i = 0; i < servers->nelts && i < n; i++) {
        fp = ngx_http_paygw_mysql_fingerprint(srvp[i]);

        if (ha[i].fingerprint == fp) {
            continue;
        }

        ngx_memzero(&ha[i], sizeof(ngx_http_paygw_mysql_ha_t));
        ha[i].fingerprint = fp;
    }
}


static uint32_t
ngx_http_paygw_mysql_fingerprint(ngx_http_paygw_mysql_srv_t *srv)
{
    uint32_t                      crc;
    ngx_uint_t                    i;
    ngx_http_paygw_mysql_node_t  *nodes;

    ngx_crc32_init(crc);
    ngx_crc32_update(&crc, srv->name.data, srv->name.len);

    nodes = srv->nodes->elts;

    for (i = 0; i < srv->nodes->nelts; i++) {
        ngx_crc32_update(&crc, nodes[i].host.data, nodes[i].host.len);
        ngx_crc32_update(&crc, (u_char *) &nodes[i].port,
                         sizeof(ngx_uint_t));
    }

    ngx_crc32_final(crc);

    /* 0 is a zone that never saw this paygw_mysql */
    return crc ? crc : 1;
}


ngx_int_t
ngx_http_paygw_mysql_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                    i;
    ngx_http_paygw_shctx_t       *sh;
    ngx_http_paygw_main_conf_t   *pmcf;
    ngx_http_paygw_mysql_srv_t  **srvp, *srv;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_paygw_module);
    if (pmcf == NULL) {
        return NGX_OK;
    }

    sh = ngx_http_paygw_shctx_cycle(cycle);
    srvp = pmcf->mysql_servers.elts;

    for (i = 0; i < pmcf->mysql_servers.nelts; i++) {
        srv = srvp[i];

        if (sh && srv->index < NGX_HTTP_PAYGW_MYSQL_HA_SHARED) {
            srv->ha = &sh->mysql_ha[srv->index];

        } else {
            srv->ha = ngx_pcalloc(cycle->pool,
                                  sizeof(ngx_http_paygw_mysql_ha_t));
            if (srv->ha == NULL) {
                return NGX_ERROR;
            }
        }

        /* a single server is its own writer: nothing to choose from */

        if (srv->nodes->nelts > 1
            && (ngx_process == NGX_PROCESS_WORKER
                || ngx_process == NGX_PROCESS_SINGLE))
        {
            ngx_http_paygw_mysql_check_start(srv, cycle);
        }
    }

    return NGX_OK;
}


ngx_http_paygw_mysql_node_t *
ngx_http_paygw_mysql_node(ngx_http_paygw_mysql_srv_t *srv, ngx_uint_t n)
{
    ngx_http_paygw_mysql_node_t  *nodes;

    nodes = srv->nodes->elts;

    return &nodes[n < srv->nodes->nelts ? n : 0];
}


ngx_uint_t
ngx_http_paygw_mysql_writer(ngx_http_paygw_mysql_srv_t *srv, ngx_uint_t *gen)
{
    ngx_atomic_uint_t  w;
    ngx_uint_t         n;

    if (srv->ha == NULL) {
        *gen = 0;
        return 0;
    }

    w = srv->ha->writer;
    n = ngx_http_paygw_ha_node(w);

    *gen = ngx_http_paygw_ha_gen(w);

    return n < srv->nodes->nelts ? n : 0;
}


ngx_uint_t
ngx_http_paygw_mysql_galera(ngx_http_paygw_mysql_srv_t *srv, ngx_uint_t n)
{
    if (srv->ha == NULL || n >= srv->nodes->nelts) {
        return 0;
    }

    return srv->ha->node[n].galera ? 1 : 0;
}


const char *
ngx_http_paygw_mysql_state_name(ngx_uint_t state)
{
    return state <= NGX_HTTP_PAYGW_NODE_UNREACHABLE
           ? ngx_http_paygw_mysql_states[state] : "unknown";
}


void
ngx_http_paygw_mysql_set_state(ngx_http_paygw_mysql_srv_t *srv, ngx_uint_t n,
    ngx_uint_t state, ngx_log_t *log)
{
    ngx_uint_t                    old;
    ngx_http_paygw_mysql_node_t  *node;

    if (srv->ha == NULL || n >= srv->nodes->nelts) {
        return;
    }

    old = srv->ha->node[n].state;

    if (old == state) {
        return;
    }

    srv->ha->node[n].state = state;

    node = ngx_http_paygw_mysql_node(srv, n);

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, log, 0,
                   "paygw mysql \"%V\": node %V:%ui %s -> %s",
                   &srv->name, &node->host, node->port,
                   ngx_http_paygw_mysql_state_name(old),
                   ngx_http_paygw_mysql_state_name(state));

    if (state != NGX_HTTP_PAYGW_NODE_SYNCED) {
        ngx_log_error(NGX_LOG_INFO, log, 0,
                      "paygw mysql \"%V\": node %V:%ui is %s",
                      &srv->name, &node->host, node->port,
                      ngx_http_paygw_mysql_state_name(state));
    }
}


/* the writer stays while healthy (or not yet known), else moves once */

void
ngx_http_paygw_mysql_elect(ngx_http_paygw_mysql_srv_t *srv, ngx_log_t *log)
{
    ngx_int_t                     next;
    ngx_uint_t                    cur, gen, state;
    ngx_atomic_uint_t             w;
    ngx_http_paygw_mysql_node_t  *from, *to;

    if (srv->ha == NULL || srv->nodes->nelts < 2) {
        return;
    }

    for ( ;; ) {
        w = srv->ha->writer;
        cur = ngx_http_paygw_ha_node(w);
        gen = ngx_http_paygw_ha_gen(w);

        state = srv->ha->node[cur].state;

        if (state == NGX_HTTP_PAYGW_NODE_SYNCED
            || state == NGX_HTTP_PAYGW_NODE_UNKNOWN)
        {
            return;
        }

        next = ngx_http_paygw_mysql_pick(srv, cur);

        if (next == NGX_ERROR) {
            /* no better node: the writer stays, calls fail, readyz 503 */
            ngx_log_debug1(NGX_LOG_DEBUG_HTTP, log, 0,
                           "paygw mysql \"%V\": no healthy node to take "
                           "the writes", &srv->name);
            return;
        }

        if (ngx_atomic_cmp_set(&srv->ha->writer, w,
                               ((gen + 1) << 8) | (ngx_uint_t) next))
        {
            break;
        }

        /* another worker moved it first: look again */
    }

    from = ngx_http_paygw_mysql_node(srv, cur);
    to = ngx_http_paygw_mysql_node(srv, next);

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "paygw mysql \"%V\": writer %V:%ui is %s, writes go to "
                  "%V:%ui (writer change %ui)",
                  &srv->name, &from->host, from->port,
                  ngx_http_paygw_mysql_state_name(state),
                  &to->host, to->port, gen + 1);
}


/*
 * The first synced node in the configured order; else the first one
 * never found unhealthy (before the first check, or for a worker that
 * only saw the writer fail); else none.
 */

static ngx_int_t
ngx_http_paygw_mysql_pick(ngx_http_paygw_mysql_srv_t *srv, ngx_uint_t current)
{
    ngx_uint_t  i, state;
    ngx_int_t   unknown;

    unknown = NGX_ERROR;

    for (i = 0; i < srv->nodes->nelts; i++) {
        if (i == current) {
            continue;
        }

        state = srv->ha->node[i].state;

        if (state == NGX_HTTP_PAYGW_NODE_SYNCED) {
            return i;
        }

        if (state == NGX_HTTP_PAYGW_NODE_UNKNOWN && unknown == NGX_ERROR) {
            unknown = i;
        }
    }

    return unknown;
}


/* paygw_mysql_node_healthy, paygw_mysql_node_writer, writer changes */

u_char *
ngx_http_paygw_mysql_metrics(ngx_http_request_t *r, u_char *p, u_char *last)
{
    ngx_uint_t                    i, k, writer, gen, pass;
    ngx_http_paygw_main_conf_t   *pmcf;
    ngx_http_paygw_mysql_srv_t  **srvp, *srv;
    ngx_http_paygw_mysql_node_t  *node;

    static const char  *heads[] = {
        "# HELP paygw_mysql_node_healthy MySQL node as the last check found"
        " it: 1 answers (Galera: synced), 0 not synced, unreachable or not"
        " checked yet.\n# TYPE paygw_mysql_node_healthy gauge\n",
        "# HELP paygw_mysql_node_writer 1 for the node taking the writes.\n"
        "# TYPE paygw_mysql_node_writer gauge\n",
        "# HELP paygw_mysql_writer_changes_total Times the writer moved to"
        " another node.\n# TYPE paygw_mysql_writer_changes_total counter\n"
    };

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_paygw_module);
    srvp = pmcf->mysql_servers.elts;

    /* only clusters (failover=): a single server is not checked */

    for (i = 0; i < pmcf->mysql_servers.nelts; i++) {
        if (srvp[i]->nodes->nelts > 1) {
            break;
        }
    }

    if (i == pmcf->mysql_servers.nelts) {
        return p;
    }

    for (pass = 0; pass < 3; pass++) {
        p = ngx_slprintf(p, last, "%s", heads[pass]);

        for (i = 0; i < pmcf->mysql_servers.nelts; i++) {
            srv = srvp[i];

            if (srv->nodes->nelts < 2) {
                continue;
            }

            writer = ngx_http_paygw_mysql_writer(srv, &gen);

            if (pass == 2) {
                p = ngx_slprintf(p, last,
                                 "paygw_mysql_writer_changes_total"
                                 "{server=\"%V\"} %ui\n", &srv->name, gen);
                continue;
            }

            for (k = 0; k < srv->nodes->nelts; k++) {
                node = ngx_http_paygw_mysql_node(srv, k);

                p = ngx_slprintf(p, last,
                                 "%s{server=\"%V\",node=\"%V:%ui\"} %d\n",
                                 pass ? "paygw_mysql_node_writer"
                                      : "paygw_mysql_node_healthy",
                                 &srv->name, &node->host, node->port,
                                 pass ? (k == writer)
                                      : (srv->ha
                                         && srv->ha->node[k].state
                                            == NGX_HTTP_PAYGW_NODE_SYNCED));
            }
        }
    }

    return p;
}
