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
