
/*
 * paygw: Redis as a real nginx upstream (paygw_redis_pass), in the way
 * of ngx_http_memcached_module.  Commands are RESP built by hiredis'
 * formatter and come from the subrequest's ctx; replies are parsed by
 * hiredis' reader straight into that ctx, so their size is not bound by
 * subrequest_output_buffer_size.  The connection is offered back to
 * the keepalive pool only after every reply arrived whole.
 */


#include "ngx_http_paygw_redis_cluster.h"


static void ngx_http_paygw_redis_cleanup(void *data);
static void ngx_http_paygw_redis_free_replies(ngx_http_paygw_redis_op_t *op);
static void ngx_http_paygw_redis_free_wire(ngx_http_paygw_redis_op_t *op);
static ngx_int_t ngx_http_paygw_redis_add(ngx_http_request_t *r,
    ngx_http_paygw_redis_op_t *op, char *cmd, int len);
static ngx_int_t ngx_http_paygw_redis_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_paygw_redis_create_request(ngx_http_request_t *r);
static ngx_int_t ngx_http_paygw_redis_reinit_request(ngx_http_request_t *r);
static ngx_int_t ngx_http_paygw_redis_process_header(ngx_http_request_t *r);
static ngx_int_t ngx_http_paygw_redis_filter_init(void *data);
static ngx_int_t ngx_http_paygw_redis_filter(void *data, ssize_t bytes);
static void ngx_http_paygw_redis_abort_request(ngx_http_request_t *r);
static void ngx_http_paygw_redis_finalize_request(ngx_http_request_t *r,
    ngx_int_t rc);


ngx_http_paygw_redis_op_t *
ngx_http_paygw_redis_create(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t         *cln;
    ngx_http_paygw_redis_op_t  *op;

    op = ngx_pcalloc(r->pool, sizeof(ngx_http_paygw_redis_op_t));
    if (op == NULL) {
        return NULL;
    }

    if (ngx_array_init(&op->cmds, r->pool, 4, sizeof(ngx_str_t)) != NGX_OK) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_paygw_redis_cleanup;
    cln->data = op;

    op->call.kind = NGX_HTTP_PAYGW_CALL_REDIS;
    op->request = r;

    return op;
}


ngx_int_t
ngx_http_paygw_redis_command(ngx_http_request_t *r,
    ngx_http_paygw_redis_op_t *op, const char *fmt, ...)
{
    int       len;
    char     *cmd;
    va_list   args;

    va_start(args, fmt);
    len = redisvFormatCommand(&cmd, fmt, args);
    va_end(args);

    return ngx_http_paygw_redis_add(r, op, cmd, len);
}


ngx_int_t
ngx_http_paygw_redis_command_argv(ngx_http_request_t *r,
    ngx_http_paygw_redis_op_t *op, ngx_uint_t argc, ngx_str_t *argv)
{
    int          len;
    char        *cmd;
    size_t      *lens;
    ngx_uint_t   i;
    const char **args;

    if (argc == 0) {
        return NGX_ERROR;
    }

    args = ngx_palloc(r->pool, argc * sizeof(char *));
    lens = ngx_palloc(r->pool, argc * sizeof(size_t));
    if (args == NULL || lens == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < argc; i++) {
        args[i] = (const char *) argv[i].data;
        lens[i] = argv[i].len;
    }

    len = redisFormatCommandArgv(&cmd, (int) argc, args, lens);

    return ngx_http_paygw_redis_add(r, op, cmd, len);
}


