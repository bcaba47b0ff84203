
/*
 * paygw: reconciliation with a provider's statement (SPEC §7).
 *
 *     POST /v1/reconciliations {"channel":"bank_card","date":"YYYY-MM-DD"}
 *     GET  /v1/reconciliations/{id}
 *
 * The steps: the local payments and refunds of the provider's day are
 * read from MySQL (an array sorted by our number: memory follows the
 * day's volume here, not the statement's size); the statement is
 * fetched through the channel's internal location by a subrequest whose
 * body is not kept: a body filter hands each buffer to an incremental
 * line parser and marks it consumed, so nginx's proxy buffers are reused
 * and the worker goes on serving other requests between buffers.  Each
 * statement line is matched as it arrives; local rows no line named are
 * then "missing_remote".  The report is stored in MySQL and answered.
 *
 * A statement that cannot be read completely and correctly (truncated,
 * bad signature or hash, unexpected columns, a malformed line) makes a
 * "failed" report with the reason: never a partial "all matched".
 */


#include "ngx_http_paygw_payments.h"
#include "ngx_http_paygw_store.h"
#include "ngx_http_paygw_request.h"
#include "ngx_http_paygw_fees.h"
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <zlib.h>
#include <iconv.h>


#define NGX_HTTP_PAYGW_CALL_STATEMENT   7

#define NGX_HTTP_PAYGW_RECON_MAX_LINE   4096
#define NGX_HTTP_PAYGW_RECON_MAX_COLS   16
#define NGX_HTTP_PAYGW_RECON_MAX_DIFFS  1000
#define NGX_HTTP_PAYGW_RECON_ZBUF       16384

/* normalized states, compared between the two sides */
#define NGX_HTTP_PAYGW_RS_PENDING       0
#define NGX_HTTP_PAYGW_RS_SUCCEEDED     1
#define NGX_HTTP_PAYGW_RS_FAILED        2
#define NGX_HTTP_PAYGW_RS_CLOSED        3


typedef struct {
    ngx_str_t                     key;           /* out_trade/refund_no */
    ngx_str_t                     payment_no;
    ngx_str_t                     refund_no;
    ngx_str_t                     trade_no;
    int64_t                       amount;
    ngx_uint_t                    status;
    unsigned                      refund:1;
    unsigned                      seen:1;
} ngx_http_paygw_recon_local_t;


typedef struct ngx_http_paygw_recon_s  ngx_http_paygw_recon_t;


/* a scheduled run: every channel with a statement, each of N days */

typedef struct {
    ngx_str_t                     holder;        /* of the lease */
    ngx_uint_t                    days;
    time_t                        lease;
    ngx_uint_t                    job;
    ngx_uint_t                    nchannels;
    ngx_http_paygw_channel_t     *channels[NGX_HTTP_PAYGW_SLOTS];
    ngx_uint_t                    diffs[NGX_HTTP_PAYGW_SLOTS];
    json_t                       *reports;
} ngx_http_paygw_recon_run_t;

typedef ngx_int_t (*ngx_http_paygw_recon_line_pt)(ngx_http_paygw_recon_t *rc,
    ngx_str_t *col, ngx_uint_t ncols);


typedef struct {
    ngx_http_paygw_call_t         call;          /* kind, sr */
    ngx_http_paygw_recon_t       *rc;
} ngx_http_paygw_recon_stream_t;


struct ngx_http_paygw_recon_s {
    ngx_http_request_t           *r;
    ngx_http_paygw_recon_run_t   *run;           /* NULL: POST */
    ngx_str_t                     id;
    ngx_str_t                     date;
    ngx_http_paygw_channel_t     *ch;
    const char                   *header;        /* the expected columns */
    ngx_http_paygw_recon_line_pt  line_handler;
    ngx_int_t                     tz_hours;      /* the provider's day */

    ngx_http_paygw_recon_local_t *local;
    ngx_uint_t                    nlocal;

    ngx_http_paygw_recon_stream_t stream;
    u_char                        line[NGX_HTTP_PAYGW_RECON_MAX_LINE];
    size_t                        len;
    ngx_uint_t                    lines;
    off_t                         bytes;
    EVP_MAC_CTX                  *mac;           /* acquirer signature */
    EVP_MD_CTX                   *md;            /* WeChat Pay's hash */
    ngx_str_t                     hash;          /* hex, expected */

    /* Alipay: a zip (first entry, deflated) of GBK text */
    ngx_uint_t                    zip_state;
    u_char                        zip_hdr[30];
    size_t                        zip_have;
    size_t                        zip_skip;
    uint32_t                      zip_crc;
    uint32_t                      zip_csize;
    size_t                        zip_name_len;
    size_t                        zip_name_have;
    u_char                        zip_name[64];
    uint32_t                      crc;
    z_stream                      zs;
    iconv_t                       cd;
    u_char                        gbk[NGX_HTTP_PAYGW_RECON_ZBUF + 8];
    size_t                        gbk_len;
    unsigned                      zip:1;
    unsigned                      gz:1;          /* gzip, not a zip */
    unsigned                      zs_init:1;
    unsigned                      comments:1;    /* "#" lines */
    unsigned                      end_seen:1;

    ngx_uint_t                    remote;
    ngx_uint_t                    matched;
    ngx_uint_t                    missing_local;
    ngx_uint_t                    missing_remote;
    ngx_uint_t                    amount_mismatch;
    ngx_uint_t                    status_mismatch;
    json_t                       *diffs;

    char                          reason[256];
    unsigned                      failed:1;
    unsigned                      complete:1;
    unsigned                      header_seen:1;
    unsigned                      mac_started:1;
};


