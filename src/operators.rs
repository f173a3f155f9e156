//! `taskledger projections …`: operators' view of the read side.

use crate::database;
use crate::settings::Settings;

/// The `projections` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ProjectionsCommand {
    /// Each projector's version, checkpoint, lag and state (as recorded in
    /// the database, whichever process runs it).
    List,
}

/// Runs a `projections` subcommand.
///
/// # Errors
/// When the database cannot be read.
pub async fn run(settings: &Settings, command: ProjectionsCommand) -> anyhow::Result<()> {
    match command {
        ProjectionsCommand::List => {
            let store = database::open_store(settings)?;
            let client = store.pool().get().await?;
            let lags = taskledger_projections::runtime::lags(&client).await?;
            println!(
                "{:<12} {:>7} {:>12} {:>12} {:>10} {:>9}  state",
                "projector", "version", "checkpoint", "head", "lag", "lag_s"
            );
            for lag in lags {
                let state = match &lag.failure {
                    Some((position, failure)) => format!("failed at {position}: {failure}"),
                    None => "running".to_owned(),
                };
                println!(
                    "{:<12} {:>7} {:>12} {:>12} {:>10} {:>9.1}  {state}",
                    lag.name, lag.version, lag.position, lag.head, lag.lag_events, lag.lag_seconds
                );
            }
            Ok(())
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