static ngx_int_t
ngx_http_paygw_redis_add(ngx_http_request_t *r, ngx_http_paygw_redis_op_t *op,
    char *cmd, int len)
{
    ngx_str_t  *s;

    if (len <= 0 || cmd == NULL) {
        return NGX_ERROR;
    }

    /* hiredis allocates with malloc(): keep our copy in the pool */

    s = ngx_array_push(&op->cmds);
    if (s == NULL) {
        redisFreeCommand(cmd);
        return NGX_ERROR;
    }

    s->len = len;
    s->data = ngx_pnalloc(r->pool, len);
    if (s->data == NULL) {
        redisFreeCommand(cmd);
        return NGX_ERROR;
    }

    ngx_memcpy(s->data, cmd, len);
    redisFreeCommand(cmd);

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_redis_send(ngx_http_request_t *r, ngx_http_paygw_redis_op_t *op)
{
    ngx_http_paygw_loc_conf_t  *plcf;

    if (op->cmds.nelts == 0) {
        return NGX_ERROR;
    }

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_paygw_module);

    ngx_http_paygw_redis_free_replies(op);

    op->replies = ngx_pcalloc(r->pool, op->cmds.nelts * sizeof(redisReply *));
    if (op->replies == NULL) {
        return NGX_ERROR;
    }

    /* a cluster location makes its own rounds of these (a new call) */

    op->out = op->cmds.elts;
    op->nout = op->cmds.nelts;
    op->in = op->replies;
    op->cluster = NULL;

    if (plcf->redis_mux) {
        return ngx_http_paygw_redis_mux_send(r, plcf->redis_mux, op);
    }

    return ngx_http_paygw_call_start(r, &plcf->redis_uri, &op->call);
}


static void
ngx_http_paygw_redis_cleanup(void *data)
{
    ngx_http_paygw_redis_op_t *op = data;

    ngx_http_paygw_redis_mux_forget(op);
    ngx_http_paygw_rc_cleanup(op);
    ngx_http_paygw_redis_free_wire(op);
    ngx_http_paygw_redis_free_replies(op);

    if (op->reader) {
        redisReaderFree(op->reader);
        op->reader = NULL;
    }
}


static void
ngx_http_paygw_redis_free_replies(ngx_http_paygw_redis_op_t *op)
{
    ngx_uint_t  i;

    if (op->replies == NULL) {
        return;
    }

    for (i = 0; i < op->cmds.nelts; i++) {
        if (op->replies[i]) {
            freeReplyObject(op->replies[i]);
            op->replies[i] = NULL;
        }
    }

    op->got = 0;
}


static void
ngx_http_paygw_redis_free_wire(ngx_http_paygw_redis_op_t *op)
{
    ngx_uint_t  i;

    if (op->in == NULL || op->in == op->replies) {
        return;
    }

    for (i = 0; i < op->nout; i++) {
        if (op->in[i]) {
            freeReplyObject(op->in[i]);
            op->in[i] = NULL;
        }
    }

    op->got = 0;
}


/* the call's subrequest is over: NGX_AGAIN when the cluster resends */

ngx_int_t
ngx_http_paygw_redis_done(ngx_http_request_t *r, ngx_http_paygw_call_t *call)
{
    return ngx_http_paygw_rc_done(r, (ngx_http_paygw_redis_op_t *) call);
}


/* the upstream side: the handler of a paygw_redis_pass location */


char *
ngx_http_paygw_redis_pass(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_loc_conf_t *plcf = conf;

    ngx_str_t                 *value;
    ngx_url_t                  u;
    ngx_http_core_loc_conf_t  *clcf;

    if (plcf->redis.upstream) {
        return "is duplicate";
    }

    value = cf->args->elts;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = value[1];
    u.no_resolve = 1;

    plcf->redis.upstream = ngx_http_upstream_add(cf, &u, 0);
    if (plcf->redis.upstream == NULL) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    clcf->handler = ngx_http_paygw_redis_handler;

    return ngx_http_paygw_redis_mux_location(cf, plcf);
}


void
ngx_http_paygw_redis_init_conf(ngx_http_paygw_loc_conf_t *conf)
{
    /*
     * set by ngx_pcalloc():
     *
     *     conf->redis.bufs.num = 0;
     *     conf->redis.next_upstream = 0;
     *     conf->redis.upstream = NULL;
     */

    conf->redis.local = NGX_CONF_UNSET_PTR;
    conf->redis_multiplex = NGX_CONF_UNSET;
    conf->redis.socket_keepalive = NGX_CONF_UNSET;
    conf->redis.next_upstream_tries = NGX_CONF_UNSET_UINT;
    conf->redis.connect_timeout = NGX_CONF_UNSET_MSEC;
    conf->redis.send_timeout = NGX_CONF_UNSET_MSEC;
    conf->redis.read_timeout = NGX_CONF_UNSET_MSEC;
    conf->redis.next_upstream_timeout = NGX_CONF_UNSET_MSEC;
    conf->redis.buffer_size = NGX_CONF_UNSET_SIZE;

    /*
     * The hardcoded values: replies never reach the client.  A command
     * sent completes even if the client went away: the idempotent
     * answer's record is written after the answer (the client may have
     * closed the connection by then) and must not be cut short.
     */

    conf->redis.buffering = 0;
    conf->redis.ignore_client_abort = 1;
    conf->redis.intercept_errors = 1;
    conf->redis.pass_request_headers = 0;
    conf->redis.pass_request_body = 0;
}