static ngx_int_t ngx_http_paygw_recon_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_recon_setup(ngx_http_paygw_recon_t *rc);
static ngx_int_t ngx_http_paygw_recon_begin(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_http_paygw_recon_t *rc);
static ngx_int_t ngx_http_paygw_recon_run_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_recon_run_leased(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_recon_run_next(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_http_paygw_recon_run_t *run);
static ngx_int_t ngx_http_paygw_recon_run_released(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_recon_run_report(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_http_paygw_recon_t *rc);
static ngx_int_t ngx_http_paygw_recon_selected(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_recon_fetched(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static void ngx_http_paygw_recon_check_complete(ngx_http_paygw_recon_t *rc,
    ngx_http_paygw_provider_call_t *pc);
static void ngx_http_paygw_recon_check_signed(ngx_http_paygw_recon_t *rc,
    ngx_http_paygw_provider_call_t *pc);
static void ngx_http_paygw_recon_missing_remote(ngx_http_paygw_recon_t *rc);
static ngx_int_t ngx_http_paygw_recon_save(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_str_t *text);
static ngx_int_t ngx_http_paygw_recon_stored(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_recon_bank_fetch(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_http_paygw_recon_t *rc);
static ngx_int_t ngx_http_paygw_recon_alipay_url(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static void ngx_http_paygw_recon_zip(ngx_http_paygw_recon_t *rc, u_char *p,
    size_t n);
static ngx_int_t ngx_http_paygw_recon_zip_header(ngx_http_paygw_recon_t *rc,
    u_char **pp, size_t *np);
static ngx_int_t ngx_http_paygw_recon_zip_name(ngx_http_paygw_recon_t *rc,
    u_char **pp, size_t *np);
static void ngx_http_paygw_recon_zip_inflate(ngx_http_paygw_recon_t *rc,
    u_char *p, size_t n);
static void ngx_http_paygw_recon_gbk(ngx_http_paygw_recon_t *rc, u_char *p,
    size_t n);
static ngx_int_t ngx_http_paygw_recon_alipay_line(ngx_http_paygw_recon_t *rc,
    ngx_str_t *col, ngx_uint_t ncols);
static void ngx_http_paygw_recon_lines(ngx_http_paygw_recon_t *rc, u_char *p,
    size_t n);
static ngx_int_t ngx_http_paygw_recon_wechat_bill(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_http_paygw_recon_t *rc);
static ngx_int_t ngx_http_paygw_recon_wechat_url(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_recon_url(ngx_http_request_t *r,
    ngx_http_paygw_recon_t *rc, ngx_str_t *url, ngx_str_t *path);
static void ngx_http_paygw_recon_stream(ngx_http_paygw_recon_t *rc,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_recon_wechat_line(ngx_http_paygw_recon_t *rc,
    ngx_str_t *col, ngx_uint_t ncols);
static ngx_int_t ngx_http_paygw_recon_bank_line(ngx_http_paygw_recon_t *rc,
    ngx_str_t *col, ngx_uint_t ncols);
static void ngx_http_paygw_recon_mac_start(ngx_http_paygw_recon_t *rc,
    ngx_http_request_t *sr);
static void ngx_http_paygw_recon_feed(ngx_http_paygw_recon_t *rc, u_char *p,
    size_t n);
static void ngx_http_paygw_recon_parse_line(ngx_http_paygw_recon_t *rc);
static void ngx_http_paygw_recon_match(ngx_http_paygw_recon_t *rc,
    ngx_str_t *key, ngx_uint_t refund, ngx_str_t *payment_no,
    ngx_str_t *trade_no, int64_t amount, ngx_uint_t status,
    ngx_str_t *status_text);
static void ngx_http_paygw_recon_diff(ngx_http_paygw_recon_t *rc,
    const char *kind, ngx_http_paygw_recon_local_t *l, ngx_str_t *key,
    ngx_uint_t refund, ngx_str_t *payment_no, ngx_str_t *trade_no,
    int64_t amount, ngx_str_t *status_text);
static void ngx_http_paygw_recon_fail(ngx_http_paygw_recon_t *rc,
    const char *fmt, ...);
static json_t *ngx_http_paygw_recon_report(ngx_http_paygw_recon_t *rc);
static ngx_int_t ngx_http_paygw_recon_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_paygw_recon_get_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_recon_get_selected(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static int ngx_http_paygw_recon_cmp(const void *one, const void *two);
static ngx_http_paygw_recon_local_t *ngx_http_paygw_recon_find(
    ngx_http_paygw_recon_t *rc, ngx_str_t *key);
static ngx_uint_t ngx_http_paygw_recon_local_status(ngx_str_t *s,
    ngx_uint_t refund);
static ngx_int_t ngx_http_paygw_recon_amount(ngx_str_t *s, int64_t *n);
static ngx_uint_t ngx_http_paygw_recon_csv(u_char *p, u_char *last,
    ngx_str_t *col, ngx_uint_t max);
static void ngx_http_paygw_recon_cleanup(void *data);
static ngx_uint_t ngx_http_paygw_recon_admin(ngx_http_paygw_ctx_t *ctx);


static ngx_http_output_body_filter_pt  ngx_http_next_body_filter;

static const char  *ngx_http_paygw_rs_names[] = {
    "pending", "succeeded", "failed", "closed"
};


ngx_int_t
ngx_http_paygw_recon_init(ngx_conf_t *cf)
{
    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_paygw_recon_body_filter;

    return NGX_OK;
}


static ngx_uint_t
ngx_http_paygw_recon_admin(ngx_http_paygw_ctx_t *ctx)
{
    return ctx->auth.key && ctx->auth.key->role == NGX_HTTP_PAYGW_ROLE_ADMIN;
}


/* POST /v1/reconciliations */

ngx_int_t
ngx_http_paygw_reconcile(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    return ngx_http_paygw_steps(r, ctx, ngx_http_paygw_recon_start);
}


static ngx_int_t
ngx_http_paygw_recon_start(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    json_t                  *doc, *v;
    const char              *name;
    ngx_str_t                channel;
    json_error_t             err;
    ngx_http_paygw_recon_t  *rc;

    if (!ngx_http_paygw_recon_admin(ctx)) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_FORBIDDEN, "forbidden",
                                   "only admin keys may reconcile");
    }

    rc = ngx_pcalloc(r->pool, sizeof(ngx_http_paygw_recon_t));
    if (rc == NULL) {
        return NGX_ERROR;
    }

    rc->r = r;
    ctx->recon = rc;

    doc = json_loadb((char *) ctx->body.data, ctx->body.len,
                     JSON_REJECT_DUPLICATES, &err);

    if (doc == NULL || !json_is_object(doc)) {
        json_decref(doc);
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request",
                                   "the body must be a JSON object");
    }

    json_object_foreach(doc, name, v) {
        if (ngx_strcmp(name, "channel") != 0 && ngx_strcmp(name, "date") != 0)
        {
            json_decref(doc);
            return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                       "invalid_request",
                                       "unknown field in the body");
        }

        if (!json_is_string(v)) {
            json_decref(doc);
            return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                       "invalid_request",
                                       "channel and date must be strings");
        }
    }

    v = json_object_get(doc, "date");
    rc->date.len = v ? json_string_length(v) : 0;
    rc->date.data = ngx_pnalloc(r->pool, rc->date.len + 1);

    v = json_object_get(doc, "channel");
    channel.len = v ? json_string_length(v) : 0;
    channel.data = ngx_pnalloc(r->pool, channel.len + 1);

    if (rc->date.data == NULL || channel.data == NULL) {
        json_decref(doc);
        return NGX_ERROR;
    }

    if (rc->date.len) {
        ngx_memcpy(rc->date.data,
                   json_string_value(json_object_get(doc, "date")),
                   rc->date.len);
    }

    if (channel.len) {
        ngx_memcpy(channel.data, json_string_value(v), channel.len);
    }

    json_decref(doc);

    if (ngx_http_paygw_valid_date(&rc->date) != NGX_OK) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request",
                                   "date must be a day, YYYY-MM-DD");
    }

    rc->ch = ngx_http_paygw_channel_find(r, &channel);

    if (rc->ch == NULL) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request",
                                   "channel is unknown or not enabled");
    }

    if (ngx_http_paygw_recon_setup(rc) != NGX_OK) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request",
                                   "channel \"%V\": its statement cannot be "
                                   "reconciled", &rc->ch->name);
    }

    return ngx_http_paygw_recon_begin(r, ctx, rc);
}


/* the statement's format: by the channel's provider */

