
/*
 * paygw: what the paygw_zone shared memory holds: the metrics counters,
 * the circuit breakers and the MySQL writers, as fixed arrays (every
 * label takes its value from a closed set, so the zone never grows).
 * A module built with another layout starts the counters afresh on
 * reload.
 */


#ifndef _NGX_HTTP_PAYGW_ZONE_H_INCLUDED_
#define _NGX_HTTP_PAYGW_ZONE_H_INCLUDED_


#include "ngx_http_paygw.h"
#include "ngx_http_paygw_mysql_ha.h"
#include "ngx_http_paygw_handoff.h"


#define NGX_HTTP_PAYGW_M_APIS          12   /* see ngx_http_paygw_m_api */
#define NGX_HTTP_PAYGW_M_CODES         18
#define NGX_HTTP_PAYGW_M_CHANNELS      NGX_HTTP_PAYGW_SLOTS
#define NGX_HTTP_PAYGW_M_STATUSES      8   /* ngx_http_paygw_status_e - 1 */
#define NGX_HTTP_PAYGW_M_RESULTS       5
#define NGX_HTTP_PAYGW_M_BUCKETS       14

#define NGX_HTTP_PAYGW_M_LAYOUT         0x70670009

/* workers whose malloc figures the zone keeps (memory.c) */
#define NGX_HTTP_PAYGW_M_WORKERS       64


typedef struct {
    ngx_atomic_t                  bucket[NGX_HTTP_PAYGW_M_BUCKETS];
    ngx_atomic_t                  sum_us;
    ngx_atomic_t                  count;
} ngx_http_paygw_hist_t;


typedef struct {
    ngx_atomic_t                  requests[NGX_HTTP_PAYGW_M_APIS]
                                          [NGX_HTTP_PAYGW_M_CODES];
    ngx_http_paygw_hist_t         duration[NGX_HTTP_PAYGW_M_APIS];
    ngx_atomic_t                  payments[NGX_HTTP_PAYGW_M_CHANNELS]
                                          [NGX_HTTP_PAYGW_M_STATUSES];
    ngx_atomic_t                  channel_requests[NGX_HTTP_PAYGW_M_CHANNELS]
                                                  [NGX_HTTP_PAYGW_M_RESULTS];
    ngx_http_paygw_hist_t         channel_duration[NGX_HTTP_PAYGW_M_CHANNELS];
    ngx_atomic_t                  idempotency[4];
    ngx_atomic_t                  callbacks[NGX_HTTP_PAYGW_M_CHANNELS][2];
    ngx_atomic_t                  backend_errors[2];
    ngx_atomic_t                  backend_round_trips[2];
    ngx_atomic_t                  reconciliation_diffs
                                      [NGX_HTTP_PAYGW_M_CHANNELS];
    ngx_atomic_t                  risk_decisions[2];
    ngx_atomic_t                  webhook_deliveries[4];
    ngx_http_paygw_hist_t         webhook_duration;
    ngx_atomic_t                  webhook_backlog;
    ngx_atomic_t                  webhook_oldest;    /* seconds */
} ngx_http_paygw_metrics_t;


/*
 * One worker's malloc arena as glibc counts it (mallinfo2), written by
 * the worker after each trim: what is in use against what is free but
 * kept tells fragmentation from a leak when RSS rises.
 */

typedef struct {
    ngx_atomic_t                  pid;           /* 0: never written */
    ngx_atomic_t                  in_use;        /* uordblks: the arena's */
    ngx_atomic_t                  free;          /* fordblks: kept */
    ngx_atomic_t                  mapped;        /* hblkhd: on their own */
    ngx_atomic_t                  trim_us;       /* the last trim took */
} ngx_http_paygw_heap_t;


typedef struct {
    ngx_uint_t                    state;
    ngx_uint_t                    failures;
    ngx_msec_t                    opened_at;
    ngx_msec_t                    probe_at;
} ngx_http_paygw_breaker_t;


struct ngx_http_paygw_shctx_s {
    ngx_uint_t                    layout;        /* of this struct */
    ngx_atomic_t                  reloads;
    ngx_atomic_t                  health_requests;
    ngx_atomic_t                  ready_requests;
    ngx_atomic_t                  ready_failures;
    time_t                        created;
    ngx_http_paygw_metrics_t      m;
    ngx_http_paygw_breaker_t      breaker[NGX_HTTP_PAYGW_M_CHANNELS];

    /* the first paygw_mysql blocks' nodes and writer, in their order */
    ngx_http_paygw_mysql_ha_t     mysql_ha[NGX_HTTP_PAYGW_MYSQL_HA_SHARED];

    /* the channel each slot counts for, as the metrics label it */
    u_char                        slot_name[NGX_HTTP_PAYGW_M_CHANNELS]
                                      [NGX_HTTP_PAYGW_CHANNEL_NAME_LEN + 1];

    /* webhook events handed off to delivery (ngx_http_paygw_handoff.c) */
    ngx_http_paygw_handoff_sh_t   handoff;

    /* by ngx_worker; a worker stops writing when it begins to exit */
    ngx_http_paygw_heap_t         heap[NGX_HTTP_PAYGW_M_WORKERS];
};


ngx_http_paygw_shctx_t *ngx_http_paygw_shctx(ngx_http_request_t *r);
ngx_slab_pool_t *ngx_http_paygw_shpool(ngx_http_request_t *r);
ngx_http_paygw_shctx_t *ngx_http_paygw_shctx_cycle(ngx_cycle_t *cycle);


#endif /* _NGX_HTTP_PAYGW_ZONE_H_INCLUDED_ */
