
/*
 * paygw: merchant webhooks (SPEC §5): the sender's configuration, the
 * delivery round run by POST /v1/admin/webhooks/deliver, and the
 * merchant's events API.
 */


#ifndef _NGX_HTTP_PAYGW_WEBHOOK_H_INCLUDED_
#define _NGX_HTTP_PAYGW_WEBHOOK_H_INCLUDED_


#include "ngx_http_paygw_types.h"
#include "ngx_http_paygw_self.h"
#include "ngx_http_paygw_handoff.h"
#include <openssl/evp.h>


#define NGX_HTTP_PAYGW_API_DELIVER      30  /* one delivery round */
#define NGX_HTTP_PAYGW_API_EVENTS       31  /* GET /v1/events */
#define NGX_HTTP_PAYGW_API_REDELIVER    32  /* POST /v1/events/{id}/... */

#define NGX_HTTP_PAYGW_WH_MAX_RETRIES   32
#define NGX_HTTP_PAYGW_WH_MAX_SECRETS   4
#define NGX_HTTP_PAYGW_GONE             410

/* paygw_webhook_deliveries_total{result} */
#define NGX_HTTP_PAYGW_M_WH_DELIVERED   0
#define NGX_HTTP_PAYGW_M_WH_FAILED      1
#define NGX_HTTP_PAYGW_M_WH_DISABLED    2
#define NGX_HTTP_PAYGW_M_WH_REFUSED     3


typedef struct {
    ngx_str_t                     merchant_id;
    ngx_uint_t                    nsecrets;
    ngx_str_t                     secrets[NGX_HTTP_PAYGW_WH_MAX_SECRETS];
    EVP_MAC_CTX                  *keyed[NGX_HTTP_PAYGW_WH_MAX_SECRETS];
                                                 /* per process, on first
                                                    use */
} ngx_http_paygw_wh_secret_t;


typedef struct {
    /* the ticker: rounds sent to the gateway's own listener */
    ngx_http_paygw_self_t         self;
    ngx_str_t                     key_id;
    ngx_uint_t                    batch;
    ngx_uint_t                    parallel;      /* POSTs of a round */
    ngx_msec_t                    lease;
    time_t                        retention;
    ngx_uint_t                    stream_maxlen;
    ngx_uint_t                    handoff;       /* events queued at most */

    ngx_str_t                     location;      /* the proxy_pass one */
    ngx_array_t                   secrets;       /* wh_secret_t */
    ngx_uint_t                    nretries;
    ngx_msec_t                    retry[NGX_HTTP_PAYGW_WH_MAX_RETRIES];
    ngx_flag_t                    allow_loopback;

    /* per worker */
    ngx_uint_t                    claimed;       /* by the last round */
} ngx_http_paygw_webhook_conf_t;


/* one event of a delivery round */

typedef struct {
    ngx_http_paygw_call_t         call;          /* the POST's subrequest */
    void                         *round;
    ngx_str_t                     id;            /* outbox_events.id */
    ngx_str_t                     event_id;
    ngx_str_t                     merchant_id;
    ngx_str_t                     type;
    ngx_str_t                     url;
    ngx_str_t                     payload;
    ngx_uint_t                    attempts;      /* before this one */
    ngx_uint_t                    streamed;
    ngx_uint_t                    disabled;      /* its endpoint is */
    ngx_str_t                     timestamp;
    ngx_str_t                     signature;
    ngx_str_t                     host;          /* name, for SNI */
    ngx_str_t                     authority;     /* Host: header */
    ngx_str_t                     scheme;        /* "http", "https" */
    ngx_str_t                     uri;           /* path and query */
    ngx_sockaddr_t                sockaddr;      /* the checked one */
    socklen_t                     socklen;       /* 0: not yet known */
    in_port_t                     port;
    ngx_uint_t                    status;        /* the receiver's */
    const char                   *error;         /* why not 2xx */
    ngx_msec_t                    start;
    void                         *request;       /* the round's */
    ngx_resolver_ctx_t           *rctx;          /* while resolving */
    unsigned                      send:1;
    unsigned                      deferred:1;    /* put back, not sent */
    unsigned                      refused:1;
    unsigned                      recorded:1;
} ngx_http_paygw_wh_event_t;