static ngx_int_t
ngx_http_paygw_recon_setup(ngx_http_paygw_recon_t *rc)
{
    if (ngx_http_paygw_is(&rc->ch->provider->name, "bank_card")) {
        rc->header = "type,out_trade_no,out_refund_no,provider_id,amount,"
                     "currency,status,created_at";
        rc->line_handler = ngx_http_paygw_recon_bank_line;
        rc->tz_hours = 0;

    } else if (ngx_http_paygw_is(&rc->ch->provider->name, "alipay")) {
        rc->header = "\xe6\x94\xaf\xe4\xbb\x98\xe5\xae\x9d\xe4\xba\xa4"
                     "\xe6\x98\x93\xe5\x8f\xb7,\xe5\x95\x86\xe6\x88\xb7"
                     "\xe8\xae\xa2\xe5\x8d\x95\xe5\x8f\xb7,\xe4\xb8\x9a"
                     "\xe5\x8a\xa1\xe7\xb1\xbb\xe5\x9e\x8b,\xe5\x95\x86"
                     "\xe5\x93\x81\xe5\x90\x8d\xe7\xa7\xb0,\xe5\x88\x9b"
                     "\xe5\xbb\xba\xe6\x97\xb6\xe9\x97\xb4,\xe5\xae\x8c"
                     "\xe6\x88\x90\xe6\x97\xb6\xe9\x97\xb4,\xe8\xae\xa2"
                     "\xe5\x8d\x95\xe9\x87\x91\xe9\xa2\x9d\xef\xbc\x88"
                     "\xe5\x85\x83\xef\xbc\x89,\xe9\x80\x80\xe6\xac\xbe"
                     "\xe6\x89\xb9\xe6\xac\xa1\xe5\x8f\xb7/\xe8\xaf\xb7"
                     "\xe6\xb1\x82\xe5\x8f\xb7,\xe4\xba\xa4\xe6\x98\x93"
                     "\xe7\x8a\xb6\xe6\x80\x81";
        rc->line_handler = ngx_http_paygw_recon_alipay_line;
        rc->tz_hours = 8;
        rc->zip = 1;
        rc->comments = 1;

    } else if (ngx_http_paygw_is(&rc->ch->provider->name, "wechat")) {
        rc->header = "type,out_trade_no,out_refund_no,provider_id,"
                     "amount_fen,status,time";
        rc->line_handler = ngx_http_paygw_recon_wechat_line;
        rc->tz_hours = 8;

    } else {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_recon_begin(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_http_paygw_recon_t *rc)
{
    ngx_pool_cleanup_t  *cln;

    ctx->recon = rc;

    if (ngx_http_paygw_random_no(r->pool, 'C', &rc->id) != NGX_OK) {
        return NGX_ERROR;
    }

    rc->diffs = json_array();

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (rc->diffs == NULL || cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_paygw_recon_cleanup;
    cln->data = rc;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw reconcile %V: step \"start\" %V %V",
                   &rc->id, &rc->ch->name, &rc->date);

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_select_recon_local(ctx->mysql, &rc->ch->name,
                                                   &rc->date, rc->tz_hours)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ctx->mysql->read_only = 1;

    return ngx_http_paygw_mysql_wait(r, ctx, ngx_http_paygw_recon_selected);
}


static void
ngx_http_paygw_recon_cleanup(void *data)
{
    ngx_http_paygw_recon_t *rc = data;

    json_decref(rc->diffs);
    rc->diffs = NULL;

    if (rc->mac) {
        EVP_MAC_CTX_free(rc->mac);
        rc->mac = NULL;
    }

    if (rc->md) {
        EVP_MD_CTX_free(rc->md);
        rc->md = NULL;
    }

    if (rc->zs_init) {
        inflateEnd(&rc->zs);
        rc->zs_init = 0;
    }

    if (rc->cd != (iconv_t) -1 && rc->cd != NULL) {
        iconv_close(rc->cd);
        rc->cd = NULL;
    }
}


static ngx_int_t
ngx_http_paygw_recon_selected(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    ngx_str_t                     *v;
    ngx_uint_t                     i;
    ngx_http_paygw_recon_t        *rc;
    ngx_http_paygw_sql_stmt_t     *stmt;
    ngx_http_paygw_recon_local_t  *l;

    rc = ctx->recon;

    if (!ctx->mysql->call.ok || ctx->mysql->err_no) {
        return ngx_http_paygw_mysql_down(r, ctx);
    }

    stmt = ctx->mysql->stmts.elts;

    /* columns: kind, key, payment_no, refund_no, trade_no, amount, status */

    rc->nlocal = stmt[0].nrows;
    rc->local = ngx_pcalloc(r->pool, (rc->nlocal + 1)
                                     * sizeof(ngx_http_paygw_recon_local_t));
    if (rc->local == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < rc->nlocal; i++) {
        v = &stmt[0].values[i * stmt[0].nfields];
        l = &rc->local[i];

        l->refund = (v[0].len && v[0].data[0] == 'R');
        l->key = v[1];
        l->payment_no = v[2];
        l->refund_no = v[3];
        l->trade_no = v[4];
        (void) ngx_http_paygw_recon_amount(&v[5], &l->amount);
        l->status = ngx_http_paygw_recon_local_status(&v[6], l->refund);
    }

    ngx_qsort(rc->local, rc->nlocal, sizeof(ngx_http_paygw_recon_local_t),
              ngx_http_paygw_recon_cmp);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw reconcile %V: step \"selected\" %ui local rows",
                   &rc->id, rc->nlocal);

    ctx->channel = rc->ch;

    if (rc->zip) {
        if (ngx_http_paygw_alipay_statement_query(r, ctx, &rc->date)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        ctx->next = ngx_http_paygw_recon_alipay_url;

        return NGX_AGAIN;
    }

    if (rc->tz_hours) {
        return ngx_http_paygw_recon_wechat_bill(r, ctx, rc);
    }

    if (ngx_http_paygw_recon_bank_fetch(r, ctx, rc) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->next = ngx_http_paygw_recon_fetched;

    return NGX_AGAIN;
}


/* Alipay: the bill's URL, then the zip it names (an unsigned GET) */

static ngx_int_t
ngx_http_paygw_recon_alipay_url(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    json_t                          *doc;
    ngx_str_t                        url, path, code, sub_code;
    const char                      *u;
    ngx_http_paygw_recon_t          *rc;
    ngx_http_paygw_provider_call_t  *pc;

    rc = ctx->recon;

    doc = ngx_http_paygw_alipay_statement_answer(r, ctx, &code, &sub_code);

    if (doc == NULL) {
        ngx_http_paygw_recon_fail(rc, "no verifiable answer from Alipay to "
                                  "the bill URL query");
        return ngx_http_paygw_recon_fetched(r, ctx);
    }

    u = json_string_value(json_object_get(doc, "bill_download_url"));

    if (!ngx_http_paygw_is(&code, "10000") || u == NULL) {
        json_decref(doc);
        ngx_http_paygw_recon_fail(rc, "Alipay gave no bill: %V %V", &code,
                                  &sub_code);
        return ngx_http_paygw_recon_fetched(r, ctx);
    }

    url.len = ngx_strlen(u);
    url.data = ngx_pnalloc(r->pool, url.len);
    if (url.data == NULL) {
        json_decref(doc);
        return NGX_ERROR;
    }

    ngx_memcpy(url.data, u, url.len);
    json_decref(doc);

    if (ngx_http_paygw_recon_url(r, rc, &url, &path) != NGX_OK) {
        return ngx_http_paygw_recon_fetched(r, ctx);
    }

    rc->cd = iconv_open("UTF-8", "GBK");
    if (rc->cd == (iconv_t) -1) {
        rc->cd = NULL;
        ngx_http_paygw_recon_fail(rc, "iconv has no GBK");
        return ngx_http_paygw_recon_fetched(r, ctx);
    }

    pc = ngx_http_paygw_provider_create(r, "GET");
    if (pc == NULL) {
        return NGX_ERROR;
    }

    pc->path = path;
    pc->stream = 1;
    pc->what = (u_char *) "bill download";

    ctx->provider = pc;
    ctx->waiting = &pc->call;

    if (ngx_http_paygw_provider_send(r, rc->ch, pc) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_paygw_recon_stream(rc, ctx);

    ctx->next = ngx_http_paygw_recon_fetched;

    return NGX_AGAIN;
}


/*
 * The zip, as it arrives: its first local file header, then the entry's
 * deflate stream inflated into GBK text, converted to UTF-8 and cut into
 * lines; the CRC-32 of the text is checked at the end of the stream.
 * What follows the entry (the central directory) is not read.
 */

static void
ngx_http_paygw_recon_zip(ngx_http_paygw_recon_t *rc, u_char *p, size_t n)
{
    size_t  k;

    while (n && !rc->failed) {

        switch (rc->zip_state) {

        case 0:
            if (ngx_http_paygw_recon_zip_header(rc, &p, &n) != NGX_OK) {
                return;
            }

            /* fall through */

        case 1:
            if (ngx_http_paygw_recon_zip_name(rc, &p, &n) != NGX_OK) {
                return;
            }

            break;

        case 2:
            ngx_http_paygw_recon_zip_inflate(rc, p, n);
            return;

        case 4:

            /* a summary entry's data, then the next local header */

            k = ngx_min(n, rc->zip_skip);
            rc->zip_skip -= k;
            p += k;
            n -= k;

            if (rc->zip_skip == 0) {
                rc->zip_have = 0;
                rc->zip_state = 0;
            }

            break;

        default:
            return;
        }
    }
}


/*
 * State 0: the 30 bytes of a local file header.  NGX_OK: complete and
 * valid, now in state 1; NGX_AGAIN: more bytes needed; NGX_ERROR: failed.
 */

static ngx_int_t
ngx_http_paygw_recon_zip_header(ngx_http_paygw_recon_t *rc, u_char **pp,
    size_t *np)
{
    size_t   k;
    u_char  *h;

    k = ngx_min(*np, 30 - rc->zip_have);
    ngx_memcpy(rc->zip_hdr + rc->zip_have, *pp, k);
    rc->zip_have += k;
    *pp += k;
    *np -= k;

    if (rc->zip_have < 30) {
        return NGX_AGAIN;
    }

    h = rc->zip_hdr;

    if (h[0] != 'P' || h[1] != 'K' || h[2] != 3 || h[3] != 4) {
        ngx_http_paygw_recon_fail(rc, "the bill is not a zip");
        return NGX_ERROR;
    }

    if ((h[6] & 1) || h[8] != 8 || h[9] != 0) {
        ngx_http_paygw_recon_fail(rc, "the bill's zip entry is "
                                  "encrypted or not deflated");
        return NGX_ERROR;
    }

    rc->zip_crc = h[14] | (h[15] << 8) | (h[16] << 16)
                  | ((uint32_t) h[17] << 24);
    rc->zip_csize = h[18] | (h[19] << 8) | (h[20] << 16)
                    | ((uint32_t) h[21] << 24);
    rc->zip_name_len = h[26] | (h[27] << 8);
    rc->zip_name_have = 0;
    rc->zip_skip = h[28] | (h[29] << 8);
    rc->zip_state = 1;

    return NGX_OK;
}


/*
 * State 1: the entry's name (its first 64 bytes), then its extra field.
 * NGX_OK: done, now in state 4 (a summary entry to skip) or 2 (the
 * details to inflate); NGX_AGAIN: more bytes needed; NGX_ERROR: failed.
 */

static ngx_int_t
ngx_http_paygw_recon_zip_name(ngx_http_paygw_recon_t *rc, u_char **pp,
    size_t *np)
{
    size_t  k;

    while (*np && rc->zip_name_have < rc->zip_name_len) {
        if (rc->zip_name_have < sizeof(rc->zip_name)) {
            rc->zip_name[rc->zip_name_have] = **pp;
        }

        rc->zip_name_have++;
        (*pp)++;
        (*np)--;
    }

    k = ngx_min(*np, rc->zip_skip);
    rc->zip_skip -= k;
    *pp += k;
    *np -= k;

    if (rc->zip_skip || rc->zip_name_have < rc->zip_name_len) {
        return NGX_AGAIN;
    }

    /*
     * A real bill has the details and a summary ("汇总": GBK
     * bb e3 d7 dc, or UTF-8): the summary entry is skipped.
     */

    if (ngx_strnstr(rc->zip_name, "\xbb\xe3\xd7\xdc",
                    ngx_min(rc->zip_name_len, sizeof(rc->zip_name)))
        || ngx_strnstr(rc->zip_name, "\xe6\xb1\x87\xe6\x80\xbb",
                       ngx_min(rc->zip_name_len, sizeof(rc->zip_name))))
    {
        if (rc->zip_hdr[6] & 8) {
            ngx_http_paygw_recon_fail(rc, "the bill's summary entry "
                                      "has no size to skip");
            return NGX_ERROR;
        }

        rc->zip_skip = rc->zip_csize;
        rc->zip_state = 4;
        return NGX_OK;
    }

    if (inflateInit2(&rc->zs, -MAX_WBITS) != Z_OK) {
        ngx_http_paygw_recon_fail(rc, "cannot inflate");
        return NGX_ERROR;
    }

    rc->zs_init = 1;
    rc->crc = crc32(0L, Z_NULL, 0);
    rc->zip_state = 2;

    return NGX_OK;
}


/*
 * State 2: the deflate stream (a zip entry's, or a gzip's), all of the
 * buffer; state 3 at its end.
 */

static void
ngx_http_paygw_recon_zip_inflate(ngx_http_paygw_recon_t *rc, u_char *p,
    size_t n)
{
    int     zrc;
    size_t  produced;
    u_char  out[NGX_HTTP_PAYGW_RECON_ZBUF];

    rc->zs.next_in = p;
    rc->zs.avail_in = n;

    do {
        rc->zs.next_out = out;
        rc->zs.avail_out = sizeof(out);

        zrc = inflate(&rc->zs, Z_NO_FLUSH);

        if (zrc != Z_OK && zrc != Z_STREAM_END
            && !(zrc == Z_BUF_ERROR && rc->zs.avail_in == 0))
        {
            ngx_http_paygw_recon_fail(rc, "the bill's %s is "
                                      "corrupt (inflate: %d)",
                                      rc->gz ? "gzip" : "zip", zrc);
            return;
        }

        produced = sizeof(out) - rc->zs.avail_out;

        if (rc->gz) {
            /* gzip checks its own CRC-32 */
            ngx_http_paygw_recon_lines(rc, out, produced);

        } else {
            rc->crc = crc32(rc->crc, out, produced);
            ngx_http_paygw_recon_gbk(rc, out, produced);
        }

        if (zrc == Z_STREAM_END) {
            if (!rc->gz && rc->crc != rc->zip_crc) {
                ngx_http_paygw_recon_fail(rc, "the bill's zip entry "
                                          "fails its CRC-32");
                return;
            }

            rc->zip_state = 3;
            return;
        }

    } while (!rc->failed
             && (rc->zs.avail_in > 0 || rc->zs.avail_out == 0));
}


/* GBK to UTF-8, a character cut by a buffer's end kept for the next */

static void
ngx_http_paygw_recon_gbk(ngx_http_paygw_recon_t *rc, u_char *p, size_t n)
{
    char    *in, *o;
    size_t   k, inleft, outleft;
    u_char   out[2 * NGX_HTTP_PAYGW_RECON_ZBUF];

    while (n && !rc->failed) {
        k = ngx_min(n, NGX_HTTP_PAYGW_RECON_ZBUF);
        ngx_memcpy(rc->gbk + rc->gbk_len, p, k);
        rc->gbk_len += k;
        p += k;
        n -= k;

        in = (char *) rc->gbk;
        inleft = rc->gbk_len;

        while (inleft) {
            o = (char *) out;
            outleft = sizeof(out);

            if (iconv(rc->cd, &in, &inleft, &o, &outleft) == (size_t) -1) {

                if (errno == EILSEQ) {
                    ngx_http_paygw_recon_fail(rc, "the bill is not GBK "
                                              "(line %ui)", rc->lines + 1);
                    return;
                }

                if (errno == EINVAL) {
                    ngx_http_paygw_recon_lines(rc, out, o - (char *) out);
                    break;
                }
            }

            ngx_http_paygw_recon_lines(rc, out, o - (char *) out);
        }

        ngx_memmove(rc->gbk, in, inleft);
        rc->gbk_len = inleft;
    }
}


/*
 * 支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,
 * 订单金额（元）,退款批次号/请求号,交易状态 -- a refund's amount is
 * negative
 */

static ngx_int_t
ngx_http_paygw_recon_alipay_line(ngx_http_paygw_recon_t *rc, ngx_str_t *col,
    ngx_uint_t ncols)
{
    u_char      *p, *last;
    int64_t      amount;
    ngx_uint_t   refund, status, digits;

    if (ncols != 9 || col[6].len == 0) {
        return NGX_ERROR;
    }

    /* yuan, two decimals, "-" for a refund */

    p = col[6].data;
    last = p + col[6].len;

    if (*p == '-') {
        p++;
    }

    amount = 0;
    digits = 0;

    while (p < last && *p >= '0' && *p <= '9' && digits < 13) {
        amount = amount * 10 + (*p++ - '0');
        digits++;
    }

    if (digits == 0 || last - p != 3 || p[0] != '.'
        || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9')
    {
        return NGX_ERROR;
    }

    amount = amount * 100 + (p[1] - '0') * 10 + (p[2] - '0');

    /* 交易 (trade), 退款 (refund) */

    if (col[2].len == 6
        && ngx_strncmp(col[2].data, "\xe4\xba\xa4\xe6\x98\x93", 6) == 0)
    {
        refund = 0;
        status = (ngx_http_paygw_is(&col[8], "TRADE_SUCCESS")
                  || ngx_http_paygw_is(&col[8], "TRADE_FINISHED"))
                 ? NGX_HTTP_PAYGW_RS_SUCCEEDED
                 : ngx_http_paygw_is(&col[8], "TRADE_CLOSED")
                   ? NGX_HTTP_PAYGW_RS_CLOSED : NGX_HTTP_PAYGW_RS_PENDING;

    } else if (col[2].len == 6
               && ngx_strncmp(col[2].data, "\xe9\x80\x80\xe6\xac\xbe", 6)
                  == 0)
    {
        refund = 1;
        status = ngx_http_paygw_is(&col[8], "REFUND_SUCCESS")
                 ? NGX_HTTP_PAYGW_RS_SUCCEEDED
                 : NGX_HTTP_PAYGW_RS_FAILED;

    } else {
        return NGX_ERROR;
    }

    ngx_http_paygw_recon_match(rc, refund ? &col[7] : &col[1], refund,
                               &col[1], &col[0], amount, status, &col[8]);

    return NGX_OK;
}


/* WeChat Pay: GET /v3/bill/tradebill?bill_date=D, then its download_url */

static ngx_int_t
ngx_http_paygw_recon_wechat_bill(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_http_paygw_recon_t *rc)
{
    ngx_str_t  path;

    /* the bill gzip-ed: its hash is the gzip file's */

    path.data = ngx_pnalloc(r->pool, sizeof("/v3/bill/tradebill?bill_date="
                                            "&tar_type=GZIP")
                                     - 1 + rc->date.len);
    if (path.data == NULL) {
        return NGX_ERROR;
    }

    path.len = ngx_sprintf(path.data, "/v3/bill/tradebill?bill_date=%V"
                           "&tar_type=GZIP", &rc->date)
               - path.data;

    if (ngx_http_paygw_wechat_statement_send(r, ctx, &path, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->next = ngx_http_paygw_recon_wechat_url;

    return NGX_AGAIN;
}


static ngx_int_t
ngx_http_paygw_recon_wechat_url(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    json_t                  *doc;
    ngx_str_t                url, path;
    const char              *type, *hash, *u;
    ngx_http_paygw_recon_t  *rc;

    rc = ctx->recon;

    doc = ngx_http_paygw_wechat_statement_answer(r, ctx);

    if (doc == NULL) {
        ngx_http_paygw_recon_fail(rc, "no verifiable answer from WeChat Pay "
                                  "to the trade bill query");
        return ngx_http_paygw_recon_fetched(r, ctx);
    }

    type = json_string_value(json_object_get(doc, "hash_type"));
    hash = json_string_value(json_object_get(doc, "hash_value"));
    u = json_string_value(json_object_get(doc, "download_url"));

    if (((ngx_http_paygw_provider_call_t *) ctx->provider)->status
        != NGX_HTTP_OK
        || type == NULL || hash == NULL || u == NULL
        || ngx_strcmp(type, "SHA1") != 0 || ngx_strlen(hash) != 40)
    {
        json_decref(doc);
        ngx_http_paygw_recon_fail(rc, "WeChat Pay's trade bill answer has no "
                                  "SHA1 hash_value and download_url");
        return ngx_http_paygw_recon_fetched(r, ctx);
    }

    rc->hash.len = 40;
    rc->hash.data = ngx_pnalloc(r->pool, 40);
    url.len = ngx_strlen(u);
    url.data = ngx_pnalloc(r->pool, url.len);

    if (rc->hash.data == NULL || url.data == NULL) {
        json_decref(doc);
        return NGX_ERROR;
    }

    ngx_memcpy(rc->hash.data, hash, 40);
    ngx_strlow(rc->hash.data, rc->hash.data, 40);
    ngx_memcpy(url.data, u, url.len);
    json_decref(doc);

    if (ngx_http_paygw_recon_url(r, rc, &url, &path) != NGX_OK) {
        return ngx_http_paygw_recon_fetched(r, ctx);
    }

    /* gzip: inflated as it arrives, after the hash saw it */

    if (inflateInit2(&rc->zs, 16 + MAX_WBITS) != Z_OK) {
        return NGX_ERROR;
    }

    rc->zs_init = 1;
    rc->zip = 1;
    rc->gz = 1;
    rc->zip_state = 2;

    rc->md = EVP_MD_CTX_new();

    if (rc->md == NULL || EVP_DigestInit_ex(rc->md, EVP_sha1(), NULL) != 1
        || ngx_http_paygw_wechat_statement_send(r, ctx, &path, 1) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_paygw_recon_stream(rc, ctx);

    ctx->next = ngx_http_paygw_recon_fetched;

    return NGX_AGAIN;
}


/*
 * A download URL of the provider's choosing: only a host (host[:port])
 * paygw_statement_hosts allows for the channel; its path and query are
 * fetched through the channel's location.
 */

static ngx_int_t
ngx_http_paygw_recon_url(ngx_http_request_t *r, ngx_http_paygw_recon_t *rc,
    ngx_str_t *url, ngx_str_t *path)
{
    u_char                      *p, *last, *host;
    size_t                       len;
    ngx_uint_t                   i;
    ngx_keyval_t                *kv;
    ngx_http_paygw_main_conf_t  *pmcf;

    p = url->data;
    last = p + url->len;

    if (url->len > 8 && ngx_strncmp(p, "https://", 8) == 0) {
        p += 8;

    } else if (url->len > 7 && ngx_strncmp(p, "http://", 7) == 0) {
        p += 7;

    } else {
        ngx_http_paygw_recon_fail(rc, "the download URL is not http(s)");
        return NGX_ERROR;
    }

    host = p;

    while (p < last && *p != '/' && *p != '?' && *p != '#' && *p != '@') {
        p++;
    }

    len = p - host;

    if (p == last || *p != '/' || len == 0) {
        ngx_http_paygw_recon_fail(rc, "the download URL is malformed");
        return NGX_ERROR;
    }

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_paygw_module);

    kv = pmcf->statement_hosts ? pmcf->statement_hosts->elts : NULL;

    for (i = 0; kv && i < pmcf->statement_hosts->nelts; i++) {
        if (kv[i].key.len == rc->ch->name.len
            && ngx_strncmp(kv[i].key.data, rc->ch->name.data,
                           rc->ch->name.len) == 0
            && kv[i].value.len == len
            && ngx_strncasecmp(kv[i].value.data, host, len) == 0)
        {
            break;
        }
    }

    if (kv == NULL || i == pmcf->statement_hosts->nelts) {
        ngx_http_paygw_recon_fail(rc, "the download host \"%*s\" is not in "
                                  "paygw_statement_hosts for %V",
                                  ngx_min(len, 64), host, &rc->ch->name);
        return NGX_ERROR;
    }

    path->data = p;
    path->len = last - p;

    if (ngx_strlchr(p, last, '#')) {
        path->len = ngx_strlchr(p, last, '#') - p;
    }

    return NGX_OK;
}


static void
ngx_http_paygw_recon_stream(ngx_http_paygw_recon_t *rc,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_http_paygw_provider_call_t  *pc;

    pc = ctx->provider;

    rc->stream.call.kind = NGX_HTTP_PAYGW_CALL_STATEMENT;
    rc->stream.call.sr = pc->call.sr;
    rc->stream.rc = rc;

    ngx_http_set_ctx(pc->call.sr, &rc->stream, ngx_http_paygw_module);
}


/* type,out_trade_no,out_refund_no,provider_id,amount_fen,status,time */

static ngx_int_t
ngx_http_paygw_recon_wechat_line(ngx_http_paygw_recon_t *rc, ngx_str_t *col,
    ngx_uint_t ncols)
{
    int64_t     amount;
    ngx_uint_t  refund, status;

    if (ncols != 7 || ngx_http_paygw_recon_amount(&col[4], &amount) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_paygw_is(&col[0], "trade")) {
        refund = 0;
        status = (ngx_http_paygw_is(&col[5], "SUCCESS")
                  || ngx_http_paygw_is(&col[5], "REFUND"))
                 ? NGX_HTTP_PAYGW_RS_SUCCEEDED
                 : ngx_http_paygw_is(&col[5], "PAYERROR")
                   ? NGX_HTTP_PAYGW_RS_FAILED
                   : (ngx_http_paygw_is(&col[5], "CLOSED")
                      || ngx_http_paygw_is(&col[5], "REVOKED"))
                     ? NGX_HTTP_PAYGW_RS_CLOSED : NGX_HTTP_PAYGW_RS_PENDING;

    } else if (ngx_http_paygw_is(&col[0], "refund")) {
        refund = 1;
        status = ngx_http_paygw_is(&col[5], "SUCCESS")
                 ? NGX_HTTP_PAYGW_RS_SUCCEEDED
                 : (ngx_http_paygw_is(&col[5], "ABNORMAL")
                    || ngx_http_paygw_is(&col[5], "CLOSED"))
                   ? NGX_HTTP_PAYGW_RS_FAILED : NGX_HTTP_PAYGW_RS_PENDING;

    } else {
        return NGX_ERROR;
    }

    ngx_http_paygw_recon_match(rc, refund ? &col[2] : &col[1], refund,
                               &col[1], &col[3], amount, status, &col[5]);

    return NGX_OK;
}


/* paygw_statement_hosts CHANNEL HOST[:PORT] ...; */

char *
ngx_http_paygw_statement_hosts(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_paygw_main_conf_t *pmcf = conf;

    ngx_str_t     *value;
    ngx_uint_t     i;
    ngx_keyval_t  *kv;

    value = cf->args->elts;

    if (pmcf->statement_hosts == NULL) {
        pmcf->statement_hosts = ngx_array_create(cf->pool, 4,
                                                 sizeof(ngx_keyval_t));
        if (pmcf->statement_hosts == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    for (i = 2; i < cf->args->nelts; i++) {
        if (value[i].len == 0
            || ngx_strlchr(value[i].data, value[i].data + value[i].len, '/'))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid host \"%V\": host or host:port",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        kv = ngx_array_push(pmcf->statement_hosts);
        if (kv == NULL) {
            return NGX_CONF_ERROR;
        }

        kv->key = value[1];
        kv->value = value[i];
    }

    return NGX_CONF_OK;
}


/* the acquirer's settlement file: GET, signed like every acquirer call */

static ngx_int_t
ngx_http_paygw_recon_bank_fetch(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_http_paygw_recon_t *rc)
{
    u_char                          *p;
    size_t                           mdlen;
    EVP_MAC                         *mac;
    EVP_MAC_CTX                     *mctx;
    ngx_str_t                        ts, sig;
    OSSL_PARAM                       params[2];
    ngx_http_paygw_channel_t        *ch;
    ngx_http_paygw_provider_call_t  *pc;
    u_char                           md[EVP_MAX_MD_SIZE];

    ch = rc->ch;

    pc = ngx_http_paygw_provider_create(r, "GET");
    if (pc == NULL) {
        return NGX_ERROR;
    }

    pc->path.len = sizeof("/acquirer/v1/settlements/") - 1 + rc->date.len;
    pc->path.data = ngx_pnalloc(r->pool, pc->path.len);
    ts.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    sig.data = ngx_pnalloc(r->pool, 2 * EVP_MAX_MD_SIZE);

    if (pc->path.data == NULL || ts.data == NULL || sig.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(pc->path.data, "/acquirer/v1/settlements/",
                   sizeof("/acquirer/v1/settlements/") - 1);
    ngx_memcpy(p, rc->date.data, rc->date.len);

    ts.len = ngx_sprintf(ts.data, "%T", ngx_time()) - ts.data;

    /* HMAC-SHA256(ts "\n" METHOD "\n" path "\n" body) */

    params[0] = OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();

    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac == NULL) {
        return NGX_ERROR;
    }

    mctx = EVP_MAC_CTX_new(mac);
    rc->mac = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);

    if (mctx == NULL || rc->mac == NULL
        || EVP_MAC_init(mctx, ch->secret.data, ch->secret.len, params) != 1
        || EVP_MAC_init(rc->mac, ch->secret.data, ch->secret.len, params)
           != 1
        || EVP_MAC_update(mctx, ts.data, ts.len) != 1
        || EVP_MAC_update(mctx, (u_char *) "\nGET\n", 5) != 1
        || EVP_MAC_update(mctx, pc->path.data, pc->path.len) != 1
        || EVP_MAC_update(mctx, (u_char *) "\n", 1) != 1
        || EVP_MAC_final(mctx, md, &mdlen, sizeof(md)) != 1)
    {
        EVP_MAC_CTX_free(mctx);
        return NGX_ERROR;
    }

    EVP_MAC_CTX_free(mctx);

    sig.len = ngx_hex_dump(sig.data, md, mdlen) - sig.data;

    if (ngx_http_paygw_provider_header(r, pc, "X-Acquirer-Merchant",
                                       &ch->merchant) != NGX_OK
        || ngx_http_paygw_provider_header(r, pc, "X-Acquirer-Timestamp", &ts)
           != NGX_OK
        || ngx_http_paygw_provider_header(r, pc, "X-Acquirer-Signature",
                                          &sig) != NGX_OK)
    {
        return NGX_ERROR;
    }

    pc->stream = 1;

    ctx->provider = pc;
    ctx->waiting = &pc->call;

    if (ngx_http_paygw_provider_send(r, ch, pc) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_paygw_recon_stream(rc, ctx);

    return NGX_OK;
}


/* the statement's bytes as they arrive; nothing of them is kept */

static ngx_int_t
ngx_http_paygw_recon_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_buf_t                      *b;
    ngx_chain_t                    *cl;
    ngx_http_paygw_recon_t         *rc;
    ngx_http_paygw_recon_stream_t  *st;

    if (r == r->main) {
        return ngx_http_next_body_filter(r, in);
    }

    st = ngx_http_get_module_ctx(r, ngx_http_paygw_module);

    if (st == NULL || st->call.kind != NGX_HTTP_PAYGW_CALL_STATEMENT
        || st->call.sr != r)
    {
        return ngx_http_next_body_filter(r, in);
    }

    rc = st->rc;

    /* the acquirer signs ts "\n" body: its timestamp goes in first */

    if (rc->mac && !rc->mac_started) {
        ngx_http_paygw_recon_mac_start(rc, r);
    }

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file && !ngx_buf_in_memory(b)) {
            ngx_http_paygw_recon_fail(rc, "the statement location buffers "
                                      "to a file: set proxy_max_temp_file_size "
                                      "0 in it");
            b->file_pos = b->file_last;

        } else if (ngx_buf_in_memory(b)) {
            if (r->headers_out.status == NGX_HTTP_OK) {
                ngx_http_paygw_recon_feed(rc, b->pos, b->last - b->pos);
            }

            b->pos = b->last;
        }

        if (b->last_buf || b->last_in_chain) {
            rc->complete = 1;
        }
    }

    return NGX_OK;
}


static void
ngx_http_paygw_recon_mac_start(ngx_http_paygw_recon_t *rc,
    ngx_http_request_t *sr)
{
    ngx_uint_t        n;
    ngx_table_elt_t  *h;

    rc->mac_started = 1;

    h = ngx_http_paygw_header(&sr->headers_out.headers,
                              "X-Acquirer-Timestamp", &n);

    if (h == NULL) {
        ngx_http_paygw_recon_fail(rc, "the statement is not signed");
        return;
    }

    if (EVP_MAC_update(rc->mac, h->value.data, h->value.len) != 1
        || EVP_MAC_update(rc->mac, (u_char *) "\n", 1) != 1)
    {
        ngx_http_paygw_recon_fail(rc, "cannot hash the statement");
    }
}


static void
ngx_http_paygw_recon_feed(ngx_http_paygw_recon_t *rc, u_char *p, size_t n)
{
    if (rc->failed) {
        return;
    }

    rc->bytes += n;

    if (rc->md && EVP_DigestUpdate(rc->md, p, n) != 1) {
        ngx_http_paygw_recon_fail(rc, "cannot hash the statement");
        return;
    }

    if (rc->mac && EVP_MAC_update(rc->mac, p, n) != 1) {
        ngx_http_paygw_recon_fail(rc, "cannot hash the statement");
        return;
    }

    if (rc->zip) {
        ngx_http_paygw_recon_zip(rc, p, n);
        return;
    }

    ngx_http_paygw_recon_lines(rc, p, n);
}


/* text, cut into lines */

static void
ngx_http_paygw_recon_lines(ngx_http_paygw_recon_t *rc, u_char *p, size_t n)
{
    u_char  *nl, *last;
    size_t   k;

    last = p + n;

    while (p < last && !rc->failed) {
        nl = ngx_strlchr(p, last, '\n');
        k = (nl ? nl : last) - p;

        if (rc->len + k > NGX_HTTP_PAYGW_RECON_MAX_LINE) {
            ngx_http_paygw_recon_fail(rc, "line %ui of the statement is "
                                      "longer than %d bytes", rc->lines + 1,
                                      NGX_HTTP_PAYGW_RECON_MAX_LINE);
            return;
        }

        ngx_memcpy(rc->line + rc->len, p, k);
        rc->len += k;

        if (nl == NULL) {
            return;
        }

        ngx_http_paygw_recon_parse_line(rc);
        rc->len = 0;
        p = nl + 1;
    }
}


static void
ngx_http_paygw_recon_parse_line(ngx_http_paygw_recon_t *rc)
{
    size_t      len;
    ngx_str_t   col[NGX_HTTP_PAYGW_RECON_MAX_COLS];
    ngx_uint_t  ncols;

    rc->lines++;
    len = rc->len;

    if (len && rc->line[len - 1] == '\r') {
        len--;
    }

    if (ngx_http_paygw_utf8_valid(rc->line, len) != NGX_OK) {
        ngx_http_paygw_recon_fail(rc, "line %ui of the statement is not "
                                  "valid UTF-8", rc->lines);
        return;
    }

    if (rc->comments && len && rc->line[0] == '#') {

        /* the end of the table: "#----...业务明细列表结束----" */

        if (ngx_strnstr(rc->line, "\xe5\x88\x97\xe8\xa1\xa8\xe7\xbb\x93"
                                  "\xe6\x9d\x9f", len)
            != NULL)
        {
            rc->end_seen = 1;
        }

        return;
    }

    if (rc->end_seen) {
        return;
    }

    if (!rc->header_seen) {
        if (len != ngx_strlen(rc->header)
            || ngx_strncmp(rc->line, rc->header, len) != 0)
        {
            ngx_http_paygw_recon_fail(rc, "unexpected statement columns: "
                                      "\"%*s\"", ngx_min(len, 128),
                                      rc->line);
            return;
        }

        rc->header_seen = 1;
        return;
    }

    if (len == 0) {
        return;
    }

    ncols = ngx_http_paygw_recon_csv(rc->line, rc->line + len, col,
                                     NGX_HTTP_PAYGW_RECON_MAX_COLS);

    if (rc->line_handler(rc, col, ncols) != NGX_OK && !rc->failed) {
        ngx_http_paygw_recon_fail(rc, "line %ui of the statement is "
                                  "malformed", rc->lines);
    }
}


/* type,out_trade_no,out_refund_no,provider_id,amount,currency,status,time */

static ngx_int_t
ngx_http_paygw_recon_bank_line(ngx_http_paygw_recon_t *rc, ngx_str_t *col,
    ngx_uint_t ncols)
{
    int64_t     amount;
    ngx_uint_t  refund, status;

    if (ncols != 8 || ngx_http_paygw_recon_amount(&col[4], &amount) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_paygw_is(&col[0], "charge")) {
        refund = 0;
        status = ngx_http_paygw_is(&col[6], "approved")
                 ? NGX_HTTP_PAYGW_RS_SUCCEEDED
                 : ngx_http_paygw_is(&col[6], "declined")
                   ? NGX_HTTP_PAYGW_RS_FAILED : NGX_HTTP_PAYGW_RS_PENDING;

    } else if (ngx_http_paygw_is(&col[0], "refund")) {
        refund = 1;
        status = ngx_http_paygw_is(&col[6], "succeeded")
                 ? NGX_HTTP_PAYGW_RS_SUCCEEDED
                 : ngx_http_paygw_is(&col[6], "failed")
                   ? NGX_HTTP_PAYGW_RS_FAILED : NGX_HTTP_PAYGW_RS_PENDING;

    } else {
        return NGX_ERROR;
    }

    ngx_http_paygw_recon_match(rc, refund ? &col[2] : &col[1], refund,
                               &col[1], &col[3], amount, status, &col[6]);

    return NGX_OK;
}


static void
ngx_http_paygw_recon_match(ngx_http_paygw_recon_t *rc, ngx_str_t *key,
    ngx_uint_t refund, ngx_str_t *payment_no, ngx_str_t *trade_no,
    int64_t amount, ngx_uint_t status, ngx_str_t *status_text)
{
    ngx_http_paygw_recon_local_t  *l;

    rc->remote++;

    l = ngx_http_paygw_recon_find(rc, key);

    if (l == NULL || l->refund != refund || l->seen) {
        rc->missing_local++;
        ngx_http_paygw_recon_diff(rc, "missing_local", NULL, key, refund,
                                  payment_no, trade_no, amount, status_text);
        return;
    }

    l->seen = 1;

    if (l->amount != amount) {
        rc->amount_mismatch++;
        ngx_http_paygw_recon_diff(rc, "amount_mismatch", l, key, refund,
                                  payment_no, trade_no, amount, status_text);
        return;
    }

    if (l->status != status) {
        rc->status_mismatch++;
        ngx_http_paygw_recon_diff(rc, "status_mismatch", l, key, refund,
                                  payment_no, trade_no, amount, status_text);
        return;
    }

    rc->matched++;
}


static void
ngx_http_paygw_recon_diff(ngx_http_paygw_recon_t *rc, const char *kind,
    ngx_http_paygw_recon_local_t *l, ngx_str_t *key, ngx_uint_t refund,
    ngx_str_t *payment_no, ngx_str_t *trade_no, int64_t amount,
    ngx_str_t *status_text)
{
    json_t  *d, *local, *remote;

    if (json_array_size(rc->diffs) >= NGX_HTTP_PAYGW_RECON_MAX_DIFFS) {
        return;
    }

    local = l ? json_pack("{s:I, s:s}", "amount", (json_int_t) l->amount,
                          "status", ngx_http_paygw_rs_names[l->status])
              : json_null();

    remote = status_text
             ? json_pack("{s:I, s:s%}", "amount", (json_int_t) amount,
                         "status", status_text->data, status_text->len)
             : json_null();

    d = json_pack("{s:s, s:o, s:o}", "kind", kind, "local", local,
                  "remote", remote);
    if (d == NULL) {
        return;
    }

    if (l) {
        json_object_set_new(d, "payment_no",
                            json_stringn((char *) l->payment_no.data,
                                         l->payment_no.len));
        json_object_set_new(d, "refund_no", l->refund
                            ? json_stringn((char *) l->refund_no.data,
                                           l->refund_no.len)
                            : json_null());
        json_object_set_new(d, "channel_trade_no", l->trade_no.data
                            ? json_stringn((char *) l->trade_no.data,
                                           l->trade_no.len)
                            : json_null());

        if (l->refund) {
            json_object_set_new(d, "out_refund_no",
                                json_stringn((char *) l->key.data,
                                             l->key.len));
        }

    } else {
        json_object_set_new(d, "payment_no",
                            payment_no->len
                            ? json_stringn((char *) payment_no->data,
                                           payment_no->len)
                            : json_null());
        json_object_set_new(d, "refund_no", json_null());
        json_object_set_new(d, "channel_trade_no",
                            trade_no && trade_no->len
                            ? json_stringn((char *) trade_no->data,
                                           trade_no->len)
                            : json_null());

        if (refund) {
            json_object_set_new(d, "out_refund_no",
                                json_stringn((char *) key->data, key->len));
        }
    }

    json_array_append_new(rc->diffs, d);
}


static void
ngx_http_paygw_recon_fail(ngx_http_paygw_recon_t *rc, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    if (rc->failed) {
        return;
    }

    rc->failed = 1;

    va_start(args, fmt);
    p = ngx_vslprintf((u_char *) rc->reason,
                      (u_char *) rc->reason + sizeof(rc->reason) - 1,
                      fmt, args);
    va_end(args);

    *p = '\0';

    ngx_log_error(NGX_LOG_WARN, rc->r->connection->log, 0,
                  "paygw reconcile %V: %s", &rc->id, rc->reason);
}


static ngx_int_t
ngx_http_paygw_recon_fetched(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    json_t                          *report;
    ngx_str_t                        text;
    ngx_http_paygw_recon_t          *rc;
    ngx_http_paygw_provider_call_t  *pc;

    rc = ctx->recon;
    pc = ctx->provider;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw reconcile %V: step \"fetched\" status:%ui "
                   "lines:%ui bytes:%O", &rc->id, pc->status, rc->lines,
                   rc->bytes);

    ngx_http_paygw_recon_check_complete(rc, pc);
    ngx_http_paygw_recon_check_signed(rc, pc);
    ngx_http_paygw_recon_missing_remote(rc);

    report = ngx_http_paygw_recon_report(rc);
    if (report == NULL
        || ngx_http_paygw_json_dump(r->pool, report, &text) != NGX_OK)
    {
        json_decref(report);
        return NGX_ERROR;
    }

    json_decref(report);

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "paygw reconcile %V: %V %V %s, %ui lines, %ui differences",
                  &rc->id, &rc->ch->name, &rc->date,
                  rc->failed ? "failed" : "completed", rc->lines,
                  rc->missing_local + rc->missing_remote
                  + rc->amount_mismatch + rc->status_mismatch);

    ctx->response = text;

    if (ngx_http_paygw_recon_save(r, ctx, &text) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_paygw_mysql_wait(r, ctx, ngx_http_paygw_recon_stored);
}


/* the statement was read whole: else the report fails with the reason */

static void
ngx_http_paygw_recon_check_complete(ngx_http_paygw_recon_t *rc,
    ngx_http_paygw_provider_call_t *pc)
{
    if (!pc->call.ok) {
        ngx_http_paygw_recon_fail(rc, "the statement could not be fetched: "
                                  "%V", &pc->call.error);

    } else if (pc->status != NGX_HTTP_OK) {
        ngx_http_paygw_recon_fail(rc, "the provider answered %ui",
                                  pc->status);

    } else if (!rc->complete || rc->len != 0
               || (pc->call.sr->headers_out.content_length_n >= 0
                   && pc->call.sr->headers_out.content_length_n
                      != rc->bytes))
    {
        ngx_http_paygw_recon_fail(rc, "the statement is truncated after "
                                  "%O bytes", rc->bytes);

    } else if (rc->zip && rc->zip_state != 3) {
        ngx_http_paygw_recon_fail(rc, "the bill's zip ends before its "
                                  "entry does (truncated)");

    } else if (rc->zip && !rc->gz && (rc->gbk_len || !rc->end_seen)) {
        ngx_http_paygw_recon_fail(rc, "the bill ends before its table "
                                  "does (truncated)");

    } else if (!rc->header_seen) {
        ngx_http_paygw_recon_fail(rc, "the statement is empty");
    }
}


/* the acquirer's signature or WeChat Pay's hash of the whole statement */

static void
ngx_http_paygw_recon_check_signed(ngx_http_paygw_recon_t *rc,
    ngx_http_paygw_provider_call_t *pc)
{
    size_t      mdlen;
    ngx_str_t  *h_ts, *h_sig;
    u_char      md[EVP_MAX_MD_SIZE];
    u_char      hex[2 * EVP_MAX_MD_SIZE];

    /* the acquirer signs the whole file: HMAC(ts "\n" body) */

    if (!rc->failed && rc->mac) {
        h_ts = ngx_http_paygw_provider_response_header(pc,
                                                   "X-Acquirer-Timestamp");
        h_sig = ngx_http_paygw_provider_response_header(pc,
                                                   "X-Acquirer-Signature");

        if (h_ts == NULL || h_sig == NULL || !rc->mac_started) {
            ngx_http_paygw_recon_fail(rc, "the statement is not signed");

        } else if (EVP_MAC_final(rc->mac, md, &mdlen, sizeof(md)) != 1) {
            ngx_http_paygw_recon_fail(rc, "cannot hash the statement");

        } else if (h_sig->len != 2 * mdlen
                   || CRYPTO_memcmp(ngx_hex_dump(hex, md, mdlen) - 2 * mdlen,
                                    h_sig->data, 2 * mdlen) != 0)
        {
            ngx_http_paygw_recon_fail(rc, "the statement's signature does "
                                      "not verify");
        }
    }

    /* WeChat Pay: the SHA1 its bill query announced */

    if (!rc->failed && rc->md) {
        if (EVP_DigestFinal_ex(rc->md, md, NULL) != 1) {
            ngx_http_paygw_recon_fail(rc, "cannot hash the statement");

        } else if (ngx_memcmp(ngx_hex_dump(hex, md, 20) - 40, rc->hash.data,
                              40) != 0)
        {
            ngx_http_paygw_recon_fail(rc, "the statement's SHA1 is not the "
                                      "hash_value WeChat Pay announced");
        }
    }
}


/* a statement read whole: the succeeded local rows no line named */

static void
ngx_http_paygw_recon_missing_remote(ngx_http_paygw_recon_t *rc)
{
    ngx_uint_t                     i;
    ngx_http_paygw_recon_local_t  *l;

    if (rc->failed) {
        return;
    }

    for (i = 0; i < rc->nlocal; i++) {
        l = &rc->local[i];

        if (l->seen || l->status != NGX_HTTP_PAYGW_RS_SUCCEEDED) {
            continue;
        }

        rc->missing_remote++;
        ngx_http_paygw_recon_diff(rc, "missing_remote", l, &l->key,
                                  l->refund, &l->payment_no,
                                  &l->trade_no, 0, NULL);
    }
}


/*
 * The report into MySQL; differences: an event, in the transaction of
 * the report.
 */

static ngx_int_t
ngx_http_paygw_recon_save(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_str_t *text)
{
    json_t                  *event;
    ngx_uint_t               n;
    ngx_http_paygw_recon_t  *rc;

    rc = ctx->recon;

    n = rc->missing_local + rc->missing_remote + rc->amount_mismatch
        + rc->status_mismatch;

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_insert_recon(ctx->mysql, &rc->id,
                                             &rc->ch->name, &rc->date,
                                             rc->failed, n,
                                             rc->run ? &rc->run->holder
                                                     : NULL,
                                             text)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!rc->failed && n) {
        ctx->mysql->transaction = 1;

        event = json_pack("{s:s%, s:s%, s:s%, s:I}",
                          "id", rc->id.data, rc->id.len,
                          "channel", rc->ch->name.data, rc->ch->name.len,
                          "date", rc->date.data, rc->date.len,
                          "differences", (json_int_t) n);

        if (event == NULL
            || ngx_http_paygw_store_recon_event(r, ctx->mysql, &rc->id,
                                                event)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static json_t *
ngx_http_paygw_recon_report(ngx_http_paygw_recon_t *rc)
{
    json_t  *doc;

    doc = json_pack("{s:s%, s:s%, s:s%, s:s, s:{s:I, s:I, s:I, s:I, s:I, "
                    "s:I, s:I}, s:O}",
                    "id", rc->id.data, rc->id.len,
                    "channel", rc->ch->name.data, rc->ch->name.len,
                    "date", rc->date.data, rc->date.len,
                    "status", rc->failed ? "failed" : "completed",
                    "summary",
                    "local", (json_int_t) rc->nlocal,
                    "remote", (json_int_t) rc->remote,
                    "matched", (json_int_t) rc->matched,
                    "missing_local", (json_int_t) rc->missing_local,
                    "missing_remote", (json_int_t) rc->missing_remote,
                    "amount_mismatch", (json_int_t) rc->amount_mismatch,
                    "status_mismatch", (json_int_t) rc->status_mismatch,
                    "differences", rc->failed ? json_array() : rc->diffs);
    if (doc == NULL) {
        return NULL;
    }

    if (rc->failed) {
        json_object_set_new(doc, "reason", json_string(rc->reason));
    }

    json_object_set_new(doc, "lines", json_integer(rc->lines));

    if (!rc->failed && json_array_size(rc->diffs)
                       >= NGX_HTTP_PAYGW_RECON_MAX_DIFFS)
    {
        json_object_set_new(doc, "differences_truncated", json_true());
    }

    return doc;
}


static ngx_int_t
ngx_http_paygw_recon_stored(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    json_t                  *doc;
    json_error_t             err;
    ngx_http_paygw_recon_t  *rc;

    if (!ctx->mysql->call.ok || ctx->mysql->err_no) {
        return ngx_http_paygw_mysql_down(r, ctx);
    }

    ctx->side_effect = 1;

    rc = ctx->recon;

    if (rc->run) {
        ngx_str_null(&ctx->response);
        return ngx_http_paygw_recon_run_report(r, ctx, rc);
    }

    doc = json_loadb((char *) ctx->response.data, ctx->response.len, 0, &err);
    ngx_str_null(&ctx->response);

    return ngx_http_paygw_respond(r, ctx, NGX_HTTP_OK, doc);
}


/*
 * POST /v1/admin/reconcile {"days":N,"lease":SECONDS}: the scheduled run
 * (ngx_http_paygw_reconciler.c).  Under the MySQL lease, or not at all.
 */

ngx_int_t
ngx_http_paygw_recon_run(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    return ngx_http_paygw_steps(r, ctx, ngx_http_paygw_recon_run_start);
}


static ngx_int_t
ngx_http_paygw_recon_run_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    json_t                      *doc;
    json_int_t                   n;
    ngx_uint_t                   i;
    json_error_t                 err;
    ngx_http_paygw_recon_t       probe;
    ngx_http_paygw_channel_t    *ch;
    ngx_http_paygw_recon_run_t  *run;
    ngx_http_paygw_main_conf_t  *pmcf;

    if (!ngx_http_paygw_recon_admin(ctx)) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_FORBIDDEN, "forbidden",
                                   "only admin keys may reconcile");
    }

    run = ngx_pcalloc(r->pool, sizeof(ngx_http_paygw_recon_run_t));
    if (run == NULL) {
        return NGX_ERROR;
    }

    run->days = 7;
    run->lease = 600;

    doc = json_loadb((char *) ctx->body.data, ctx->body.len, 0, &err);

    if (doc && json_is_object(doc)) {
        n = json_integer_value(json_object_get(doc, "days"));
        if (n >= 1 && n <= 62) {
            run->days = (ngx_uint_t) n;
        }

        n = json_integer_value(json_object_get(doc, "lease"));
        if (n >= 1 && n <= 86400) {
            run->lease = (time_t) n;
        }
    }

    json_decref(doc);

    /* every channel whose provider has a statement */

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_paygw_module);
    ch = pmcf->channels.elts;

    for (i = 0; i < pmcf->channels.nelts
                && run->nchannels < NGX_HTTP_PAYGW_SLOTS; i++)
    {
        probe.ch = &ch[i];

        if (ngx_http_paygw_recon_setup(&probe) == NGX_OK) {
            run->channels[run->nchannels++] = &ch[i];
        }
    }

    run->reports = json_array();

    if (run->reports == NULL
        || ngx_http_paygw_random_no(r->pool, 'L', &run->holder) != NGX_OK)
    {
        json_decref(run->reports);
        return NGX_ERROR;
    }

    ctx->recon = run;

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_recon_lease(ctx->mysql, &run->holder,
                                            run->lease)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_paygw_mysql_wait(r, ctx, ngx_http_paygw_recon_run_leased);
}


static ngx_int_t
ngx_http_paygw_recon_run_leased(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    json_t                      *doc;
    ngx_str_t                   *holder;
    ngx_http_paygw_sql_stmt_t   *stmt;
    ngx_http_paygw_recon_run_t  *run;

    run = ctx->recon;

    if (!ctx->mysql->call.ok || ctx->mysql->err_no
        || ctx->mysql->stmts.nelts != 2)
    {
        json_decref(run->reports);
        return ngx_http_paygw_mysql_down(r, ctx);
    }

    stmt = ctx->mysql->stmts.elts;
    holder = stmt[1].nrows ? &stmt[1].values[0] : NULL;

    if (holder == NULL || holder->len != run->holder.len
        || ngx_strncmp(holder->data, run->holder.data, holder->len) != 0)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "paygw reconcile run %V: the lease is held by %V, "
                      "not running", &run->holder, holder ? holder : NULL);

        json_decref(run->reports);

        doc = json_pack("{s:b, s:s%}", "ran", 0, "holder",
                        holder ? (char *) holder->data : "",
                        holder ? holder->len : 0);

        return ngx_http_paygw_respond(r, ctx, NGX_HTTP_OK, doc);
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "paygw reconcile run %V: lease taken, %ui channels, "
                  "%ui days", &run->holder, run->nchannels, run->days);

    return ngx_http_paygw_recon_run_next(r, ctx, run);
}


static ngx_int_t
ngx_http_paygw_recon_run_next(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx,
    ngx_http_paygw_recon_run_t *run)
{
    ngx_tm_t                 tm;
    ngx_uint_t               i;
    ngx_http_paygw_recon_t  *rc;

    if (run->job >= run->nchannels * run->days) {

        for (i = 0; i < run->nchannels; i++) {
            ngx_http_paygw_m_reconciliation(r, &run->channels[i]->name,
                                            run->diffs[i]);
        }

        ctx->recon = run;

        if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
            || ngx_http_paygw_store_recon_release(ctx->mysql, &run->holder)
               != NGX_OK)
        {
            json_decref(run->reports);
            return NGX_ERROR;
        }

        return ngx_http_paygw_mysql_wait(r, ctx,
                                         ngx_http_paygw_recon_run_released);
    }

    rc = ngx_pcalloc(r->pool, sizeof(ngx_http_paygw_recon_t));
    if (rc == NULL) {
        json_decref(run->reports);
        return NGX_ERROR;
    }

    rc->r = r;
    rc->run = run;
    rc->ch = run->channels[run->job / run->days];

    (void) ngx_http_paygw_recon_setup(rc);

    /* the provider's day: today, yesterday, ... */

    ngx_gmtime(ngx_time() + rc->tz_hours * 3600
               - (time_t) (run->job % run->days) * 86400, &tm);

    rc->date.data = ngx_pnalloc(r->pool, sizeof("yyyy-mm-dd") - 1);
    if (rc->date.data == NULL) {
        json_decref(run->reports);
        return NGX_ERROR;
    }

    rc->date.len = ngx_sprintf(rc->date.data, "%4d-%02d-%02d",
                               tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday)
                   - rc->date.data;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw reconcile run %V: %V %V", &run->holder,
                   &rc->ch->name, &rc->date);

    return ngx_http_paygw_recon_begin(r, ctx, rc);
}


