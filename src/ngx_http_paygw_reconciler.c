
/*
 * paygw: scheduled reconciliation (SPEC §7).
 *
 *     paygw_reconcile_schedule ADDRESS:PORT key=ADMIN_KEY_ID
 *                              [interval=30m] [days=7] [lease=10m];
 *
 * Like the settler (ngx_http_paygw_settler.c), one worker asks the
 * gateway itself (ngx_http_paygw_self.c): every interval it sends a signed
 * POST /v1/admin/reconcile {"days":N,"lease":SECONDS} over loopback.
 * That request takes a lease in MySQL first, so one run at a time goes
 * on across workers and across nginx instances sharing the database;
 * it reconciles every channel that has a statement for each of the last
 * N days of its provider, sets paygw_reconciliation_differences{channel}
 * and writes a reconciliation.differences event for each report that
 * has differences (ngx_http_paygw_reconcile.c).
 */


#include "ngx_http_paygw_self.h"
#include "ngx_http_paygw_fees.h"


typedef struct {
    ngx_str_t                     key_id;
    ngx_uint_t                    days;
    time_t                        lease;
    ngx_http_paygw_self_t         self;
} ngx_http_paygw_reconciler_t;


static char *ngx_http_paygw_reconciler_params(ngx_conf_t *cf,
    ngx_http_paygw_reconciler_t *rs, ngx_str_t *value);
static char *ngx_http_paygw_reconciler_self(ngx_conf_t *cf,
    ngx_http_paygw_reconciler_t *rs);


char *
ngx_http_paygw_reconcile_schedule(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_str_t                    *value;
    ngx_http_paygw_reconciler_t  *rs;

    if (((ngx_http_paygw_main_conf_t *) conf)->reconciler) {
        return "is duplicate";
    }

    value = cf->args->elts;

    rs = ngx_pcalloc(cf->pool, sizeof(ngx_http_paygw_reconciler_t));
    if (rs == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_paygw_self_addr(cf, &rs->self, &value[1],
                                 "paygw_reconcile_schedule")
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    rs->self.interval = 30 * 60000;
    rs->days = 7;
    rs->lease = 600;

    if (ngx_http_paygw_reconciler_params(cf, rs, value) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (rs->key_id.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "paygw_reconcile_schedule needs key=<admin key "
                           "id>");
        return NGX_CONF_ERROR;
    }

    /* the key: paygw_keys comes before, as for paygw_api */

    rs->self.key = ngx_http_paygw_key_by_id(
                  &((ngx_http_paygw_main_conf_t *) conf)->keys, &rs->key_id);

    if (rs->self.key == NULL
        || rs->self.key->role != NGX_HTTP_PAYGW_ROLE_ADMIN)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "paygw_reconcile_schedule key \"%V\" is not an "
                           "admin key of paygw_keys (which must come "
                           "before it)", &rs->key_id);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_paygw_reconciler_self(cf, rs) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    ((ngx_http_paygw_main_conf_t *) conf)->reconciler = rs;

    return NGX_CONF_OK;
}


/* the request a run is: POST /v1/admin/reconcile {"days":N,"lease":S} */

static char *
ngx_http_paygw_reconciler_self(ngx_conf_t *cf,
    ngx_http_paygw_reconciler_t *rs)
{
    u_char  *p;

    p = ngx_pnalloc(cf->pool, sizeof("{\"days\":,\"lease\":}") - 1
                              + NGX_INT_T_LEN + NGX_TIME_T_LEN);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    rs->self.body.data = p;
    rs->self.body.len = ngx_sprintf(p, "{\"days\":%ui,\"lease\":%T}",
                                    rs->days, rs->lease)
                        - p;

    /* a run may take long: the lease bounds it */

    rs->self.timeout = (ngx_msec_t) rs->lease * 1000;
    rs->self.name = "paygw reconcile schedule";
    ngx_str_set(&rs->self.uri, "/v1/admin/reconcile");
    ngx_str_set(&rs->self.headers, "Host: paygw-reconciler\r\n");
    ngx_str_set(&rs->self.idem_prefix, "reconcile");

    return NGX_CONF_OK;
}


/* key=, interval=, lease= and days=, after the address */

static char *
ngx_http_paygw_reconciler_params(ngx_conf_t *cf,
    ngx_http_paygw_reconciler_t *rs, ngx_str_t *value)
{
    ngx_str_t   v;
    ngx_int_t   n;
    ngx_uint_t  i;

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

        if (ngx_strncmp(value[i].data, "lease=", 6) == 0) {
            v.data = value[i].data + 6;
            v.len = value[i].len - 6;

            rs->lease = ngx_parse_time(&v, 1);
            if (rs->lease == (time_t) NGX_ERROR || rs->lease == 0) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "days=", 5) == 0) {
            n = ngx_atoi(value[i].data + 5, value[i].len - 5);
            if (n < 1 || n > 62) {
                goto invalid;
            }

            rs->days = n;
            continue;
        }

        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"",
                       &value[i]);
    return NGX_CONF_ERROR;
}


ngx_int_t
ngx_http_paygw_reconciler_init_process(ngx_cycle_t *cycle)
{
    ngx_http_paygw_main_conf_t   *pmcf;
    ngx_http_paygw_reconciler_t  *rs;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_paygw_module);

    rs = pmcf ? pmcf->reconciler : NULL;

    /* one worker of an instance; the MySQL lease orders instances */

    if (rs == NULL || ngx_process != NGX_PROCESS_WORKER || ngx_worker != 0) {
        return NGX_OK;
    }

    return ngx_http_paygw_self_start(&rs->self, cycle, rs->self.interval);
}
