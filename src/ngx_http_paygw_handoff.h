
/*
 * paygw: webhook events handed off from the request that wrote them to
 * the next delivery round (ngx_http_paygw_handoff.c).
 */


#ifndef _NGX_HTTP_PAYGW_HANDOFF_H_INCLUDED_
#define _NGX_HTTP_PAYGW_HANDOFF_H_INCLUDED_


#include "ngx_http_paygw.h"


#define NGX_HTTP_PAYGW_HANDOFF_OWNER_LEN   32

/* an event's fields, in the order ngx_http_paygw_handoff_add takes them */
#define NGX_HTTP_PAYGW_HO_EVENT_ID         0
#define NGX_HTTP_PAYGW_HO_MERCHANT         1
#define NGX_HTTP_PAYGW_HO_TYPE             2
#define NGX_HTTP_PAYGW_HO_URL              3
#define NGX_HTTP_PAYGW_HO_PAYLOAD          4
#define NGX_HTTP_PAYGW_HO_FIELDS           5

/*
 * How soon after a COMMIT the worker's next round starts: short for the
 * merchant, long enough that a round takes many events at once.
 */
#define NGX_HTTP_PAYGW_HO_DELAY            20


/* in paygw_zone: the queue, shared by the workers, kept across reloads */

typedef struct {
    ngx_queue_t                   queue;         /* handoff items, oldest
                                                    first */
    ngx_uint_t                    count;
    size_t                        bytes;
    size_t                        cap;           /* bytes: a quarter of
                                                    the zone */
    ngx_msec_t                    claimed_at;    /* the last claim round */
    u_char                        owner[NGX_HTTP_PAYGW_HANDOFF_OWNER_LEN];
} ngx_http_paygw_handoff_sh_t;


ngx_int_t ngx_http_paygw_handoff_init(ngx_http_paygw_handoff_sh_t *ho,
    ngx_slab_pool_t *shpool);


#endif /* _NGX_HTTP_PAYGW_HANDOFF_H_INCLUDED_ */
