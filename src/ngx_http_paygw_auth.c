
/*
 * paygw: merchant keys and request authentication (SPEC §2).
 *
 *     paygw_keys FILE;
 *
 * FILE has one key a line: "key_id secret merchant_id role", role one
 * of merchant, viewer, admin; "#" starts a comment.  It is read when
 * the configuration is loaded, so a broken file fails "nginx -t" with
 * its file:line.
 *
 *     Authorization: PAYGW-HMAC-SHA256 key=ID,ts=SECONDS,nonce=N,sig=HEX
 *     sig = hex(HMAC-SHA256(secret, METHOD\nPATH?QUERY\nts\nnonce\n
 *                                   hex(sha256(body))))
 *
 * The nonce replay window lives in Redis and is checked by the caller.
 */


#include "ngx_http_paygw_auth.h"
#include "ngx_http_paygw_crypto.h"
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>


#define NGX_HTTP_PAYGW_KEYS_MAX_LINE  1024


static char *ngx_http_paygw_keys_line(ngx_conf_t *cf, ngx_array_t *keys,
    u_char *line, size_t len, ngx_str_t *file, ngx_uint_t n);
static ngx_uint_t ngx_http_paygw_keys_words(u_char *p, u_char *last,
    ngx_str_t *word);
static ngx_int_t ngx_http_paygw_keys_role(ngx_str_t *word, ngx_uint_t *role);
static int ngx_http_paygw_keys_cmp(const void *one, const void *two);
static ngx_http_paygw_key_t *ngx_http_paygw_key_find(ngx_http_request_t *r,
    ngx_str_t *key_id);
static ngx_int_t ngx_http_paygw_auth_parse(ngx_str_t *value,
    ngx_http_paygw_auth_t *auth, const char **why);
static ngx_uint_t ngx_http_paygw_auth_param(ngx_str_t *name,
    ngx_http_paygw_auth_t *auth, ngx_str_t **dst);
static ngx_int_t ngx_http_paygw_auth_charset(ngx_str_t *s, size_t min,
    size_t max, ngx_uint_t hex);


static ngx_str_t  ngx_http_paygw_scheme = ngx_string("PAYGW-HMAC-SHA256 ");


char *
ngx_http_paygw_keys(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_main_conf_t *pmcf = conf;

    u_char                *p, *last, *nl;
    char                  *rv;
    size_t                 n;
    ngx_str_t             *value, file, text;
    ngx_uint_t             line, i;
    ngx_http_paygw_key_t  *key;

    if (pmcf->keys.elts) {
        return "is duplicate";
    }

    value = cf->args->elts;
    file = value[1];

    rv = ngx_http_paygw_read_file(cf, &file, "paygw_keys file",
                                  16 * 1024 * 1024, &text);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    p = text.data;
    n = text.len;

    if (ngx_array_init(&pmcf->keys, cf->pool, 8, sizeof(ngx_http_paygw_key_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    last = p + n;

    for (line = 1; p < last; line++, p = nl + 1) {

        nl = ngx_strlchr(p, last, '\n');
        if (nl == NULL) {
            nl = last;
        }

        rv = ngx_http_paygw_keys_line(cf, &pmcf->keys, p, nl - p, &file,
                                      line);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    if (pmcf->keys.nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "paygw_keys file \"%V\" has no keys", &file);
        return NGX_CONF_ERROR;
    }

    /* sorted, for a binary search per request */

    ngx_qsort(pmcf->keys.elts, pmcf->keys.nelts,
              sizeof(ngx_http_paygw_key_t), ngx_http_paygw_keys_cmp);

    key = pmcf->keys.elts;

    for (i = 1; i < pmcf->keys.nelts; i++) {
        if (ngx_http_paygw_keys_cmp(&key[i - 1], &key[i]) == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "paygw_keys file \"%V\": duplicate key id "
                               "\"%V\"", &file, &key[i].key_id);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_paygw_keys_line(ngx_conf_t *cf, ngx_array_t *keys, u_char *line,
    size_t len, ngx_str_t *file, ngx_uint_t n)
{
    ngx_str_t              word[5];
    ngx_uint_t             nwords;
    ngx_http_paygw_key_t  *key;

    nwords = ngx_http_paygw_keys_words(line, line + len, word);

    if (nwords == 0) {
        return NGX_CONF_OK;
    }

    if (nwords != 4) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid key in %V:%ui: expected "
                           "\"key_id secret merchant_id role\"", file, n);
        return NGX_CONF_ERROR;
    }

    key = ngx_array_push(keys);
    if (key == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(key, sizeof(ngx_http_paygw_key_t));

    key->key_id.data = ngx_pstrdup(cf->pool, &word[0]);
    key->key_id.len = word[0].len;
    key->secret.data = ngx_pstrdup(cf->pool, &word[1]);
    key->secret.len = word[1].len;
    key->merchant_id.data = ngx_pstrdup(cf->pool, &word[2]);
    key->merchant_id.len = word[2].len;

    if (key->key_id.data == NULL || key->secret.data == NULL
        || key->merchant_id.data == NULL)
    {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_paygw_auth_charset(&key->key_id, 1, 64, 0) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid key id \"%V\" in %V:%ui: 1-64 of "
                           "[A-Za-z0-9_-]", &key->key_id, file, n);
        return NGX_CONF_ERROR;
    }

    if (key->secret.len < 8) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "secret of key \"%V\" in %V:%ui is shorter "
                           "than 8 bytes", &key->key_id, file, n);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_paygw_keys_role(&word[3], &key->role) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid role \"%V\" in %V:%ui: merchant, viewer "
                           "or admin", &word[3], file, n);
        return NGX_CONF_ERROR;
    }

    if (key->merchant_id.len == 1 && key->merchant_id.data[0] == '*'
        && key->role != NGX_HTTP_PAYGW_ROLE_ADMIN)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "only admin keys may have merchant \"*\" "
                           "(%V:%ui)", file, n);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* up to 5 words of a line, up to a "#"; 6: more than 5 */

