
/*
 * paygw: idempotency keys and the nonce replay window.
 *
 * One Redis round trip per request: a Lua script (atomic on the server)
 * records the nonce with SET NX PX and, for a keyed request, either
 * takes the key (a "running" record with the request's fingerprint) or
 * returns the record found.  Keys carry the merchant as a hash tag, so
 * both live in one Redis Cluster slot.  Records are msgpack:
 *
 *     {"s": "r", "f": <32-byte fingerprint>, "t": <16 random bytes>}
 *     {"s": "d", "f": <32-byte fingerprint>, "c": status, "b": body}
 *
 * The running record's "t" makes it this request's own: a request that
 * cannot tell whether its script ran (Redis dropped the connection before
 * answering) deletes the record only if it is still the one it wrote.
 *
 * The durable guard against double charges is MySQL's unique
 * (merchant_id, business_no); Redis only makes retries cheap and exact.
 */


#include "ngx_http_paygw_idempotency.h"
#include "ngx_http_paygw_crypto.h"
#include <msgpack.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/rand.h>


static ngx_int_t ngx_http_paygw_idem_token(ngx_str_t *v, ngx_str_t *key);
static ngx_int_t ngx_http_paygw_idem_pack(ngx_http_request_t *r,
    ngx_http_paygw_idem_t *idem, ngx_uint_t done, ngx_uint_t status,
    ngx_str_t *body, ngx_str_t *out);
static ngx_int_t ngx_http_paygw_idem_unpack(ngx_http_request_t *r,
    ngx_http_paygw_idem_t *idem, char *data, size_t len);
static ngx_int_t ngx_http_paygw_idem_shape(u_char *p, size_t len);
static ngx_int_t ngx_http_paygw_idem_key_is(msgpack_object *k,
    const char *name);


static const char  ngx_http_paygw_idem_script[] =
    "if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) == false "
    "then return 0 end "
    "if #KEYS == 1 then return 1 end "
    "local cur = redis.call('GET', KEYS[2]) "
    "if cur then return cur end "
    "redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) "
    "return 1";


/* the running record, if it is still this request's */
static const char  ngx_http_paygw_idem_release_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] "
    "then return redis.call('DEL', KEYS[1]) end "
    "return 0";