static ngx_int_t
ngx_http_paygw_recon_run_report(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx, ngx_http_paygw_recon_t *rc)
{
    ngx_uint_t                   n;
    ngx_http_paygw_recon_run_t  *run;

    run = rc->run;

    n = rc->failed ? 0 : rc->missing_local + rc->missing_remote
                         + rc->amount_mismatch + rc->status_mismatch;

    run->diffs[run->job / run->days] += n;

    json_array_append_new(run->reports,
        json_pack("{s:s%, s:s%, s:s%, s:s, s:I}",
                  "id", rc->id.data, rc->id.len,
                  "channel", rc->ch->name.data, rc->ch->name.len,
                  "date", rc->date.data, rc->date.len,
                  "status", rc->failed ? "failed" : "completed",
                  "differences", (json_int_t) n));

    run->job++;

    /* its inflate and iconv states and its differences: done with */

    ngx_http_paygw_recon_cleanup(rc);

    return ngx_http_paygw_recon_run_next(r, ctx, run);
}


static ngx_int_t
ngx_http_paygw_recon_run_released(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    json_t                      *doc;
    ngx_http_paygw_recon_run_t  *run;

    run = ctx->recon;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "paygw reconcile run %V: done, %uz reports",
                  &run->holder, json_array_size(run->reports));

    doc = json_pack("{s:b, s:s%, s:o}", "ran", 1,
                    "holder", run->holder.data, run->holder.len,
                    "reports", run->reports);

    return ngx_http_paygw_respond(r, ctx, NGX_HTTP_OK, doc);
}


