//! One read of the log's tail for all of a store's live feeds.
//!
//! A process follows the log with several feeds at once (the projectors,
//! the relay, the runner's intake, the graph follower, the webhook
//! deliverer, change streams). Each commit's notification wakes them all,
//! and each used to read the same new events itself: eight reads of the
//! same rows per commit. Here a feed that has caught up reads through
//! [`Tail`]: the first feed to need the new events reads them, under a lock,
//! and keeps them; the others, woken by the same commit, take them from
//! what was kept, without a round trip.
//!
//! What is kept is exactly what a read returned: rows of the global order
//! are immutable and become visible in position order (the append
//! protocol), so a kept event is the event a feed's own read would return
//! at that position. Only events as stored are kept (each feed upcasts what
//! it takes), at most one batch's worth (the newest).
//!
//! A feed takes kept events as the end of the log only when that is as
//! fresh as a read of its own would be:
//! - a read that *began after* the feed asked reached the head there (its
//!   batch was short), or
//! - the feed was woken by a notification, and what is kept reaches the
//!   newest position notified before it asked (every later commit notifies
//!   again and wakes it).
//!
//! Otherwise it reads, and its read serves the feeds that wait behind it.
//! A feed that is catching up (or far behind what is kept) reads on its own
//! as before: a rebuild from position 0 always reads the log as stored.
//!
//! What is kept is dropped when the listener reconnects (a new generation:
//! the database may have restarted or failed over, and what it holds now is
//! what counts) and when a read fails; and a read from behind the kept run
//! that does not touch it never replaces it (the newest events stay kept
//! for the feeds at the head).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::PgEventStore;
use crate::envelope::RecordedEvent;
use crate::error::StoreError;

/// The events after a position a feed is to deliver next, and whether more
/// may follow at once (a full batch, or one cut short before an unreadable
/// event): when `more` is false, the feed has caught up.
pub(super) struct Batch {
    pub(super) events: Vec<RecordedEvent>,
    pub(super) more: bool,
}

/// What the live feeds of one store share: the newest events read, and the
/// lock that makes one feed read while the others wait for its result.
#[derive(Debug, Default)]
pub(super) struct Tail {
    /// Held while a feed reads on behalf of all.
    reading: tokio::sync::Mutex<()>,
    /// Reads made under `reading`, numbered from 1. A feed notes the count
    /// before it asks: a read numbered above it began after it asked.
    reads: AtomicU64,
    kept: Mutex<Kept>,
}

/// A run of consecutive events: positions `after + 1 ..= after + len`.
#[derive(Debug, Default)]
struct Kept {
    /// The listener's generation the run was read under (the newest any
    /// reading feed had seen).
    generation: u64,
    after: u64,
    events: VecDeque<RecordedEvent>,
    /// The number of the newest read that reached the head of the log, and
    /// the position it reached.
    reached_head: Option<(u64, u64)>,
}

impl Kept {
    fn last(&self) -> u64 {
        self.after + self.events.len() as u64
    }

    /// Adds what a read begun under listener generation `began` returned,
    /// the listener being at generation `now` when it ended: only when no
    /// reconnect came in between (else what the read saw may be what the
    /// database held before a failover), and after forgetting a run kept
    /// under an older generation.
    fn add_read(
        &mut self,
        began: u64,
        now: u64,
        after: u64,
        events: &[RecordedEvent],
        capacity: usize,
    ) {
        self.advance_to(now);
        if began == now && now == self.generation {
            self.add(after, events, capacity);
        }
    }

    /// Moves to listener generation `generation`, forgetting the run when
    /// it is newer than the one the run was read under (a restart or
    /// failover may have changed what the log holds).
    fn advance_to(&mut self, generation: u64) {
        if generation > self.generation {
            self.forget();
            self.generation = generation;
        }
    }

    /// Keeps nothing (the generation stays).
    fn forget(&mut self) {
        self.after = 0;
        self.events.clear();
        self.reached_head = None;
    }

    /// Adds what a read after `after` returned, merged with what is kept
    /// when the two runs touch, and keeps only the newest `capacity`. A run
    /// wholly before what is kept, not touching it, is not kept: what is
    /// kept is newer, and it is what the feeds at the head will ask for.
    fn add(&mut self, after: u64, events: &[RecordedEvent], capacity: usize) {
        let end = after + events.len() as u64;
        if end < self.after && !self.events.is_empty() {
            return;
        }
        if after > self.last() || self.events.is_empty() {
            self.after = after;
            self.events = events.iter().cloned().collect();
            self.reached_head = None;
        } else {
            // Older events first, in front; then the newer ones behind.
            for event in events.iter().rev() {
                if event.global_position <= self.after {
                    self.events.push_front(event.clone());
                    self.after -= 1;
                }
            }
            let last = self.last();
            self.events.extend(
                events
                    .iter()
                    .filter(|event| event.global_position > last)
                    .cloned(),
            );
        }
        while self.events.len() > capacity.max(1) {
            self.events.pop_front();
            self.after += 1;
        }
    }
}

