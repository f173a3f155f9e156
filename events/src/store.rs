//! The [`EventStore`] trait: what every part of taskledger may do with the log.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::Stream;
use tokio::sync::mpsc;

use crate::envelope::{AppendResult, Direction, ExpectedVersion, NewEvent, RecordedEvent};
use crate::error::{AppendError, StoreError};
use crate::postgres::snapshots::Snapshots;
use crate::stream_id::StreamId;

/// An append-only log of streams with one gapless global order.
///
/// Guarantees every implementation keeps:
/// - an append writes all its events or none, at consecutive stream versions
///   and consecutive global positions;
/// - the global order has no holes, and a reader that has seen position `n`
///   will never later find an event at a position `<= n` that it did not see;
/// - appending the same event ids again at the same place returns the
///   original [`AppendResult`] (with `already_stored` set) and writes nothing.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends `events` to `stream_id` if the stream is at `expected` version.
    ///
    /// # Errors
    /// [`AppendError::Invalid`] for an empty batch or malformed event,
    /// [`AppendError::WrongExpectedVersion`] (with the actual version),
    /// [`AppendError::DuplicateEventId`] for an event id stored elsewhere,
    /// [`AppendError::Store`] when the database fails.
    async fn append(
        &self,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, AppendError>;

    /// Up to `limit` events of one stream, starting at `from_version`
    /// (inclusive) in `direction`. `Backward` from `u64::MAX` reads the newest
    /// first. An unknown stream reads as empty.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn read_stream(
        &self,
        stream_id: &StreamId,
        from_version: u64,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `limit` events of the global order with positions after
    /// `after_position` (0 reads from the start), in order. A read stops
    /// before an event that cannot be read; the read that starts at it fails.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the first event cannot be read;
    /// [`StoreError`] when the database fails.
    async fn read_all(
        &self,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Every event after `after_position`, in global order, forever: first the
    /// ones already stored (in batches), then new ones as they commit.
    fn subscribe_all(&self, after_position: u64) -> Subscription;

    /// The position of the newest event (0 for an empty log).
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn head_position(&self) -> Result<u64, StoreError>;

    /// The store's snapshot table, beside the log (a cache of it, see
    /// [`crate::snapshot`]); `None` when this store keeps no snapshots,
    /// so every load folds its stream from the start.
    fn snapshots(&self) -> Option<&Snapshots> {
        None
    }
}

/// A live feed of the global order. Yields events in order, each once.
/// Passing failures (a lost connection, a database restart) are retried
/// inside the feed with backoff and logged. An event that cannot be read or
/// upcast is yielded as an `Err` and ends the feed: it is never skipped.
/// Dropping the subscription stops the feed.
#[derive(Debug)]
pub struct Subscription {
    receiver: mpsc::Receiver<Result<RecordedEvent, StoreError>>,
}

impl Subscription {
    /// Wraps the receiving end of a feed task.
    pub fn new(receiver: mpsc::Receiver<Result<RecordedEvent, StoreError>>) -> Self {
        Self { receiver }
    }

    /// The next event, or the error that ended the feed; `None` once the
    /// feed has ended.
    pub async fn next(&mut self) -> Option<Result<RecordedEvent, StoreError>> {
        self.receiver.recv().await
    }

    /// The next item if one is ready now, without waiting (for gathering a
    /// batch after [`Subscription::next`]).
    pub fn try_next(&mut self) -> Option<Result<RecordedEvent, StoreError>> {
        self.receiver.try_recv().ok()
    }

    /// One batch: `first` (what [`Subscription::next`] gave) and the events
    /// ready after it, up to `max` in all, without waiting; the error that
    /// ended the feed instead, if `first` is it or one of those is.
    ///
    /// # Errors
    /// The feed's error (an event that cannot be read or upcast).
    pub fn batch_from(
        &mut self,
        first: Result<RecordedEvent, StoreError>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut batch = vec![first?];
        while batch.len() < max {
            match self.try_next() {
                Some(event) => batch.push(event?),
                None => break,
            }
        }
        Ok(batch)
    }
}

impl Stream for Subscription {
    type Item = Result<RecordedEvent, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}