/* GET /v1/reconciliations/{id} */

ngx_int_t
ngx_http_paygw_get_recon(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    return ngx_http_paygw_steps(r, ctx, ngx_http_paygw_recon_get_start);
}


static ngx_int_t
ngx_http_paygw_recon_get_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    if (!ngx_http_paygw_recon_admin(ctx)) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_FORBIDDEN, "forbidden",
                                   "only admin keys may read "
                                   "reconciliations");
    }

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_select_recon(ctx->mysql, &ctx->object_no)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ctx->mysql->read_only = 1;

    return ngx_http_paygw_mysql_wait(r, ctx,
                                     ngx_http_paygw_recon_get_selected);
}


static ngx_int_t
ngx_http_paygw_recon_get_selected(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    json_t                     *doc;
    json_error_t                err;
    ngx_http_paygw_sql_stmt_t  *stmt;

    if (!ctx->mysql->call.ok || ctx->mysql->err_no) {
        return ngx_http_paygw_mysql_down(r, ctx);
    }

    stmt = ctx->mysql->stmts.elts;

    if (stmt[0].nrows == 0 || stmt[0].values[0].data == NULL) {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_NOT_FOUND, "not_found",
                                   "no reconciliation %V", &ctx->object_no);
    }

    doc = json_loadb((char *) stmt[0].values[0].data, stmt[0].values[0].len,
                     0, &err);

    return ngx_http_paygw_respond(r, ctx, NGX_HTTP_OK, doc);
}


