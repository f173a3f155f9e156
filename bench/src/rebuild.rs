//! `taskledger-bench rebuild`: how fast a projection is rebuilt blue/green
//! from the log. Seeds task lifecycles (submitted, started, progress,
//! succeeded: four events each) into the scratch database in
//! `DATABASE_URL`, brings the live `tasks` projection up to date, then
//! rebuilds it beside the live tables and swaps it in, printing progress
//! and the rate.

use std::time::Instant;

use anyhow::Context;
use secrecy::ExposeSecret;
use taskledger::config::settings::Settings;
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::EventStore;
use taskledger_projections::rebuild::{self, RebuildOptions};
use taskledger_projections::runtime::RuntimeOptions;
use taskledger_projections::tasks::TasksProjector;
use taskledger_projections::ProjectorRuntime;

/// Options of `taskledger-bench rebuild`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RebuildBenchArgs {
    /// Task lifecycles (four events each) in the log before the rebuild;
    /// only what is missing is appended.
    #[arg(long, default_value_t = 50_000)]
    pub(crate) tasks: u64,
    /// Events per rebuild transaction.
    #[arg(long, default_value_t = RebuildOptions::default().batch_size)]
    pub(crate) batch: usize,
}

/// Runs the benchmark.
///
/// # Errors
/// When the database fails or the rebuild fails.
pub(crate) async fn rebuild(settings: &Settings, args: &RebuildBenchArgs) -> anyhow::Result<()> {
    let store = PgEventStore::connect(
        settings.database_url.expose_secret(),
        StoreOptions::default(),
    )?;
    let measured = seed_and_rebuild(&store, args.tasks, args.batch).await?;
    println!(
        "rebuild projection=tasks events={} batch={} events_per_s={:.0} seconds={:.2}",
        measured.events, args.batch, measured.events_per_s, measured.seconds
    );
    Ok(())
}

/// What one rebuild measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rebuilt {
    /// Events in the log the rebuild applied.
    pub(crate) events: u64,
    pub(crate) events_per_s: f64,
    pub(crate) seconds: f64,
}

/// Seeds the log up to `tasks` four-event lifecycles (only what is missing),
/// brings the live `tasks` projection up to date, then rebuilds it
/// blue/green with `batch` events per transaction; prints the seeding and
/// catching up as it goes.
///
/// # Errors
/// When the database fails or the rebuild fails.
pub(crate) async fn seed_and_rebuild(
    store: &PgEventStore,
    tasks: u64,
    batch: usize,
) -> anyhow::Result<Rebuilt> {
    crate::seed::log_up_to(store, tasks * 4, 8).await?;
    let head = store.head_position().await?;

    let began = Instant::now();
    let runtime = ProjectorRuntime::new(store.clone(), TasksProjector, RuntimeOptions::default());
    let before = runtime
        .catch_up(std::time::Duration::from_secs(1800))
        .await
        .context("bringing the live tasks projection up to date")?;
    println!(
        "live projection caught up to {before} in {:.1}s",
        began.elapsed().as_secs_f64()
    );

    let options = RebuildOptions {
        batch_size: batch,
        ..RebuildOptions::default()
    };
    let report = rebuild::rebuild(store, &TasksProjector, &options, &|at| eprintln!("{at}"))
        .await
        .context("rebuilding the tasks projection")?;
    Ok(Rebuilt {
        events: head,
        events_per_s: report.events_per_s(),
        seconds: report.elapsed.as_secs_f64(),
    })
}
