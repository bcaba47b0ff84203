
/*
 * paygw: a circuit breaker per channel, shared by all workers.
 *
 * After `breaker_failures` consecutive failed provider calls (no answer,
 * or a 5xx) the channel opens for `breaker_timeout`: calls are refused at
 * once (503 channel_unavailable) instead of piling up on a provider that
 * is down.  Then one call is let through as a probe (half-open); its
 * success closes the breaker, its failure opens it again.  The state
 * lives in paygw_zone, in the channel's slot, under the zone's mutex,
 * and is exported as paygw_circuit_state{channel} (0 closed, 1 open,
 * 2 half-open).
 */


#include "ngx_http_paygw_channel.h"
#include "ngx_http_paygw_zone.h"


#define NGX_HTTP_PAYGW_CLOSED     0
#define NGX_HTTP_PAYGW_OPEN       1
#define NGX_HTTP_PAYGW_HALF_OPEN  2


static ngx_http_paygw_breaker_t *ngx_http_paygw_breaker_lock(
    ngx_http_request_t *r, ngx_http_paygw_channel_t *ch,
    ngx_slab_pool_t **shpool);


ngx_int_t
ngx_http_paygw_breaker_allow(ngx_http_request_t *r,
    ngx_http_paygw_channel_t *ch)
{
    ngx_int_t                  rc;
    ngx_msec_t                 since;
    ngx_slab_pool_t           *shpool;
    ngx_http_paygw_breaker_t  *b;

    b = ngx_http_paygw_breaker_lock(r, ch, &shpool);
    if (b == NULL) {
        return NGX_OK;
    }

    rc = NGX_OK;

    if (b->state != NGX_HTTP_PAYGW_CLOSED) {

        /*
         * Open: refused until the ejection time is over, then this call
         * is the one probe (half-open).  Half-open: refused while the
         * probe runs; a probe lost with its worker counts as over after
         * the same time.
         */

        since = (b->state == NGX_HTTP_PAYGW_OPEN) ? b->opened_at
                                                  : b->probe_at;

        if ((ngx_msec_int_t) (ngx_current_msec - since)
            < (ngx_msec_int_t) ch->breaker_timeout)
        {
            rc = NGX_DECLINED;

        } else {
            b->state = NGX_HTTP_PAYGW_HALF_OPEN;
            b->probe_at = ngx_current_msec;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return rc;
}


void
ngx_http_paygw_breaker_record(ngx_http_request_t *r,
    ngx_http_paygw_channel_t *ch, ngx_uint_t failed)
{
    ngx_uint_t                 opened, failures;
    ngx_slab_pool_t           *shpool;
    ngx_http_paygw_breaker_t  *b;

    b = ngx_http_paygw_breaker_lock(r, ch, &shpool);
    if (b == NULL) {
        return;
    }

    opened = 0;
    failures = 0;

    if (!failed) {
        b->failures = 0;
        b->state = NGX_HTTP_PAYGW_CLOSED;

    } else if (b->state == NGX_HTTP_PAYGW_HALF_OPEN
               || ++b->failures >= ch->breaker_failures)
    {
        opened = (b->state != NGX_HTTP_PAYGW_OPEN);
        failures = b->failures;

        b->state = NGX_HTTP_PAYGW_OPEN;
        b->opened_at = ngx_current_msec;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    /* logged after the unlock: a log write never holds other workers up */

    if (opened) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "paygw: channel \"%V\" circuit opened after %ui "
                      "failed calls", &ch->name, failures);
    }
}


static ngx_http_paygw_breaker_t *
ngx_http_paygw_breaker_lock(ngx_http_request_t *r,
    ngx_http_paygw_channel_t *ch, ngx_slab_pool_t **shpool)
{
    ngx_http_paygw_shctx_t  *sh;

    /* the channel's breaker, locked; NULL when there is none */

    sh = ngx_http_paygw_shctx(r);

    if (sh == NULL || ch->breaker_failures == 0) {
        return NULL;
    }

    *shpool = ngx_http_paygw_shpool(r);

    ngx_shmtx_lock(&(*shpool)->mutex);

    return &sh->breaker[ch->slot];
}

