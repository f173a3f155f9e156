//! The command line: `serve`, `migrate`, `bench`.

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::audit::{self, ReplayCommand};
use crate::bench::api::ApiBenchArgs;
use crate::bench::mo::MoBenchArgs;
use crate::bench::tasks::TasksBenchArgs;
use crate::bench::{self, AppendBenchArgs};
use crate::database;
use crate::keys::{self, KeysCommand};
use crate::operators::{self, CleanupArgs, ProjectionsCommand};
use crate::settings::Settings;
use crate::shutdown;
use crate::startup::Application;

/// taskledger: an event-sourced task backend on PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "taskledger", version, about, long_about = None)]
pub struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub settings: Settings,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: migrate the database, then serve the HTTP API until
    /// SIGTERM or Ctrl-C.
    Serve,
    /// Create the database if missing and apply pending migrations, then exit.
    Migrate,
    /// Create, list and revoke API keys.
    Keys {
        /// What to do with keys.
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The read side: projectors and their state.
    Projections {
        /// What to do.
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Remove artifact blobs that no task references any more (never an
    /// event).
    Cleanup(CleanupArgs),
    /// Auditors' tools over the stored log.
    Replay {
        /// What to do.
        #[command(subcommand)]
        command: ReplayCommand,
    },
    /// Measure performance against the database in DATABASE_URL.
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        which: BenchCommand,
    },
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Appends per second, append latency and live-subscriber lag for several
    /// writer counts and batch sizes.
    Append(AppendBenchArgs),
    /// Requests/s and latency of POST /v1/tasks and GET /v1/tasks/{id} at
    /// several connection counts, and the time from a 201 to the task being
    /// visible. Serves the API itself on a loopback port.
    Api(ApiBenchArgs),
    /// Tasks/s end to end (submit → RabbitMQ → runner → container →
    /// succeeded) at several runner slot counts, and the relay's events/s
    /// with publisher confirms. Needs RabbitMQ and a Docker engine.
    Tasks(TasksBenchArgs),
    /// Latency of the RockBLOCK MO webhook at a fixed rate (signed with the
    /// repository's test key, verified by the service).
    Mo(MoBenchArgs),
    /// Blue/green rebuild of the tasks projection: events per second.
    Rebuild(crate::bench::rebuild::RebuildBenchArgs),
}

/// Runs the parsed command line.
///
/// # Errors
/// Whatever the command fails with, with context.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => {
            let (trigger, signal) = shutdown::channel();
            shutdown::on_signals(trigger);
            let application = Application::build(&cli.settings, signal).await?;
            application.run_until_stopped().await
        }
        Command::Migrate => {
            let applied = database::prepare(&cli.settings).await?;
            if applied.is_empty() {
                println!("the database is up to date; no migration to apply");
            } else {
                println!("applied migrations: {applied:?}");
            }
            Ok(())
        }
        Command::Replay { command } => audit::run(&cli.settings, command).await,
        Command::Projections { command } => operators::run(&cli.settings, command).await,
        Command::Cleanup(args) => operators::cleanup(&cli.settings, &args).await,
        Command::Keys { command } => {
            database::prepare(&cli.settings).await?;
            let store = database::open_store(&cli.settings)?;
            keys::run(&store, command).await
        }
        Command::Bench {
            which: BenchCommand::Append(args),
        } => {
            database::prepare(&cli.settings)
                .await
                .context("preparing the benchmark database")?;
            bench::append(&cli.settings, &args).await
        }
        Command::Bench {
            which: BenchCommand::Api(args),
        } => bench::api::api(&cli.settings, &args).await,
        Command::Bench {
            which: BenchCommand::Mo(args),
        } => bench::mo::mo(&cli.settings, &args).await,
        Command::Bench {
            which: BenchCommand::Rebuild(args),
        } => {
            database::prepare(&cli.settings)
                .await
                .context("preparing the benchmark database")?;
            bench::rebuild::rebuild(&cli.settings, &args).await
        }
        Command::Bench {
            which: BenchCommand::Tasks(args),
        } => {
            database::prepare(&cli.settings)
                .await
                .context("preparing the benchmark database")?;
            bench::tasks::tasks(&cli.settings, &args).await
        }
    }
}
