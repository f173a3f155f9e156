-- API key rotation (`ApiKeyRotated`): `key_hash` is the current secret's
-- hash; the secret the last rotation replaced is `previous_key_hash`, which
-- works until `previous_valid_until` (exclusive). The HTTP layer checks keys
-- against the log, not this table; it looks a secret of the format without
-- a key id up here by either hash, to learn which key's stream to read.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS previous_key_hash text;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS previous_valid_until timestamptz;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS rotated_at timestamptz;
CREATE INDEX IF NOT EXISTS api_keys_previous_key_hash ON api_keys (previous_key_hash);
