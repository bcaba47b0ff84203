
/*
 * paygw: UTF-8 at the edge.
 *
 * Text a client sent (path, query, JSON keys and values, headers) is
 * checked before it is used, and any text quoted back in an error is
 * valid UTF-8 cut on a character boundary.  jansson refuses invalid
 * UTF-8: an error message quoting a broken string could not be built,
 * and an error that cannot be built must never let a request through.
 *
 * nginx's ngx_utf8_decode() accepts some invalid sequences (a lead byte
 * where a continuation byte belongs, surrogates, code points past
 * U+10FFFF), so the well-formed ranges of RFC 3629 are checked here.
 */


#include "ngx_http_paygw.h"


#define NGX_HTTP_PAYGW_UTF8_INVALID     0
#define NGX_HTTP_PAYGW_UTF8_INCOMPLETE  ((size_t) -1)


static size_t ngx_http_paygw_utf8_char(u_char *p, u_char *last);


/*
 * The length of the well-formed character at p, NGX_HTTP_PAYGW_UTF8_INVALID
 * if p starts an ill-formed sequence, or NGX_HTTP_PAYGW_UTF8_INCOMPLETE if
 * the text ends inside a character that was well-formed so far.
 */

static size_t
ngx_http_paygw_utf8_char(u_char *p, u_char *last)
{
    u_char  c, lo, hi;
    size_t  len, i;

    c = *p;

    if (c < 0x80) {
        return 1;
    }

    /* RFC 3629, section 4: the range of the second byte per lead byte */

    lo = 0x80;
    hi = 0xbf;

    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;

    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = (c == 0xe0) ? 0xa0 : 0x80;     /* no overlong forms */
        hi = (c == 0xed) ? 0x9f : 0xbf;     /* no surrogates */

    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = (c == 0xf0) ? 0x90 : 0x80;     /* no overlong forms */
        hi = (c == 0xf4) ? 0x8f : 0xbf;     /* nothing past U+10FFFF */

    } else {
        return NGX_HTTP_PAYGW_UTF8_INVALID;
    }

    for (i = 1; i < len; i++) {

        if (p + i == last) {
            return NGX_HTTP_PAYGW_UTF8_INCOMPLETE;
        }

        c = p[i];

        if (i == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xbf)) {
            return NGX_HTTP_PAYGW_UTF8_INVALID;
        }
    }

    return len;
}


ngx_int_t
ngx_http_paygw_utf8_valid(u_char *p, size_t len)
{
    size_t   n;
    u_char  *last;

    last = p + len;

    while (p < last) {
        n = ngx_http_paygw_utf8_char(p, last);

        if (n == NGX_HTTP_PAYGW_UTF8_INVALID
            || n == NGX_HTTP_PAYGW_UTF8_INCOMPLETE)
        {
            return NGX_ERROR;
        }

        p += n;
    }

    return NGX_OK;
}


size_t
ngx_http_paygw_utf8_repair(u_char *p, size_t len)
{
    size_t   n;
    u_char  *start, *last;

    /*
     * In place: every byte of an ill-formed sequence becomes "?", and a
     * character cut short at the end (by a bounded buffer) is dropped.
     */

    start = p;
    last = p + len;

    while (p < last) {
        n = ngx_http_paygw_utf8_char(p, last);

        if (n == NGX_HTTP_PAYGW_UTF8_INCOMPLETE) {
            return p - start;
        }

        if (n == NGX_HTTP_PAYGW_UTF8_INVALID) {
            *p++ = '?';
            continue;
        }

        p += n;
    }

    return len;
}


void
ngx_http_paygw_utf8_quote(ngx_pool_t *pool, u_char *text, size_t len,
    size_t max, ngx_str_t *out)
{
    u_char  *p;
    size_t   n;

    /* at most "max" bytes of the text, then "..." if anything was cut */

    n = ngx_min(len, max);

    p = ngx_pnalloc(pool, n + sizeof("...") - 1);
    if (p == NULL) {
        ngx_str_set(out, "...");
        return;
    }

    ngx_memcpy(p, text, n);

    out->data = p;
    out->len = ngx_http_paygw_utf8_repair(p, n);

    if (n < len) {
        out->len = ngx_cpymem(p + out->len, "...", 3) - p;
    }
}
