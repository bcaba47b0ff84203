
/*
 * paygw: the one name table of payment and refund states, and the
 * table of the moves they may make.
 */


#include "ngx_http_paygw_states.h"


#define ngx_http_paygw_st(s)  (1 << NGX_HTTP_PAYGW_STATUS_ ## s)


/* indexed by ngx_http_paygw_status_e: the text MySQL and JSON carry */

static ngx_str_t  ngx_http_paygw_status_names[] = {
    ngx_null_string,
    ngx_string("pending"),
    ngx_string("processing"),
    ngx_string("succeeded"),
    ngx_string("failed"),
    ngx_string("closed"),
    ngx_string("unknown"),
    ngx_string("partially_refunded"),
    ngx_string("refunded")
};


/*
 * Forward only, as the store's conditional updates enforce it: a final
 * state from any open one; "pending" (a QR code waiting for its buyer)
 * and "unknown" only from before the provider said so; refunds after
 * success.
 */

static ngx_uint_t  ngx_http_paygw_pay_moves[] = {
    0,                                           /* none */
    ngx_http_paygw_st(SUCCEEDED)                 /* pending */
    | ngx_http_paygw_st(FAILED)
    | ngx_http_paygw_st(CLOSED),
    ngx_http_paygw_st(PENDING)                   /* processing */
    | ngx_http_paygw_st(SUCCEEDED)
    | ngx_http_paygw_st(FAILED)
    | ngx_http_paygw_st(CLOSED)
    | ngx_http_paygw_st(UNKNOWN),
    ngx_http_paygw_st(PARTIALLY_REFUNDED)        /* succeeded */
    | ngx_http_paygw_st(REFUNDED),
    0,                                           /* failed */
    0,                                           /* closed */
    ngx_http_paygw_st(PENDING)                   /* unknown */
    | ngx_http_paygw_st(SUCCEEDED)
    | ngx_http_paygw_st(FAILED)
    | ngx_http_paygw_st(CLOSED)
    | ngx_http_paygw_st(UNKNOWN),
    ngx_http_paygw_st(PARTIALLY_REFUNDED)        /* partially_refunded */
    | ngx_http_paygw_st(REFUNDED),
    0                                            /* refunded */
};


/* a refund settles from "pending" or "unknown", to any refund state */

#define NGX_HTTP_PAYGW_REFUND_STATES                                         \
    (ngx_http_paygw_st(PENDING) | ngx_http_paygw_st(SUCCEEDED)               \
     | ngx_http_paygw_st(FAILED) | ngx_http_paygw_st(UNKNOWN))


ngx_str_t *
ngx_http_paygw_status_name(ngx_http_paygw_status_e status)
{
    if ((ngx_uint_t) status
        >= sizeof(ngx_http_paygw_status_names) / sizeof(ngx_str_t))
    {
        return &ngx_http_paygw_status_names[NGX_HTTP_PAYGW_STATUS_NONE];
    }

    return &ngx_http_paygw_status_names[status];
}


ngx_http_paygw_status_e
ngx_http_paygw_status_parse(ngx_str_t *name)
{
    ngx_uint_t  i;

    for (i = 1;
         i < sizeof(ngx_http_paygw_status_names) / sizeof(ngx_str_t);
         i++)
    {
        if (name->len == ngx_http_paygw_status_names[i].len
            && ngx_strncmp(name->data, ngx_http_paygw_status_names[i].data,
                           name->len) == 0)
        {
            return (ngx_http_paygw_status_e) i;
        }
    }

    return NGX_HTTP_PAYGW_STATUS_NONE;
}


ngx_uint_t
ngx_http_paygw_pay_transition_ok(ngx_http_paygw_status_e from,
    ngx_http_paygw_status_e to)
{
    if ((ngx_uint_t) from
        >= sizeof(ngx_http_paygw_pay_moves) / sizeof(ngx_uint_t))
    {
        return 0;
    }

    return (ngx_http_paygw_pay_moves[from] & (1 << to)) != 0;
}


ngx_uint_t
ngx_http_paygw_refund_transition_ok(ngx_http_paygw_status_e from,
    ngx_http_paygw_status_e to)
{
    if (from != NGX_HTTP_PAYGW_STATUS_PENDING
        && from != NGX_HTTP_PAYGW_STATUS_UNKNOWN)
    {
        return 0;
    }

    return (NGX_HTTP_PAYGW_REFUND_STATES & (1 << to)) != 0;
}


/* the risk script answers "allow" or the code of the rule that denied */

ngx_http_paygw_verdict_e
ngx_http_paygw_verdict_parse(u_char *text, size_t len)
{
    if (len == sizeof("allow") - 1
        && ngx_strncmp(text, "allow", sizeof("allow") - 1) == 0)
    {
        return NGX_HTTP_PAYGW_RISK_ALLOW;
    }

    return NGX_HTTP_PAYGW_RISK_DENY;
}
