-- Where each projector is in the global order. A projector writes its rows
-- and moves its checkpoint in the same transaction, so after a crash the read
-- model equals a rebuild up to `position`.

CREATE TABLE projector_checkpoints (
    projector       text        PRIMARY KEY,
    version         integer     NOT NULL CHECK (version > 0),
    position        bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Set while the handler fails on the event after `position`; cleared once
    -- it gets past it. The projector never skips that event.
    failed_position bigint,
    failure         text
);
