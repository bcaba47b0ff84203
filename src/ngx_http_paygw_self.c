
/*
 * paygw: a worker asking the gateway itself to do periodic work
 * (ngx_http_paygw_self.h).
 *
 *     timer -> signed request -> connect -> send -> read until the
 *     gateway closes (HTTP/1.0) -> timer again
 *
 * A round still running when the timer fires makes that tick skip; an
 * exiting worker starts no round and arms no timer.
 */


#include "ngx_http_paygw_self.h"
#include "ngx_http_paygw_crypto.h"
#include <openssl/rand.h>


static void ngx_http_paygw_self_tick(ngx_event_t *ev);
static ngx_int_t ngx_http_paygw_self_request(ngx_http_paygw_self_t *self);
static void ngx_http_paygw_self_write(ngx_event_t *wev);
static void ngx_http_paygw_self_read(ngx_event_t *rev);
static void ngx_http_paygw_self_done(ngx_http_paygw_self_t *self,
    const char *why);


char *
ngx_http_paygw_self_addr(ngx_conf_t *cf, ngx_http_paygw_self_t *self,
    ngx_str_t *value, const char *directive)
{
    ngx_url_t  u;

    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url = *value;
    u.no_resolve = 1;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0
        || u.no_port)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s needs the gateway's own IP:port, not \"%V\"",
                           directive, value);
        return NGX_CONF_ERROR;
    }

    self->addr = &u.addrs[0];

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_paygw_self_start(ngx_http_paygw_self_t *self, ngx_cycle_t *cycle,
    ngx_msec_t first)
{
    size_t  size;

    /* the request line and headers around what varies, and the body */

    size = 512 + self->uri.len + self->headers.len + self->idem_prefix.len
           + self->key->key_id.len + self->body.len;

    self->out = ngx_create_temp_buf(cycle->pool, size);
    if (self->out == NULL) {
        return NGX_ERROR;
    }

    self->log = cycle->log;
    self->timer.handler = ngx_http_paygw_self_tick;
    self->timer.data = self;
    self->timer.log = cycle->log;
    self->timer.cancelable = 1;

    ngx_add_timer(&self->timer, first);

    return NGX_OK;
}


/*
 * Work is waiting: the next round in "delay" at the latest.  A round
 * that runs now decides its successor when it ends (self->next).
 */

void
ngx_http_paygw_self_soon(ngx_http_paygw_self_t *self, ngx_msec_t delay)
{
    if (!self->timer.timer_set || self->peer.connection
        || (ngx_msec_int_t) (self->timer.timer.key - ngx_current_msec)
           <= (ngx_msec_int_t) delay)
    {
        return;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, self->log, 0,
                   "%s: the next round in %M ms", self->name, delay);

    ngx_del_timer(&self->timer);
    ngx_add_timer(&self->timer, delay);
}


static void
ngx_http_paygw_self_tick(ngx_event_t *ev)
{
    ngx_int_t               rc;
    ngx_connection_t       *c;
    ngx_http_paygw_self_t  *self;

    self = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (self->peer.connection) {
        /* the previous round is still running: skip this one */
        ngx_add_timer(&self->timer, self->interval);
        return;
    }

    if (ngx_http_paygw_self_request(self) != NGX_OK) {
        ngx_add_timer(&self->timer, self->interval);
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, self->log, 0,
                   "%s: a round starts", self->name);

    ngx_memzero(&self->peer, sizeof(ngx_peer_connection_t));

    self->peer.sockaddr = self->addr->sockaddr;
    self->peer.socklen = self->addr->socklen;
    self->peer.name = &self->addr->name;
    self->peer.get = ngx_event_get_peer;
    self->peer.log = self->log;
    self->peer.log_error = NGX_ERROR_ERR;

    rc = ngx_event_connect_peer(&self->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        ngx_http_paygw_self_done(self, "cannot connect");
        return;
    }

    c = self->peer.connection;
    c->data = self;
    c->write->handler = ngx_http_paygw_self_write;
    c->read->handler = ngx_http_paygw_self_read;

    ngx_add_timer(c->read, self->timeout);

    if (rc == NGX_OK) {
        ngx_http_paygw_self_write(c->write);
    }
}


