
/*
 * paygw: scheduled reconciliation (SPEC §7).
 *
 *     paygw_reconcile_schedule ADDRESS:PORT key=ADMIN_KEY_ID
 *                              [interval=30m] [days=7] [lease=10m];
 *
 * Like the settler (ngx_http_paygw_settler.c), one worker asks the
 * gateway itself: every interval it sends a signed
 * POST /v1/admin/reconcile {"days":N,"lease":SECONDS} over loopback.
 * That request takes a lease in MySQL first, so one run at a time goes
 * on across workers and across nginx instances sharing the database;
 * it reconciles every channel that has a statement for each of the last
 * N days of its provider, sets paygw_reconciliation_differences{channel}
 * and writes a reconciliation.differences event for each report that
 * has differences (ngx_http_paygw_reconcile.c).
 */


#include "ngx_http_paygw.h"
#include "ngx_http_paygw_auth.h"
#include "ngx_http_paygw_fees.h"
#include <openssl/rand.h>


typedef struct {
    ngx_addr_t                   *addr;
    ngx_str_t                     key_id;
    ngx_msec_t                    interval;
    ngx_uint_t                    days;
    time_t                        lease;
    ngx_http_paygw_key_t         *key;

    /* per worker */
    ngx_event_t                   timer;
    ngx_peer_connection_t         peer;
    ngx_buf_t                    *out;
    ngx_log_t                    *log;
    unsigned                      answered:1;
} ngx_http_paygw_reconciler_t;


static char *ngx_http_paygw_reconciler_params(ngx_conf_t *cf,
    ngx_http_paygw_reconciler_t *rs, ngx_str_t *value);
static void ngx_http_paygw_reconciler_tick(ngx_event_t *ev);
static ngx_int_t ngx_http_paygw_reconciler_request(
    ngx_http_paygw_reconciler_t *rs);
static void ngx_http_paygw_reconciler_write(ngx_event_t *wev);
static void ngx_http_paygw_reconciler_read(ngx_event_t *rev);
static void ngx_http_paygw_reconciler_done(ngx_http_paygw_reconciler_t *rs,
    const char *why);



char *
ngx_http_paygw_reconcile_schedule(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_str_t                    *value;
    ngx_url_t                     u;
    ngx_http_paygw_reconciler_t  *rs;

    if (((ngx_http_paygw_main_conf_t *) conf)->reconciler) {
        return "is duplicate";
    }

    value = cf->args->elts;

    rs = ngx_pcalloc(cf->pool, sizeof(ngx_http_paygw_reconciler_t));
    if (rs == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url = value[1];
    u.no_resolve = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0
        || u.no_port)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "paygw_reconcile_schedule needs the gateway's own "
                           "IP:port, not \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    rs->addr = &u.addrs[0];
    rs->interval = 30 * 60000;
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

    rs->key = ngx_http_paygw_key_by_id(
                  &((ngx_http_paygw_main_conf_t *) conf)->keys, &rs->key_id);

    if (rs->key == NULL || rs->key->role != NGX_HTTP_PAYGW_ROLE_ADMIN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "paygw_reconcile_schedule key \"%V\" is not an "
                           "admin key of paygw_keys (which must come "
                           "before it)", &rs->key_id);
        return NGX_CONF_ERROR;
    }

    ((ngx_http_paygw_main_conf_t *) conf)->reconciler = rs;

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

            rs->interval = ngx_parse_time(&v, 0);
            if (rs->interval == (ngx_msec_t) NGX_ERROR || rs->interval == 0) {
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

    rs->out = ngx_create_temp_buf(cycle->pool, 512);
    if (rs->out == NULL) {
        return NGX_ERROR;
    }

    rs->log = cycle->log;
    rs->timer.handler = ngx_http_paygw_reconciler_tick;
    rs->timer.data = rs;
    rs->timer.log = cycle->log;
    rs->timer.cancelable = 1;

    ngx_add_timer(&rs->timer, rs->interval);

    return NGX_OK;
}


static void
ngx_http_paygw_reconciler_tick(ngx_event_t *ev)
{
    ngx_int_t                     rc;
    ngx_connection_t             *c;
    ngx_http_paygw_reconciler_t  *rs;

    rs = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (rs->peer.connection) {
        ngx_add_timer(&rs->timer, rs->interval);
        return;
    }

    if (ngx_http_paygw_reconciler_request(rs) != NGX_OK) {
        ngx_add_timer(&rs->timer, rs->interval);
        return;
    }

    ngx_memzero(&rs->peer, sizeof(ngx_peer_connection_t));

    rs->peer.sockaddr = rs->addr->sockaddr;
    rs->peer.socklen = rs->addr->socklen;
    rs->peer.name = &rs->addr->name;
    rs->peer.get = ngx_event_get_peer;
    rs->peer.log = rs->log;
    rs->peer.log_error = NGX_ERROR_ERR;

    rc = ngx_event_connect_peer(&rs->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        ngx_http_paygw_reconciler_done(rs, "cannot connect");
        return;
    }

    c = rs->peer.connection;
    c->data = rs;
    c->write->handler = ngx_http_paygw_reconciler_write;
    c->read->handler = ngx_http_paygw_reconciler_read;

    /* a run may take long: the lease bounds it */

    ngx_add_timer(c->read, (ngx_msec_t) rs->lease * 1000);

    ngx_log_debug0(NGX_LOG_DEBUG_HTTP, rs->log, 0,
                   "paygw reconcile schedule: a run starts");

    if (rc == NGX_OK) {
        ngx_http_paygw_reconciler_write(c->write);
    }
}


