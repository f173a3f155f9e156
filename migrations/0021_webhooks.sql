-- Webhooks (events/src/webhook, src/workers/webhooks). A webhook itself is
-- its stream `webhook-{id}` in the log, delivery log included; these are the
-- two things that are not events.

-- A webhook's signing secret (`whsec_` + base64), written once by the request
-- that creates the webhook, before its WebhookCreated is appended, and read by
-- the deliverer. Never in the log: auditors read the log, and a secret there
-- would sign for anyone who can read it. A row whose webhook never got its
-- event (the append failed) is never read.
CREATE TABLE webhook_secrets (
    webhook_id uuid        PRIMARY KEY,
    secret     text        NOT NULL CHECK (secret LIKE 'whsec_%'),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The deliverer's place in the global order: every event up to `position`
-- was either wanted by no webhook, or its deliveries' outcomes are recorded
-- in the webhooks' streams. Moved only after that.
CREATE TABLE webhook_checkpoints (
    deliverer  text        PRIMARY KEY,
    position   bigint      NOT NULL DEFAULT 0 CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Listing webhooks reads their WebhookCreated events from the log (there is
-- no read model): this keeps that an index scan however long the log is.
CREATE INDEX events_webhook_created ON events (global_position)
    WHERE event_type = 'WebhookCreated';
