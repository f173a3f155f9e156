//! `taskledger-bench verify`: how fast the chain is verified, from
//! sequence 1 at several log sizes and resumed from an anchor near the
//! head. Seeds task lifecycles (four events each, `seed.rs`) into
//! the scratch database in `DATABASE_URL` up to each size, verifies
//! `1..=size`, and at the largest size verifies only the newest `--tail`
//! events from an anchor there (what `replay verify --from-last-verified`
//! does), printing the rates and the incremental run's time against the
//! full one's.

use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::ExposeSecret;
use taskledger::config::settings::Settings;
use taskledger_events::postgres::verify::stored_hash;
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_replay::resume::{self, Anchor};

use crate::measure::{millis, percentile};

/// Options of `taskledger-bench verify`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct VerifyBenchArgs {
    /// Log sizes (events) to verify from sequence 1, comma-separated,
    /// ascending; only what is missing is appended.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    pub(crate) events: Vec<u64>,
    /// Events the incremental run verifies: the newest of the largest size.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) tail: u64,
    /// Incremental runs (their median and slowest are printed).
    #[arg(long, default_value_t = 5)]
    pub(crate) runs: usize,
}

/// Runs the benchmark.
///
/// # Errors
/// When the database fails, or the seeded log does not verify.
pub(crate) async fn verify(settings: &Settings, args: &VerifyBenchArgs) -> anyhow::Result<()> {
    let store = PgEventStore::connect(
        settings.database_url.expose_secret(),
        StoreOptions::default(),
    )?;
    let mut full_at_largest = None;
    for &size in &args.events {
        crate::seed::log_up_to(&store, size, 32).await?;
        let began = Instant::now();
        let verification = taskledger_replay::verify(&store, 1, Some(size), |_| {})
            .await
            .context("verifying from sequence 1")?;
        let elapsed = began.elapsed();
        anyhow::ensure!(
            verification.defect.is_none() && verification.checked == size,
            "the seeded log does not verify: {verification:?}"
        );
        println!(
            "verify full events={size} seconds={:.2} events_per_s={:.0}",
            elapsed.as_secs_f64(),
            size as f64 / elapsed.as_secs_f64()
        );
        full_at_largest = Some((size, elapsed));
    }
    let Some((size, full)) = full_at_largest else {
        anyhow::bail!("--events names no size");
    };
    let tail = args.tail.clamp(1, size);
    let position = size - tail + 1;
    let chain_hash = {
        let client = store.pool().get().await?;
        hex::encode(
            stored_hash(&client, position)
                .await?
                .context("the anchor's position")?,
        )
    };
    let anchor = Anchor {
        position,
        chain_hash,
        anchored_by: "the benchmark".into(),
    };
    let mut times: Vec<Duration> = Vec::with_capacity(args.runs);
    for _ in 0..args.runs.max(1) {
        let began = Instant::now();
        let verification = resume::verify_from(&store, &anchor, Some(size), |_| {})
            .await
            .context("verifying from the anchor")?;
        times.push(began.elapsed());
        anyhow::ensure!(
            verification.defect.is_none() && verification.checked == tail,
            "the incremental run did not verify {tail} events: {verification:?}"
        );
    }
    times.sort_unstable();
    let median = percentile(&times, 0.5);
    println!(
        "verify incremental events={tail} of={size} runs={} median_ms={:.1} max_ms={:.1} events_per_s={:.0} full_over_incremental={:.0}",
        times.len(),
        millis(median),
        millis(*times.last().unwrap_or(&median)),
        tail as f64 / median.as_secs_f64(),
        full.as_secs_f64() / median.as_secs_f64().max(1e-9)
    );
    Ok(())
}
