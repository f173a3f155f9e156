-- The append-only event store and its gapless global order.
--
-- Every row is written once, by the appender (events/src/postgres/append.rs),
-- inside a transaction that holds the log's transaction-scoped advisory lock, so
-- `global_position` is assigned in commit order with no holes and `hash` chains
-- each event to the one before it. Rows are never updated or deleted; the
-- trigger below refuses both so that a bug cannot rewrite history (an auditor
-- with superuser rights can still tamper, which `replay verify` detects).

CREATE TABLE events (
    global_position bigint      PRIMARY KEY CHECK (global_position > 0),
    event_id        uuid        NOT NULL UNIQUE,
    stream_id       text        NOT NULL CHECK (octet_length(stream_id) BETWEEN 1 AND 200),
    version         bigint      NOT NULL CHECK (version > 0),
    event_type      text        NOT NULL CHECK (event_type <> ''),
    schema_version  integer     NOT NULL CHECK (schema_version > 0),
    -- `json`, not `jsonb`: it keeps the canonical text the hash was computed
    -- over. The type already validates the text; a valid JSON text that starts
    -- with `{` is an object (canonical JSON has no leading whitespace). This
    -- is much cheaper than `json_typeof`, which parses the text a second time.
    data            json        NOT NULL CHECK (starts_with(data::text, '{')),
    metadata        json        NOT NULL CHECK (starts_with(metadata::text, '{')),
    recorded_at     timestamptz NOT NULL,
    hash            bytea       NOT NULL CHECK (octet_length(hash) = 32),
    -- Per-stream optimistic concurrency: a second writer of the same version
    -- fails with SQLSTATE 23505 on this constraint.
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();
