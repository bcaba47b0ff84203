
/*
 * paygw: the webhook sender's configuration and its ticker.
 *
 *     paygw_webhook ADDRESS:PORT key=ADMIN_KEY_ID [interval=1s]
 *                   [batch=100] [parallel=100] [lease=60s] [retention=7d]
 *                   [stream_maxlen=100000] [location=/_paygw/webhook];
 *     paygw_webhook_secrets FILE;
 *     paygw_webhook_retry 5s 5m 30m 2h 5h 10h 24h;
 *     paygw_webhook_allow_loopback on|off;
 *
 * Every worker asks the gateway itself, over loopback, to run one
 * delivery round (a signed POST /v1/admin/webhooks/deliver, the
 * settler's pattern): the round claims due outbox rows with a lease, so
 * workers and nginx instances never send the same attempt in parallel,
 * and a worker that dies leaves its rows to be claimed again once the
 * lease ran out.  A round that found a full batch is followed by the
 * next one at once; otherwise the worker waits for the interval.
 */


#include "ngx_http_paygw_webhook.h"


#define NGX_HTTP_PAYGW_WH_TIMEOUT   120000


static ngx_http_paygw_webhook_conf_t *ngx_http_paygw_webhook_get(
    ngx_conf_t *cf, ngx_http_paygw_main_conf_t *pmcf);
static char *ngx_http_paygw_webhook_param(ngx_conf_t *cf,
    ngx_http_paygw_webhook_conf_t *wc, ngx_str_t *v);
static char *ngx_http_paygw_webhook_secrets_line(ngx_conf_t *cf,
    ngx_http_paygw_webhook_conf_t *wc, u_char *p, u_char *last,
    ngx_uint_t line);
static void ngx_http_paygw_webhook_answer(ngx_http_paygw_self_t *self,
    u_char *text);
static ngx_msec_t ngx_http_paygw_webhook_next(ngx_http_paygw_self_t *self,
    ngx_uint_t failed);
static ngx_int_t ngx_http_paygw_webhook_port_uri(ngx_pool_t *pool,
    ngx_http_paygw_wh_event_t *ev, u_char *colon, u_char *end, u_char *last);
static ngx_int_t ngx_http_paygw_webhook_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_msec_t  ngx_http_paygw_webhook_default_retry[] = {
    5000, 300000, 1800000, 7200000, 18000000, 36000000, 86400000
};


/* the variables' values: fields of the delivery's event */

static struct {
    ngx_str_t   name;
    uintptr_t   offset;
} ngx_http_paygw_webhook_vars[] = {
    { ngx_string("paygw_webhook_url"),
      offsetof(ngx_http_paygw_wh_event_t, url) },
    { ngx_string("paygw_webhook_host"),
      offsetof(ngx_http_paygw_wh_event_t, host) },
    { ngx_string("paygw_webhook_authority"),
      offsetof(ngx_http_paygw_wh_event_t, authority) },
    { ngx_string("paygw_webhook_scheme"),
      offsetof(ngx_http_paygw_wh_event_t, scheme) },
    { ngx_string("paygw_webhook_uri"),
      offsetof(ngx_http_paygw_wh_event_t, uri) }
};


static ngx_http_paygw_webhook_conf_t *
ngx_http_paygw_webhook_get(ngx_conf_t *cf, ngx_http_paygw_main_conf_t *pmcf)
{
    ngx_http_paygw_webhook_conf_t  *wc;

    if (pmcf->webhook) {
        return pmcf->webhook;
    }

    wc = ngx_pcalloc(cf->pool, sizeof(ngx_http_paygw_webhook_conf_t));
    if (wc == NULL) {
        return NULL;
    }

    if (ngx_array_init(&wc->secrets, cf->pool, 4,
                       sizeof(ngx_http_paygw_wh_secret_t))
        != NGX_OK)
    {
        return NULL;
    }

    wc->self.interval = 1000;
    wc->batch = 100;
    wc->parallel = 100;
    wc->lease = 60000;
    wc->retention = 7 * 86400;
    wc->stream_maxlen = 100000;
    wc->handoff = 1000;
    wc->allow_loopback = NGX_CONF_UNSET;
    ngx_str_set(&wc->location, "/_paygw/webhook");

    pmcf->webhook = wc;

    return wc;
}