impl Tail {
    /// The events after `after` (at most `limit`) for a feed that has
    /// caught up before: from what is kept when that is fresh enough (see
    /// the module's comment), otherwise from one read, made by the first of
    /// the feeds asking and kept for the others. `notified` is the newest
    /// position the feed had heard of when it was woken by a notification
    /// (none when a poll or a reconnect woke it).
    pub(super) async fn read(
        &self,
        store: &PgEventStore,
        after: u64,
        limit: usize,
        notified: Option<u64>,
    ) -> Result<Batch, StoreError> {
        let listener = &store.inner.listener;
        self.forget_before(listener.generation());
        let asked = self.reads.load(Ordering::Acquire);
        if let Some(batch) = self.take(after, limit, asked, notified) {
            return Ok(batch);
        }
        let _reading = self.reading.lock().await;
        let generation = listener.generation();
        self.forget_before(generation);
        if let Some(batch) = self.take(after, limit, asked, notified) {
            return Ok(batch);
        }
        let number = self.reads.fetch_add(1, Ordering::AcqRel) + 1;
        let read = store.read_all_for_feed(after, limit).await;
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let (events, stopped_before_unreadable) = match read {
            Ok(read) => read,
            Err(error) => {
                // The database failed: what it holds when it is back is what
                // counts, so nothing read before is served again.
                kept.forget();
                return Err(error);
            }
        };
        let more = stopped_before_unreadable || events.len() >= limit;
        kept.add_read(generation, listener.generation(), after, &events, limit);
        let reached = after + events.len() as u64;
        if kept.generation == generation && !more && kept.last() == reached {
            kept.reached_head = Some((number, reached));
        }
        Ok(Batch { events, more })
    }

    /// Drops what is kept when it was read under an older listener
    /// generation than `generation` (a reconnect since: a restart or a
    /// failover may have changed what the log holds past a feed's position).
    fn forget_before(&self, generation: u64) {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .advance_to(generation);
    }

