
/*
 * paygw: the Redis Cluster client of paygw_redis_pass.
 *
 * With "paygw_redis_cluster on" the servers of the upstream are only
 * seeds.  Each worker keeps its own map of the 16384 hash slots to the
 * masters, learnt with a CLUSTER SLOTS put in front of an ordinary
 * pipeline (no extra round trip, no blocking): on the first call, after
 * a MOVED, after a node failed and every NGX_HTTP_PAYGW_RC_REFRESH ms.
 *
 * A pipeline goes to the master of its keys' slot.  One whose commands'
 * keys hash to several slots (every key of one command must share a
 * slot: ours carry the merchant's hash tag) is split by node: each round
 * sends, in their order, the pending commands of every slot the round's
 * node serves, and the next round goes to the node of the first command
 * still pending, until every command has its reply (in the caller's
 * order, as in single-server mode).  Connections to each node are kept
 * alive by this file (the upstream's own "keepalive" balancer only knows
 * the seeds).  Redirections are followed per command, so that a command
 * that already ran is never sent again: MOVED updates the map and
 * resends, ASK resends once with ASKING (to that node, in a round of its
 * own), TRYAGAIN and CLUSTERDOWN resend after a short timer.  A node
 * that cannot be reached before anything was sent to it is left alone
 * for a moment and the slot map is asked of another one, which is how a
 * promoted replica is found.  A call that failed after its commands were
 * sent fails as in single-server mode: they may have run.
 */


#include "ngx_http_paygw_redis_cluster.h"


#define NGX_HTTP_PAYGW_RC_NONE        0xffff
#define NGX_HTTP_PAYGW_RC_REFRESH     10000   /* ms between map refreshes */
#define NGX_HTTP_PAYGW_RC_REFRESHING  2000    /* ms one may stay in flight */
#define NGX_HTTP_PAYGW_RC_AVOID       1000    /* ms a failed node is skipped */
#define NGX_HTTP_PAYGW_RC_KEEPALIVE   32      /* idle connections per node */
#define NGX_HTTP_PAYGW_RC_TRIES       64      /* rounds per call, at most */
#define NGX_HTTP_PAYGW_RC_BACKOFF     10      /* ms, doubled each round */
#define NGX_HTTP_PAYGW_RC_BACKOFF_MAX 200

#define NGX_HTTP_PAYGW_RC_NOKEY       -1      /* a command without keys */
#define NGX_HTTP_PAYGW_RC_CROSSSLOT   -2      /* keys in several slots */

#define NGX_HTTP_PAYGW_RC_W_SLOTS     ((ngx_uint_t) -1)
#define NGX_HTTP_PAYGW_RC_W_ASKING    ((ngx_uint_t) -2)


typedef struct {
    ngx_str_t                     name;      /* "host:port" */
    ngx_addr_t                    addr;
    ngx_queue_t                   idle;      /* ngx_http_paygw_rc_conn_t */
    ngx_uint_t                    nidle;
    ngx_msec_t                    failed;    /* 0: not lately */
    ngx_uint_t                    index;
} ngx_http_paygw_rc_node_t;


typedef struct {
    ngx_queue_t                   queue;
    ngx_connection_t             *connection;
    ngx_http_paygw_rc_node_t     *node;
    ngx_http_paygw_rc_t          *rc;
} ngx_http_paygw_rc_conn_t;


struct ngx_http_paygw_rc_s {
    ngx_http_upstream_conf_t      conf;      /* upstream = &uscf */
    ngx_http_upstream_srv_conf_t  uscf;      /* our balancer */
    ngx_http_upstream_srv_conf_t *seeds;     /* paygw_redis_pass's */

    /* per worker, built on first use */
    ngx_array_t                   nodes;     /* ngx_http_paygw_rc_node_t * */
    uint16_t                     *slots;
    ngx_queue_t                   free;      /* ngx_http_paygw_rc_conn_t */
    ngx_uint_t                    next;      /* round robin of nodes */
    ngx_msec_t                    refreshed;
    ngx_msec_t                    refreshing;    /* 0: none in flight */
    unsigned                      stale:1;
};


struct ngx_http_paygw_rc_op_s {
    ngx_http_paygw_rc_t          *rc;
    ngx_int_t                    *slot;      /* per command, -1: no key */
    ngx_http_paygw_rc_node_t    **ask;       /* per command: ASK target */
    u_char                       *final;     /* per command: answered */
    ngx_uint_t                   *index;     /* per wire command */
    ngx_array_t                   wire;      /* ngx_str_t */
    ngx_int_t                     lead;      /* this round's first slot */
    ngx_http_paygw_rc_node_t     *node;      /* this round's */
    ngx_uint_t                    tries;     /* rounds */
    ngx_uint_t                    again;     /* rounds after a redirection */
    ngx_msec_t                    start;
    ngx_http_upstream_t          *u;
    ngx_http_upstream_conf_t     *conf;      /* a later round's timeouts */
    ngx_http_request_t           *parent;
    ngx_event_t                   retry;
};


static ngx_int_t ngx_http_paygw_rc_init_worker(ngx_http_paygw_rc_t *rc);
static ngx_http_paygw_rc_node_t *ngx_http_paygw_rc_node(
    ngx_http_paygw_rc_t *rc, u_char *host, size_t hlen, ngx_uint_t port);
static ngx_http_upstream_conf_t *ngx_http_paygw_rc_conf(
    ngx_http_request_t *r, ngx_http_paygw_rc_op_t *rop);
