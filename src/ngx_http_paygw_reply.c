
/*
 * paygw: responses.  Every response carries X-Request-Id; every error
 * has the one shape {"error":{"code","message","request_id"}}.
 */


#include "ngx_http_paygw.h"
#include <jansson.h>


static ngx_str_t  ngx_http_paygw_json_type = ngx_string("application/json");


void
ngx_http_paygw_request_id(ngx_http_request_t *r, ngx_str_t *id)
{
    ngx_http_variable_value_t   *vv;
    ngx_http_paygw_main_conf_t  *pmcf;

    /*
     * The trace id ($paygw_trace_id: the incoming traceparent's, or a new
     * one), through its index: made once per request and cached, so the
     * header, every error body and the logs carry the same one.
     */

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_paygw_module);

    vv = ngx_http_get_indexed_variable(r->main, pmcf->trace_id_index);

    if (vv == NULL || vv->not_found) {
        ngx_str_set(id, "-");
        return;
    }

    id->data = vv->data;
    id->len = vv->len;
}


ngx_int_t
ngx_http_paygw_send_text(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, ngx_str_t *body)
{
    ngx_int_t         rc;
    ngx_buf_t        *b;
    ngx_str_t         id;
    ngx_chain_t       out;
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_paygw_request_id(r, &id);

    h->hash = 1;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif
    ngx_str_set(&h->key, "X-Request-Id");
    h->value = id;

    r->headers_out.status = status;
    r->headers_out.content_length_n = body->len;
    r->headers_out.content_type = type ? *type : ngx_http_paygw_json_type;
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->memory = body->len ? 1 : 0;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_paygw_send_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, ngx_str_t *message)
{
    json_t     *doc;
    ngx_int_t   rc;
    ngx_str_t   id;

    ngx_http_paygw_request_id(r, &id);

    doc = json_pack("{s:{s:s, s:s%, s:s%}}", "error",
                    "code", code,
                    "message", (char *) message->data, message->len,
                    "request_id", (char *) id.data, id.len);
    if (doc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_paygw_send_json(r, status, doc);
    json_decref(doc);

    return rc;
}


ngx_int_t
ngx_http_paygw_send_json(ngx_http_request_t *r, ngx_uint_t status,
    json_t *doc)
{
    ngx_str_t  body;

    if (ngx_http_paygw_json_dump(r->pool, doc, &body) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_paygw_send_text(r, status, NULL, &body);
}


ngx_int_t
ngx_http_paygw_json_dump(ngx_pool_t *pool, json_t *doc, ngx_str_t *out)
{
    char  *dump;

    /* jansson allocates with malloc(): the text is moved into the pool */

    dump = json_dumps(doc, JSON_COMPACT);
    if (dump == NULL) {
        return NGX_ERROR;
    }

    out->len = ngx_strlen(dump);
    out->data = ngx_pnalloc(pool, out->len);

    if (out->data) {
        ngx_memcpy(out->data, dump, out->len);
    }

    free(dump);

    return out->data ? NGX_OK : NGX_ERROR;
}


ngx_int_t
ngx_http_paygw_not_allowed(ngx_http_request_t *r, const char *allow)
{
    ngx_int_t         rc;
    ngx_str_t         msg;
    ngx_table_elt_t  *h;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif
    ngx_str_set(&h->key, "Allow");
    h->value.data = (u_char *) allow;
    h->value.len = ngx_strlen(allow);

    msg.data = (u_char *) "method not allowed";
    msg.len = sizeof("method not allowed") - 1;

    return ngx_http_paygw_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                     "method_not_allowed", &msg);
}


ngx_table_elt_t *
ngx_http_paygw_header(ngx_list_t *headers, const char *name, ngx_uint_t *n)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *found;

    /* the last header of that name (case-insensitive), and how many */

    len = ngx_strlen(name);
    found = NULL;
    *n = 0;

    part = &headers->part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash && h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            found = &h[i];
            (*n)++;
        }
    }

    return found;
}
