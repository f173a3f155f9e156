-- Snapshots of long-lived aggregates' folded state (`events::snapshot`): a
-- cache of the log, never a source of truth. A command reads its stream's
-- row (when it has the aggregate's current state schema) and folds only the
-- events after `stream_version`. One row per stream: a write with another
-- state schema replaces the row, one with the same schema only when it is
-- newer. Rows may be deleted at any time (`taskledger snapshots drop`).
CREATE TABLE IF NOT EXISTS aggregate_snapshots (
    stream_id      text        PRIMARY KEY,
    aggregate      text        NOT NULL,
    state_version  integer     NOT NULL,
    stream_version bigint      NOT NULL CHECK (stream_version > 0),
    -- The position of the event at `stream_version`.
    global_position bigint     NOT NULL,
    -- The state as JSON text (bytes: read straight into the state type,
    -- without a JSONB round trip; `convert_from(state, 'UTF8')` shows it).
    state          bytea       NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS aggregate_snapshots_aggregate
    ON aggregate_snapshots (aggregate);
