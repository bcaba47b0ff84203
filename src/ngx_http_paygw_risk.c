
/*
 * paygw: risk rules, evaluated before a payment is written or a provider
 * called.
 *
 *     paygw_risk [max_amount=N] [daily_amount=N]
 *                [merchant_velocity=COUNT/WINDOW]
 *                [payer_velocity=COUNT/WINDOW]
 *                [card_key_file=PATH] [blocklists=on|off];
 *
 * Block lists are Redis sets, one set of each kind per merchant, changed
 * at any time without a reload: pg:{M}:risk:block:ip (client addresses),
 * pg:{M}:risk:block:card (card fingerprints: hex HMAC-SHA256 of the
 * number under the risk key) and pg:{M}:risk:block:payer
 * (metadata.payer_id).  Velocity windows and the daily total are Redis
 * counters.  Every key the script names carries the merchant as its hash
 * tag, so all are in one slot: the script runs on a Redis Cluster too.
 * One atomic Lua round trip decides; a
 * denial is 403 risk_denied with its reason code, a risk.block outbox
 * event and a count in paygw_risk_decisions_total.  A payment that is
 * denied does not count against the windows.
 */


#include "ngx_http_paygw_risk.h"
#include "ngx_http_paygw_crypto.h"
#include "ngx_http_paygw_api.h"
#include <openssl/evp.h>
#include <openssl/hmac.h>


typedef struct {
    int64_t                       max_amount;       /* 0: no ceiling */
    int64_t                       daily_amount;
    ngx_uint_t                    merchant_count;   /* 0: no window */
    ngx_msec_t                    merchant_window;
    ngx_uint_t                    payer_count;
    ngx_msec_t                    payer_window;
    ngx_flag_t                    blocklists;
    ngx_str_t                     card_key;         /* card fingerprints */
    EVP_MAC_CTX                  *card_hmac;        /* keyed: per process,
                                                       on first use */
} ngx_http_paygw_risk_t;


static char *ngx_http_paygw_risk_param(ngx_conf_t *cf,
    ngx_http_paygw_risk_t *risk, ngx_str_t *param);
static char *ngx_http_paygw_risk_velocity(ngx_conf_t *cf, ngx_str_t *v,
    ngx_uint_t *count, ngx_msec_t *window);
static ngx_int_t ngx_http_paygw_risk_payer(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_http_paygw_risk_t *risk, ngx_str_t *payer,
    ngx_str_t *card);


/*
 * KEYS: ip set, card set, payer set, merchant window, payer window, day
 * ARGV: ip, card, payer (each "" when not to be checked), merchant max,
 *       merchant ms, payer max, payer ms, amount, daily max, day ttl s
 * Every check passes before any counter moves.
 */

static const char  ngx_http_paygw_risk_script[] =
    "if ARGV[1] ~= '' and redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 "
    "then return 'blocked_ip' end "
    "if ARGV[2] ~= '' and redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 "
    "then return 'blocked_card' end "
    "if ARGV[3] ~= '' and redis.call('SISMEMBER', KEYS[3], ARGV[3]) == 1 "
    "then return 'blocked_payer' end "
    "local m = tonumber(redis.call('GET', KEYS[4]) or '0') "
    "if tonumber(ARGV[4]) > 0 and m >= tonumber(ARGV[4]) "
    "then return 'merchant_velocity' end "
    "local p = tonumber(redis.call('GET', KEYS[5]) or '0') "
    "if tonumber(ARGV[6]) > 0 and p >= tonumber(ARGV[6]) "
    "then return 'payer_velocity' end "
    "local d = tonumber(redis.call('GET', KEYS[6]) or '0') "
    "if tonumber(ARGV[9]) > 0 and d + tonumber(ARGV[8]) > tonumber(ARGV[9]) "
    "then return 'daily_amount' end "
    "if tonumber(ARGV[4]) > 0 then "
    "  if redis.call('INCR', KEYS[4]) == 1 then "
    "    redis.call('PEXPIRE', KEYS[4], ARGV[5]) end end "
    "if tonumber(ARGV[6]) > 0 then "
    "  if redis.call('INCR', KEYS[5]) == 1 then "
    "    redis.call('PEXPIRE', KEYS[5], ARGV[7]) end end "
    "if tonumber(ARGV[9]) > 0 then "
    "  redis.call('INCRBY', KEYS[6], ARGV[8]) "
    "  redis.call('EXPIRE', KEYS[6], ARGV[10]) end "
    "return 'allow'";


char *
ngx_http_paygw_risk(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_main_conf_t *pmcf = conf;

    char                   *rv;
    ngx_str_t              *value;
    ngx_uint_t              i;
    ngx_http_paygw_risk_t  *risk;

    if (pmcf->risk) {
        return "is duplicate";
    }

    risk = ngx_pcalloc(cf->pool, sizeof(ngx_http_paygw_risk_t));
    if (risk == NULL) {
        return NGX_CONF_ERROR;
    }

    risk->blocklists = 1;
    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        rv = ngx_http_paygw_risk_param(cf, risk, &value[i]);

        if (rv == (char *) NGX_DECLINED) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    pmcf->risk = risk;

    return NGX_CONF_OK;
}