static ngx_int_t ngx_http_paygw_rc_op_init(ngx_http_request_t *r,
    ngx_http_paygw_redis_op_t *op, ngx_http_paygw_rc_t *rc);
static ngx_int_t ngx_http_paygw_rc_cmd_slot(ngx_str_t *cmd);
static ngx_http_paygw_rc_node_t *ngx_http_paygw_rc_owner(
    ngx_http_paygw_rc_t *rc, ngx_int_t slot);
static ngx_http_paygw_rc_node_t *ngx_http_paygw_rc_pick(
    ngx_http_paygw_rc_t *rc, ngx_int_t slot);
static ngx_int_t ngx_http_paygw_rc_lead(ngx_http_paygw_redis_op_t *op,
    ngx_uint_t *asking);
static ngx_uint_t ngx_http_paygw_rc_member(ngx_http_paygw_rc_op_t *rop,
    ngx_uint_t i, ngx_uint_t asking);
static ngx_int_t ngx_http_paygw_rc_round(ngx_http_request_t *r,
    ngx_http_paygw_redis_op_t *op);
static void ngx_http_paygw_rc_update(ngx_http_paygw_rc_t *rc,
    ngx_http_paygw_rc_node_t *asked, redisReply *reply, ngx_log_t *log);
static ngx_uint_t ngx_http_paygw_rc_classify(ngx_http_request_t *r,
    ngx_http_paygw_redis_op_t *op, ngx_uint_t *delay, ngx_uint_t *again);
static ngx_http_paygw_rc_node_t *ngx_http_paygw_rc_redirect(
    ngx_http_paygw_rc_t *rc, redisReply *reply, ngx_uint_t move);
static ngx_msec_t ngx_http_paygw_rc_backoff(ngx_http_paygw_rc_op_t *rop,
    ngx_uint_t delay);
static void ngx_http_paygw_rc_schedule(ngx_http_request_t *r,
    ngx_http_paygw_redis_op_t *op, ngx_uint_t delay);
static void ngx_http_paygw_rc_retry(ngx_event_t *ev);
static ngx_int_t ngx_http_paygw_rc_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us);
static ngx_int_t ngx_http_paygw_rc_get_peer(ngx_peer_connection_t *pc,
    void *data);
static void ngx_http_paygw_rc_free_peer(ngx_peer_connection_t *pc,
    void *data, ngx_uint_t state);
static void ngx_http_paygw_rc_idle_close(ngx_event_t *ev);


static u_char  ngx_http_paygw_rc_slots_cmd[] =
    "*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n";
static u_char  ngx_http_paygw_rc_asking_cmd[] = "*1\r\n$6\r\nASKING\r\n";


/* CRC16-CCITT (XMODEM), the key hash of the Redis Cluster spec */

static uint16_t
ngx_http_paygw_rc_crc16(u_char *p, size_t len)
{
    uint16_t    crc;
    ngx_uint_t  i;

    crc = 0;

    while (len--) {
        crc ^= (uint16_t) (*p++ << 8);

        for (i = 0; i < 8; i++) {
            crc = (crc & 0x8000) ? (uint16_t) ((crc << 1) ^ 0x1021)
                                 : (uint16_t) (crc << 1);
        }
    }

    return crc;
}


ngx_int_t
ngx_http_paygw_rc_key_slot(u_char *key, size_t len)
{
    u_char  *open, *close;

    /* a non-empty {hash tag}: only it is hashed */

    open = ngx_strlchr(key, key + len, '{');

    if (open) {
        close = ngx_strlchr(open + 1, key + len, '}');

        if (close && close > open + 1) {
            key = open + 1;
            len = close - key;
        }
    }

    return ngx_http_paygw_rc_crc16(key, len) & (NGX_HTTP_PAYGW_RC_SLOTS - 1);
}


char *
ngx_http_paygw_rc_merge_conf(ngx_conf_t *cf, ngx_http_paygw_loc_conf_t *prev,
    ngx_http_paygw_loc_conf_t *conf)
{
    ngx_http_paygw_rc_t  *rc;

    ngx_conf_merge_value(conf->redis_cluster, prev->redis_cluster, 0);

    if (!conf->redis_cluster || conf->redis.upstream == NULL) {
        conf->redis_rc = NULL;
        return NGX_CONF_OK;
    }

    if (prev->redis_rc && prev->redis.upstream == conf->redis.upstream) {
        conf->redis_rc = prev->redis_rc;
        return NGX_CONF_OK;
    }

    rc = ngx_pcalloc(cf->pool, sizeof(ngx_http_paygw_rc_t));
    if (rc == NULL) {
        return NGX_CONF_ERROR;
    }

    /* our own balancer: the upstream's servers are only the seeds */

    rc->seeds = conf->redis.upstream;
    rc->conf = conf->redis;
    rc->conf.upstream = &rc->uscf;
    rc->uscf.host = rc->seeds->host;
    rc->uscf.peer.init = ngx_http_paygw_rc_init_peer;
    rc->uscf.peer.data = rc;

    conf->redis_rc = rc;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_paygw_rc_init_worker(ngx_http_paygw_rc_t *rc)
{
    ngx_uint_t                     i;
    ngx_http_paygw_rc_node_t      *node, **pn;
    ngx_http_upstream_rr_peer_t   *peer;
    ngx_http_upstream_rr_peers_t  *peers;

    if (rc->slots) {
        return NGX_OK;
    }

    if (ngx_array_init(&rc->nodes, ngx_cycle->pool, 8, sizeof(void *))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_queue_init(&rc->free);

    /* every balancer of nginx keeps the servers as round robin peers */

    peers = rc->seeds->peer.data;

    for (peer = peers ? peers->peer : NULL; peer; peer = peer->next) {
        node = ngx_pcalloc(ngx_cycle->pool, sizeof(ngx_http_paygw_rc_node_t));
        pn = ngx_array_push(&rc->nodes);
        if (node == NULL || pn == NULL) {
            return NGX_ERROR;
        }

        node->name = peer->name;
        node->addr.sockaddr = peer->sockaddr;
        node->addr.socklen = peer->socklen;
        node->addr.name = peer->name;
        node->index = rc->nodes.nelts - 1;
        ngx_queue_init(&node->idle);
        *pn = node;
    }

    if (rc->nodes.nelts == 0) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "paygw redis cluster: the upstream has no seed");
        return NGX_ERROR;
    }

    rc->slots = ngx_alloc(NGX_HTTP_PAYGW_RC_SLOTS * sizeof(uint16_t),
                          ngx_cycle->log);
    if (rc->slots == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < NGX_HTTP_PAYGW_RC_SLOTS; i++) {
        rc->slots[i] = NGX_HTTP_PAYGW_RC_NONE;
    }

    rc->stale = 1;

    return NGX_OK;
}