char *
ngx_http_paygw_redis_merge_conf(ngx_conf_t *cf,
    ngx_http_paygw_loc_conf_t *prev, ngx_http_paygw_loc_conf_t *conf)
{
    ngx_conf_merge_ptr_value(conf->redis.local, prev->redis.local, NULL);

    ngx_conf_merge_value(conf->redis.socket_keepalive,
                         prev->redis.socket_keepalive, 0);

    ngx_conf_merge_uint_value(conf->redis.next_upstream_tries,
                              prev->redis.next_upstream_tries, 0);

    ngx_conf_merge_msec_value(conf->redis.connect_timeout,
                              prev->redis.connect_timeout, 1000);

    ngx_conf_merge_msec_value(conf->redis.send_timeout,
                              prev->redis.send_timeout, 1000);

    ngx_conf_merge_msec_value(conf->redis.read_timeout,
                              prev->redis.read_timeout, 1000);

    ngx_conf_merge_msec_value(conf->redis.next_upstream_timeout,
                              prev->redis.next_upstream_timeout, 0);

    ngx_conf_merge_size_value(conf->redis.buffer_size,
                              prev->redis.buffer_size,
                              (size_t) 16 * 1024);

    /*
     * A command is tried on another server only when connecting failed,
     * never after a timeout or once it was sent (see the handler): the
     * first server may have run it.
     */

    conf->redis.next_upstream = NGX_CONF_BITMASK_SET
                                |NGX_HTTP_UPSTREAM_FT_ERROR;

    if (conf->redis.upstream == NULL) {
        conf->redis.upstream = prev->redis.upstream;
    }

    ngx_conf_merge_value(conf->redis_multiplex, prev->redis_multiplex, 1);

    /* which location it asks is known once all are read: postconf */

    return ngx_http_paygw_redis_mux_user(cf, conf);
}


