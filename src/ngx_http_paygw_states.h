
/*
 * paygw: the states of payments and refunds, and the risk verdicts.
 *
 * They are enums everywhere in the module; their text exists only in
 * one name table (ngx_http_paygw_states.c), used where a state meets
 * MySQL, JSON or a provider's protocol.  Payment states move forward
 * only, as ngx_http_paygw_pay_transition_ok() says.
 */


#ifndef _NGX_HTTP_PAYGW_STATES_H_INCLUDED_
#define _NGX_HTTP_PAYGW_STATES_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * A refund is pending, succeeded, failed or unknown; a payment may be
 * any of them.  NONE: nothing said (a callback with no final state).
 */

typedef enum {
    NGX_HTTP_PAYGW_STATUS_NONE = 0,
    NGX_HTTP_PAYGW_STATUS_PENDING,
    NGX_HTTP_PAYGW_STATUS_PROCESSING,
    NGX_HTTP_PAYGW_STATUS_SUCCEEDED,
    NGX_HTTP_PAYGW_STATUS_FAILED,
    NGX_HTTP_PAYGW_STATUS_CLOSED,
    NGX_HTTP_PAYGW_STATUS_UNKNOWN,
    NGX_HTTP_PAYGW_STATUS_PARTIALLY_REFUNDED,
    NGX_HTTP_PAYGW_STATUS_REFUNDED
} ngx_http_paygw_status_e;


/* what the risk rules said of a payment */

typedef enum {
    NGX_HTTP_PAYGW_RISK_UNEVALUATED = 0,    /* no answer: fail closed */
    NGX_HTTP_PAYGW_RISK_ALLOW,
    NGX_HTTP_PAYGW_RISK_DENY                /* with a reason code */
} ngx_http_paygw_verdict_e;


ngx_str_t *ngx_http_paygw_status_name(ngx_http_paygw_status_e status);
ngx_http_paygw_status_e ngx_http_paygw_status_parse(ngx_str_t *name);
ngx_uint_t ngx_http_paygw_pay_transition_ok(ngx_http_paygw_status_e from,
    ngx_http_paygw_status_e to);
ngx_uint_t ngx_http_paygw_refund_transition_ok(ngx_http_paygw_status_e from,
    ngx_http_paygw_status_e to);
ngx_http_paygw_verdict_e ngx_http_paygw_verdict_parse(u_char *text,
    size_t len);


#endif /* _NGX_HTTP_PAYGW_STATES_H_INCLUDED_ */