/* ---- helpers ---- */

static int
ngx_http_paygw_recon_cmp(const void *one, const void *two)
{
    const ngx_http_paygw_recon_local_t  *a = one, *b = two;

    size_t     n;
    ngx_int_t  rc;

    n = ngx_min(a->key.len, b->key.len);
    rc = ngx_memcmp(a->key.data, b->key.data, n);

    if (rc != 0) {
        return (int) rc;
    }

    return (a->key.len < b->key.len) ? -1 : (a->key.len > b->key.len);
}


static ngx_http_paygw_recon_local_t *
ngx_http_paygw_recon_find(ngx_http_paygw_recon_t *rc, ngx_str_t *key)
{
    int                            c;
    ngx_uint_t                     lo, hi, mid;
    ngx_http_paygw_recon_local_t   probe;

    probe.key = *key;
    lo = 0;
    hi = rc->nlocal;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        c = ngx_http_paygw_recon_cmp(&probe, &rc->local[mid]);

        if (c == 0) {
            return &rc->local[mid];
        }

        if (c < 0) {
            hi = mid;

        } else {
            lo = mid + 1;
        }
    }

    return NULL;
}


static ngx_uint_t
ngx_http_paygw_recon_local_status(ngx_str_t *s, ngx_uint_t refund)
{
    switch (ngx_http_paygw_status_parse(s)) {

    case NGX_HTTP_PAYGW_STATUS_SUCCEEDED:
    case NGX_HTTP_PAYGW_STATUS_PARTIALLY_REFUNDED:
    case NGX_HTTP_PAYGW_STATUS_REFUNDED:
        return NGX_HTTP_PAYGW_RS_SUCCEEDED;

    case NGX_HTTP_PAYGW_STATUS_FAILED:
        return NGX_HTTP_PAYGW_RS_FAILED;

    case NGX_HTTP_PAYGW_STATUS_CLOSED:
        return NGX_HTTP_PAYGW_RS_CLOSED;

    default:
        return NGX_HTTP_PAYGW_RS_PENDING;
    }
}