static ngx_http_paygw_rc_node_t *
ngx_http_paygw_rc_node(ngx_http_paygw_rc_t *rc, u_char *host, size_t hlen,
    ngx_uint_t port)
{
    u_char                     *p;
    size_t                      len;
    ngx_uint_t                  i;
    ngx_http_paygw_rc_node_t   *node, **nodes, **pn;
    u_char                      name[NGX_SOCKADDR_STRLEN + NGX_INT_T_LEN];

    if (hlen == 0 || hlen > NGX_SOCKADDR_STRLEN || port == 0 || port > 65535
        || rc->nodes.nelts >= NGX_HTTP_PAYGW_RC_NONE)
    {
        return NULL;
    }

    if (ngx_strlchr(host, host + hlen, ':')) {
        p = ngx_sprintf(name, "[%*s]:%ui", hlen, host, port);

    } else {
        p = ngx_sprintf(name, "%*s:%ui", hlen, host, port);
    }

    len = p - name;

    nodes = rc->nodes.elts;

    for (i = 0; i < rc->nodes.nelts; i++) {
        if (nodes[i]->name.len == len
            && ngx_strncmp(nodes[i]->name.data, name, len) == 0)
        {
            return nodes[i];
        }
    }

    node = ngx_pcalloc(ngx_cycle->pool, sizeof(ngx_http_paygw_rc_node_t));
    if (node == NULL) {
        return NULL;
    }

    if (ngx_parse_addr_port(ngx_cycle->pool, &node->addr, name, len)
        != NGX_OK)
    {
        return NULL;
    }

    node->name.data = ngx_pstrdup(ngx_cycle->pool,
                                  &(ngx_str_t) { len, name });
    pn = ngx_array_push(&rc->nodes);
    if (node->name.data == NULL || pn == NULL) {
        return NULL;
    }

    node->name.len = len;
    node->addr.name = node->name;
    node->index = rc->nodes.nelts - 1;
    ngx_queue_init(&node->idle);
    *pn = node;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, ngx_cycle->log, 0,
                   "paygw redis cluster: new node %V", &node->name);

    return node;
}


/* the subrequest's handler: the first or a later round of one call */