/* NGX_CONF_OK, or (char *) NGX_DECLINED for an invalid parameter */

static char *
ngx_http_paygw_risk_param(ngx_conf_t *cf, ngx_http_paygw_risk_t *risk,
    ngx_str_t *param)
{
    ngx_str_t  v;

    if (ngx_strncmp(param->data, "max_amount=", 11) == 0) {
        risk->max_amount = ngx_atoof(param->data + 11, param->len - 11);
        return risk->max_amount > 0 ? NGX_CONF_OK : (char *) NGX_DECLINED;
    }

    if (ngx_strncmp(param->data, "daily_amount=", 13) == 0) {
        risk->daily_amount = ngx_atoof(param->data + 13, param->len - 13);
        return risk->daily_amount > 0 ? NGX_CONF_OK : (char *) NGX_DECLINED;
    }

    if (ngx_strncmp(param->data, "merchant_velocity=", 18) == 0) {
        v.data = param->data + 18;
        v.len = param->len - 18;

        return ngx_http_paygw_risk_velocity(cf, &v, &risk->merchant_count,
                                            &risk->merchant_window)
               == NGX_CONF_OK ? NGX_CONF_OK : (char *) NGX_DECLINED;
    }

    if (ngx_strncmp(param->data, "payer_velocity=", 15) == 0) {
        v.data = param->data + 15;
        v.len = param->len - 15;

        return ngx_http_paygw_risk_velocity(cf, &v, &risk->payer_count,
                                            &risk->payer_window)
               == NGX_CONF_OK ? NGX_CONF_OK : (char *) NGX_DECLINED;
    }

    if (ngx_strncmp(param->data, "card_key_file=", 14) == 0) {
        v.data = param->data + 14;
        v.len = param->len - 14;

        return ngx_http_paygw_read_secret(cf, &v, "card_key_file",
                                          &risk->card_key);
    }

    if (ngx_strcmp(param->data, "blocklists=off") == 0) {
        risk->blocklists = 0;
        return NGX_CONF_OK;
    }

    if (ngx_strcmp(param->data, "blocklists=on") == 0) {
        return NGX_CONF_OK;
    }

    return (char *) NGX_DECLINED;
}


static char *
ngx_http_paygw_risk_velocity(ngx_conf_t *cf, ngx_str_t *v, ngx_uint_t *count,
    ngx_msec_t *window)
{
    u_char     *slash;
    ngx_int_t   n;
    ngx_str_t   w;

    /* COUNT/WINDOW, e.g. 10/1h */

    slash = ngx_strlchr(v->data, v->data + v->len, '/');
    if (slash == NULL) {
        return NGX_CONF_ERROR;
    }

    n = ngx_atoi(v->data, slash - v->data);

    w.data = slash + 1;
    w.len = v->data + v->len - w.data;

    *window = ngx_parse_time(&w, 0);

    if (n <= 0 || *window == (ngx_msec_t) NGX_ERROR || *window == 0) {
        return NGX_CONF_ERROR;
    }

    *count = n;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_paygw_risk_enabled(ngx_http_request_t *r)
{
    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_paygw_module);

    return pmcf->risk ? NGX_OK : NGX_DECLINED;
}


const char *
ngx_http_paygw_risk_ceiling(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_risk_t       *risk;
    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_paygw_module);
    risk = pmcf->risk;

    if (risk->max_amount && ctx->payment.amount > risk->max_amount) {
        return "max_amount";
    }

    return NULL;
}


