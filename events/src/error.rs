//! The store's errors: a rejected append (the caller's input or expectation was
//! wrong; nothing was written) is a different type from a failed one (the
//! database could not be reached or answered with an error).

use uuid::Uuid;

use crate::envelope::ExpectedVersion;

/// Input the store refuses before it touches the database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    /// The stream id is empty, too long, or holds a control character.
    #[error("invalid stream id {stream_id:?}: {reason}")]
    StreamId {
        /// The offending id, escaped for display.
        stream_id: String,
        /// Why it was refused.
        reason: String,
    },
    /// An append with no events.
    #[error("an append needs at least one event; the batch was empty")]
    EmptyBatch,
    /// An event whose `data` or metadata is not a JSON object.
    #[error("event {event_id}: {field} must be a JSON object, not {found}")]
    NotAnObject {
        /// The event's id.
        event_id: Uuid,
        /// `data` or `metadata`.
        field: &'static str,
        /// The JSON type that was found instead.
        found: &'static str,
    },
    /// An event type that is empty or longer than 200 bytes.
    #[error("event {event_id}: event type must be 1 to 200 bytes, got {length}")]
    EventType {
        /// The event's id.
        event_id: Uuid,
        /// Its type's length in bytes.
        length: usize,
    },
    /// A schema version of zero or above `i32::MAX`.
    #[error("event {event_id}: schema version must be from 1 to 2147483647")]
    SchemaVersion {
        /// The event's id.
        event_id: Uuid,
    },
    /// A metadata `extra` key that shadows a typed metadata field.
    #[error("event {event_id}: metadata key {key:?} must be set through its typed field, not as an extra key")]
    MetadataKey {
        /// The event's id.
        event_id: Uuid,
        /// The key.
        key: String,
    },
    /// The same event id twice in one append.
    #[error("event id {event_id} appears twice in one append")]
    RepeatedEventId {
        /// The repeated id.
        event_id: Uuid,
    },
}

/// Why an append wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The input was refused before it reached the database.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The stream is not at the version the caller expected. Nothing was
    /// written; reload the stream (it is at `actual`) and decide again.
    #[error("stream {stream_id} is at version {actual}, but the append expected {expected}")]
    WrongExpectedVersion {
        /// The stream.
        stream_id: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was tried (0: no stream).
        actual: u64,
    },
    /// An event id that is already stored somewhere other than where this
    /// append would put it (an idempotent retry must repeat the original
    /// append exactly).
    #[error(
        "event id {event_id} is already stored as version {stored_version} of stream {stored_stream_id}; \
         it cannot be appended again elsewhere"
    )]
    DuplicateEventId {
        /// The id.
        event_id: Uuid,
        /// Where it is stored.
        stored_stream_id: String,
        /// Its version there.
        stored_version: u64,
    },
    /// The database failed; the append may or may not have committed if the
    /// failure hit the commit itself. Retrying with the same event ids is safe:
    /// a committed append is then returned as it was.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A failure of the store itself (not of the caller's input).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL answered with an error or the connection failed.
    #[error("database error while {context}: {source}")]
    Database {
        /// What the store was doing.
        context: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// No connection could be taken from the pool.
    #[error("no database connection available: {0}")]
    Pool(String),
    /// A stored row could not be turned into an event.
    #[error("stored event at global position {global_position} is malformed: {reason}")]
    Corrupt {
        /// Where.
        global_position: u64,
        /// What is wrong.
        reason: String,
    },
    /// An upcaster failed on a stored event.
    #[error("cannot upcast {event_type} v{schema_version} at global position {global_position}: {reason}")]
    Upcast {
        /// Where.
        global_position: u64,
        /// The event's type.
        event_type: String,
        /// The stored schema version.
        schema_version: u32,
        /// The upcaster's message.
        reason: String,
    },
    /// The store's appender task has stopped (the process is shutting down or
    /// the task failed); no append can be made through this handle.
    #[error("the appender has stopped")]
    AppenderStopped,
    /// The failure of a group commit, shared by every append in it.
    #[error(transparent)]
    Shared(std::sync::Arc<StoreError>),
    /// The store was used in a way it does not support (e.g. appending in a
    /// transaction that is not READ COMMITTED).
    #[error("{0}")]
    Misuse(String),
    /// A migration could not be applied.
    #[error("migration {version} ({name}): {reason}")]
    Migration {
        /// The migration's number.
        version: i64,
        /// Its name.
        name: &'static str,
        /// What went wrong.
        reason: String,
    },
}

impl StoreError {
    pub(crate) fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
        move |source| StoreError::Database { context, source }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        StoreError::Pool(error.to_string())
    }
}