char *
ngx_http_paygw_webhook(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_main_conf_t *pmcf = conf;

    char                           *rv;
    ngx_str_t                      *value;
    ngx_uint_t                      i;
    ngx_http_paygw_webhook_conf_t  *wc;

    wc = ngx_http_paygw_webhook_get(cf, pmcf);
    if (wc == NULL) {
        return NGX_CONF_ERROR;
    }

    if (wc->self.addr) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_paygw_self_addr(cf, &wc->self, &value[1], "paygw_webhook")
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {
        rv = ngx_http_paygw_webhook_param(cf, wc, &value[i]);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    if (wc->key_id.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "paygw_webhook needs key=<admin key id>");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_paygw_webhook_param(ngx_conf_t *cf,
    ngx_http_paygw_webhook_conf_t *wc, ngx_str_t *v)
{
    ngx_int_t   n;
    ngx_str_t   s;
    ngx_msec_t  ms;

#define ngx_paygw_param(name)                                                \
    (v->len > sizeof(name) - 1                                               \
     && ngx_strncmp(v->data, name, sizeof(name) - 1) == 0                    \
     && (s.data = v->data + sizeof(name) - 1,                                \
         s.len = v->len - (sizeof(name) - 1), 1))

    if (ngx_paygw_param("key=")) {
        wc->key_id = s;
        return NGX_CONF_OK;
    }

    if (ngx_paygw_param("location=")) {
        wc->location = s;
        return NGX_CONF_OK;
    }

    if (ngx_paygw_param("interval=") || ngx_paygw_param("lease=")) {
        ms = ngx_parse_time(&s, 0);
        if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
            goto invalid;
        }

        if (v->data[0] == 'i') {
            wc->self.interval = ms;
        } else {
            wc->lease = ms;
        }

        return NGX_CONF_OK;
    }

    if (ngx_paygw_param("retention=")) {
        n = ngx_parse_time(&s, 1);
        if (n == NGX_ERROR || n == 0) {
            goto invalid;
        }

        wc->retention = n;
        return NGX_CONF_OK;
    }

    if (ngx_paygw_param("handoff=")) {
        n = ngx_atoi(s.data, s.len);
        if (n == NGX_ERROR || n > 100000) {
            goto invalid;
        }

        /* 0: every event waits for a claim round */
        wc->handoff = n;
        return NGX_CONF_OK;
    }

    if (ngx_paygw_param("batch=") || ngx_paygw_param("parallel=")
        || ngx_paygw_param("stream_maxlen="))
    {
        n = ngx_atoi(s.data, s.len);
        if (n == NGX_ERROR || n == 0) {
            goto invalid;
        }

        if (v->data[0] == 'b' || v->data[0] == 'p') {
            if (n > 1000) {
                goto invalid;
            }

            if (v->data[0] == 'b') {
                wc->batch = n;
            } else {
                wc->parallel = n;
            }

        } else {
            wc->stream_maxlen = n;
        }

        return NGX_CONF_OK;
    }

#undef ngx_paygw_param

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"", v);
    return NGX_CONF_ERROR;
}


