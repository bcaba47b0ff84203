
/*
 * paygw: the CONTENT phase of the merchant API.
 *
 *     location /v1/ { paygw_api; }
 *
 * The ACCESS phase (ngx_http_paygw_access.c) has authenticated the
 * request and taken its idempotency key.  Here an endpoint runs as a
 * small state machine (ngx_http_paygw_payments.c) that resumes each
 * time a backend call completes; its response is then stored for the
 * idempotency key (or the key freed, if nothing happened) and sent.
 */


#include "ngx_http_paygw_api.h"
#include "ngx_http_paygw_fees.h"
#include "ngx_http_paygw_webhook.h"


#define NGX_HTTP_PAYGW_PHASE_WORK    0
#define NGX_HTTP_PAYGW_PHASE_STORE   1
#define NGX_HTTP_PAYGW_PHASE_STORED  2
#define NGX_HTTP_PAYGW_PHASE_SEND    3
#define NGX_HTTP_PAYGW_PHASE_KEPT    4
#define NGX_HTTP_PAYGW_PHASE_DONE    5


static ngx_int_t ngx_http_paygw_api_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_paygw_api_endpoint(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static void ngx_http_paygw_api_resume(ngx_http_request_t *r);
static void ngx_http_paygw_api_run(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_api_store(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_api_stored(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_api_keep(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_api_send(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_vfail(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_uint_t status, const char *code,
    json_t *extra, const char *fmt, va_list args);


static ngx_str_t  ngx_http_paygw_json_type = ngx_string("application/json");


char *
ngx_http_paygw_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_loc_conf_t *plcf = conf;

    ngx_http_core_loc_conf_t    *clcf;
    ngx_http_paygw_main_conf_t  *pmcf;

    if (plcf->api != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_paygw_module);

    if (pmcf->keys.nelts == 0) {
        return "requires paygw_keys before it in the http block";
    }

    plcf->api = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_paygw_api_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_paygw_api_handler(ngx_http_request_t *r)
{
    ngx_int_t              rc;
    ngx_str_t              msg;
    ngx_http_paygw_ctx_t  *ctx;

    if (r != r->main) {
        return NGX_HTTP_NOT_FOUND;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_paygw_module);

    if (ctx == NULL) {

        /*
         * The ACCESS checks never ran: another access module let the
         * request through under "satisfy any".  Fail closed.
         */

        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "paygw: the paygw access checks did not run; "
                      "\"satisfy any\" cannot be used with paygw_api");

        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        ngx_str_set(&msg, "the request could not be completed");

        return ngx_http_paygw_send_error(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                         "internal_error", &msg);
    }

    /*
     * Refused before its body was read: the body must still be consumed,
     * or on a keep-alive connection it would be taken for the next request.
     */

    if (r->request_body == NULL) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (ctx->status != 0) {
        /* an error or a replay decided in the ACCESS phase */
        ctx->phase = NGX_HTTP_PAYGW_PHASE_SEND;

    } else if (!ctx->access_passed
               || ngx_http_paygw_api_endpoint(r, ctx) != NGX_OK)
    {
        /* fail closed: no check said yes, so nothing runs */

        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "paygw: request reached the endpoint without passing "
                      "the access checks");

        ngx_http_paygw_fixed_error(r, ctx, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   "internal_error");
        ctx->phase = NGX_HTTP_PAYGW_PHASE_SEND;
    }

    r->main->count++;
    r->write_event_handler = ngx_http_paygw_api_resume;

    ngx_http_paygw_api_run(r, ctx);

    return NGX_DONE;
}


static ngx_int_t
ngx_http_paygw_api_endpoint(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    switch (ctx->api) {

    case NGX_HTTP_PAYGW_API_CREATE:
        ctx->step = ngx_http_paygw_create;
        break;

    case NGX_HTTP_PAYGW_API_GET:
    case NGX_HTTP_PAYGW_API_FIND:
        ctx->step = ngx_http_paygw_get;
        break;

    case NGX_HTTP_PAYGW_API_CLOSE:
        ctx->step = ngx_http_paygw_close;
        break;

    case NGX_HTTP_PAYGW_API_REFUND:
        ctx->step = ngx_http_paygw_refund;
        break;

    case NGX_HTTP_PAYGW_API_GET_REFUND:
        ctx->step = ngx_http_paygw_get_refund;
        break;

    case NGX_HTTP_PAYGW_API_RESOLVE:
        ctx->step = ngx_http_paygw_resolve;
        break;

    case NGX_HTTP_PAYGW_API_NOTIFY:
        ctx->step = ngx_http_paygw_notify;
        break;

    /* SPEC §7: fees, settlements, reconciliation */

    case NGX_HTTP_PAYGW_API_SETTLEMENTS:
        ctx->step = ngx_http_paygw_settlements;
        break;

    case NGX_HTTP_PAYGW_API_RECONCILE:
        ctx->step = ngx_http_paygw_reconcile;
        break;

    case NGX_HTTP_PAYGW_API_GET_RECON:
        ctx->step = ngx_http_paygw_get_recon;
        break;

    case NGX_HTTP_PAYGW_API_RECON_RUN:
        ctx->step = ngx_http_paygw_recon_run;
        break;

    /* webhooks and events: ngx_http_paygw_events.c */

    case NGX_HTTP_PAYGW_API_DELIVER:
        ctx->step = ngx_http_paygw_deliver;
        break;

    case NGX_HTTP_PAYGW_API_EVENTS:
        ctx->step = ngx_http_paygw_events;
        break;

    case NGX_HTTP_PAYGW_API_REDELIVER:
        ctx->step = ngx_http_paygw_redeliver;
        break;

    default:
        return NGX_ERROR;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw api: endpoint %ui runs", ctx->api);

    return NGX_OK;
}


static void
ngx_http_paygw_api_resume(ngx_http_request_t *r)
{
    ngx_http_paygw_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_paygw_module);

    /* woken by a backend call, or by a write event meanwhile */

    if (ctx->waiting && !ctx->waiting->done) {
        return;
    }

    ngx_http_paygw_api_run(r, ctx);
}


static void
ngx_http_paygw_api_run(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_int_t  rc;

    ctx->waiting = NULL;

    for ( ;; ) {

        switch (ctx->phase) {

        case NGX_HTTP_PAYGW_PHASE_WORK:
            rc = ctx->step(r, ctx);

            if (rc == NGX_AGAIN) {
                return;
            }

            if (rc == NGX_ERROR || ctx->status == 0) {
                (void) ngx_http_paygw_fail(r, ctx,
                                           NGX_HTTP_INTERNAL_SERVER_ERROR,
                                           "internal_error",
                                           "the request could not be "
                                           "completed");
            }

            ctx->phase = NGX_HTTP_PAYGW_PHASE_STORE;
            break;

        case NGX_HTTP_PAYGW_PHASE_STORE:
            ctx->phase = NGX_HTTP_PAYGW_PHASE_STORED;

            /* an answer to keep is kept once it is on its way: below */

            if (!ctx->side_effect
                && ngx_http_paygw_api_store(r, ctx) == NGX_AGAIN)
            {
                return;
            }

            break;

        case NGX_HTTP_PAYGW_PHASE_STORED:
            ctx->phase = NGX_HTTP_PAYGW_PHASE_SEND;

            if (ngx_http_paygw_api_stored(r, ctx) == NGX_AGAIN) {
                return;
            }

            break;

        case NGX_HTTP_PAYGW_PHASE_SEND:
            ctx->sent = ngx_http_paygw_api_send(r, ctx);

            /*
             * The answer's record goes to Redis right after the answer
             * (the request waits for one round trip less): a replay
             * that comes before it lands finds the key locked, 409
             * idempotency_key_in_use as for a request still running,
             * and MySQL's unique order guards against a second charge
             * whatever Redis keeps.  The request ends once it is kept.
             */

            ctx->phase = NGX_HTTP_PAYGW_PHASE_KEPT;

            if (ngx_http_paygw_api_store(r, ctx) == NGX_AGAIN) {
                return;
            }

            break;

        case NGX_HTTP_PAYGW_PHASE_KEPT:
            ctx->phase = NGX_HTTP_PAYGW_PHASE_DONE;

            if (ngx_http_paygw_api_stored(r, ctx) == NGX_AGAIN) {
                return;
            }

            break;

        default: /* NGX_HTTP_PAYGW_PHASE_DONE */
            ngx_http_finalize_request(r, ctx->sent);
            return;
        }
    }
}


static ngx_int_t
ngx_http_paygw_api_store(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    if (!ctx->idem.held) {
        return NGX_OK;
    }

    ctx->idem.held = 0;

    return ngx_http_paygw_api_keep(r, ctx);
}


/*
 * The record's round trip was cut short (Redis dropped the connection):
 * sent once more, on a new one.  Both writes may run twice: the record
 * is a SET of the same bytes, the freeing deletes only our own lock.
 * Left as it is, the key would answer 409 to every retry until the
 * lock expires.  Not after a timeout: a Redis that hangs hangs again.
 */

static ngx_int_t
ngx_http_paygw_api_stored(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_redis_op_t  *op;

    op = ctx->keep;

    if (op == NULL || op->call.ok || ctx->kept_again
        || op->call.status != NGX_HTTP_SERVICE_UNAVAILABLE)
    {
        return NGX_OK;
    }

    ctx->kept_again = 1;

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "paygw: the idempotent result's round trip was cut "
                  "short, sending it again");

    return ngx_http_paygw_api_keep(r, ctx);
}


static ngx_int_t
ngx_http_paygw_api_keep(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_redis_op_t  *op;
    ngx_http_paygw_loc_conf_t  *plcf;

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_paygw_module);

    /*
     * Once anything happened (a payment row, a charge), the answer is
     * kept and replayed; before that the key is freed for a retry.  If
     * Redis fails now, the answer still goes out: MySQL's unique
     * (merchant_id, business_no) keeps a retry from charging twice.
     */

    op = ngx_http_paygw_redis_create(r);

    if (op == NULL
        || ngx_http_paygw_idem_finish(r, &ctx->idem, op, ctx->side_effect,
                                      ctx->status, &ctx->response,
                                      plcf->idem_retention) != NGX_OK
        || ngx_http_paygw_redis_send(r, op) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw: cannot store the idempotent result");
        return NGX_OK;
    }

    ctx->keep = op;
    ctx->waiting = &op->call;

    return NGX_AGAIN;
}


static ngx_int_t
ngx_http_paygw_api_send(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_table_elt_t  *h;

    if (ctx->status == NGX_HTTP_NOT_ALLOWED && ctx->allow) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
#if (nginx_version >= 1023000)
        h->next = NULL;
#endif
        ngx_str_set(&h->key, "Allow");
        h->value.data = (u_char *) ctx->allow;
        h->value.len = ngx_strlen(ctx->allow);
    }

    if (ctx->replayed) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
#if (nginx_version >= 1023000)
        h->next = NULL;
#endif
        ngx_str_set(&h->key, "Idempotent-Replayed");
        ngx_str_set(&h->value, "true");
    }

    return ngx_http_paygw_send_text(r, ctx->status,
                                    ctx->content_type
                                    ? ctx->content_type
                                    : &ngx_http_paygw_json_type,
                                    &ctx->response);
}