static ngx_int_t
ngx_http_paygw_self_request(ngx_http_paygw_self_t *self)
{
    time_t      ts;
    ngx_str_t   method, nonce, ts_str;
    u_char      rnd[16], nonce_hex[32];
    u_char      sig[64], ts_buf[NGX_TIME_T_LEN], body_sha256[32];

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return NGX_ERROR;
    }

    ngx_hex_dump(nonce_hex, rnd, sizeof(rnd));

    nonce.data = nonce_hex;
    nonce.len = sizeof(nonce_hex);

    ts = ngx_time();
    ts_str.data = ts_buf;
    ts_str.len = ngx_sprintf(ts_buf, "%T", ts) - ts_buf;

    ngx_str_set(&method, "POST");

    (void) EVP_Digest(self->body.data, self->body.len, body_sha256, NULL,
                      ngx_http_paygw_sha256(), NULL);

    if (ngx_http_paygw_auth_sign(self->key, &method, &self->uri,
                                 &ts_str, &nonce, body_sha256, sig)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    self->answered = 0;
    self->out->pos = self->out->start;
    self->out->last = ngx_sprintf(self->out->pos,
        "POST %V HTTP/1.0\r\n"
        "%V"
        "Authorization: PAYGW-HMAC-SHA256 key=%V,ts=%V,nonce=%V,sig=%*s\r\n"
        "Idempotency-Key: %V-%V\r\n"
        "Content-Type: application/json\r\n"
        "Content-Length: %uz\r\n\r\n%V",
        &self->uri, &self->headers, &self->key->key_id, &ts_str, &nonce,
        sizeof(sig), sig, &self->idem_prefix, &nonce, self->body.len,
        &self->body);

    return NGX_OK;
}


static void
ngx_http_paygw_self_write(ngx_event_t *wev)
{
    ssize_t                 n;
    ngx_connection_t       *c;
    ngx_http_paygw_self_t  *self;

    c = wev->data;
    self = c->data;

    while (self->out->pos < self->out->last) {
        n = c->send(c, self->out->pos, self->out->last - self->out->pos);

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(wev, 0) != NGX_OK) {
                ngx_http_paygw_self_done(self, "write event");
            }

            return;
        }

        if (n <= 0) {
            ngx_http_paygw_self_done(self, "cannot send");
            return;
        }

        self->out->pos += n;
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_paygw_self_done(self, "read event");
    }
}


static void
ngx_http_paygw_self_read(ngx_event_t *rev)
{
    ssize_t                 n;
    ngx_connection_t       *c;
    ngx_http_paygw_self_t  *self;
    u_char                  buf[1024];

    c = rev->data;
    self = c->data;

    if (rev->timedout) {
        ngx_http_paygw_self_done(self, "timed out");
        return;
    }

    /* HTTP/1.0: the gateway closes the connection when it is done */

    for ( ;; ) {
        n = c->recv(c, buf, sizeof(buf) - 1);

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(rev, 0) != NGX_OK) {
                ngx_http_paygw_self_done(self, "read event");
            }

            return;
        }

        if (n == 0) {
            ngx_http_paygw_self_done(self, NULL);
            return;
        }

        if (n == NGX_ERROR) {
            ngx_http_paygw_self_done(self, "cannot read");
            return;
        }

        buf[n] = '\0';

        if (!self->answered && n > 12 && ngx_strncmp(buf, "HTTP/1.", 7) == 0
            && buf[9] != '2')
        {
            ngx_log_error(NGX_LOG_ERR, self->log, 0,
                          "%s: the gateway answered %*s", self->name,
                          (size_t) 3, buf + 9);
        }

        self->answered = 1;

        if (self->answer) {
            self->answer(self, buf);
        }
    }
}


static void
ngx_http_paygw_self_done(ngx_http_paygw_self_t *self, const char *why)
{
    if (why) {
        ngx_log_error(NGX_LOG_ERR, self->log, 0, "%s: %s", self->name, why);
    }

    if (self->peer.connection) {
        ngx_close_connection(self->peer.connection);
        self->peer.connection = NULL;
    }

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_add_timer(&self->timer, self->next ? self->next(self, why != NULL)
                                           : self->interval);
}
