
/*
 * paygw fuzzing: the nginx runtime the fuzzed sources call, test-only
 * (never in the module).  Every pool allocation is a malloc() of its own,
 * so ASan sees a read or write past any object; a pool's cleanups run
 * and its blocks are freed by fz_pool_reset() after each input.  Logging
 * formats every message (a wrong argument is found) and drops it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/evp.h>
#include "ngx_http_paygw.h"
#include "ngx_http_paygw_channel.h"
#include "shim.h"


typedef struct fz_block_s  fz_block_t;

struct fz_block_s {
    fz_block_t  *next;
};


static fz_block_t  *fz_blocks;
static ngx_pool_t   fz_the_pool;
static ngx_log_t    fz_the_log;
static ngx_time_t   fz_the_time;

u_char  fz_conf_error[NGX_MAX_ERROR_STR];

volatile ngx_time_t  *ngx_cached_time = &fz_the_time;
volatile ngx_msec_t   ngx_current_msec;



/*
 * A request as the module's handlers see it: a pool, a connection with a
 * log, the incoming header list, and the module's main and location
 * configurations (the module has ctx_index 0 here).
 */

ngx_http_request_t *
fz_request(void *main_conf, void *loc_conf)
{
    ngx_pool_t          *pool;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    static void  *mains[1], *locs[1];

    pool = fz_pool();

    r = ngx_pcalloc(pool, sizeof(ngx_http_request_t));
    c = ngx_pcalloc(pool, sizeof(ngx_connection_t));
    if (r == NULL || c == NULL) {
        abort();
    }

    c->log = fz_log();
    r->connection = c;
    r->pool = pool;
    r->main = r;

    ngx_http_paygw_module.ctx_index = 0;
    mains[0] = main_conf;
    locs[0] = loc_conf;
    r->main_conf = mains;
    r->loc_conf = locs;

    if (ngx_list_init(&r->headers_in.headers, pool, 4,
                      sizeof(ngx_table_elt_t))
        != NGX_OK
        || ngx_list_init(&r->headers_out.headers, pool, 4,
                         sizeof(ngx_table_elt_t))
           != NGX_OK)
    {
        abort();
    }

    return r;
}


/* a header of the request (or of a provider's answer, in LIST) */

void
fz_header(ngx_list_t *list, const char *name, u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(list);
    if (h == NULL) {
        abort();
    }

    ngx_memzero(h, sizeof(ngx_table_elt_t));
    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value.data = value;
    h->value.len = len;
    h->lowcase_key = h->key.data;
}


/* no $paygw_trace_id in a harness: error bodies say "request_id":"-" */

ngx_http_variable_value_t *
ngx_http_get_indexed_variable(ngx_http_request_t *r, ngx_uint_t index)
{
    return NULL;
}


ngx_pool_t *
fz_pool(void)
{
    fz_the_pool.log = fz_log();
    return &fz_the_pool;
}


ngx_log_t *
fz_log(void)
{
    /* level DEBUG_ALL: every ngx_log_error() formats its message */
    fz_the_log.log_level = NGX_LOG_DEBUG_ALL;
    fz_the_time.sec = time(NULL);
    return &fz_the_log;
}


void *
ngx_palloc(ngx_pool_t *pool, size_t size)
{
    fz_block_t  *b;

    b = malloc(sizeof(fz_block_t) + size);
    if (b == NULL) {
        return NULL;
    }

    b->next = fz_blocks;
    fz_blocks = b;

    return b + 1;
}


void *
ngx_pnalloc(ngx_pool_t *pool, size_t size)
{
    return ngx_palloc(pool, size);
}


void *
ngx_pcalloc(ngx_pool_t *pool, size_t size)
{
    void  *p;

    p = ngx_palloc(pool, size);
    if (p) {
        memset(p, 0, size);
    }

    return p;
}


