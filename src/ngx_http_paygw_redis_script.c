
/*
 * paygw: Lua scripts by their SHA1 (EVALSHA), so that a script's text
 * is not sent on every call.  An EVAL of one of our static scripts
 * (its text's address is its identity) goes out as EVALSHA; its EVAL
 * form is kept, and a Redis that does not know the script yet (a
 * restart, SCRIPT FLUSH, a failover) answers NOSCRIPT, having run
 * nothing: the op is sent again once as EVAL, which also caches the
 * script for the next calls.  Reads in the same op (a GET's cache read
 * beside its nonce script) are sent again with it; any other command
 * beside a refused script makes the op fail as it stands.
 */


#include "ngx_http_paygw_redis.h"
#include <openssl/sha.h>


#define NGX_HTTP_PAYGW_REDIS_SCRIPTS  8


typedef struct {
    const u_char                 *text;     /* static script text */
    size_t                        len;
    u_char                        sha[2 * SHA_DIGEST_LENGTH];
} ngx_http_paygw_redis_sha_t;


/* per worker: scripts are static text, looked up by their address */
static ngx_http_paygw_redis_sha_t  ngx_http_paygw_redis_shas[
                                       NGX_HTTP_PAYGW_REDIS_SCRIPTS];
static ngx_uint_t                  ngx_http_paygw_redis_nshas;


static ngx_int_t ngx_http_paygw_redis_sha(ngx_str_t *script, ngx_str_t *sha);
static ngx_int_t ngx_http_paygw_redis_format(ngx_http_request_t *r,
    ngx_uint_t argc, ngx_str_t *argv, ngx_str_t *out);
static ngx_uint_t ngx_http_paygw_redis_read_only(ngx_str_t *cmd);


