
/*
 * paygw: payment channels and provider calls.
 *
 *     paygw_channel NAME [provider=PROVIDER] location=URI
 *                   [provider's parameters]
 *                   [attempts=3] [unknown_grace=60s] [breaker_failures=3]
 *                   [breaker_timeout=30s] [fallback=CHANNEL];
 *
 * NAME is the channel's name in the API and in metrics; the provider
 * (ngx_http_paygw_providers.c) is NAME itself unless provider= names
 * it, so several channels may use one provider.  The provider's
 * parameters (keys, ids) are read by the provider's own conf handler:
 * ngx_http_paygw_bank.c, _alipay.c, _wechat.c.
 *
 * A provider is reached by a subrequest to the internal location URI
 * (plus the provider's path), whose proxy_pass names an nginx upstream:
 * TLS, keepalive, load balancing and per-try timeouts (proxy_*_timeout)
 * are nginx's.  The subrequest carries our method, body and headers and
 * keeps the provider's answer in memory (subrequest_output_buffer_size
 * bounds it).
 */


#include "ngx_http_paygw_channel.h"
#include "ngx_http_paygw_metrics.h"
#include "ngx_http_paygw_crypto.h"
#include "ngx_http_paygw_trace.h"
#include "ngx_http_paygw_mysql.h"


/* its loc conf begins with ngx_http_upstream_conf_t, in every version */
extern ngx_module_t  ngx_http_proxy_module;


static ngx_http_paygw_channel_t *ngx_http_paygw_channel_add(ngx_conf_t *cf,
    ngx_http_paygw_main_conf_t *pmcf, ngx_str_t *name);
static ngx_http_paygw_provider_t *ngx_http_paygw_channel_provider(
    ngx_conf_t *cf);
static char *ngx_http_paygw_channel_param(ngx_conf_t *cf,
    ngx_http_paygw_channel_t *ch, ngx_str_t *param);
static char *ngx_http_paygw_channel_fallback(ngx_conf_t *cf,
    ngx_http_paygw_main_conf_t *pmcf, ngx_http_paygw_channel_t *ch);
static char *ngx_http_paygw_channel_secret(ngx_conf_t *cf,
    ngx_http_paygw_channel_t *ch, ngx_str_t *file);
static void ngx_http_paygw_pem_free(void *data);
static ngx_http_core_loc_conf_t *ngx_http_paygw_channel_loc(
    ngx_http_location_tree_node_t *node, ngx_str_t *uri,
    ngx_http_core_loc_conf_t *best);
static ngx_int_t ngx_http_paygw_provider_done(ngx_http_request_t *r,
    void *data, ngx_int_t rc);
static ngx_int_t ngx_http_paygw_provider_headers(ngx_http_request_t *sr,
    ngx_http_paygw_provider_call_t *pc);
static ngx_int_t ngx_http_paygw_provider_body(ngx_http_request_t *r,
    ngx_http_request_t *sr, ngx_http_paygw_provider_call_t *pc);


