//! Process-wide metrics recorded outside HTTP handlers — commands executed
//! ([`record_command`]), store append latency ([`timed_append`], [`observe_append`]), runner
//! slots ([`runner_started`], [`attempt_running`], by kind too, and jobs
//! put back at a kind's `max_running`, [`kind_at_limit`]), webhooks whose
//! queue was full ([`webhook_fell_behind`]) — and the latency
//! buckets they share with the HTTP metrics ([`latency_histogram`]).
//! `/metrics` ([`crate::http::metrics`]) encodes what [`gather`] returns.
//!
//! One `static` per process: commands run in the API, the runner and the
//! gateway alike, none of which hold the HTTP state. Labels are fixed,
//! low-cardinality names (aggregate, command variant, outcome), never ids.
//! The metric types and label sets are the `prometheus` crate's.

use std::sync::LazyLock;

use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Upper bounds of every latency histogram's buckets, in seconds (`+Inf`
/// is implicit).
pub const BOUNDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The options of a latency histogram `name` over [`BOUNDS`], with `help`
/// as its HELP line.
pub fn latency_histogram(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(BOUNDS.to_vec())
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CommandOutcome {
    /// Decided and stored (or it changed nothing).
    Ok,
    /// The aggregate refused it.
    Refused,
    /// Other writers kept changing the stream past the retries.
    Conflict,
    /// Anything else: the store failed, an event was malformed or
    /// unreadable, a command id was reused.
    Error,
}

impl CommandOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Conflict => "conflict",
            Self::Error => "error",
        }
    }
}

/// What is recorded, one per process; `registry` holds the same metrics
/// (they are shared handles) for encoding.
#[derive(Debug)]
struct ProcessMetrics {
    /// By `aggregate`, `command` and `outcome`.
    commands: IntCounterVec,
    append: Histogram,
    runner_slots_total: IntGauge,
    runner_slots_busy: IntGauge,
    /// By `kind`: attempts this process runs.
    kind_running: IntGaugeVec,
    /// By `kind`: jobs put back because the kind ran its `max_running`.
    kind_at_limit: IntCounterVec,
    /// Times a webhook's queue was full and it read the log itself.
    webhook_fell_behind: prometheus::IntCounter,
    registry: Registry,
}

