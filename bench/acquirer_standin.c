/*
 * bench/acquirer_standin.c: a stand-in for the bank-card acquirer, for the
 * benchmark only (never built into the module or shipped).
 *
 * It speaks the acquirer protocol of src/ngx_http_paygw_bank.c and
 * t/sim/sim.js at as little CPU as it can (a remote acquirer costs the
 * gateway's host none): one epoll thread, keep-alive HTTP/1.1.
 *
 *   Every request's X-Acquirer-Signature (hex HMAC-SHA256(secret,
 *   ts "\n" METHOD "\n" path "\n" body)) and X-Acquirer-Merchant are
 *   checked (401 otherwise).
 *
 *   POST /acquirer/v1/charges   the answer is
 *       {"charge_id","out_trade_no","status":"approved","amount",
 *       "currency","card_brand","card_last4"}, signed like the real one:
 *       X-Acquirer-Timestamp, X-Acquirer-Signature = hex HMAC-SHA256(
 *       secret, ts "\n" body), per request (the body names the order).
 *       A repeated charge (a retry) gets the first answer again, or 409
 *       if its amount or currency differ, as at the real acquirer.
 *   GET /acquirer/v1/charges/<out_trade_no>   the charge's answer, or a
 *       signed 404 {"error":"not_found"} if it never came (the settler
 *       queries payments whose create lost its MySQL write)
 *   POST /acquirer/v1/refunds   {"refund_id","out_refund_no","out_trade_no",
 *       "status":"succeeded","amount","currency"}, signed the same way; a
 *       retry gets the first answer again, or 409 if it differs (the soak
 *       run refunds; it does not check the amount against the charge,
 *       the gateway reserves it before it calls)
 *   GET /acquirer/v1/refunds/<out_refund_no>   the refund's answer, or 404
 *   anything else               a signed 400 {"error":"unsupported"}
 *
 * The charges and refunds it approved are kept in memory (jansson objects,
 * the answer's text by out_trade_no / out_refund_no: ~200 bytes each).
 *
 *   acquirer_standin PORT SECRET_FILE MERCHANT
 *
 * Build: cc -O2 -o acquirer_standin acquirer_standin.c -ljansson -lcrypto
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE  65536
#define MAX_CONNS 4096

typedef struct {
    int     fd;
    size_t  in_len;
    char    in[BUF_SIZE];
} conn_t;

#define REPLY(c, status, lit)  reply(c, status, lit, sizeof(lit) - 1)

static char        secret[256];
static size_t      secret_len;
static const char *merchant;
static conn_t     *conns[MAX_CONNS];
static json_t     *charges;          /* out_trade_no -> answer text */
static json_t     *refunds;          /* out_refund_no -> answer text */


static void
hmac_hex(const char *a, size_t alen, const char *b, size_t blen, char *hex)
{
    unsigned char  md[32], buf[2 * BUF_SIZE];
    unsigned int   mdlen = 0, i;

    /* the signed text is small: one buffer, one HMAC() */
    memcpy(buf, a, alen);
    memcpy(buf + alen, b, blen);
    HMAC(EVP_sha256(), secret, (int) secret_len, buf, alen + blen, md,
         &mdlen);

    for (i = 0; i < mdlen; i++) {
        sprintf(hex + 2 * i, "%02x", md[i]);
    }
    hex[2 * mdlen] = '\0';
}


/* a header's value in [head, end), or NULL */
static const char *
header(const char *head, const char *end, const char *name, size_t *len)
{
    size_t       n = strlen(name);
    const char  *p, *e;

    for (p = head; p < end; p = e + 2) {
        e = memmem(p, end - p, "\r\n", 2);
        if (e == NULL) {
            return NULL;
        }
        if ((size_t) (e - p) > n + 1 && p[n] == ':'
            && strncasecmp(p, name, n) == 0)
        {
            p += n + 1;
            while (p < e && *p == ' ') {
                p++;
            }
            *len = e - p;
            return p;
        }
    }
    return NULL;
}


