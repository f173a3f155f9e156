//! The command line: `serve`, `migrate`, `health`, `keys`, `devices`, `projections`,
//! `cleanup`, `replay`, `snapshots`. (The benchmarks are `taskledger-bench`, in `bench/`.)

pub mod devices;
pub mod keys;
pub mod projections;
pub mod replay;
pub mod snapshots;

use anyhow::Context;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;

use crate::config::settings::{CreateDatabaseArgs, DatabaseArgs, FilesArgs, ServeArgs, Settings};
use crate::service::database;
use crate::service::shutdown;
use crate::service::startup::Application;
use devices::DevicesCommand;
use keys::KeysCommand;
use projections::{CleanupArgs, ProjectionsCommand};
use replay::ReplayCommand;
use snapshots::SnapshotsCommand;

/// taskledger: an event-sourced task backend on PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "taskledger", version, about, long_about = None)]
pub struct Cli {
    /// Log filter, in `tracing` syntax (e.g. `info,taskledger_events=debug`).
    #[arg(long, env = "TASKLEDGER_LOG", default_value = "info", global = true)]
    pub log_filter: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands. Each takes only the options it reads.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: migrate the database (creating it if missing), then
    /// serve until SIGTERM or Ctrl-C.
    Serve(Box<ServeArgs>),
    /// Create the database if missing and apply pending migrations, then exit.
    Migrate(DatabaseArgs),
    /// Ask a running service whether it is ready (`GET /readyz`): exit 0
    /// when it answers 200, 1 otherwise. For container healthchecks.
    Health(HealthArgs),
    /// Create, list and revoke API keys.
    Keys {
        /// The database.
        #[command(flatten)]
        database: DatabaseArgs,
        /// Whether a missing database may be created.
        #[command(flatten)]
        create: CreateDatabaseArgs,
        /// What to do with keys.
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Devices: assign one to a tenant.
    Devices {
        /// The database.
        #[command(flatten)]
        database: DatabaseArgs,
        /// What to do with devices.
        #[command(subcommand)]
        command: DevicesCommand,
    },
    /// The read side: projectors and their state.
    Projections {
        /// The database.
        #[command(flatten)]
        database: DatabaseArgs,
        /// What to do.
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Remove artifact blobs that no task references any more (never an
    /// event).
    Cleanup {
        /// The database.
        #[command(flatten)]
        database: DatabaseArgs,
        /// Where the blobs are.
        #[command(flatten)]
        files: FilesArgs,
        /// What to remove.
        #[command(flatten)]
        args: CleanupArgs,
    },
    /// Auditors' tools over the stored log.
    Replay {
        /// The database.
        #[command(flatten)]
        database: DatabaseArgs,
        /// What to do.
        #[command(subcommand)]
        command: ReplayCommand,
    },
    /// The aggregates' snapshots (a cache of the log): drop or rebuild.
    Snapshots {
        /// The database.
        #[command(flatten)]
        database: DatabaseArgs,
        /// What to do.
        #[command(subcommand)]
        command: SnapshotsCommand,
    },
}

/// `taskledger health`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// The readiness URL to ask. Default: `/readyz` on TASKLEDGER_LISTEN
    /// (an unspecified address such as 0.0.0.0 is asked on loopback).
    #[arg(long)]
    pub url: Option<String>,
    /// Where the service listens, when `--url` is not given.
    #[arg(long, env = "TASKLEDGER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5)]
    pub timeout_seconds: u64,
}

/// Runs the parsed command line.
///
/// # Errors
/// Whatever the command fails with, with context.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let log = cli.log_filter.as_str();
    match cli.command {
        Command::Serve(args) => {
            let settings = args.settings(log);
            let (trigger, signal) = shutdown::channel();
            shutdown::on_signals(trigger);
            let application = Application::build(&settings, signal).await?;
            application.run_until_stopped().await
        }
        Command::Migrate(database) => {
            let mut settings = Settings::from_database(&database, log);
            settings.create_database = true;
            let applied = database::prepare(&settings).await?;
            let name = database::describe_url(settings.database_url.expose_secret());
            if applied.is_empty() {
                println!("the database is up to date; no migration to apply ({name})");
            } else {
                println!("applied migrations: {applied:?} ({name})");
            }
            Ok(())
        }
        Command::Health(args) => health(&args).await,
        Command::Replay { database, command } => {
            replay::run(&existing(&database, log).await?, command).await
        }
        Command::Projections { database, command } => {
            projections::run(&existing(&database, log).await?, command).await
        }
        Command::Cleanup {
            database,
            files,
            args,
        } => {
            let mut settings = existing(&database, log).await?;
            settings.data_dir = files.data_dir;
            projections::cleanup(&settings, &args).await
        }
        Command::Keys {
            database,
            create,
            command,
        } => {
            let mut settings = Settings::from_database(&database, log);
            settings.create_database = create.create_database;
            database::prepare(&settings).await?;
            eprintln!(
                "taskledger: using database {}",
                database::describe_url(settings.database_url.expose_secret())
            );
            let store = database::open_store(&settings)?;
            keys::run(&store, command).await
        }
        Command::Devices { database, command } => {
            let settings = existing(&database, log).await?;
            let store = database::open_store(&settings)?;
            devices::run(&store, command).await
        }
        Command::Snapshots { database, command } => {
            let settings = existing(&database, log).await?;
            let store = database::open_store(&settings)?;
            snapshots::run(&store, command).await
        }
    }
}

/// The settings of a command that reads or changes an existing
/// installation, once its database is known to exist.
async fn existing(database: &DatabaseArgs, log_filter: &str) -> anyhow::Result<Settings> {
    let settings = Settings::from_database(database, log_filter);
    database::require_existing(&settings).await?;
    Ok(settings)
}

/// `taskledger health`: one GET of the readiness probe.
async fn health(args: &HealthArgs) -> anyhow::Result<()> {
    let url = match &args.url {
        Some(url) => url.clone(),
        None => {
            let mut address = args.listen;
            if address.ip().is_unspecified() {
                address.set_ip(match address {
                    std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            format!("http://{address}/readyz")
        }
    };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(args.timeout_seconds.max(1)))
        .build()?;
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("{url} did not answer"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        println!("ready: {url} answered {status}");
        Ok(())
    } else {
        let detail: String = body.chars().take(300).collect();
        anyhow::bail!("not ready: {url} answered {status}: {detail}")
    }
}
