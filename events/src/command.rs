//! Command handling, once for every [`Aggregate`]: load a stream, fold it,
//! decide, append with the version that was read; on a version conflict,
//! reload and decide again (a bounded number of times) before reporting the
//! conflict.
//!
//! Metrics are the caller's: [`execute_observed`] reports every append's
//! latency to an [`Observer`], and a caller counts outcomes from the
//! [`CommandError`] it gets back.

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::codec;
use crate::snapshot::{SnapshotPolicy, Snapshots};
use crate::{
    AppendError, AppendResult, Direction, EventStore, ExpectedVersion, InvalidInput, Metadata,
    Refusal, StoreError, StreamId,
};

/// How many times a command is decided again after a version conflict
/// before the conflict is reported.
pub const CONFLICT_RETRIES: u32 = 3;

/// Events read per query while loading a stream.
const LOAD_PAGE: usize = 1_000;

/// What a command did.
#[derive(Debug)]
pub struct Executed<A: Aggregate> {
    /// The events it appended (none when the command changed nothing).
    pub events: Vec<A::Event>,
    /// The state after them.
    pub state: A::State,
    /// The stream's version after the command (read-your-writes waits for
    /// it).
    pub stream_version: u64,
    /// The global position of the stream's last event after the command (a
    /// projection whose checkpoint reached it shows the command's effect).
    pub position: u64,
    /// The append's result, when something was appended.
    pub appended: Option<AppendResult>,
}

/// Why a command did not happen. A refusal ([`CommandError::Rejected`]) is
/// never confused with a failed write.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The aggregate refused it.
    #[error("{0}")]
    Rejected(#[source] Refusal),
    /// Other writers kept changing the stream; tried this many times.
    #[error(
        "{stream_id} kept changing while the command was decided ({attempts} attempts); try again"
    )]
    Conflict {
        /// The stream.
        stream_id: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The store refused the events as malformed (a bug in an aggregate).
    #[error("the command produced an invalid event: {0}")]
    Invalid(#[source] InvalidInput),
    /// An event id of this command is stored elsewhere (a reused command id).
    #[error("{0}")]
    DuplicateEvent(String),
    /// A stored event could not be read as this aggregate's.
    #[error("{0}")]
    Corrupt(String),
    /// The store failed.
    #[error("{0}")]
    Store(#[source] StoreError),
}

/// A stream, folded.
#[derive(Debug)]
pub struct Loaded<A: Aggregate> {
    /// The state after every event of the stream.
    pub state: A::State,
    /// The stream's version: its last event's (0 for an empty stream).
    pub version: u64,
    /// The global position of the stream's last event (0 for an empty
    /// stream); a projection whose checkpoint reached it shows the state.
    pub position: u64,
    /// The version of the snapshot the fold started from (`None`: from the
    /// start of the stream); the events after it were read and folded.
    pub snapshot_version: Option<u64>,
}

impl<A: Aggregate> Loaded<A> {
    /// A stream with no events: what [`execute_known`] may be given for a
    /// stream the caller believes new (a fresh id), so the command needs
    /// no read. If it is not new after all, the append at version 0
    /// conflicts (or finds the same events already stored), and the stream
    /// is then loaded and the command decided again.
    pub fn empty() -> Self {
        Self {
            state: A::State::default(),
            version: 0,
            position: 0,
            snapshot_version: None,
        }
    }

    /// How many events this load read from the log and folded.
    pub fn folded(&self) -> u64 {
        self.version - self.snapshot_version.unwrap_or(0)
    }

    /// The stream as `executed` left it, for [`execute_known`].
    pub fn after(executed: Executed<A>) -> Self {
        Self {
            state: executed.state,
            version: executed.stream_version,
            position: executed.position,
            snapshot_version: None,
        }
    }
}

/// What [`execute_observed`] reports as it goes, for metrics its caller
/// keeps (this crate records none).
pub trait Observer: Sync {
    /// One append to the store finished, whatever its outcome, `elapsed`
    /// after it began.
    fn append_finished(&self, elapsed: Duration);
}

/// Observes nothing.
impl Observer for () {
    fn append_finished(&self, _: Duration) {}
}

/// Loads `stream_id` and folds it: from the stream's snapshot, when the
/// aggregate keeps them ([`Aggregate::SNAPSHOTS`]) and the store has one
/// of the current state schema, then the events after it. A snapshot that
/// cannot be read is ignored with a warning (the stream is folded from its
/// start). When the load folded at least the policy's `every` events, a
/// snapshot of the state it reached is written in a spawned task
/// ([`crate::snapshot::Snapshots::spawn_write`]), so the command never
/// waits for it nor fails with it.
///
/// # Errors
/// [`CommandError::Corrupt`] for an event that is not the aggregate's;
/// [`CommandError::Store`] when the store fails.
#[tracing::instrument(
    name = "load",
    level = "debug",
    skip_all,
    fields(stream = %stream_id, aggregate = A::NAME, version, position, snapshot),
    err(level = "debug")
)]
pub async fn load<A: Aggregate>(
    store: &impl EventStore,
    stream_id: &StreamId,
) -> Result<Loaded<A>, CommandError> {
    let snapshotting = A::SNAPSHOTS.zip(store.snapshots());
    let start = match &snapshotting {
        Some((policy, snapshots)) => from_snapshot::<A>(policy, snapshots, stream_id).await,
        None => Loaded::empty(),
    };
    let loaded = fold_from(store, stream_id, start).await?;
    let span = own_span("load");
    span.record("version", loaded.version);
    span.record("position", loaded.position);
    if let Some(snapshot_version) = loaded.snapshot_version {
        span.record("snapshot", snapshot_version);
    }
    if let Some((policy, snapshots)) = snapshotting {
        if loaded.version > 0 && loaded.folded() >= policy.every {
            if let Some(snapshot) = crate::snapshot::of(&policy, stream_id, &loaded) {
                snapshots.spawn_write(snapshot);
            }
        }
    }
    Ok(loaded)
}

