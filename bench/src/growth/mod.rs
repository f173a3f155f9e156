//! `taskledger-bench growth`: what a long history costs. Each section runs
//! against a scratch database of its own (the `DATABASE_URL` database's
//! name with the section's suffix, created and migrated if missing; rerun
//! to reuse what was seeded) and prints, per size, its figures and the
//! ratio against the smallest size of the same run:
//!
//! - `commands`: device and ledger command latency at each of
//!   `--command-lengths` events already in the stream, snapshots on and off
//!   ([`commands`]);
//! - `lists`: `GET /v1/tasks` — the first page, and filtered by status,
//!   kind, frontend and tenant — p50/p99 with the read model holding each
//!   of `--list-sizes` tasks;
//! - `rebuild`: blue/green rebuild of the `tasks` projection, events/s, at
//!   each of `--rebuild-events` events in the log;
//! - `verify` and `gateway`: what `taskledger-bench verify` and
//!   `taskledger-bench gateway` print, with their flags (full and
//!   incremental verification at `--events`; messages/s at `--in-flight`).

mod commands;
mod lists;

use anyhow::Context;
use secrecy::ExposeSecret;
use taskledger::config::settings::Settings;
use taskledger::service::database;
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_projections::rebuild::RebuildOptions;

/// Which parts of `growth` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Section {
    /// Device and ledger command latency at each of `--command-lengths`.
    Commands,
    /// `GET /v1/tasks` list and filter latency at each of `--list-sizes`.
    Lists,
    /// Rebuild events/s at each of `--rebuild-events`.
    Rebuild,
    /// Full and incremental chain verification (`verify`'s own flags).
    Verify,
    /// Device gateway messages/s at each `--in-flight` (`gateway`'s flags).
    Gateway,
}

impl Section {
    fn suffix(self) -> &'static str {
        match self {
            Self::Commands => "growth_commands",
            Self::Lists => "growth_lists",
            Self::Rebuild => "growth_rebuild",
            Self::Verify => "growth_verify",
            Self::Gateway => "growth_gateway",
        }
    }
}

/// Options of `taskledger-bench growth`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct GrowthArgs {
    /// The sections to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "commands,lists,rebuild,verify,gateway"
    )]
    pub(crate) sections: Vec<Section>,
    /// Events already in the device and ledger streams at each command
    /// measurement, ascending; ratios are to the first.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    pub(crate) command_lengths: Vec<u64>,
    /// Commands timed per stream with snapshots on.
    #[arg(long, default_value_t = 300)]
    pub(crate) command_samples: usize,
    /// Commands timed per stream with snapshots off, at most; fewer on long
    /// streams (`samples × first length / length`, at least 10), whose
    /// commands fold the whole stream.
    #[arg(long, default_value_t = 300)]
    pub(crate) command_samples_off: usize,
    /// Tasks in the read model at each list measurement, ascending.
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    pub(crate) list_sizes: Vec<u64>,
    /// Requests per query and size (from `--list-connections` clients).
    #[arg(long, default_value_t = 400)]
    pub(crate) list_requests: usize,
    /// Concurrent clients of the list measurement.
    #[arg(long, default_value_t = 4)]
    pub(crate) list_connections: usize,
    /// Events in the log at each rebuild measurement, ascending (rounded
    /// down to four-event task lifecycles).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    pub(crate) rebuild_events: Vec<u64>,
    /// The `verify` section: `taskledger-bench verify`'s options.
    #[command(flatten)]
    pub(crate) verify: crate::verify::VerifyBenchArgs,
    /// The `gateway` section: `taskledger-bench gateway`'s options.
    #[command(flatten)]
    pub(crate) gateway: crate::gateway::GatewayBenchArgs,
}

/// Runs the chosen sections.
///
/// # Errors
/// When a size is out of order, a database cannot be prepared, or a
/// section fails.
pub(crate) async fn growth(settings: &Settings, args: &GrowthArgs) -> anyhow::Result<()> {
    ascending("--command-lengths", &args.command_lengths)?;
    ascending("--list-sizes", &args.list_sizes)?;
    ascending("--rebuild-events", &args.rebuild_events)?;
    for &section in &args.sections {
        let settings = section_database(settings, section.suffix()).await?;
        match section {
            Section::Commands => commands::commands(&settings, args).await?,
            Section::Lists => lists::lists(&settings, args).await?,
            Section::Rebuild => rebuild(&settings, &args.rebuild_events).await?,
            Section::Verify => crate::verify::verify(&settings, &args.verify).await?,
            Section::Gateway => crate::gateway::gateway(&settings, &args.gateway).await?,
        }
    }
    Ok(())
}

fn ascending(flag: &str, sizes: &[u64]) -> anyhow::Result<()> {
    if sizes.is_empty() || sizes.windows(2).any(|pair| pair[0] >= pair[1]) {
        anyhow::bail!("{flag} must be one or more sizes in ascending order, got {sizes:?}");
    }
    Ok(())
}

/// `settings` pointed at the database named after its own plus `_{suffix}`,
/// created and migrated if missing.
async fn section_database(settings: &Settings, suffix: &str) -> anyhow::Result<Settings> {
    let url = settings.database_url.expose_secret();
    let config: tokio_postgres::Config = url
        .parse()
        .with_context(|| "DATABASE_URL is not a PostgreSQL URL".to_owned())?;
    let name = config.get_dbname().unwrap_or("postgres");
    let wanted = format!("{name}_{suffix}");
    let (head, query) = url
        .split_once('?')
        .map_or((url, None), |(h, q)| (h, Some(q)));
    let base = head
        .rsplit_once('/')
        .filter(|(scheme_and_host, _)| {
            scheme_and_host.contains("://") && !scheme_and_host.ends_with('/')
        })
        .map_or(head, |(base, _)| base);
    let mut derived = format!("{base}/{wanted}");
    if let Some(query) = query {
        derived = format!("{derived}?{query}");
    }
    let mut settings = settings.clone();
    settings.database_url = derived.into();
    settings.create_database = true;
    database::prepare(&settings)
        .await
        .with_context(|| format!("preparing the {suffix} database {wanted}"))?;
    Ok(settings)
}

/// The rebuild section: seed up to each size, rebuild, print.
async fn rebuild(settings: &Settings, sizes: &[u64]) -> anyhow::Result<()> {
    let store = PgEventStore::connect(
        settings.database_url.expose_secret(),
        StoreOptions::default(),
    )?;
    let mut smallest = None;
    for &events in sizes {
        let measured = crate::rebuild::seed_and_rebuild(
            &store,
            events / 4,
            RebuildOptions::default().batch_size,
        )
        .await?;
        let base: f64 = *smallest.get_or_insert(measured.events_per_s);
        println!(
            "growth rebuild events={} events_per_s={:.0} seconds={:.2} ratio_vs_smallest={:.2}",
            measured.events,
            measured.events_per_s,
            measured.seconds,
            measured.events_per_s / base
        );
    }
    Ok(())
}