static int
reply(conn_t *c, int status, const char *body, size_t blen)
{
    char    head[512], ts[32], sig[65];
    size_t  hlen;
    ssize_t n;

    snprintf(ts, sizeof(ts), "%ld", (long) time(NULL));
    {
        char pre[40];
        int  plen = snprintf(pre, sizeof(pre), "%s\n", ts);
        hmac_hex(pre, plen, body, blen, sig);
    }

    hlen = snprintf(head, sizeof(head),
                    "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                    "Content-Length: %zu\r\nX-Acquirer-Timestamp: %s\r\n"
                    "X-Acquirer-Signature: %s\r\n\r\n",
                    status, status == 200 ? "OK" : status == 400
                    ? "Bad Request" : status == 401 ? "Unauthorized"
                    : status == 409 ? "Conflict" : "Not Found", blen, ts,
                    sig);

    /* small answers: one writev-sized copy, sent at once */
    {
        char   out[BUF_SIZE];
        size_t len = hlen + blen;

        if (len > sizeof(out)) {
            return -1;
        }
        memcpy(out, head, hlen);
        memcpy(out + hlen, body, blen);
        n = send(c->fd, out, len, MSG_NOSIGNAL);
        return n == (ssize_t) len ? 0 : -1;
    }
}


static int
charge(conn_t *c, const char *body, size_t blen)
{
    json_t        *req, *ans, *card, *prev, *old;
    const char    *no, *cur, *num;
    json_int_t     amount;
    char          *out, id[28];
    unsigned char  rnd[12];
    int            i, rc, same;
    size_t         nlen;

    req = json_loadb(body, blen, 0, NULL);
    no = json_string_value(json_object_get(req, "out_trade_no"));
    cur = json_string_value(json_object_get(req, "currency"));
    amount = json_integer_value(json_object_get(req, "amount"));
    card = json_object_get(req, "card");
    num = json_string_value(json_object_get(card, "number"));

    if (no == NULL || cur == NULL || amount <= 0 || num == NULL
        || (nlen = strlen(num)) < 12)
    {
        json_decref(req);
        return REPLY(c, 400, "{\"error\":\"invalid_request\"}");
    }

    prev = json_object_get(charges, no);

    if (prev) {
        /* a retry: the first answer, unless it asks for another charge */
        old = json_loads(json_string_value(prev), 0, NULL);
        same = json_integer_value(json_object_get(old, "amount")) == amount
               && strcmp(json_string_value(json_object_get(old, "currency")),
                         cur) == 0;
        json_decref(old);
        json_decref(req);
        return same ? reply(c, 200, json_string_value(prev),
                            json_string_length(prev))
                    : REPLY(c, 409, "{\"error\":\"conflicting_request\"}");
    }

    RAND_bytes(rnd, sizeof(rnd));
    memcpy(id, "ch_", 3);
    for (i = 0; i < 12; i++) {
        sprintf(id + 3 + 2 * i, "%02x", rnd[i]);
    }

    ans = json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:s}",
                    "charge_id", id, "out_trade_no", no,
                    "status", "approved", "amount", amount, "currency", cur,
                    "card_brand", num[0] == '4' ? "visa" : "unknown",
                    "card_last4", num + nlen - 4);
    out = json_dumps(ans, JSON_COMPACT);

    json_object_set_new(charges, no, json_string(out));

    rc = reply(c, 200, out, strlen(out));

    free(out);
    json_decref(ans);
    json_decref(req);

    return rc;
}


