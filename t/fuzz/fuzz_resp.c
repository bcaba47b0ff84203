
/*
 * libFuzzer: what Redis sends, as the module reads it: the RESP reader
 * of the paygw_redis_pass upstream (ngx_http_paygw_redis.c, included for
 * its static process_header(): hiredis fed in chunks, the reply size
 * limit, replies counted against the commands sent), then the module's
 * reading of a reply: the idempotency/replay-window record (msgpack) and
 * the risk script's verdict.  First byte: bits 0-1 the commands sent
 * (1-4), bit 2 the rest is one bulk string (a record as it is stored),
 * bits 3-7 the chunk size.  Properties: a complete answer has exactly one
 * reply per command; a replayed answer has a status and a body.
 */


#include "../../src/ngx_http_paygw_redis.c"
#include "ngx_http_paygw_idempotency.h"
#include "ngx_http_paygw_risk.h"
#include "shim.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


/* IN as Redis sends a stored record: "$<len>\r\n<in>\r\n" */

static ngx_str_t
fz_bulk(ngx_pool_t *pool, ngx_str_t *in)
{
    ngx_str_t  out;

    out.data = ngx_pnalloc(pool, in->len + NGX_SIZE_T_LEN + 5);
    out.len = ngx_sprintf(out.data, "$%uz\r\n%V\r\n", in->len, in)
              - out.data;

    return out;
}


static void
fz_read_replies(ngx_http_request_t *r, ngx_http_paygw_redis_op_t *op)
{
    ngx_http_paygw_idem_t  idem;
    ngx_http_paygw_ctx_t  *ctx;

    ngx_memzero(&idem, sizeof(idem));
    ngx_str_set(&idem.key, "order-1001");

    if (ngx_http_paygw_idem_result(r, &idem, op) == NGX_OK
        && idem.state == NGX_HTTP_PAYGW_IDEM_REPLAY
        && (idem.status < 200 || idem.status > 599 || idem.body.data == NULL))
    {
        abort();
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_paygw_ctx_t));
    ctx->redis = op;

    if (ngx_http_paygw_risk_result(r, ctx) == NGX_HTTP_PAYGW_RISK_DENY
        && ctx->risk_reason == NULL)
    {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                     *p, *last;
    size_t                      chunk;
    ngx_int_t                   rc;
    ngx_str_t                   in;
    ngx_http_request_t         *r;
    ngx_http_upstream_t        *u;
    ngx_http_paygw_redis_op_t  *op;
    void                       *ctxs[1];

    if (size < 1) {
        return 0;
    }

    r = fz_request(NULL, NULL);

    in.data = (u_char *) data + 1;
    in.len = size - 1;

    if (data[0] & 4) {
        in = fz_bulk(r->pool, &in);
    }

    in.data = fz_copy(in.data, in.len);
    chunk = (data[0] >> 3) + 1;

    op = ngx_pcalloc(r->pool, sizeof(ngx_http_paygw_redis_op_t));
    u = ngx_pcalloc(r->pool, sizeof(ngx_http_upstream_t));
    u->state = ngx_pcalloc(r->pool, sizeof(ngx_http_upstream_state_t));

    ctxs[0] = op;
    r->ctx = ctxs;
    r->upstream = u;

    op->cmds.nelts = (data[0] & 3) + 1;
    op->replies = ngx_pcalloc(r->pool, op->cmds.nelts * sizeof(redisReply *));
    op->reader = redisReaderCreate();
    op->max_reply = 64 * 1024;

    /* the upstream buffer as nginx fills it: a chunk at a time */

    rc = NGX_AGAIN;
    last = in.data + in.len;

    for (p = in.data; p < last && rc == NGX_AGAIN; p += chunk) {
        u->buffer.start = p;
        u->buffer.pos = p;
        u->buffer.last = ngx_min(p + chunk, last);

        rc = ngx_http_paygw_redis_process_header(r);
    }

    if (rc == NGX_OK) {
        if (op->got != op->cmds.nelts || !op->call.ok) {
            abort();
        }

        fz_read_replies(r, op);
    }

    ngx_http_paygw_redis_cleanup(op);
    fz_pool_reset();

    return 0;
}
