
/*
 * paygw: the errors nginx answers itself, in the API's error shape.
 *
 *     error_page 400 405 408 413 414 429 494 501 505 /_paygw/error;
 *     location = /_paygw/error { internal; paygw_error; }
 *
 * nginx refuses some requests before any module runs: a body over
 * client_max_body_size (413), a URI or header over the buffers (414,
 * 494), a malformed request or a repeated Host or Authorization (400),
 * TRACE (405), an unknown Transfer-Encoding (501), HTTP/2.0 on an
 * HTTP/1 port (505), a body that stops arriving (408), and limit_req
 * (429, with "limit_req_status 429").  error_page hands such a request
 * to this handler with the status in r->err_status; it answers the
 * same status with {"error":{"code","message","request_id"}} and
 * X-Request-Id, like every other error of the API.
 *
 * Server errors (5xx) are left out of the error_page list on purpose:
 * error_page applies to subrequests too, and the backend and provider
 * subrequests must keep their own answers.
 */


#include "ngx_http_paygw.h"


#define NGX_HTTP_PAYGW_TOO_MANY_REQUESTS  429


typedef struct {
    ngx_uint_t                    status;
    const char                   *code;
    const char                   *message;
} ngx_http_paygw_error_t;


static ngx_int_t ngx_http_paygw_error_handler(ngx_http_request_t *r);
static ngx_http_paygw_error_t *ngx_http_paygw_error_find(ngx_uint_t status);


static ngx_http_paygw_error_t  ngx_http_paygw_errors[] = {

    { NGX_HTTP_BAD_REQUEST, "invalid_request",
      "the request is malformed (request line, headers or framing)" },

    { NGX_HTTP_NOT_ALLOWED, "method_not_allowed",
      "the method is not allowed" },

    { NGX_HTTP_REQUEST_TIME_OUT, "request_timeout",
      "the request was not received in time" },

    { NGX_HTTP_REQUEST_ENTITY_TOO_LARGE, "request_too_large",
      "the body is larger than this server accepts" },

    { NGX_HTTP_REQUEST_URI_TOO_LARGE, "uri_too_long",
      "the request URI is too long" },

    { NGX_HTTP_PAYGW_TOO_MANY_REQUESTS, "rate_limited",
      "too many requests; slow down and retry later" },

    { NGX_HTTP_NOT_IMPLEMENTED, "not_implemented",
      "the request uses a feature this server does not implement" },

    { NGX_HTTP_VERSION_NOT_SUPPORTED, "http_version_not_supported",
      "the HTTP version is not supported" },

    { NGX_HTTP_INTERNAL_SERVER_ERROR, "internal_error",
      "the request could not be completed" },

    { 0, NULL, NULL }
};


char *
ngx_http_paygw_error(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler == ngx_http_paygw_error_handler) {
        return "is duplicate";
    }

    clcf->handler = ngx_http_paygw_error_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_paygw_error_handler(ngx_http_request_t *r)
{
    ngx_str_t                message;
    ngx_uint_t               status;
    ngx_table_elt_t         *h;
    ngx_http_paygw_error_t  *err;

    /* a subrequest's error is its parent's business, not the client's */

    if (r != r->main) {
        return r->err_status ? (ngx_int_t) r->err_status : NGX_HTTP_NOT_FOUND;
    }

    status = r->err_status;

    /* nginx's own codes for "request header too large" and TLS errors */

    if (status == NGX_HTTP_REQUEST_HEADER_TOO_LARGE
        || status == NGX_HTTPS_CERT_ERROR || status == NGX_HTTPS_NO_CERT
        || status == NGX_HTTP_TO_HTTPS)
    {
        status = NGX_HTTP_BAD_REQUEST;
    }

    err = ngx_http_paygw_error_find(status);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw error page: status %ui -> %ui",
                   r->err_status, err->status);

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    r->err_status = err->status;

    if (err->status == NGX_HTTP_PAYGW_TOO_MANY_REQUESTS) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
#if (nginx_version >= 1023000)
        h->next = NULL;
#endif
        ngx_str_set(&h->key, "Retry-After");
        ngx_str_set(&h->value, "1");
    }

    message.data = (u_char *) err->message;
    message.len = ngx_strlen(err->message);

    return ngx_http_paygw_send_error(r, err->status, err->code, &message);
}


static ngx_http_paygw_error_t *
ngx_http_paygw_error_find(ngx_uint_t status)
{
    ngx_http_paygw_error_t  *err;

    for (err = ngx_http_paygw_errors; err->status; err++) {
        if (err->status == status) {
            return err;
        }
    }

    /* reached without an error (a direct internal redirect): a 500 */

    return err - 1;
}