/// Panics only if a name, label or bucket list here is invalid or repeated
/// (fixed text: the first test that records a metric would show it).
static METRICS: LazyLock<ProcessMetrics> = LazyLock::new(|| {
    let commands = IntCounterVec::new(
        Opts::new(
            "taskledger_commands_total",
            "Commands executed, by aggregate, command and outcome.",
        ),
        &["aggregate", "command", "outcome"],
    )
    .expect("taskledger_commands_total is well-formed");
    let append = Histogram::with_opts(latency_histogram(
        "taskledger_append_seconds",
        "Latency of the event store appends commands make.",
    ))
    .expect("taskledger_append_seconds is well-formed");
    let runner_slots = IntGaugeVec::new(
        Opts::new(
            "taskledger_runner_slots",
            "Runner slots: total (configured) and busy (attempts running).",
        ),
        &["state"],
    )
    .expect("taskledger_runner_slots is well-formed");
    // Both series exist from the start, at 0, as a dashboard expects.
    let runner_slots_busy = runner_slots.with_label_values(&["busy"]);
    let runner_slots_total = runner_slots.with_label_values(&["total"]);
    let kind_running = IntGaugeVec::new(
        Opts::new(
            "taskledger_runner_kind_running",
            "Attempts this process runs, by task kind.",
        ),
        &["kind"],
    )
    .expect("taskledger_runner_kind_running is well-formed");
    let kind_at_limit = IntCounterVec::new(
        Opts::new(
            "taskledger_runner_kind_at_limit_total",
            "Jobs put back to wait because their kind ran its max_running across the runners, by task kind.",
        ),
        &["kind"],
    )
    .expect("taskledger_runner_kind_at_limit_total is well-formed");
    let webhook_fell_behind = prometheus::IntCounter::new(
        "taskledger_webhook_fell_behind_total",
        "Times a webhook's delivery queue was full, so it went on reading the log itself.",
    )
    .expect("taskledger_webhook_fell_behind_total is well-formed");
    let registry = Registry::new();
    for collector in [
        Box::new(commands.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(append.clone()),
        Box::new(runner_slots),
        Box::new(kind_running.clone()),
        Box::new(kind_at_limit.clone()),
        Box::new(webhook_fell_behind.clone()),
    ] {
        registry
            .register(collector)
            .expect("the process metrics have distinct names");
    }
    ProcessMetrics {
        commands,
        append,
        runner_slots_total,
        runner_slots_busy,
        kind_running,
        kind_at_limit,
        webhook_fell_behind,
        registry,
    }
});

/// Counts one command executed against `aggregate` (e.g. `tasks`), by its
/// command variant (e.g. `Submit`) and outcome.
pub fn record_command(aggregate: &'static str, command: &'static str, outcome: CommandOutcome) {
    METRICS
        .commands
        .with_label_values(&[aggregate, command, outcome.as_str()])
        .inc();
}

/// Awaits one store append and records how long it took (whatever its
/// outcome) in `taskledger_append_seconds`.
pub async fn timed_append<T>(append: impl std::future::Future<Output = T>) -> T {
    let began = std::time::Instant::now();
    let result = append.await;
    observe_append(began.elapsed());
    result
}

/// Records one store append that took `elapsed` (whatever its outcome) in
/// `taskledger_append_seconds`.
pub fn observe_append(elapsed: std::time::Duration) {
    METRICS.append.observe(elapsed.as_secs_f64());
}

/// A runner's slots, counted in `taskledger_runner_slots{state="total"}`
/// while this guard lives.
#[derive(Debug)]
#[must_use = "the slots count only while the guard lives"]
pub struct RunnerSlots(i64);

impl Drop for RunnerSlots {
    fn drop(&mut self) {
        METRICS.runner_slots_total.sub(self.0);
    }
}

/// Counts a runner's `slots` until the guard is dropped (several runners in
/// one process add up).
pub fn runner_started(slots: usize) -> RunnerSlots {
    let slots = i64::try_from(slots).unwrap_or(i64::MAX);
    METRICS.runner_slots_total.add(slots);
    RunnerSlots(slots)
}

/// One running attempt, counted in `taskledger_runner_slots{state="busy"}`
/// and `taskledger_runner_kind_running{kind}` while this guard lives
/// (dropped when the attempt ends, or is aborted).
#[derive(Debug)]
#[must_use = "the attempt counts only while the guard lives"]
pub struct BusySlot(IntGauge);

impl Drop for BusySlot {
    fn drop(&mut self) {
        METRICS.runner_slots_busy.dec();
        self.0.dec();
    }
}

/// Counts one running attempt of `kind` until the guard is dropped.
pub fn attempt_running(kind: &str) -> BusySlot {
    METRICS.runner_slots_busy.inc();
    let of_kind = METRICS.kind_running.with_label_values(&[kind]);
    of_kind.inc();
    BusySlot(of_kind)
}

/// Counts one job of `kind` put back because the kind ran its
/// `max_running` across the runners.
pub fn kind_at_limit(kind: &str) {
    METRICS.kind_at_limit.with_label_values(&[kind]).inc();
}

/// Counts one webhook whose queue was full: it reads the log itself until
/// it has caught up.
pub fn webhook_fell_behind() {
    METRICS.webhook_fell_behind.inc();
}

/// Every metric of this module, with its current values, for the text
/// encoder (series sorted by name, then by label values).
pub fn gather() -> Vec<MetricFamily> {
    METRICS.registry.gather()
}

#[cfg(test)]
mod tests {
    use prometheus::{Encoder as _, TextEncoder};

    use super::*;

    fn encode(families: &[MetricFamily]) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(families, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn histograms_are_cumulative_over_the_shared_bounds() {
        let histogram = Histogram::with_opts(latency_histogram("x_seconds", "X.")).unwrap();
        histogram.observe(0.002);
        histogram.observe(0.3);
        let registry = Registry::new();
        registry.register(Box::new(histogram)).unwrap();
        let out = encode(&registry.gather());
        assert!(out.contains("# TYPE x_seconds histogram\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.001\"} 0\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.0025\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.5\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_count 2\n"), "{out}");
    }

    #[test]
    fn commands_are_counted_under_their_labels_in_order() {
        record_command("tests", "Count", CommandOutcome::Refused);
        let out = encode(&gather());
        assert!(
            out.contains("# HELP taskledger_commands_total Commands executed, by aggregate, command and outcome.\n"),
            "{out}"
        );
        assert!(
            out.contains("# TYPE taskledger_commands_total counter\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "taskledger_commands_total{aggregate=\"tests\",command=\"Count\",outcome=\"refused\"} "
            ),
            "{out}"
        );
        assert!(out.contains("taskledger_runner_slots{state=\"busy\"} "));
        assert!(out.contains("taskledger_runner_slots{state=\"total\"} "));
    }
}
