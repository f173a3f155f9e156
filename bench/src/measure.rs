//! Summaries of what a run measured: latencies as milliseconds and their
//! percentiles; when each task ended, as the log says.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use taskledger_events::store::Subscription;
use taskledger_events::task::{TaskEvent, TaskId};
use taskledger_events::RecordedEvent;

/// The next event of `feed` if it ends a task ([`task_end`]); `None` for
/// any other event.
///
/// # Errors
/// When no event comes for 120 s, the feed ends or fails, or a task's
/// event does not decode.
pub(crate) async fn next_task_end(
    feed: &mut Subscription,
) -> anyhow::Result<Option<(TaskId, DateTime<Utc>, bool)>> {
    let recorded = tokio::time::timeout(Duration::from_secs(120), feed.next())
        .await
        .context("no task finished for 120 s")?
        .context("the feed ended")??;
    task_end(&recorded)
}

/// The task `recorded` ends, when its end was recorded, and whether it
/// succeeded; `None` when it is not a task's terminal event.
///
/// # Errors
/// When a task's event does not decode.
pub(crate) fn task_end(
    recorded: &RecordedEvent,
) -> anyhow::Result<Option<(TaskId, DateTime<Utc>, bool)>> {
    let Some(task_id) = TaskId::from_stream_id(&recorded.stream_id) else {
        return Ok(None);
    };
    Ok(match TaskEvent::from_recorded(recorded)? {
        TaskEvent::Succeeded(_) => Some((task_id, recorded.recorded_at, true)),
        TaskEvent::Failed(_) | TaskEvent::TimedOut(_) | TaskEvent::Canceled(_) => {
            Some((task_id, recorded.recorded_at, false))
        }
        _ => None,
    })
}

/// `duration` in milliseconds, fractional.
pub(crate) fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// The value at quantile `q` (0.0–1.0) of sorted `values`, by nearest rank;
/// zero when `values` is empty.
pub(crate) fn percentile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let index = ((values.len() as f64 - 1.0) * q).round() as usize;
    values[index.min(values.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_by_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&values, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.99), Duration::ZERO);
    }
}
