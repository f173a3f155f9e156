-- The graph follower finds a parent's children in the log itself, by their
-- TaskSubmitted's `depends_on` (never in a read model, which may lag): this
-- keeps that an index scan however long the log is.
CREATE INDEX IF NOT EXISTS events_task_depends_on ON events
    USING gin ((data::jsonb -> 'depends_on'))
    WHERE event_type = 'TaskSubmitted';

-- Where the graph follower (one active across processes) has read the log
-- up to: every waiting task submitted or parent ended before it is resolved.
CREATE TABLE IF NOT EXISTS graph_checkpoints (
    follower   text        PRIMARY KEY,
    position   bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
