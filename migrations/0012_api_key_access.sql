-- Every API key belongs to one tenant or is a platform key, may expire and
-- may have its own rate limit (`ApiKeyCreated`'s `access`, `expires_at`,
-- `rate_limit`). `tenant` is NULL for a platform key (all tenants). Keys
-- created before tenants existed are the `default` tenant's: the column's
-- default fills the rows already here, and the `api_keys` projector (from
-- version 2) rebuilds the table from the log, where such keys read the same.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS tenant text DEFAULT 'default';
ALTER TABLE api_keys ALTER COLUMN tenant DROP DEFAULT;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS expires_at timestamptz;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS rate_limit integer;
