//! Process-wide metrics recorded outside HTTP handlers — commands executed
//! ([`record_command`]), store append latency ([`timed_append`], [`observe_append`]), runner
//! slots ([`runner_started`], [`attempt_running`]) — and the latency
//! [`Histogram`] they share with the HTTP metrics. `/metrics`
//! ([`crate::http::metrics`]) renders them with [`render`].
//!
//! One `static` per process: commands run in the API, the runner and the
//! gateway alike, none of which hold the HTTP state. Labels are fixed,
//! low-cardinality names (aggregate, command variant, outcome), never ids.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

/// Upper bounds of every latency histogram's buckets, in seconds.
pub const BOUNDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A latency histogram over [`BOUNDS`] (cumulative buckets, as Prometheus
/// wants them).
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    buckets: [u64; BOUNDS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        Self {
            buckets: [0; BOUNDS.len()],
            count: 0,
            sum: 0.0,
        }
    }

    /// Counts one observation of `seconds`.
    pub fn observe(&mut self, seconds: f64) {
        for (bucket, bound) in self.buckets.iter_mut().zip(BOUNDS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// Writes the `_bucket`, `_sum` and `_count` lines of series `name`
    /// with `labels` (`key="value",…`, or empty) to `out`; the HELP and
    /// TYPE lines are the caller's.
    pub fn write(&self, out: &mut String, name: &str, labels: &str) {
        let separator = if labels.is_empty() { "" } else { "," };
        for (bucket, bound) in self.buckets.iter().zip(BOUNDS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{separator}le=\"{bound}\"}} {bucket}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |labels: &str| {
            if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
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

/// What is recorded; one per process.
#[derive(Debug)]
struct Registry {
    /// By (aggregate, command, outcome).
    commands: Mutex<BTreeMap<(&'static str, &'static str, CommandOutcome), u64>>,
    append: Mutex<Histogram>,
    runner_slots_total: AtomicI64,
    runner_slots_busy: AtomicI64,
}

static REGISTRY: Registry = Registry {
    commands: Mutex::new(BTreeMap::new()),
    append: Mutex::new(Histogram::new()),
    runner_slots_total: AtomicI64::new(0),
    runner_slots_busy: AtomicI64::new(0),
};

/// Counts one command executed against `aggregate` (e.g. `tasks`), by its
/// command variant (e.g. `Submit`) and outcome.
pub fn record_command(aggregate: &'static str, command: &'static str, outcome: CommandOutcome) {
    if let Ok(mut commands) = REGISTRY.commands.lock() {
        *commands.entry((aggregate, command, outcome)).or_default() += 1;
    }
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
    if let Ok(mut histogram) = REGISTRY.append.lock() {
        histogram.observe(elapsed.as_secs_f64());
    }
}

/// A runner's slots, counted in `taskledger_runner_slots{state="total"}`
/// while this guard lives.
#[derive(Debug)]
#[must_use = "the slots count only while the guard lives"]
pub struct RunnerSlots(i64);

impl Drop for RunnerSlots {
    fn drop(&mut self) {
        REGISTRY
            .runner_slots_total
            .fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// Counts a runner's `slots` until the guard is dropped (several runners in
/// one process add up).
pub fn runner_started(slots: usize) -> RunnerSlots {
    let slots = i64::try_from(slots).unwrap_or(i64::MAX);
    REGISTRY
        .runner_slots_total
        .fetch_add(slots, Ordering::Relaxed);
    RunnerSlots(slots)
}

/// One running attempt, counted in `taskledger_runner_slots{state="busy"}`
/// while this guard lives (dropped when the attempt ends, or is aborted).
#[derive(Debug)]
#[must_use = "the attempt counts only while the guard lives"]
pub struct BusySlot(());

impl Drop for BusySlot {
    fn drop(&mut self) {
        REGISTRY.runner_slots_busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one running attempt until the guard is dropped.
pub fn attempt_running() -> BusySlot {
    REGISTRY.runner_slots_busy.fetch_add(1, Ordering::Relaxed);
    BusySlot(())
}

/// Writes every metric of this module to `out` in the Prometheus text
/// format, each with its HELP and TYPE lines.
pub fn render(out: &mut String) {
    let commands = REGISTRY
        .commands
        .lock()
        .map(|commands| commands.clone())
        .unwrap_or_default();
    out.push_str(
        "# HELP taskledger_commands_total Commands executed, by aggregate, command and outcome.\n\
         # TYPE taskledger_commands_total counter\n",
    );
    for ((aggregate, command, outcome), count) in &commands {
        let _ = writeln!(
            out,
            "taskledger_commands_total{{aggregate=\"{aggregate}\",command=\"{command}\",outcome=\"{}\"}} {count}",
            outcome.as_str()
        );
    }
    let append = REGISTRY
        .append
        .lock()
        .map(|append| append.clone())
        .unwrap_or_default();
    out.push_str(
        "# HELP taskledger_append_seconds Latency of the event store appends commands make.\n\
         # TYPE taskledger_append_seconds histogram\n",
    );
    append.write(out, "taskledger_append_seconds", "");
    out.push_str(
        "# HELP taskledger_runner_slots Runner slots: total (configured) and busy (attempts running).\n\
         # TYPE taskledger_runner_slots gauge\n",
    );
    let _ = writeln!(
        out,
        "taskledger_runner_slots{{state=\"busy\"}} {}",
        REGISTRY.runner_slots_busy.load(Ordering::Relaxed).max(0)
    );
    let _ = writeln!(
        out,
        "taskledger_runner_slots{{state=\"total\"}} {}",
        REGISTRY.runner_slots_total.load(Ordering::Relaxed).max(0)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_render_without_labels() {
        let mut histogram = Histogram::new();
        histogram.observe(0.002);
        histogram.observe(0.3);
        let mut out = String::new();
        histogram.write(&mut out, "x_seconds", "");
        assert!(out.contains("x_seconds_bucket{le=\"0.001\"} 0\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.0025\"} 1\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.5\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_count 2\n"), "{out}");
        let mut labelled = String::new();
        histogram.write(&mut labelled, "x_seconds", "route=\"/a\"");
        assert!(
            labelled.contains("x_seconds_bucket{route=\"/a\",le=\"+Inf\"} 2\n"),
            "{labelled}"
        );
        assert!(labelled.contains("x_seconds_count{route=\"/a\"} 2\n"));
    }
}