/* minor units: 1..18 digits */

static ngx_int_t
ngx_http_paygw_recon_amount(ngx_str_t *s, int64_t *n)
{
    u_char  *p;

    if (s->len == 0 || s->len > 18) {
        return NGX_ERROR;
    }

    *n = 0;

    for (p = s->data; p < s->data + s->len; p++) {
        if (*p < '0' || *p > '9') {
            return NGX_ERROR;
        }

        *n = *n * 10 + (*p - '0');
    }

    return NGX_OK;
}


/* a CSV line's fields, quotes removed in place; max + 1: too many */

static ngx_uint_t
ngx_http_paygw_recon_csv(u_char *p, u_char *last, ngx_str_t *col,
    ngx_uint_t max)
{
    u_char      *dst;
    ngx_uint_t   n;

    n = 0;

    for ( ;; ) {
        if (n == max) {
            return max + 1;
        }

        col[n].data = p;
        dst = p;

        if (p < last && *p == '"') {
            p++;

            while (p < last) {
                if (*p == '"') {
                    if (p + 1 < last && p[1] == '"') {
                        *dst++ = '"';
                        p += 2;
                        continue;
                    }

                    p++;
                    break;
                }

                *dst++ = *p++;
            }

        } else {
            while (p < last && *p != ',') {
                *dst++ = *p++;
            }
        }

        col[n].len = dst - col[n].data;
        n++;

        if (p >= last) {
            return n;
        }

        if (*p != ',') {
            return max + 1;
        }

        p++;
    }
}
