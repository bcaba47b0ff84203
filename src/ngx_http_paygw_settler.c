
/*
 * paygw: the settler, which settles payments of unknown outcome.
 *
 *     paygw_resolver ADDRESS:PORT key=ADMIN_KEY_ID [interval=30s];
 *
 * (The directive keeps its first name, paygw_resolver, so that existing
 * configurations load unchanged; the code calls it what it does: in
 * nginx a "resolver" resolves host names.)
 *
 * Payments left "unknown" (a provider answer was lost) or "processing"
 * (their request died) are settled by querying the provider.  One
 * worker asks the gateway itself to do so (ngx_http_paygw_self.c):
 * every interval it sends a signed POST /v1/admin/resolve over
 * loopback, so the work runs as an ordinary authenticated request with
 * all of nginx's machinery, and any node of a cluster may do it
 * (settling is a conditional update).  With "X-Paygw-Settle: due" it
 * claims only rows whose next try has come, each claim moving the next
 * try further away (backoff), so no two runs take the same row and rows
 * nobody can decide yet never starve newer ones; a provider whose
 * circuit is open is not asked (the row waits).
 */


#include "ngx_http_paygw_self.h"


#define NGX_HTTP_PAYGW_SETTLER_TIMEOUT  60000


typedef struct {
    ngx_str_t                     key_id;
    ngx_http_paygw_self_t         self;
} ngx_http_paygw_settler_t;


char *
ngx_http_paygw_settler(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_main_conf_t *pmcf = conf;

    ngx_str_t                 *value, v;
    ngx_uint_t                 i;
    ngx_http_paygw_settler_t  *rs;

    if (pmcf->settler) {
        return "is duplicate";
    }

    value = cf->args->elts;

    rs = ngx_pcalloc(cf->pool, sizeof(ngx_http_paygw_settler_t));
    if (rs == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_paygw_self_addr(cf, &rs->self, &value[1], "paygw_resolver")
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    rs->self.interval = 30000;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "key=", 4) == 0) {
            rs->key_id.data = value[i].data + 4;
            rs->key_id.len = value[i].len - 4;
            continue;
        }

        if (ngx_strncmp(value[i].data, "interval=", 9) == 0) {
            v.data = value[i].data + 9;
            v.len = value[i].len - 9;

            rs->self.interval = ngx_parse_time(&v, 0);
            if (rs->self.interval == (ngx_msec_t) NGX_ERROR
                || rs->self.interval == 0)
            {
                goto invalid;
            }

            continue;
        }

        goto invalid;
    }

    if (rs->key_id.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "paygw_resolver needs key=<admin key id>");
        return NGX_CONF_ERROR;
    }

    /* "due": claim only rows whose next try has come (backoff) */

    rs->self.name = "paygw resolver";
    rs->self.timeout = NGX_HTTP_PAYGW_SETTLER_TIMEOUT;
    ngx_str_set(&rs->self.uri, "/v1/admin/resolve");
    ngx_str_set(&rs->self.headers,
                "Host: paygw-resolver\r\nX-Paygw-Settle: due\r\n");
    ngx_str_set(&rs->self.idem_prefix, "resolve");
    ngx_str_set(&rs->self.body, "{}");

    pmcf->settler = rs;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"",
                       &value[i]);
    return NGX_CONF_ERROR;
}


ngx_int_t
ngx_http_paygw_settler_check(ngx_conf_t *cf,
    ngx_http_paygw_main_conf_t *pmcf)
{
    ngx_http_paygw_settler_t  *rs;

    rs = pmcf->settler;

    if (rs == NULL) {
        return NGX_OK;
    }

    rs->self.key = ngx_http_paygw_key_by_id(&pmcf->keys, &rs->key_id);

    if (rs->self.key == NULL
        || rs->self.key->role != NGX_HTTP_PAYGW_ROLE_ADMIN)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "paygw_resolver key \"%V\" is not an admin key of "
                      "paygw_keys", &rs->key_id);
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_settler_init_process(ngx_cycle_t *cycle)
{
    ngx_http_paygw_settler_t    *rs;
    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_paygw_module);

    rs = pmcf ? pmcf->settler : NULL;

    /* one worker is enough: the others would only race it */

    if (rs == NULL || ngx_process != NGX_PROCESS_WORKER || ngx_worker != 0) {
        return NGX_OK;
    }

    return ngx_http_paygw_self_start(&rs->self, cycle, rs->self.interval);
}
