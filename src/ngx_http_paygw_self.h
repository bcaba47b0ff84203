
/*
 * paygw: a worker asking the gateway itself to do periodic work.
 *
 * The settler, the reconciliation schedule and webhook delivery each
 * send, every interval, one signed admin request to the gateway's own
 * listener (HTTP/1.0, over loopback), so the work runs as an ordinary
 * authenticated request with all of nginx's machinery.  This is that
 * client, once: the timer, the signed request, the connection, and the
 * next round.
 */


#ifndef _NGX_HTTP_PAYGW_SELF_H_INCLUDED_
#define _NGX_HTTP_PAYGW_SELF_H_INCLUDED_


#include "ngx_http_paygw.h"
#include "ngx_http_paygw_auth.h"


typedef struct ngx_http_paygw_self_s  ngx_http_paygw_self_t;

/* a piece of the answer (NUL-terminated), as it arrives */
typedef void (*ngx_http_paygw_self_answer_pt)(ngx_http_paygw_self_t *self,
    u_char *text);

/* the delay before the next round, after one that ended */
typedef ngx_msec_t (*ngx_http_paygw_self_next_pt)(
    ngx_http_paygw_self_t *self, ngx_uint_t failed);


struct ngx_http_paygw_self_s {
    /* set while the configuration is read */
    ngx_addr_t                   *addr;
    ngx_http_paygw_key_t         *key;          /* an admin key */
    ngx_msec_t                    interval;
    ngx_msec_t                    timeout;      /* for the whole answer */
    const char                   *name;         /* in log lines */
    ngx_str_t                     uri;
    ngx_str_t                     headers;      /* Host: ... CRLF, more */
    ngx_str_t                     idem_prefix;  /* Idempotency-Key: P-nonce */
    ngx_str_t                     body;
    ngx_http_paygw_self_answer_pt answer;       /* NULL: the status only */
    ngx_http_paygw_self_next_pt   next;         /* NULL: the interval */
    void                         *data;

    /* per worker */
    ngx_event_t                   timer;
    ngx_peer_connection_t         peer;
    ngx_buf_t                    *out;
    ngx_log_t                    *log;
    unsigned                      answered:1;
};


char *ngx_http_paygw_self_addr(ngx_conf_t *cf, ngx_http_paygw_self_t *self,
    ngx_str_t *value, const char *directive);
ngx_int_t ngx_http_paygw_self_start(ngx_http_paygw_self_t *self,
    ngx_cycle_t *cycle, ngx_msec_t first);
void ngx_http_paygw_self_soon(ngx_http_paygw_self_t *self, ngx_msec_t delay);


#endif /* _NGX_HTTP_PAYGW_SELF_H_INCLUDED_ */
