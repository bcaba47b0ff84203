-- Fewer secondary indexes on the create path (issue 15: MariaDB's CPU is
-- the wall of creates/s).  Each index on payments costs every create an
-- entry at the INSERT, and one whose key holds status, updated_at or
-- succeeded_at a second change at the settle UPDATE (and a purge later);
-- each on outbox_events an entry per event.  Measured with bench/
-- (BENCH_SQL, the same run, 3 pairs), the first three: creates/s
-- +9.5 %, MariaDB CPU per create -12 %.
--
--  - payments.idx_status_updated (status, updated_at): the settler's
--    reads select open rows by status and sort them by an expression
--    (COALESCE(settle_next_at, updated_at)), so the index's second column
--    orders nothing.
--  - payments.idx_settle_claim: a claim is read back with the claim's own
--    status condition (src/ngx_http_paygw_store.c), a range of the open
--    rows; the index held an entry for every payment (NULL but while a
--    settler run holds it).
--  - outbox_events.idx_object: read by no statement.
--  - outbox_events.idx_created: the retention purge deletes settled
--    events by when they were settled, a range of idx_due (status,
--    next_attempt_at) (src/ngx_http_paygw_store_events.c).
--  - payments.idx_status_expire (status, expire_at) and idx_succeeded
--    (succeeded_at) become one idx_status (status, succeeded_at,
--    expire_at): a settle changes one index instead of two.  The settler
--    reads the open rows by status (a pending payment has no
--    succeeded_at, so its entries are in expire_at order); settlements
--    read the three states a payment that succeeded can be in, each a
--    range of succeeded_at.
ALTER TABLE payments
    ADD INDEX IF NOT EXISTS idx_status (status, succeeded_at, expire_at),
    DROP INDEX IF EXISTS idx_status_updated,
    DROP INDEX IF EXISTS idx_settle_claim,
    DROP INDEX IF EXISTS idx_status_expire,
    DROP INDEX IF EXISTS idx_succeeded;
ALTER TABLE outbox_events
    DROP INDEX IF EXISTS idx_object,
    DROP INDEX IF EXISTS idx_created;