ngx_int_t
ngx_http_paygw_rc_start(ngx_http_request_t *r, ngx_http_paygw_redis_op_t *op)
{
    ngx_http_paygw_loc_conf_t  *plcf;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_paygw_module);

    if (op->cluster == NULL) {
        if (ngx_http_paygw_rc_init_worker(plcf->redis_rc) != NGX_OK
            || ngx_http_paygw_rc_op_init(r, op, plcf->redis_rc) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    r->upstream->conf = ngx_http_paygw_rc_conf(r, op->cluster);
    op->cluster->u = r->upstream;

    return ngx_http_paygw_rc_round(r, op);
}


/*
 * A later round (the next node of a split pipeline, a redirection) has
 * what is left of paygw_redis_timeout since the call's first round.
 */

static ngx_http_upstream_conf_t *
ngx_http_paygw_rc_conf(ngx_http_request_t *r, ngx_http_paygw_rc_op_t *rop)
{
    ngx_msec_t                 spent, left;
    ngx_http_upstream_conf_t  *conf;

    conf = &rop->rc->conf;

    if (rop->tries == 0) {
        return conf;
    }

    if (rop->conf == NULL) {
        rop->conf = ngx_palloc(r->pool, sizeof(ngx_http_upstream_conf_t));
        if (rop->conf == NULL) {
            return conf;
        }
    }

    spent = ngx_current_msec - rop->start;
    left = (spent < conf->read_timeout) ? conf->read_timeout - spent : 1;

    *rop->conf = *conf;
    rop->conf->connect_timeout = ngx_min(conf->connect_timeout, left);
    rop->conf->send_timeout = ngx_min(conf->send_timeout, left);
    rop->conf->read_timeout = left;

    return rop->conf;
}


static ngx_int_t
ngx_http_paygw_rc_op_init(ngx_http_request_t *r, ngx_http_paygw_redis_op_t *op,
    ngx_http_paygw_rc_t *rc)
{
    ngx_str_t               *cmd;
    ngx_uint_t               i, n;
    ngx_http_paygw_rc_op_t  *rop;

    n = op->cmds.nelts;

    rop = ngx_pcalloc(r->pool, sizeof(ngx_http_paygw_rc_op_t));
    if (rop == NULL) {
        return NGX_ERROR;
    }

    rop->final = ngx_pcalloc(r->pool, n);
    rop->slot = ngx_palloc(r->pool, n * sizeof(ngx_int_t));
    rop->ask = ngx_pcalloc(r->pool, n * sizeof(ngx_http_paygw_rc_node_t *));
    rop->index = ngx_palloc(r->pool, (n * 2 + 1) * sizeof(ngx_uint_t));
    if (rop->final == NULL || rop->slot == NULL || rop->ask == NULL
        || rop->index == NULL
        || ngx_array_init(&rop->wire, r->pool, n * 2 + 1, sizeof(ngx_str_t))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /*
     * One node runs one command: its keys in one slot (a script's too);
     * the commands of a pipeline may each have their own.
     */

    cmd = op->cmds.elts;

    for (i = 0; i < n; i++) {
        rop->slot[i] = ngx_http_paygw_rc_cmd_slot(&cmd[i]);

        if (rop->slot[i] == NGX_HTTP_PAYGW_RC_CROSSSLOT) {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "paygw redis cluster: the keys of a command "
                          "hash to several slots");
            return NGX_ERROR;
        }
    }

    rop->rc = rc;
    rop->lead = NGX_HTTP_PAYGW_RC_NOKEY;
    rop->start = ngx_current_msec;
    rop->retry.handler = ngx_http_paygw_rc_retry;
    rop->retry.data = op;
    rop->retry.log = r->connection->log;

    op->cluster = rop;

    return NGX_OK;
}


/*
 * The slot of a formatted command's keys: NGX_HTTP_PAYGW_RC_NOKEY without
 * keys, NGX_HTTP_PAYGW_RC_CROSSSLOT when they hash to several slots.
 * Keys are where our commands keep them: after the numkeys of
 * EVAL/EVALSHA, every argument of DEL, UNLINK, EXISTS and MGET, the first
 * argument of the others.
 */

static ngx_int_t
ngx_http_paygw_rc_cmd_slot(ngx_str_t *cmd)
{
    u_char      *p, *last;
    size_t       len;
    ngx_int_t    argc, n, first, nkeys, slot, s;
    ngx_str_t    name;

    p = cmd->data;
    last = cmd->data + cmd->len;

    if (p == last || *p++ != '*') {
        return NGX_HTTP_PAYGW_RC_NOKEY;
    }

    argc = ngx_atoi(p, ngx_strlchr(p, last, '\r') - p);
    if (argc <= 0) {
        return NGX_HTTP_PAYGW_RC_NOKEY;
    }

    first = 1;
    nkeys = 1;
    slot = -1;
    ngx_str_null(&name);

    for (n = 0; n < argc; n++) {
        p = ngx_strlchr(p, last, '$');
        if (p == NULL) {
            return NGX_HTTP_PAYGW_RC_NOKEY;
        }

        len = ngx_atoi(p + 1, ngx_strlchr(p, last, '\r') - p - 1);
        p = ngx_strlchr(p, last, '\n') + 1;

        if ((ngx_int_t) len < 0 || p + len > last) {
            return NGX_HTTP_PAYGW_RC_NOKEY;
        }

        if (n == 0) {
            name.data = p;
            name.len = len;

            if ((len == 4 && ngx_strncasecmp(p, (u_char *) "EVAL", 4) == 0)
                || (len == 7
                    && ngx_strncasecmp(p, (u_char *) "EVALSHA", 7) == 0))
            {
                first = 3;
                nkeys = 0;

            } else if ((len == 3
                        && ngx_strncasecmp(p, (u_char *) "DEL", 3) == 0)
                       || (len == 6
                           && (ngx_strncasecmp(p, (u_char *) "UNLINK", 6)
                               == 0
                               || ngx_strncasecmp(p, (u_char *) "EXISTS", 6)
                                  == 0))
                       || (len == 4
                           && ngx_strncasecmp(p, (u_char *) "MGET", 4) == 0))
            {
                nkeys = argc - 1;

            } else if ((len == 4
                        && (ngx_strncasecmp(p, (u_char *) "PING", 4) == 0
                            || ngx_strncasecmp(p, (u_char *) "INFO", 4) == 0
                            || ngx_strncasecmp(p, (u_char *) "ECHO", 4) == 0))
                       || (len == 7
                           && ngx_strncasecmp(p, (u_char *) "CLUSTER", 7)
                              == 0))
            {
                return NGX_HTTP_PAYGW_RC_NOKEY;
            }

        } else if (n == 2 && first == 3) {
            nkeys = ngx_atoi(p, len);
            if (nkeys == NGX_ERROR) {
                return NGX_HTTP_PAYGW_RC_NOKEY;
            }

        } else if (n >= first && n < first + nkeys) {
            s = ngx_http_paygw_rc_key_slot(p, len);

            if (slot >= 0 && s != slot) {
                return NGX_HTTP_PAYGW_RC_CROSSSLOT;
            }

            slot = s;
        }

        p += len + 2;
    }

    return slot;
}


/* the node that serves a slot by the map, unless it failed lately */

static ngx_http_paygw_rc_node_t *
ngx_http_paygw_rc_owner(ngx_http_paygw_rc_t *rc, ngx_int_t slot)
{
    ngx_http_paygw_rc_node_t  **nodes, *node;

    if (slot < 0 || rc->slots[slot] == NGX_HTTP_PAYGW_RC_NONE) {
        return NULL;
    }

    nodes = rc->nodes.elts;
    node = nodes[rc->slots[slot]];

    if (node->failed
        && ngx_current_msec - node->failed <= NGX_HTTP_PAYGW_RC_AVOID)
    {
        return NULL;
    }

    return node;
}


static ngx_http_paygw_rc_node_t *
ngx_http_paygw_rc_pick(ngx_http_paygw_rc_t *rc, ngx_int_t slot)
{
    ngx_uint_t                  i, k;
    ngx_http_paygw_rc_node_t  **nodes, *node;

    node = ngx_http_paygw_rc_owner(rc, slot);
    if (node) {
        return node;
    }

    /* no owner known or it failed lately: any node redirects us */

    nodes = rc->nodes.elts;

    for (i = 0; i < rc->nodes.nelts; i++) {
        k = rc->next++ % rc->nodes.nelts;
        node = nodes[k];

        if (node->failed == 0
            || ngx_current_msec - node->failed > NGX_HTTP_PAYGW_RC_AVOID)
        {
            return node;
        }
    }

    return nodes[rc->next++ % rc->nodes.nelts];
}


/*
 * The round's node: the ASK target of a pending command if there is one
 * (a round of its own, each command behind an ASKING), else the node of
 * the first pending command's slot.  NGX_DECLINED: nothing is pending.
 */

static ngx_int_t
ngx_http_paygw_rc_lead(ngx_http_paygw_redis_op_t *op, ngx_uint_t *asking)
{
    ngx_uint_t               i, lead;
    ngx_http_paygw_rc_op_t  *rop;

    rop = op->cluster;
    lead = op->cmds.nelts;

    for (i = 0; i < op->cmds.nelts; i++) {
        if (rop->final[i]) {
            continue;
        }

        if (rop->ask[i]) {
            rop->lead = rop->slot[i];
            rop->node = rop->ask[i];
            *asking = 1;
            return NGX_OK;
        }

        if (lead == op->cmds.nelts) {
            lead = i;
        }
    }

    if (lead == op->cmds.nelts) {
        return NGX_DECLINED;
    }

    rop->lead = rop->slot[lead];
    rop->node = ngx_http_paygw_rc_pick(rop->rc, rop->lead);
    *asking = 0;

    return NGX_OK;
}


/* whether pending command i goes in this round, to rop->node */

static ngx_uint_t
ngx_http_paygw_rc_member(ngx_http_paygw_rc_op_t *rop, ngx_uint_t i,
    ngx_uint_t asking)
{
    if (asking) {
        return rop->ask[i] == rop->node;
    }

    /* without keys: any node; a slot of the lead's node: in order */

    if (rop->slot[i] < 0 || rop->slot[i] == rop->lead) {
        return 1;
    }

    return ngx_http_paygw_rc_owner(rop->rc, rop->slot[i]) == rop->node;
}


static ngx_int_t
ngx_http_paygw_rc_round(ngx_http_request_t *r, ngx_http_paygw_redis_op_t *op)
{
    ngx_str_t               *cmd, *w;
    ngx_uint_t               i, asking;
    ngx_http_paygw_rc_t     *rc;
    ngx_http_paygw_rc_op_t  *rop;

    rop = op->cluster;
    rc = rop->rc;

    if (ngx_http_paygw_rc_lead(op, &asking) != NGX_OK) {
        return NGX_ERROR;
    }

    rop->wire.nelts = 0;

    if ((rc->stale
         || ngx_current_msec - rc->refreshed > NGX_HTTP_PAYGW_RC_REFRESH)
        && (rc->refreshing == 0
            || ngx_current_msec - rc->refreshing
               > NGX_HTTP_PAYGW_RC_REFRESHING))
    {
        rc->refreshing = ngx_current_msec ? ngx_current_msec : 1;

        w = ngx_array_push(&rop->wire);
        w->data = ngx_http_paygw_rc_slots_cmd;
        w->len = sizeof(ngx_http_paygw_rc_slots_cmd) - 1;
        rop->index[rop->wire.nelts - 1] = NGX_HTTP_PAYGW_RC_W_SLOTS;
    }

    cmd = op->cmds.elts;

    for (i = 0; i < op->cmds.nelts; i++) {
        if (rop->final[i] || !ngx_http_paygw_rc_member(rop, i, asking)) {
            continue;
        }

        if (asking) {
            w = ngx_array_push(&rop->wire);
            w->data = ngx_http_paygw_rc_asking_cmd;
            w->len = sizeof(ngx_http_paygw_rc_asking_cmd) - 1;
            rop->index[rop->wire.nelts - 1] = NGX_HTTP_PAYGW_RC_W_ASKING;
        }

        w = ngx_array_push(&rop->wire);
        *w = cmd[i];
        rop->index[rop->wire.nelts - 1] = i;
        rop->ask[i] = NULL;
    }

    /* the array was sized for the largest round: the pushes never fail */

    op->out = rop->wire.elts;
    op->nout = rop->wire.nelts;

    op->in = ngx_pcalloc(r->pool, op->nout * sizeof(redisReply *));
    if (op->in == NULL) {
        return NGX_ERROR;
    }

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw redis cluster: slot %i to %V, %ui on the wire%s, "
                   "round %ui", rop->lead, &rop->node->name, op->nout,
                   asking ? " asking" : "", rop->tries);

    return NGX_OK;
}


