//! `taskledger-bench append`: appends per second, append latency and the
//! lag from commit to delivery on a live subscription; with `--baseline`,
//! each against plain INSERTs of the same rows in the same run
//! (`crate::plain`), interleaved round by round, as ratios.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::ExposeSecret;
use serde_json::json;
use taskledger::config::settings::Settings;
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::{EventStore, ExpectedVersion, NewEvent, StreamId};

use crate::measure::{millis, percentile};
use crate::plain::{PlainRun, PlainTable};

/// Options of `taskledger-bench append`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AppendBenchArgs {
    /// Numbers of concurrent writers to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub(crate) writers: Vec<usize>,
    /// Events per append to run, comma-separated.
    #[arg(
        long = "batch",
        alias = "batches",
        value_delimiter = ',',
        default_value = "1,100"
    )]
    pub(crate) batches: Vec<usize>,
    /// Seconds each run lasts.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) seconds: f64,
    /// Commit every append on its own instead of sharing commits between
    /// concurrent appends (to see what group commit buys).
    #[arg(long)]
    pub(crate) no_group_commit: bool,
    /// With group commit, send the next batch while the one before commits
    /// (the store's `commit_ahead`, off by default: see what it buys).
    #[arg(long)]
    pub(crate) commit_ahead: bool,
    /// Streams each writer spreads its appends over.
    #[arg(long, default_value_t = 8)]
    pub(crate) streams_per_writer: usize,
    /// Also run the plain baseline at each writer count and batch size: as
    /// many connections as writers, each committing one INSERT of `batch`
    /// rows per transaction into a scratch copy of the events table (same
    /// columns and indexes, same payload); print each run's ratio to ours.
    #[arg(long)]
    pub(crate) baseline: bool,
    /// With `--baseline`, also the ceiling: the same rows, 100 to a
    /// transaction.
    #[arg(long)]
    pub(crate) ceiling: bool,
    /// With `--baseline`, rounds per writer count and batch size (ours and
    /// the baseline alternate which goes first), then the median ratio.
    #[arg(long, default_value_t = 3)]
    pub(crate) rounds: usize,
    /// With `--baseline`, the most connections its writers use (more
    /// writers share them); the server's connection limit is shared with
    /// ours and anything else running.
    #[arg(long, default_value_t = 32)]
    pub(crate) baseline_connections: usize,
}

/// What one run measured.
#[derive(Debug, Clone)]
pub(crate) struct AppendRun {
    /// Concurrent writers.
    pub(crate) writers: usize,
    /// Events per append.
    pub(crate) batch: usize,
    /// Events committed per second.
    pub(crate) events_per_s: f64,
    /// Median append latency.
    pub(crate) p50: Duration,
    /// 99th percentile append latency.
    pub(crate) p99: Duration,
    /// 99th percentile of commit-to-delivery lag on a live subscription.
    pub(crate) lag_p99: Duration,
    /// Appends per commit, on average (how many shared one).
    pub(crate) appends_per_commit: f64,
}

impl std::fmt::Display for AppendRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "writers={} batch={} events_per_s={:.0} p50_ms={:.2} p99_ms={:.2} lag_p99_ms={:.2} appends_per_commit={:.1}",
            self.writers,
            self.batch,
            self.events_per_s,
            millis(self.p50),
            millis(self.p99),
            millis(self.lag_p99),
            self.appends_per_commit
        )
    }
}

/// Runs every combination of writers and batch size and prints a line each.
///
/// # Errors
/// When the database fails during a run.
pub(crate) async fn append(settings: &Settings, args: &AppendBenchArgs) -> anyhow::Result<()> {
    let config: tokio_postgres::Config = settings
        .database_url
        .expose_secret()
        .parse()
        .context("DATABASE_URL does not parse")?;
    println!(
        "# bench append against {}: {} s per run, {}; appends use ExpectedVersion::Exact on {} streams per writer",
        taskledger::service::database::describe(&config),
        args.seconds,
        match (args.no_group_commit, args.commit_ahead) {
            (true, _) => "one commit per append",
            (false, false) => "group commit",
            (false, true) => "group commit, next batch sent while one commits",
        },
        args.streams_per_writer
    );
    if args.baseline {
        return compared(settings, args, &config).await;
    }
    for &batch in &args.batches {
        for &writers in &args.writers {
            let run = append_run(settings, args, writers.max(1), batch.max(1)).await?;
            println!("{run}");
        }
    }
    Ok(())
}

