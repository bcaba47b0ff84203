
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


ngx_int_t
ngx_http_paygw_event_id(ngx_pool_t *pool, ngx_str_t *id)
{
    ngx_str_t  no;

    /* "evt_" and 80 random bits (SPEC §5: the receiver's dedupe key) */

    if (ngx_http_paygw_random_no(pool, '_', &no) != NGX_OK) {
        return NGX_ERROR;
    }

    id->data = ngx_pnalloc(pool, sizeof("evt") - 1 + no.len);
    if (id->data == NULL) {
        return NGX_ERROR;
    }

    id->len = ngx_cpymem(ngx_cpymem(id->data, "evt", 3), no.data, no.len)
              - id->data;

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


/*
 * "YYYY-MM-DDTHH:MM:SSZ" as written by ngx_http_paygw_now(): seconds
 * since the epoch, NGX_ERROR if it is not that.  Ages are measured with
 * the clock that wrote the time (nginx's), never mixed with MySQL's.
 */

time_t
ngx_http_paygw_iso_time(ngx_str_t *iso)
{
    u_char      *p;
    ngx_int_t    v[6], days, y, m;
    ngx_uint_t   i;
    static const u_char  width[6] = { 4, 2, 2, 2, 2, 2 };

    if (iso->data == NULL || iso->len < sizeof("2006-01-02T15:04:05") - 1) {
        return NGX_ERROR;
    }

    p = iso->data;

    for (i = 0; i < 6; i++) {
        v[i] = ngx_atoi(p, width[i]);
        if (v[i] == NGX_ERROR) {
            return NGX_ERROR;
        }

        p += width[i] + 1;
    }

    if (v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > 31 || v[0] < 1970
        || v[3] > 23 || v[4] > 59 || v[5] > 60)
    {
        return NGX_ERROR;
    }

    /* days from the civil date, counted from March (0) of year y */

    y = v[0];
    m = v[1];

    if (m <= 2) {
        y -= 1;
        m += 9;

    } else {
        m -= 3;
    }

    days = 365 * y + y / 4 - y / 100 + y / 400 + (153 * m + 2) / 5
           + v[2] - 1 - 719468;

    return (time_t) days * 86400 + v[3] * 3600 + v[4] * 60 + v[5];
}


/* YYYY-MM-DD, a day that exists (statements, settlements) */

ngx_int_t
ngx_http_paygw_valid_date(ngx_str_t *date)
{
    u_char      *p;
    ngx_uint_t   i, year, month, day, mdays;

    static ngx_uint_t  days[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31,
                                  30, 31 };

    p = date->data;

    if (date->len != 10 || p[4] != '-' || p[7] != '-') {
        return NGX_ERROR;
    }

    for (i = 0; i < 10; i++) {
        if (i != 4 && i != 7 && (p[i] < '0' || p[i] > '9')) {
            return NGX_ERROR;
        }
    }

    year = ngx_atoi(p, 4);
    month = ngx_atoi(p + 5, 2);
    day = ngx_atoi(p + 8, 2);

    if (year < 1970 || month < 1 || month > 12 || day < 1) {
        return NGX_ERROR;
    }

    mdays = days[month - 1];

    if (month == 2
        && !(year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)))
    {
        mdays = 28;
    }

    return (day <= mdays) ? NGX_OK : NGX_ERROR;
}
