
/*
 * paygw: payments, refunds and outbox events in MySQL.
 *
 * Every state change is a conditional UPDATE (WHERE status IN the
 * states it may leave) expecting exactly one row, in the same
 * transaction as the outbox event it causes: duplicate, late or
 * out-of-order updates match nothing and change nothing.
 */


#include "ngx_http_paygw_store.h"
#include "ngx_http_paygw_render.h"
#include "ngx_http_paygw_fees.h"
#include "ngx_http_paygw_mysql.h"
#include "ngx_http_paygw_webhook.h"


#define NGX_HTTP_PAYGW_ISO(col)                                              \
    "DATE_FORMAT(" col ", '%Y-%m-%dT%H:%i:%sZ')"

#define NGX_HTTP_PAYGW_PAYMENT_COLUMNS                                       \
    "payment_no, merchant_id, business_no, amount, currency, channel, "      \
    "status, channel_trade_no, refunded_amount, refund_reserved, subject, "  \
    "notify_url, metadata, pay_url, qr_code, code_url, card_brand, "         \
    "card_last4, failure_code, failure_message, "                            \
    NGX_HTTP_PAYGW_ISO("created_at") ", "                                    \
    NGX_HTTP_PAYGW_ISO("updated_at") ", "                                    \
    "TIMESTAMPDIFF(SECOND, updated_at, UTC_TIMESTAMP(3)), "                  \
    "COALESCE(TIMESTAMPDIFF(SECOND, expire_at, UTC_TIMESTAMP(3)), 0), "     \
    "fee, net_amount"

#define NGX_HTTP_PAYGW_REFUND_COLUMNS                                        \
    "r.refund_no, r.out_refund_no, r.payment_no, r.merchant_id, r.amount, "  \
    "r.currency, r.status, r.reason, r.channel_refund_no, r.failure_code, "  \
    NGX_HTTP_PAYGW_ISO("r.created_at") ", "                                  \
    NGX_HTTP_PAYGW_ISO("r.updated_at") ", p.channel, "                      \
    "TIMESTAMPDIFF(SECOND, r.updated_at, UTC_TIMESTAMP(3)), p.amount"


static ngx_int_t ngx_http_paygw_store_str(ngx_http_paygw_mysql_op_t *op,
    ngx_http_paygw_sql_stmt_t *stmt, ngx_str_t *v);
static ngx_int_t ngx_http_paygw_store_event(ngx_http_request_t *r,
    ngx_http_paygw_mysql_op_t *op, ngx_str_t *merchant_id, const char *type,
    ngx_str_t *object_no, ngx_str_t *notify_url, json_t *data);
static int64_t ngx_http_paygw_store_int(ngx_str_t *v);
static time_t ngx_http_paygw_store_age(ngx_str_t *updated_at,
    ngx_str_t *db_age);
static ngx_int_t ngx_http_paygw_store_refund_payment(
    ngx_http_paygw_mysql_op_t *op, ngx_http_paygw_refund_t *rf,
    ngx_uint_t succeeded);
static ngx_int_t ngx_http_paygw_store_refund_fee(
    ngx_http_paygw_mysql_op_t *op, ngx_http_paygw_refund_t *rf);