/// `--baseline`: every writer count and batch size, `--rounds` times, ours
/// and the plain INSERTs back to back (alternating which goes first, so a
/// slow spell of the shared machine hits both alike), one line per round
/// with the ratios, then the medians. The scratch table is dropped however
/// the runs end.
async fn compared(
    settings: &Settings,
    args: &AppendBenchArgs,
    config: &tokio_postgres::Config,
) -> anyhow::Result<()> {
    let table = PlainTable::create(config, &uuid::Uuid::new_v4().simple().to_string()).await?;
    println!(
        "# baseline: plain INSERT of `batch` rows per transaction into a copy of the events table \
         (LIKE events INCLUDING ALL), at most {} connections; ratio = ours / baseline events/s, \
         p99_ratio = ours / baseline p99 (below 1 is better)",
        args.baseline_connections
    );
    let outcome = async {
        for &batch in &args.batches {
            for &writers in &args.writers {
                compare_rounds(settings, args, &table, writers.max(1), batch.max(1)).await?;
            }
        }
        Ok(())
    }
    .await;
    table.drop().await?;
    outcome
}

async fn compare_rounds(
    settings: &Settings,
    args: &AppendBenchArgs,
    table: &PlainTable,
    writers: usize,
    batch: usize,
) -> anyhow::Result<()> {
    let rounds = args.rounds.max(1);
    let plain = || {
        table.run(
            writers,
            batch,
            args.seconds,
            args.streams_per_writer,
            args.baseline_connections,
        )
    };
    let mut ratios = Vec::new();
    let mut p99_ratios = Vec::new();
    let mut ceiling_ratios = Vec::new();
    for round in 1..=rounds {
        let (ours, baseline) = if round % 2 == 1 {
            let ours = append_run(settings, args, writers, batch).await?;
            (ours, plain().await?)
        } else {
            let baseline = plain().await?;
            (append_run(settings, args, writers, batch).await?, baseline)
        };
        let ratio = ours.events_per_s / baseline.events_per_s;
        let p99_ratio = ours.p99.as_secs_f64() / baseline.p99.as_secs_f64();
        ratios.push(ratio);
        p99_ratios.push(p99_ratio);
        let mut line = format!(
            "round={round}/{rounds} writers={writers} batch={batch} \
             ours_events_per_s={:.0} baseline_events_per_s={:.0} ratio={ratio:.2} \
             ours_p99_ms={:.2} baseline_p99_ms={:.2} p99_ratio={p99_ratio:.2} \
             ours_p50_ms={:.2} baseline_p50_ms={:.2} lag_p99_ms={:.2} \
             appends_per_commit={:.1}",
            ours.events_per_s,
            baseline.events_per_s,
            millis(ours.p99),
            millis(baseline.p99),
            millis(ours.p50),
            millis(baseline.p50),
            millis(ours.lag_p99),
            ours.appends_per_commit
        );
        if args.ceiling {
            let ceiling: PlainRun = table
                .run(
                    writers,
                    100,
                    args.seconds,
                    args.streams_per_writer,
                    args.baseline_connections,
                )
                .await?;
            let of_ceiling = ours.events_per_s / ceiling.events_per_s;
            ceiling_ratios.push(of_ceiling);
            line.push_str(&format!(
                " ceiling_events_per_s={:.0} of_ceiling={of_ceiling:.2}",
                ceiling.events_per_s
            ));
        }
        println!("{line}");
    }
    let mut summary = format!(
        "writers={writers} batch={batch} rounds={rounds} median_ratio={:.2} median_p99_ratio={:.2}",
        median(&mut ratios),
        median(&mut p99_ratios)
    );
    if args.ceiling {
        summary.push_str(&format!(
            " median_of_ceiling={:.2}",
            median(&mut ceiling_ratios)
        ));
    }
    println!("{summary}");
    Ok(())
}