/* ngx_http_paygw_webhook.c: directives, the ticker, destinations */
char *ngx_http_paygw_webhook(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_paygw_webhook_secrets(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_paygw_webhook_retry(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_paygw_webhook_flag(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_paygw_webhook_check(ngx_conf_t *cf,
    ngx_http_paygw_main_conf_t *pmcf);
ngx_int_t ngx_http_paygw_webhook_init_process(ngx_cycle_t *cycle);
ngx_int_t ngx_http_paygw_webhook_add_variables(ngx_conf_t *cf);
ngx_http_paygw_webhook_conf_t *ngx_http_paygw_webhook_conf(
    ngx_http_request_t *r);
ngx_http_paygw_wh_secret_t *ngx_http_paygw_webhook_secret(
    ngx_http_paygw_webhook_conf_t *wc, ngx_str_t *merchant_id);
ngx_int_t ngx_http_paygw_webhook_destination(
    ngx_http_paygw_webhook_conf_t *wc, ngx_http_paygw_wh_event_t *ev,
    ngx_pool_t *pool);
const char *ngx_http_paygw_webhook_address(
    ngx_http_paygw_webhook_conf_t *wc, struct sockaddr *sa);
ngx_uint_t ngx_http_paygw_url_unsafe(ngx_str_t *url);
ngx_int_t ngx_http_paygw_webhook_pin(ngx_pool_t *pool,
    ngx_http_paygw_wh_event_t *ev, struct sockaddr *sa, socklen_t len);
ngx_msec_t ngx_http_paygw_webhook_delay(ngx_http_paygw_webhook_conf_t *wc,
    ngx_uint_t attempts);

/* ngx_http_paygw_webhook_peer.c: the balancer, kept connections */
char *ngx_http_paygw_webhook_peer(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_paygw_webhook_peer_postconf(ngx_conf_t *cf);

/* ngx_http_paygw_events.c: the endpoints */
ngx_int_t ngx_http_paygw_deliver(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_events(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
ngx_int_t ngx_http_paygw_redeliver(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);

/* ngx_http_paygw_handoff.c: events of a request, queued after COMMIT */
ngx_str_t *ngx_http_paygw_handoff_lease(ngx_http_request_t *r);
ngx_int_t ngx_http_paygw_handoff_add(ngx_http_request_t *r,
    ngx_http_paygw_mysql_op_t *op, ngx_str_t *fields);
ngx_uint_t ngx_http_paygw_handoff_claim_turn(ngx_http_request_t *r,
    ngx_http_paygw_webhook_conf_t *wc);
void ngx_http_paygw_handoff_claimed(ngx_http_request_t *r,
    ngx_uint_t full);
ngx_uint_t ngx_http_paygw_handoff_take(ngx_http_request_t *r,
    ngx_http_paygw_webhook_conf_t *wc, ngx_http_paygw_wh_event_t **events,
    ngx_msec_t *half, ngx_str_t *owner);
ngx_uint_t ngx_http_paygw_handoff_waiting(ngx_cycle_t *cycle);

/* ngx_http_paygw_store_events.c: their SQL */
ngx_int_t ngx_http_paygw_store_claim_events(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *owner, ngx_msec_t lease, ngx_uint_t batch);
ngx_int_t ngx_http_paygw_store_event_result(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *owner, ngx_http_paygw_wh_event_t *ev, const char *status,
    ngx_msec_t delay);
ngx_int_t ngx_http_paygw_store_disabled(ngx_http_paygw_mysql_op_t *op,
    ngx_http_paygw_wh_event_t *evs, ngx_uint_t n);
ngx_int_t ngx_http_paygw_store_events_delivered(
    ngx_http_paygw_mysql_op_t *op, ngx_str_t *owner,
    ngx_http_paygw_wh_event_t **evs, ngx_uint_t n);
ngx_int_t ngx_http_paygw_store_events_skipped(
    ngx_http_paygw_mysql_op_t *op, ngx_str_t *owner,
    ngx_http_paygw_wh_event_t **evs, ngx_uint_t n);
ngx_int_t ngx_http_paygw_store_events_released(
    ngx_http_paygw_mysql_op_t *op, ngx_str_t *owner,
    ngx_http_paygw_wh_event_t **evs, ngx_uint_t n);
ngx_int_t ngx_http_paygw_store_housekeeping(ngx_http_paygw_mysql_op_t *op,
    time_t retention);
ngx_int_t ngx_http_paygw_store_list_events(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *merchant_id, ngx_str_t *after, ngx_uint_t limit);
ngx_int_t ngx_http_paygw_store_redeliver(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *merchant_id, ngx_str_t *event_id);

/* ngx_http_paygw_metrics.c */
void ngx_http_paygw_m_webhook(ngx_http_request_t *r, ngx_uint_t result,
    ngx_msec_t ms);
void ngx_http_paygw_m_backlog(ngx_http_request_t *r, ngx_uint_t count,
    ngx_uint_t oldest);


#endif /* _NGX_HTTP_PAYGW_WEBHOOK_H_INCLUDED_ */