ngx_pool_cleanup_t *
ngx_pool_cleanup_add(ngx_pool_t *p, size_t size)
{
    ngx_pool_cleanup_t  *c;

    c = ngx_palloc(p, sizeof(ngx_pool_cleanup_t));
    if (c == NULL) {
        return NULL;
    }

    c->data = size ? ngx_palloc(p, size) : NULL;
    if (size && c->data == NULL) {
        return NULL;
    }

    c->handler = NULL;
    c->next = fz_the_pool.cleanup;
    fz_the_pool.cleanup = c;

    return c;
}


void
fz_pool_reset(void)
{
    fz_block_t          *b, *next;
    ngx_pool_cleanup_t  *c;

    for (c = fz_the_pool.cleanup; c; c = c->next) {
        if (c->handler) {
            c->handler(c->data);
        }
    }

    fz_the_pool.cleanup = NULL;

    for (b = fz_blocks; b; b = next) {
        next = b->next;
        free(b);
    }

    fz_blocks = NULL;
}


u_char *
ngx_pstrdup(ngx_pool_t *pool, ngx_str_t *src)
{
    u_char  *dst;

    dst = ngx_pnalloc(pool, src->len);
    if (dst == NULL) {
        return NULL;
    }

    ngx_memcpy(dst, src->data, src->len);

    return dst;
}


ngx_array_t *
ngx_array_create(ngx_pool_t *p, ngx_uint_t n, size_t size)
{
    ngx_array_t  *a;

    a = ngx_palloc(p, sizeof(ngx_array_t));
    if (a == NULL) {
        return NULL;
    }

    if (ngx_array_init(a, p, n, size) != NGX_OK) {
        return NULL;
    }

    return a;
}


void *
ngx_array_push(ngx_array_t *a)
{
    void  *new;

    if (a->nelts == a->nalloc) {
        new = ngx_palloc(a->pool, 2 * a->nalloc * a->size);
        if (new == NULL) {
            return NULL;
        }

        memcpy(new, a->elts, a->nelts * a->size);
        a->elts = new;
        a->nalloc *= 2;
    }

    return (u_char *) a->elts + a->size * a->nelts++;
}


void *
ngx_array_push_n(ngx_array_t *a, ngx_uint_t n)
{
    void        *new;
    ngx_uint_t   nalloc;

    if (a->nelts + n > a->nalloc) {
        nalloc = 2 * ngx_max(n, a->nalloc);

        new = ngx_palloc(a->pool, nalloc * a->size);
        if (new == NULL) {
            return NULL;
        }

        memcpy(new, a->elts, a->nelts * a->size);
        a->elts = new;
        a->nalloc = nalloc;
    }

    new = (u_char *) a->elts + a->size * a->nelts;
    a->nelts += n;

    return new;
}


ngx_list_t *
ngx_list_create(ngx_pool_t *pool, ngx_uint_t n, size_t size)
{
    ngx_list_t  *list;

    list = ngx_palloc(pool, sizeof(ngx_list_t));
    if (list == NULL) {
        return NULL;
    }

    if (ngx_list_init(list, pool, n, size) != NGX_OK) {
        return NULL;
    }

    return list;
}


void *
ngx_list_push(ngx_list_t *l)
{
    ngx_list_part_t  *last;

    last = l->last;

    if (last->nelts == l->nalloc) {
        last = ngx_palloc(l->pool, sizeof(ngx_list_part_t));
        if (last == NULL) {
            return NULL;
        }

        last->elts = ngx_palloc(l->pool, l->nalloc * l->size);
        if (last->elts == NULL) {
            return NULL;
        }

        last->nelts = 0;
        last->next = NULL;
        l->last->next = last;
        l->last = last;
    }

    return (u_char *) last->elts + l->size * last->nelts++;
}


ngx_int_t
ngx_hextoi(u_char *line, size_t n)
{
    u_char     c, ch;
    ngx_int_t  value;

    if (n == 0) {
        return NGX_ERROR;
    }

    for (value = 0; n--; line++) {

        if (value > (ngx_int_t) (NGX_MAX_INT_T_VALUE / 16)) {
            return NGX_ERROR;
        }

        ch = *line;

        if (ch >= '0' && ch <= '9') {
            value = value * 16 + (ch - '0');
            continue;
        }

        c = (u_char) (ch | 0x20);

        if (c >= 'a' && c <= 'f') {
            value = value * 16 + (c - 'a' + 10);
            continue;
        }

        return NGX_ERROR;
    }

    return value;
}