ngx_int_t
ngx_http_paygw_risk_send(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    u_char                      *p;
    ngx_str_t                    argv[19], payer, card;
    ngx_uint_t                   i;
    ngx_tm_t                     tm;
    ngx_http_paygw_risk_t       *risk;
    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_paygw_module);
    risk = pmcf->risk;

    if (ngx_http_paygw_risk_payer(r, ctx, risk, &payer, &card) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->redis = ngx_http_paygw_redis_create(r);
    if (ctx->redis == NULL) {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(r->pool, 6 * ctx->merchant_id.len + payer.len
                             + 6 * NGX_INT64_LEN + 192);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_gmtime(ngx_time(), &tm);

    ngx_str_set(&argv[0], "EVAL");
    argv[1].data = (u_char *) ngx_http_paygw_risk_script;
    argv[1].len = sizeof(ngx_http_paygw_risk_script) - 1;
    ngx_str_set(&argv[2], "6");

    /* KEYS */

#define ngx_paygw_arg(i, fmt, ...)                                           \
    argv[i].data = p;                                                        \
    p = ngx_sprintf(p, fmt, __VA_ARGS__);                                    \
    argv[i].len = p - argv[i].data

    /* all in the merchant's slot ({M}), block lists included */

    ngx_paygw_arg(3, "pg:{%V}:risk:block:ip", &ctx->merchant_id);
    ngx_paygw_arg(4, "pg:{%V}:risk:block:card", &ctx->merchant_id);
    ngx_paygw_arg(5, "pg:{%V}:risk:block:payer", &ctx->merchant_id);

    ngx_paygw_arg(6, "pg:{%V}:risk:m", &ctx->merchant_id);
    ngx_paygw_arg(7, "pg:{%V}:risk:p:%V", &ctx->merchant_id, &payer);
    ngx_paygw_arg(8, "pg:{%V}:risk:d:%4d%02d%02d", &ctx->merchant_id,
                  tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday);

    /* ARGV: what the block lists are asked about ("" skips a check) */

    if (risk->blocklists) {
        argv[9] = r->connection->addr_text;
        argv[10] = card;
        argv[11] = payer;

    } else {
        for (i = 9; i < 12; i++) {
            ngx_str_set(&argv[i], "");
        }
    }

    ngx_paygw_arg(12, "%ui", risk->merchant_count);
    ngx_paygw_arg(13, "%M", risk->merchant_window);
    ngx_paygw_arg(14, "%ui", risk->payer_count);
    ngx_paygw_arg(15, "%M", risk->payer_window);
    ngx_paygw_arg(16, "%L", ctx->payment.amount);
    ngx_paygw_arg(17, "%L", risk->daily_amount);
    ngx_paygw_arg(18, "%d", 2 * 86400);

#undef ngx_paygw_arg

    if (ngx_http_paygw_redis_evalsha(r, ctx->redis, 19, argv) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ctx->waiting = &ctx->redis->call;

    return ngx_http_paygw_redis_send(r, ctx->redis);
}


ngx_http_paygw_verdict_e
ngx_http_paygw_risk_result(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    u_char      *code;
    redisReply  *reply;

    /* no answer: fail closed, like the replay window */

    if (!ctx->redis->call.ok) {
        return NGX_HTTP_PAYGW_RISK_UNEVALUATED;
    }

    reply = ctx->redis->replies[0];

    if (reply->type != REDIS_REPLY_STRING && reply->type != REDIS_REPLY_STATUS)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw risk: unexpected Redis reply%s%s",
                      reply->type == REDIS_REPLY_ERROR ? ": " : "",
                      reply->type == REDIS_REPLY_ERROR ? reply->str : "");
        return NGX_HTTP_PAYGW_RISK_UNEVALUATED;
    }

    if (ngx_http_paygw_verdict_parse((u_char *) reply->str, reply->len)
        == NGX_HTTP_PAYGW_RISK_ALLOW)
    {
        return NGX_HTTP_PAYGW_RISK_ALLOW;
    }

    /* a reason code from the script: copied, the reply is freed later */

    code = ngx_pnalloc(r->pool, reply->len + 1);
    if (code == NULL) {
        ctx->risk_reason = "denied";
        return NGX_HTTP_PAYGW_RISK_DENY;
    }

    ngx_memcpy(code, reply->str, reply->len);
    code[reply->len] = '\0';

    ctx->risk_reason = (const char *) code;

    return NGX_HTTP_PAYGW_RISK_DENY;
}


static ngx_int_t
ngx_http_paygw_risk_payer(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_http_paygw_risk_t *risk, ngx_str_t *payer, ngx_str_t *card)
{
    json_t        *meta, *id;
    json_error_t   err;
    unsigned int   len;
    u_char         mac[EVP_MAX_MD_SIZE];

    ngx_str_null(card);
    ngx_str_null(payer);

    /* the card's fingerprint: keyed, so it cannot be reversed to a PAN */

    if (ctx->payment.card_number.len && risk->card_key.len) {
        if (risk->card_hmac == NULL) {
            risk->card_hmac = ngx_http_paygw_hmac_keyed(&risk->card_key);
            if (risk->card_hmac == NULL) {
                return NGX_ERROR;
            }
        }

        len = 32;

        if (ngx_http_paygw_hmac_keyed_sign(risk->card_hmac,
                                           ctx->payment.card_number.data,
                                           ctx->payment.card_number.len, mac)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        card->data = ngx_pnalloc(r->pool, 2 * len);
        if (card->data == NULL) {
            return NGX_ERROR;
        }

        card->len = ngx_hex_dump(card->data, mac, len) - card->data;
    }

    /* the payer: metadata.payer_id, else the card, else the address */

    if (ctx->payment.metadata.len) {
        meta = json_loadb((char *) ctx->payment.metadata.data,
                          ctx->payment.metadata.len, 0, &err);
        id = meta ? json_object_get(meta, "payer_id") : NULL;

        if (json_is_string(id) && json_string_length(id) > 0
            && json_string_length(id) <= 64)
        {
            payer->len = json_string_length(id);
            payer->data = ngx_pnalloc(r->pool, payer->len);
            if (payer->data) {
                ngx_memcpy(payer->data, json_string_value(id), payer->len);
            }
        }

        json_decref(meta);
    }

    if (payer->data == NULL || payer->len == 0) {
        *payer = card->len ? *card : r->connection->addr_text;
    }

    return NGX_OK;
}
