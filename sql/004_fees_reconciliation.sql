-- Fees, settlements and reconciliation (SPEC §7).
--
-- A payment's fee and net amount are computed once, when it succeeds
-- (succeeded_at), from the paygw_fees schedule of that moment, and never
-- recomputed.  A succeeded refund returns its share of the fee
-- (refunds.fee_returned, summed in payments.fee_returned).

ALTER TABLE payments
    ADD COLUMN IF NOT EXISTS fee           BIGINT      NULL,
    ADD COLUMN IF NOT EXISTS net_amount    BIGINT      NULL,
    ADD COLUMN IF NOT EXISTS fee_returned  BIGINT      NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS succeeded_at  DATETIME(3) NULL;

ALTER TABLE refunds
    ADD COLUMN IF NOT EXISTS fee_returned  BIGINT      NULL,
    ADD COLUMN IF NOT EXISTS succeeded_at  DATETIME(3) NULL;

-- settlements: the payments and refunds that succeeded on a day
CREATE INDEX IF NOT EXISTS idx_succeeded ON payments (succeeded_at);
CREATE INDEX IF NOT EXISTS idx_refund_succeeded ON refunds (succeeded_at);

-- Reconciliation reports (GET /v1/reconciliations/{id} answers "report",
-- the JSON of SPEC §7, differences included); a rerun of a day makes a
-- new one.
CREATE TABLE IF NOT EXISTS reconciliations (
    id                  BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    recon_no            VARCHAR(40)  NOT NULL,
    channel             VARCHAR(16)  NOT NULL,
    day                 DATE         NOT NULL,
    status              ENUM('completed', 'failed') NOT NULL,
    differences         BIGINT       NOT NULL DEFAULT 0,
    report              MEDIUMBLOB   NOT NULL,
    created_at          DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    UNIQUE KEY uk_recon_no (recon_no),
    KEY idx_channel_day (channel, day)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The scheduled reconciliation's lease: one run at a time across workers
-- and nginx instances (paygw_reconcile_schedule).
CREATE TABLE IF NOT EXISTS reconciliation_lease (
    name                VARCHAR(32)  NOT NULL,
    holder              VARCHAR(40)  NOT NULL,
    expires_at          DATETIME(3)  NOT NULL,
    PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- which scheduled run made a report (NULL: POST /v1/reconciliations)
ALTER TABLE reconciliations
    ADD COLUMN IF NOT EXISTS run_holder VARCHAR(40) NULL;