/* every reply of a round arrived: hand them to the commands */

void
ngx_http_paygw_rc_replies(ngx_http_request_t *r, ngx_http_paygw_redis_op_t *op)
{
    ngx_uint_t               i, k;
    ngx_http_paygw_rc_op_t  *rop;

    rop = op->cluster;

    for (i = 0; i < op->nout; i++) {
        k = rop->index[i];

        if (k == NGX_HTTP_PAYGW_RC_W_SLOTS) {
            ngx_http_paygw_rc_update(rop->rc, rop->node, op->in[i],
                                     r->connection->log);

        } else if (k != NGX_HTTP_PAYGW_RC_W_ASKING) {
            op->replies[k] = op->in[i];
            op->in[i] = NULL;
            continue;
        }

        freeReplyObject(op->in[i]);
        op->in[i] = NULL;
    }
}


static void
ngx_http_paygw_rc_update(ngx_http_paygw_rc_t *rc,
    ngx_http_paygw_rc_node_t *asked, redisReply *reply, ngx_log_t *log)
{
    u_char                    *host;
    size_t                     hlen;
    ngx_uint_t                 i, s, n;
    long long                  start, end;
    redisReply                *e, *m;
    ngx_http_paygw_rc_node_t  *node;

    rc->refreshing = 0;

    if (reply->type != REDIS_REPLY_ARRAY) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "paygw redis cluster: CLUSTER SLOTS failed on %V: %s",
                      &asked->name,
                      reply->type == REDIS_REPLY_ERROR ? reply->str : "?");
        return;
    }

    for (s = 0; s < NGX_HTTP_PAYGW_RC_SLOTS; s++) {
        rc->slots[s] = NGX_HTTP_PAYGW_RC_NONE;
    }

    n = 0;

    for (i = 0; i < reply->elements; i++) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3
            || e->element[0]->type != REDIS_REPLY_INTEGER
            || e->element[1]->type != REDIS_REPLY_INTEGER
            || e->element[2]->type != REDIS_REPLY_ARRAY
            || e->element[2]->elements < 2
            || e->element[2]->element[0]->type != REDIS_REPLY_STRING
            || e->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
        {
            continue;
        }

        start = e->element[0]->integer;
        end = e->element[1]->integer;
        m = e->element[2];

        if (start < 0 || end >= NGX_HTTP_PAYGW_RC_SLOTS || start > end) {
            continue;
        }

        /* an empty host: the node that answered */

        host = (u_char *) m->element[0]->str;
        hlen = m->element[0]->len;

        if (hlen == 0 || (hlen == 1 && host[0] == '?')) {
            node = asked;

        } else {
            node = ngx_http_paygw_rc_node(rc, host, hlen,
                                          (ngx_uint_t) m->element[1]->integer);
            if (node == NULL) {
                continue;
            }
        }

        for (s = start; s <= (ngx_uint_t) end; s++) {
            rc->slots[s] = (uint16_t) node->index;
        }

        n += end - start + 1;
    }

    rc->refreshed = ngx_current_msec;
    rc->stale = (n != NGX_HTTP_PAYGW_RC_SLOTS);

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, log, 0,
                   "paygw redis cluster: map from %V, %ui slots in %ui ranges",
                   &asked->name, n, reply->elements);
}