static ngx_uint_t
ngx_http_paygw_keys_words(u_char *p, u_char *last, ngx_str_t *word)
{
    u_char      *start;
    ngx_uint_t   nwords;

    nwords = 0;

    while (p < last) {

        while (p < last && (*p == ' ' || *p == '\t' || *p == '\r')) {
            p++;
        }

        if (p == last || *p == '#') {
            break;
        }

        start = p;

        while (p < last && *p != ' ' && *p != '\t' && *p != '\r') {
            p++;
        }

        if (nwords == 5) {
            return 6;
        }

        word[nwords].data = start;
        word[nwords].len = p - start;
        nwords++;
    }

    return nwords;
}


static ngx_int_t
ngx_http_paygw_keys_role(ngx_str_t *word, ngx_uint_t *role)
{
    if (word->len == 8 && ngx_strncmp(word->data, "merchant", 8) == 0) {
        *role = NGX_HTTP_PAYGW_ROLE_MERCHANT;
        return NGX_OK;
    }

    if (word->len == 6 && ngx_strncmp(word->data, "viewer", 6) == 0) {
        *role = NGX_HTTP_PAYGW_ROLE_VIEWER;
        return NGX_OK;
    }

    if (word->len == 5 && ngx_strncmp(word->data, "admin", 5) == 0) {
        *role = NGX_HTTP_PAYGW_ROLE_ADMIN;
        return NGX_OK;
    }

    return NGX_ERROR;
}


static int
ngx_http_paygw_keys_cmp(const void *one, const void *two)
{
    const ngx_http_paygw_key_t  *a = one, *b = two;

    return (int) ngx_memn2cmp(a->key_id.data, b->key_id.data, a->key_id.len,
                              b->key_id.len);
}


static ngx_http_paygw_key_t *
ngx_http_paygw_key_find(ngx_http_request_t *r, ngx_str_t *key_id)
{
    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_paygw_module);

    return ngx_http_paygw_key_by_id(&pmcf->keys, key_id);
}


