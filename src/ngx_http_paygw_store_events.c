
/*
 * paygw: the SQL of webhook delivery and of the events API
 * (outbox_events, webhook_disabled: sql/003_webhooks.sql).
 *
 * The claim and the purge run READ COMMITTED (SET TRANSACTION: for the
 * next statement only), so they take no gap locks: a payment's outbox
 * INSERT never waits for a delivery round.  Outcomes are written by
 * primary key only (FORCE INDEX), which locks those rows and no gap.
 *
 * A delivery round claims due rows by writing its own lease on them:
 * an UPDATE ... LIMIT takes the row locks, and a locking read sees the
 * latest committed lease, so a row claimed by one worker (or another
 * nginx) is skipped by every other until the lease ends.  The claim
 * also moves next_attempt_at to the lease's end: claimed rows leave the
 * due range of idx_due (status, next_attempt_at), so the next claim does
 * not walk over rows in flight, and a round that died leaves its rows
 * due again exactly when its lease ends.  The round reads its rows back
 * through the same index (next_attempt_at = the lease's end, which
 * @paygw_lease holds on this connection for the next statement).  The
 * UPDATE has no ORDER BY: MariaDB would sort every due row (a filesort,
 * and a lock on each) for each claim; the range scan of idx_due meets
 * the rows oldest first anyway.
 * Results are written back only under the same lease.
 */


#include "ngx_http_paygw_webhook.h"


static ngx_int_t ngx_http_paygw_store_events_in(
    ngx_http_paygw_mysql_op_t *op, const char *head, size_t len,
    int64_t status, ngx_str_t *owner, ngx_http_paygw_wh_event_t **evs,
    ngx_uint_t n);
static ngx_http_paygw_sql_stmt_t *ngx_http_paygw_store_in_list(
    ngx_http_paygw_mysql_op_t *op, const char *head, size_t len,
    ngx_uint_t n);


#define ngx_paygw_iso(col)                                                   \
    "DATE_FORMAT(" col ", '%Y-%m-%dT%H:%i:%sZ')"