/*
 * The call's subrequest finished.  NGX_AGAIN: some commands go out
 * again in another round, the call goes on; NGX_OK: it is done.
 */

ngx_int_t
ngx_http_paygw_rc_done(ngx_http_request_t *r, ngx_http_paygw_redis_op_t *op)
{
    ngx_uint_t               delay, again, pending;
    ngx_http_paygw_rc_op_t  *rop;

    rop = op->cluster;

    if (rop == NULL) {
        return NGX_OK;
    }

    if (!op->call.ok) {
        if (rop->node) {
            rop->node->failed = ngx_current_msec ? ngx_current_msec : 1;
        }

        rop->rc->stale = 1;

        /*
         * Nothing of this round was sent: none of its commands can have
         * run, another node may.  (Earlier rounds' replies stay.)
         */

        if (rop->u == NULL || rop->u->request_sent
            || ngx_http_paygw_rc_backoff(rop, 1) == NGX_MAX_INT32_VALUE)
        {
            return NGX_OK;
        }

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "paygw redis cluster: %V unreachable, asking another "
                      "node", &rop->node->name);

        ngx_http_paygw_rc_schedule(r, op, 1);
        rop->again++;

        return NGX_AGAIN;
    }

    if (rop->node) {
        rop->node->failed = 0;
    }

    delay = 0;
    again = 0;
    pending = ngx_http_paygw_rc_classify(r, op, &delay, &again);

    if (pending == 0) {
        return NGX_OK;
    }

    if (ngx_http_paygw_rc_backoff(rop, delay) == NGX_MAX_INT32_VALUE) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "paygw redis cluster: slot %i: no answer after %ui "
                      "rounds", rop->lead, rop->tries + 1);
        ngx_http_paygw_call_fail(&op->call, r->pool,
                                 NGX_HTTP_SERVICE_UNAVAILABLE,
                                 "redis cluster: no answer after %ui "
                                 "rounds", rop->tries + 1);
        return NGX_OK;
    }

    /* commands of other nodes' slots (a split pipeline) go on at once */

    ngx_http_paygw_rc_schedule(r, op, delay);

    if (again) {
        rop->again++;
    }

    return NGX_AGAIN;
}


