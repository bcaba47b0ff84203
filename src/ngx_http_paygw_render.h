
/*
 * paygw: the JSON objects the API answers with.
 */


#ifndef _NGX_HTTP_PAYGW_RENDER_H_INCLUDED_
#define _NGX_HTTP_PAYGW_RENDER_H_INCLUDED_


#include "ngx_http_paygw_types.h"


json_t *ngx_http_paygw_payment_json(ngx_http_paygw_payment_t *p);
json_t *ngx_http_paygw_refund_json(ngx_http_paygw_refund_t *rf);


#endif /* _NGX_HTTP_PAYGW_RENDER_H_INCLUDED_ */
