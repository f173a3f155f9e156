-- Read models of tasks, written only by the `tasks` projector
-- (projections/src/tasks.rs). Everything here can be rebuilt from the log.

CREATE TABLE tasks (
    task_id          uuid        PRIMARY KEY,
    kind             text        NOT NULL,
    status           text        NOT NULL,
    frontend_id      text        NOT NULL,
    client_task_id   text,
    params           jsonb       NOT NULL,
    priority         integer     NOT NULL,
    timeout_seconds  bigint      NOT NULL,
    max_attempts     integer     NOT NULL,
    attempts         integer     NOT NULL DEFAULT 0,
    worker_id        text,
    progress_percent double precision,
    progress_message text,
    error            text,
    exit_code        integer,
    submitted_at     timestamptz NOT NULL,
    submitted_by     text,
    started_at       timestamptz,
    finished_at      timestamptz,
    -- When the last event was recorded, its stream version and position.
    updated_at       timestamptz NOT NULL,
    stream_version   bigint      NOT NULL,
    last_position    bigint      NOT NULL
);

-- Keyset pagination over the listing filters (newest first, ties by id).
CREATE INDEX tasks_by_submission ON tasks (submitted_at DESC, task_id DESC);
CREATE INDEX tasks_by_frontend ON tasks (frontend_id, submitted_at DESC, task_id DESC);
CREATE INDEX tasks_by_status ON tasks (status, submitted_at DESC, task_id DESC);
CREATE INDEX tasks_by_kind ON tasks (kind, submitted_at DESC, task_id DESC);
CREATE INDEX tasks_by_client_task_id ON tasks (frontend_id, client_task_id)
    WHERE client_task_id IS NOT NULL;

CREATE TABLE results (
    task_id     uuid        PRIMARY KEY,
    attempt     integer     NOT NULL,
    result      jsonb       NOT NULL,
    exit_code   integer     NOT NULL,
    -- [{name, size, sha256, media_type}]
    artifacts   jsonb       NOT NULL,
    finished_at timestamptz NOT NULL
);
