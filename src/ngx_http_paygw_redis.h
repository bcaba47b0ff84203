
/*
 * paygw: Redis through an nginx upstream (paygw_redis_pass).
 */


#ifndef _NGX_HTTP_PAYGW_REDIS_H_INCLUDED_
#define _NGX_HTTP_PAYGW_REDIS_H_INCLUDED_


#include "ngx_http_paygw.h"
#include <hiredis.h>


/*
 * One round trip: every command appended is written in one go (a
 * pipeline) and the call completes when a reply to each has arrived.
 * Replies are hiredis objects owned by the op; they are freed with the
 * request pool.
 */

typedef struct {
    ngx_http_paygw_call_t         call;

    ngx_array_t                   cmds;      /* ngx_str_t, formatted RESP */
    redisReply                  **replies;   /* cmds.nelts once ok */

    /* what goes on the wire: cmds, or a round of the cluster client */
    ngx_str_t                    *out;
    ngx_uint_t                    nout;
    redisReply                  **in;       /* nout */
    struct ngx_http_paygw_rc_op_s  *cluster;
    /* EVALs sent as EVALSHA (ngx_http_paygw_redis_script.c) */
    ngx_array_t                   evals;     /* ngx_str_t, EVAL form */
    unsigned                      eval_sent:1;

    /* paygw_redis_multiplex: the request waiting, its place in line */
    ngx_http_request_t           *request;
    void                         *mux_slot;

    /* upstream side */
    redisReader                  *reader;
    size_t                        received;
    size_t                        max_reply;
    ngx_uint_t                    got;
} ngx_http_paygw_redis_op_t;


ngx_http_paygw_redis_op_t *ngx_http_paygw_redis_create(ngx_http_request_t *r);
ngx_int_t ngx_http_paygw_redis_command(ngx_http_request_t *r,
    ngx_http_paygw_redis_op_t *op, const char *fmt, ...);
ngx_int_t ngx_http_paygw_redis_command_argv(ngx_http_request_t *r,
    ngx_http_paygw_redis_op_t *op, ngx_uint_t argc, ngx_str_t *argv);
ngx_int_t ngx_http_paygw_redis_send(ngx_http_request_t *r,
    ngx_http_paygw_redis_op_t *op);
ngx_int_t ngx_http_paygw_redis_done(ngx_http_request_t *r,
    ngx_http_paygw_call_t *call);

/*
 * ngx_http_paygw_redis_script.c: argv is EVAL, a static script, ...; it
 * goes as EVALSHA, sent again as EVAL on NOSCRIPT
 */
#define NGX_HTTP_PAYGW_REDIS_EVAL_ARGS  32
ngx_int_t ngx_http_paygw_redis_evalsha(ngx_http_request_t *r,
    ngx_http_paygw_redis_op_t *op, ngx_uint_t argc, ngx_str_t *argv);
ngx_int_t ngx_http_paygw_redis_noscript(ngx_http_request_t *r,
    ngx_http_paygw_redis_op_t *op);

/* ngx_http_paygw_redis_mux.c: round trips on the worker's connection */
char *ngx_http_paygw_redis_mux_location(ngx_conf_t *cf,
    ngx_http_paygw_loc_conf_t *plcf);
char *ngx_http_paygw_redis_mux_user(ngx_conf_t *cf,
    ngx_http_paygw_loc_conf_t *plcf);
ngx_int_t ngx_http_paygw_redis_mux_postconf(ngx_conf_t *cf);
ngx_int_t ngx_http_paygw_redis_mux_send(ngx_http_request_t *r,
    ngx_http_paygw_redis_mux_t *mux, ngx_http_paygw_redis_op_t *op);
void ngx_http_paygw_redis_mux_forget(ngx_http_paygw_redis_op_t *op);

char *ngx_http_paygw_redis_pass(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
void ngx_http_paygw_redis_init_conf(ngx_http_paygw_loc_conf_t *conf);
char *ngx_http_paygw_redis_merge_conf(ngx_conf_t *cf,
    ngx_http_paygw_loc_conf_t *prev, ngx_http_paygw_loc_conf_t *conf);


#endif /* _NGX_HTTP_PAYGW_REDIS_H_INCLUDED_ */
