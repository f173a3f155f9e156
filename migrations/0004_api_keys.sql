-- API keys, written only by the `api_keys` projector
-- (projections/src/api_keys.rs). Everything here can be rebuilt from the log.
-- Only the SHA-256 of each key's secret is kept; a request's secret is
-- hashed and looked up by `key_hash` (the unique index).

CREATE TABLE api_keys (
    key_id         uuid        PRIMARY KEY,
    name           text        NOT NULL,
    -- Scope names (`tasks:write`, ...), in the order the event lists them.
    scopes         text[]      NOT NULL,
    key_hash       text        NOT NULL UNIQUE,
    created_at     timestamptz NOT NULL,
    created_by     text,
    -- NULL while the key is active.
    revoked_at     timestamptz,
    revoked_reason text,
    revoked_by     text,
    -- The stream version and global position of the last event applied.
    stream_version bigint      NOT NULL,
    last_position  bigint      NOT NULL
);
