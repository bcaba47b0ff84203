
/*
 * paygw: payment channels and provider calls.
 *
 *     paygw_channel NAME location=URI merchant_id=ID secret_file=PATH
 *                   [attempts=3] [unknown_grace=60s];
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


static ngx_int_t ngx_http_paygw_provider_done(ngx_http_request_t *r,
    void *data, ngx_int_t rc);
static ngx_int_t ngx_http_paygw_provider_headers(ngx_http_request_t *sr,
    ngx_http_paygw_provider_call_t *pc);


char *
ngx_http_paygw_channel(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_main_conf_t *pmcf = conf;

    char                      *rv;
    ngx_int_t                  n;
    ngx_str_t                 *value, v;
    ngx_uint_t                 i;
    ngx_http_paygw_channel_t  *ch;

    value = cf->args->elts;

    if (!(value[1].len == 9
          && ngx_strncmp(value[1].data, "bank_card", 9) == 0)
        && !(value[1].len == 6
             && ngx_strncmp(value[1].data, "alipay", 6) == 0)
        && !(value[1].len == 6
             && ngx_strncmp(value[1].data, "wechat", 6) == 0))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown channel \"%V\": bank_card, alipay or "
                           "wechat", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (pmcf->channels.elts == NULL
        && ngx_array_init(&pmcf->channels, cf->pool, 3,
                          sizeof(ngx_http_paygw_channel_t))
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    ch = pmcf->channels.elts;

    for (i = 0; i < pmcf->channels.nelts; i++) {
        if (ch[i].name.len == value[1].len
            && ngx_strncmp(ch[i].name.data, value[1].data, value[1].len) == 0)
        {
            return "is duplicate";
        }
    }

    ch = ngx_array_push(&pmcf->channels);
    if (ch == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(ch, sizeof(ngx_http_paygw_channel_t));

    ch->name = value[1];
    ch->attempts = 3;
    ch->unknown_grace = 60;
    ch->breaker_failures = 3;
    ch->breaker_timeout = 30000;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "location=", 9) == 0) {
            ch->location.data = value[i].data + 9;
            ch->location.len = value[i].len - 9;
            continue;
        }

        if (ngx_strncmp(value[i].data, "merchant_id=", 12) == 0) {
            ch->merchant.data = value[i].data + 12;
            ch->merchant.len = value[i].len - 12;
            continue;
        }

        if (ngx_strncmp(value[i].data, "secret_file=", 12) == 0) {
            v.data = value[i].data + 12;
            v.len = value[i].len - 12;

            rv = ngx_http_paygw_read_secret(cf, &v, "secret_file",
                                            &ch->secret);
            if (rv != NGX_CONF_OK) {
                return rv;
            }

            if (ch->secret.len == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "secret_file \"%V\" is empty", &v);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "attempts=", 9) == 0) {
            n = ngx_atoi(value[i].data + 9, value[i].len - 9);
            if (n < 1 || n > 10) {
                goto invalid;
            }

            ch->attempts = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "breaker_failures=", 17) == 0) {
            n = ngx_atoi(value[i].data + 17, value[i].len - 17);
            if (n < 0) {
                goto invalid;
            }

            ch->breaker_failures = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "breaker_timeout=", 16) == 0) {
            v.data = value[i].data + 16;
            v.len = value[i].len - 16;

            ch->breaker_timeout = ngx_parse_time(&v, 0);
            if (ch->breaker_timeout == (ngx_msec_t) NGX_ERROR
                || ch->breaker_timeout == 0)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "unknown_grace=", 14) == 0) {
            v.data = value[i].data + 14;
            v.len = value[i].len - 14;

            ch->unknown_grace = ngx_parse_time(&v, 1);
            if (ch->unknown_grace == (time_t) NGX_ERROR) {
                goto invalid;
            }

            continue;
        }

        goto invalid;
    }

    if (ch->location.len == 0 || ch->location.data[0] != '/'
        || ch->merchant.len == 0 || ch->secret.len == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "paygw_channel \"%V\" needs location=/..., "
                           "merchant_id= and secret_file=", &ch->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid parameter \"%V\"",
                       &value[i]);
    return NGX_CONF_ERROR;
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
    u_char                      *p;
    ngx_buf_t                   *b;
    ngx_str_t                    uri;
    ngx_http_request_t          *sr;
    ngx_http_request_body_t     *rb;
    ngx_http_post_subrequest_t  *ps;

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

    if (ngx_http_subrequest(r, &uri, NULL, &sr, ps,
                            NGX_HTTP_SUBREQUEST_IN_MEMORY
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