ngx_int_t
ngx_http_paygw_redis_evalsha(ngx_http_request_t *r,
    ngx_http_paygw_redis_op_t *op, ngx_uint_t argc, ngx_str_t *argv)
{
    ngx_str_t   eval, sha, *cmd, *ev;
    ngx_str_t   args[NGX_HTTP_PAYGW_REDIS_EVAL_ARGS];
    ngx_uint_t  i;

    if (argc < 3 || argc > NGX_HTTP_PAYGW_REDIS_EVAL_ARGS
        || ngx_http_paygw_redis_sha(&argv[1], &sha) != NGX_OK)
    {
        /* as it is */
        return ngx_http_paygw_redis_command_argv(r, op, argc, argv);
    }

    if (op->evals.elts == NULL
        && ngx_array_init(&op->evals, r->pool, 2, sizeof(ngx_str_t))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_paygw_redis_format(r, argc, argv, &eval) != NGX_OK) {
        return NGX_ERROR;
    }

    args[0].data = (u_char *) "EVALSHA";
    args[0].len = sizeof("EVALSHA") - 1;
    args[1] = sha;

    for (i = 2; i < argc; i++) {
        args[i] = argv[i];
    }

    cmd = ngx_array_push(&op->cmds);
    if (cmd == NULL
        || ngx_http_paygw_redis_format(r, argc, args, cmd) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* evals[i] is the EVAL form of cmds[i] (empty: not a script) */

    while (op->evals.nelts < op->cmds.nelts) {
        ev = ngx_array_push(&op->evals);
        if (ev == NULL) {
            return NGX_ERROR;
        }

        ngx_str_null(ev);
    }

    ev = (ngx_str_t *) op->evals.elts + op->cmds.nelts - 1;
    *ev = eval;

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_redis_noscript(ngx_http_request_t *r,
    ngx_http_paygw_redis_op_t *op)
{
    ngx_str_t   *cmd, *ev;
    ngx_uint_t   i, refused;
    redisReply  *reply;

    /*
     * Every script refused (nothing of them ran), and beside them only
     * reads, which run again harmlessly (the payment cache's HMGET in a
     * GET's nonce round trip).
     */

    if (!op->call.ok || op->eval_sent || op->evals.nelts == 0
        || op->evals.nelts > op->cmds.nelts)
    {
        return NGX_DECLINED;
    }

    cmd = op->cmds.elts;
    ev = op->evals.elts;
    refused = 0;

    for (i = 0; i < op->cmds.nelts; i++) {

        if (i >= op->evals.nelts || ev[i].len == 0) {
            if (!ngx_http_paygw_redis_read_only(&cmd[i])) {
                return NGX_DECLINED;
            }

            continue;
        }

        reply = op->replies[i];

        if (reply == NULL || reply->type != REDIS_REPLY_ERROR
            || reply->len < sizeof("NOSCRIPT") - 1
            || ngx_strncmp(reply->str, "NOSCRIPT", sizeof("NOSCRIPT") - 1)
               != 0)
        {
            return NGX_DECLINED;
        }

        refused++;
    }

    if (refused == 0) {
        return NGX_DECLINED;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "paygw redis: script not cached (NOSCRIPT), sending it");

    for (i = 0; i < op->evals.nelts; i++) {
        if (ev[i].len) {
            cmd[i] = ev[i];
        }
    }

    op->eval_sent = 1;

    return ngx_http_paygw_redis_send(r, op) == NGX_OK ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_paygw_redis_sha(ngx_str_t *script, ngx_str_t *sha)
{
    ngx_uint_t                   i;
    u_char                       md[SHA_DIGEST_LENGTH];
    ngx_http_paygw_redis_sha_t  *s;

    for (i = 0; i < ngx_http_paygw_redis_nshas; i++) {
        s = &ngx_http_paygw_redis_shas[i];

        if (s->text == script->data && s->len == script->len) {
            sha->data = s->sha;
            sha->len = sizeof(s->sha);
            return NGX_OK;
        }
    }

    if (ngx_http_paygw_redis_nshas == NGX_HTTP_PAYGW_REDIS_SCRIPTS) {
        return NGX_DECLINED;
    }

    s = &ngx_http_paygw_redis_shas[ngx_http_paygw_redis_nshas];

    if (SHA1(script->data, script->len, md) == NULL) {
        return NGX_DECLINED;
    }

    ngx_hex_dump(s->sha, md, sizeof(md));
    s->text = script->data;
    s->len = script->len;

    ngx_http_paygw_redis_nshas++;

    sha->data = s->sha;
    sha->len = sizeof(s->sha);

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_redis_format(ngx_http_request_t *r, ngx_uint_t argc,
    ngx_str_t *argv, ngx_str_t *out)
{
    int          len;
    char        *cmd;
    size_t       lens[NGX_HTTP_PAYGW_REDIS_EVAL_ARGS];
    ngx_uint_t   i;
    const char  *args[NGX_HTTP_PAYGW_REDIS_EVAL_ARGS];

    for (i = 0; i < argc; i++) {
        args[i] = (const char *) argv[i].data;
        lens[i] = argv[i].len;
    }

    len = redisFormatCommandArgv(&cmd, (int) argc, args, lens);
    if (len <= 0 || cmd == NULL) {
        return NGX_ERROR;
    }

    /* hiredis allocates with malloc(): keep our copy in the pool */

    out->data = ngx_pnalloc(r->pool, len);
    if (out->data == NULL) {
        redisFreeCommand(cmd);
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, cmd, len);
    out->len = len;
    redisFreeCommand(cmd);

    return NGX_OK;
}


/* a command that changes nothing: "*N\r\n$L\r\nNAME\r\n..." */

static ngx_uint_t
ngx_http_paygw_redis_read_only(ngx_str_t *cmd)
{
    u_char      *p, *last;
    size_t       len;
    ngx_uint_t   i;

    static ngx_str_t  reads[] = {
        ngx_string("GET"), ngx_string("HGET"), ngx_string("HMGET"),
        ngx_string("EXISTS"), ngx_string("PTTL")
    };

    p = cmd->data;
    last = cmd->data + cmd->len;

    /* skip "*N\r\n", read "$L\r\n" */

    p = ngx_strlchr(p, last, '\n');
    if (p == NULL || ++p >= last || *p++ != '$') {
        return 0;
    }

    for (len = 0; p < last && *p >= '0' && *p <= '9'; p++) {
        len = len * 10 + (*p - '0');
    }

    if (last - p < 2 || p[0] != '\r' || p[1] != '\n') {
        return 0;
    }

    p += 2;

    if ((size_t) (last - p) < len) {
        return 0;
    }

    for (i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
        if (len == reads[i].len
            && ngx_strncasecmp(p, reads[i].data, len) == 0)
        {
            return 1;
        }
    }

    return 0;
}
