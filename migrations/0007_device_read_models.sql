-- Read models of satellite devices, written only by the `devices` projector
-- (projections/src/devices.rs). Everything here can be rebuilt from the log.

CREATE TABLE devices (
    imei             text        PRIMARY KEY,
    first_seen_at    timestamptz NOT NULL,
    last_seen_at     timestamptz,          -- last MO message received
    last_latitude    double precision,
    last_longitude   double precision,
    last_cep         double precision,
    received_count   bigint      NOT NULL DEFAULT 0,
    queued_count     bigint      NOT NULL DEFAULT 0,
    sent_count       bigint      NOT NULL DEFAULT 0,
    failed_count     bigint      NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL,
    stream_version   bigint      NOT NULL,
    last_position    bigint      NOT NULL
);

CREATE TABLE device_messages (
    message_id       uuid        PRIMARY KEY,
    imei             text        NOT NULL,
    direction        text        NOT NULL CHECK (direction IN ('mt', 'mo')),
    -- mt: queued | sending | sent | failed; mo: received
    status           text        NOT NULL,
    payload          bytea       NOT NULL,
    flush            boolean     NOT NULL DEFAULT false,
    attempts         integer     NOT NULL DEFAULT 0,
    mt_id            bigint,
    error_code       integer,
    error_text       text,
    next_attempt_at  timestamptz,
    momsn            bigint,
    transmit_time    text,
    latitude         double precision,
    longitude        double precision,
    cep              double precision,
    created_at       timestamptz NOT NULL, -- queued (mt) or received (mo)
    updated_at       timestamptz NOT NULL,
    stream_version   bigint      NOT NULL,
    last_position    bigint      NOT NULL
);

CREATE INDEX device_messages_by_device ON device_messages (imei, created_at DESC, message_id DESC);
-- The gateway's work list.
CREATE INDEX device_messages_due ON device_messages (next_attempt_at)
    WHERE direction = 'mt' AND status IN ('queued', 'sending');