static ngx_int_t
ngx_http_paygw_reconciler_request(ngx_http_paygw_reconciler_t *rs)
{
    time_t      ts;
    u_char     *p;
    ngx_str_t   method, uri, nonce, body, ts_str;
    u_char      rnd[16], nonce_hex[32];
    u_char      sig[64], text[64], ts_buf[NGX_TIME_T_LEN];

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return NGX_ERROR;
    }

    ngx_hex_dump(nonce_hex, rnd, sizeof(rnd));

    p = ngx_sprintf(text, "{\"days\":%ui,\"lease\":%T}", rs->days,
                    rs->lease);

    ts = ngx_time();
    ngx_str_set(&method, "POST");
    ngx_str_set(&uri, "/v1/admin/reconcile");
    body.data = text;
    body.len = p - text;
    nonce.data = nonce_hex;
    nonce.len = sizeof(nonce_hex);

    ts_str.data = ts_buf;
    ts_str.len = ngx_sprintf(ts_buf, "%T", ts) - ts_buf;

    if (ngx_http_paygw_auth_sign(&rs->key->secret, &method, &uri, &ts_str,
                                 &nonce, &body, sig)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    rs->answered = 0;
    rs->out->pos = rs->out->start;
    rs->out->last = ngx_sprintf(rs->out->pos,
        "POST /v1/admin/reconcile HTTP/1.0\r\n"
        "Host: paygw-reconciler\r\n"
        "Authorization: PAYGW-HMAC-SHA256 key=%V,ts=%T,nonce=%V,sig=%*s\r\n"
        "Idempotency-Key: reconcile-%V\r\n"
        "Content-Type: application/json\r\n"
        "Content-Length: %uz\r\n\r\n%V",
        &rs->key->key_id, ts, &nonce, (size_t) 64, sig, &nonce,
        body.len, &body);

    return NGX_OK;
}


static void
ngx_http_paygw_reconciler_write(ngx_event_t *wev)
{
    ssize_t                       n;
    ngx_connection_t             *c;
    ngx_http_paygw_reconciler_t  *rs;

    c = wev->data;
    rs = c->data;

    while (rs->out->pos < rs->out->last) {
        n = c->send(c, rs->out->pos, rs->out->last - rs->out->pos);

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(wev, 0) != NGX_OK) {
                ngx_http_paygw_reconciler_done(rs, "write event");
            }

            return;
        }

        if (n <= 0) {
            ngx_http_paygw_reconciler_done(rs, "cannot send");
            return;
        }

        rs->out->pos += n;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_paygw_reconciler_done(rs, "read event");
    }
}


static void
ngx_http_paygw_reconciler_read(ngx_event_t *rev)
{
    ssize_t                       n;
    ngx_connection_t             *c;
    ngx_http_paygw_reconciler_t  *rs;
    u_char                        buf[1024];

    c = rev->data;
    rs = c->data;

    if (rev->timedout) {
        ngx_http_paygw_reconciler_done(rs, "timed out");
        return;
    }

    for ( ;; ) {
        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(rev, 0) != NGX_OK) {
                ngx_http_paygw_reconciler_done(rs, "read event");
            }

            return;
        }

        if (n == 0) {
            ngx_http_paygw_reconciler_done(rs, NULL);
            return;
        }

        if (n == NGX_ERROR) {
            ngx_http_paygw_reconciler_done(rs, "cannot read");
            return;
        }

        if (!rs->answered && n > 12 && ngx_strncmp(buf, "HTTP/1.", 7) == 0
            && buf[9] != '2')
        {
            ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                          "paygw reconcile schedule: the gateway answered "
                          "%*s", (size_t) 3, buf + 9);
        }

        rs->answered = 1;
    }
}


static void
ngx_http_paygw_reconciler_done(ngx_http_paygw_reconciler_t *rs,
    const char *why)
{
    if (why) {
        ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                      "paygw reconcile schedule: %s", why);
    }

    if (rs->peer.connection) {
        ngx_close_connection(rs->peer.connection);
        rs->peer.connection = NULL;
    }

    if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
        ngx_add_timer(&rs->timer, rs->interval);
    }
}