ngx_int_t
ngx_atoi(u_char *line, size_t n)
{
    ngx_int_t  value, cutoff, cutlim;

    if (n == 0) {
        return NGX_ERROR;
    }

    cutoff = NGX_MAX_INT_T_VALUE / 10;
    cutlim = NGX_MAX_INT_T_VALUE % 10;

    for (value = 0; n--; line++) {
        if (*line < '0' || *line > '9') {
            return NGX_ERROR;
        }

        if (value >= cutoff && (value > cutoff || *line - '0' > cutlim)) {
            return NGX_ERROR;
        }

        value = value * 10 + (*line - '0');
    }

    return value;
}


time_t
ngx_atotm(u_char *line, size_t n)
{
    return (time_t) ngx_atoi(line, n);
}


off_t
ngx_atoof(u_char *line, size_t n)
{
    return (off_t) ngx_atoi(line, n);
}


ngx_int_t
ngx_strncasecmp(u_char *s1, u_char *s2, size_t n)
{
    ngx_uint_t  c1, c2;

    while (n) {
        c1 = (ngx_uint_t) *s1++;
        c2 = (ngx_uint_t) *s2++;

        c1 = (c1 >= 'A' && c1 <= 'Z') ? (c1 | 0x20) : c1;
        c2 = (c2 >= 'A' && c2 <= 'Z') ? (c2 | 0x20) : c2;

        if (c1 == c2) {
            if (c1) {
                n--;
                continue;
            }

            return 0;
        }

        return c1 - c2;
    }

    return 0;
}


ngx_int_t
ngx_memn2cmp(u_char *s1, u_char *s2, size_t n1, size_t n2)
{
    size_t     n;
    ngx_int_t  m, z;

    if (n1 <= n2) {
        n = n1;
        z = -1;

    } else {
        n = n2;
        z = 1;
    }

    m = ngx_memcmp(s1, s2, n);

    if (m || n1 == n2) {
        return m;
    }

    return z;
}


ngx_uint_t
ngx_hash_strlow(u_char *dst, u_char *src, size_t n)
{
    ngx_uint_t  key;

    key = 0;

    while (n--) {
        *dst = ngx_tolower(*src);
        key = ngx_hash(key, *dst);
        dst++;
        src++;
    }

    return key;
}


u_char *
ngx_hex_dump(u_char *dst, u_char *src, size_t len)
{
    static u_char  hex[] = "0123456789abcdef";

    while (len--) {
        *dst++ = hex[*src >> 4];
        *dst++ = hex[*src++ & 0xf];
    }

    return dst;
}


void
ngx_explicit_memzero(void *buf, size_t n)
{
    ngx_memzero(buf, n);
    __asm__ volatile ("" ::: "memory");
}


void
ngx_encode_base64(ngx_str_t *dst, ngx_str_t *src)
{
    int  n;

    n = EVP_EncodeBlock(dst->data, src->data, (int) src->len);
    dst->len = n < 0 ? 0 : (size_t) n;
}


