
/*
 * paygw: the types every part of the API shares: the request context,
 * payments and refunds as the handlers see them, a provider's outcome
 * and a verified callback.  Providers, metrics and the store include
 * this header, not the API's.
 */


#ifndef _NGX_HTTP_PAYGW_TYPES_H_INCLUDED_
#define _NGX_HTTP_PAYGW_TYPES_H_INCLUDED_


#include "ngx_http_paygw.h"
#include "ngx_http_paygw_states.h"
#include "ngx_http_paygw_redis.h"
#include "ngx_http_paygw_mysql.h"
#include "ngx_http_paygw_auth.h"
#include "ngx_http_paygw_idempotency.h"


#define NGX_HTTP_PAYGW_API_CREATE       1
#define NGX_HTTP_PAYGW_API_GET          2
#define NGX_HTTP_PAYGW_API_FIND         3   /* ?business_no= */
#define NGX_HTTP_PAYGW_API_REFUND       4
#define NGX_HTTP_PAYGW_API_GET_REFUND   5
#define NGX_HTTP_PAYGW_API_CLOSE        6
#define NGX_HTTP_PAYGW_API_RESOLVE      7   /* settle unknown payments */
#define NGX_HTTP_PAYGW_API_NOTIFY       8   /* a provider's callback */

/* SPEC §7 (counted as "other" in the metrics) */
#define NGX_HTTP_PAYGW_API_SETTLEMENTS  20
#define NGX_HTTP_PAYGW_API_RECONCILE    21
#define NGX_HTTP_PAYGW_API_GET_RECON    22
#define NGX_HTTP_PAYGW_API_RECON_RUN    23

#define NGX_HTTP_PAYGW_MAX_AMOUNT       1000000000000LL
#define NGX_HTTP_PAYGW_UNPROCESSABLE    422
#define NGX_HTTP_PAYGW_ER_DUP_ENTRY     1062

/* an error message, and the client's text quoted in one */
#define NGX_HTTP_PAYGW_MAX_MESSAGE      1024
#define NGX_HTTP_PAYGW_MAX_QUOTE        64


typedef struct ngx_http_paygw_channel_s  ngx_http_paygw_channel_t;


typedef struct {
    ngx_str_t                     payment_no;
    ngx_str_t                     merchant_id;
    ngx_str_t                     business_no;
    int64_t                       amount;
    ngx_str_t                     currency;
    ngx_str_t                     channel;
    ngx_http_paygw_status_e       status;
    ngx_str_t                     channel_trade_no;
    int64_t                       refunded_amount;
    int64_t                       refund_reserved;
    ngx_str_t                     subject;
    ngx_str_t                     notify_url;
    ngx_str_t                     metadata;      /* JSON text */
    ngx_str_t                     pay_url;
    ngx_str_t                     qr_code;
    ngx_str_t                     code_url;
    ngx_str_t                     card_brand;
    ngx_str_t                     card_last4;
    ngx_str_t                     failure_code;
    ngx_str_t                     failure_message;
    ngx_str_t                     created_at;
    ngx_str_t                     updated_at;
    int64_t                       expire_seconds;
    time_t                        age;           /* seconds since update */
    time_t                        overdue;       /* seconds past expiry */

    /* fees (SPEC §7): set once the payment succeeded */
    int64_t                       fee;
    int64_t                       net_amount;
    unsigned                      fee_set:1;

    /* the card, in memory for the charge only: never stored or logged */
    ngx_str_t                     card_number;
    ngx_str_t                     card_cvc;
    int64_t                       card_exp_month;
    int64_t                       card_exp_year;
} ngx_http_paygw_payment_t;


typedef struct {
    ngx_str_t                     refund_no;
    ngx_str_t                     out_refund_no;
    ngx_str_t                     payment_no;
    ngx_str_t                     merchant_id;
    int64_t                       amount;
    ngx_str_t                     currency;
    ngx_http_paygw_status_e       status;
    ngx_str_t                     reason;
    ngx_str_t                     channel_refund_no;
    ngx_str_t                     failure_code;
    ngx_str_t                     created_at;
    ngx_str_t                     updated_at;
    time_t                        age;           /* seconds since update */
    int64_t                       payment_amount;
} ngx_http_paygw_refund_t;


/* what a provider said about a charge or a refund */