/*
 * The commands without a final reply yet: how many; *again is set when
 * some of this round's were redirected (rather than left for another
 * node's round of a split pipeline).
 */

static ngx_uint_t
ngx_http_paygw_rc_classify(ngx_http_request_t *r,
    ngx_http_paygw_redis_op_t *op, ngx_uint_t *delay, ngx_uint_t *again)
{
    ngx_uint_t                 i, pending;
    redisReply                *reply;
    ngx_http_paygw_rc_op_t    *rop;
    ngx_http_paygw_rc_node_t  *node;

    rop = op->cluster;
    pending = 0;

    for (i = 0; i < op->cmds.nelts; i++) {
        if (rop->final[i]) {
            continue;
        }

        reply = op->replies[i];

        if (reply == NULL) {
            pending++;
            continue;
        }

        if (reply->type != REDIS_REPLY_ERROR) {
            rop->final[i] = 1;
            continue;
        }

        if (ngx_strncmp(reply->str, "MOVED ", 6) == 0) {
            node = ngx_http_paygw_rc_redirect(rop->rc, reply, 1);
            if (node == NULL) {
                rop->final[i] = 1;
                continue;
            }

            rop->rc->stale = 1;

            /* to a master that just failed: the others have not seen it */

            if (node->failed
                && ngx_current_msec - node->failed
                   <= NGX_HTTP_PAYGW_RC_AVOID)
            {
                *delay = 1;
            }

        } else if (ngx_strncmp(reply->str, "ASK ", 4) == 0) {
            node = ngx_http_paygw_rc_redirect(rop->rc, reply, 0);
            if (node == NULL) {
                rop->final[i] = 1;
                continue;
            }

            rop->ask[i] = node;

        } else if (ngx_strncmp(reply->str, "TRYAGAIN", 8) == 0
                   || ngx_strncmp(reply->str, "CLUSTERDOWN", 11) == 0)
        {
            *delay = 1;

        } else {
            rop->final[i] = 1;
            continue;
        }

        ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "paygw redis cluster: command %ui: %s", i, reply->str);

        freeReplyObject(reply);
        op->replies[i] = NULL;
        *again = 1;
        pending++;
    }

    return pending;
}


/*
 * "MOVED <slot> <host>:<port>" or "ASK ...": the node; a MOVED (move)
 * also moves the slot in the map, an ASK never does.
 */

static ngx_http_paygw_rc_node_t *
ngx_http_paygw_rc_redirect(ngx_http_paygw_rc_t *rc, redisReply *reply,
    ngx_uint_t move)
{
    u_char                    *p, *last, *host, *colon;
    ngx_int_t                  slot, port;
    ngx_http_paygw_rc_node_t  *node;

    p = (u_char *) reply->str;
    last = p + reply->len;

    p = ngx_strlchr(p, last, ' ');
    if (p == NULL) {
        return NULL;
    }

    host = ngx_strlchr(p + 1, last, ' ');
    if (host == NULL) {
        return NULL;
    }

    slot = ngx_atoi(p + 1, host - p - 1);
    host++;

    for (colon = last - 1; colon > host && *colon != ':'; colon--) {
        /* void */
    }

    port = ngx_atoi(colon + 1, last - colon - 1);

    if (slot < 0 || slot >= NGX_HTTP_PAYGW_RC_SLOTS || colon == host
        || port == NGX_ERROR)
    {
        return NULL;
    }

    if (*host == '[' && colon[-1] == ']') {
        host++;
        colon--;
    }

    node = ngx_http_paygw_rc_node(rc, host, colon - host, port);

    if (node && move) {
        rc->slots[slot] = (uint16_t) node->index;
    }

    return node;
}


/*
 * The wait before the next round, or NGX_MAX_INT32_VALUE when the call
 * gives up: after NGX_HTTP_PAYGW_RC_TRIES rounds or once it would outlast
 * paygw_redis_timeout since its first round.  A slot that migrates keeps
 * multi-key scripts at TRYAGAIN until its last key moved; a master that
 * died is replaced by its replica after cluster-node-timeout: both are
 * waited out within that bound.
 */

static ngx_msec_t
ngx_http_paygw_rc_backoff(ngx_http_paygw_rc_op_t *rop, ngx_uint_t delay)
{
    ngx_msec_t  ms;

    /* redirections that go round in circles slow down too */

    ms = 0;

    if (delay || rop->again >= 3) {
        ms = ngx_min((ngx_msec_t) NGX_HTTP_PAYGW_RC_BACKOFF
                     << ngx_min(rop->again, 8),
                     (ngx_msec_t) NGX_HTTP_PAYGW_RC_BACKOFF_MAX);
    }

    if (rop->tries + 1 >= NGX_HTTP_PAYGW_RC_TRIES
        || ngx_current_msec + ms - rop->start > rop->rc->conf.read_timeout)
    {
        return NGX_MAX_INT32_VALUE;
    }

    return ms;
}


static void
ngx_http_paygw_rc_schedule(ngx_http_request_t *r,
    ngx_http_paygw_redis_op_t *op, ngx_uint_t delay)
{
    ngx_msec_t               ms;
    ngx_http_paygw_rc_op_t  *rop;

    rop = op->cluster;
    ms = ngx_http_paygw_rc_backoff(rop, delay);

    /* a second call for this subrequest (nginx may make one) is ignored */

    op->call.sr = NULL;
    rop->parent = r->parent;
    rop->u = NULL;

    /* the next round starts once this subrequest is gone */

    if (ms) {
        ngx_add_timer(&rop->retry, ms);

    } else {
        ngx_post_event(&rop->retry, &ngx_posted_events);
    }

    rop->tries++;
}


