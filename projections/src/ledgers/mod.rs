//! The `ledgers` projector (the ledger status read model): one row per
//! newly confirmed range in `ledger_ranges`, with the ledger's reference,
//! and each ledger's newest chain anchor in `ledger_anchors`.
//! Per-ledger and per-task status is computed from these rows; the API
//! reads them through [`query`].

use async_trait::async_trait;
use taskledger_events::ledger::LedgerEvent;
use taskledger_events::RecordedEvent;

use crate::declare::{describe, events_of};
use crate::runtime::{Batch, Projector, ProjectorError};

pub mod query;

/// Projects ledger confirmations into `ledger_ranges`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LedgersProjector;

#[async_trait]
impl Projector for LedgersProjector {
    describe! {
        name: "ledgers",
        /// (`ledger_anchors`, migration 24, needs no rebuild: no event before
        /// it carries an anchor, and no row is what they show.)
        version: 1,
        tables: ["ledger_ranges", "ledger_anchors"],
        schema: concat!(
            include_str!("../../../migrations/0008_ledger_status.sql"),
            include_str!("../../../migrations/0024_ledger_anchors.sql")
        ),
    }

    fn projects(&self, event: &RecordedEvent) -> bool {
        ledger_stream(&event.stream_id).is_some()
    }

    async fn apply(&self, tx: &Batch<'_>, events: &[RecordedEvent]) -> Result<(), ProjectorError> {
        for decoded in events_of(events, ledger_stream) {
            let ((), recorded, LedgerEvent::Confirmed(confirmed)) = decoded?;
            let position = i64::try_from(recorded.global_position).unwrap_or(i64::MAX);
            for range in &confirmed.ranges {
                tx.execute(
                    "INSERT INTO ledger_ranges (ledger, from_position, to_position, reference,
                         confirmed_at, event_position)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        &confirmed.ledger.as_str(),
                        &i64::try_from(range.from).unwrap_or(i64::MAX),
                        &i64::try_from(range.to).unwrap_or(i64::MAX),
                        &confirmed.reference,
                        &confirmed.confirmed_at,
                        &position,
                    ],
                )
                .await?;
            }
            if let Some(anchor) = &confirmed.anchor {
                tx.execute(
                    "INSERT INTO ledger_anchors (ledger, position, chain_hash, reference, event_position)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (ledger) DO UPDATE SET position = EXCLUDED.position,
                         chain_hash = EXCLUDED.chain_hash, reference = EXCLUDED.reference,
                         event_position = EXCLUDED.event_position
                     WHERE ledger_anchors.position < EXCLUDED.position",
                    &[
                        &confirmed.ledger.as_str(),
                        &i64::try_from(anchor.position).unwrap_or(i64::MAX),
                        &anchor.chain_hash,
                        &confirmed.reference,
                        &position,
                    ],
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// The streams the ledgers projector reads.
fn ledger_stream(stream_id: &str) -> Option<()> {
    stream_id.starts_with("ledger-").then_some(())
}