static ngx_int_t
ngx_http_paygw_redis_handler(ngx_http_request_t *r)
{
    ngx_http_upstream_t        *u;
    ngx_http_paygw_loc_conf_t  *plcf;
    ngx_http_paygw_redis_op_t  *op;

    op = ngx_http_paygw_call_ctx(r, NGX_HTTP_PAYGW_CALL_REDIS);
    if (op == NULL) {
        return NGX_HTTP_NOT_FOUND;
    }

    if (ngx_http_upstream_create(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    u = r->upstream;

    ngx_str_set(&u->schema, "redis://");
    u->output.tag = (ngx_buf_tag_t) &ngx_http_paygw_module;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_paygw_module);

    u->conf = &plcf->redis;

    if (plcf->redis_rc && ngx_http_paygw_rc_start(r, op) != NGX_OK) {
        ngx_http_paygw_call_fail(&op->call, r->pool,
                                 NGX_HTTP_INTERNAL_SERVER_ERROR,
                                 "redis cluster: cannot route the call");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    u->create_request = ngx_http_paygw_redis_create_request;
    u->reinit_request = ngx_http_paygw_redis_reinit_request;
    u->process_header = ngx_http_paygw_redis_process_header;
    u->abort_request = ngx_http_paygw_redis_abort_request;
    u->finalize_request = ngx_http_paygw_redis_finalize_request;

    u->input_filter_init = ngx_http_paygw_redis_filter_init;
    u->input_filter = ngx_http_paygw_redis_filter;
    u->input_filter_ctx = op;

    op->max_reply = plcf->redis_max_reply;

    /*
     * nginx resends a GET whose keepalive connection broke mid-way, even
     * after Redis may have run part of it; as a POST, once anything was
     * sent it is never sent again (NGX_HTTP_UPSTREAM_FT_NON_IDEMPOTENT).
     */

    r->method = NGX_HTTP_POST;
    ngx_str_set(&r->method_name, "POST");

    r->main->count++;

    ngx_http_upstream_init(r);

    return NGX_DONE;
}


static ngx_int_t
ngx_http_paygw_redis_create_request(ngx_http_request_t *r)
{
    ngx_buf_t                  *b;
    ngx_str_t                  *cmd;
    ngx_uint_t                  i;
    ngx_chain_t                *cl, **ll;
    ngx_http_paygw_redis_op_t  *op;

    op = ngx_http_get_module_ctx(r, ngx_http_paygw_module);

    ll = &r->upstream->request_bufs;
    cmd = op->out;

    for (i = 0; i < op->nout; i++) {
        b = ngx_calloc_buf(r->pool);
        if (b == NULL) {
            return NGX_ERROR;
        }

        b->memory = 1;
        b->pos = cmd[i].data;
        b->last = cmd[i].data + cmd[i].len;
        b->start = b->pos;
        b->end = b->last;

        cl = ngx_alloc_chain_link(r->pool);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        cl->buf = b;
        *ll = cl;
        ll = &cl->next;
    }

    *ll = NULL;

    return ngx_http_paygw_redis_reinit_request(r);
}


static ngx_int_t
ngx_http_paygw_redis_reinit_request(ngx_http_request_t *r)
{
    ngx_http_paygw_redis_op_t  *op;

    op = ngx_http_get_module_ctx(r, ngx_http_paygw_module);

    /* a retry on another connection starts the replies afresh */

    if (op->in == op->replies) {
        ngx_http_paygw_redis_free_replies(op);

    } else {
        ngx_http_paygw_redis_free_wire(op);
    }

    if (op->reader) {
        redisReaderFree(op->reader);
    }

    op->reader = redisReaderCreate();
    if (op->reader == NULL) {
        return NGX_ERROR;
    }

    op->received = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_redis_process_header(ngx_http_request_t *r)
{
    void                       *reply;
    size_t                      n;
    ngx_buf_t                  *b;
    ngx_http_upstream_t        *u;
    ngx_http_paygw_redis_op_t  *op;

    u = r->upstream;
    b = &u->buffer;
    op = ngx_http_get_module_ctx(r, ngx_http_paygw_module);

    n = b->last - b->pos;

    if (n) {
        op->received += n;

        if (op->received > op->max_reply) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "redis replies exceed paygw_redis_max_reply_size "
                          "(%uz bytes)", op->max_reply);
            return NGX_HTTP_UPSTREAM_INVALID_HEADER;
        }

        if (redisReaderFeed(op->reader, (char *) b->pos, n) != REDIS_OK) {
            return NGX_ERROR;
        }

        /* the reader keeps its own copy: the buffer never fills up */

        b->pos = b->start;
        b->last = b->start;
    }

    while (op->got < op->nout) {

        if (redisReaderGetReply(op->reader, &reply) != REDIS_OK) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "redis sent an invalid reply: %s",
                          op->reader->errstr);
            return NGX_HTTP_UPSTREAM_INVALID_HEADER;
        }

        if (reply == NULL) {
            return NGX_AGAIN;
        }

        op->in[op->got++] = reply;
    }

    if (op->reader->pos < op->reader->len) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "redis sent more than the replies asked for");
        return NGX_HTTP_UPSTREAM_INVALID_HEADER;
    }

    u->headers_in.status_n = NGX_HTTP_OK;
    u->headers_in.content_length_n = 0;
    u->state->status = NGX_HTTP_OK;

    u->keepalive = 1;
    op->call.ok = 1;

    if (op->cluster) {
        ngx_http_paygw_rc_replies(r, op);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_redis_filter_init(void *data)
{
    ngx_http_paygw_redis_op_t *op = data;

    op->call.sr->upstream->length = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_redis_filter(void *data, ssize_t bytes)
{
    ngx_http_paygw_redis_op_t *op = data;

    /* every reply was read in process_header: more is a protocol error */

    ngx_log_error(NGX_LOG_ERR, op->call.sr->connection->log, 0,
                  "redis sent %z unexpected bytes", bytes);

    op->call.sr->upstream->keepalive = 0;

    return NGX_ERROR;
}


static void
ngx_http_paygw_redis_abort_request(ngx_http_request_t *r)
{
    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "abort paygw redis request");
}


static void
ngx_http_paygw_redis_finalize_request(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_http_paygw_redis_op_t  *op;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "finalize paygw redis request: %i", rc);

    op = ngx_http_get_module_ctx(r, ngx_http_paygw_module);

    if (op->reader) {
        redisReaderFree(op->reader);
        op->reader = NULL;
    }
}