char *
ngx_http_paygw_channel(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_main_conf_t *pmcf = conf;

    char                      *rv;
    u_char                    *p, c;
    ngx_str_t                 *value;
    ngx_uint_t                 i;
    ngx_http_paygw_channel_t  *ch;

    value = cf->args->elts;

    ch = ngx_http_paygw_channel_add(cf, pmcf, &value[1]);
    if (ch == NULL) {
        return NGX_CONF_ERROR;
    }

    ch->provider = ngx_http_paygw_channel_provider(cf);
    if (ch->provider == NULL) {
        return NGX_CONF_ERROR;
    }

    /*
     * A URI segment (/v1/notify/NAME) and a metrics label; "other" is
     * the label of the names no configuration knows.
     */

    for (p = ch->name.data; p < ch->name.data + ch->name.len; p++) {
        c = ngx_tolower(*p);

        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
              || c == '_' || c == '-'))
        {
            break;
        }
    }

    if (ch->name.len > NGX_HTTP_PAYGW_CHANNEL_NAME_LEN
        || p != ch->name.data + ch->name.len
        || ngx_http_paygw_is(&ch->name, "other"))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid channel name \"%V\": up to %d letters, "
                           "digits, \"_\" and \"-\"", &ch->name,
                           NGX_HTTP_PAYGW_CHANNEL_NAME_LEN);
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        rv = ngx_http_paygw_channel_param(cf, ch, &value[i]);

        if (rv == NGX_CONF_OK) {
            continue;
        }

        if (rv == (char *) NGX_DECLINED && ch->provider->conf) {
            rv = ch->provider->conf(cf, ch, &value[i]);
        }

        if (rv == NGX_CONF_OK) {
            continue;
        }

        if (rv == (char *) NGX_DECLINED) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\"", &value[i]);
        }

        return NGX_CONF_ERROR;
    }

    if (ch->location.len == 0 || ch->location.data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "paygw_channel \"%V\" needs location=/...",
                           &ch->name);
        return NGX_CONF_ERROR;
    }

    rv = ch->provider->check(cf, ch);

    if (rv != NGX_CONF_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "paygw_channel \"%V\" %s",
                           &ch->name, rv);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* a new channel, its name unique among NGX_HTTP_PAYGW_MAX_CHANNELS */

static ngx_http_paygw_channel_t *
ngx_http_paygw_channel_add(ngx_conf_t *cf, ngx_http_paygw_main_conf_t *pmcf,
    ngx_str_t *name)
{
    ngx_uint_t                 i;
    ngx_http_paygw_channel_t  *ch;

    if (pmcf->channels.elts == NULL
        && ngx_array_init(&pmcf->channels, cf->pool, 3,
                          sizeof(ngx_http_paygw_channel_t))
           != NGX_OK)
    {
        return NULL;
    }

    ch = pmcf->channels.elts;

    for (i = 0; i < pmcf->channels.nelts; i++) {
        if (ch[i].name.len == name->len
            && ngx_strncmp(ch[i].name.data, name->data, name->len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"paygw_channel\" directive is duplicate");
            return NULL;
        }
    }

    if (pmcf->channels.nelts == NGX_HTTP_PAYGW_MAX_CHANNELS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many channels: at most %d",
                           NGX_HTTP_PAYGW_MAX_CHANNELS);
        return NULL;
    }

    ch = ngx_array_push(&pmcf->channels);
    if (ch == NULL) {
        return NULL;
    }

    ngx_memzero(ch, sizeof(ngx_http_paygw_channel_t));

    ch->name = *name;
    ch->attempts = 3;
    ch->unknown_grace = 60;
    ch->breaker_failures = 3;
    ch->breaker_timeout = 30000;

    return ch;
}


/*
 * unknown_grace against the retry budget, once the locations are merged
 * (postconfiguration).  A provider that has no trace of a charge counts
 * it as never made only when the request that made it must be over: its
 * insert (MySQL connect + query timeouts) and every try (the channel
 * location's proxy_connect_timeout + proxy_read_timeout).  A grace given
 * shorter than that fails "nginx -t"; the default grows to it.
 */