/// The median of `values` (sorted in place); NaN when empty.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// One run: `writers` tasks append `batch` events at a time for the
/// configured time while a subscriber follows the log live.
///
/// # Errors
/// When the database fails.
pub(crate) async fn append_run(
    settings: &Settings,
    args: &AppendBenchArgs,
    writers: usize,
    batch: usize,
) -> anyhow::Result<AppendRun> {
    let options = StoreOptions {
        pool_size: settings.db_pool_size,
        group_commit: !args.no_group_commit,
        commit_ahead: args.commit_ahead,
        ..StoreOptions::default()
    };
    let store = PgEventStore::connect(settings.database_url.expose_secret(), options)?;
    let head = store
        .head_position()
        .await
        .context("reading the log head")?;

    // The subscriber notes when each position arrives, until it has seen the
    // last one the writers committed.
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let target_set = Arc::new(tokio::sync::Notify::new());
    let subscriber = {
        let mut feed = store.subscribe_all(head);
        let target = target.clone();
        let target_set = target_set.clone();
        tokio::spawn(async move {
            let mut arrivals: HashMap<u64, Instant> = HashMap::new();
            let mut newest = head;
            while newest < target.load(Ordering::Acquire) {
                tokio::select! {
                    event = feed.next() => match event {
                        Some(Ok(event)) => {
                            arrivals.insert(event.global_position, Instant::now());
                            newest = event.global_position;
                        }
                        Some(Err(_)) => {}
                        None => break,
                    },
                    () = target_set.notified() => {}
                }
            }
            arrivals
        })
    };

    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let store = store.clone();
            let run_id = run_id.clone();
            let streams = args.streams_per_writer.max(1);
            tokio::spawn(async move {
                write_until(store, &run_id, writer, streams, batch, deadline).await
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut commits = Vec::new();
    let mut events = 0_u64;
    for task in tasks {
        let outcome = task.await.context("a writer panicked")??;
        latencies.extend(outcome.latencies);
        commits.extend(outcome.commits);
        events += outcome.events;
    }
    let elapsed = started.elapsed();
    let last = commits
        .iter()
        .map(|(position, _)| *position)
        .max()
        .unwrap_or(head);
    target.store(last, Ordering::Release);
    target_set.notify_one();
    let arrivals = tokio::time::timeout(Duration::from_secs(60), subscriber)
        .await
        .context("the subscriber did not receive every event within 60 s")?
        .context("the subscriber panicked")?;
    let mut lags: Vec<Duration> = commits
        .iter()
        .filter_map(|(position, committed)| {
            arrivals
                .get(position)
                .map(|arrived| arrived.saturating_duration_since(*committed))
        })
        .collect();
    anyhow::ensure!(
        lags.len() == commits.len(),
        "the subscriber missed {} of {} appends",
        commits.len() - lags.len(),
        commits.len()
    );
    let appends = latencies.len();
    latencies.sort_unstable();
    lags.sort_unstable();
    let (fast, full) = store.commit_counts();
    tracing::info!(
        commits_one_round_trip = fast,
        commits_full = full,
        "append commits"
    );
    Ok(AppendRun {
        writers,
        batch,
        events_per_s: events as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        lag_p99: percentile(&lags, 0.99),
        appends_per_commit: appends as f64 / (fast + full).max(1) as f64,
    })
}

struct WriterOutcome {
    latencies: Vec<Duration>,
    /// (last global position of the append, when the writer saw it commit).
    commits: Vec<(u64, Instant)>,
    events: u64,
}

async fn write_until(
    store: PgEventStore,
    run_id: &str,
    writer: usize,
    streams: usize,
    batch: usize,
    deadline: Instant,
) -> anyhow::Result<WriterOutcome> {
    let stream_ids: Vec<StreamId> = (0..streams)
        .map(|n| StreamId::new(format!("bench-{run_id}-{writer}-{n}")))
        .collect::<Result<_, _>>()?;
    let mut versions = vec![0_u64; streams];
    let mut outcome = WriterOutcome {
        latencies: Vec::new(),
        commits: Vec::new(),
        events: 0,
    };
    let mut round = 0_usize;
    while Instant::now() < deadline {
        let index = round % streams;
        let events: Vec<NewEvent> = (0..batch)
            .map(|n| {
                NewEvent::new(
                    "BenchTaskSubmitted",
                    json!({
                        "kind": "url-analysis",
                        "frontend_id": format!("frontend-{writer}"),
                        "params": { "url": format!("https://example.test/{round}/{n}"), "useragent": "winxpie60" },
                        "priority": 0,
                    }),
                )
            })
            .collect();
        let began = Instant::now();
        let result = store
            .append(
                &stream_ids[index],
                ExpectedVersion::Exact(versions[index]),
                events,
            )
            .await
            .with_context(|| format!("writer {writer} appending"))?;
        let committed = Instant::now();
        outcome.latencies.push(committed - began);
        outcome.commits.push((result.last_position, committed));
        outcome.events += batch as u64;
        versions[index] = result.stream_version;
        round += 1;
    }
    Ok(outcome)
}
