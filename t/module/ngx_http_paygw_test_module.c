
/*
 * ngx_http_paygw_test_module: a test-only window on the backend C API of
 * ngx_http_paygw_module.  It is built by `make build-test` (and `make
 * test`, `make test-asan`) into build/objs-test/ (build/objs-asan-test/),
 * loaded by the test harness after the shipped module, and never built
 * by `make build`, `make run`, the benchmark or an image: it runs
 * caller-supplied SQL and commands without authentication.
 *
 *     load_module .../ngx_http_paygw_module.so;
 *     load_module .../ngx_http_paygw_test_module.so;
 *     ...
 *     location = /_test/backend { paygw_test_backend; }
 *
 * POST {"redis": [["SET","k","v"], ["GET","k"]]} runs the commands as one
 * pipeline; POST {"mysql": {"transaction": true, "statements": [{"sql":
 * "...?...", "params": [1, "x", null], "expect_affected": 1}]}} runs
 * statements through the pool; POST {"crypto": {"op": ..., ...}} runs the
 * module's cryptography ("rsa_sign", "rsa_verify", "aes_gcm_decrypt",
 * "hmac_sha256", "webhook_sign", "alipay_canonical", "alipay_notify_verify",
 * "wechat_notify_verify"; t/80-vectors.t checks them against t/vectors/);
 * POST {"fragment_mb": N} leaves N MB of the worker's heap free but
 * resident, as mixed lifetimes do; POST {"large_kb": N} allocates,
 * fills and frees a block of N kB twice, as a pipeline's growing buffer
 * does (t/89-memory-trim.t).
 * It lets tests drive the very code paths payments use.  `nginx -t` warns
 * when it is configured.
 *
 * The functions it calls are the shipped module's own, declared in its
 * headers (src/): nginx loads modules with dlopen(RTLD_NOW|RTLD_GLOBAL),
 * so the non-static symbols of a module loaded earlier resolve those of a
 * module loaded later.  Nothing of the shipped module is compiled twice.
 */


#include "ngx_http_paygw.h"
#include "ngx_http_paygw_redis.h"
#include "ngx_http_paygw_mysql.h"
#include "ngx_http_paygw_crypto.h"
#include "ngx_http_paygw_channel.h"


typedef struct {
    ngx_http_paygw_redis_op_t  *redis;
    ngx_http_paygw_mysql_op_t  *mysql;
} ngx_http_paygw_test_ctx_t;