ngx_int_t
ngx_http_paygw_store_insert_payment(ngx_http_paygw_mysql_op_t *op,
    ngx_http_paygw_payment_t *p)
{
    ngx_http_paygw_sql_stmt_t  *s;

    s = ngx_http_paygw_mysql_add(op,
            "INSERT INTO payments (payment_no, merchant_id, business_no, "
            "amount, currency, channel, status, subject, notify_url, "
            "metadata, card_brand, card_last4, expire_at, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "UTC_TIMESTAMP(3) + INTERVAL ? SECOND, "
            "STR_TO_DATE(?, '%Y-%m-%dT%H:%i:%sZ'), "
            "STR_TO_DATE(?, '%Y-%m-%dT%H:%i:%sZ'))");
    if (s == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_paygw_store_str(op, s, &p->payment_no) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &p->merchant_id) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &p->business_no) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, p->amount) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &p->currency) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &p->channel) != NGX_OK
        || ngx_http_paygw_store_str(op, s,
                                    ngx_http_paygw_status_name(p->status))
           != NGX_OK
        || ngx_http_paygw_store_str(op, s, &p->subject) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &p->notify_url) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &p->metadata) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &p->card_brand) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &p->card_last4) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, p->expire_seconds) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &p->created_at) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &p->updated_at) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_store_select_payment(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *merchant_id, ngx_str_t *payment_no, ngx_str_t *business_no)
{
    ngx_uint_t                  any;
    ngx_http_paygw_sql_stmt_t  *s;

    /* an admin key ("*") sees every merchant's payments */

    any = (merchant_id->len == 1 && merchant_id->data[0] == '*');

    if (payment_no) {
        s = ngx_http_paygw_mysql_add(op, any
            ? "SELECT " NGX_HTTP_PAYGW_PAYMENT_COLUMNS " FROM payments "
              "WHERE payment_no = ?"
            : "SELECT " NGX_HTTP_PAYGW_PAYMENT_COLUMNS " FROM payments "
              "WHERE payment_no = ? AND merchant_id = ?");
        if (s == NULL
            || ngx_http_paygw_store_str(op, s, payment_no) != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else {
        s = ngx_http_paygw_mysql_add(op, any
            ? "SELECT " NGX_HTTP_PAYGW_PAYMENT_COLUMNS " FROM payments "
              "WHERE business_no = ? ORDER BY id LIMIT 2"
            : "SELECT " NGX_HTTP_PAYGW_PAYMENT_COLUMNS " FROM payments "
              "WHERE business_no = ? AND merchant_id = ?");
        if (s == NULL
            || ngx_http_paygw_store_str(op, s, business_no) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (!any && ngx_http_paygw_store_str(op, s, merchant_id) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_store_row_payment(ngx_http_paygw_sql_stmt_t *stmt,
    ngx_http_paygw_payment_t *p)
{
    ngx_str_t  *v;

    if (stmt->nrows == 0) {
        return NGX_DECLINED;
    }

    v = stmt->values;

    p->payment_no = v[0];
    p->merchant_id = v[1];
    p->business_no = v[2];
    p->amount = ngx_http_paygw_store_int(&v[3]);
    p->currency = v[4];
    p->channel = v[5];
    p->status = ngx_http_paygw_status_parse(&v[6]);
    p->channel_trade_no = v[7];
    p->refunded_amount = ngx_http_paygw_store_int(&v[8]);
    p->refund_reserved = ngx_http_paygw_store_int(&v[9]);
    p->subject = v[10];
    p->notify_url = v[11];
    p->metadata = v[12];
    p->pay_url = v[13];
    p->qr_code = v[14];
    p->code_url = v[15];
    p->card_brand = v[16];
    p->card_last4 = v[17];
    p->failure_code = v[18];
    p->failure_message = v[19];
    p->created_at = v[20];
    p->updated_at = v[21];
    p->age = ngx_http_paygw_store_age(&v[21], &v[22]);
    p->overdue = (time_t) ngx_http_paygw_store_int(&v[23]);

    if (v[24].data) {
        p->fee = ngx_http_paygw_store_int(&v[24]);
        p->net_amount = ngx_http_paygw_store_int(&v[25]);
        p->fee_set = 1;
    }

    return NGX_OK;
}


/*
 * The settle UPDATE: one text per case, so that each stays one prepared
 * statement.  A payment that succeeds gets its fee in the same UPDATE
 * (SPEC §7: computed once, in the transaction of that transition; the
 * status condition lets only the transition that won write it, and
 * COALESCE never overwrites one).
 */

#define NGX_HTTP_PAYGW_SETTLE_SET                                            \
    "UPDATE payments SET status = ?, "                                       \
    "channel_trade_no = COALESCE(?, channel_trade_no), "                     \
    "card_brand = COALESCE(?, card_brand), "                                 \
    "card_last4 = COALESCE(?, card_last4), "                                 \
    "qr_code = COALESCE(?, qr_code), "                                       \
    "code_url = COALESCE(?, code_url), "                                     \
    "failure_code = ?, failure_message = ?, version = version + 1, "        \
    "updated_at = STR_TO_DATE(?, '%Y-%m-%dT%H:%i:%sZ') "

#define NGX_HTTP_PAYGW_SETTLE_FEE                                            \
    ", fee = COALESCE(fee, ?), net_amount = COALESCE(net_amount, ?), "      \
    "succeeded_at = COALESCE(succeeded_at, "                                 \
    "STR_TO_DATE(?, '%Y-%m-%dT%H:%i:%sZ')) "

#define NGX_HTTP_PAYGW_SETTLE_OPEN                                           \
    "WHERE payment_no = ? AND status IN ('processing', 'unknown', 'pending')"


ngx_int_t
ngx_http_paygw_store_settle_payment(ngx_http_request_t *r,
    ngx_http_paygw_mysql_op_t *op, ngx_http_paygw_payment_t *p,
    ngx_http_paygw_outcome_t *out)
{
    const char                 *event, *sql;
    ngx_uint_t                  pending, succeeded;
    ngx_http_paygw_sql_stmt_t  *s;

    op->transaction = 1;

    /*
     * Forward only: a final state from any open one; "pending" (a QR
     * code waiting for its buyer) and "unknown" only from before the
     * provider said so.
     */

    pending = !out->definitive
              || out->status == NGX_HTTP_PAYGW_STATUS_PENDING;
    succeeded = !pending && out->status == NGX_HTTP_PAYGW_STATUS_SUCCEEDED;

    if (pending) {
        sql = NGX_HTTP_PAYGW_SETTLE_SET
              "WHERE payment_no = ? AND status IN ('processing', 'unknown')";

    } else if (succeeded) {
        ngx_http_paygw_fees_compute(r, p);
        sql = NGX_HTTP_PAYGW_SETTLE_SET NGX_HTTP_PAYGW_SETTLE_FEE
              NGX_HTTP_PAYGW_SETTLE_OPEN;

    } else {
        sql = NGX_HTTP_PAYGW_SETTLE_SET NGX_HTTP_PAYGW_SETTLE_OPEN;
    }

    s = ngx_http_paygw_mysql_add(op, sql);
    if (s == NULL) {
        return NGX_ERROR;
    }

    s->expect_affected = 1;

    if (ngx_http_paygw_store_str(op, s,
                                 ngx_http_paygw_status_name(out->status))
        != NGX_OK
        || ngx_http_paygw_store_str(op, s, &out->provider_no) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &out->card_brand) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &out->card_last4) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &out->qr_code) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &out->code_url) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &out->failure_code) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &out->failure_message) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &p->updated_at) != NGX_OK
        || (succeeded
            && (ngx_http_paygw_sql_int(op, s, p->fee) != NGX_OK
                || ngx_http_paygw_sql_int(op, s, p->net_amount) != NGX_OK
                || ngx_http_paygw_store_str(op, s, &p->updated_at)
                   != NGX_OK))
        || ngx_http_paygw_store_str(op, s, &p->payment_no) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (pending) {
        return NGX_OK;
    }

    event = succeeded
            ? "payment.succeeded"
            : (out->status == NGX_HTTP_PAYGW_STATUS_CLOSED)
              ? "payment.closed" : "payment.failed";

    return ngx_http_paygw_store_event(r, op, &p->merchant_id, event,
                                      &p->payment_no, &p->notify_url,
                                      ngx_http_paygw_payment_json(p));
}