ngx_int_t
ngx_http_paygw_idem_header(ngx_http_request_t *r, ngx_str_t *key,
    const char **code, const char **why)
{
    ngx_uint_t        n;
    ngx_table_elt_t  *found;

    found = ngx_http_paygw_header(&r->headers_in.headers, "Idempotency-Key",
                                  &n);

    if (n == 0) {
        *code = "idempotency_key_missing";
        *why = "the Idempotency-Key header is required on this request";
        return NGX_DECLINED;
    }

    if (n > 1 || ngx_http_paygw_idem_token(&found->value, key) != NGX_OK) {
        *code = "idempotency_key_invalid";
        *why = (n > 1) ? "more than one Idempotency-Key header"
                       : "Idempotency-Key must be 1-255 visible ASCII "
                         "characters without quotes or backslashes, or such "
                         "a key as an sf-string (\"...\")";
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_idem_token(ngx_str_t *v, ngx_str_t *key)
{
    u_char  *p;

    /*
     * A bare token: 1-255 visible ASCII without quotes or backslashes.
     * An RFC 8941 sf-string ("...") names the same key as the token it
     * holds; escapes inside it would name keys no bare token can, so
     * they are refused.  Anything else ("abc, abc", "a"b") is refused
     * rather than taken for a key of its own.
     */

    *key = *v;

    if (key->len >= 2 && key->data[0] == '"'
        && key->data[key->len - 1] == '"')
    {
        key->data++;
        key->len -= 2;
    }

    if (key->len == 0 || key->len > 255) {
        return NGX_ERROR;
    }

    for (p = key->data; p < key->data + key->len; p++) {
        if (*p < 0x21 || *p > 0x7e || *p == '"' || *p == '\\') {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_idem_prepare(ngx_http_request_t *r,
    ngx_http_paygw_idem_t *idem, ngx_http_paygw_auth_t *auth,
    ngx_str_t *merchant, ngx_str_t *body)
{
    u_char       *p;
    EVP_MD_CTX   *md;
    u_char        digest[SHA256_DIGEST_LENGTH];

    /* the nonce is scoped by key; the hash tag keeps a merchant together */

    idem->nonce_key.data = ngx_pnalloc(r->pool, merchant->len
                                       + auth->key_id.len + auth->nonce.len
                                       + sizeof("pg:{}:n::"));
    if (idem->nonce_key.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(idem->nonce_key.data, "pg:{%V}:n:%V:%V", merchant,
                    &auth->key_id, &auth->nonce);
    idem->nonce_key.len = p - idem->nonce_key.data;

    if (idem->key.len == 0) {
        return NGX_OK;
    }

    /* fingerprint: method, path (with query), body */

    if (auth->body_hashed) {
        /* one body hash per request: the signature's */
        ngx_memcpy(digest, auth->body_sha256, sizeof(digest));

    } else {
        (void) EVP_Digest(body->data, body->len, digest, NULL,
                          ngx_http_paygw_sha256(), NULL);
    }

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        return NGX_ERROR;
    }

    if (EVP_DigestInit_ex(md, ngx_http_paygw_sha256(), NULL) != 1
        || EVP_DigestUpdate(md, r->method_name.data, r->method_name.len) != 1
        || EVP_DigestUpdate(md, "\n", 1) != 1
        || EVP_DigestUpdate(md, r->unparsed_uri.data, r->unparsed_uri.len)
           != 1
        || EVP_DigestUpdate(md, "\n", 1) != 1
        || EVP_DigestUpdate(md, digest, sizeof(digest)) != 1
        || EVP_DigestFinal_ex(md, idem->fingerprint, NULL) != 1)
    {
        EVP_MD_CTX_free(md);
        return NGX_ERROR;
    }

    EVP_MD_CTX_free(md);

    /* keys are hashed: any visible ASCII is safe in a Redis key */

    (void) EVP_Digest(idem->key.data, idem->key.len, digest, NULL,
                      ngx_http_paygw_sha256(), NULL);

    idem->redis_key.data = ngx_pnalloc(r->pool, merchant->len
                                       + 2 * sizeof(digest)
                                       + sizeof("pg:{}:i:"));
    if (idem->redis_key.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(idem->redis_key.data, "pg:{%V}:i:", merchant);
    p = ngx_hex_dump(p, digest, sizeof(digest));
    idem->redis_key.len = p - idem->redis_key.data;

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_idem_begin(ngx_http_request_t *r, ngx_http_paygw_idem_t *idem,
    ngx_http_paygw_redis_op_t *op, ngx_msec_t lock_ttl)
{
    ngx_str_t  argv[8], record;
    u_char     nonce_ttl[NGX_INT_T_LEN], lock[NGX_INT_T_LEN];

    ngx_str_set(&argv[0], "EVAL");
    argv[1].data = (u_char *) ngx_http_paygw_idem_script;
    argv[1].len = sizeof(ngx_http_paygw_idem_script) - 1;
    argv[3] = idem->nonce_key;

    argv[5].data = nonce_ttl;
    argv[5].len = ngx_sprintf(nonce_ttl, "%ui",
                              (ngx_uint_t) NGX_HTTP_PAYGW_NONCE_TTL * 1000)
                  - nonce_ttl;

    if (idem->key.len == 0) {
        ngx_str_set(&argv[2], "1");
        argv[4] = argv[5];
        return ngx_http_paygw_redis_evalsha(r, op, 5, &argv[0]);
    }

    if (ngx_http_paygw_idem_pack(r, idem, 0, 0, NULL, &record) != NGX_OK) {
        return NGX_ERROR;
    }

    idem->record = record;

    ngx_str_set(&argv[2], "2");
    argv[4] = idem->redis_key;
    argv[6] = record;
    argv[7].data = lock;
    argv[7].len = ngx_sprintf(lock, "%M", lock_ttl) - lock;

    return ngx_http_paygw_redis_evalsha(r, op, 8, &argv[0]);
}


ngx_int_t
ngx_http_paygw_idem_result(ngx_http_request_t *r, ngx_http_paygw_idem_t *idem,
    ngx_http_paygw_redis_op_t *op)
{
    redisReply  *reply;

    reply = op->replies[0];

    if (reply->type == REDIS_REPLY_INTEGER) {

        if (reply->integer == 0) {
            idem->state = NGX_HTTP_PAYGW_NONCE_REPLAYED;
            return NGX_OK;
        }

        if (idem->key.len) {
            idem->state = NGX_HTTP_PAYGW_IDEM_LOCKED;
            idem->held = 1;

        } else {
            idem->state = NGX_HTTP_PAYGW_IDEM_NONE;
        }

        return NGX_OK;
    }

    if (reply->type == REDIS_REPLY_STRING) {
        return ngx_http_paygw_idem_unpack(r, idem, reply->str, reply->len);
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "paygw idempotency: unexpected Redis reply type %d%s%s",
                  reply->type, reply->type == REDIS_REPLY_ERROR ? ": " : "",
                  reply->type == REDIS_REPLY_ERROR ? reply->str : "");

    return NGX_ERROR;
}


/*
 * The lock round trip failed after it may have reached Redis: the key
 * would otherwise answer 409 to every retry until the lock expires.
 */

ngx_int_t
ngx_http_paygw_idem_release(ngx_http_request_t *r,
    ngx_http_paygw_idem_t *idem, ngx_http_paygw_redis_op_t *op)
{
    ngx_str_t  argv[5];

    if (idem->record.len == 0) {
        return NGX_DECLINED;
    }

    ngx_str_set(&argv[0], "EVAL");
    argv[1].data = (u_char *) ngx_http_paygw_idem_release_script;
    argv[1].len = sizeof(ngx_http_paygw_idem_release_script) - 1;
    ngx_str_set(&argv[2], "1");
    argv[3] = idem->redis_key;
    argv[4] = idem->record;

    return ngx_http_paygw_redis_command_argv(r, op, 5, argv);
}


ngx_int_t
ngx_http_paygw_idem_finish(ngx_http_request_t *r, ngx_http_paygw_idem_t *idem,
    ngx_http_paygw_redis_op_t *op, ngx_uint_t store, ngx_uint_t status,
    ngx_str_t *body, ngx_msec_t retention)
{
    ngx_str_t  argv[5], record;
    u_char     ttl[NGX_INT_T_LEN];

    /*
     * Nothing happened: free the key so that a retry runs afresh.  Only
     * our own lock: one that expired meanwhile may be another request's.
     */

    if (!store) {
        return ngx_http_paygw_idem_release(r, idem, op);
    }

    if (ngx_http_paygw_idem_pack(r, idem, 1, status, body, &record)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_str_set(&argv[0], "SET");
    argv[1] = idem->redis_key;
    argv[2] = record;
    ngx_str_set(&argv[3], "PX");
    argv[4].data = ttl;
    argv[4].len = ngx_sprintf(ttl, "%M", retention) - ttl;

    return ngx_http_paygw_redis_command_argv(r, op, 5, argv);
}


static ngx_int_t
ngx_http_paygw_idem_pack(ngx_http_request_t *r, ngx_http_paygw_idem_t *idem,
    ngx_uint_t done, ngx_uint_t status, ngx_str_t *body, ngx_str_t *out)
{
    u_char           token[16];
    msgpack_sbuffer  sbuf;
    msgpack_packer   pk;

    if (!done && RAND_bytes(token, sizeof(token)) != 1) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw idempotency: RAND_bytes() failed");
        return NGX_ERROR;
    }

    msgpack_sbuffer_init(&sbuf);
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);

    msgpack_pack_map(&pk, done ? 4 : 3);

    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "s", 1);
    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, done ? "d" : "r", 1);

    msgpack_pack_str(&pk, 1);
    msgpack_pack_str_body(&pk, "f", 1);
    msgpack_pack_bin(&pk, sizeof(idem->fingerprint));
    msgpack_pack_bin_body(&pk, idem->fingerprint, sizeof(idem->fingerprint));

    if (!done) {
        msgpack_pack_str(&pk, 1);
        msgpack_pack_str_body(&pk, "t", 1);
        msgpack_pack_bin(&pk, sizeof(token));
        msgpack_pack_bin_body(&pk, token, sizeof(token));

    } else {
        msgpack_pack_str(&pk, 1);
        msgpack_pack_str_body(&pk, "c", 1);
        msgpack_pack_unsigned_int(&pk, (unsigned int) status);

        msgpack_pack_str(&pk, 1);
        msgpack_pack_str_body(&pk, "b", 1);
        msgpack_pack_bin(&pk, body->len);
        msgpack_pack_bin_body(&pk, body->data, body->len);
    }

    out->len = sbuf.size;
    out->data = ngx_pnalloc(r->pool, sbuf.size);

    if (out->data) {
        ngx_memcpy(out->data, sbuf.data, sbuf.size);
    }

    msgpack_sbuffer_destroy(&sbuf);

    return out->data ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_paygw_idem_unpack(ngx_http_request_t *r, ngx_http_paygw_idem_t *idem,
    char *data, size_t len)
{
    ngx_int_t           rc;
    ngx_uint_t          i, done, fp_ok, status;
    msgpack_object     *v;
    msgpack_unpacked    msg;
    msgpack_object_kv  *kv;
    ngx_str_t           body;

    msgpack_unpacked_init(&msg);

    rc = NGX_ERROR;
    done = 0;
    fp_ok = 0;
    status = 0;
    ngx_str_null(&body);

    if (ngx_http_paygw_idem_shape((u_char *) data, len) != NGX_OK
        || msgpack_unpack_next(&msg, data, len, NULL)
           != MSGPACK_UNPACK_SUCCESS
        || msg.data.type != MSGPACK_OBJECT_MAP)
    {
        goto done;
    }

    kv = msg.data.via.map.ptr;

    for (i = 0; i < msg.data.via.map.size; i++) {
        v = &kv[i].val;

        if (ngx_http_paygw_idem_key_is(&kv[i].key, "s")
            && v->type == MSGPACK_OBJECT_STR && v->via.str.size == 1)
        {
            done = (v->via.str.ptr[0] == 'd');

        } else if (ngx_http_paygw_idem_key_is(&kv[i].key, "f")
                   && v->type == MSGPACK_OBJECT_BIN
                   && v->via.bin.size == sizeof(idem->fingerprint))
        {
            fp_ok = (ngx_memcmp(v->via.bin.ptr, idem->fingerprint,
                                sizeof(idem->fingerprint)) == 0);

        } else if (ngx_http_paygw_idem_key_is(&kv[i].key, "c")
                   && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        {
            status = (ngx_uint_t) v->via.u64;

        } else if (ngx_http_paygw_idem_key_is(&kv[i].key, "b")
                   && v->type == MSGPACK_OBJECT_BIN)
        {
            body.len = v->via.bin.size;
            body.data = (u_char *) v->via.bin.ptr;
        }
    }

    if (!fp_ok) {
        idem->state = NGX_HTTP_PAYGW_IDEM_REUSED;

    } else if (!done) {
        idem->state = NGX_HTTP_PAYGW_IDEM_IN_USE;

    } else if (status < 200 || status > 599 || body.data == NULL) {
        goto done;

    } else {
        idem->state = NGX_HTTP_PAYGW_IDEM_REPLAY;
        idem->status = status;

        idem->body.len = body.len;
        idem->body.data = ngx_pnalloc(r->pool, body.len + 1);
        if (idem->body.data == NULL) {
            goto done;
        }

        ngx_memcpy(idem->body.data, body.data, body.len);
    }

    rc = NGX_OK;

done:

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "paygw idempotency: undecodable record in Redis");
    }

    msgpack_unpacked_destroy(&msg);

    return rc;
}


/*
 * Only the shape idem_pack() writes: a map of at most 4 pairs, each key
 * and value a string, a bin or an unsigned integer that fits in what is
 * left.  msgpack-c allocates an array or map for the count it declares
 * before reading it: a few bytes in Redis could ask for gigabytes.
 */

static ngx_int_t
ngx_http_paygw_idem_shape(u_char *p, size_t len)
{
    u_char  *last;
    size_t   n, head;

    last = p + len;

    if (len == 0 || *p < 0x80 || *p > 0x84) {
        return NGX_DECLINED;
    }

    for (n = 2 * (*p++ & 0x0f); n; n--) {

        if (p == last) {
            return NGX_DECLINED;
        }

        if (*p < 0x80 || (*p >= 0xa0 && *p <= 0xbf)) {
            head = 1;
            len = (*p < 0x80) ? 0 : (size_t) (*p & 0x1f);

        } else if ((*p == 0xc4 || *p == 0xd9 || *p == 0xcc) && last - p > 1) {
            head = 2;
            len = (*p == 0xcc) ? 0 : p[1];

        } else if ((*p == 0xc5 || *p == 0xcd) && last - p > 2) {
            head = 3;
            len = (*p == 0xcd) ? 0 : (size_t) (p[1] << 8 | p[2]);

        } else if ((*p == 0xc6 || *p == 0xce) && last - p > 4) {
            head = 5;
            len = (*p == 0xce) ? 0
                  : ((size_t) p[1] << 24 | p[2] << 16 | p[3] << 8 | p[4]);

        } else {
            return NGX_DECLINED;
        }

        if ((size_t) (last - p) < head + len) {
            return NGX_DECLINED;
        }

        p += head + len;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_idem_key_is(msgpack_object *k, const char *name)
{
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == 1
           && k->via.str.ptr[0] == name[0];
}
