//! `taskledger replay …`: auditors' commands over the stored log.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use taskledger_events::EventStore as _;

use crate::config::settings::Settings;
use crate::service::database;

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
    /// Write events as stored (envelope, data, metadata, hash), one JSON
    /// object per line, streaming: one stream, or a range of the global
    /// order.
    Export {
        /// Only this stream (e.g. `task-3f2a…`).
        #[arg(long, conflicts_with_all = ["from", "to"])]
        stream: Option<String>,
        /// The first sequence (default 1).
        #[arg(long)]
        from: Option<u64>,
        /// The last sequence (default: the head when it starts).
        #[arg(long)]
        to: Option<u64>,
        /// The output format; `ndjson` is the one there is.
        #[arg(long, default_value = "ndjson", value_parser = ["ndjson"])]
        format: String,
    },
    /// A task as it was: its events folded up to an instant or a version,
    /// printed as the API shows a task.
    State {
        /// The task's stream (`task-…`) or id.
        #[arg(long)]
        stream: String,
        /// Fold the events recorded at or before this RFC 3339 instant.
        #[arg(long, conflicts_with = "at_version")]
        as_of: Option<String>,
        /// Fold the events up to this stream version.
        #[arg(long)]
        at_version: Option<u64>,
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
        ReplayCommand::Export {
            stream, from, to, ..
        } => export(settings, stream, from, to).await,
        ReplayCommand::State {
            stream,
            as_of,
            at_version,
        } => state(settings, &stream, as_of.as_deref(), at_version).await,
    }
}

/// Rows read per query while exporting.
const EXPORT_PAGE: usize = 1_000;

async fn export(
    settings: &Settings,
    stream: Option<String>,
    from: Option<u64>,
    to: Option<u64>,
) -> anyhow::Result<()> {
    let store = database::open_store(settings)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut written = 0_u64;
    match stream {
        Some(stream) => {
            let stream = taskledger_events::StreamId::new(stream).context("--stream")?;
            let mut version = 1;
            loop {
                let page = store
                    .read_stream(
                        &stream,
                        version,
                        taskledger_events::Direction::Forward,
                        EXPORT_PAGE,
                    )
                    .await?;
                for event in &page {
                    serde_json::to_writer(&mut out, event)?;
                    out.write_all(b"\n")?;
                    written += 1;
                    version = event.version + 1;
                }
                if page.len() < EXPORT_PAGE {
                    break;
                }
            }
        }
        None => {
            let to = match to {
                Some(to) => to,
                None => taskledger_events::EventStore::head_position(&store).await?,
            };
            let mut after = from.unwrap_or(1).max(1) - 1;
            while after < to {
                // As stored, not upcast: what the hash chain covers.
                let page = store.read_all_as_stored(after, EXPORT_PAGE).await?;
                if page.is_empty() {
                    break;
                }
                for event in page.iter().take_while(|event| event.global_position <= to) {
                    serde_json::to_writer(&mut out, event)?;
                    out.write_all(b"\n")?;
                    written += 1;
                }
                after = page.last().map_or(to, |event| event.global_position);
            }
        }
    }
    out.flush()?;
    eprintln!("exported {written} events");
    Ok(())
}

async fn state(
    settings: &Settings,
    stream: &str,
    as_of: Option<&str>,
    at_version: Option<u64>,
) -> anyhow::Result<()> {
    use taskledger_events::task::TaskId;
    use taskledger_replay::Until;

    let task_id = TaskId::from_stream_id(stream)
        .or_else(|| uuid::Uuid::parse_str(stream).ok().map(TaskId))
        .context("--stream must be a task stream (task-<uuid>) or a task id; other streams: use replay export")?;
    let until = match (as_of, at_version) {
        (Some(text), _) => Until::Instant(
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|at| at.with_timezone(&chrono::Utc))
                .with_context(|| format!("--as-of {text:?} is not an RFC 3339 instant"))?,
        ),
        (None, Some(version)) => Until::Version(version),
        (None, None) => Until::Head,
    };
    let store = database::open_store(settings)?;
    let at = taskledger_replay::task_at(&store, task_id, until).await?;
    let view = crate::http::tasks::TaskView::from_task(&at.task, at.version, at.position);
    println!("{}", serde_json::to_string_pretty(&view)?);
    Ok(())
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
