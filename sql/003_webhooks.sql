-- Webhook delivery (SPEC §5): a delivery round claims due outbox rows
-- with a lease (lease_owner, lease_until), so workers and nginx
-- instances never send the same attempt in parallel and a dead worker's
-- rows are claimed again once their lease ran out.  Attempts, the last
-- answer and the next attempt are kept on the row; "skipped" marks an
-- event with no destination (it only goes to the Redis stream).
ALTER TABLE outbox_events
    MODIFY COLUMN status ENUM('pending', 'delivered', 'failed', 'disabled',
                              'skipped') NOT NULL DEFAULT 'pending',
    ADD COLUMN IF NOT EXISTS lease_owner     VARCHAR(40)  NULL,
    ADD COLUMN IF NOT EXISTS lease_until     DATETIME(3)  NULL,
    ADD COLUMN IF NOT EXISTS last_status     SMALLINT UNSIGNED NULL,
    ADD COLUMN IF NOT EXISTS last_attempt_at DATETIME(3)  NULL,
    ADD COLUMN IF NOT EXISTS streamed        TINYINT UNSIGNED NOT NULL DEFAULT 0,
    ADD INDEX IF NOT EXISTS idx_lease (lease_owner),
    ADD INDEX IF NOT EXISTS idx_merchant (merchant_id, id),
    ADD INDEX IF NOT EXISTS idx_created (created_at);

-- Endpoints that answered 410 Gone: nothing more is sent to them for
-- that merchant until an event of theirs is redelivered.
CREATE TABLE IF NOT EXISTS webhook_disabled (
    merchant_id         VARCHAR(64)   NOT NULL,
    url_hash            BINARY(32)    NOT NULL,
    notify_url          VARCHAR(1024) NOT NULL,
    event_id            VARCHAR(40)   NOT NULL,
    disabled_at         DATETIME(3)   NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (merchant_id, url_hash)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
