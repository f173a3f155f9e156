//! A rebuild's progress: the lines reported while it runs, the report of a
//! finished one, and the row in `projection_rebuilds` every process reads.

use std::time::Duration;

use super::Build;
use crate::runtime::to_i64;

/// Where a rebuild is, for progress output.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildProgress {
    /// The projection.
    pub name: &'static str,
    /// The version being built.
    pub version: u32,
    /// `building` or `swapping`.
    pub phase: &'static str,
    /// Events applied to the new tables (their global position).
    pub position: u64,
    /// The log's head as last read.
    pub head: u64,
    /// Since the rebuild began.
    pub elapsed: Duration,
}

impl RebuildProgress {
    /// Events applied per second so far.
    pub fn events_per_s(&self) -> f64 {
        rate(self.position, self.elapsed)
    }

    /// Time left at the rate so far, when there is a rate.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.events_per_s();
        (rate > 0.0)
            .then(|| Duration::from_secs_f64(self.head.saturating_sub(self.position) as f64 / rate))
    }
}

impl std::fmt::Display for RebuildProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let percent = if self.head == 0 {
            100.0
        } else {
            self.position as f64 * 100.0 / self.head as f64
        };
        if self.phase == "swapping" {
            // The last events are applied inside the swap itself: no rate
            // to report, and "0/147 (0%)" would only alarm.
            return write!(
                f,
                "{} v{} swapping: built up to {} of {} events; applying the rest and swapping the tables in",
                self.name, self.version, self.position, self.head
            );
        }
        write!(
            f,
            "{} v{} {}: {}/{} events ({percent:.0}%) {:.0} events/s",
            self.name,
            self.version,
            self.phase,
            self.position,
            self.head,
            self.events_per_s()
        )?;
        if let Some(eta) = self.eta() {
            write!(f, " ETA {:.0}s", eta.as_secs_f64().ceil())?;
        }
        Ok(())
    }
}

/// What a finished rebuild did.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildReport {
    /// The projection.
    pub name: &'static str,
    /// The version now live.
    pub version: u32,
    /// The checkpoint the new tables went live at.
    pub position: u64,
    /// Start to swap.
    pub elapsed: Duration,
    /// Swap attempts it took (more than one when readers held it up).
    pub swap_attempts: u32,
}

impl RebuildReport {
    /// Events applied per second, start to swap.
    pub fn events_per_s(&self) -> f64 {
        rate(self.position, self.elapsed)
    }
}

impl std::fmt::Display for RebuildReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rebuilt {} v{}: {} events in {:.1}s ({:.0} events/s), swapped in at position {}",
            self.name,
            self.version,
            self.position,
            self.elapsed.as_secs_f64(),
            self.events_per_s(),
            self.position
        )?;
        if self.swap_attempts > 1 {
            write!(f, " after {} swap attempts", self.swap_attempts)?;
        }
        Ok(())
    }
}

impl Build<'_> {
    /// Where the rebuild is now, in `phase`.
    pub(super) fn progress(&self, phase: &'static str) -> RebuildProgress {
        RebuildProgress {
            name: self.name,
            version: self.version,
            phase,
            position: self.position,
            head: self.head,
            elapsed: self.began.elapsed(),
        }
    }

    /// Records where the rebuild is, for every process to see.
    pub(super) async fn record(
        &self,
        client: &tokio_postgres::Client,
        state: &'static str,
        error: Option<&str>,
    ) -> Result<(), tokio_postgres::Error> {
        let progress = self.progress(state);
        client
            .execute(
                "INSERT INTO public.projection_rebuilds
                     (projector, version, state, position, head, events_per_s,
                      started_at, updated_at, finished_at, error)
                 VALUES ($1, $2, $3, $4, $5, $6, now() - make_interval(secs => $7), now(),
                         CASE WHEN $3 IN ('done', 'failed') THEN now() END, $8)
                 ON CONFLICT (projector) DO UPDATE SET
                     version = EXCLUDED.version, state = EXCLUDED.state,
                     position = EXCLUDED.position, head = EXCLUDED.head,
                     events_per_s = EXCLUDED.events_per_s,
                     started_at = EXCLUDED.started_at, updated_at = now(),
                     finished_at = EXCLUDED.finished_at, error = EXCLUDED.error",
                &[
                    &self.name,
                    &i32::try_from(self.version).unwrap_or(i32::MAX),
                    &state,
                    &to_i64(self.position),
                    &to_i64(self.head.max(self.position)),
                    &progress.events_per_s(),
                    &progress.elapsed.as_secs_f64(),
                    &error,
                ],
            )
            .await?;
        Ok(())
    }
}

/// Events per second (0 before any time has passed).
fn rate(events: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        events as f64 / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_say_what_happens_without_alarming_zeroes() {
        let mut at = RebuildProgress {
            name: "tasks",
            version: 3,
            phase: "building",
            position: 5_000,
            head: 10_000,
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(
            at.to_string(),
            "tasks v3 building: 5000/10000 events (50%) 2500 events/s ETA 2s"
        );
        // A log shorter than one batch goes straight to the swap: no
        // "0/147 events (0%) 0 events/s".
        at.phase = "swapping";
        at.position = 0;
        at.head = 147;
        assert_eq!(
            at.to_string(),
            "tasks v3 swapping: built up to 0 of 147 events; applying the rest and swapping the tables in"
        );
    }
}
