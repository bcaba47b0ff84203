
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
 * worker asks the gateway itself to do so: every interval it sends a
 * signed POST /v1/admin/resolve over loopback, so the work runs as an
 * ordinary authenticated request with all of nginx's machinery, and any
 * node of a cluster may do it (settling is a conditional update).  With
 * "X-Paygw-Settle: due" it claims only rows whose next try has come, each claim
 * moving the next try further away (backoff), so no two runs take the
 * same row and rows nobody can decide yet never starve newer ones; a
 * provider whose circuit is open is not asked (the row waits).
 */


#include "ngx_http_paygw.h"
#include "ngx_http_paygw_auth.h"
#include <openssl/rand.h>


#define NGX_HTTP_PAYGW_SETTLER_TIMEOUT  60000


typedef struct {
    ngx_addr_t                   *addr;
    ngx_str_t                     key_id;
    ngx_msec_t                    interval;
    ngx_http_paygw_key_t         *key;

    /* per worker */
    ngx_event_t                   timer;
    ngx_peer_connection_t         peer;
    ngx_buf_t                    *out;
    ngx_log_t                    *log;
    unsigned                      answered:1;
} ngx_http_paygw_settler_t;


static void ngx_http_paygw_settler_tick(ngx_event_t *ev);
static ngx_int_t ngx_http_paygw_settler_request(
    ngx_http_paygw_settler_t *rs);
static void ngx_http_paygw_settler_write(ngx_event_t *wev);
static void ngx_http_paygw_settler_read(ngx_event_t *rev);
static void ngx_http_paygw_settler_done(ngx_http_paygw_settler_t *rs,
    const char *why);


char *
ngx_http_paygw_settler(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_main_conf_t *pmcf = conf;

    ngx_str_t                  *value, v;
    ngx_url_t                   u;
    ngx_uint_t                  i;
    ngx_http_paygw_settler_t  *rs;

    if (pmcf->settler) {
        return "is duplicate";
    }

    value = cf->args->elts;

    rs = ngx_pcalloc(cf->pool, sizeof(ngx_http_paygw_settler_t));
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
                           "paygw_resolver needs the gateway's own "
                           "IP:port, not \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    rs->addr = &u.addrs[0];
    rs->interval = 30000;

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

        goto invalid;
    }

    if (rs->key_id.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "paygw_resolver needs key=<admin key id>");
        return NGX_CONF_ERROR;
    }

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

    rs->key = ngx_http_paygw_key_by_id(&pmcf->keys, &rs->key_id);

    if (rs->key == NULL || rs->key->role != NGX_HTTP_PAYGW_ROLE_ADMIN) {
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
    ngx_http_paygw_settler_t   *rs;
    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_paygw_module);

    rs = pmcf ? pmcf->settler : NULL;

    /* one worker is enough: the others would only race it */

    if (rs == NULL || ngx_process != NGX_PROCESS_WORKER || ngx_worker != 0) {
        return NGX_OK;
    }

    rs->out = ngx_create_temp_buf(cycle->pool, 512);
    if (rs->out == NULL) {
        return NGX_ERROR;
    }

    rs->log = cycle->log;
    rs->timer.handler = ngx_http_paygw_settler_tick;
    rs->timer.data = rs;
    rs->timer.log = cycle->log;
    rs->timer.cancelable = 1;

    ngx_add_timer(&rs->timer, rs->interval);

    return NGX_OK;
}


static void
ngx_http_paygw_settler_tick(ngx_event_t *ev)
{
    ngx_int_t                   rc;
    ngx_connection_t           *c;
    ngx_http_paygw_settler_t  *rs;

    rs = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (rs->peer.connection) {
        /* the previous round is still running: skip this one */
        ngx_add_timer(&rs->timer, rs->interval);
        return;
    }

    if (ngx_http_paygw_settler_request(rs) != NGX_OK) {
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
        ngx_http_paygw_settler_done(rs, "cannot connect");
        return;
    }

    c = rs->peer.connection;
    c->data = rs;
    c->write->handler = ngx_http_paygw_settler_write;
    c->read->handler = ngx_http_paygw_settler_read;

    ngx_add_timer(c->read, NGX_HTTP_PAYGW_SETTLER_TIMEOUT);

    if (rc == NGX_OK) {
        ngx_http_paygw_settler_write(c->write);
    }
}