/// Loads `stream_id` folding every event from its start, whatever
/// snapshot it has (what [`crate::snapshot::rebuild`] snapshots, and what
/// a test compares a snapshot's load with).
///
/// # Errors
/// As [`load`].
pub async fn load_from_start<A: Aggregate>(
    store: &impl EventStore,
    stream_id: &StreamId,
) -> Result<Loaded<A>, CommandError> {
    fold_from(store, stream_id, Loaded::empty()).await
}

/// The stream's snapshot under `policy`'s schema as a starting point, or
/// the empty state when it has none or it cannot be read (a warning: the
/// snapshot is a cache, and the log is still there).
async fn from_snapshot<A: Aggregate>(
    policy: &SnapshotPolicy<A::State>,
    snapshots: &Snapshots,
    stream_id: &StreamId,
) -> Loaded<A> {
    let stored = match snapshots
        .read(stream_id, A::NAME, policy.state_version)
        .await
    {
        Ok(Some(stored)) => stored,
        Ok(None) => return Loaded::empty(),
        Err(error) => {
            tracing::warn!(stream = %stream_id, error = %error, "cannot read the snapshot; folding the whole stream");
            return Loaded::empty();
        }
    };
    match policy.decode(&stored.state) {
        Ok(state) => Loaded {
            state,
            version: stored.stream_version,
            position: stored.global_position,
            snapshot_version: Some(stored.stream_version),
        },
        Err(reason) => {
            tracing::warn!(
                stream = %stream_id,
                version = stored.stream_version,
                %reason,
                "the snapshot cannot be read; folding the whole stream"
            );
            Loaded::empty()
        }
    }
}

