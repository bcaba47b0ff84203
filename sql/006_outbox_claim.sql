-- Webhook delivery claims through idx_due alone (issue 11, its cost).
-- A delivery round's claim now moves next_attempt_at to the end of its
-- lease and reads its rows back through idx_due (status,
-- next_attempt_at), so the index on lease_owner is written twice per
-- event (claim, then result) and read by nothing: each event's two
-- secondary-index changes for it are saved.
ALTER TABLE outbox_events DROP INDEX IF EXISTS idx_lease;
