
/*
 * paygw: a payment gateway inside nginx.
 * Types shared by every file of the module.
 */


#ifndef _NGX_HTTP_PAYGW_H_INCLUDED_
#define _NGX_HTTP_PAYGW_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>


/* an ngx_str_t equal to a string literal */
#define ngx_http_paygw_is(s, lit)                                            \
    ((s)->len == sizeof(lit) - 1                                             \
     && ngx_strncmp((s)->data, lit, sizeof(lit) - 1) == 0)


#define NGX_HTTP_PAYGW_CALL_REDIS   1
#define NGX_HTTP_PAYGW_CALL_MYSQL   2
#define NGX_HTTP_PAYGW_CALL_WEBHOOK 3


/*
 * Channels have a slot each in paygw_zone (metrics, circuit breaker).
 * The first slots belong to the names of the providers that have always
 * been there (bank_card, alipay, wechat: their series are always shown),
 * then one slot per other configured channel, and the last one counts
 * channel names no configuration knows ("other").
 */

#define NGX_HTTP_PAYGW_MAX_CHANNELS       16
#define NGX_HTTP_PAYGW_CHANNEL_NAME_LEN   32
#define NGX_HTTP_PAYGW_FIXED_SLOTS        3
#define NGX_HTTP_PAYGW_SLOTS                                                 \
    (NGX_HTTP_PAYGW_FIXED_SLOTS + NGX_HTTP_PAYGW_MAX_CHANNELS + 1)
#define NGX_HTTP_PAYGW_SLOT_OTHER         (NGX_HTTP_PAYGW_SLOTS - 1)


/*
 * A backend call: work handed to a subrequest to an internal location
 * through the subrequest's ctx (the auth_request pattern).  The parent
 * is woken when the subrequest finishes; "done" tells it so, "ok" that
 * the backend answered at all, "status" and "error" why it did not.
 */

typedef struct {
    ngx_uint_t                    kind;
    ngx_http_request_t           *sr;
    ngx_uint_t                    status;
    ngx_str_t                     error;
    unsigned                      started:1;
    unsigned                      done:1;
    unsigned                      ok:1;
} ngx_http_paygw_call_t;


typedef struct ngx_http_paygw_mysql_srv_s  ngx_http_paygw_mysql_srv_t;


typedef struct {
    ngx_shm_zone_t               *shm_zone;
    ngx_array_t                   mysql_servers; /* mysql_srv_t * */
    ngx_array_t                   keys;          /* ngx_http_paygw_key_t */
    ngx_array_t                   channels;      /* ngx_http_paygw_channel_t */
    ngx_str_t                     slot_names[NGX_HTTP_PAYGW_SLOTS];
    void                         *settler;
    void                         *policy;
    void                         *risk;
    void                         *fees;          /* paygw_fees */
    ngx_array_t                  *statement_hosts;   /* ngx_keyval_t */
    void                         *reconciler;    /* the schedule */
    void                         *webhook;   /* ngx_http_paygw_webhook.h */
    ngx_int_t                     request_id_index;
    ngx_int_t                     trace_id_index;
    ngx_array_t                   logs;          /* ngx_log_t *, to redact */
    ngx_msec_t                    create_budget; /* longest create, ms */
    ngx_array_t                   redis_locations;   /* redis_mux.c's */
    ngx_array_t                   redis_users;   /* loc_conf_t * */
    ngx_msec_t                    memory_trim;   /* 0: off (memory.c) */
    size_t                        memory_mmap;   /* 0: glibc's own */
} ngx_http_paygw_main_conf_t;


typedef struct ngx_http_paygw_redis_mux_s  ngx_http_paygw_redis_mux_t;


typedef struct {
    ngx_http_upstream_conf_t      redis;
    size_t                        redis_max_reply;
    ngx_flag_t                    redis_cluster;
    void                         *redis_rc;  /* redis_cluster.c's */
    ngx_flag_t                    redis_multiplex;
    /* its paygw_redis_location's, when that location can multiplex */
    ngx_http_paygw_redis_mux_t   *redis_mux;

    ngx_http_paygw_mysql_srv_t   *mysql;
    ngx_str_t                     mysql_name;
    ngx_str_t                    *mysql_file;
    ngx_uint_t                    mysql_line;

    ngx_str_t                     redis_uri;
    ngx_str_t                     mysql_uri;

    ngx_flag_t                    api;
    ngx_uint_t                    metric_api;    /* 0: not ours to count */
    size_t                        max_body;
    ngx_msec_t                    idem_retention;
    ngx_msec_t                    idem_lock;
    ngx_flag_t                    notify_http;   /* http:// notify_url */
} ngx_http_paygw_loc_conf_t;