/// `loaded` with every event of the stream after its version folded in.
async fn fold_from<A: Aggregate>(
    store: &impl EventStore,
    stream_id: &StreamId,
    mut loaded: Loaded<A>,
) -> Result<Loaded<A>, CommandError> {
    loop {
        let page = store
            .read_stream(stream_id, loaded.version + 1, Direction::Forward, LOAD_PAGE)
            .await
            .map_err(CommandError::Store)?;
        let full = page.len() == LOAD_PAGE;
        for recorded in &page {
            let event = codec::decode::<A::Event>(recorded).map_err(|reason| {
                CommandError::Corrupt(format!(
                    "{stream_id} version {} cannot be read: {reason}",
                    recorded.version
                ))
            })?;
            loaded.state = A::apply(loaded.state, &event);
            loaded.version = recorded.version;
            loaded.position = recorded.global_position;
        }
        if !full {
            return Ok(loaded);
        }
    }
}

/// [`execute_observed`] with no [`Observer`].
///
/// # Errors
/// See [`CommandError`].
pub async fn execute<A: Aggregate>(
    store: &impl EventStore,
    stream_id: &StreamId,
    command: A::Command,
    command_id: Uuid,
    metadata: Metadata,
) -> Result<Executed<A>, CommandError> {
    execute_observed::<A>(store, stream_id, command, command_id, metadata, &()).await
}

/// Runs `command` against `stream_id`: load, decide, append at the version
/// read; on a conflict, again, up to [`CONFLICT_RETRIES`] more times. Every
/// append's latency goes to `observer`.
///
/// Event ids are derived from `command_id` and the event's index
/// ([`event_id`]), so a retried command whose first append did commit (an
/// unknown outcome after a lost connection) is recognised by the store
/// instead of applied twice. `metadata` gets `command_id` as its command id.
///
/// Its span carries the stream, the aggregate, the command, the version
/// the last attempt expected and the resulting position; its errors are
/// logged at DEBUG (a refusal is an answer, and whoever handles a failure
/// logs it once).
///
/// # Errors
/// See [`CommandError`].
pub async fn execute_observed<A: Aggregate>(
    store: &impl EventStore,
    stream_id: &StreamId,
    command: A::Command,
    command_id: Uuid,
    metadata: Metadata,
    observer: &impl Observer,
) -> Result<Executed<A>, CommandError> {
    execute_known::<A>(
        store, stream_id, None, command, command_id, metadata, observer,
    )
    .await
}