typedef struct {
    ngx_http_paygw_status_e       status;        /* new payment/refund status */
    ngx_str_t                     provider_no;   /* channel trade/refund no */
    ngx_str_t                     failure_code;
    ngx_str_t                     failure_message;
    ngx_str_t                     card_brand;
    ngx_str_t                     card_last4;
    ngx_str_t                     qr_code;       /* Alipay */
    ngx_str_t                     code_url;      /* WeChat Pay */
    unsigned                      definitive:1;  /* not "unknown" */
    unsigned                      not_found:1;   /* provider never saw it */
    unsigned                      not_closable:1;    /* paid meanwhile */
} ngx_http_paygw_outcome_t;


/*
 * What a verified provider callback said: the payment it is about and
 * the state it reports (NONE when it reports no final state).
 */

typedef struct {
    ngx_str_t                     out_trade_no;
    ngx_http_paygw_status_e       status;
    ngx_str_t                     provider_no;
    ngx_str_t                     currency;
    int64_t                       amount;
    ngx_str_t                     out_refund_no; /* a refund's callback */
} ngx_http_paygw_notice_t;


typedef struct ngx_http_paygw_ctx_s  ngx_http_paygw_ctx_t;

typedef ngx_int_t (*ngx_http_paygw_step_pt)(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);


struct ngx_http_paygw_ctx_s {
    ngx_uint_t                    api;
    ngx_str_t                     object_no;     /* from the URI */
    ngx_str_t                     body;

    ngx_http_paygw_auth_t         auth;
    ngx_str_t                     merchant_id;   /* whose data this is */
    ngx_http_paygw_idem_t         idem;

    ngx_http_paygw_payment_t      payment;
    ngx_http_paygw_refund_t       refund;
    ngx_http_paygw_outcome_t      outcome;
    ngx_http_paygw_channel_t     *channel;
    ngx_http_paygw_notice_t       notice;        /* a provider's callback */
    const char                   *notice_error;  /* why it was refused */

    ngx_uint_t                    access;        /* ACCESS phase stage */
    ngx_uint_t                    phase;         /* CONTENT phase stage */
    ngx_int_t                     sent;          /* the answer's send rc */
    ngx_http_paygw_step_pt        next;          /* its step that runs next */
    ngx_uint_t                    attempt;
    ngx_http_paygw_step_pt        step;          /* the API handler */
    ngx_http_paygw_call_t        *waiting;
    ngx_http_paygw_redis_op_t    *redis;
    ngx_http_paygw_redis_op_t    *keep;          /* the idempotent record */
    ngx_http_paygw_mysql_op_t    *mysql;
    void                         *provider;      /* channel call */

    ngx_http_paygw_redis_op_t    *cache;         /* payment cache */
    ngx_str_t                     cache_gen;     /* generation a miss saw */
    ngx_msec_t                    cache_at;      /* when it was read */
    ngx_uint_t                    cache_reply;   /* its reply in ->redis */
    unsigned                      cache_read:1;
    unsigned                      cache_marked:1; /* a writer's mark */

    ngx_http_paygw_mysql_op_t    *candidates;    /* resolve: stale payments */
    ngx_uint_t                    candidate;
    ngx_uint_t                    settled;
    ngx_uint_t                    examined;

    void                         *notify_channel;
    ngx_str_t                     claim;         /* resolve: this run's */
    unsigned                      due:1;         /* resolve: due rows only */
    unsigned                      refunds_phase:1; /* resolve: refunds */
    unsigned                      resent:1;      /* refund sent again */

    void                         *recon;         /* SPEC §7 reconciliation */

    void                         *events;        /* webhooks, events API */

    unsigned                      side_effect:1; /* keep the answer */
    unsigned                      reread:1;
    unsigned                      body_read:1;

    const char                   *allow;         /* for a 405 */
    const char                   *risk_reason;
    /*
     * Set by the last ACCESS check, and only when every check passed:
     * the content handler runs an endpoint on this alone, never because
     * no error was recorded.
     */
    unsigned                      access_passed:1;

    ngx_uint_t                    status;        /* the response */
    ngx_str_t                     response;
    ngx_str_t                    *content_type;  /* NULL: JSON */
    unsigned                      replayed:1;
    unsigned                      kept_again:1;  /* its write was resent */
};


#endif /* _NGX_HTTP_PAYGW_TYPES_H_INCLUDED_ */
