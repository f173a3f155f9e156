//! Reading history for auditors: chain verification over ranges with
//! progress (this module), and — with issue 6 — export and the state of a
//! stream as of a time or version.
//!
//! The verifier of the stored rows lives beside the storage format in
//! `taskledger_events::postgres::verify`; this crate drives it over a range
//! and reports progress for the `taskledger replay verify` command.

use std::time::{Duration, Instant};

use taskledger_events::postgres::verify::{verify_range, Verification};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::{EventStore, StoreError};

/// Rows read per query while verifying.
pub const VERIFY_BATCH: usize = 5_000;

/// How far a verification has got.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// The last position checked.
    pub position: u64,
    /// The first position of the range.
    pub from: u64,
    /// The last position of the range.
    pub to: u64,
    /// Events checked per second so far.
    pub events_per_second: f64,
    /// The estimated time left.
    pub remaining: Duration,
}

impl Progress {
    /// How much of the range is done, from 0 to 1.
    pub fn fraction(&self) -> f64 {
        let total = self.to.saturating_sub(self.from) + 1;
        let done = self.position.saturating_sub(self.from) + 1;
        (done as f64 / total.max(1) as f64).min(1.0)
    }
}

/// Verifies positions `from..=to` (`to = None`: up to the head when it
/// starts): no missing position, every stream's versions consecutive, and
/// the hash chain recomputed from the stored text. Calls `progress` after
/// every batch. Stops at the first defect, which the result names.
///
/// # Errors
/// [`StoreError`] when the database fails.
pub async fn verify(
    store: &PgEventStore,
    from: u64,
    to: Option<u64>,
    mut progress: impl FnMut(Progress),
) -> Result<Verification, StoreError> {
    let from = from.max(1);
    let to = match to {
        Some(to) => to,
        None => store.head_position().await?,
    };
    let client = store.pool().get().await?;
    let began = Instant::now();
    verify_range(&client, from, Some(to), VERIFY_BATCH, |position| {
        let elapsed = began.elapsed().as_secs_f64().max(1e-6);
        let done = position.saturating_sub(from) + 1;
        let rate = done as f64 / elapsed;
        let left = to.saturating_sub(position) as f64 / rate.max(1e-6);
        progress(Progress {
            position,
            from,
            to,
            events_per_second: rate,
            remaining: Duration::from_secs_f64(left.min(1e9)),
        });
    })
    .await
}