static int
refund(conn_t *c, const char *body, size_t blen)
{
    json_t        *req, *ans, *prev, *old;
    const char    *no, *rno, *cur;
    json_int_t     amount;
    char          *out, id[28];
    unsigned char  rnd[12];
    int            i, rc, same;

    req = json_loadb(body, blen, 0, NULL);
    no = json_string_value(json_object_get(req, "out_trade_no"));
    rno = json_string_value(json_object_get(req, "out_refund_no"));
    cur = json_string_value(json_object_get(req, "currency"));
    amount = json_integer_value(json_object_get(req, "amount"));

    if (no == NULL || rno == NULL || cur == NULL || amount <= 0) {
        json_decref(req);
        return REPLY(c, 400, "{\"error\":\"invalid_request\"}");
    }

    prev = json_object_get(refunds, rno);

    if (prev) {
        old = json_loads(json_string_value(prev), 0, NULL);
        same = json_integer_value(json_object_get(old, "amount")) == amount
               && strcmp(json_string_value(json_object_get(old, "currency")),
                         cur) == 0
               && strcmp(json_string_value(json_object_get(old,
                                                           "out_trade_no")),
                         no) == 0;
        json_decref(old);
        json_decref(req);
        return same ? reply(c, 200, json_string_value(prev),
                            json_string_length(prev))
                    : REPLY(c, 409, "{\"error\":\"conflicting_request\"}");
    }

    RAND_bytes(rnd, sizeof(rnd));
    memcpy(id, "re_", 3);
    for (i = 0; i < 12; i++) {
        sprintf(id + 3 + 2 * i, "%02x", rnd[i]);
    }

    ans = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s}",
                    "refund_id", id, "out_refund_no", rno,
                    "out_trade_no", no, "status", "succeeded",
                    "amount", amount, "currency", cur);
    out = json_dumps(ans, JSON_COMPACT);

    json_object_set_new(refunds, rno, json_string(out));

    rc = reply(c, 200, out, strlen(out));

    free(out);
    json_decref(ans);
    json_decref(req);

    return rc;
}


/* a query: the charge's or refund's answer as it was given (signed anew) */
static int
query(conn_t *c, json_t *answers, const char *no, size_t len)
{
    char     key[128];
    json_t  *prev;

    if (len >= sizeof(key)) {
        return REPLY(c, 404, "{\"error\":\"not_found\"}");
    }

    memcpy(key, no, len);
    key[len] = '\0';

    prev = json_object_get(answers, key);

    return prev ? reply(c, 200, json_string_value(prev),
                        json_string_length(prev))
                : REPLY(c, 404, "{\"error\":\"not_found\"}");
}


/* one request in c->in: 1 handled (consumed), 0 incomplete, -1 close */
static int
handle(conn_t *c)
{
    char        *end, *line_end, *sp1, *sp2, pre[600], sig[65];
    const char  *v, *body;
    size_t       vlen, blen = 0, hlen, total;
    int          plen, ok, rc;

    end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (end == NULL) {
        return c->in_len >= BUF_SIZE ? -1 : 0;
    }

    hlen = end + 4 - c->in;
    line_end = memmem(c->in, hlen, "\r\n", 2);

    v = header(line_end + 2, end + 2, "Content-Length", &vlen);
    if (v) {
        blen = strtoul(v, NULL, 10);
    }

    total = hlen + blen;
    if (total > BUF_SIZE) {
        return -1;
    }
    if (c->in_len < total) {
        return 0;
    }

    body = c->in + hlen;
    sp1 = memchr(c->in, ' ', line_end - c->in);
    sp2 = sp1 ? memchr(sp1 + 1, ' ', line_end - sp1 - 1) : NULL;
    if (sp2 == NULL) {
        return -1;
    }

    /* every request must be the gateway's: merchant and signature */

    ok = 0;
    v = header(line_end + 2, end + 2, "X-Acquirer-Merchant", &vlen);
    if (v && vlen == strlen(merchant) && memcmp(v, merchant, vlen) == 0) {
        v = header(line_end + 2, end + 2, "X-Acquirer-Timestamp", &vlen);
        if (v && vlen < 20 && sp2 - c->in < 500) {
            plen = snprintf(pre, sizeof(pre), "%.*s\n%.*s\n%.*s\n",
                            (int) vlen, v, (int) (sp1 - c->in), c->in,
                            (int) (sp2 - sp1 - 1), sp1 + 1);
            hmac_hex(pre, plen, body, blen, sig);
            v = header(line_end + 2, end + 2, "X-Acquirer-Signature", &vlen);
            ok = v && vlen == 64 && CRYPTO_memcmp(v, sig, 64) == 0;
        }
    }

    if (!ok) {
        rc = REPLY(c, 401, "{\"error\":\"bad_signature\"}");

    } else if (sp1 - c->in == 4 && memcmp(c->in, "POST", 4) == 0
               && sp2 - sp1 - 1 == 20
               && memcmp(sp1 + 1, "/acquirer/v1/charges", 20) == 0)
    {
        rc = charge(c, body, blen);

    } else if (sp1 - c->in == 3 && memcmp(c->in, "GET", 3) == 0
               && sp2 - sp1 - 1 > 21
               && memcmp(sp1 + 1, "/acquirer/v1/charges/", 21) == 0)
    {
        rc = query(c, charges, sp1 + 22, sp2 - sp1 - 22);

    } else if (sp1 - c->in == 4 && memcmp(c->in, "POST", 4) == 0
               && sp2 - sp1 - 1 == 20
               && memcmp(sp1 + 1, "/acquirer/v1/refunds", 20) == 0)
    {
        rc = refund(c, body, blen);

    } else if (sp1 - c->in == 3 && memcmp(c->in, "GET", 3) == 0
               && sp2 - sp1 - 1 > 21
               && memcmp(sp1 + 1, "/acquirer/v1/refunds/", 21) == 0)
    {
        rc = query(c, refunds, sp1 + 22, sp2 - sp1 - 22);

    } else {
        rc = REPLY(c, 400, "{\"error\":\"unsupported\"}");
    }

    if (rc != 0) {
        return -1;
    }

    memmove(c->in, c->in + total, c->in_len - total);
    c->in_len -= total;

    return 1;
}


