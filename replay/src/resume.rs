//! Resuming a verification from an anchor: a position and the chain hash
//! that something other than the stored row holds for it — the newest
//! recorded verification (stream `verification-chain`) or an outside
//! ledger's confirmed `chain_hash`. The stored hash there must equal the
//! anchor's, and the event at the anchor is recomputed again, so a change
//! at or after the anchor is still found; a change before it is found only
//! by a verification from position 1 (`docs/verification.md`).

use taskledger_events::command::{self, CommandError};
use taskledger_events::ledger::{LedgerName, Ledgers};
use taskledger_events::postgres::verify::{stored_hash, Defect, Verification};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::verification::{self, ChainVerified, Verifications};
use taskledger_events::StoreError;

use crate::Progress;

/// A position whose chain hash is held apart from the log's own row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The position.
    pub position: u64,
    /// The hash held for it, 64 lowercase hex digits.
    pub chain_hash: String,
    /// Who holds it, in words (`the verification recorded at … by …`,
    /// `ledger chain-a`), for reports.
    pub anchored_by: String,
}

impl Anchor {
    /// The anchor a recorded verification leaves: its last position.
    pub fn of_record(record: &ChainVerified) -> Self {
        Self {
            position: record.through_position,
            chain_hash: record.chain_hash.clone(),
            anchored_by: format!(
                "the verification recorded at {} by {}",
                record.verified_at.to_rfc3339(),
                record.verified_by
            ),
        }
    }
}

/// The newest recorded verification, if any, folded from the
/// `verification-chain` stream.
///
/// # Errors
/// [`CommandError::Store`] when the database fails,
/// [`CommandError::Corrupt`] for a record that cannot be read.
pub async fn last_recorded(store: &PgEventStore) -> Result<Option<ChainVerified>, CommandError> {
    let loaded = command::load::<Verifications>(store, &verification::stream_id()).await?;
    Ok(loaded.state.last)
}

/// `ledger`'s newest anchor, if it ever sent a chain hash, folded from its
/// stream (`ledger-{name}`) in the log, not from a read model.
///
/// # Errors
/// As [`last_recorded`].
pub async fn ledger_anchor(
    store: &PgEventStore,
    ledger: &LedgerName,
) -> Result<Option<Anchor>, CommandError> {
    let loaded = command::load::<Ledgers>(store, &ledger.stream_id()).await?;
    Ok(loaded.state.anchor.map(|anchor| Anchor {
        position: anchor.position,
        chain_hash: anchor.chain_hash,
        anchored_by: format!("ledger {}", ledger.as_str()),
    }))
}

/// Verifies from `anchor` to `to` (`None`: the head when it starts): first
/// that the hash stored at the anchor's position is the anchor's
/// ([`Defect::AnchorMismatch`] there otherwise), then positions
/// `anchor.position..=to` as [`crate::verify`] does, recomputing the
/// anchor's own event from the hash stored before it.
///
/// # Errors
/// [`StoreError`] when the database fails.
pub async fn verify_from(
    store: &PgEventStore,
    anchor: &Anchor,
    to: Option<u64>,
    progress: impl FnMut(Progress),
) -> Result<Verification, StoreError> {
    let position = anchor.position.max(1);
    let stored = {
        let client = store.pool().get().await?;
        stored_hash(&client, position).await?
    };
    let defect = match stored {
        None => Some(Defect::MissingPosition {
            expected: position,
            found: None,
        }),
        Some(stored) if hex::encode(stored) != anchor.chain_hash => Some(Defect::AnchorMismatch {
            global_position: position,
            anchored_by: anchor.anchored_by.clone(),
        }),
        Some(_) => None,
    };
    if let Some(defect) = defect {
        return Ok(Verification {
            checked: 0,
            last_position: position - 1,
            defect: Some(defect),
        });
    }
    crate::verify(store, position, to, progress).await
}