static ngx_int_t
ngx_http_paygw_settler_request(ngx_http_paygw_settler_t *rs)
{
    time_t      ts;
    ngx_str_t   method, uri, nonce, body, ts_str;
    u_char      rnd[16], nonce_hex[32], idem[32];
    u_char      sig[64];
    u_char      ts_buf[NGX_TIME_T_LEN];

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return NGX_ERROR;
    }

    ngx_hex_dump(nonce_hex, rnd, sizeof(rnd));
    ngx_memcpy(idem, nonce_hex, sizeof(idem));

    ts = ngx_time();
    ngx_str_set(&method, "POST");
    ngx_str_set(&uri, "/v1/admin/resolve");
    ngx_str_set(&body, "{}");
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
        "POST /v1/admin/resolve HTTP/1.0\r\n"
        "Host: paygw-resolver\r\n"
        "X-Paygw-Settle: due\r\n"
        "Authorization: PAYGW-HMAC-SHA256 key=%V,ts=%T,nonce=%V,sig=%*s\r\n"
        "Idempotency-Key: resolve-%*s\r\n"
        "Content-Type: application/json\r\n"
        "Content-Length: 2\r\n\r\n{}",
        &rs->key->key_id, ts, &nonce, (size_t) 64, sig,
        sizeof(idem), idem);

    return NGX_OK;
}


static void
ngx_http_paygw_settler_write(ngx_event_t *wev)
{
    ssize_t                     n;
    ngx_connection_t           *c;
    ngx_http_paygw_settler_t  *rs;

    c = wev->data;
    rs = c->data;

    while (rs->out->pos < rs->out->last) {
        n = c->send(c, rs->out->pos, rs->out->last - rs->out->pos);

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(wev, 0) != NGX_OK) {
                ngx_http_paygw_settler_done(rs, "write event");
            }

            return;
        }

        if (n <= 0) {
            ngx_http_paygw_settler_done(rs, "cannot send");
            return;
        }

        rs->out->pos += n;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_paygw_settler_done(rs, "read event");
    }
}


static void
ngx_http_paygw_settler_read(ngx_event_t *rev)
{
    ssize_t                     n;
    ngx_connection_t           *c;
    ngx_http_paygw_settler_t  *rs;
    u_char                      buf[1024];

    c = rev->data;
    rs = c->data;

    if (rev->timedout) {
        ngx_http_paygw_settler_done(rs, "timed out");
        return;
    }

    /* HTTP/1.0: the gateway closes the connection when it is done */

    for ( ;; ) {
        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(rev, 0) != NGX_OK) {
                ngx_http_paygw_settler_done(rs, "read event");
            }

            return;
        }

        if (n == 0) {
            ngx_http_paygw_settler_done(rs, NULL);
            return;
        }

        if (n == NGX_ERROR) {
            ngx_http_paygw_settler_done(rs, "cannot read");
            return;
        }

        if (!rs->answered && n > 12 && ngx_strncmp(buf, "HTTP/1.", 7) == 0
            && buf[9] != '2')
        {
            ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                          "paygw resolver: the gateway answered %*s",
                          (size_t) 3, buf + 9);
        }

        rs->answered = 1;
    }
}


static void
ngx_http_paygw_settler_done(ngx_http_paygw_settler_t *rs, const char *why)
{
    if (why) {
        ngx_log_error(NGX_LOG_ERR, rs->log, 0, "paygw resolver: %s", why);
    }

    if (rs->peer.connection) {
        ngx_close_connection(rs->peer.connection);
        rs->peer.connection = NULL;
    }

    if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
        ngx_add_timer(&rs->timer, rs->interval);
    }
}