ngx_int_t
ngx_http_paygw_store_close_payment(ngx_http_request_t *r,
    ngx_http_paygw_mysql_op_t *op, ngx_http_paygw_payment_t *p)
{
    ngx_http_paygw_sql_stmt_t  *s;

    op->transaction = 1;

    s = ngx_http_paygw_mysql_add(op,
            "UPDATE payments SET status = 'closed', version = version + 1, "
            "updated_at = STR_TO_DATE(?, '%Y-%m-%dT%H:%i:%sZ') "
            "WHERE payment_no = ? AND status IN ('pending', 'unknown')");
    if (s == NULL) {
        return NGX_ERROR;
    }

    s->expect_affected = 1;

    if (ngx_http_paygw_store_str(op, s, &p->updated_at) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &p->payment_no) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_paygw_store_event(r, op, &p->merchant_id,
                                      "payment.closed", &p->payment_no,
                                      &p->notify_url,
                                      ngx_http_paygw_payment_json(p));
}


ngx_int_t
ngx_http_paygw_store_reserve_refund(ngx_http_paygw_mysql_op_t *op,
    ngx_http_paygw_refund_t *rf)
{
    ngx_http_paygw_sql_stmt_t  *s;

    op->transaction = 1;

    /*
     * The row lock taken by this UPDATE serializes concurrent refunds of
     * one payment: succeeded plus reserved never exceeds the amount.
     */

    s = ngx_http_paygw_mysql_add(op,
            "UPDATE payments SET refund_reserved = refund_reserved + ?, "
            "version = version + 1 "
            "WHERE payment_no = ? AND merchant_id = ? "
            "AND status IN ('succeeded', 'partially_refunded') "
            "AND amount - refunded_amount - refund_reserved >= ?");
    if (s == NULL) {
        return NGX_ERROR;
    }

    s->expect_affected = 1;

    if (ngx_http_paygw_sql_int(op, s, rf->amount) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &rf->payment_no) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &rf->merchant_id) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, rf->amount) != NGX_OK)
    {
        return NGX_ERROR;
    }

    s = ngx_http_paygw_mysql_add(op,
            "INSERT INTO refunds (refund_no, out_refund_no, payment_no, "
            "merchant_id, amount, currency, status, reason, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, "
            "STR_TO_DATE(?, '%Y-%m-%dT%H:%i:%sZ'), "
            "STR_TO_DATE(?, '%Y-%m-%dT%H:%i:%sZ'))");
    if (s == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_paygw_store_str(op, s, &rf->refund_no) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &rf->out_refund_no) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &rf->payment_no) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &rf->merchant_id) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, rf->amount) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &rf->currency) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &rf->reason) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &rf->created_at) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &rf->updated_at) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_store_settle_refund(ngx_http_request_t *r,
    ngx_http_paygw_mysql_op_t *op, ngx_http_paygw_refund_t *rf,
    ngx_http_paygw_outcome_t *out)
{
    ngx_int_t                   rc;
    ngx_http_paygw_refund_t     settled;
    ngx_http_paygw_sql_stmt_t  *s;

    op->transaction = 1;

    /*
     * Locks are taken in the order a reservation takes them: the
     * payment row first, then the refund's.  The refund update, which
     * must match exactly one pending or unknown refund, rolls back the
     * payment update when the refund was settled already.
     */

    if (out->definitive) {
        rc = ngx_http_paygw_store_refund_payment(op, rf, out->status
                                         == NGX_HTTP_PAYGW_STATUS_SUCCEEDED);
        if (rc != NGX_OK) {
            return rc;
        }

        if (out->status == NGX_HTTP_PAYGW_STATUS_SUCCEEDED
            && ngx_http_paygw_store_refund_fee(op, rf) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    s = ngx_http_paygw_mysql_add(op,
            "UPDATE refunds SET status = ?, "
            "channel_refund_no = COALESCE(?, channel_refund_no), "
            "failure_code = ?, version = version + 1, "
            "updated_at = STR_TO_DATE(?, '%Y-%m-%dT%H:%i:%sZ') "
            "WHERE out_refund_no = ? AND status IN ('pending', 'unknown')");
    if (s == NULL) {
        return NGX_ERROR;
    }

    s->expect_affected = 1;

    if (ngx_http_paygw_store_str(op, s,
                                 ngx_http_paygw_status_name(out->status))
        != NGX_OK
        || ngx_http_paygw_store_str(op, s, &out->provider_no) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &out->failure_code) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &rf->updated_at) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &rf->out_refund_no) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!out->definitive) {
        return NGX_OK;
    }

    /* the event shows the refund as it will be once this commits */

    settled = *rf;
    settled.status = out->status;
    settled.channel_refund_no = out->provider_no;
    settled.failure_code = out->failure_code;

    return ngx_http_paygw_store_event(r, op, &rf->merchant_id,
                                      out->status
                                      == NGX_HTTP_PAYGW_STATUS_SUCCEEDED
                                      ? "refund.succeeded" : "refund.failed",
                                      &rf->refund_no, NULL,
                                      ngx_http_paygw_refund_json(&settled));
}