static void
drop(int ep, conn_t *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    conns[c->fd] = NULL;
    free(c);
}


int
main(int argc, char **argv)
{
    int                 ls, ep, n, i, fd, one = 1, rc;
    FILE               *f;
    ssize_t             got;
    conn_t             *c;
    struct sockaddr_in  sa;
    struct epoll_event  ev, evs[256];

    if (argc != 4) {
        fprintf(stderr, "usage: %s PORT SECRET_FILE MERCHANT\n", argv[0]);
        return 2;
    }

    f = fopen(argv[2], "r");
    if (f == NULL) {
        perror(argv[2]);
        return 1;
    }
    secret_len = fread(secret, 1, sizeof(secret) - 1, f);
    fclose(f);
    while (secret_len && (secret[secret_len - 1] == '\n'
                          || secret[secret_len - 1] == '\r'
                          || secret[secret_len - 1] == ' '))
    {
        secret_len--;
    }
    merchant = argv[3];
    charges = json_object();
    refunds = json_object();

    signal(SIGPIPE, SIG_IGN);

    ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short) atoi(argv[1]));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *) &sa, sizeof(sa)) != 0
        || listen(ls, 1024) != 0)
    {
        perror("bind/listen");
        return 1;
    }

    ep = epoll_create1(0);
    ev.events = EPOLLIN;
    ev.data.fd = ls;
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);

    for ( ;; ) {
        n = epoll_wait(ep, evs, 256, -1);

        for (i = 0; i < n; i++) {
            fd = evs[i].data.fd;

            if (fd == ls) {
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (fd >= MAX_CONNS) {
                        close(fd);
                        continue;
                    }
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
                               sizeof(one));
                    c = calloc(1, sizeof(conn_t));
                    c->fd = fd;
                    conns[fd] = c;
                    ev.events = EPOLLIN;
                    ev.data.fd = fd;
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }

            c = conns[fd];
            if (c == NULL) {
                continue;
            }

            got = recv(fd, c->in + c->in_len, BUF_SIZE - c->in_len, 0);
            if (got <= 0) {
                if (got < 0 && (errno == EAGAIN || errno == EINTR)) {
                    continue;
                }
                drop(ep, c);
                continue;
            }
            c->in_len += got;

            while ((rc = handle(c)) == 1) { /* pipelined requests */ }

            if (rc < 0) {
                drop(ep, c);
            }
        }
    }
}
