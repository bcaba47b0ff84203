-- paygw schema.  Money is BIGINT minor units; times are UTC (the module
-- sets time_zone = '+00:00' on its connections).  Identifiers compare
-- byte for byte (utf8mb4_bin): "ORD-1" and "ord-1" are different orders.

CREATE TABLE IF NOT EXISTS payments (
    id                  BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    payment_no          VARCHAR(40)  NOT NULL,
    merchant_id         VARCHAR(64)  NOT NULL,
    business_no         VARCHAR(64)  NOT NULL,
    amount              BIGINT       NOT NULL,
    currency            CHAR(3)      NOT NULL,
    channel             VARCHAR(16)  NOT NULL,
    status              ENUM('pending', 'processing', 'succeeded', 'failed',
                             'closed', 'unknown', 'partially_refunded',
                             'refunded') NOT NULL,
    channel_trade_no    VARCHAR(64)  NULL,
    refunded_amount     BIGINT       NOT NULL DEFAULT 0,
    -- reserved by refunds not yet settled: refunded + reserved <= amount
    refund_reserved     BIGINT       NOT NULL DEFAULT 0,
    subject             VARCHAR(256) NULL,
    notify_url          VARCHAR(1024) NULL,
    metadata            TEXT         NULL,
    pay_url             VARCHAR(1024) NULL,
    qr_code             VARCHAR(1024) NULL,
    code_url            VARCHAR(1024) NULL,
    card_brand          VARCHAR(16)  NULL,
    card_last4          CHAR(4)      NULL,
    failure_code        VARCHAR(64)  NULL,
    failure_message     VARCHAR(256) NULL,
    expire_at           DATETIME(3)  NULL,
    version             INT UNSIGNED NOT NULL DEFAULT 0,
    created_at          DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at          DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                                     ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    UNIQUE KEY uk_payment_no (payment_no),
    -- the durable idempotency guard: one payment per merchant order, forever
    UNIQUE KEY uk_merchant_business (merchant_id, business_no),
    KEY idx_status_updated (status, updated_at),
    CONSTRAINT chk_amount CHECK (amount > 0),
    CONSTRAINT chk_refunds CHECK (refunded_amount >= 0 AND refund_reserved >= 0
                                  AND refunded_amount + refund_reserved <= amount)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS refunds (
    id                  BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    refund_no           VARCHAR(64)  NOT NULL,
    -- ours, unique at the acquirer: merchants' refund_no only per merchant
    out_refund_no       VARCHAR(40)  NOT NULL,
    payment_no          VARCHAR(40)  NOT NULL,
    merchant_id         VARCHAR(64)  NOT NULL,
    amount              BIGINT       NOT NULL,
    currency            CHAR(3)      NOT NULL,
    status              ENUM('pending', 'succeeded', 'failed', 'unknown')
                                     NOT NULL,
    reason              VARCHAR(256) NULL,
    channel_refund_no   VARCHAR(64)  NULL,
    failure_code        VARCHAR(64)  NULL,
    version             INT UNSIGNED NOT NULL DEFAULT 0,
    created_at          DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at          DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
                                     ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    UNIQUE KEY uk_merchant_refund (merchant_id, refund_no),
    UNIQUE KEY uk_out_refund_no (out_refund_no),
    KEY idx_payment (payment_no),
    KEY idx_status_updated (status, updated_at),
    CONSTRAINT chk_refund_amount CHECK (amount > 0)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The outbox: every state change writes its event in the same transaction;
-- the webhook sender delivers them at least once.
CREATE TABLE IF NOT EXISTS outbox_events (
    id                  BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    event_id            VARCHAR(40)  NOT NULL,
    merchant_id         VARCHAR(64)  NOT NULL,
    type                VARCHAR(40)  NOT NULL,
    object_no           VARCHAR(64)  NOT NULL,
    notify_url          VARCHAR(1024) NULL,
    payload             MEDIUMBLOB   NOT NULL,
    status              ENUM('pending', 'delivered', 'failed', 'disabled')
                                     NOT NULL DEFAULT 'pending',
    attempts            INT UNSIGNED NOT NULL DEFAULT 0,
    next_attempt_at     DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    last_error          VARCHAR(256) NULL,
    created_at          DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    delivered_at        DATETIME(3)  NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uk_event_id (event_id),
    KEY idx_due (status, next_attempt_at),
    KEY idx_object (object_no)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
