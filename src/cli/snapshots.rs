//! `taskledger snapshots`: drop or rebuild the aggregates' snapshots
//! (`events::snapshot`). They are a cache of the log: dropping them never
//! changes an answer, only makes the next commands on long streams fold
//! from the start (and write new ones as they go).

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use taskledger_events::device::Devices;
use taskledger_events::ledger::Ledgers;
use taskledger_events::postgres::PgEventStore;
use taskledger_events::{snapshot, Aggregate, EventStore};

/// What to do with snapshots.
#[derive(Debug, Subcommand)]
pub enum SnapshotsCommand {
    /// Delete the snapshots (of one aggregate, or all).
    Drop {
        /// Only this aggregate's.
        #[arg(long, value_enum)]
        aggregate: Option<SnapshotAggregate>,
    },
    /// Write a fresh snapshot of every long stream (of one aggregate, or
    /// all), each folded from the log from its start.
    Rebuild {
        /// Only this aggregate's.
        #[arg(long, value_enum)]
        aggregate: Option<SnapshotAggregate>,
    },
}

/// The aggregates that keep snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SnapshotAggregate {
    /// `device-{imei}` streams.
    Device,
    /// `ledger-{name}` streams.
    Ledger,
}

impl SnapshotAggregate {
    fn name(self) -> &'static str {
        match self {
            Self::Device => Devices::NAME,
            Self::Ledger => Ledgers::NAME,
        }
    }
}

/// Runs a `snapshots` subcommand against `store`.
///
/// # Errors
/// A database failure, or an event that cannot be read, with context.
pub async fn run(store: &PgEventStore, command: SnapshotsCommand) -> anyhow::Result<()> {
    let snapshots = store.snapshots().context("this store keeps no snapshots")?;
    match command {
        SnapshotsCommand::Drop { aggregate } => {
            let dropped = snapshots
                .drop_all(aggregate.map(SnapshotAggregate::name))
                .await
                .context("dropping snapshots")?;
            println!("dropped {dropped} snapshots");
        }
        SnapshotsCommand::Rebuild { aggregate } => {
            for which in [SnapshotAggregate::Device, SnapshotAggregate::Ledger] {
                if aggregate.is_some_and(|chosen| chosen != which) {
                    continue;
                }
                let written = match which {
                    SnapshotAggregate::Device => snapshot::rebuild::<Devices>(store).await,
                    SnapshotAggregate::Ledger => snapshot::rebuild::<Ledgers>(store).await,
                }
                .map_err(|error| anyhow::anyhow!("{error}"))
                .with_context(|| format!("rebuilding the {} snapshots", which.name()))?;
                println!("wrote {written} {} snapshots", which.name());
            }
        }
    }
    Ok(())
}