ngx_int_t
ngx_decode_base64(ngx_str_t *dst, ngx_str_t *src)
{
    static u_char  basis64[] = {
        77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77,
        77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77,
        77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 62, 77, 77, 77, 63,
        52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 77, 77, 77, 77, 77, 77,
        77,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
        15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 77, 77, 77, 77, 77,
        77, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
        41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 77, 77, 77, 77, 77,
        77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77,
        77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77,
        77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77,
        77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77,
        77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77,
        77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77,
        77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77,
        77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77, 77
    };

    size_t   len;
    u_char  *d, *s;

    /* nginx's ngx_decode_base64_internal(), as in src/core/ngx_string.c */

    for (len = 0; len < src->len; len++) {
        if (src->data[len] == '=') {
            break;
        }

        if (basis64[src->data[len]] == 77) {
            return NGX_ERROR;
        }
    }

    if (len % 4 == 1) {
        return NGX_ERROR;
    }

    s = src->data;
    d = dst->data;

    while (len > 3) {
        *d++ = (u_char) (basis64[s[0]] << 2 | basis64[s[1]] >> 4);
        *d++ = (u_char) (basis64[s[1]] << 4 | basis64[s[2]] >> 2);
        *d++ = (u_char) (basis64[s[2]] << 6 | basis64[s[3]]);

        s += 4;
        len -= 4;
    }

    if (len > 1) {
        *d++ = (u_char) (basis64[s[0]] << 2 | basis64[s[1]] >> 4);
    }

    if (len > 2) {
        *d++ = (u_char) (basis64[s[1]] << 4 | basis64[s[2]] >> 2);
    }

    dst->len = d - dst->data;

    return NGX_OK;
}


void
ngx_gmtime(time_t t, ngx_tm_t *tp)
{
    struct tm  tm;

    gmtime_r(&t, &tm);
    *tp = tm;
    tp->ngx_tm_mon++;
    tp->ngx_tm_year += 1900;
}


ngx_int_t
ngx_conf_full_name(ngx_cycle_t *cycle, ngx_str_t *name, ngx_uint_t conf_prefix)
{
    /* the harnesses give absolute paths: nginx leaves them as they are */

    return (name->len && name->data[0] == '/') ? NGX_OK : NGX_ERROR;
}


/*
 * nginx's formats (src/core/ngx_string.c): [0][width][u|x|X|.N|*] then
 * V s d i D L O T M z l c p Z N %.  An unknown one aborts: the harness
 * must not guess what the module meant.
 */

static u_char *
fz_number(u_char *buf, u_char *last, uint64_t ui64, u_char zero,
    ngx_uint_t hex, ngx_uint_t width)
{
    u_char   *p, temp[NGX_INT64_LEN + 1];
    size_t    len;
    const char *digits;

    digits = (hex == 2) ? "0123456789ABCDEF" : "0123456789abcdef";
    p = temp + NGX_INT64_LEN;

    do {
        *--p = digits[hex ? ui64 % 16 : ui64 % 10];
        ui64 = hex ? ui64 / 16 : ui64 / 10;
    } while (ui64);

    len = (temp + NGX_INT64_LEN) - p;

    while (len++ < width && buf < last) {
        *buf++ = zero;
    }

    len = (temp + NGX_INT64_LEN) - p;

    if (buf + len > last) {
        len = last - buf;
    }

    return ngx_cpymem(buf, p, len);
}