/// [`execute_observed`] starting from `known`, the stream as its caller
/// last left it (an [`Executed`]'s state and version, see
/// [`Loaded::after`]), instead of loading it: the command is decided on
/// `known` and appended at its version, so a stream that changed since
/// only makes the append conflict, and then it is loaded and decided again
/// as [`execute_observed`] does. For a writer that keeps appending to one
/// stream (the webhook deliverer records every attempt): one append per
/// command instead of a load and an append. A refusal is never decided
/// on `known` alone: the stream is loaded and the command decided again.
///
/// # Errors
/// See [`CommandError`].
#[tracing::instrument(
    name = "command",
    level = "debug",
    skip_all,
    fields(
        stream = %stream_id,
        aggregate = A::NAME,
        command = A::command_name(&command),
        %command_id,
        expected_version,
        position,
    ),
    err(level = "debug")
)]
pub async fn execute_known<A: Aggregate>(
    store: &impl EventStore,
    stream_id: &StreamId,
    mut known: Option<Loaded<A>>,
    command: A::Command,
    command_id: Uuid,
    metadata: Metadata,
    observer: &impl Observer,
) -> Result<Executed<A>, CommandError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let Loaded {
            state,
            version,
            position,
            ..
        } = match known.take() {
            Some(known) => {
                // A refusal is only an answer on the stream as it is: one
                // decided on `known` is decided again on a fresh load.
                if A::decide(&known.state, command.clone()).is_err() {
                    attempts -= 1;
                    continue;
                }
                known
            }
            None => load::<A>(store, stream_id).await?,
        };
        own_span("command").record("expected_version", version);
        let events = A::decide(&state, command.clone()).map_err(CommandError::Rejected)?;
        if events.is_empty() {
            own_span("command").record("position", position);
            return Ok(Executed {
                events,
                state,
                stream_version: version,
                position,
                appended: None,
            });
        }
        let metadata = Metadata {
            command_id: Some(command_id),
            ..metadata.clone()
        };
        let new_events = events
            .iter()
            .enumerate()
            .map(|(index, event)| {
                codec::encode(event, event_id(command_id, index), metadata.clone())
            })
            .collect();
        let began = Instant::now();
        let appended = store
            .append(stream_id, ExpectedVersion::Exact(version), new_events)
            .await;
        observer.append_finished(began.elapsed());
        match appended {
            Ok(appended) => {
                own_span("command").record("position", appended.last_position);
                let state = events.iter().fold(state, A::apply);
                return Ok(Executed {
                    events,
                    state,
                    stream_version: appended.stream_version,
                    position: appended.last_position,
                    appended: Some(appended),
                });
            }
            Err(AppendError::WrongExpectedVersion { .. }) if attempts <= CONFLICT_RETRIES => {
                tracing::debug!(stream = %stream_id, attempts, "version conflict; deciding again");
            }
            Err(AppendError::WrongExpectedVersion { .. }) => {
                return Err(CommandError::Conflict {
                    stream_id: stream_id.to_string(),
                    attempts,
                })
            }
            Err(AppendError::DuplicateEventId { .. }) => {
                return Err(CommandError::DuplicateEvent(format!(
                    "command {command_id} was already used for a different change"
                )))
            }
            Err(AppendError::Invalid(error)) => return Err(CommandError::Invalid(error)),
            Err(AppendError::Store(error)) => return Err(CommandError::Store(error)),
        }
    }
}

/// The id of the `index`th event of a command: a name-based (v5) UUID, so
/// the same command always produces the same ids.
pub fn event_id(command_id: Uuid, index: usize) -> Uuid {
    Uuid::new_v5(&command_id, format!("event-{index}").as_bytes())
}

/// The current span if it is the one named `name` (the instrumented
/// function's own), else a disabled one. An instrumented function whose
/// span is off at the subscriber's level finds its caller's span as the
/// current one; recording into that would write this function's fields
/// into the caller's (a runner's job span showing `position` once per
/// command it ran).
pub(crate) fn own_span(name: &str) -> tracing::Span {
    let current = tracing::Span::current();
    if current.metadata().map(|metadata| metadata.name()) == Some(name) {
        current
    } else {
        tracing::Span::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_stable_per_command_and_index() {
        let command = Uuid::new_v4();
        assert_eq!(event_id(command, 0), event_id(command, 0));
        assert_ne!(event_id(command, 0), event_id(command, 1));
        assert_ne!(event_id(command, 0), event_id(Uuid::new_v4(), 0));
    }
}

#[cfg(test)]
mod own_span_tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::own_span;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tracing::instrument(name = "load", level = "debug", fields(position))]
    fn inner() {
        own_span("load").record("position", 7_u64);
        tracing::info!("inside");
    }

    /// A disabled span's field never lands in the enabled caller's span,
    /// though both declare it; an enabled one's does.
    #[test]
    fn a_disabled_spans_record_does_not_reach_its_callers_span() {
        for (level, shows) in [(tracing::Level::INFO, false), (tracing::Level::DEBUG, true)] {
            let captured = Captured::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(level)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                let outer = tracing::info_span!("runner_job", position = 1_u64);
                outer.in_scope(inner);
            });
            let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
            let line = text.lines().find(|line| line.contains("inside")).unwrap();
            assert!(line.contains("runner_job{position=1}"), "{line}");
            assert_eq!(line.contains("position=7"), shows, "at {level}: {line}");
            assert!(!line.contains("position=1 position=7"), "{line}");
        }
    }
}