char *
ngx_http_paygw_webhook_retry(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_main_conf_t *pmcf = conf;

    ngx_str_t                      *value;
    ngx_uint_t                      i;
    ngx_msec_t                      ms;
    ngx_http_paygw_webhook_conf_t  *wc;

    wc = ngx_http_paygw_webhook_get(cf, pmcf);
    if (wc == NULL) {
        return NGX_CONF_ERROR;
    }

    if (wc->nretries) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts - 1 > NGX_HTTP_PAYGW_WH_MAX_RETRIES) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "at most %d retries",
                           NGX_HTTP_PAYGW_WH_MAX_RETRIES);
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {
        ms = ngx_parse_time(&value[i], 0);

        if (ms == (ngx_msec_t) NGX_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid retry delay \"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        wc->retry[wc->nretries++] = ms;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_paygw_webhook_flag(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_main_conf_t *pmcf = conf;

    ngx_str_t                      *value;
    ngx_http_paygw_webhook_conf_t  *wc;

    wc = ngx_http_paygw_webhook_get(cf, pmcf);
    if (wc == NULL) {
        return NGX_CONF_ERROR;
    }

    if (wc->allow_loopback != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "on") == 0) {
        wc->allow_loopback = 1;

    } else if (ngx_strcmp(value[1].data, "off") == 0) {
        wc->allow_loopback = 0;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\", it must be \"on\" or "
                           "\"off\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * The secrets file: one merchant a line, its active secrets after it,
 * "#" starts a comment:
 *
 *     M100  whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw  [whsec_... ...]
 *
 * Several secrets sign side by side (rotation).
 */

char *
ngx_http_paygw_webhook_secrets(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_paygw_main_conf_t *pmcf = conf;

    char                           *rv;
    u_char                         *p, *nl, *last;
    ngx_str_t                      *value, text;
    ngx_uint_t                      line;
    ngx_http_paygw_webhook_conf_t  *wc;

    wc = ngx_http_paygw_webhook_get(cf, pmcf);
    if (wc == NULL) {
        return NGX_CONF_ERROR;
    }

    if (wc->secrets.nelts) {
        return "is duplicate";
    }

    value = cf->args->elts;

    rv = ngx_http_paygw_read_file(cf, &value[1], "webhook secrets",
                                  1024 * 1024, &text);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    p = text.data;
    last = text.data + text.len;

    for (line = 1; p < last; line++) {
        nl = ngx_strlchr(p, last, '\n');
        if (nl == NULL) {
            nl = last;
        }

        rv = ngx_http_paygw_webhook_secrets_line(cf, wc, p, nl, line);
        if (rv != NGX_CONF_OK) {
            return rv;
        }

        p = nl + 1;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_paygw_webhook_secrets_line(ngx_conf_t *cf,
    ngx_http_paygw_webhook_conf_t *wc, u_char *p, u_char *last,
    ngx_uint_t line)
{
    u_char                      *start, *hash;
    ngx_str_t                    word, key;
    ngx_http_paygw_wh_secret_t  *s;
    u_char                       buf[256];

    hash = ngx_strlchr(p, last, '#');
    if (hash) {
        last = hash;
    }

    s = NULL;

    for ( ;; ) {
        while (p < last && (*p == ' ' || *p == '\t' || *p == '\r')) {
            p++;
        }

        if (p == last) {
            break;
        }

        start = p;

        while (p < last && *p != ' ' && *p != '\t' && *p != '\r') {
            p++;
        }

        word.data = start;
        word.len = p - start;

        if (s == NULL) {
            s = ngx_array_push(&wc->secrets);
            if (s == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memzero(s, sizeof(ngx_http_paygw_wh_secret_t));
            s->merchant_id = word;
            continue;
        }

        /* the key is the base64 after "whsec_": it must decode */

        key.data = buf;

        if (s->nsecrets == NGX_HTTP_PAYGW_WH_MAX_SECRETS
            || word.len <= 6 || word.len > 6 + 340
            || ngx_strncmp(word.data, "whsec_", 6) != 0)
        {
            goto invalid;
        }

        word.data += 6;
        word.len -= 6;

        if (ngx_decode_base64(&key, &word) != NGX_OK || key.len < 16) {
            goto invalid;
        }

        word.data -= 6;
        word.len += 6;

        s->secrets[s->nsecrets++] = word;
    }

    if (s && s->nsecrets == 0) {
        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    /* never the secret itself in a message */

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "webhook secrets file, line %ui: a merchant id and "
                       "1-%d secrets \"whsec_<base64 of 16+ bytes>\" "
                       "expected", line, NGX_HTTP_PAYGW_WH_MAX_SECRETS);
    return NGX_CONF_ERROR;
}


ngx_int_t
ngx_http_paygw_webhook_check(ngx_conf_t *cf, ngx_http_paygw_main_conf_t *pmcf)
{
    ngx_http_paygw_webhook_conf_t  *wc;

    wc = pmcf->webhook;

    if (wc == NULL) {
        return NGX_OK;
    }

    if (wc->allow_loopback == NGX_CONF_UNSET) {
        wc->allow_loopback = 0;
    }

    if (wc->nretries == 0) {
        wc->nretries = sizeof(ngx_http_paygw_webhook_default_retry)
                       / sizeof(ngx_msec_t);
        ngx_memcpy(wc->retry, ngx_http_paygw_webhook_default_retry,
                   sizeof(ngx_http_paygw_webhook_default_retry));
    }

    if (wc->self.addr == NULL) {
        /* secrets without a sender: the events API still works */
        return NGX_OK;
    }

    wc->self.key = ngx_http_paygw_key_by_id(&pmcf->keys, &wc->key_id);

    if (wc->self.key == NULL
        || wc->self.key->role != NGX_HTTP_PAYGW_ROLE_ADMIN)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "paygw_webhook key \"%V\" is not an admin key of "
                      "paygw_keys", &wc->key_id);
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_http_paygw_webhook_conf_t *
ngx_http_paygw_webhook_conf(ngx_http_request_t *r)
{
    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_paygw_module);

    return pmcf->webhook;
}


ngx_http_paygw_wh_secret_t *
ngx_http_paygw_webhook_secret(ngx_http_paygw_webhook_conf_t *wc,
    ngx_str_t *merchant_id)
{
    ngx_uint_t                   i;
    ngx_http_paygw_wh_secret_t  *s;

    s = wc->secrets.elts;

    for (i = 0; i < wc->secrets.nelts; i++) {
        if (s[i].merchant_id.len == merchant_id->len
            && ngx_strncmp(s[i].merchant_id.data, merchant_id->data,
                           merchant_id->len) == 0)
        {
            return &s[i];
        }
    }

    return NULL;
}


/* the delay before the retry after attempt number "attempts", jittered */

ngx_msec_t
ngx_http_paygw_webhook_delay(ngx_http_paygw_webhook_conf_t *wc,
    ngx_uint_t attempts)
{
    ngx_msec_t  d, j;

    if (attempts == 0 || attempts > wc->nretries) {
        return (ngx_msec_t) NGX_ERROR;
    }

    d = wc->retry[attempts - 1];

    /* up to +10 %, so that a failed batch does not come back as one */

    j = d / 10;

    return j ? d + (ngx_msec_t) ngx_random() % (j + 1) : d;
}


/*
 * A space or control character would end up in the request line that
 * nginx writes (the URI goes as it is): a CR LF there is a second
 * request, and on a kept connection its answer could be read as another
 * delivery's.  Refused when the payment is created, and again here for
 * rows written before.
 */

ngx_uint_t
ngx_http_paygw_url_unsafe(ngx_str_t *url)
{
    u_char  *p;

    for (p = url->data; p < url->data + url->len; p++) {
        if (*p <= ' ' || *p == 0x7f) {
            return 1;
        }
    }

    return 0;
}


/*
 * The port after the host (the scheme's by default), and the path and
 * query the request goes to ($paygw_webhook_uri): "/" when the URL has
 * none, the fragment left out.  colon: the host's ':' or NULL.
 */

static ngx_int_t
ngx_http_paygw_webhook_port_uri(ngx_pool_t *pool,
    ngx_http_paygw_wh_event_t *ev, u_char *colon, u_char *end, u_char *last)
{
    u_char     *p, *uri;
    ngx_int_t   port;

    if (colon) {
        port = ngx_atoi(colon + 1, end - colon - 1);

        if (port < 1 || port > 65535) {
            ev->error = "not a valid port";
            return NGX_DECLINED;
        }

        ev->port = (in_port_t) port;
    }

    p = ngx_strlchr(end, last, '#');
    if (p) {
        last = p;
    }

    if (end < last && *end == '/') {
        ev->uri.data = end;
        ev->uri.len = last - end;
        return NGX_OK;
    }

    /* "https://host?q" is "https://host/?q" */

    uri = ngx_pnalloc(pool, last - end + 1);
    if (uri == NULL) {
        ev->error = "the request could not be made";
        return NGX_DECLINED;
    }

    uri[0] = '/';
    ngx_memcpy(uri + 1, end, last - end);

    ev->uri.data = uri;
    ev->uri.len = last - end + 1;

    return NGX_OK;
}


/*
 * Where an event may go: https:// (http:// only with allow_loopback)
 * to a host that is not a private, loopback, link-local or otherwise
 * special address.  An address literal is checked here (NGX_OK); a host
 * name (NGX_AGAIN) is resolved by the round with nginx's resolver, every
 * address it gives is checked, and the request goes to the checked
 * address (ngx_http_paygw_webhook_pin), so a second lookup cannot point
 * it elsewhere.  NGX_DECLINED: refused, ev->error says why.
 */

ngx_int_t
ngx_http_paygw_webhook_destination(ngx_http_paygw_webhook_conf_t *wc,
    ngx_http_paygw_wh_event_t *ev, ngx_pool_t *pool)
{
    u_char              *p, *last, *host, *end;
    size_t               len;
    in_addr_t            a;
    struct sockaddr_in   sin;

    p = ev->url.data;
    last = p + ev->url.len;

    if (ngx_http_paygw_url_unsafe(&ev->url)) {
        ev->error = "spaces and control characters are not allowed";
        return NGX_DECLINED;
    }

    if (ev->url.len > 8
        && ngx_strncasecmp(p, (u_char *) "https://", 8) == 0)
    {
        ngx_str_set(&ev->scheme, "https");
        ev->port = 443;
        p += 8;

    } else if (ev->url.len > 7
               && ngx_strncasecmp(p, (u_char *) "http://", 7) == 0)
    {
        if (!wc->allow_loopback) {
            ev->error = "only https:// destinations are allowed";
            return NGX_DECLINED;
        }

        ngx_str_set(&ev->scheme, "http");
        ev->port = 80;
        p += 7;

    } else {
        ev->error = "not an http(s) URL";
        return NGX_DECLINED;
    }

    host = p;

    while (p < last && *p != '/' && *p != '?' && *p != '#') {
        if (*p == '@' || *p == '\\' || *p <= ' ' || *p >= 0x7f
            || *p == '[')
        {
            ev->error = "user info, IPv6 literals and odd characters are "
                        "not allowed";
            return NGX_DECLINED;
        }

        p++;
    }

    end = p;

    p = ngx_strlchr(host, end, ':');
    len = (p ? p : end) - host;

    if (len == 0) {
        ev->error = "no host";
        return NGX_DECLINED;
    }

    ev->authority.data = host;
    ev->authority.len = end - host;
    ev->host.data = host;
    ev->host.len = len;

    if (ngx_http_paygw_webhook_port_uri(pool, ev, p, end, last) != NGX_OK) {
        return NGX_DECLINED;
    }

    a = ngx_inet_addr(host, len);

    if (a != INADDR_NONE) {
        ngx_memzero(&sin, sizeof(struct sockaddr_in));
        sin.sin_family = AF_INET;
        sin.sin_addr.s_addr = a;
        sin.sin_port = htons(ev->port);

        ev->error = ngx_http_paygw_webhook_address(wc,
                                                   (struct sockaddr *) &sin);
        if (ev->error) {
            return NGX_DECLINED;
        }

        ngx_memcpy(&ev->sockaddr, &sin, sizeof(struct sockaddr_in));
        ev->socklen = sizeof(struct sockaddr_in);

        return NGX_OK;
    }

    if ((len == 9 && ngx_strncasecmp(host, (u_char *) "localhost", 9) == 0)
        || (len > 10
            && ngx_strncasecmp(host + len - 10, (u_char *) ".localhost", 10)
               == 0)
        || (len > 6
            && ngx_strncasecmp(host + len - 6, (u_char *) ".local", 6) == 0)
        || (len > 9
            && ngx_strncasecmp(host + len - 9, (u_char *) ".internal", 9)
               == 0)
        || ngx_strlchr(host, host + len, '.') == NULL)
    {
        ev->error = "a local host name is not allowed";
        return NGX_DECLINED;
    }

    /* a name made only of digits and dots is an odd IPv4 form */

    for (p = host; p < host + len; p++) {
        if (!(*p >= '0' && *p <= '9') && *p != '.') {
            return NGX_AGAIN;
        }
    }

    ev->error = "not a valid host";

    return NGX_DECLINED;
}


/* NULL: a public address; else why it is not allowed */

const char *
ngx_http_paygw_webhook_address(ngx_http_paygw_webhook_conf_t *wc,
    struct sockaddr *sa)
{
    in_addr_t             a;
#if (NGX_HAVE_INET6)
    u_char               *b;
    struct sockaddr_in6  *sin6;
#endif

    switch (sa->sa_family) {

#if (NGX_HAVE_INET6)
    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) sa;
        b = sin6->sin6_addr.s6_addr;

        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            a = (b[12] << 24) | (b[13] << 16) | (b[14] << 8) | b[15];
            goto ipv4;
        }

        if (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr)) {
            return wc->allow_loopback ? NULL
                                      : "a loopback address is not allowed";
        }

        /* global unicast 2000::/3, but not documentation 2001:db8::/32 */

        if ((b[0] & 0xe0) != 0x20
            || (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8))
        {
            return "a private or special address is not allowed";
        }

        return NULL;
#endif

    case AF_INET:
        a = ntohl(((struct sockaddr_in *) sa)->sin_addr.s_addr);
        goto ipv4;

    default:
        return "not an IP address";
    }

ipv4:

    if ((a >> 24) == 127) {
        return wc->allow_loopback ? NULL : "a loopback address is not allowed";
    }

    if ((a >> 24) == 0 || (a >> 24) == 10
        || (a & 0xffc00000) == 0x64400000              /* 100.64/10 */
        || (a & 0xffff0000) == 0xa9fe0000              /* 169.254/16 */
        || (a & 0xfff00000) == 0xac100000              /* 172.16/12 */
        || (a & 0xffff0000) == 0xc0a80000              /* 192.168/16 */
        || (a & 0xffffff00) == 0xc0000000              /* 192.0.0/24 */
        || (a & 0xffffff00) == 0xc0000200              /* 192.0.2/24 */
        || (a & 0xfffe0000) == 0xc6120000              /* 198.18/15 */
        || (a & 0xffffff00) == 0xc6336400              /* 198.51.100/24 */
        || (a & 0xffffff00) == 0xcb007100              /* 203.0.113/24 */
        || (a >> 28) >= 0xe)                           /* multicast, 240/4 */
    {
        return "a private or special address is not allowed";
    }

    return NULL;
}


/* the URL with the checked address in place of the host name */

ngx_int_t
ngx_http_paygw_webhook_pin(ngx_pool_t *pool, ngx_http_paygw_wh_event_t *ev,
    struct sockaddr *sa, socklen_t len)
{
    u_char  *p, *rest;
    size_t   n, scheme;
    u_char   text[NGX_SOCKADDR_STRLEN];

    if (len > sizeof(ngx_sockaddr_t)) {
        return NGX_ERROR;
    }

    /* the balancer's address (ngx_http_paygw_webhook_peer.c) */

    ngx_memcpy(&ev->sockaddr, sa, len);
    ev->socklen = len;
    ngx_inet_set_port(&ev->sockaddr.sockaddr, ev->port);

    n = ngx_sock_ntop(sa, len, text, NGX_SOCKADDR_STRLEN, 0);

    scheme = ev->host.data - ev->url.data;
    rest = ev->host.data + ev->host.len;

    p = ngx_pnalloc(pool, ev->url.len + n + 2);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ev->url.data = ngx_cpymem(p, ev->url.data, scheme);

    if (sa->sa_family == AF_INET6) {
        *ev->url.data++ = '[';
    }

    ev->url.data = ngx_cpymem(ev->url.data, text, n);

    if (sa->sa_family == AF_INET6) {
        *ev->url.data++ = ']';
    }

    ev->url.data = ngx_cpymem(ev->url.data, rest,
                              ev->url.len - (rest - (ev->host.data - scheme)));
    ev->url.len = ev->url.data - p;
    ev->url.data = p;

    return NGX_OK;
}


/* $paygw_webhook_url: the destination of the webhook subrequest */

ngx_int_t
ngx_http_paygw_webhook_add_variables(ngx_conf_t *cf)
{
    ngx_uint_t            i;
    ngx_http_variable_t  *var;

    for (i = 0; i < sizeof(ngx_http_paygw_webhook_vars)
                    / sizeof(ngx_http_paygw_webhook_vars[0]); i++)
    {
        var = ngx_http_add_variable(cf, &ngx_http_paygw_webhook_vars[i].name,
                                    NGX_HTTP_VAR_NOCACHEABLE);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = ngx_http_paygw_webhook_variable;
        var->data = ngx_http_paygw_webhook_vars[i].offset;
    }

    return NGX_OK;
}


/*
 * $paygw_webhook_url (with the checked address in place of a name),
 * $paygw_webhook_host (the name: proxy_ssl_name),
 * $paygw_webhook_authority (host[:port]: the Host header), and for the
 * balancer (proxy_pass $paygw_webhook_scheme://UPSTREAM$paygw_webhook_uri)
 * $paygw_webhook_scheme and $paygw_webhook_uri (path and query)
 */

static ngx_int_t
ngx_http_paygw_webhook_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                  *s;
    ngx_http_paygw_wh_event_t  *ev;

    ev = ngx_http_paygw_call_ctx(r, NGX_HTTP_PAYGW_CALL_WEBHOOK);

    if (ev == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = (ngx_str_t *) ((u_char *) ev + data);

    v->data = s->data;
    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* the ticker */

ngx_int_t
ngx_http_paygw_webhook_init_process(ngx_cycle_t *cycle)
{
    ngx_msec_t                      first;
    ngx_http_paygw_main_conf_t     *pmcf;
    ngx_http_paygw_webhook_conf_t  *wc;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_paygw_module);

    wc = pmcf ? pmcf->webhook : NULL;

    /* every worker: the leases keep them from sending the same event */

    if (wc == NULL || wc->self.addr == NULL
        || ngx_process != NGX_PROCESS_WORKER)
    {
        return NGX_OK;
    }

    wc->self.name = "paygw webhook";
    wc->self.timeout = NGX_HTTP_PAYGW_WH_TIMEOUT;
    ngx_str_set(&wc->self.uri, "/v1/admin/webhooks/deliver");
    ngx_str_set(&wc->self.headers, "Host: paygw-webhooks\r\n");
    ngx_str_set(&wc->self.idem_prefix, "deliver");
    ngx_str_set(&wc->self.body, "{}");
    wc->self.answer = ngx_http_paygw_webhook_answer;
    wc->self.next = ngx_http_paygw_webhook_next;
    wc->self.data = wc;

    /*
     * Spread the workers' first rounds, unless a reload kept events
     * handed off to the previous workers: they go out now.
     */

    first = ngx_http_paygw_handoff_waiting(cycle)
            ? ngx_min(wc->self.interval, NGX_HTTP_PAYGW_HO_DELAY)
            : wc->self.interval / 2 + ngx_random() % wc->self.interval;

    return ngx_http_paygw_self_start(&wc->self, cycle, first);
}


/* {"claimed":N,...}: a full batch means more is waiting */

static void
ngx_http_paygw_webhook_answer(ngx_http_paygw_self_t *self, u_char *text)
{
    u_char                         *p;
    ngx_uint_t                      k;
    ngx_http_paygw_webhook_conf_t  *wc;

    wc = self->data;

    p = (u_char *) ngx_strstr(text, "\"claimed\":");
    if (p == NULL) {
        return;
    }

    p += sizeof("\"claimed\":") - 1;

    for (k = 0; *p >= '0' && *p <= '9'; p++) {
        k = k * 10 + (*p - '0');
    }

    wc->claimed = k;
}


static ngx_msec_t
ngx_http_paygw_webhook_next(ngx_http_paygw_self_t *self, ngx_uint_t failed)
{
    ngx_uint_t                      claimed;
    ngx_http_paygw_webhook_conf_t  *wc;

    wc = self->data;

    claimed = wc->claimed;
    wc->claimed = 0;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, self->log, 0,
                   "paygw webhook: the round claimed %ui", claimed);

    if (!failed && claimed >= wc->batch) {
        return 1;
    }

    /* events handed off since the round started */

    if (ngx_http_paygw_handoff_waiting((ngx_cycle_t *) ngx_cycle)) {
        return ngx_min(self->interval, NGX_HTTP_PAYGW_HO_DELAY);
    }

    return self->interval;
}
