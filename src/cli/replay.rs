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
    /// From sequence 1 unless told to resume from an anchor (the last
    /// recorded verification, or a ledger's confirmed chain hash). Prints
    /// progress on standard error and the verdict on standard output; exits
    /// non-zero naming the first bad sequence.
    Verify(VerifyArgs),
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

/// What `taskledger replay verify` checks, and whether it records it.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The first sequence to check (default 1).
    #[arg(long, default_value_t = 1, conflicts_with_all = ["from_last_verified", "from_anchor"])]
    pub from: u64,
    /// The last sequence to check (default: the head when it starts).
    #[arg(long)]
    pub to: Option<u64>,
    /// Resume at the last recorded verification (`--record`): its hash must
    /// be the one stored at its position, which is checked again with
    /// everything after it. Sequences before it are not re-checked (a
    /// change there is found only without this flag). With no recorded
    /// verification yet, checks from sequence 1.
    #[arg(long, conflicts_with = "from_anchor")]
    pub from_last_verified: bool,
    /// Resume at the last sequence whose chain hash this ledger confirmed
    /// holding, as `--from-last-verified` does at a record.
    #[arg(long, value_name = "LEDGER")]
    pub from_anchor: Option<String>,
    /// After a verification that passed, record it (a `ChainVerified` event
    /// in stream `verification-chain`) so the next `--from-last-verified`
    /// resumes there. Only for a run from sequence 1 or from an anchor.
    #[arg(long, conflicts_with = "from")]
    pub record: bool,
    /// Who verified, for the record (default `cli`).
    #[arg(long, default_value = "cli", requires = "record")]
    pub verified_by: String,
}

/// Runs a `replay` subcommand.
///
/// # Errors
/// A defect in the log (naming the first bad sequence), or a database
/// failure.
pub async fn run(settings: &Settings, command: ReplayCommand) -> anyhow::Result<()> {
    match command {
        ReplayCommand::Verify(args) => verify(settings, &args).await,
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

/// Where a verification starts: position 1, or an anchor.
enum Start {
    /// From `from`, trusting nothing before it (1: the whole log).
    At(u64),
    /// From an anchor, whose hash must be the stored one.
    Anchored(taskledger_replay::resume::Anchor),
}

async fn verify(settings: &Settings, args: &VerifyArgs) -> anyhow::Result<()> {
    use taskledger_replay::resume::{self, Anchor};

    let store = database::open_store(settings)?;
    let start = if args.from_last_verified {
        match resume::last_recorded(&store)
            .await
            .context("reading the recorded verifications")?
        {
            Some(record) => Start::Anchored(Anchor::of_record(&record)),
            None => {
                eprintln!("no verification is recorded yet: checking from sequence 1");
                Start::At(1)
            }
        }
    } else if let Some(ledger) = &args.from_anchor {
        let ledger = taskledger_events::ledger::LedgerName::new(ledger)
            .map_err(anyhow::Error::msg)
            .context("--from-anchor")?;
        match resume::ledger_anchor(&store, &ledger)
            .await
            .context("reading the ledger's confirmations")?
        {
            Some(anchor) => Start::Anchored(anchor),
            None => anyhow::bail!(
                "ledger {} has confirmed no chain hash: there is no anchor to resume from",
                ledger.as_str()
            ),
        }
    } else {
        Start::At(args.from.max(1))
    };
    if let (Start::Anchored(anchor), Some(to)) = (&start, args.to) {
        if to < anchor.position {
            anyhow::bail!(
                "--to {to} is before the anchor at sequence {}, where this verification starts",
                anchor.position
            );
        }
    }
    let began = Instant::now();
    let mut last_report = Instant::now() - Duration::from_secs(10);
    let progress = |progress: taskledger_replay::Progress| {
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
    };
    let (from, verification) = match &start {
        Start::At(from) => (
            *from,
            taskledger_replay::verify(&store, *from, args.to, progress).await,
        ),
        Start::Anchored(anchor) => (
            anchor.position,
            resume::verify_from(&store, anchor, args.to, progress).await,
        ),
    };
    let verification = verification.context("reading the log")?;
    eprintln!();
    let seconds = began.elapsed().as_secs_f64();
    if let Some(defect) = verification.defect {
        println!("FAILED at sequence {}: {defect}", defect.global_position());
        anyhow::bail!(
            "the log does not verify; the first bad sequence is {}",
            defect.global_position()
        )
    }
    println!(
        "OK: {} events verified, sequences {from}..={} (positions, stream versions, hash chain) in {seconds:.1} s",
        verification.checked, verification.last_position
    );
    if let Start::Anchored(anchor) = &start {
        println!(
            "resumed at sequence {from}, anchored there by {} (its hash matches the stored one); \
             sequences 1..={} were not re-checked by this run: a change there is found only by \
             a verification from sequence 1 (run without --from-last-verified or --from-anchor)",
            anchor.anchored_by,
            from - 1
        );
    }
    if args.record {
        record(&store, from, verification.last_position, &args.verified_by).await?;
    }
    Ok(())
}

/// Records that positions up to `through` verified (from `from`, with what
/// is before it anchored), as a `ChainVerified` event.
async fn record(
    store: &taskledger_events::postgres::PgEventStore,
    from: u64,
    through: u64,
    verified_by: &str,
) -> anyhow::Result<()> {
    use taskledger_events::verification::{self, RecordVerification, Verifications};

    if through == 0 {
        println!("not recorded: the log is empty");
        return Ok(());
    }
    let hash = {
        let client = store.pool().get().await?;
        taskledger_events::postgres::verify::stored_hash(&client, through)
            .await?
            .context("the verified position vanished")?
    };
    let command = RecordVerification {
        from_position: from,
        through_position: through,
        chain_hash: hex::encode(hash),
        verified_by: verified_by.to_owned(),
        verified_at: chrono::Utc::now(),
    };
    let executed = crate::commands::execute::<Verifications>(
        store,
        &verification::stream_id(),
        command,
        uuid::Uuid::new_v4(),
        taskledger_events::Metadata::of_actor("cli"),
    )
    .await
    .map_err(|error| anyhow::anyhow!("recording the verification: {error}"))?;
    if executed.events.is_empty() {
        println!(
            "not recorded: a verification through sequence {through} or later is already recorded"
        );
    } else {
        println!(
            "recorded: verified through sequence {through} (chain hash {}), as sequence {} in stream {}",
            hex::encode(hash),
            executed.position,
            verification::VERIFICATION_STREAM
        );
    }
    Ok(())
}