ngx_int_t
ngx_http_paygw_channels_budget(ngx_conf_t *cf)
{
    u_char                       *p;
    ngx_str_t                     uri;
    ngx_msec_t                    db, try, budget;
    ngx_uint_t                    i, s;
    ngx_http_upstream_conf_t     *ucf;
    ngx_http_core_srv_conf_t    **cscfp;
    ngx_http_core_loc_conf_t     *clcf, *found;
    ngx_http_core_main_conf_t    *cmcf;
    ngx_http_paygw_channel_t     *ch;
    ngx_http_paygw_mysql_srv_t  **srv;
    ngx_http_paygw_main_conf_t   *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_paygw_module);
    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    db = 0;
    srv = pmcf->mysql_servers.elts;

    for (i = 0; i < pmcf->mysql_servers.nelts; i++) {
        db = ngx_max(db, srv[i]->connect_timeout + srv[i]->query_timeout);
    }

    ch = pmcf->channels.elts;
    cscfp = cmcf->servers.elts;

    for (i = 0; i < pmcf->channels.nelts; i++) {

        /* the provider's paths are appended to the location URI */

        uri.len = ch[i].location.len + 1;
        uri.data = ngx_pnalloc(cf->temp_pool, uri.len);
        if (uri.data == NULL) {
            return NGX_ERROR;
        }

        p = ngx_cpymem(uri.data, ch[i].location.data, ch[i].location.len);
        *p = '/';

        try = 0;

        for (s = 0; s < cmcf->servers.nelts; s++) {
            clcf = cscfp[s]->ctx->loc_conf[ngx_http_core_module.ctx_index];

            found = ngx_http_paygw_channel_loc(clcf->static_locations, &uri,
                                               NULL);
            if (found == NULL) {
                continue;
            }

            ucf = found->loc_conf[ngx_http_proxy_module.ctx_index];

            try = ngx_max(try, ucf->connect_timeout + ucf->read_timeout);
        }

        if (try == 0) {
            continue;
        }

        budget = db + ch[i].attempts * try;

        /* the idempotency lock must outlive the longest create */

        pmcf->create_budget = ngx_max(pmcf->create_budget, 2 * db + budget);

        if ((ngx_msec_t) ch[i].unknown_grace * 1000 >= budget) {
            continue;
        }

        if (ch[i].grace_set) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "paygw_channel \"%V\": unknown_grace=%Ts is "
                          "shorter than the time its create may still run "
                          "(%M ms: MySQL connect + query timeouts, and "
                          "attempts=%ui x (proxy_connect_timeout + "
                          "proxy_read_timeout) of %V)",
                          &ch[i].name, ch[i].unknown_grace, budget,
                          ch[i].attempts, &ch[i].location);
            return NGX_ERROR;
        }

        ch[i].unknown_grace = (time_t) ((budget + 999) / 1000);

        ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                      "paygw_channel \"%V\": unknown_grace raised to %Ts, "
                      "the time its create may still run",
                      &ch[i].name, ch[i].unknown_grace);
    }

    return NGX_OK;
}


/* the longest prefix location that a URI under the channel's reaches */

static ngx_http_core_loc_conf_t *
ngx_http_paygw_channel_loc(ngx_http_location_tree_node_t *node,
    ngx_str_t *uri, ngx_http_core_loc_conf_t *best)
{
    ngx_http_core_loc_conf_t  *clcf;

    if (node == NULL) {
        return best;
    }

    clcf = node->inclusive;

    if (clcf && clcf->name.len <= uri->len
        && ngx_strncmp(clcf->name.data, uri->data, clcf->name.len) == 0
        && (best == NULL || clcf->name.len > best->name.len))
    {
        best = clcf;
    }

    best = ngx_http_paygw_channel_loc(node->left, uri, best);
    best = ngx_http_paygw_channel_loc(node->right, uri, best);

    return ngx_http_paygw_channel_loc(node->tree, uri, best);
}


/* provider=PROVIDER among the parameters, or else the channel's name */

static ngx_http_paygw_provider_t *
ngx_http_paygw_channel_provider(ngx_conf_t *cf)
{
    u_char                     *last;
    ngx_str_t                  *value, name;
    ngx_uint_t                  i, given;
    ngx_http_paygw_provider_t  *pv;
    u_char                      names[128];

    value = cf->args->elts;
    name = value[1];
    given = 0;

    for (i = 2; i < cf->args->nelts; i++) {
        if (value[i].len > 9
            && ngx_strncmp(value[i].data, "provider=", 9) == 0)
        {
            name.data = value[i].data + 9;
            name.len = value[i].len - 9;
            given = 1;
        }
    }

    pv = ngx_http_paygw_provider_find(&name);
    if (pv) {
        return pv;
    }

    last = ngx_http_paygw_provider_names(names, names + sizeof(names));

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "unknown %s \"%V\": %*s",
                       given ? "provider" : "channel", &name,
                       last - names, names);

    return NULL;
}