static void
ngx_http_paygw_rc_retry(ngx_event_t *ev)
{
    ngx_http_paygw_redis_op_t *op = ev->data;

    ngx_connection_t           *c;
    ngx_http_request_t         *r;
    ngx_http_paygw_loc_conf_t  *plcf;

    r = op->cluster->parent;
    c = r->connection;

    ev->timedout = 0;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_paygw_module);

    if (ngx_http_paygw_call_start(r, &plcf->redis_uri, &op->call) != NGX_OK) {
        op->call.done = 1;
        ngx_http_paygw_call_fail(&op->call, r->pool,
                                 NGX_HTTP_INTERNAL_SERVER_ERROR,
                                 "redis cluster: cannot resend");
        (void) ngx_http_post_request(r, NULL);
    }

    ngx_http_run_posted_requests(c);
}


void
ngx_http_paygw_rc_cleanup(ngx_http_paygw_redis_op_t *op)
{
    ngx_http_paygw_rc_op_t  *rop;

    rop = op->cluster;

    if (rop == NULL) {
        return;
    }

    if (rop->retry.timer_set) {
        ngx_del_timer(&rop->retry);
    }

    if (rop->retry.posted) {
        ngx_delete_posted_event(&rop->retry);
    }
}


/* the balancer: the round's node, its connections kept alive */

static ngx_int_t
ngx_http_paygw_rc_init_peer(ngx_http_request_t *r,
    ngx_http_upstream_srv_conf_t *us)
{
    ngx_http_paygw_redis_op_t  *op;

    op = ngx_http_get_module_ctx(r, ngx_http_paygw_module);

    r->upstream->peer.data = op->cluster;
    r->upstream->peer.get = ngx_http_paygw_rc_get_peer;
    r->upstream->peer.free = ngx_http_paygw_rc_free_peer;

    /* never another node on nginx's own: we choose after a failure */

    r->upstream->peer.tries = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_rc_get_peer(ngx_peer_connection_t *pc, void *data)
{
    ngx_http_paygw_rc_op_t *rop = data;

    ngx_queue_t               *q;
    ngx_http_paygw_rc_conn_t  *item;
    ngx_http_paygw_rc_node_t  *node;

    node = rop->node;

    pc->sockaddr = node->addr.sockaddr;
    pc->socklen = node->addr.socklen;
    pc->name = &node->name;

    if (ngx_queue_empty(&node->idle)) {
        return NGX_OK;
    }

    q = ngx_queue_head(&node->idle);
    ngx_queue_remove(q);
    node->nidle--;

    item = ngx_queue_data(q, ngx_http_paygw_rc_conn_t, queue);
    ngx_queue_insert_head(&rop->rc->free, q);

    ngx_http_paygw_keep_reuse(pc, item->connection);

    return NGX_DONE;
}


static void
ngx_http_paygw_rc_free_peer(ngx_peer_connection_t *pc, void *data,
    ngx_uint_t state)
{
    ngx_http_paygw_rc_op_t *rop = data;

    ngx_queue_t               *q;
    ngx_connection_t          *c;
    ngx_http_upstream_t       *u;
    ngx_http_paygw_rc_conn_t  *item;
    ngx_http_paygw_rc_node_t  *node;

    if (pc->tries) {
        pc->tries--;
    }

    u = rop->u;
    c = pc->connection;
    node = rop->node;

    if (state & NGX_PEER_FAILED) {
        node->failed = ngx_current_msec ? ngx_current_msec : 1;
        rop->rc->stale = 1;
        return;
    }

    if (c == NULL || u == NULL || !u->keepalive || c->read->eof
        || c->read->error || c->read->timedout || c->write->error
        || c->write->timedout || ngx_terminate || ngx_exiting
        || node->nidle >= NGX_HTTP_PAYGW_RC_KEEPALIVE
        || ngx_handle_read_event(c->read, 0) != NGX_OK)
    {
        return;
    }

    if (ngx_queue_empty(&rop->rc->free)) {
        item = ngx_palloc(ngx_cycle->pool, sizeof(ngx_http_paygw_rc_conn_t));
        if (item == NULL) {
            return;
        }

    } else {
        q = ngx_queue_head(&rop->rc->free);
        ngx_queue_remove(q);
        item = ngx_queue_data(q, ngx_http_paygw_rc_conn_t, queue);
    }

    item->connection = c;
    item->node = node;
    item->rc = rop->rc;
    ngx_queue_insert_head(&node->idle, &item->queue);
    node->nidle++;

    ngx_http_paygw_keep_park(pc, item, 60000, ngx_http_paygw_rc_idle_close);
}


/* an idle connection was closed by the node, timed out or must close */

static void
ngx_http_paygw_rc_idle_close(ngx_event_t *ev)
{
    ngx_connection_t          *c;
    ngx_http_paygw_rc_conn_t  *item;

    if (!ngx_http_paygw_keep_ended(ev)) {
        return;
    }

    c = ev->data;
    item = c->data;

    ngx_queue_remove(&item->queue);
    item->node->nidle--;
    ngx_queue_insert_head(&item->rc->free, &item->queue);

    ngx_http_paygw_keep_close(c);
}
