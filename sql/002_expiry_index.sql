-- The resolver looks for QR payments still pending past their expiry
-- (to find the late payment or close them at the provider): an index on
-- exactly that, instead of reading every pending row.
CREATE INDEX IF NOT EXISTS idx_status_expire ON payments (status, expire_at);