u_char *
ngx_vslprintf(u_char *buf, u_char *last, const char *fmt, va_list args)
{
    u_char      *p, zero;
    size_t       len, slen;
    int64_t      i64;
    uint64_t     ui64;
    ngx_str_t   *v;
    ngx_uint_t   width, sign, hex, frac;

    while (*fmt && buf < last) {

        if (*fmt != '%') {
            *buf++ = *fmt++;
            continue;
        }

        i64 = 0;
        ui64 = 0;
        zero = (u_char) ((*++fmt == '0') ? '0' : ' ');
        width = 0;
        sign = 1;
        hex = 0;
        frac = 0;
        slen = (size_t) -1;

        while (*fmt >= '0' && *fmt <= '9') {
            width = width * 10 + (*fmt++ - '0');
        }

        for ( ;; ) {
            switch (*fmt) {
            case 'u': sign = 0; fmt++; continue;
            case 'm': fmt++; continue;
            case 'X': hex = 2; sign = 0; fmt++; continue;
            case 'x': hex = 1; sign = 0; fmt++; continue;
            case '.':
                fmt++;
                while (*fmt >= '0' && *fmt <= '9') {
                    frac = frac * 10 + (*fmt++ - '0');
                }
                continue;
            case '*': slen = va_arg(args, size_t); fmt++; continue;
            default: break;
            }
            break;
        }

        switch (*fmt) {

        case 'V':
            v = va_arg(args, ngx_str_t *);
            len = ngx_min((size_t) (last - buf), v->len);
            buf = ngx_cpymem(buf, v->data, len);
            fmt++;
            continue;

        case 's':
            p = va_arg(args, u_char *);
            if (slen == (size_t) -1) {
                slen = ngx_strlen(p);
            }
            len = ngx_min((size_t) (last - buf), slen);
            buf = ngx_cpymem(buf, p, len);
            fmt++;
            continue;

        case 'c':
            *buf++ = (u_char) (va_arg(args, int) & 0xff);
            fmt++;
            continue;

        case 'Z':
            *buf++ = '\0';
            fmt++;
            continue;

        case 'N':
            *buf++ = LF;
            fmt++;
            continue;

        case '%':
            *buf++ = '%';
            fmt++;
            continue;

        case 'p':
            ui64 = (uintptr_t) va_arg(args, void *);
            hex = 2;
            sign = 0;
            zero = '0';
            width = 2 * sizeof(void *);
            break;

        case 'O': i64 = (int64_t) va_arg(args, off_t); sign = 1; break;
        case 'T': i64 = (int64_t) va_arg(args, time_t); sign = 1; break;
        case 'M':
            ui64 = (uint64_t) va_arg(args, ngx_msec_t);
            sign = 0;
            break;

        case 'z':
            if (sign) {
                i64 = (int64_t) va_arg(args, ssize_t);
            } else {
                ui64 = (uint64_t) va_arg(args, size_t);
            }
            break;

        case 'i':
            if (sign) {
                i64 = (int64_t) va_arg(args, ngx_int_t);
            } else {
                ui64 = (uint64_t) va_arg(args, ngx_uint_t);
            }
            break;

        case 'd':
            if (sign) {
                i64 = (int64_t) va_arg(args, int);
            } else {
                ui64 = (uint64_t) va_arg(args, u_int);
            }
            break;

        case 'l':
            if (sign) {
                i64 = (int64_t) va_arg(args, long);
            } else {
                ui64 = (uint64_t) va_arg(args, u_long);
            }
            break;

        case 'D':
            if (sign) {
                i64 = (int64_t) va_arg(args, int32_t);
            } else {
                ui64 = (uint64_t) va_arg(args, uint32_t);
            }
            break;

        case 'L':
            if (sign) {
                i64 = va_arg(args, int64_t);
            } else {
                ui64 = va_arg(args, uint64_t);
            }
            break;

        default:
            fprintf(stderr, "fuzz shim: unknown format \"%s\"\n", fmt);
            abort();
        }

        if (sign) {
            if (i64 < 0) {
                *buf++ = '-';
                ui64 = (uint64_t) -(i64 + 1) + 1;

            } else {
                ui64 = (uint64_t) i64;
            }
        }

        (void) frac;

        if (buf < last) {
            buf = fz_number(buf, last, ui64, zero, hex, width);
        }

        fmt++;
    }

    return buf;
}


u_char *
ngx_sprintf(u_char *buf, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, (void *) -1, fmt, args);
    va_end(args);

    return p;
}


u_char *
ngx_snprintf(u_char *buf, size_t max, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, buf + max, fmt, args);
    va_end(args);

    return p;
}


u_char *
ngx_slprintf(u_char *buf, u_char *last, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    va_start(args, fmt);
    p = ngx_vslprintf(buf, last, fmt, args);
    va_end(args);

    return p;
}


void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
    va_list  args;
    u_char   line[NGX_MAX_ERROR_STR];

    va_start(args, fmt);
    (void) ngx_vslprintf(line, line + sizeof(line), fmt, args);
    va_end(args);
}


void ngx_cdecl
ngx_conf_log_error(ngx_uint_t level, ngx_conf_t *cf, ngx_err_t err,
    const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    /* the harness reads why a file was refused */

    va_start(args, fmt);
    p = ngx_vslprintf(fz_conf_error, fz_conf_error + sizeof(fz_conf_error) - 1,
                      fmt, args);
    va_end(args);

    *p = '\0';
}


/* ---- providers: the harness is the provider, with keys of its own ---- */


