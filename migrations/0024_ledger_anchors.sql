-- Each outside ledger's newest anchor: the highest position whose chain
-- hash it confirmed holding (a `LedgerEntriesConfirmed` with an `anchor`,
-- checked against the stored hash when it was accepted). Written only by
-- the `ledgers` projector (projections/src/ledgers/mod.rs).

CREATE TABLE ledger_anchors (
    ledger         text   PRIMARY KEY,
    position       bigint NOT NULL,
    chain_hash     text   NOT NULL,
    reference      text   NOT NULL,
    event_position bigint NOT NULL -- the LedgerEntriesConfirmed event
);