/*
 * The parameters every channel has.  NGX_CONF_OK: taken; NGX_DECLINED:
 * not one of these; NGX_CONF_ERROR: taken and wrong (already said).
 */

static char *
ngx_http_paygw_channel_param(ngx_conf_t *cf, ngx_http_paygw_channel_t *ch,
    ngx_str_t *param)
{
    ngx_int_t   n;
    ngx_str_t   v;

#define ngx_paygw_is(name)                                                   \
    (param->len >= sizeof(name) - 1                                          \
     && ngx_strncmp(param->data, name, sizeof(name) - 1) == 0                \
     && (v.data = param->data + sizeof(name) - 1,                            \
         v.len = param->len - (sizeof(name) - 1), 1))

    if (ngx_paygw_is("provider=")) {
        return NGX_CONF_OK;             /* ngx_http_paygw_channel_provider */
    }

    if (ngx_paygw_is("location=")) {
        ch->location = v;
        return NGX_CONF_OK;
    }

    if (ngx_paygw_is("merchant_id=")) {
        ch->merchant = v;
        return NGX_CONF_OK;
    }

    if (ngx_paygw_is("app_id=")) {
        ch->app_id = v;
        return NGX_CONF_OK;
    }

    if (ngx_paygw_is("notify_url=")) {
        ch->notify_url = v;
        return NGX_CONF_OK;
    }

    if (ngx_paygw_is("fallback=")) {
        ch->fallback_name = v;
        return NGX_CONF_OK;
    }

    if (ngx_paygw_is("secret_file=")) {
        return ngx_http_paygw_channel_secret(cf, ch, &v);
    }

    if (ngx_paygw_is("attempts=")) {
        n = ngx_atoi(v.data, v.len);
        if (n < 1 || n > 10) {
            goto invalid;
        }

        ch->attempts = n;
        return NGX_CONF_OK;
    }

    if (ngx_paygw_is("breaker_failures=")) {
        n = ngx_atoi(v.data, v.len);
        if (n < 0) {
            goto invalid;
        }

        ch->breaker_failures = n;
        return NGX_CONF_OK;
    }

    if (ngx_paygw_is("breaker_timeout=")) {
        ch->breaker_timeout = ngx_parse_time(&v, 0);
        if (ch->breaker_timeout == (ngx_msec_t) NGX_ERROR
            || ch->breaker_timeout == 0)
        {
            goto invalid;
        }

        return NGX_CONF_OK;
    }

    if (ngx_paygw_is("unknown_grace=")) {
        ch->unknown_grace = ngx_parse_time(&v, 1);
        if (ch->unknown_grace == (time_t) NGX_ERROR) {
            goto invalid;
        }

        ch->grace_set = 1;

        return NGX_CONF_OK;
    }

#undef ngx_paygw_is

    return (char *) NGX_DECLINED;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"",
                       param);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_paygw_channel_secret(ngx_conf_t *cf, ngx_http_paygw_channel_t *ch,
    ngx_str_t *file)
{
    char  *rv;

    rv = ngx_http_paygw_read_secret(cf, file, "secret_file", &ch->secret);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (ch->secret.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "secret_file \"%V\" is empty", file);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * After the http block: each channel gets its slot in paygw_zone (the
 * fixed one of its name, or the next free one), and a fallback names
 * another configured channel of the same kind of payment (QR codes: a
 * card payment cannot become one).
 */

char *
ngx_http_paygw_channels_init(ngx_conf_t *cf, ngx_http_paygw_main_conf_t *pmcf)
{
    ngx_int_t                  fixed;
    ngx_uint_t                 i, next;
    ngx_http_paygw_channel_t  *ch;

    ngx_http_paygw_provider_slots(pmcf->slot_names);

    ch = pmcf->channels.elts;
    next = NGX_HTTP_PAYGW_FIXED_SLOTS;

    for (i = 0; i < pmcf->channels.nelts; i++) {
        fixed = ngx_http_paygw_provider_slot(&ch[i].name);

        ch[i].slot = (fixed == NGX_DECLINED) ? next++ : (ngx_uint_t) fixed;
        pmcf->slot_names[ch[i].slot] = ch[i].name;
    }

    for (i = 0; i < pmcf->channels.nelts; i++) {
        if (ngx_http_paygw_channel_fallback(cf, pmcf, &ch[i])
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_paygw_channel_fallback(ngx_conf_t *cf,
    ngx_http_paygw_main_conf_t *pmcf, ngx_http_paygw_channel_t *ch)
{
    ngx_uint_t                 j;
    ngx_http_paygw_channel_t  *other;

    if (ch->fallback_name.len == 0) {
        return NGX_CONF_OK;
    }

    other = pmcf->channels.elts;

    for (j = 0; j < pmcf->channels.nelts; j++) {
        if (&other[j] != ch
            && other[j].name.len == ch->fallback_name.len
            && ngx_strncmp(other[j].name.data, ch->fallback_name.data,
                           other[j].name.len) == 0)
        {
            ch->fallback = &other[j];
        }
    }

    if (ch->fallback == NULL
        || ch->provider->kind != NGX_HTTP_PAYGW_KIND_QR
        || ch->fallback->provider->kind != NGX_HTTP_PAYGW_KIND_QR)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "paygw_channel \"%V\": fallback=%V must name "
                           "another configured QR channel (alipay, "
                           "wechat)", &ch->name, &ch->fallback_name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* a key file named by a directive, read and parsed at configuration time */

char *
ngx_http_paygw_conf_pem(ngx_conf_t *cf, ngx_str_t *path,
    ngx_uint_t private_key, EVP_PKEY **key)
{
    char                *rv;
    ngx_str_t            file, text;
    ngx_pool_cleanup_t  *cln;

    file = *path;

    rv = ngx_http_paygw_read_file(cf, &file,
                                  private_key ? "private key" : "public key",
                                  64 * 1024, &text);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_CONF_ERROR;
    }

    *key = ngx_http_paygw_pem_key(&text, private_key);

    ngx_explicit_memzero(text.data, text.len);

    if (*key == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" is not a PEM %s", &file,
                           private_key ? "private key (PKCS#8 or PKCS#1)"
                                       : "public key (SubjectPublicKeyInfo)");
        return NGX_CONF_ERROR;
    }

    if (EVP_PKEY_get_base_id(*key) != EVP_PKEY_RSA
        || EVP_PKEY_get_bits(*key) < 2048)
    {
        EVP_PKEY_free(*key);
        *key = NULL;
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" is not an RSA key of 2048 bits or more",
                           &file);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_paygw_pem_free;
    cln->data = *key;

    return NGX_CONF_OK;
}


static void
ngx_http_paygw_pem_free(void *data)
{
    EVP_PKEY_free(data);
}


ngx_http_paygw_channel_t *
ngx_http_paygw_channel_find(ngx_http_request_t *r, ngx_str_t *name)
{
    ngx_uint_t                   i;
    ngx_http_paygw_channel_t    *ch;
    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_paygw_module);

    ch = pmcf->channels.elts;

    for (i = 0; i < pmcf->channels.nelts; i++) {
        if (ch[i].name.len == name->len
            && ngx_strncmp(ch[i].name.data, name->data, name->len) == 0)
        {
            return &ch[i];
        }
    }

    return NULL;
}


/*
 * At configuration time, for paygw_policy: a provider's name, or a
 * channel configured before.
 */

ngx_int_t
ngx_http_paygw_channel_known(ngx_conf_t *cf, ngx_str_t *name)
{
    ngx_uint_t                   i;
    ngx_http_paygw_channel_t    *ch;
    ngx_http_paygw_main_conf_t  *pmcf;

    if (ngx_http_paygw_provider_find(name)) {
        return NGX_OK;
    }

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_paygw_module);

    ch = pmcf->channels.elts;

    for (i = 0; i < pmcf->channels.nelts; i++) {
        if (ch[i].name.len == name->len
            && ngx_strncmp(ch[i].name.data, name->data, name->len) == 0)
        {
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


ngx_http_paygw_provider_call_t *
ngx_http_paygw_provider_create(ngx_http_request_t *r, const char *method)
{
    ngx_http_paygw_provider_call_t  *pc;

    pc = ngx_pcalloc(r->pool, sizeof(ngx_http_paygw_provider_call_t));
    if (pc == NULL) {
        return NULL;
    }

    if (ngx_array_init(&pc->headers, r->pool, 6, sizeof(ngx_keyval_t))
        != NGX_OK)
    {
        return NULL;
    }

    pc->call.kind = NGX_HTTP_PAYGW_CALL_PROVIDER;
    pc->method.data = (u_char *) method;
    pc->method.len = ngx_strlen(method);

    return pc;
}


ngx_int_t
ngx_http_paygw_provider_header(ngx_http_request_t *r,
    ngx_http_paygw_provider_call_t *pc, const char *name, ngx_str_t *value)
{
    ngx_keyval_t  *kv;

    kv = ngx_array_push(&pc->headers);
    if (kv == NULL) {
        return NGX_ERROR;
    }

    kv->key.data = (u_char *) name;
    kv->key.len = ngx_strlen(name);
    kv->value = *value;

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_provider_send(ngx_http_request_t *r,
    ngx_http_paygw_channel_t *ch, ngx_http_paygw_provider_call_t *pc)
{
    u_char                      *p, *q;
    ngx_str_t                    uri, args, tp;
    ngx_http_request_t          *sr;
    ngx_http_post_subrequest_t  *ps;

    /* the trace goes on to the provider */

    if (ngx_http_paygw_traceparent(r, &tp) != NGX_OK
        || ngx_http_paygw_provider_header(r, pc, "traceparent", &tp)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    uri.len = ch->location.len + pc->path.len;
    uri.data = ngx_pnalloc(r->pool, uri.len);
    if (uri.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(uri.data, ch->location.data, ch->location.len);
    ngx_memcpy(p, pc->path.data, pc->path.len);

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_ERROR;
    }

    ps->handler = ngx_http_paygw_provider_done;
    ps->data = pc;

    pc->call.done = 0;
    pc->call.ok = 0;
    pc->call.status = 0;
    pc->status = 0;
    pc->channel = ch->name;
    pc->ch = ch;
    pc->start = ngx_current_msec;
    ngx_str_null(&pc->response);

    /* a query string is the subrequest's args, or nginx would escape it */

    q = ngx_strlchr(uri.data, uri.data + uri.len, '?');

    if (q) {
        args.data = q + 1;
        args.len = uri.data + uri.len - args.data;
        uri.len = q - uri.data;
    }

    if (ngx_http_subrequest(r, &uri, q ? &args : NULL, &sr, ps,
                            pc->stream ? NGX_HTTP_SUBREQUEST_WAITED
                                       : NGX_HTTP_SUBREQUEST_IN_MEMORY
                                         |NGX_HTTP_SUBREQUEST_WAITED)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    pc->call.sr = sr;
    pc->call.started = 1;

    sr->method = (pc->method.len == 4) ? NGX_HTTP_POST : NGX_HTTP_GET;
    sr->method_name = pc->method;

    /* the client's headers and body are not the provider's business */

    if (ngx_http_paygw_provider_headers(sr, pc) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_paygw_provider_body(r, sr, pc);
}


/* the call's own body, or none: never the client's */

static ngx_int_t
ngx_http_paygw_provider_body(ngx_http_request_t *r, ngx_http_request_t *sr,
    ngx_http_paygw_provider_call_t *pc)
{
    ngx_buf_t                *b;
    ngx_http_request_body_t  *rb;

    sr->headers_in.chunked = 0;
    sr->headers_in.content_length = NULL;
    sr->headers_in.transfer_encoding = NULL;
    sr->request_body = NULL;
    sr->headers_in.content_length_n = -1;

    if (pc->body.len) {
        rb = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
        b = ngx_calloc_buf(r->pool);
        if (rb == NULL || b == NULL) {
            return NGX_ERROR;
        }

        b->pos = pc->body.data;
        b->last = pc->body.data + pc->body.len;
        b->start = b->pos;
        b->end = b->last;
        b->memory = 1;
        b->last_buf = 1;

        rb->bufs = ngx_alloc_chain_link(r->pool);
        if (rb->bufs == NULL) {
            return NGX_ERROR;
        }

        rb->bufs->buf = b;
        rb->bufs->next = NULL;
        rb->buf = b;

        sr->request_body = rb;
        sr->headers_in.content_length_n = pc->body.len;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_provider_headers(ngx_http_request_t *sr,
    ngx_http_paygw_provider_call_t *pc)
{
    ngx_uint_t        i;
    ngx_keyval_t     *kv;
    ngx_table_elt_t  *h;

    if (ngx_list_init(&sr->headers_in.headers, sr->pool,
                      pc->headers.nelts + 1, sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    kv = pc->headers.elts;

    for (i = 0; i < pc->headers.nelts; i++) {
        h = ngx_list_push(&sr->headers_in.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->key = kv[i].key;
        h->value = kv[i].value;

        h->lowcase_key = ngx_pnalloc(sr->pool, h->key.len);
        if (h->lowcase_key == NULL) {
            return NGX_ERROR;
        }

        h->hash = ngx_hash_strlow(h->lowcase_key, h->key.data, h->key.len);
#if (nginx_version >= 1023000)
        h->next = NULL;
#endif
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_provider_done(ngx_http_request_t *r, void *data, ngx_int_t rc)
{
    ngx_http_paygw_provider_call_t *pc = data;

    ngx_buf_t  *b;

    if (pc->call.done) {
        return rc;
    }

    pc->call.done = 1;

    /*
     * The client went away (its connection is gone): the provider call
     * was cut short by us, which says nothing of the provider's health.
     */

    if (r->connection->error || rc == NGX_HTTP_CLIENT_CLOSED_REQUEST) {
        ngx_http_paygw_call_fail(&pc->call, r->pool,
                                 NGX_HTTP_CLIENT_CLOSED_REQUEST,
                                 "client closed the request");
        return rc;
    }

    /* nginx answered for the provider: it could not be reached */

    if (rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE
        || r->upstream == NULL || r->headers_out.status == 0)
    {
        ngx_http_paygw_m_channel(r, &pc->channel,
                                 rc == NGX_HTTP_GATEWAY_TIME_OUT
                                 ? NGX_HTTP_PAYGW_M_RESULT_TIMEOUT
                                 : NGX_HTTP_PAYGW_M_RESULT_UNREACHABLE,
                                 ngx_current_msec - pc->start);
        ngx_http_paygw_breaker_record(r, pc->ch, 1);

        ngx_http_paygw_call_fail(&pc->call, r->pool,
                                 rc == NGX_HTTP_GATEWAY_TIME_OUT
                                 ? NGX_HTTP_GATEWAY_TIME_OUT
                                 : NGX_HTTP_BAD_GATEWAY,
                                 "provider %s (%i)",
                                 rc == NGX_HTTP_GATEWAY_TIME_OUT
                                 ? "timed out" : "unreachable", rc);
        return rc;
    }

    pc->status = r->headers_out.status;
    pc->response_headers = &r->headers_out.headers;

    ngx_http_paygw_m_channel(r, &pc->channel,
                             pc->status >= 500
                             ? NGX_HTTP_PAYGW_M_RESULT_SERVER_ERROR
                             : pc->status >= 400
                               ? NGX_HTTP_PAYGW_M_RESULT_CLIENT_ERROR
                               : NGX_HTTP_PAYGW_M_RESULT_OK,
                             ngx_current_msec - pc->start);

    ngx_http_paygw_breaker_record(r, pc->ch, pc->status >= 500);

    if (r->out && r->out->buf) {
        b = r->out->buf;
        pc->response.data = b->pos;
        pc->response.len = b->last - b->pos;
    }

    pc->call.ok = 1;

    return rc;
}


ngx_str_t *
ngx_http_paygw_provider_response_header(ngx_http_paygw_provider_call_t *pc,
    const char *name)
{
    ngx_uint_t        n;
    ngx_table_elt_t  *h;

    if (pc->response_headers == NULL) {
        return NULL;
    }

    h = ngx_http_paygw_header(pc->response_headers, name, &n);

    return h ? &h->value : NULL;
}


ngx_int_t
ngx_http_paygw_provider_retryable(ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_provider_call_t  *pc;

    pc = ctx->provider;

    /* no answer, or the provider's own failure: the call is idempotent */

    return (!pc->call.ok || pc->status >= 500) ? NGX_OK : NGX_DECLINED;
}


void
ngx_http_paygw_outcome_unknown(ngx_http_paygw_outcome_t *out, const char *why)
{
    out->definitive = 0;
    out->status = NGX_HTTP_PAYGW_STATUS_UNKNOWN;
    out->failure_message.data = (u_char *) why;
    out->failure_message.len = ngx_strlen(why);
}


void
ngx_http_paygw_outcome_set(ngx_http_paygw_outcome_t *out,
    ngx_http_paygw_status_e status)
{
    out->definitive = 1;
    out->status = status;
}


/* "19.99" (yuan, two decimals, as Alipay writes money) -> 1999 fen */

ngx_int_t
ngx_http_paygw_yuan(ngx_str_t *s, int64_t *fen)
{
    u_char      *p, *last;
    int64_t      v;
    ngx_uint_t   decimals, dot;

    if (s->len == 0 || s->len > 16) {
        return NGX_ERROR;
    }

    v = 0;
    dot = 0;
    decimals = 0;
    last = s->data + s->len;

    for (p = s->data; p < last; p++) {

        if (*p == '.' && !dot && p != s->data) {
            dot = 1;
            continue;
        }

        if (*p < '0' || *p > '9' || decimals == 2) {
            return NGX_ERROR;
        }

        v = v * 10 + (*p - '0');
        decimals += dot;
    }

    for ( /* void */ ; decimals < 2; decimals++) {
        v *= 10;
    }

    *fen = v;

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_json_is(json_t *doc, const char *name, ngx_str_t *expect)
{
    json_t  *v;

    v = json_object_get(doc, name);

    if (!json_is_string(v) || json_string_length(v) != expect->len
        || ngx_strncmp(json_string_value(v), expect->data, expect->len) != 0)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* a string member copied into the pool (cut at 256 bytes); absent: null */

void
ngx_http_paygw_json_str(ngx_pool_t *pool, json_t *doc, const char *name,
    ngx_str_t *out)
{
    json_t  *v;

    v = json_object_get(doc, name);

    ngx_str_null(out);

    if (!json_is_string(v)) {
        return;
    }

    out->len = json_string_length(v);

    if (out->len > 256) {
        out->len = 256;
    }

    out->data = ngx_pnalloc(pool, out->len + 1);
    if (out->data == NULL) {
        out->len = 0;
        return;
    }

    ngx_memcpy(out->data, json_string_value(v), out->len);
    out->data[out->len] = '\0';
}