    /// The kept events after `after`, if what is kept holds the next one or
    /// says, freshly enough, that there is none yet.
    fn take(&self, after: u64, limit: usize, asked: u64, notified: Option<u64>) -> Option<Batch> {
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if after < kept.after || after > kept.last() {
            return None;
        }
        let skip = usize::try_from(after - kept.after).ok()?;
        let events: Vec<RecordedEvent> =
            kept.events.iter().skip(skip).take(limit).cloned().collect();
        if events.len() >= limit {
            return Some(Batch { events, more: true });
        }
        let last = kept.last();
        let fresh_read = matches!(kept.reached_head, Some((number, reached)) if number > asked && reached == last);
        let notified_kept = notified.is_some_and(|newest| last >= newest);
        if fresh_read || notified_kept {
            return Some(Batch {
                events,
                more: false,
            });
        }
        // Kept, but perhaps not the end: deliver these, and read after them.
        (!events.is_empty()).then_some(Batch { events, more: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Metadata;
    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;

    fn event(position: u64) -> RecordedEvent {
        RecordedEvent {
            global_position: position,
            event_id: Uuid::new_v4(),
            stream_id: format!("task-{position}"),
            version: 1,
            event_type: "T".to_owned(),
            schema_version: 1,
            data: json!({}),
            metadata: Metadata::default(),
            recorded_at: Utc::now(),
            hash: [0; 32],
        }
    }

    fn events(positions: std::ops::RangeInclusive<u64>) -> Vec<RecordedEvent> {
        positions.map(event).collect()
    }

    fn positions(kept: &Kept) -> Vec<u64> {
        kept.events.iter().map(|e| e.global_position).collect()
    }

    #[test]
    fn runs_that_touch_are_merged_newer_ones_replace_and_older_ones_are_dropped() {
        let mut kept = Kept::default();
        kept.add(4, &events(5..=7), 10);
        assert_eq!((kept.after, positions(&kept)), (4, vec![5, 6, 7]));
        kept.add(7, &events(8..=9), 10);
        assert_eq!(positions(&kept), vec![5, 6, 7, 8, 9]);
        kept.add(2, &events(3..=6), 10);
        assert_eq!(
            (kept.after, positions(&kept)),
            (2, vec![3, 4, 5, 6, 7, 8, 9])
        );
        kept.add(20, &events(21..=21), 10);
        assert_eq!((kept.after, positions(&kept)), (20, vec![21]));
        // A feed far behind reads 3..=6: the head's run stays kept.
        kept.add(2, &events(3..=6), 10);
        assert_eq!((kept.after, positions(&kept)), (20, vec![21]));
        // Touching from behind (ending at 20): merged in front.
        kept.add(18, &events(19..=20), 10);
        assert_eq!((kept.after, positions(&kept)), (18, vec![19, 20, 21]));
    }

    #[test]
    fn a_new_listener_generation_forgets_what_is_kept() {
        let tail = tail_with(0, 1..=3);
        tail.forget_before(0);
        assert!(tail.take(1, 100, 0, Some(3)).is_some(), "same generation");
        tail.forget_before(2);
        assert!(tail.take(1, 100, 0, Some(3)).is_none(), "forgotten");
        tail.kept.lock().unwrap().add(0, &events(1..=3), 100);
        // A feed that has not yet seen generation 2 does not forget again.
        tail.forget_before(1);
        assert!(tail.take(1, 100, 0, Some(3)).is_some());
    }

    #[test]
    fn a_read_across_a_reconnect_is_not_kept() {
        let mut kept = Kept::default();
        kept.add_read(1, 1, 0, &events(1..=3), 100);
        assert_eq!((kept.generation, positions(&kept)), (1, vec![1, 2, 3]));
        // Begun under 1, ended under 2: not kept, and the old run forgotten.
        kept.add_read(1, 2, 3, &events(4..=5), 100);
        assert_eq!((kept.generation, positions(&kept)), (2, vec![]));
        // A read begun and ended under 1 while 2 is kept: not kept either.
        kept.add_read(1, 1, 0, &events(1..=3), 100);
        assert_eq!(positions(&kept), Vec::<u64>::new());
        kept.add_read(2, 2, 0, &events(1..=2), 100);
        assert_eq!((kept.generation, positions(&kept)), (2, vec![1, 2]));
    }

    #[test]
    fn only_the_newest_capacity_is_kept() {
        let mut kept = Kept::default();
        kept.add(0, &events(1..=5), 3);
        assert_eq!((kept.after, positions(&kept)), (2, vec![3, 4, 5]));
        kept.add(5, &events(6..=6), 3);
        assert_eq!((kept.after, positions(&kept)), (3, vec![4, 5, 6]));
    }

    fn tail_with(after: u64, positions: std::ops::RangeInclusive<u64>) -> Tail {
        let tail = Tail::default();
        {
            let mut kept = tail.kept.lock().unwrap();
            kept.add(after, &events(positions), 100);
        }
        tail
    }

    #[test]
    fn kept_events_are_the_end_only_when_fresh() {
        let tail = tail_with(0, 1..=3);
        // Nothing says 3 is the end: deliver 2..=3, and read after them.
        let batch = tail.take(1, 100, 0, None).unwrap();
        assert_eq!(batch.events.len(), 2);
        assert!(batch.more);
        // At the end of what is kept, with nothing fresh: read.
        assert!(tail.take(3, 100, 0, None).is_none());
        // Woken by a notification of 3: caught up; of 4: not.
        assert!(!tail.take(3, 100, 0, Some(3)).unwrap().more);
        assert!(tail.take(3, 100, 0, Some(4)).is_none());
        // A read that reached the head at 3, numbered 5.
        tail.kept.lock().unwrap().reached_head = Some((5, 3));
        assert!(
            !tail.take(3, 100, 4, None).unwrap().more,
            "began after asking"
        );
        assert!(tail.take(3, 100, 5, None).is_none(), "began before asking");
        // Outside what is kept: read.
        assert!(tail.take(7, 100, 0, Some(3)).is_none());
        let behind = tail_with(5, 6..=8);
        assert!(behind.take(2, 100, 0, Some(8)).is_none());
    }

    #[test]
    fn a_full_batch_says_more() {
        let tail = tail_with(0, 1..=10);
        let batch = tail.take(0, 4, 0, Some(10)).unwrap();
        assert_eq!(
            batch
                .events
                .iter()
                .map(|e| e.global_position)
                .collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert!(batch.more);
    }
}
