-- What each outside ledger confirmed, written only by the `ledgers`
-- projector (projections/src/ledgers.rs): one row per newly confirmed range
-- of global positions, with the ledger's transaction reference. Status per
-- ledger and per task is read from here.

CREATE TABLE ledger_ranges (
    ledger         text        NOT NULL,
    from_position  bigint      NOT NULL,
    to_position    bigint      NOT NULL CHECK (to_position >= from_position),
    reference      text        NOT NULL,
    confirmed_at   timestamptz NOT NULL,
    event_position bigint      NOT NULL, -- the LedgerEntriesConfirmed event
    PRIMARY KEY (ledger, from_position)
);

CREATE INDEX ledger_ranges_by_end ON ledger_ranges (ledger, to_position);
