//! `taskledger projections …`: operators' view of the read side.

use taskledger_events::postgres::PgEventStore;
use taskledger_projections::{rebuild, runtime};

use crate::config::settings::Settings;
use crate::service::database;

/// The `projections` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ProjectionsCommand {
    /// Each projector's version, checkpoint, lag and state (as recorded in
    /// the database, whichever process runs it), and its last rebuild.
    List,
    /// Builds the projection's tables again from sequence 0 beside the live
    /// ones (blue/green), catches up with the log and swaps them in
    /// atomically; readers keep the old tables until the swap.
    Rebuild {
        /// The projection (see `projections list`).
        name: String,
    },
    /// Stops applying events to the projection (reads go on, growing
    /// stale) until `resume`. Takes effect between two batches: when this
    /// returns, nothing more is applied.
    Pause {
        /// The projection.
        name: String,
    },
    /// Lets a paused projection apply events again.
    Resume {
        /// The projection.
        name: String,
    },
    /// Empties the projection's tables and sets its checkpoint to 0, so the
    /// live projector applies the whole log again in place. Readers see the
    /// tables refill: prefer `rebuild`, which they do not notice.
    Reset {
        /// The projection.
        name: String,
        /// Confirms that readers may see empty or partial tables meanwhile.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs a `projections` subcommand.
///
/// # Errors
/// When the database cannot be read or written, the name is unknown, or a
/// rebuild fails (the live tables are then untouched).
pub async fn run(settings: &Settings, command: ProjectionsCommand) -> anyhow::Result<()> {
    let store = database::open_store(settings)?;
    match command {
        ProjectionsCommand::List => list(&store).await,
        ProjectionsCommand::Rebuild { name } => {
            let projector = taskledger_projections::by_name(&name)?;
            let progress = Progress::new();
            let report = rebuild::rebuild(
                &store,
                projector.as_ref(),
                &rebuild::RebuildOptions::default(),
                &|at| progress.show(at),
            )
            .await;
            progress.finish();
            let report = report.map_err(|error| match error {
                rebuild::RebuildError::Busy => anyhow::anyhow!(
                    "a rebuild of {name} is already running (see `taskledger projections list`)"
                ),
                error => anyhow::anyhow!(
                    "rebuilding {name} failed; the live tables are untouched: {error}"
                ),
            })?;
            println!("{report}");
            Ok(())
        }
        ProjectionsCommand::Pause { name } => pause(&store, &name, true).await,
        ProjectionsCommand::Resume { name } => pause(&store, &name, false).await,
        ProjectionsCommand::Reset { name, yes } => {
            let projector = taskledger_projections::by_name(&name)?;
            anyhow::ensure!(
                yes,
                "reset empties {name}'s tables while readers use them; pass --yes to go ahead, or use `taskledger projections rebuild {name}`, which readers do not notice"
            );
            let mut client = store.pool().get().await?;
            if !runtime::reset(&mut client, projector.as_ref()).await? {
                anyhow::bail!("{name} has never run; there is nothing to reset");
            }
            println!("reset {name}: tables emptied, checkpoint 0; the active projector applies the log again");
            Ok(())
        }
    }
}

async fn pause(store: &PgEventStore, name: &str, paused: bool) -> anyhow::Result<()> {
    taskledger_projections::by_name(name)?;
    let client = store.pool().get().await?;
    if !runtime::set_paused(&client, name, paused).await? {
        anyhow::bail!("{name} has never run; there is nothing to pause or resume");
    }
    if paused {
        println!("paused {name}: no further events are applied until `taskledger projections resume {name}`");
    } else {
        println!("resumed {name}");
    }
    Ok(())
}

async fn list(store: &PgEventStore) -> anyhow::Result<()> {
    let client = store.pool().get().await?;
    let lags = runtime::lags(&client).await?;
    println!(
        "{:<12} {:>7} {:>12} {:>12} {:>10} {:>9}  state",
        "projector", "version", "checkpoint", "head", "lag", "lag_s"
    );
    for lag in &lags {
        let state = match &lag.failure {
            Some((position, failure)) => format!("failed at {position}: {failure}"),
            None if lag.paused => "paused".to_owned(),
            None if lag.active => "running".to_owned(),
            None => "inactive (no process runs it)".to_owned(),
        };
        println!(
            "{:<12} {:>7} {:>12} {:>12} {:>10} {:>9.1}  {state}",
            lag.name, lag.version, lag.position, lag.head, lag.lag_events, lag.lag_seconds
        );
    }
    let rebuilds = rebuild::rebuilds(&client).await?;
    if !rebuilds.is_empty() {
        println!();
        println!(
            "{:<12} {:>7} {:<11} {:>12} {:>12} {:>10}  when",
            "rebuild", "version", "state", "position", "head", "events/s"
        );
    }
    for last in rebuilds {
        let when = match (&last.finished_at, &last.error) {
            (Some(finished), None) => format!("finished {}", finished.format("%Y-%m-%dT%H:%M:%SZ")),
            (Some(finished), Some(error)) => {
                format!("failed {}: {error}", finished.format("%Y-%m-%dT%H:%M:%SZ"))
            }
            (None, _) => format!(
                "started {}{}",
                last.started_at.format("%Y-%m-%dT%H:%M:%SZ"),
                last.eta_seconds()
                    .map(|eta| format!(", ETA {eta:.0}s"))
                    .unwrap_or_default()
            ),
        };
        println!(
            "{:<12} {:>7} {:<11} {:>12} {:>12} {:>10.0}  {when}",
            last.name, last.version, last.state, last.position, last.head, last.events_per_s
        );
    }
    Ok(())
}

/// Progress on standard error: an `indicatif` bar on a terminal (redrawn in
/// place; no colour when `NO_COLOR` is set), one plain line per report
/// otherwise (logs, CI).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            let template = if crate::config::settings::colour(true) {
                "[{bar:30.cyan/blue}] {msg}"
            } else {
                "[{bar:30}] {msg}"
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("#>-"));
            }
            bar
        });
        Self { bar }
    }

    fn show(&self, at: &rebuild::RebuildProgress) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(at.head.max(1));
                bar.set_position(at.position.min(at.head));
                bar.set_message(at.to_string());
            }
            None => eprintln!("{at}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// Options of `taskledger cleanup`.
#[derive(Debug, Clone, clap::Args)]
pub struct CleanupArgs {
    /// Only say what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Keep blobs younger than this (a runner may be storing an attempt's
    /// files that no event references yet).
    #[arg(long, default_value_t = 3600)]
    pub min_age_seconds: u64,
}

/// Removes artifact blobs that no `TaskSucceeded` event references and
/// that are older than `min_age_seconds`. Never touches an event: the log
/// is the record of what is referenced. (Idempotency needs no cleanup:
/// retries are recognised by derived task ids, not by a table of keys.)
///
/// # Errors
/// When the database or the blob directory cannot be read.
pub async fn cleanup(settings: &Settings, args: &CleanupArgs) -> anyhow::Result<()> {
    use std::collections::HashSet;

    let store = database::open_store(settings)?;
    let client = store.pool().get().await?;
    let rows = client
        .query(
            "SELECT DISTINCT artifact->>'sha256'
             FROM events, json_array_elements(data->'artifacts') AS artifact
             WHERE event_type = 'TaskSucceeded'",
            &[],
        )
        .await?;
    let referenced: HashSet<String> = rows.iter().filter_map(|row| row.get(0)).collect();
    let root = settings.data_dir.join("blobs").join("sha256");
    let (mut removed, mut removed_bytes, mut kept) = (0_u64, 0_u64, 0_u64);
    let min_age = std::time::Duration::from_secs(args.min_age_seconds);
    let Ok(prefixes) = std::fs::read_dir(&root) else {
        println!("no blobs under {}", root.display());
        return Ok(());
    };
    for prefix in prefixes {
        let prefix = prefix?;
        if !prefix.file_type()?.is_dir() {
            continue;
        }
        for blob in std::fs::read_dir(prefix.path())? {
            let blob = blob?;
            let name = blob.file_name().to_string_lossy().into_owned();
            let metadata = blob.metadata()?;
            let old_enough = metadata
                .modified()
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            if referenced.contains(&name) || !old_enough || !metadata.is_file() {
                kept += 1;
                continue;
            }
            if args.dry_run {
                println!("would remove {name} ({} bytes)", metadata.len());
            } else {
                std::fs::remove_file(blob.path())?;
            }
            removed += 1;
            removed_bytes += metadata.len();
        }
    }
    println!(
        "{} {removed} unreferenced blobs ({removed_bytes} bytes); kept {kept}",
        if args.dry_run {
            "would remove"
        } else {
            "removed"
        }
    );
    Ok(())
}