ngx_int_t
ngx_http_paygw_respond(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_uint_t status, json_t *doc)
{
    ngx_int_t  rc;

    if (doc == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_paygw_json_dump(r->pool, doc, &ctx->response);
    json_decref(doc);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->status = status;

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_fail(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_uint_t status, const char *code, const char *fmt, ...)
{
    ngx_int_t  rc;
    va_list    args;

    va_start(args, fmt);
    rc = ngx_http_paygw_vfail(r, ctx, status, code, NULL, fmt, args);
    va_end(args);

    return rc;
}


ngx_int_t
ngx_http_paygw_fail_with(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_uint_t status, const char *code, json_t *extra, const char *fmt, ...)
{
    ngx_int_t  rc;
    va_list    args;

    va_start(args, fmt);
    rc = ngx_http_paygw_vfail(r, ctx, status, code, extra, fmt, args);
    va_end(args);

    return rc;
}


static ngx_int_t
ngx_http_paygw_vfail(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_uint_t status, const char *code, json_t *extra, const char *fmt,
    va_list args)
{
    u_char     *p;
    size_t      len;
    json_t     *err;
    ngx_str_t   id;
    u_char      msg[NGX_HTTP_PAYGW_MAX_MESSAGE];

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw answer: %ui \"%s\"", status, code);

    /*
     * The message may quote text from anywhere: it is made valid UTF-8
     * (and cut on a character boundary) before jansson sees it.
     */

    p = ngx_vslprintf(msg, msg + sizeof(msg), fmt, args);
    len = ngx_http_paygw_utf8_repair(msg, p - msg);

    ngx_http_paygw_request_id(r, &id);

    err = json_pack("{s:s, s:s%, s:s%}", "code", code,
                    "message", msg, len,
                    "request_id", id.data, id.len);
    if (err == NULL) {
        json_decref(extra);
        ngx_http_paygw_fixed_error(r, ctx, status, code);
        return NGX_DECLINED;
    }

    if (extra) {
        json_object_update(err, extra);
        json_decref(extra);
    }

    if (ngx_http_paygw_respond(r, ctx, status,
                               json_pack("{s:o}", "error", err))
        != NGX_OK)
    {
        ngx_http_paygw_fixed_error(r, ctx, status, code);
    }

    /* "declined": the caller answers with this error */

    return NGX_DECLINED;
}


void
ngx_http_paygw_fixed_error(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_uint_t status, const char *code)
{
    u_char      *p;
    size_t       len;
    ngx_str_t    id;
    const char  *message;

    static u_char  fallback[] =
        "{\"error\":{\"code\":\"internal_error\",\"message\":"
        "\"the request could not be completed\",\"request_id\":\"-\"}}";

    /*
     * The error could not be described (no memory, or jansson refused
     * it): a fixed, valid body still answers, and the request never
     * goes on as if nothing had happened.  The code is one of ours, a
     * snake_case literal; the request id is hex.
     */

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "paygw: the \"%s\" error could not be built, "
                  "answering a fixed one", code);

    ngx_http_paygw_request_id(r, &id);

    if (status < NGX_HTTP_BAD_REQUEST) {
        status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        code = "internal_error";
    }

    message = (status >= NGX_HTTP_INTERNAL_SERVER_ERROR)
              ? "the request could not be completed"
              : "the request was refused";

    len = sizeof("{\"error\":{\"code\":\"\",\"message\":\"\","
                 "\"request_id\":\"\"}}") - 1
          + ngx_strlen(code) + ngx_strlen(message) + id.len;

    p = ngx_pnalloc(r->pool, len);

    if (p == NULL) {
        ctx->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
        ctx->response.data = fallback;
        ctx->response.len = sizeof(fallback) - 1;
        return;
    }

    ctx->response.data = p;
    ctx->response.len = ngx_sprintf(p, "{\"error\":{\"code\":\"%s\","
                                    "\"message\":\"%s\","
                                    "\"request_id\":\"%V\"}}",
                                    code, message, &id)
                        - p;
    ctx->status = status;
}