ngx_http_paygw_key_t *
ngx_http_paygw_key_by_id(ngx_array_t *keys, ngx_str_t *key_id)
{
    ngx_int_t              rc;
    ngx_uint_t             lo, hi, mid;
    ngx_http_paygw_key_t  *key;

    key = keys->elts;
    lo = 0;
    hi = keys->nelts;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;

        rc = ngx_memn2cmp(key_id->data, key[mid].key_id.data, key_id->len,
                          key[mid].key_id.len);
        if (rc == 0) {
            return &key[mid];
        }

        if (rc < 0) {
            hi = mid;

        } else {
            lo = mid + 1;
        }
    }

    return NULL;
}


ngx_int_t
ngx_http_paygw_authenticate(ngx_http_request_t *r, ngx_str_t *body,
    ngx_http_paygw_auth_t *auth, const char **why)
{
    time_t            now;
    ngx_table_elt_t  *h;
    u_char            hex[2 * SHA256_DIGEST_LENGTH];

    h = r->headers_in.authorization;

    if (h == NULL) {
        *why = "missing Authorization header";
        return NGX_DECLINED;
    }

    if (ngx_http_paygw_auth_parse(&h->value, auth, why) != NGX_OK) {
        return NGX_DECLINED;
    }

    auth->key = ngx_http_paygw_key_find(r, &auth->key_id);

    if (auth->key == NULL) {
        *why = "unknown key";
        return NGX_DECLINED;
    }

    now = ngx_time();

    if (auth->ts > now + NGX_HTTP_PAYGW_AUTH_SKEW
        || auth->ts < now - NGX_HTTP_PAYGW_AUTH_SKEW)
    {
        *why = "timestamp is more than 300 seconds away from server time";
        return NGX_DECLINED;
    }

    /* the body's hash is kept: the idempotency fingerprint uses it too */

    (void) EVP_Digest(body->data, body->len, auth->body_sha256, NULL,
                      ngx_http_paygw_sha256(), NULL);
    auth->body_hashed = 1;

    if (ngx_http_paygw_auth_sign(auth->key, &r->method_name,
                                 &r->unparsed_uri, &auth->ts_raw,
                                 &auth->nonce, auth->body_sha256, hex)
        != NGX_OK)
    {
        *why = "request URI too long to sign";
        return NGX_DECLINED;
    }

    /* constant time: the comparison must not tell how much matched */

    if (auth->sig.len != 2 * SHA256_DIGEST_LENGTH
        || CRYPTO_memcmp(hex, auth->sig.data, auth->sig.len) != 0)
    {
        *why = "bad signature";
        return NGX_DECLINED;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_auth_sign(ngx_http_paygw_key_t *key, ngx_str_t *method,
    ngx_str_t *uri, ngx_str_t *ts, ngx_str_t *nonce, u_char *body_sha256,
    u_char *hex)
{
    u_char  *p;
    u_char   mac[SHA256_DIGEST_LENGTH];
    u_char   sts[NGX_HTTP_PAYGW_KEYS_MAX_LINE * 4];

    /*
     * METHOD \n PATH?QUERY \n ts \n nonce \n hex(sha256(body)), ts as
     * its bytes were sent (SPEC 2), never as we would print the number
     */

    if (uri->len + method->len + nonce->len + ts->len + 128 > sizeof(sts)) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(sts, method->data, method->len);
    *p++ = '\n';
    p = ngx_cpymem(p, uri->data, uri->len);
    p = ngx_sprintf(p, "\n%V\n%V\n", ts, nonce);
    p = ngx_hex_dump(p, body_sha256, SHA256_DIGEST_LENGTH);

    /* the key's HMAC state is made once per process (every request) */

    if (key->hmac == NULL) {
        key->hmac = ngx_http_paygw_hmac_keyed(&key->secret);
        if (key->hmac == NULL) {
            return NGX_ERROR;
        }
    }

    if (ngx_http_paygw_hmac_keyed_sign(key->hmac, sts, p - sts, mac)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_hex_dump(hex, mac, SHA256_DIGEST_LENGTH);

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_auth_parse(ngx_str_t *value, ngx_http_paygw_auth_t *auth,
    const char **why)
{
    u_char     *p, *last, *eq, *comma;
    ngx_int_t   ts;
    ngx_str_t   name, v, *dst;
    ngx_uint_t  seen, bit;

    ngx_memzero(auth, sizeof(ngx_http_paygw_auth_t));

    if (value->len < ngx_http_paygw_scheme.len
        || ngx_strncmp(value->data, ngx_http_paygw_scheme.data,
                       ngx_http_paygw_scheme.len) != 0)
    {
        *why = "malformed Authorization header: expected the "
               "PAYGW-HMAC-SHA256 scheme";
        return NGX_ERROR;
    }

    p = value->data + ngx_http_paygw_scheme.len;
    last = value->data + value->len;
    seen = 0;
    ts = NGX_ERROR;

    *why = "malformed Authorization header: expected "
           "key=...,ts=...,nonce=...,sig=...";

    /*
     * Exactly the four parameters, each once, comma separated, nothing
     * else: a repeated, unknown or empty one, or a trailing comma, makes
     * the header malformed rather than "the last one wins".
     */

    for ( ;; ) {
        comma = ngx_strlchr(p, last, ',');
        if (comma == NULL) {
            comma = last;
        }

        eq = ngx_strlchr(p, comma, '=');
        if (eq == NULL) {
            return NGX_ERROR;
        }

        name.data = p;
        name.len = eq - p;
        v.data = eq + 1;
        v.len = comma - v.data;

        bit = ngx_http_paygw_auth_param(&name, auth, &dst);

        if (bit == 0 || (seen & bit) || v.len == 0) {
            return NGX_ERROR;
        }

        seen |= bit;

        if (dst) {
            *dst = v;

        } else {
            ts = ngx_atoi(v.data, v.len);
            auth->ts_raw = v;
        }

        if (comma == last) {
            break;
        }

        p = comma + 1;
    }

    if (seen != 15 || ts == NGX_ERROR) {
        return NGX_ERROR;
    }

    auth->ts = (time_t) ts;

    if (ngx_http_paygw_auth_charset(&auth->key_id, 1, 64, 0) != NGX_OK) {
        *why = "malformed Authorization header: bad key id";
        return NGX_ERROR;
    }

    if (ngx_http_paygw_auth_charset(&auth->nonce, 16, 64, 0) != NGX_OK) {
        *why = "malformed Authorization header: nonce must be 16-64 of "
               "[A-Za-z0-9_-]";
        return NGX_ERROR;
    }

    if (ngx_http_paygw_auth_charset(&auth->sig, 64, 64, 1) != NGX_OK) {
        *why = "malformed Authorization header: sig must be 64 lowercase "
               "hex digits";
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_http_paygw_auth_param(ngx_str_t *name, ngx_http_paygw_auth_t *auth,
    ngx_str_t **dst)
{
    /* the parameter's bit in "seen", and where its value goes (ts: none) */

    *dst = NULL;

    if (ngx_http_paygw_is(name, "key")) {
        *dst = &auth->key_id;
        return 1;
    }

    if (ngx_http_paygw_is(name, "ts")) {
        return 2;
    }

    if (ngx_http_paygw_is(name, "nonce")) {
        *dst = &auth->nonce;
        return 4;
    }

    if (ngx_http_paygw_is(name, "sig")) {
        *dst = &auth->sig;
        return 8;
    }

    return 0;
}


static ngx_int_t
ngx_http_paygw_auth_charset(ngx_str_t *s, size_t min, size_t max,
    ngx_uint_t hex)
{
    u_char  *p, c;

    if (s->len < min || s->len > max) {
        return NGX_ERROR;
    }

    for (p = s->data; p < s->data + s->len; p++) {
        c = *p;

        if (hex) {
            if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) {
                continue;
            }

            return NGX_ERROR;
        }

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
            || (c >= '0' && c <= '9') || c == '_' || c == '-')
        {
            continue;
        }

        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_auth_key_id(ngx_http_request_t *r, ngx_str_t *id)
{
    ngx_http_paygw_auth_t  auth;
    const char            *why;

    /* for $paygw_key_id: the key named, not yet verified */

    if (r->headers_in.authorization == NULL
        || ngx_http_paygw_auth_parse(&r->headers_in.authorization->value,
                                     &auth, &why)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    *id = auth.key_id;

    return NGX_OK;
}
