-- The settler claims what it settles (issue 10, item 4).  Each run of the
-- periodic settler claims the open payments and refunds that are due:
-- a claim moves settle_next_at forward (1 s, 2 s, 4 s ... at most 10 min
-- after each undecided try), so rows no provider can decide yet never
-- starve newer ones, and two runs at once (two workers, two nodes, a run
-- slower than the interval) never take the same row.
ALTER TABLE payments
    ADD COLUMN IF NOT EXISTS settle_attempts INT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS settle_next_at DATETIME(3) NULL,
    ADD COLUMN IF NOT EXISTS settle_claim CHAR(32) NULL;

ALTER TABLE refunds
    ADD COLUMN IF NOT EXISTS settle_attempts INT UNSIGNED NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS settle_next_at DATETIME(3) NULL,
    ADD COLUMN IF NOT EXISTS settle_claim CHAR(32) NULL;

CREATE INDEX IF NOT EXISTS idx_settle_claim ON payments (settle_claim);
CREATE INDEX IF NOT EXISTS idx_refund_settle_claim ON refunds (settle_claim);
CREATE INDEX IF NOT EXISTS idx_refund_status ON refunds (status, updated_at);
