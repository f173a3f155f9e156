-- Which runner holds each running attempt, renewed while it runs
-- (src/runner/mod.rs). A job the broker redelivers while its attempt's lease
-- is fresh is put back (the runner is alive, only its broker connection
-- dropped); once the lease has expired the runner is taken for dead and a
-- retry is recorded. Not part of the log: leases are liveness, not history.

CREATE TABLE attempt_leases (
    task_id    uuid        PRIMARY KEY,
    attempt    integer     NOT NULL,
    worker_id  text        NOT NULL,
    renewed_at timestamptz NOT NULL DEFAULT now()
);
