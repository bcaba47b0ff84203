
/*
 * paygw: payment, refund and event numbers, and the time stamps the
 * API and the store write (UTC, ISO 8601).
 */


#include "ngx_http_paygw.h"
#include <openssl/rand.h>


ngx_int_t
ngx_http_paygw_random_no(ngx_pool_t *pool, char prefix, ngx_str_t *no)
{
    u_char  *p;
    u_char   rnd[10];

    /* a prefix and 80 random bits: unguessable, never reused */

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return NGX_ERROR;
    }

    no->data = ngx_pnalloc(pool, 1 + 2 * sizeof(rnd));
    if (no->data == NULL) {
        return NGX_ERROR;
    }

    p = no->data;
    *p++ = prefix;
    p = ngx_hex_dump(p, rnd, sizeof(rnd));
    no->len = p - no->data;

    return NGX_OK;
}


void
ngx_http_paygw_now(ngx_pool_t *pool, ngx_str_t *iso)
{
    ngx_tm_t  tm;

    iso->data = ngx_pnalloc(pool, sizeof("2006-01-02T15:04:05Z"));
    if (iso->data == NULL) {
        ngx_str_null(iso);
        return;
    }

    ngx_gmtime(ngx_time(), &tm);

    iso->len = ngx_sprintf(iso->data, "%4d-%02d-%02dT%02d:%02d:%02dZ",
                           tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                           tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec)
               - iso->data;
}
