-- The graph follower finds a parent's children in the log itself, by their
-- TaskSubmitted's `depends_on` (never in a read model, which may lag): this
-- keeps that an index scan however long the log is.
--
-- Not `data::jsonb` itself: jsonb has no \u0000, which a `json` value may hold
-- in any string (a parameter), and a failing index expression would refuse
-- the append. Every `\\` escape is first written as `\u005c` (same meaning;
-- pairing left to right is exact, since each backslash of a JSON text starts
-- an escape), so each `\u0000` left is a NUL escape, dropped: `depends_on`
-- (ids only) reads the same.
CREATE OR REPLACE FUNCTION tl_task_depends_on(data json) RETURNS jsonb
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN (replace(replace(data::text, '\\', '\u005c'), '\u0000', ''))::jsonb -> 'depends_on';

CREATE INDEX IF NOT EXISTS events_task_depends_on ON events
    USING gin (tl_task_depends_on(data))
    WHERE event_type = 'TaskSubmitted';

-- Where the graph follower (one active across processes) has read the log
-- up to: every waiting task submitted or parent ended before it is resolved.
CREATE TABLE IF NOT EXISTS graph_checkpoints (
    follower   text        PRIMARY KEY,
    position   bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
