
/*
 * paygw: what the workers of one nginx agree on about a MySQL cluster
 * (paygw_mysql with failover=): each node's health as the last check
 * found it and the one node taking writes.  It lives in paygw_zone
 * when there is one (ngx_http_paygw_zone.h), else in each worker.
 * Nothing here needs Connector/C: the zone and the metrics include it.
 */


#ifndef _NGX_HTTP_PAYGW_MYSQL_HA_H_INCLUDED_
#define _NGX_HTTP_PAYGW_MYSQL_HA_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


#define NGX_HTTP_PAYGW_MYSQL_MAX_NODES   8   /* host= and failover= */
#define NGX_HTTP_PAYGW_MYSQL_HA_SHARED   4   /* paygw_mysql in the zone */

/* a node's health; unknown until checked or until it failed a call */
#define NGX_HTTP_PAYGW_NODE_UNKNOWN      0
#define NGX_HTTP_PAYGW_NODE_SYNCED       1   /* answers; Galera: Synced */
#define NGX_HTTP_PAYGW_NODE_NOT_SYNCED   2   /* answers, not ready */
#define NGX_HTTP_PAYGW_NODE_UNREACHABLE  3

/* the writer word: generation (writer changes) << 8 | node index */
#define ngx_http_paygw_ha_node(w)        ((ngx_uint_t) ((w) & 0xff))
#define ngx_http_paygw_ha_gen(w)         ((ngx_uint_t) ((w) >> 8))


typedef struct {
    ngx_atomic_t                  state;
    ngx_atomic_t                  wsrep_state;   /* wsrep_local_state */
    ngx_atomic_t                  galera;        /* wsrep_on */
} ngx_http_paygw_mysql_ha_node_t;


typedef struct {
    uint32_t                      fingerprint;   /* of the node list */
    ngx_atomic_t                  writer;
    ngx_atomic_t                  next_check;    /* ms, wall clock */
    ngx_http_paygw_mysql_ha_node_t  node[NGX_HTTP_PAYGW_MYSQL_MAX_NODES];
} ngx_http_paygw_mysql_ha_t;


void ngx_http_paygw_mysql_ha_adopt(ngx_array_t *servers,
    ngx_http_paygw_mysql_ha_t *ha, ngx_uint_t n);


#endif /* _NGX_HTTP_PAYGW_MYSQL_HA_H_INCLUDED_ */
