
/*
 * paygw: GET /v1/settlements?date=YYYY-MM-DD[&merchant_id=M] (SPEC §7).
 *
 * Per merchant, channel and currency, for the payments and refunds that
 * succeeded on that day (Asia/Shanghai, the providers' day): count and
 * gross of the payments, count and amount of the refunds, the fees of
 * the payments and the fees the refunds returned, and
 *
 *     net = gross - refunded - fees + returned_fees
 *
 * A merchant key sees its own merchant; an admin key every merchant, or
 * the one merchant_id= names.
 */


#include "ngx_http_paygw_payments.h"
#include "ngx_http_paygw_request.h"
#include "ngx_http_paygw_store.h"
#include "ngx_http_paygw_fees.h"


#define NGX_HTTP_PAYGW_SETTLEMENT_TZ  "Asia/Shanghai"


static ngx_int_t ngx_http_paygw_settlements_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static ngx_int_t ngx_http_paygw_settlements_selected(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx);
static json_t *ngx_http_paygw_settlements_row(json_t *list, ngx_str_t *v);
static json_int_t ngx_http_paygw_settlements_int(ngx_str_t *v);
static void ngx_http_paygw_settlements_add(json_t *row, const char *name,
    json_int_t n);


ngx_int_t
ngx_http_paygw_settlements(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    return ngx_http_paygw_steps(r, ctx, ngx_http_paygw_settlements_start);
}


static ngx_int_t
ngx_http_paygw_settlements_start(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    ngx_str_t  date, merchant;

    if (ngx_http_arg(r, (u_char *) "date", 4, &date) != NGX_OK
        || ngx_http_paygw_valid_date(&date) != NGX_OK)
    {
        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request",
                                   "date must be a day, YYYY-MM-DD");
    }

    ngx_str_null(&merchant);

    if (ngx_http_arg(r, (u_char *) "merchant_id", 11, &merchant) == NGX_OK) {

        if (ngx_http_paygw_identifier(&merchant) != NGX_OK) {
            return ngx_http_paygw_fail(r, ctx, NGX_HTTP_BAD_REQUEST,
                                       "invalid_request",
                                       "merchant_id must be 1-64 "
                                       "characters of [A-Za-z0-9_.:-]");
        }

        if (!(ctx->merchant_id.len == 1 && ctx->merchant_id.data[0] == '*')
            && (merchant.len != ctx->merchant_id.len
                || ngx_strncmp(merchant.data, ctx->merchant_id.data,
                               merchant.len) != 0))
        {
            return ngx_http_paygw_fail(r, ctx, NGX_HTTP_FORBIDDEN,
                                       "forbidden",
                                       "only admin keys may see another "
                                       "merchant's settlements");
        }

    } else if (!(ctx->merchant_id.len == 1
                 && ctx->merchant_id.data[0] == '*'))
    {
        merchant = ctx->merchant_id;
    }

    ctx->object_no = date;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw settlements: step \"start\" %V merchant \"%V\"",
                   &date, &merchant);

    if (ngx_http_paygw_mysql_start(r, ctx) != NGX_OK
        || ngx_http_paygw_store_select_settlements(ctx->mysql,
                                   merchant.len ? &merchant : NULL, &date)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ctx->mysql->read_only = 1;

    return ngx_http_paygw_mysql_wait(r, ctx,
                                     ngx_http_paygw_settlements_selected);
}