static char *ngx_http_paygw_test_backend(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_paygw_test_handler(ngx_http_request_t *r);
static void ngx_http_paygw_test_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_paygw_test_start(ngx_http_request_t *r,
    ngx_http_paygw_test_ctx_t *ctx, json_t *doc, ngx_str_t *why);
static ngx_int_t ngx_http_paygw_test_redis(ngx_http_request_t *r,
    ngx_http_paygw_test_ctx_t *ctx, json_t *cmds, ngx_str_t *why);
static ngx_int_t ngx_http_paygw_test_mysql(ngx_http_request_t *r,
    ngx_http_paygw_test_ctx_t *ctx, json_t *spec, ngx_str_t *why);
static ngx_int_t ngx_http_paygw_test_param(ngx_http_request_t *r,
    ngx_http_paygw_mysql_op_t *op, ngx_http_paygw_sql_stmt_t *stmt,
    json_t *v);
static void ngx_http_paygw_test_resume(ngx_http_request_t *r);
static ngx_int_t ngx_http_paygw_test_failed(ngx_http_request_t *r,
    ngx_http_paygw_call_t *call);
static json_t *ngx_http_paygw_test_redis_json(redisReply *reply);
static json_t *ngx_http_paygw_test_bytes(const char *p, size_t len);
static json_t *ngx_http_paygw_test_mysql_json(ngx_http_paygw_mysql_op_t *op);
static json_t *ngx_http_paygw_test_stmt_json(ngx_http_paygw_sql_stmt_t *stmt);
static u_char *ngx_http_paygw_test_pstrdup(ngx_pool_t *pool, const char *s,
    size_t len);
static ngx_int_t ngx_http_paygw_test_crypto(ngx_http_request_t *r,
    json_t *spec);
static void ngx_http_paygw_test_arg(json_t *spec, const char *name,
    ngx_str_t *v);
static json_t *ngx_http_paygw_test_alipay_notify(ngx_http_request_t *r,
    json_t *spec);
static json_t *ngx_http_paygw_test_wechat_notify(ngx_http_request_t *r,
    json_t *spec);
static json_t *ngx_http_paygw_test_crypto_op(ngx_http_request_t *r,
    json_t *spec);
static json_t *ngx_http_paygw_test_rsa(ngx_http_request_t *r, json_t *spec,
    ngx_uint_t sign);
static json_t *ngx_http_paygw_test_hmac(ngx_http_request_t *r, json_t *spec);
static json_t *ngx_http_paygw_test_canonical(ngx_http_request_t *r,
    json_t *spec);
static ngx_int_t ngx_http_paygw_test_fragment(ngx_http_request_t *r,
    json_int_t mb);
static ngx_int_t ngx_http_paygw_test_large(ngx_http_request_t *r,
    json_int_t kb);


static ngx_command_t  ngx_http_paygw_test_commands[] = {

    { ngx_string("paygw_test_backend"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_paygw_test_backend,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_paygw_test_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_paygw_test_module = {
    NGX_MODULE_V1,
    &ngx_http_paygw_test_module_ctx,       /* module context */
    ngx_http_paygw_test_commands,          /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static char *
ngx_http_paygw_test_backend(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_paygw_test_handler;

    ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                       "paygw_test_backend runs arbitrary backend commands: "
                       "for tests only");

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_paygw_test_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    if (r->method != NGX_HTTP_POST) {
        return ngx_http_paygw_not_allowed(r, "POST");
    }

    rc = ngx_http_read_client_request_body(r, ngx_http_paygw_test_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_paygw_test_body(ngx_http_request_t *r)
{
    u_char                     *p;
    size_t                      len;
    json_t                     *doc;
    ngx_int_t                   rc;
    ngx_str_t                   why;
    ngx_chain_t                *cl;
    json_error_t                err;
    ngx_http_paygw_test_ctx_t  *ctx;

    if (r->request_body == NULL || r->request_body->temp_file) {
        ngx_str_set(&why, "body missing or larger than "
                          "client_body_buffer_size");
        ngx_http_finalize_request(r,
            ngx_http_paygw_send_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                      "invalid_request", &why));
        return;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += cl->buf->last - cl->buf->pos;
    }

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        if (cl->buf->last > cl->buf->pos) {
            ngx_memcpy(p + len, cl->buf->pos, cl->buf->last - cl->buf->pos);
            len += cl->buf->last - cl->buf->pos;
        }
    }

    doc = json_loadb((char *) p, len, JSON_REJECT_DUPLICATES, &err);

    if (doc == NULL) {
        ngx_str_set(&why, "malformed JSON");
        ngx_http_finalize_request(r,
            ngx_http_paygw_send_error(r, NGX_HTTP_BAD_REQUEST,
                                      "invalid_request", &why));
        return;
    }

    if (json_is_object(json_object_get(doc, "crypto"))) {
        rc = ngx_http_paygw_test_crypto(r, json_object_get(doc, "crypto"));
        json_decref(doc);
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (json_is_integer(json_object_get(doc, "fragment_mb"))) {
        rc = ngx_http_paygw_test_fragment(r,
                 json_integer_value(json_object_get(doc, "fragment_mb")));
        json_decref(doc);
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (json_is_integer(json_object_get(doc, "large_kb"))) {
        rc = ngx_http_paygw_test_large(r,
                 json_integer_value(json_object_get(doc, "large_kb")));
        json_decref(doc);
        ngx_http_finalize_request(r, rc);
        return;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_paygw_test_ctx_t));
    if (ctx == NULL) {
        json_decref(doc);
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_paygw_test_module);

    rc = ngx_http_paygw_test_start(r, ctx, doc, &why);

    json_decref(doc);

    if (rc == NGX_DECLINED) {
        ngx_http_finalize_request(r,
            ngx_http_paygw_send_error(r, NGX_HTTP_BAD_REQUEST,
                                      "invalid_request", &why));
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    r->write_event_handler = ngx_http_paygw_test_resume;
}


static ngx_int_t
ngx_http_paygw_test_start(ngx_http_request_t *r,
    ngx_http_paygw_test_ctx_t *ctx, json_t *doc, ngx_str_t *why)
{
    json_t  *v;

    v = json_object_get(doc, "redis");
    if (json_is_array(v)) {
        return ngx_http_paygw_test_redis(r, ctx, v, why);
    }

    v = json_object_get(doc, "mysql");
    if (json_is_object(v)) {
        return ngx_http_paygw_test_mysql(r, ctx, v, why);
    }

    ngx_str_set(why, "expected {\"redis\": [...]} or {\"mysql\": {...}}");

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_paygw_test_redis(ngx_http_request_t *r,
    ngx_http_paygw_test_ctx_t *ctx, json_t *cmds, ngx_str_t *why)
{
    json_t                     *cmd, *arg;
    size_t                      i, j, argc;
    ngx_str_t                  *argv;
    ngx_http_paygw_redis_op_t  *op;

    op = ngx_http_paygw_redis_create(r);
    if (op == NULL) {
        return NGX_ERROR;
    }

    ngx_str_set(why, "each command is a non-empty array of strings");

    json_array_foreach(cmds, i, cmd) {

        argc = json_array_size(cmd);
        if (!json_is_array(cmd) || argc == 0) {
            return NGX_DECLINED;
        }

        argv = ngx_palloc(r->pool, argc * sizeof(ngx_str_t));
        if (argv == NULL) {
            return NGX_ERROR;
        }

        json_array_foreach(cmd, j, arg) {
            if (!json_is_string(arg)) {
                return NGX_DECLINED;
            }

            argv[j].len = json_string_length(arg);
            argv[j].data = ngx_http_paygw_test_pstrdup(r->pool,
                                                   json_string_value(arg),
                                                   argv[j].len);
            if (argv[j].data == NULL) {
                return NGX_ERROR;
            }
        }

        if (ngx_http_paygw_redis_command_argv(r, op, argc, argv) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (op->cmds.nelts == 0) {
        return NGX_DECLINED;
    }

    ctx->redis = op;

    return ngx_http_paygw_redis_send(r, op);
}


static ngx_int_t
ngx_http_paygw_test_mysql(ngx_http_request_t *r,
    ngx_http_paygw_test_ctx_t *ctx, json_t *spec, ngx_str_t *why)
{
    u_char                     *sql;
    json_t                     *stmts, *s, *text, *params, *p, *expect;
    size_t                      i, j;
    ngx_http_paygw_mysql_op_t  *op;
    ngx_http_paygw_sql_stmt_t  *stmt;

    op = ngx_http_paygw_mysql_create(r);
    if (op == NULL) {
        return NGX_ERROR;
    }

    op->transaction = json_is_true(json_object_get(spec, "transaction"));
    op->read_only = json_is_true(json_object_get(spec, "read_only"));

    ngx_str_set(why, "statements: [{\"sql\": \"...\", \"params\": [...]}]");

    stmts = json_object_get(spec, "statements");
    if (!json_is_array(stmts) || json_array_size(stmts) == 0) {
        return NGX_DECLINED;
    }

    json_array_foreach(stmts, i, s) {

        text = json_object_get(s, "sql");
        if (!json_is_string(text)) {
            return NGX_DECLINED;
        }

        sql = ngx_http_paygw_test_pstrdup(r->pool, json_string_value(text),
                                          json_string_length(text));
        if (sql == NULL) {
            return NGX_ERROR;
        }

        stmt = ngx_http_paygw_mysql_add(op, (char *) sql);
        if (stmt == NULL) {
            return NGX_ERROR;
        }

        expect = json_object_get(s, "expect_affected");
        if (json_is_integer(expect)) {
            stmt->expect_affected = (ngx_int_t) json_integer_value(expect);
        }

        params = json_object_get(s, "params");

        json_array_foreach(params, j, p) {
            switch (ngx_http_paygw_test_param(r, op, stmt, p)) {
            case NGX_OK:
                break;
            case NGX_DECLINED:
                ngx_str_set(why, "params are integers, strings or null");
                return NGX_DECLINED;
            default:
                return NGX_ERROR;
            }
        }
    }

    ctx->mysql = op;

    return ngx_http_paygw_mysql_send(r, op);
}


static ngx_int_t
ngx_http_paygw_test_param(ngx_http_request_t *r,
    ngx_http_paygw_mysql_op_t *op, ngx_http_paygw_sql_stmt_t *stmt,
    json_t *v)
{
    ngx_str_t  s;

    if (json_is_integer(v)) {
        return ngx_http_paygw_sql_int(op, stmt, json_integer_value(v));
    }

    if (json_is_null(v)) {
        return ngx_http_paygw_sql_null(op, stmt);
    }

    if (!json_is_string(v)) {
        return NGX_DECLINED;
    }

    s.len = json_string_length(v);
    s.data = ngx_http_paygw_test_pstrdup(r->pool, json_string_value(v), s.len);
    if (s.data == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_paygw_sql_str(op, stmt, &s);
}


static void
ngx_http_paygw_test_resume(ngx_http_request_t *r)
{
    json_t                     *doc, *list;
    ngx_int_t                   rc;
    ngx_uint_t                  i;
    ngx_http_paygw_test_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_paygw_test_module);

    if (ctx->redis) {
        if (!ctx->redis->call.done) {
            return;
        }

        if (!ctx->redis->call.ok) {
            ngx_http_finalize_request(r,
                ngx_http_paygw_test_failed(r, &ctx->redis->call));
            return;
        }

        list = json_array();

        for (i = 0; i < ctx->redis->cmds.nelts; i++) {
            json_array_append_new(list,
                ngx_http_paygw_test_redis_json(ctx->redis->replies[i]));
        }

        doc = json_pack("{s:o}", "replies", list);

    } else {
        if (!ctx->mysql->call.done) {
            return;
        }

        if (!ctx->mysql->call.ok) {
            ngx_http_finalize_request(r,
                ngx_http_paygw_test_failed(r, &ctx->mysql->call));
            return;
        }

        doc = ngx_http_paygw_test_mysql_json(ctx->mysql);
    }

    if (doc == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    rc = ngx_http_paygw_send_json(r, NGX_HTTP_OK, doc);
    json_decref(doc);

    ngx_http_finalize_request(r, rc);
}


static ngx_int_t
ngx_http_paygw_test_failed(ngx_http_request_t *r, ngx_http_paygw_call_t *call)
{
    ngx_uint_t  status;

    status = call->status ? call->status : NGX_HTTP_INTERNAL_SERVER_ERROR;

    return ngx_http_paygw_send_error(r, status,
                                     status == NGX_HTTP_GATEWAY_TIME_OUT
                                     ? "backend_timeout"
                                     : "backend_unavailable",
                                     &call->error);
}


static json_t *
ngx_http_paygw_test_redis_json(redisReply *reply)
{
    size_t   i;
    json_t  *list;

    switch (reply->type) {

    case REDIS_REPLY_NIL:
        return json_pack("{s:s}", "type", "nil");

    case REDIS_REPLY_INTEGER:
        return json_pack("{s:s, s:I}", "type", "integer",
                         "value", (json_int_t) reply->integer);

    case REDIS_REPLY_STATUS:
        return json_pack("{s:s, s:o}", "type", "status", "value",
                         ngx_http_paygw_test_bytes(reply->str, reply->len));

    case REDIS_REPLY_ERROR:
        return json_pack("{s:s, s:o}", "type", "error", "value",
                         ngx_http_paygw_test_bytes(reply->str, reply->len));

    case REDIS_REPLY_STRING:
        return json_pack("{s:s, s:I, s:o}", "type", "string",
                         "len", (json_int_t) reply->len, "value",
                         ngx_http_paygw_test_bytes(reply->str, reply->len));

    case REDIS_REPLY_ARRAY:
        list = json_array();

        for (i = 0; i < reply->elements; i++) {
            json_array_append_new(list,
                ngx_http_paygw_test_redis_json(reply->element[i]));
        }

        return json_pack("{s:s, s:o}", "type", "array", "value", list);
    }

    return json_pack("{s:s}", "type", "unknown");
}


static json_t *
ngx_http_paygw_test_bytes(const char *p, size_t len)
{
    json_t  *s;

    /* JSON strings must be UTF-8: anything else is reported as null */

    s = json_stringn(p, len);

    return s ? s : json_null();
}


static json_t *
ngx_http_paygw_test_mysql_json(ngx_http_paygw_mysql_op_t *op)
{
    size_t                      i;
    json_t                     *results;
    ngx_http_paygw_sql_stmt_t  *stmt;

    results = json_array();
    stmt = op->stmts.elts;

    for (i = 0; i < op->stmts.nelts; i++) {
        json_array_append_new(results,
                              ngx_http_paygw_test_stmt_json(&stmt[i]));
    }

    return json_pack("{s:b, s:i, s:s%, s:i, s:b, s:o}",
                     "ok", op->err_no == 0 && !op->conflict,
                     "errno", (int) op->err_no,
                     "error", op->err_msg.data ? (char *) op->err_msg.data
                                               : "",
                     op->err_msg.len,
                     "failed", (int) op->failed,
                     "conflict", (int) op->conflict,
                     "results", results);
}


static json_t *
ngx_http_paygw_test_stmt_json(ngx_http_paygw_sql_stmt_t *stmt)
{
    json_t      *fields, *rows, *row;
    ngx_str_t   *v;
    ngx_uint_t   i, j;

    fields = json_array();
    rows = json_array();

    for (i = 0; i < stmt->nfields; i++) {
        json_array_append_new(fields,
            ngx_http_paygw_test_bytes((char *) stmt->fields[i].data,
                                      stmt->fields[i].len));
    }

    for (i = 0; i < stmt->nrows; i++) {
        row = json_array();

        for (j = 0; j < stmt->nfields; j++) {
            v = ngx_http_paygw_sql_value(stmt, i, j);

            json_array_append_new(row, v->data == NULL ? json_null()
                : ngx_http_paygw_test_bytes((char *) v->data, v->len));
        }

        json_array_append_new(rows, row);
    }

    return json_pack("{s:I, s:I, s:o, s:o}",
                     "affected", (json_int_t) stmt->affected,
                     "insert_id", (json_int_t) stmt->insert_id,
                     "fields", fields, "rows", rows);
}


static u_char *
ngx_http_paygw_test_pstrdup(ngx_pool_t *pool, const char *s, size_t len)
{
    u_char  *p;

    p = ngx_pnalloc(pool, len + 1);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, s, len);
    p[len] = '\0';

    return p;
}


/*
 * {"crypto": {"op": ..., ...}}: the module's own cryptography, for the
 * protocol vectors (t/80).  Synchronous: no backend is involved.
 */

static ngx_int_t
ngx_http_paygw_test_crypto(ngx_http_request_t *r, json_t *spec)
{
    json_t     *res;
    ngx_int_t   rc;
    ngx_str_t   why;

    res = ngx_http_paygw_test_crypto_op(r, spec);

    if (res == NULL) {
        ngx_str_set(&why, "unknown op or bad arguments");
        return ngx_http_paygw_send_error(r, NGX_HTTP_BAD_REQUEST,
                                         "invalid_request", &why);
    }

    rc = ngx_http_paygw_send_json(r, NGX_HTTP_OK, res);
    json_decref(res);

    return rc;
}


static void
ngx_http_paygw_test_arg(json_t *spec, const char *name, ngx_str_t *v)
{
    json_t  *j;

    j = json_object_get(spec, name);

    if (json_is_string(j)) {
        v->data = (u_char *) json_string_value(j);
        v->len = json_string_length(j);

    } else {
        ngx_str_set(v, "");
    }
}


static json_t *
ngx_http_paygw_test_crypto_op(ngx_http_request_t *r, json_t *spec)
{
    ngx_int_t     rc;
    ngx_str_t     op, a, b, c, d, out;
    EVP_MAC_CTX  *keyed;

    ngx_http_paygw_test_arg(spec, "op", &op);

#define ngx_paygw_op(name)                                                   \
    (op.len == sizeof(name) - 1 && ngx_strncmp(op.data, name, op.len) == 0)

    if (ngx_paygw_op("rsa_sign") || ngx_paygw_op("rsa_verify")) {
        return ngx_http_paygw_test_rsa(r, spec, ngx_paygw_op("rsa_sign"));
    }

    if (ngx_paygw_op("aes_gcm_decrypt")) {
        ngx_http_paygw_test_arg(spec, "key", &a);
        ngx_http_paygw_test_arg(spec, "nonce", &b);
        ngx_http_paygw_test_arg(spec, "associated_data", &c);
        ngx_http_paygw_test_arg(spec, "ciphertext", &d);

        rc = ngx_http_paygw_aes_gcm_decrypt(r->pool, &a, &b, &c, &d, &out);

        if (rc != NGX_OK) {
            return json_pack("{s:s}", "error", "decrypt");
        }

        return json_pack("{s:s%}", "plaintext", out.data, out.len);
    }

    if (ngx_paygw_op("hmac_sha256")) {
        return ngx_http_paygw_test_hmac(r, spec);
    }

    if (ngx_paygw_op("webhook_sign")) {
        ngx_http_paygw_test_arg(spec, "secret", &a);
        ngx_http_paygw_test_arg(spec, "id", &b);
        ngx_http_paygw_test_arg(spec, "timestamp", &c);
        ngx_http_paygw_test_arg(spec, "body", &d);

        keyed = ngx_http_paygw_webhook_key(r->pool, &a);

        if (keyed == NULL
            || ngx_http_paygw_webhook_sign(r->pool, keyed, &b, &c, &d, &out)
               != NGX_OK)
        {
            EVP_MAC_CTX_free(keyed);
            return json_pack("{s:s}", "error", "secret");
        }

        EVP_MAC_CTX_free(keyed);

        return json_pack("{s:s%}", "signature", out.data, out.len);
    }

    if (ngx_paygw_op("alipay_notify_verify")) {
        return ngx_http_paygw_test_alipay_notify(r, spec);
    }

    if (ngx_paygw_op("wechat_notify_verify")) {
        return ngx_http_paygw_test_wechat_notify(r, spec);
    }

    if (ngx_paygw_op("alipay_canonical")) {
        return ngx_http_paygw_test_canonical(r, spec);
    }

#undef ngx_paygw_op

    return NULL;
}


static json_t *
ngx_http_paygw_test_rsa(ngx_http_request_t *r, json_t *spec, ngx_uint_t sign)
{
    EVP_PKEY   *key;
    ngx_int_t   rc;
    ngx_str_t   pem, message, signature, out;

    ngx_http_paygw_test_arg(spec, "key_pem", &pem);
    ngx_http_paygw_test_arg(spec, "message", &message);
    ngx_http_paygw_test_arg(spec, "signature", &signature);

    key = ngx_http_paygw_pem_key(&pem, sign);
    if (key == NULL) {
        return json_pack("{s:s}", "error", "key");
    }

    if (sign) {
        rc = ngx_http_paygw_rsa_sign(r->pool, key, &message, &out);
        EVP_PKEY_free(key);
        return rc == NGX_OK ? json_pack("{s:s%}", "signature", out.data,
                                        out.len)
                            : json_pack("{s:s}", "error", "sign");
    }

    rc = ngx_http_paygw_rsa_verify(r->pool, key, &message, &signature);
    EVP_PKEY_free(key);

    return json_pack("{s:b}", "valid", rc == NGX_OK);
}


/* hex in: RFC 4231 keys are not text */

static json_t *
ngx_http_paygw_test_hmac(ngx_http_request_t *r, json_t *spec)
{
    ngx_str_t  a, b, c, d;
    u_char     mac[32], hex[64];

    ngx_http_paygw_test_arg(spec, "key_hex", &c);
    ngx_http_paygw_test_arg(spec, "data_hex", &d);

    a.data = ngx_pnalloc(r->pool, c.len / 2 + 1);
    b.data = ngx_pnalloc(r->pool, d.len / 2 + 1);
    if (a.data == NULL || b.data == NULL) {
        return NULL;
    }

    for (a.len = 0; a.len < c.len / 2; a.len++) {
        a.data[a.len] = (u_char) ngx_hextoi(c.data + 2 * a.len, 2);
    }

    for (b.len = 0; b.len < d.len / 2; b.len++) {
        b.data[b.len] = (u_char) ngx_hextoi(d.data + 2 * b.len, 2);
    }

    if (ngx_http_paygw_hmac_sha256(&a, &b, mac) != NGX_OK) {
        return NULL;
    }

    ngx_hex_dump(hex, mac, sizeof(mac));

    return json_pack("{s:s%}", "hex", hex, sizeof(hex));
}


static json_t *
ngx_http_paygw_test_canonical(ngx_http_request_t *r, json_t *spec)
{
    size_t         i;
    json_t        *pair;
    ngx_str_t      out;
    ngx_array_t   *params;
    ngx_keyval_t  *kv;

    params = ngx_array_create(r->pool, 16, sizeof(ngx_keyval_t));
    if (params == NULL) {
        return NULL;
    }

    json_array_foreach(json_object_get(spec, "params"), i, pair) {
        kv = ngx_array_push(params);
        if (kv == NULL || !json_is_string(json_array_get(pair, 0))
            || !json_is_string(json_array_get(pair, 1)))
        {
            return NULL;
        }

        kv->key.data = (u_char *) json_string_value(json_array_get(pair, 0));
        kv->key.len = json_string_length(json_array_get(pair, 0));
        kv->value.data = (u_char *) json_string_value(json_array_get(pair,
                                                                     1));
        kv->value.len = json_string_length(json_array_get(pair, 1));
    }

    if (ngx_http_paygw_alipay_canonical(r->pool, params,
            json_is_true(json_object_get(spec, "keep_sign_type")), &out)
        != NGX_OK)
    {
        return NULL;
    }

    return json_pack("{s:s%}", "canonical", out.data, out.len);
}


/*
 * {"op":"alipay_notify_verify","form_body":...,"public_key_pem":...}:
 * a notify through the code /v1/notify/alipay runs (form decoding, both
 * signing rules).
 */

static json_t *
ngx_http_paygw_test_alipay_notify(ngx_http_request_t *r, json_t *spec)
{
    EVP_PKEY     *key;
    ngx_int_t     rc;
    ngx_str_t     form, pem;
    ngx_array_t  *params;

    ngx_http_paygw_test_arg(spec, "form_body", &form);
    ngx_http_paygw_test_arg(spec, "public_key_pem", &pem);

    key = ngx_http_paygw_pem_key(&pem, 0);
    if (key == NULL) {
        return json_pack("{s:s}", "error", "key");
    }

    rc = ngx_http_paygw_alipay_verify_form(r->pool, key, &form, &params);
    EVP_PKEY_free(key);

    return json_pack("{s:b}", "valid", rc == NGX_OK);
}


/*
 * {"op":"wechat_notify_verify","headers":{...},"body":...,"serial":...,
 * "public_key_pem":...,"apiv3_key":...,"now":N}: a callback through the
 * code /v1/notify/wechat runs (key by serial, clock skew, signature,
 * then the resource decrypted).
 */

static json_t *
ngx_http_paygw_test_wechat_notify(ngx_http_request_t *r, json_t *spec)
{
    json_t                         *h, *res;
    ngx_int_t                       rc;
    ngx_str_t                       pem, apiv3, body, event, plain;
    ngx_str_t                       serial, ts, nonce, sig;
    ngx_array_t                     keys;
    const char                     *why;
    ngx_http_paygw_platform_key_t  *pk;

    h = json_object_get(spec, "headers");

    ngx_http_paygw_test_arg(h, "Wechatpay-Serial", &serial);
    ngx_http_paygw_test_arg(h, "Wechatpay-Timestamp", &ts);
    ngx_http_paygw_test_arg(h, "Wechatpay-Nonce", &nonce);
    ngx_http_paygw_test_arg(h, "Wechatpay-Signature", &sig);
    ngx_http_paygw_test_arg(spec, "body", &body);
    ngx_http_paygw_test_arg(spec, "public_key_pem", &pem);
    ngx_http_paygw_test_arg(spec, "apiv3_key", &apiv3);

    if (ngx_array_init(&keys, r->pool, 1,
                       sizeof(ngx_http_paygw_platform_key_t))
        != NGX_OK)
    {
        return NULL;
    }

    pk = ngx_array_push(&keys);
    if (pk == NULL) {
        return NULL;
    }

    ngx_http_paygw_test_arg(spec, "serial", &pk->serial);

    pk->key = ngx_http_paygw_pem_key(&pem, 0);
    if (pk->key == NULL) {
        return json_pack("{s:s}", "error", "key");
    }

    rc = ngx_http_paygw_wechat_verify(r->pool, &keys, &serial, &ts, &nonce,
                                      &sig, &body,
                                      (time_t) json_integer_value(
                                          json_object_get(spec, "now")),
                                      &why);
    EVP_PKEY_free(pk->key);

    if (rc != NGX_OK) {
        return json_pack("{s:b, s:s}", "valid", 0, "why", why);
    }

    if (ngx_http_paygw_wechat_resource(r->pool, &apiv3, &body, &event,
                                       &plain, &why)
        != NGX_OK)
    {
        return json_pack("{s:b, s:s}", "valid", 0, "why", why);
    }

    res = json_pack("{s:b, s:s%, s:s%}", "valid", 1,
                    "event_type", event.data, event.len,
                    "plaintext", plain.data, plain.len);

    return res;
}


/*
 * N MB in 16 kB blocks, all touched; every 32nd is kept (until the next
 * call) and the others freed: free memory below blocks still in use,
 * which glibc keeps resident until malloc_trim().
 */

#define NGX_HTTP_PAYGW_TEST_BLOCK  16384
#define NGX_HTTP_PAYGW_TEST_KEEP   32

static ngx_int_t
ngx_http_paygw_test_fragment(ngx_http_request_t *r, json_int_t mb)
{
    u_char            **blocks;
    json_t             *res;
    ngx_int_t           rc;
    ngx_uint_t          i, n;
    static void       **kept;
    static ngx_uint_t   nkept;

    for (i = 0; i < nkept; i++) {
        ngx_free(kept[i]);
    }

    ngx_free(kept);
    kept = NULL;
    nkept = 0;

    if (mb < 1 || mb > 1024) {
        return NGX_HTTP_BAD_REQUEST;
    }

    n = (ngx_uint_t) mb * (1024 * 1024 / NGX_HTTP_PAYGW_TEST_BLOCK);

    blocks = ngx_alloc(n * sizeof(u_char *), r->connection->log);
    kept = ngx_alloc(n / NGX_HTTP_PAYGW_TEST_KEEP * sizeof(void *),
                     r->connection->log);
    if (blocks == NULL || kept == NULL) {
        ngx_free(blocks);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < n; i++) {
        blocks[i] = ngx_alloc(NGX_HTTP_PAYGW_TEST_BLOCK, r->connection->log);
        if (blocks[i] != NULL) {
            ngx_memset(blocks[i], 0x5a, NGX_HTTP_PAYGW_TEST_BLOCK);
        }
    }

    /* the last one kept too: the heap's top cannot shrink below it */

    for (i = 0; i < n; i++) {
        if (i % NGX_HTTP_PAYGW_TEST_KEEP == NGX_HTTP_PAYGW_TEST_KEEP - 1) {
            kept[nkept++] = blocks[i];

        } else {
            ngx_free(blocks[i]);
        }
    }

    ngx_free(blocks);

    res = json_pack("{s:i}", "kept", (json_int_t) nkept);
    if (res == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_paygw_send_json(r, NGX_HTTP_OK, res);
    json_decref(res);

    return rc;
}


/*
 * glibc maps the first block on its own, and after freeing it serves
 * the second from the heap unless its threshold was fixed: what is left
 * resident then shows in the worker's RSS.
 */

static ngx_int_t
ngx_http_paygw_test_large(ngx_http_request_t *r, json_int_t kb)
{
    u_char           *p;
    json_t           *res;
    size_t            off;
    ngx_int_t         rc;
    ngx_uint_t        i;
    volatile u_char  *page;

    if (kb < 1 || kb > 65536) {
        return NGX_HTTP_BAD_REQUEST;
    }

    for (i = 0; i < 2; i++) {
        p = ngx_alloc((size_t) kb * 1024, r->connection->log);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* volatile: a store to memory freed next is otherwise dropped */

        page = p;

        for (off = 0; off < (size_t) kb * 1024; off += ngx_pagesize) {
            page[off] = 0x5a;
        }

        ngx_free(p);
    }

    res = json_pack("{s:i}", "freed_kb", kb * 2);
    if (res == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_paygw_send_json(r, NGX_HTTP_OK, res);
    json_decref(res);

    return rc;
}
