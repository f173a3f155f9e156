//! Process-wide metrics recorded outside HTTP handlers — commands executed
//! ([`record_command`]), store append latency ([`timed_append`]), runner
//! slots ([`runner_started`], [`attempt_running`]) — and the latency
//! buckets they share with the HTTP metrics ([`latency_histogram`]).
//! `/metrics` ([`crate::http::metrics`]) encodes them with [`render`].
//!
//! One `static` per process: commands run in the API, the runner and the
//! gateway alike, none of which hold the HTTP state. Labels are fixed,
//! low-cardinality names (aggregate, command variant, outcome), never ids.
//! The metric types, label sets and the OpenMetrics text encoding are
//! `prometheus-client`'s.

use std::sync::LazyLock;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of every latency histogram's buckets, in seconds (`+Inf`
/// is implicit).
pub const BOUNDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// An empty latency histogram over [`BOUNDS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(BOUNDS)
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

impl EncodeLabelValue for CommandOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// `taskledger_commands_total`'s labels, in this order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CommandLabels {
    aggregate: &'static str,
    command: &'static str,
    outcome: CommandOutcome,
}

/// `taskledger_runner_slots`'s label: `busy` or `total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SlotLabels {
    state: &'static str,
}

/// What is recorded, one per process; `registry` holds the same metrics
/// (they are shared handles) for encoding.
#[derive(Debug)]
struct ProcessMetrics {
    commands: Family<CommandLabels, Counter>,
    append: Histogram,
    runner_slots_total: Gauge,
    runner_slots_busy: Gauge,
    registry: Registry,
}

static METRICS: LazyLock<ProcessMetrics> = LazyLock::new(|| {
    let commands = Family::<CommandLabels, Counter>::default();
    let append = latency_histogram();
    let runner_slots = Family::<SlotLabels, Gauge>::default();
    // Both series exist from the start, at 0, as a dashboard expects.
    let runner_slots_busy = runner_slots.get_or_create_owned(&SlotLabels { state: "busy" });
    let runner_slots_total = runner_slots.get_or_create_owned(&SlotLabels { state: "total" });
    let mut registry = Registry::default();
    // The encoder adds the `_total` of a counter's samples and the period
    // ending every help text.
    registry.register(
        "taskledger_commands",
        "Commands executed, by aggregate, command and outcome",
        commands.clone(),
    );
    registry.register(
        "taskledger_append_seconds",
        "Latency of the event store appends commands make",
        append.clone(),
    );
    registry.register(
        "taskledger_runner_slots",
        "Runner slots: total (configured) and busy (attempts running)",
        runner_slots,
    );
    ProcessMetrics {
        commands,
        append,
        runner_slots_total,
        runner_slots_busy,
        registry,
    }
});

/// Counts one command executed against `aggregate` (e.g. `tasks`), by its
/// command variant (e.g. `Submit`) and outcome.
pub fn record_command(aggregate: &'static str, command: &'static str, outcome: CommandOutcome) {
    METRICS
        .commands
        .get_or_create(&CommandLabels {
            aggregate,
            command,
            outcome,
        })
        .inc();
}

/// Awaits one store append and records how long it took (whatever its
/// outcome) in `taskledger_append_seconds`.
pub async fn timed_append<T>(append: impl std::future::Future<Output = T>) -> T {
    let began = std::time::Instant::now();
    let result = append.await;
    METRICS.append.observe(began.elapsed().as_secs_f64());
    result
}

/// A runner's slots, counted in `taskledger_runner_slots{state="total"}`
/// while this guard lives.
#[derive(Debug)]
#[must_use = "the slots count only while the guard lives"]
pub struct RunnerSlots(i64);

impl Drop for RunnerSlots {
    fn drop(&mut self) {
        METRICS.runner_slots_total.dec_by(self.0);
    }
}

/// Counts a runner's `slots` until the guard is dropped (several runners in
/// one process add up).
pub fn runner_started(slots: usize) -> RunnerSlots {
    let slots = i64::try_from(slots).unwrap_or(i64::MAX);
    METRICS.runner_slots_total.inc_by(slots);
    RunnerSlots(slots)
}

/// One running attempt, counted in `taskledger_runner_slots{state="busy"}`
/// while this guard lives (dropped when the attempt ends, or is aborted).
#[derive(Debug)]
#[must_use = "the attempt counts only while the guard lives"]
pub struct BusySlot(());

impl Drop for BusySlot {
    fn drop(&mut self) {
        METRICS.runner_slots_busy.dec();
    }
}

/// Counts one running attempt until the guard is dropped.
pub fn attempt_running() -> BusySlot {
    METRICS.runner_slots_busy.inc();
    BusySlot(())
}

/// Appends every metric of this module to `out` in the OpenMetrics text
/// format, each with its HELP and TYPE lines; the closing `# EOF` is the
/// caller's.
///
/// # Errors
/// Only those of writing to `out` (none for a `String`).
pub fn render(out: &mut String) -> Result<(), std::fmt::Error> {
    prometheus_client::encoding::text::encode_registry(out, &METRICS.registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_over_the_shared_bounds() {
        let histogram = latency_histogram();
        histogram.observe(0.002);
        histogram.observe(0.3);
        let mut registry = Registry::default();
        registry.register("x_seconds", "X", histogram);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(out.contains("x_seconds_bucket{le=\"0.001\"} 0\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.0025\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.5\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_count 2\n"), "{out}");
        assert!(out.ends_with("# EOF\n"), "{out}");
    }

    #[test]
    fn commands_are_counted_under_their_labels_in_order() {
        record_command("tests", "Count", CommandOutcome::Refused);
        let mut out = String::new();
        render(&mut out).unwrap();
        assert!(
            out.contains("# TYPE taskledger_commands counter\n"),
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
