-- Operating the read side (projections/src/rebuild.rs and runtime.rs).

-- `taskledger projections pause NAME` sets this; the active projector checks
-- it at the start of every batch, under the checkpoint row's lock, so once
-- the flag is committed no further batch is applied until `resume`.
ALTER TABLE projector_checkpoints
    ADD COLUMN paused boolean NOT NULL DEFAULT false;

-- The last blue/green rebuild of each projection and its progress, written
-- by whichever process runs it (the command line or the API), so every
-- process can show it.
CREATE TABLE projection_rebuilds (
    projector     text        PRIMARY KEY,
    version       integer     NOT NULL,
    state         text        NOT NULL CHECK (state IN ('building', 'swapping', 'done', 'failed')),
    position      bigint      NOT NULL DEFAULT 0,
    head          bigint      NOT NULL DEFAULT 0,
    events_per_s  double precision NOT NULL DEFAULT 0,
    started_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    error         text
);
