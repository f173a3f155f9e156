-- This installation's identity: one row, written by the first `serve`
-- (not by the migration, so databases cloned from a migrated template —
-- the tests' — each get their own). Jobs carry it, and the default
-- RabbitMQ prefix is derived from it, so installations sharing a broker
-- never take each other's jobs.
CREATE TABLE IF NOT EXISTS installation (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    id         uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