/* the state kept in the paygw_zone shared memory: ngx_http_paygw_zone.h */

typedef struct ngx_http_paygw_shctx_s  ngx_http_paygw_shctx_t;


extern ngx_module_t  ngx_http_paygw_module;


ngx_int_t ngx_http_paygw_call_start(ngx_http_request_t *r, ngx_str_t *uri,
    ngx_http_paygw_call_t *call);
void *ngx_http_paygw_call_ctx(ngx_http_request_t *r, ngx_uint_t kind);
void ngx_http_paygw_call_fail(ngx_http_paygw_call_t *call,
    ngx_pool_t *pool, ngx_uint_t status, const char *fmt, ...);

/* ngx_http_paygw_keep.c: upstream connections the balancers keep idle */
void ngx_http_paygw_keep_reuse(ngx_peer_connection_t *pc,
    ngx_connection_t *c);
void ngx_http_paygw_keep_park(ngx_peer_connection_t *pc, void *item,
    ngx_msec_t timeout, ngx_event_handler_pt idle);
ngx_uint_t ngx_http_paygw_keep_ended(ngx_event_t *ev);
void ngx_http_paygw_keep_close(ngx_connection_t *c);

char *ngx_http_paygw_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_paygw_keys(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_paygw_settler(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_paygw_policy(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_paygw_risk(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_paygw_settler_check(ngx_conf_t *cf,
    ngx_http_paygw_main_conf_t *pmcf);
ngx_int_t ngx_http_paygw_settler_init_process(ngx_cycle_t *cycle);
ngx_int_t ngx_http_paygw_redact_collect(ngx_conf_t *cf,
    ngx_http_paygw_main_conf_t *pmcf);
void ngx_http_paygw_redact_init_process(ngx_cycle_t *cycle);
void ngx_http_paygw_redact_exit_process(ngx_cycle_t *cycle);
char *ngx_http_paygw_memory_trim(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
void ngx_http_paygw_memory_init_conf(ngx_http_paygw_main_conf_t *pmcf);
ngx_int_t ngx_http_paygw_memory_init_process(ngx_cycle_t *cycle);

char *ngx_http_paygw_health(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_paygw_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

void ngx_http_paygw_request_id(ngx_http_request_t *r, ngx_str_t *id);
ngx_int_t ngx_http_paygw_send_text(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, ngx_str_t *body);
ngx_int_t ngx_http_paygw_send_json(ngx_http_request_t *r, ngx_uint_t status,
    json_t *doc);
ngx_int_t ngx_http_paygw_json_dump(ngx_pool_t *pool, json_t *doc,
    ngx_str_t *out);
ngx_int_t ngx_http_paygw_send_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, ngx_str_t *message);
ngx_int_t ngx_http_paygw_not_allowed(ngx_http_request_t *r,
    const char *allow);
ngx_table_elt_t *ngx_http_paygw_header(ngx_list_t *headers, const char *name,
    ngx_uint_t *n);
char *ngx_http_paygw_error(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

/* ngx_http_paygw_conf_file.c: files read at configuration time */
char *ngx_http_paygw_read_file(ngx_conf_t *cf, ngx_str_t *path,
    const char *what, size_t max, ngx_str_t *content);
char *ngx_http_paygw_read_secret(ngx_conf_t *cf, ngx_str_t *path,
    const char *what, ngx_str_t *secret);

/* ngx_http_paygw_ids.c: payment, refund and event numbers; time stamps */
ngx_int_t ngx_http_paygw_random_no(ngx_pool_t *pool, char prefix,
    ngx_str_t *no);
ngx_int_t ngx_http_paygw_event_id(ngx_pool_t *pool, ngx_str_t *id);
void ngx_http_paygw_now(ngx_pool_t *pool, ngx_str_t *iso);
ngx_int_t ngx_http_paygw_valid_date(ngx_str_t *date);
time_t ngx_http_paygw_iso_time(ngx_str_t *iso);

/* ngx_http_paygw_utf8.c: text a client sent */
ngx_int_t ngx_http_paygw_utf8_valid(u_char *p, size_t len);
size_t ngx_http_paygw_utf8_repair(u_char *p, size_t len);
void ngx_http_paygw_utf8_quote(ngx_pool_t *pool, u_char *text, size_t len,
    size_t max, ngx_str_t *out);


#endif /* _NGX_HTTP_PAYGW_H_INCLUDED_ */
