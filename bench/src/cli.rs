//! The command line: `append`, `api`, `tasks`, `mo`, `rebuild`, `growth`,
//! `verify`, `gateway`, `webhooks`, each against
//! the database in `DATABASE_URL` (created if missing).

use anyhow::Context;
use clap::{Parser, Subcommand};
use taskledger::config::settings::{BrokerArgs, DatabaseArgs, Settings};
use taskledger::service::database;

use crate::api::ApiBenchArgs;
use crate::append::AppendBenchArgs;
use crate::gateway::GatewayBenchArgs;
use crate::growth::GrowthArgs;
use crate::mo::MoBenchArgs;
use crate::rebuild::RebuildBenchArgs;
use crate::tasks::TasksBenchArgs;
use crate::verify::VerifyBenchArgs;
use crate::webhooks::WebhooksBenchArgs;

/// Measure taskledger's performance against the database in DATABASE_URL
/// (use a scratch database: the benchmarks write to it).
#[derive(Debug, Parser)]
#[command(name = "taskledger-bench", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Log filter, in `tracing` syntax (e.g. `info,taskledger_events=debug`).
    #[arg(long, env = "TASKLEDGER_LOG", default_value = "info", global = true)]
    pub(crate) log_filter: String,
    /// The database (created if missing: benchmarks use scratch ones).
    #[command(flatten)]
    database: DatabaseArgs,
    /// Which benchmark.
    #[command(subcommand)]
    which: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Appends per second, append latency and live-subscriber lag for several
    /// writer counts and batch sizes; with `--baseline`, interleaved with
    /// plain INSERTs of the same rows and printed as ratios.
    Append(AppendBenchArgs),
    /// Requests/s and latency of POST /v1/tasks and GET /v1/tasks/{id} at
    /// several connection counts, and the time from a 201 to the task being
    /// visible. Serves the API itself on a loopback port.
    Api(ApiBenchArgs),
    /// Tasks/s end to end (submit → RabbitMQ → runner → container or Slurm
    /// job → succeeded) at several runner slot counts, alternating with the
    /// bare engine (`docker run --rm`, the engine API, or `sbatch --wait`)
    /// at the same parallelism, the overhead per task and the ratio; and the
    /// relay's events/s with publisher confirms. Needs RabbitMQ and a Docker
    /// engine (or Slurm, with `--executor slurm`).
    Tasks {
        /// The broker (default: the local one).
        #[command(flatten)]
        broker: BrokerArgs,
        /// The benchmark's shape.
        #[command(flatten)]
        args: TasksBenchArgs,
    },
    /// Latency of the RockBLOCK MO webhook at a fixed rate (signed with the
    /// repository's test key, verified by the service).
    Mo(MoBenchArgs),
    /// Blue/green rebuild of the tasks projection: events per second.
    Rebuild(RebuildBenchArgs),
    /// What a long history costs, each size against the smallest, in one
    /// run: command latency by stream length (snapshots on and off), list
    /// latency by read-model size, rebuild and verification speed by log
    /// size, and the gateway's rate by messages in flight.
    Growth(GrowthArgs),
    /// Chain verification: events/s from sequence 1 at several log sizes,
    /// and the time to verify only the newest events from an anchor.
    Verify(VerifyBenchArgs),
    /// Device gateway messages/s with 1 and with 16 messages in flight
    /// against a RockBLOCK stand-in answering after a delay, and the ratio.
    Gateway(GatewayBenchArgs),
    /// Webhook deliveries per second to a receiver in this process with
    /// 1,000 webhooks subscribed (against bare POSTs to it), and the time
    /// from a task's terminal event to its delivery's arrival (p50/p99) at a
    /// paced rate of completions, with the goal line (p99 < 100 ms at 200/s).
    Webhooks(WebhooksBenchArgs),
}

/// Runs the chosen benchmark.
///
/// # Errors
/// Whatever the benchmark fails with, with context.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut settings = Settings::from_database(&cli.database, &cli.log_filter);
    settings.create_database = true;
    match cli.which {
        BenchCommand::Append(args) => {
            prepare(&settings).await?;
            crate::append::append(&settings, &args).await
        }
        BenchCommand::Api(args) => crate::api::api(&settings, &args).await,
        BenchCommand::Mo(args) => crate::mo::mo(&settings, &args).await,
        BenchCommand::Gateway(args) => crate::gateway::gateway(&settings, &args).await,
        BenchCommand::Webhooks(args) => crate::webhooks::webhooks(&settings, &args).await,
        BenchCommand::Rebuild(args) => {
            prepare(&settings).await?;
            crate::rebuild::rebuild(&settings, &args).await
        }
        BenchCommand::Growth(args) => crate::growth::growth(&settings, &args).await,
        BenchCommand::Verify(args) => {
            prepare(&settings).await?;
            crate::verify::verify(&settings, &args).await
        }
        BenchCommand::Tasks { broker, args } => {
            settings.amqp_url = broker.amqp_url;
            settings.amqp_prefix = broker.amqp_prefix;
            prepare(&settings).await?;
            crate::tasks::tasks(&settings, &args).await
        }
    }
}

/// Creates the database if missing and migrates it. (`api`, `mo`, `gateway` and `webhooks` start
/// the service, which does both itself.)
async fn prepare(settings: &Settings) -> anyhow::Result<()> {
    database::prepare(settings)
        .await
        .context("preparing the benchmark database")?;
    Ok(())
}