/* one RSA key for the run (1024 bits: the fuzzer signs every input) */

EVP_PKEY *
fz_rsa_key(void)
{
    static EVP_PKEY  *key;

    if (key == NULL) {
        key = EVP_RSA_gen(1024);
        if (key == NULL) {
            abort();
        }
    }

    return key;
}


/*
 * A request context after a call to a provider: the payment and refund
 * it was about, and the provider's answer (status, headers, body).
 */

ngx_http_paygw_ctx_t *
fz_provider_ctx(ngx_http_request_t *r, ngx_http_paygw_channel_t *ch,
    const char *what, ngx_uint_t status, u_char *body, size_t len)
{
    ngx_http_paygw_ctx_t            *ctx;
    ngx_http_paygw_provider_call_t  *pc;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_paygw_ctx_t));
    pc = ngx_pcalloc(r->pool, sizeof(ngx_http_paygw_provider_call_t));
    if (ctx == NULL || pc == NULL) {
        abort();
    }

    ctx->channel = ch;
    ctx->provider = pc;

    ngx_str_set(&ctx->payment.payment_no, "pay_0123456789abcdef");
    ngx_str_set(&ctx->payment.currency, "CNY");
    ngx_str_set(&ctx->payment.channel, "fuzz");
    ctx->payment.amount = 1999;
    ctx->payment.status = NGX_HTTP_PAYGW_STATUS_PENDING;

    ngx_str_set(&ctx->refund.refund_no, "rf-1");
    ngx_str_set(&ctx->refund.out_refund_no, "ref_0123456789abcdef");
    ngx_str_set(&ctx->refund.payment_no, "pay_0123456789abcdef");
    ngx_str_set(&ctx->refund.currency, "CNY");
    ctx->refund.amount = 500;
    ctx->refund.payment_amount = 1999;
    ctx->refund.status = NGX_HTTP_PAYGW_STATUS_PENDING;

    pc->call.ok = (status != 0);
    pc->status = status;
    pc->what = (u_char *) what;
    pc->ch = ch;
    pc->response.data = body;
    pc->response.len = len;

    pc->response_headers = ngx_list_create(r->pool, 4,
                                           sizeof(ngx_table_elt_t));
    if (pc->response_headers == NULL) {
        abort();
    }

    return ctx;
}


/* a copy of LEN bytes in a block of its own: ASan sees a read past it */

u_char *
fz_copy(const u_char *data, size_t len)
{
    u_char  *p;

    p = ngx_pnalloc(fz_pool(), len ? len : 1);
    if (p == NULL) {
        abort();
    }

    ngx_memcpy(p, data, len);

    return p;
}


/*
 * What any answer may lead to: a definitive outcome only from a verified
 * answer, and only to a final or pending status.
 */

static ngx_uint_t  fz_definitive, fz_outcomes, fz_notices, fz_accepted;


static void
fz_outcome_stats(void)
{
    /* that the signed inputs reach past the verification */
    fprintf(stderr, "fuzz: %lu outcomes, %lu definitive; %lu callbacks, "
            "%lu accepted\n", (unsigned long) fz_outcomes,
            (unsigned long) fz_definitive, (unsigned long) fz_notices,
            (unsigned long) fz_accepted);
}


static void
fz_stats_at_exit(void)
{
    static ngx_uint_t  registered;

    if (!registered) {
        registered = 1;
        atexit(fz_outcome_stats);
    }
}


void
fz_count_notice(ngx_int_t rc)
{
    fz_stats_at_exit();

    fz_notices++;
    fz_accepted += (rc == NGX_OK);
}


void
fz_check_outcome(ngx_http_paygw_outcome_t *out, ngx_uint_t verified)
{
    fz_stats_at_exit();

    fz_outcomes++;
    fz_definitive += out->definitive;

    if (out->definitive && !verified) {
        fprintf(stderr, "fuzz: a definitive outcome from an unverified "
                "answer\n");
        abort();
    }

    if (out->failure_message.len > 4096 || out->provider_no.len > 256) {
        abort();
    }
}