static ngx_int_t
ngx_http_paygw_store_refund_payment(ngx_http_paygw_mysql_op_t *op,
    ngx_http_paygw_refund_t *rf, ngx_uint_t succeeded)
{
    ngx_http_paygw_sql_stmt_t  *s;

    if (succeeded) {
        /* assignments run left to right: status sees the new total */

        s = ngx_http_paygw_mysql_add(op,
                "UPDATE payments SET refund_reserved = refund_reserved - ?, "
                "refunded_amount = refunded_amount + ?, "
                "status = IF(refunded_amount >= amount, 'refunded', "
                "'partially_refunded'), version = version + 1, "
                "updated_at = STR_TO_DATE(?, '%Y-%m-%dT%H:%i:%sZ') "
                "WHERE payment_no = ? AND refund_reserved >= ?");

        if (s == NULL
            || ngx_http_paygw_sql_int(op, s, rf->amount) != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else {
        s = ngx_http_paygw_mysql_add(op,
                "UPDATE payments SET refund_reserved = refund_reserved - ?, "
                "version = version + 1, "
                "updated_at = STR_TO_DATE(?, '%Y-%m-%dT%H:%i:%sZ') "
                "WHERE payment_no = ? AND refund_reserved >= ?");
        if (s == NULL) {
            return NGX_ERROR;
        }
    }

    /*
     * The reservation still held: a settlement that lost the race for
     * this refund (the settler against the refund's own request) matches
     * no row and rolls back as a conflict, as the refund update after it
     * would, rather than failing the table's CHECK with an error.
     */

    s->expect_affected = 1;

    if (ngx_http_paygw_sql_int(op, s, rf->amount) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &rf->updated_at) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &rf->payment_no) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, rf->amount) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_store_select_refund(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *merchant_id, ngx_str_t *refund_no)
{
    ngx_uint_t                  any;
    ngx_http_paygw_sql_stmt_t  *s;

    any = (merchant_id->len == 1 && merchant_id->data[0] == '*');

    s = ngx_http_paygw_mysql_add(op, any
        ? "SELECT " NGX_HTTP_PAYGW_REFUND_COLUMNS " FROM refunds r "
          "JOIN payments p ON p.payment_no = r.payment_no "
          "WHERE r.refund_no = ? ORDER BY r.id LIMIT 2"
        : "SELECT " NGX_HTTP_PAYGW_REFUND_COLUMNS " FROM refunds r "
          "JOIN payments p ON p.payment_no = r.payment_no "
          "WHERE r.refund_no = ? AND r.merchant_id = ?");
    if (s == NULL || ngx_http_paygw_store_str(op, s, refund_no) != NGX_OK) {
        return NGX_ERROR;
    }

    if (!any && ngx_http_paygw_store_str(op, s, merchant_id) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The settler's claim (sql/005_settler.sql): the open payments (or
 * refunds) it settles now, each moved to its next try (1 s, 2 s, 4 s ...
 * at most 10 min later) in one UPDATE, then read back by the claim.
 * "due": only rows whose next try has come (the periodic settler), so
 * undecidable rows never starve newer ones and two runs never take the
 * same row; otherwise every open row (an operator asking now).  A claim
 * is no change of the row: updated_at (ON UPDATE) is kept.
 */

ngx_int_t
ngx_http_paygw_store_claim_stale(ngx_http_paygw_mysql_op_t *op,
    ngx_uint_t refunds, ngx_str_t *claim, ngx_uint_t due, ngx_uint_t limit)
{
    ngx_http_paygw_sql_stmt_t  *s;

#define NGX_HTTP_PAYGW_CLAIM_SET                                              \
    "SET settle_next_at = UTC_TIMESTAMP(3) + INTERVAL "                      \
    "LEAST(POW(2, LEAST(settle_attempts, 10)), 600) SECOND, "                \
    "settle_attempts = settle_attempts + 1, settle_claim = ?, "              \
    "updated_at = updated_at "

/*
 * The open payments, as a range of idx_status (status, succeeded_at,
 * expire_at): a pending one has no succeeded_at, so its entries are in
 * expire_at order (sql/007_hot_path_indexes.sql).
 */

#define NGX_HTTP_PAYGW_CLAIM_OPEN                                             \
    "(status IN ('unknown', 'processing') OR (status = 'pending' "           \
    "AND succeeded_at IS NULL AND expire_at < UTC_TIMESTAMP(3))) "

#define NGX_HTTP_PAYGW_CLAIM_DUE                                              \
    "AND (? = 0 OR settle_next_at IS NULL "                                  \
    "OR settle_next_at <= UTC_TIMESTAMP(3)) "                                \
    "ORDER BY COALESCE(settle_next_at, updated_at) LIMIT ?"

    s = ngx_http_paygw_mysql_add(op, refunds
        ? "UPDATE refunds " NGX_HTTP_PAYGW_CLAIM_SET
          "WHERE status IN ('pending', 'unknown') "
          NGX_HTTP_PAYGW_CLAIM_DUE
        : "UPDATE payments " NGX_HTTP_PAYGW_CLAIM_SET
          "WHERE " NGX_HTTP_PAYGW_CLAIM_OPEN
          NGX_HTTP_PAYGW_CLAIM_DUE);

    if (s == NULL
        || ngx_http_paygw_store_str(op, s, claim) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, (int64_t) due) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, (int64_t) limit) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /*
     * The claimed payments are read back under the claim's own status
     * condition: a range of idx_status over the open rows, as the claim
     * itself (the create path keeps no index on settle_claim,
     * sql/007_hot_path_indexes.sql).  Time only moves on, so an expired
     * QR code the claim took is still expired here; a row settled
     * meanwhile is not open any more and needs no settler.
     */

    s = ngx_http_paygw_mysql_add(op, refunds
        ? "SELECT out_refund_no FROM refunds WHERE settle_claim = ? "
          "ORDER BY updated_at"
        : "SELECT payment_no, merchant_id FROM payments "
          "WHERE settle_claim = ? AND " NGX_HTTP_PAYGW_CLAIM_OPEN
          "ORDER BY updated_at");

#undef NGX_HTTP_PAYGW_CLAIM_SET
#undef NGX_HTTP_PAYGW_CLAIM_DUE
#undef NGX_HTTP_PAYGW_CLAIM_OPEN

    if (s == NULL || ngx_http_paygw_store_str(op, s, claim) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the settler's view: a refund by our number at the provider */

ngx_int_t
ngx_http_paygw_store_select_refund_out(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *out_refund_no)
{
    ngx_http_paygw_sql_stmt_t  *s;

    s = ngx_http_paygw_mysql_add(op,
            "SELECT " NGX_HTTP_PAYGW_REFUND_COLUMNS " FROM refunds r "
            "JOIN payments p ON p.payment_no = r.payment_no "
            "WHERE r.out_refund_no = ?");
    if (s == NULL
        || ngx_http_paygw_store_str(op, s, out_refund_no) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* refunds still open ("pending" or "unknown"), the oldest first */

ngx_int_t
ngx_http_paygw_store_select_stale_refunds(ngx_http_paygw_mysql_op_t *op,
    ngx_uint_t limit)
{
    ngx_http_paygw_sql_stmt_t  *s;

    s = ngx_http_paygw_mysql_add(op,
            "SELECT out_refund_no FROM refunds "
            "WHERE status IN ('pending', 'unknown') "
            "ORDER BY updated_at LIMIT ?");
    if (s == NULL
        || ngx_http_paygw_sql_int(op, s, (int64_t) limit) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_store_row_refund(ngx_http_paygw_sql_stmt_t *stmt,
    ngx_http_paygw_refund_t *rf, ngx_str_t *channel)
{
    ngx_str_t  *v;

    if (stmt->nrows == 0) {
        return NGX_DECLINED;
    }

    v = stmt->values;

    rf->refund_no = v[0];
    rf->out_refund_no = v[1];
    rf->payment_no = v[2];
    rf->merchant_id = v[3];
    rf->amount = ngx_http_paygw_store_int(&v[4]);
    rf->currency = v[5];
    rf->status = ngx_http_paygw_status_parse(&v[6]);
    rf->reason = v[7];
    rf->channel_refund_no = v[8];
    rf->failure_code = v[9];
    rf->created_at = v[10];
    rf->updated_at = v[11];
    *channel = v[12];
    rf->age = ngx_http_paygw_store_age(&v[11], &v[13]);
    rf->payment_amount = ngx_http_paygw_store_int(&v[14]);

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_store_risk_event(ngx_http_request_t *r,
    ngx_http_paygw_mysql_op_t *op, ngx_http_paygw_payment_t *p,
    const char *reason)
{
    json_t  *data;

    /* no payment exists: the event names the order that was refused */

    data = json_pack("{s:s%, s:s%, s:I, s:s%, s:s%, s:s}",
                     "merchant_id", p->merchant_id.data, p->merchant_id.len,
                     "business_no", p->business_no.data, p->business_no.len,
                     "amount", (json_int_t) p->amount,
                     "currency", p->currency.data, p->currency.len,
                     "channel", p->channel.data, p->channel.len,
                     "reason", reason);

    return ngx_http_paygw_store_event(r, op, &p->merchant_id, "risk.block",
                                      &p->business_no, &p->notify_url, data);
}


ngx_int_t
ngx_http_paygw_store_select_stale(ngx_http_paygw_mysql_op_t *op,
    time_t older_than, ngx_uint_t limit)
{
    ngx_http_paygw_sql_stmt_t  *s;

    s = ngx_http_paygw_mysql_add(op,
            "SELECT payment_no, merchant_id FROM payments "
            "WHERE (status IN ('unknown', 'processing') "
            "AND updated_at < UTC_TIMESTAMP(3) - INTERVAL ? SECOND) "
            "OR (status = 'pending' AND succeeded_at IS NULL "
            "AND expire_at < UTC_TIMESTAMP(3)) "
            "ORDER BY updated_at LIMIT ?");
    if (s == NULL
        || ngx_http_paygw_sql_int(op, s, (int64_t) older_than) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, (int64_t) limit) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


#define NGX_HTTP_PAYGW_OUTBOX_INSERT                                         \
    "INSERT INTO outbox_events (event_id, merchant_id, type, object_no, "   \
    "notify_url, payload"


static ngx_int_t
ngx_http_paygw_store_event(ngx_http_request_t *r,
    ngx_http_paygw_mysql_op_t *op, ngx_str_t *merchant_id, const char *type,
    ngx_str_t *object_no, ngx_str_t *notify_url, json_t *data)
{
    json_t                     *doc;
    int64_t                     lease;
    ngx_int_t                   rc;
    ngx_str_t                   event_id, now, payload, t, *owner;
    ngx_str_t                   fields[NGX_HTTP_PAYGW_HO_FIELDS];
    ngx_http_paygw_sql_stmt_t  *s;

    if (data == NULL
        || ngx_http_paygw_event_id(r->pool, &event_id) != NGX_OK)
    {
        json_decref(data);
        return NGX_ERROR;
    }

    ngx_http_paygw_now(r->pool, &now);

    /* the webhook body, ready to sign and send */

    doc = json_pack("{s:s%, s:s, s:s%, s:o}",
                    "id", event_id.data, event_id.len,
                    "type", type,
                    "created_at", now.data, now.len,
                    "data", data);
    if (doc == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_paygw_json_dump(r->pool, doc, &payload);
    json_decref(doc);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    /*
     * A payment's event knows its destination (or that it has none): a
     * plain INSERT, possibly leased to this instance already (handed
     * off to delivery).  A refund's takes its payment's notify_url
     * inside MySQL.
     */

    owner = notify_url ? ngx_http_paygw_handoff_lease(r) : NULL;

    s = ngx_http_paygw_mysql_add(op, owner
            ? NGX_HTTP_PAYGW_OUTBOX_INSERT ", lease_owner, lease_until, "
              "next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, "
              "NOW(3) + INTERVAL ? MICROSECOND, "
              "NOW(3) + INTERVAL ? MICROSECOND)"
            : notify_url
            ? NGX_HTTP_PAYGW_OUTBOX_INSERT ") VALUES (?, ?, ?, ?, ?, ?)"
            : NGX_HTTP_PAYGW_OUTBOX_INSERT ") VALUES (?, ?, ?, ?, "
              "COALESCE(?, (SELECT notify_url FROM payments "
              "WHERE payment_no = (SELECT payment_no FROM refunds "
              "WHERE refund_no = ? AND merchant_id = ? LIMIT 1))), ?)");
    if (s == NULL) {
        return NGX_ERROR;
    }

    t.data = (u_char *) type;
    t.len = ngx_strlen(type);

    if (ngx_http_paygw_store_str(op, s, &event_id) != NGX_OK
        || ngx_http_paygw_store_str(op, s, merchant_id) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &t) != NGX_OK
        || ngx_http_paygw_store_str(op, s, object_no) != NGX_OK
        || ngx_http_paygw_store_str(op, s, notify_url) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (notify_url == NULL
        && (ngx_http_paygw_store_str(op, s, object_no) != NGX_OK
            || ngx_http_paygw_store_str(op, s, merchant_id) != NGX_OK))
    {
        return NGX_ERROR;
    }

    if (ngx_http_paygw_store_str(op, s, &payload) != NGX_OK) {
        return NGX_ERROR;
    }

    if (owner == NULL) {
        return NGX_OK;
    }

    lease = (int64_t) ngx_http_paygw_webhook_conf(r)->lease * 1000;

    if (ngx_http_paygw_store_str(op, s, owner) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, lease) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, lease) != NGX_OK)
    {
        return NGX_ERROR;
    }

    fields[NGX_HTTP_PAYGW_HO_EVENT_ID] = event_id;
    fields[NGX_HTTP_PAYGW_HO_MERCHANT] = *merchant_id;
    fields[NGX_HTTP_PAYGW_HO_TYPE] = t;
    fields[NGX_HTTP_PAYGW_HO_PAYLOAD] = payload;

    if (notify_url->data) {
        fields[NGX_HTTP_PAYGW_HO_URL] = *notify_url;
    } else {
        ngx_str_null(&fields[NGX_HTTP_PAYGW_HO_URL]);
    }

    return ngx_http_paygw_handoff_add(r, op, fields);
}


static ngx_int_t
ngx_http_paygw_store_str(ngx_http_paygw_mysql_op_t *op,
    ngx_http_paygw_sql_stmt_t *stmt, ngx_str_t *v)
{
    /* an absent value is SQL NULL */

    if (v == NULL || v->data == NULL) {
        return ngx_http_paygw_sql_null(op, stmt);
    }

    return ngx_http_paygw_sql_str(op, stmt, v);
}


static int64_t
ngx_http_paygw_store_int(ngx_str_t *v)
{
    u_char   *p;
    int64_t   n;
    ngx_int_t neg;

    if (v->data == NULL || v->len == 0) {
        return 0;
    }

    p = v->data;
    neg = (*p == '-');

    if (neg) {
        p++;
    }

    for (n = 0; p < v->data + v->len; p++) {
        n = n * 10 + (*p - '0');
    }

    return neg ? -n : n;
}


/*
 * A succeeded refund returns its share of the payment's fee, rounded
 * down: fee * refund / amount; the refund that completes the payment's
 * refunds returns what is left, so a full refund returns it all.  Runs
 * after the payment's refunded_amount includes this refund and before
 * the refund's own status UPDATE (which rolls all back if it lost).
 */

static ngx_int_t
ngx_http_paygw_store_refund_fee(ngx_http_paygw_mysql_op_t *op,
    ngx_http_paygw_refund_t *rf)
{
    ngx_http_paygw_sql_stmt_t  *s;

    s = ngx_http_paygw_mysql_add(op,
            "UPDATE refunds r JOIN payments p ON p.payment_no = r.payment_no "
            "SET r.succeeded_at = STR_TO_DATE(?, '%Y-%m-%dT%H:%i:%sZ'), "
            "r.fee_returned = IF(p.fee IS NULL, NULL, "
            "IF(p.refunded_amount >= p.amount, p.fee - p.fee_returned, "
            "CAST(CAST(p.fee AS DECIMAL(32,0)) * r.amount DIV p.amount "
            "AS SIGNED))) "
            "WHERE r.out_refund_no = ? AND r.status IN ('pending', 'unknown')");
    if (s == NULL
        || ngx_http_paygw_store_str(op, s, &rf->updated_at) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &rf->out_refund_no) != NGX_OK)
    {
        return NGX_ERROR;
    }

    s = ngx_http_paygw_mysql_add(op,
            "UPDATE payments p JOIN refunds r ON r.payment_no = p.payment_no "
            "SET p.fee_returned = p.fee_returned + r.fee_returned "
            "WHERE r.out_refund_no = ? AND r.status IN ('pending', 'unknown') "
            "AND r.fee_returned IS NOT NULL");
    if (s == NULL
        || ngx_http_paygw_store_str(op, s, &rf->out_refund_no) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Settlements (SPEC §7): the payments and the refunds that succeeded on
 * a day of Asia/Shanghai (UTC+8, no daylight saving time), per merchant,
 * channel and currency.  Two result sets: payments (count, gross, fees)
 * and refunds (count, refunded, returned fees).  A payment that
 * succeeded is "succeeded" or, refunded since, one of the two refunded
 * states: three ranges of idx_status (status, succeeded_at, expire_at).
 */

#define NGX_HTTP_PAYGW_SUCCEEDED                                             \
    "status IN ('succeeded', 'partially_refunded', 'refunded') AND "

#define NGX_HTTP_PAYGW_DAY(col)                                              \
    col " >= STR_TO_DATE(?, '%Y-%m-%d') - INTERVAL 8 HOUR AND "              \
    col " < STR_TO_DATE(?, '%Y-%m-%d') + INTERVAL 16 HOUR"

ngx_int_t
ngx_http_paygw_store_select_settlements(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *merchant_id, ngx_str_t *date)
{
    ngx_http_paygw_sql_stmt_t  *s;

    s = ngx_http_paygw_mysql_add(op, merchant_id
            ? "SELECT merchant_id, channel, currency, COUNT(*), SUM(amount), "
              "SUM(COALESCE(fee, 0)) FROM payments WHERE "
              NGX_HTTP_PAYGW_SUCCEEDED
              NGX_HTTP_PAYGW_DAY("succeeded_at") " AND merchant_id = ? "
              "GROUP BY merchant_id, channel, currency "
              "ORDER BY merchant_id, channel, currency"
            : "SELECT merchant_id, channel, currency, COUNT(*), SUM(amount), "
              "SUM(COALESCE(fee, 0)) FROM payments WHERE "
              NGX_HTTP_PAYGW_SUCCEEDED
              NGX_HTTP_PAYGW_DAY("succeeded_at") " "
              "GROUP BY merchant_id, channel, currency "
              "ORDER BY merchant_id, channel, currency");
    if (s == NULL
        || ngx_http_paygw_store_str(op, s, date) != NGX_OK
        || ngx_http_paygw_store_str(op, s, date) != NGX_OK
        || (merchant_id
            && ngx_http_paygw_store_str(op, s, merchant_id) != NGX_OK))
    {
        return NGX_ERROR;
    }

    s = ngx_http_paygw_mysql_add(op, merchant_id
            ? "SELECT r.merchant_id, p.channel, r.currency, COUNT(*), "
              "SUM(r.amount), SUM(COALESCE(r.fee_returned, 0)) FROM refunds r "
              "JOIN payments p ON p.payment_no = r.payment_no WHERE "
              NGX_HTTP_PAYGW_DAY("r.succeeded_at") " AND r.merchant_id = ? "
              "GROUP BY r.merchant_id, p.channel, r.currency "
              "ORDER BY r.merchant_id, p.channel, r.currency"
            : "SELECT r.merchant_id, p.channel, r.currency, COUNT(*), "
              "SUM(r.amount), SUM(COALESCE(r.fee_returned, 0)) FROM refunds r "
              "JOIN payments p ON p.payment_no = r.payment_no WHERE "
              NGX_HTTP_PAYGW_DAY("r.succeeded_at") " "
              "GROUP BY r.merchant_id, p.channel, r.currency "
              "ORDER BY r.merchant_id, p.channel, r.currency");
    if (s == NULL
        || ngx_http_paygw_store_str(op, s, date) != NGX_OK
        || ngx_http_paygw_store_str(op, s, date) != NGX_OK
        || (merchant_id
            && ngx_http_paygw_store_str(op, s, merchant_id) != NGX_OK))
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Reconciliation (SPEC §7): the local side of a provider's day, for one
 * channel (payments created that day, and refunds of its payments
 * created that day; tz_hours: the provider's time zone), and the
 * reports, stored as the JSON they are answered with.
 */

ngx_int_t
ngx_http_paygw_store_select_recon_local(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *channel, ngx_str_t *date, ngx_int_t tz_hours)
{
    ngx_http_paygw_sql_stmt_t  *s;

    s = ngx_http_paygw_mysql_add(op,
            "SELECT 'P', payment_no, payment_no, NULL, channel_trade_no, "
            "amount, status FROM payments WHERE channel = ? "
            "AND created_at >= STR_TO_DATE(?, '%Y-%m-%d') - INTERVAL ? HOUR "
            "AND created_at < STR_TO_DATE(?, '%Y-%m-%d') + INTERVAL ? HOUR "
            "UNION ALL "
            "SELECT 'R', r.out_refund_no, r.payment_no, r.refund_no, "
            "p.channel_trade_no, r.amount, r.status FROM refunds r "
            "JOIN payments p ON p.payment_no = r.payment_no "
            "WHERE p.channel = ? "
            "AND r.created_at >= STR_TO_DATE(?, '%Y-%m-%d') - INTERVAL ? HOUR "
            "AND r.created_at < STR_TO_DATE(?, '%Y-%m-%d') + INTERVAL ? HOUR");
    if (s == NULL
        || ngx_http_paygw_store_str(op, s, channel) != NGX_OK
        || ngx_http_paygw_store_str(op, s, date) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, tz_hours) != NGX_OK
        || ngx_http_paygw_store_str(op, s, date) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, 24 - tz_hours) != NGX_OK
        || ngx_http_paygw_store_str(op, s, channel) != NGX_OK
        || ngx_http_paygw_store_str(op, s, date) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, tz_hours) != NGX_OK
        || ngx_http_paygw_store_str(op, s, date) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, 24 - tz_hours) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_store_insert_recon(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *id, ngx_str_t *channel, ngx_str_t *date, ngx_uint_t failed,
    ngx_uint_t differences, ngx_str_t *holder, ngx_str_t *report)
{
    ngx_str_t                   status;
    ngx_http_paygw_sql_stmt_t  *s;

    if (failed) {
        ngx_str_set(&status, "failed");

    } else {
        ngx_str_set(&status, "completed");
    }

    s = ngx_http_paygw_mysql_add(op,
            "INSERT INTO reconciliations (recon_no, channel, day, status, "
            "differences, run_holder, report) VALUES (?, ?, "
            "STR_TO_DATE(?, '%Y-%m-%d'), ?, ?, ?, ?)");
    if (s == NULL
        || ngx_http_paygw_store_str(op, s, id) != NGX_OK
        || ngx_http_paygw_store_str(op, s, channel) != NGX_OK
        || ngx_http_paygw_store_str(op, s, date) != NGX_OK
        || ngx_http_paygw_store_str(op, s, &status) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, (int64_t) differences) != NGX_OK
        || ngx_http_paygw_store_str(op, s, holder) != NGX_OK
        || ngx_http_paygw_store_str(op, s, report) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_store_select_recon(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *id)
{
    ngx_http_paygw_sql_stmt_t  *s;

    s = ngx_http_paygw_mysql_add(op,
            "SELECT report FROM reconciliations WHERE recon_no = ?");
    if (s == NULL || ngx_http_paygw_store_str(op, s, id) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The scheduled run's lease: one row, taken when free or expired, kept
 * by its holder, given back at the end.  Assignments run left to
 * right: expires_at sees the holder just set.
 */

ngx_int_t
ngx_http_paygw_store_recon_lease(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *holder, time_t seconds)
{
    ngx_http_paygw_sql_stmt_t  *s;

    s = ngx_http_paygw_mysql_add(op,
            "INSERT INTO reconciliation_lease (name, holder, expires_at) "
            "VALUES ('reconcile', ?, UTC_TIMESTAMP(3) + INTERVAL ? SECOND) "
            "ON DUPLICATE KEY UPDATE "
            "holder = IF(expires_at < UTC_TIMESTAMP(3), VALUES(holder), "
            "holder), "
            "expires_at = IF(holder = VALUES(holder), VALUES(expires_at), "
            "expires_at)");
    if (s == NULL
        || ngx_http_paygw_store_str(op, s, holder) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, (int64_t) seconds) != NGX_OK)
    {
        return NGX_ERROR;
    }

    s = ngx_http_paygw_mysql_add(op,
            "SELECT holder FROM reconciliation_lease WHERE name = 'reconcile'");
    if (s == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_store_recon_release(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *holder)
{
    ngx_http_paygw_sql_stmt_t  *s;

    s = ngx_http_paygw_mysql_add(op,
            "DELETE FROM reconciliation_lease WHERE name = 'reconcile' "
            "AND holder = ?");
    if (s == NULL || ngx_http_paygw_store_str(op, s, holder) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a report with differences: an event for operations (merchant "*") */

ngx_int_t
ngx_http_paygw_store_recon_event(ngx_http_request_t *r,
    ngx_http_paygw_mysql_op_t *op, ngx_str_t *id, json_t *data)
{
    ngx_str_t  all;

    ngx_str_set(&all, "*");

    return ngx_http_paygw_store_event(r, op, &all,
                                      "reconciliation.differences", id, NULL,
                                      data);
}


/*
 * The age of a row by nginx's clock, the clock that wrote its updated_at;
 * MySQL's own difference only if updated_at cannot be read.
 */

static time_t
ngx_http_paygw_store_age(ngx_str_t *updated_at, ngx_str_t *db_age)
{
    time_t  t;

    t = ngx_http_paygw_iso_time(updated_at);

    if (t == NGX_ERROR) {
        return (time_t) ngx_http_paygw_store_int(db_age);
    }

    return ngx_time() - t;
}
