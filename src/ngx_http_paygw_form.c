
/*
 * paygw: application/x-www-form-urlencoded, as Alipay sends and takes
 * it: "k=v&k=v", '+' for a space, %XX for every other byte outside the
 * unreserved set.
 */


#include "ngx_http_paygw_channel.h"


static u_char *ngx_http_paygw_form_escape(u_char *dst, ngx_str_t *s);
static ngx_int_t ngx_http_paygw_form_unescape(ngx_pool_t *pool, u_char *p,
    u_char *last, ngx_str_t *out);


ngx_int_t
ngx_http_paygw_form_encode(ngx_pool_t *pool, ngx_array_t *params,
    ngx_str_t *out)
{
    u_char        *p;
    size_t         len;
    ngx_uint_t     i;
    ngx_keyval_t  *kv;

    kv = params->elts;
    len = 0;

    for (i = 0; i < params->nelts; i++) {
        len += 3 * (kv[i].key.len + kv[i].value.len) + 2;
    }

    out->data = ngx_pnalloc(pool, len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    p = out->data;

    for (i = 0; i < params->nelts; i++) {
        if (i) {
            *p++ = '&';
        }

        p = ngx_http_paygw_form_escape(p, &kv[i].key);
        *p++ = '=';
        p = ngx_http_paygw_form_escape(p, &kv[i].value);
    }

    out->len = p - out->data;

    return NGX_OK;
}


static u_char *
ngx_http_paygw_form_escape(u_char *dst, ngx_str_t *s)
{
    u_char   c, *p, *last;

    static u_char  hex[] = "0123456789ABCDEF";

    last = s->data + s->len;

    for (p = s->data; p < last; p++) {
        c = *p;

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'
            || c == '~')
        {
            *dst++ = c;

        } else {
            *dst++ = '%';
            *dst++ = hex[c >> 4];
            *dst++ = hex[c & 0xf];
        }
    }

    return dst;
}


/*
 * At most "max" parameters; a malformed escape or a repeated name is an
 * error (a second value would be read where the first was signed).
 */

ngx_int_t
ngx_http_paygw_form_decode(ngx_pool_t *pool, ngx_str_t *form, ngx_uint_t max,
    ngx_array_t **params)
{
    u_char        *p, *last, *amp, *eq;
    ngx_uint_t     i;
    ngx_keyval_t  *kv, *prev;

    *params = ngx_array_create(pool, 16, sizeof(ngx_keyval_t));
    if (*params == NULL) {
        return NGX_ERROR;
    }

    p = form->data;
    last = form->data + form->len;

    while (p < last) {

        amp = ngx_strlchr(p, last, '&');
        if (amp == NULL) {
            amp = last;
        }

        eq = ngx_strlchr(p, amp, '=');

        if (eq == NULL || eq == p || (*params)->nelts == max) {
            return NGX_DECLINED;
        }

        kv = ngx_array_push(*params);
        if (kv == NULL) {
            return NGX_ERROR;
        }

        if (ngx_http_paygw_form_unescape(pool, p, eq, &kv->key) != NGX_OK
            || ngx_http_paygw_form_unescape(pool, eq + 1, amp, &kv->value)
               != NGX_OK)
        {
            return NGX_DECLINED;
        }

        prev = (*params)->elts;

        for (i = 0; i + 1 < (*params)->nelts; i++) {
            if (prev[i].key.len == kv->key.len
                && ngx_strncmp(prev[i].key.data, kv->key.data, kv->key.len)
                   == 0)
            {
                return NGX_DECLINED;
            }
        }

        p = amp + 1;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_form_unescape(ngx_pool_t *pool, u_char *p, u_char *last,
    ngx_str_t *out)
{
    u_char      *d;
    ngx_int_t    hi, lo;

    out->data = ngx_pnalloc(pool, (last - p) + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    d = out->data;

    while (p < last) {

        if (*p == '+') {
            *d++ = ' ';
            p++;
            continue;
        }

        if (*p != '%') {
            *d++ = *p++;
            continue;
        }

        if (last - p < 3) {
            return NGX_DECLINED;
        }

        hi = ngx_hextoi(p + 1, 1);
        lo = ngx_hextoi(p + 2, 1);

        if (hi == NGX_ERROR || lo == NGX_ERROR) {
            return NGX_DECLINED;
        }

        *d++ = (u_char) (hi * 16 + lo);
        p += 3;
    }

    *d = '\0';
    out->len = d - out->data;

    return NGX_OK;
}
