//! `taskledger replay …`: auditors' commands over the stored log.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::database;
use crate::settings::Settings;

/// The `replay` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ReplayCommand {
    /// Check the log: no missing position, every stream's versions
    /// consecutive, and the SHA-256 chain recomputed from the stored text.
    /// Prints progress on standard error and the verdict on standard output;
    /// exits non-zero naming the first bad sequence.
    Verify {
        /// The first sequence to check (default 1).
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// The last sequence to check (default: the head when it starts).
        #[arg(long)]
        to: Option<u64>,
    },
}

/// Runs a `replay` subcommand.
///
/// # Errors
/// A defect in the log (naming the first bad sequence), or a database
/// failure.
pub async fn run(settings: &Settings, command: ReplayCommand) -> anyhow::Result<()> {
    match command {
        ReplayCommand::Verify { from, to } => verify(settings, from, to).await,
    }
}

async fn verify(settings: &Settings, from: u64, to: Option<u64>) -> anyhow::Result<()> {
    let store = database::open_store(settings)?;
    let began = Instant::now();
    let mut last_report = Instant::now() - Duration::from_secs(10);
    let verification = taskledger_replay::verify(&store, from, to, |progress| {
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            eprint!(
                "\rverifying: {}/{} ({:.1}%), {:.0} events/s, about {} s left   ",
                progress.position,
                progress.to,
                progress.fraction() * 100.0,
                progress.events_per_second,
                progress.remaining.as_secs()
            );
            let _ = std::io::stderr().flush();
        }
    })
    .await
    .context("reading the log")?;
    eprintln!();
    let seconds = began.elapsed().as_secs_f64();
    match verification.defect {
        None => {
            println!(
                "OK: {} events verified, sequences {}..={} (positions, stream versions, hash chain) in {seconds:.1} s",
                verification.checked,
                from.max(1),
                verification.last_position
            );
            Ok(())
        }
        Some(defect) => {
            println!("FAILED at sequence {}: {defect}", defect.global_position());
            anyhow::bail!(
                "the log does not verify; the first bad sequence is {}",
                defect.global_position()
            )
        }
    }
}
