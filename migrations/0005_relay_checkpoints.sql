-- Where the relay (src/relay.rs) is in the global order: every event up to
-- `position` was confirmed by the broker. Moved only after the confirms.

CREATE TABLE relay_checkpoints (
    relay      text        PRIMARY KEY,
    position   bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