static ngx_int_t
ngx_http_paygw_settlements_selected(ngx_http_request_t *r,
    ngx_http_paygw_ctx_t *ctx)
{
    json_t                     *doc, *list, *row;
    size_t                      i, n;
    ngx_str_t                  *v;
    json_int_t                  net;
    ngx_uint_t                  k;
    ngx_http_paygw_sql_stmt_t  *stmt;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw settlements: step \"selected\" %V",
                   &ctx->object_no);

    if (!ctx->mysql->call.ok || ctx->mysql->err_no
        || ctx->mysql->stmts.nelts != 2)
    {
        return ngx_http_paygw_mysql_down(r, ctx);
    }

    stmt = ctx->mysql->stmts.elts;

    list = json_array();
    if (list == NULL) {
        return NGX_ERROR;
    }

    /*
     * payments: merchant, channel, currency, count, gross, fees;
     * refunds: merchant, channel, currency, count, refunded, returned
     */

    for (k = 0; k < 2; k++) {
        for (i = 0; i < stmt[k].nrows; i++) {
            v = &stmt[k].values[i * stmt[k].nfields];

            row = ngx_http_paygw_settlements_row(list, v);
            if (row == NULL) {
                json_decref(list);
                return NGX_ERROR;
            }

            ngx_http_paygw_settlements_add(row, k ? "refund_count" : "count",
                                      ngx_http_paygw_settlements_int(&v[3]));
            ngx_http_paygw_settlements_add(row, k ? "refunded" : "gross",
                                      ngx_http_paygw_settlements_int(&v[4]));
            ngx_http_paygw_settlements_add(row, k ? "returned_fees" : "fees",
                                      ngx_http_paygw_settlements_int(&v[5]));
        }
    }

    n = json_array_size(list);

    for (i = 0; i < n; i++) {
        row = json_array_get(list, i);

        net = json_integer_value(json_object_get(row, "gross"))
              - json_integer_value(json_object_get(row, "refunded"))
              - json_integer_value(json_object_get(row, "fees"))
              + json_integer_value(json_object_get(row, "returned_fees"));

        json_object_set_new(row, "net", json_integer(net));
    }

    doc = json_pack("{s:s%, s:s, s:o}",
                    "date", ctx->object_no.data, ctx->object_no.len,
                    "timezone", NGX_HTTP_PAYGW_SETTLEMENT_TZ,
                    "settlements", list);
    if (doc == NULL) {
        return NGX_ERROR;
    }

    return ngx_http_paygw_respond(r, ctx, NGX_HTTP_OK, doc);
}


/* the row of (merchant, channel, currency), added with zeros if new */

static json_t *
ngx_http_paygw_settlements_row(json_t *list, ngx_str_t *v)
{
    json_t      *row;
    size_t       i;
    ngx_uint_t   k;
    const char  *s, *names[] = { "merchant_id", "channel", "currency" };

    for (i = 0; i < json_array_size(list); i++) {
        row = json_array_get(list, i);

        for (k = 0; k < 3; k++) {
            s = json_string_value(json_object_get(row, names[k]));

            if (s == NULL || ngx_strlen(s) != v[k].len
                || ngx_strncmp(s, v[k].data, v[k].len) != 0)
            {
                break;
            }
        }

        if (k == 3) {
            return row;
        }
    }

    row = json_pack("{s:s%, s:s%, s:s%, s:I, s:I, s:I, s:I, s:I, s:I}",
                    "merchant_id", v[0].data, v[0].len,
                    "channel", v[1].data, v[1].len,
                    "currency", v[2].data, v[2].len,
                    "count", (json_int_t) 0, "gross", (json_int_t) 0,
                    "refund_count", (json_int_t) 0,
                    "refunded", (json_int_t) 0, "fees", (json_int_t) 0,
                    "returned_fees", (json_int_t) 0);

    if (row == NULL || json_array_append_new(list, row) != 0) {
        return NULL;
    }

    return row;
}


static void
ngx_http_paygw_settlements_add(json_t *row, const char *name, json_int_t n)
{
    json_object_set_new(row, name,
                        json_integer(json_integer_value(
                                         json_object_get(row, name)) + n));
}

static json_int_t
ngx_http_paygw_settlements_int(ngx_str_t *v)
{
    off_t  n;

    if (v->data == NULL || v->len == 0) {
        return 0;
    }

    n = ngx_atoof(v->data, v->len);

    return (n < 0) ? 0 : (json_int_t) n;
}