ngx_int_t
ngx_http_paygw_store_claim_events(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *owner, ngx_msec_t lease, ngx_uint_t batch)
{
    ngx_http_paygw_sql_stmt_t  *s;

    /* two rounds' claims (or purges) may deadlock: run again */

    op->restartable = 1;

    s = ngx_http_paygw_mysql_add(op,
            "SET @paygw_lease = NOW(3) + INTERVAL ? MICROSECOND");
    if (s == NULL
        || ngx_http_paygw_sql_int(op, s, (int64_t) lease * 1000) != NGX_OK
        || ngx_http_paygw_mysql_add(op, "SET TRANSACTION ISOLATION LEVEL "
                                        "READ COMMITTED")
           == NULL)
    {
        return NGX_ERROR;
    }

    s = ngx_http_paygw_mysql_add(op,
            "UPDATE outbox_events SET lease_owner = ?, "
            "lease_until = @paygw_lease, next_attempt_at = @paygw_lease "
            "WHERE status = 'pending' AND next_attempt_at <= NOW(3) "
            "AND (lease_until IS NULL OR lease_until < NOW(3)) "
            "LIMIT ?");
    if (s == NULL
        || ngx_http_paygw_sql_str(op, s, owner) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, batch) != NGX_OK)
    {
        return NGX_ERROR;
    }

    s = ngx_http_paygw_mysql_add(op,
            "SELECT o.id, o.event_id, o.merchant_id, o.type, o.notify_url, "
            "o.payload, o.attempts, o.streamed, "
            "(SELECT COUNT(*) FROM webhook_disabled d "
            "WHERE d.merchant_id = o.merchant_id "
            "AND d.url_hash = UNHEX(SHA2(o.notify_url, 256))) "
            "FROM outbox_events o FORCE INDEX (idx_due) "
            "WHERE o.status = 'pending' "
            "AND o.next_attempt_at = @paygw_lease AND o.lease_owner = ? "
            "ORDER BY o.id");
    if (s == NULL || ngx_http_paygw_sql_str(op, s, owner) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The endpoints disabled (410) of the merchants of handed-off events,
 * which no claim read: one short read by primary key.
 */

ngx_int_t
ngx_http_paygw_store_disabled(ngx_http_paygw_mysql_op_t *op,
    ngx_http_paygw_wh_event_t *evs, ngx_uint_t n)
{
    ngx_str_t                 **m;
    ngx_uint_t                  i, j, k;
    ngx_http_paygw_sql_stmt_t  *s;

    static const char  head[] =
        "SELECT merchant_id, notify_url FROM webhook_disabled "
        "WHERE merchant_id IN (?";

    /* each merchant once */

    m = ngx_palloc(op->pool, n * sizeof(ngx_str_t *));
    if (m == NULL) {
        return NGX_ERROR;
    }

    for (i = 0, k = 0; i < n; i++) {
        for (j = 0; j < k; j++) {
            if (m[j]->len == evs[i].merchant_id.len
                && ngx_strncmp(m[j]->data, evs[i].merchant_id.data,
                               m[j]->len) == 0)
            {
                break;
            }
        }

        if (j == k) {
            m[k++] = &evs[i].merchant_id;
        }
    }

    s = ngx_http_paygw_store_in_list(op, head, sizeof(head) - 1, k);
    if (s == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < k; i++) {
        if (ngx_http_paygw_sql_str(op, s, m[i]) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * status: "delivered", "pending" (retry after delay), "failed" (no
 * more retries), "disabled" (410, or its endpoint was), "skipped" (no
 * destination: the stream only).
 */

ngx_int_t
ngx_http_paygw_store_event_result(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *owner, ngx_http_paygw_wh_event_t *ev, const char *status,
    ngx_msec_t delay)
{
    ngx_str_t                   st, err;
    ngx_http_paygw_sql_stmt_t  *s;

    st.data = (u_char *) status;
    st.len = ngx_strlen(status);

    s = ngx_http_paygw_mysql_add(op,
            "UPDATE outbox_events FORCE INDEX (PRIMARY) SET status = ?, "
            "attempts = attempts + ?, "
            "last_status = IF(? > 0, ?, last_status), "
            "last_error = ?, "
            "last_attempt_at = IF(? > 0, NOW(3), last_attempt_at), "
            "delivered_at = IF(? = 'delivered', NOW(3), delivered_at), "
            "next_attempt_at = NOW(3) + INTERVAL ? MICROSECOND, "
            "streamed = GREATEST(streamed, ?), "
            "lease_owner = NULL, lease_until = NULL "
            "WHERE id = ? AND lease_owner = ?");
    if (s == NULL) {
        return NGX_ERROR;
    }

    if (ev->error) {
        err.data = (u_char *) ev->error;
        err.len = ngx_min(ngx_strlen(ev->error), 256);
    }

    if (ngx_http_paygw_sql_str(op, s, &st) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, ev->send) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, ev->status) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, ev->status) != NGX_OK
        || (ev->error ? ngx_http_paygw_sql_str(op, s, &err)
                      : ngx_http_paygw_sql_null(op, s)) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, ev->send) != NGX_OK
        || ngx_http_paygw_sql_str(op, s, &st) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, (int64_t) delay * 1000) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, ev->streamed) != NGX_OK
        || ngx_http_paygw_sql_str(op, s, &ev->id) != NGX_OK
        || ngx_http_paygw_sql_str(op, s, owner) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!(ev->send && ev->status == NGX_HTTP_PAYGW_GONE)) {
        return NGX_OK;
    }

    /* 410: the endpoint is disabled for its merchant until redelivered */

    s = ngx_http_paygw_mysql_add(op,
            "INSERT IGNORE INTO webhook_disabled "
            "(merchant_id, url_hash, notify_url, event_id) "
            "VALUES (?, UNHEX(SHA2(?, 256)), ?, ?)");
    if (s == NULL
        || ngx_http_paygw_sql_str(op, s, &ev->merchant_id) != NGX_OK
        || ngx_http_paygw_sql_str(op, s, &ev->url) != NGX_OK
        || ngx_http_paygw_sql_str(op, s, &ev->url) != NGX_OK
        || ngx_http_paygw_sql_str(op, s, &ev->event_id) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Events of a round with one outcome (and stream flag): one statement
 * for all of them, the common case of a round: delivered with the same
 * HTTP status, or skipped (no destination: the stream only).  The text
 * is ours: only the number of placeholders depends on the round.
 */

#define NGX_HTTP_PAYGW_EV_RELEASE                                            \
    "streamed = GREATEST(streamed, ?), "                                     \
    "lease_owner = NULL, lease_until = NULL "                                \
    "WHERE lease_owner = ? AND id IN (?"


ngx_int_t
ngx_http_paygw_store_events_delivered(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *owner, ngx_http_paygw_wh_event_t **evs, ngx_uint_t n)
{
    static const char  head[] =
        "UPDATE outbox_events FORCE INDEX (PRIMARY) "
        "SET status = 'delivered', attempts = attempts + 1, "
        "last_status = ?, last_error = NULL, "
        "last_attempt_at = NOW(3), delivered_at = NOW(3), "
        "next_attempt_at = NOW(3), "
        NGX_HTTP_PAYGW_EV_RELEASE;

    return ngx_http_paygw_store_events_in(op, head, sizeof(head) - 1,
                                          evs[0]->status, owner, evs, n);
}


ngx_int_t
ngx_http_paygw_store_events_skipped(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *owner, ngx_http_paygw_wh_event_t **evs, ngx_uint_t n)
{
    static const char  head[] =
        "UPDATE outbox_events FORCE INDEX (PRIMARY) "
        "SET status = 'skipped', last_error = NULL, "
        "next_attempt_at = NOW(3), "
        NGX_HTTP_PAYGW_EV_RELEASE;

    return ngx_http_paygw_store_events_in(op, head, sizeof(head) - 1, -1,
                                          owner, evs, n);
}


/*
 * Not started before half the lease: due again at once, with no
 * attempt counted and the last attempt's answer and error kept.
 */

ngx_int_t
ngx_http_paygw_store_events_released(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *owner, ngx_http_paygw_wh_event_t **evs, ngx_uint_t n)
{
    static const char  head[] =
        "UPDATE outbox_events FORCE INDEX (PRIMARY) "
        "SET next_attempt_at = NOW(3), "
        NGX_HTTP_PAYGW_EV_RELEASE;

    return ngx_http_paygw_store_events_in(op, head, sizeof(head) - 1, -1,
                                          owner, evs, n);
}


/* head ends in "id IN (?": the events' ids */

static ngx_int_t
ngx_http_paygw_store_events_in(ngx_http_paygw_mysql_op_t *op,
    const char *head, size_t len, int64_t status, ngx_str_t *owner,
    ngx_http_paygw_wh_event_t **evs, ngx_uint_t n)
{
    ngx_uint_t                  i;
    ngx_http_paygw_sql_stmt_t  *s;

    s = ngx_http_paygw_store_in_list(op, head, len, n);
    if (s == NULL
        || (status >= 0
            && ngx_http_paygw_sql_int(op, s, status) != NGX_OK)
        || ngx_http_paygw_sql_int(op, s, evs[0]->streamed) != NGX_OK
        || ngx_http_paygw_sql_str(op, s, owner) != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (ngx_http_paygw_sql_str(op, s, &evs[i]->id) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * A statement whose text ends in "IN (?": one more ", ?" per item after
 * the first.
 */

static ngx_http_paygw_sql_stmt_t *
ngx_http_paygw_store_in_list(ngx_http_paygw_mysql_op_t *op,
    const char *head, size_t len, ngx_uint_t n)
{
    u_char      *sql, *p;
    ngx_uint_t   i;

    sql = ngx_pnalloc(op->pool, len + 3 * n + 2);
    if (sql == NULL) {
        return NULL;
    }

    p = ngx_cpymem(sql, head, len);

    for (i = 1; i < n; i++) {
        p = ngx_cpymem(p, ", ?", 3);
    }

    *p++ = ')';
    *p = '\0';

    return ngx_http_paygw_mysql_add(op, (const char *) sql);
}


/*
 * Purge a small batch of settled events past the retention, counted from
 * when they were settled: a delivered or skipped event's next_attempt_at
 * is that moment, written with its status (never before its created_at;
 * the status change rewrites the idx_due entry anyway, so this costs
 * nothing more).  So the DELETE is a short range of idx_due (status,
 * next_attempt_at) away from the pending rows claims walk: no long lock,
 * no scan of the recent rows, and no index on created_at for every event
 * to write (sql/007_hot_path_indexes.sql).  Then measure the backlog.
 */

ngx_int_t
ngx_http_paygw_store_housekeeping(ngx_http_paygw_mysql_op_t *op,
    time_t retention)
{
    ngx_http_paygw_sql_stmt_t  *s;

    /* two rounds' claims (or purges) may deadlock: run again */

    op->restartable = 1;

    if (ngx_http_paygw_mysql_add(op, "SET TRANSACTION ISOLATION LEVEL "
                                     "READ COMMITTED")
        == NULL)
    {
        return NGX_ERROR;
    }

    s = ngx_http_paygw_mysql_add(op,
            "DELETE FROM outbox_events "
            "WHERE status IN ('delivered', 'skipped') "
            "AND next_attempt_at < NOW(3) - INTERVAL ? SECOND LIMIT 500");
    if (s == NULL || ngx_http_paygw_sql_int(op, s, retention) != NGX_OK) {
        return NGX_ERROR;
    }

    s = ngx_http_paygw_mysql_add(op,
            "SELECT COUNT(*), COALESCE(TIMESTAMPDIFF(SECOND, "
            "MIN(created_at), NOW(3)), 0) FROM outbox_events "
            "WHERE status = 'pending'");

    return s ? NGX_OK : NGX_ERROR;
}


ngx_int_t
ngx_http_paygw_store_list_events(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *merchant_id, ngx_str_t *after, ngx_uint_t limit)
{
    ngx_http_paygw_sql_stmt_t  *s;

    /* an unknown cursor lists nothing rather than everything again */

    s = ngx_http_paygw_mysql_add(op,
            "SELECT o.event_id, o.payload, o.status, o.attempts, "
            "o.last_status, o.last_error, "
            ngx_paygw_iso("o.next_attempt_at") ", "
            ngx_paygw_iso("o.delivered_at") ", "
            ngx_paygw_iso("o.last_attempt_at") ", "
            "(o.notify_url IS NOT NULL AND EXISTS (SELECT 1 FROM "
            "webhook_disabled d WHERE d.merchant_id = o.merchant_id "
            "AND d.url_hash = UNHEX(SHA2(o.notify_url, 256)))) "
            "FROM outbox_events o "
            "WHERE (? = '*' OR o.merchant_id = ?) "
            "AND o.id > IF(? IS NULL, 0, COALESCE((SELECT a.id FROM "
            "outbox_events a WHERE a.event_id = ? "
            "AND (? = '*' OR a.merchant_id = ?)), "
            "18446744073709551615)) "
            "ORDER BY o.id LIMIT ?");
    if (s == NULL
        || ngx_http_paygw_sql_str(op, s, merchant_id) != NGX_OK
        || ngx_http_paygw_sql_str(op, s, merchant_id) != NGX_OK
        || (after->data ? ngx_http_paygw_sql_str(op, s, after)
                        : ngx_http_paygw_sql_null(op, s)) != NGX_OK
        || (after->data ? ngx_http_paygw_sql_str(op, s, after)
                        : ngx_http_paygw_sql_null(op, s)) != NGX_OK
        || ngx_http_paygw_sql_str(op, s, merchant_id) != NGX_OK
        || ngx_http_paygw_sql_str(op, s, merchant_id) != NGX_OK
        || ngx_http_paygw_sql_int(op, s, limit + 1) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * One more attempt now; the endpoint it names is enabled again.  A row
 * in flight keeps its lease: the round sending it finishes first.
 */

ngx_int_t
ngx_http_paygw_store_redeliver(ngx_http_paygw_mysql_op_t *op,
    ngx_str_t *merchant_id, ngx_str_t *event_id)
{
    ngx_http_paygw_sql_stmt_t  *s;

    s = ngx_http_paygw_mysql_add(op,
            "DELETE d FROM webhook_disabled d JOIN outbox_events o "
            "ON d.merchant_id = o.merchant_id "
            "AND d.url_hash = UNHEX(SHA2(o.notify_url, 256)) "
            "WHERE o.event_id = ? AND (? = '*' OR o.merchant_id = ?)");
    if (s == NULL
        || ngx_http_paygw_sql_str(op, s, event_id) != NGX_OK
        || ngx_http_paygw_sql_str(op, s, merchant_id) != NGX_OK
        || ngx_http_paygw_sql_str(op, s, merchant_id) != NGX_OK)
    {
        return NGX_ERROR;
    }

    s = ngx_http_paygw_mysql_add(op,
            "UPDATE outbox_events SET status = 'pending', "
            "next_attempt_at = NOW(3) "
            "WHERE event_id = ? AND (? = '*' OR merchant_id = ?)");
    if (s == NULL
        || ngx_http_paygw_sql_str(op, s, event_id) != NGX_OK
        || ngx_http_paygw_sql_str(op, s, merchant_id) != NGX_OK
        || ngx_http_paygw_sql_str(op, s, merchant_id) != NGX_OK)
    {
        return NGX_ERROR;
    }

    s = ngx_http_paygw_mysql_add(op,
            "SELECT event_id, status, attempts FROM outbox_events "
            "WHERE event_id = ? AND (? = '*' OR merchant_id = ?)");
    if (s == NULL
        || ngx_http_paygw_sql_str(op, s, event_id) != NGX_OK
        || ngx_http_paygw_sql_str(op, s, merchant_id) != NGX_OK
        || ngx_http_paygw_sql_str(op, s, merchant_id) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}
