//! Command handling: load a stream, fold it, decide, append with the version
//! that was read; on a version conflict, reload and decide again (a bounded
//! number of times) before reporting the conflict.
//!
//! Aggregates are plain functions in the `events` crate; [`Aggregate`] is the
//! glue that lets one handler serve them all.

use std::fmt;

use taskledger_events::task::{self, TaskEvent};
use taskledger_events::{apikey, device, ledger};
use taskledger_events::{
    AppendError, AppendResult, Direction, EventStore, ExpectedVersion, InvalidInput, Metadata,
    NewEvent, RecordedEvent, Refusal, StoreError, StreamId,
};
use uuid::Uuid;

use crate::metrics::{self, CommandOutcome};

/// How many times a command is decided again after a version conflict
/// before the conflict is reported.
pub const CONFLICT_RETRIES: u32 = 3;

/// Events read per query while loading a stream.
const LOAD_PAGE: usize = 1_000;

/// An aggregate: its state, commands, events, and the pure functions
/// between them.
pub trait Aggregate {
    /// The folded state; `Default` is "no events yet".
    type State: Default + Send;
    /// What callers ask for.
    type Command: Clone + Send;
    /// What happened.
    type Event: Send;
    /// Why a command is refused.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The aggregate's name in metrics (`tasks`, `api_keys`, …).
    const NAME: &'static str;

    /// The command's name in metrics: its enum variant (`Submit`, `Start`,
    /// …), never anything from its fields, so the label set stays small.
    fn command_name(command: &Self::Command) -> &'static str;

    /// Folds one event into the state.
    fn apply(state: Self::State, event: &Self::Event) -> Self::State;
    /// Decides what a command makes happen. Pure.
    ///
    /// # Errors
    /// The refusal, with a message for the caller.
    fn decide(state: &Self::State, command: Self::Command)
        -> Result<Vec<Self::Event>, Self::Error>;
    /// Reads a stored event.
    ///
    /// # Errors
    /// When the stored event is not one of this aggregate's.
    fn decode(recorded: &RecordedEvent) -> Result<Self::Event, String>;
    /// Prepares an event for the store.
    fn encode(event: &Self::Event, event_id: Uuid, metadata: Metadata) -> NewEvent;
}

/// The task aggregate of `taskledger_events::task`.
#[derive(Debug, Clone, Copy)]
pub struct Tasks;

impl Aggregate for Tasks {
    type State = task::TaskState;
    type Command = task::TaskCommand;
    type Event = TaskEvent;
    type Error = Refusal;

    const NAME: &'static str = "tasks";

    fn command_name(command: &task::TaskCommand) -> &'static str {
        use task::TaskCommand;
        match command {
            TaskCommand::Submit(_) => "Submit",
            TaskCommand::Cancel(_) => "Cancel",
            TaskCommand::Start(_) => "Start",
            TaskCommand::RecordProgress(_) => "RecordProgress",
            TaskCommand::Complete(_) => "Complete",
            TaskCommand::Fail(_) => "Fail",
            TaskCommand::TimeOut(_) => "TimeOut",
            TaskCommand::Retry(_) => "Retry",
        }
    }

    fn apply(state: Self::State, event: &TaskEvent) -> Self::State {
        task::apply(state, event)
    }

    fn decide(state: &Self::State, command: Self::Command) -> Result<Vec<TaskEvent>, Refusal> {
        task::decide(state, command)
    }

    fn decode(recorded: &RecordedEvent) -> Result<TaskEvent, String> {
        TaskEvent::from_recorded(recorded).map_err(|error| error.to_string())
    }

    fn encode(event: &TaskEvent, event_id: Uuid, metadata: Metadata) -> NewEvent {
        event.to_new_event(event_id, metadata)
    }
}

/// The API key aggregate of `taskledger_events::apikey`.
#[derive(Debug, Clone, Copy)]
pub struct ApiKeys;

impl Aggregate for ApiKeys {
    type State = apikey::ApiKeyState;
    type Command = apikey::ApiKeyCommand;
    type Event = apikey::ApiKeyEvent;
    type Error = Refusal;

    const NAME: &'static str = "api_keys";

    fn command_name(command: &Self::Command) -> &'static str {
        match command {
            apikey::ApiKeyCommand::Create(_) => "Create",
            apikey::ApiKeyCommand::Revoke(_) => "Revoke",
        }
    }

    fn apply(state: Self::State, event: &Self::Event) -> Self::State {
        apikey::apply(state, event)
    }

    fn decide(
        state: &Self::State,
        command: Self::Command,
    ) -> Result<Vec<Self::Event>, Self::Error> {
        apikey::decide(state, command)
    }

    fn decode(recorded: &RecordedEvent) -> Result<Self::Event, String> {
        apikey::ApiKeyEvent::from_recorded(recorded).map_err(|error| error.to_string())
    }

    fn encode(event: &Self::Event, event_id: Uuid, metadata: Metadata) -> NewEvent {
        event.to_new_event(event_id, metadata)
    }
}

/// The device aggregate of `taskledger_events::device`. Its commands carry
/// the device's IMEI (the state does not know it).
#[derive(Debug, Clone, Copy)]
pub struct Devices;

impl Aggregate for Devices {
    type State = device::DeviceState;
    type Command = (device::Imei, device::DeviceCommand);
    type Event = device::DeviceEvent;
    type Error = Refusal;

    const NAME: &'static str = "devices";

    fn command_name((_, command): &Self::Command) -> &'static str {
        match command {
            device::DeviceCommand::Queue(_) => "Queue",
            device::DeviceCommand::AttemptSend(_) => "AttemptSend",
            device::DeviceCommand::RecordSendResult(_) => "RecordSendResult",
            device::DeviceCommand::Receive(_) => "Receive",
        }
    }

    fn apply(state: Self::State, event: &Self::Event) -> Self::State {
        device::apply(state, event)
    }

    fn decide(
        state: &Self::State,
        (imei, command): Self::Command,
    ) -> Result<Vec<Self::Event>, Self::Error> {
        device::decide(&imei, state, command)
    }

    fn decode(recorded: &RecordedEvent) -> Result<Self::Event, String> {
        device::DeviceEvent::from_recorded(recorded).map_err(|error| error.to_string())
    }

    fn encode(event: &Self::Event, event_id: Uuid, metadata: Metadata) -> NewEvent {
        event.to_new_event(event_id, metadata)
    }
}

/// The ledger aggregate of `taskledger_events::ledger`.
#[derive(Debug, Clone, Copy)]
pub struct Ledgers;

impl Aggregate for Ledgers {
    type State = ledger::LedgerState;
    type Command = ledger::ConfirmLedgerEntries;
    type Event = ledger::LedgerEvent;
    type Error = Refusal;

    const NAME: &'static str = "ledgers";

    /// The ledger has one command (a struct, not an enum): `Confirm`.
    fn command_name(_: &Self::Command) -> &'static str {
        "Confirm"
    }

    fn apply(state: Self::State, event: &Self::Event) -> Self::State {
        ledger::apply(state, event)
    }

    fn decide(
        state: &Self::State,
        command: Self::Command,
    ) -> Result<Vec<Self::Event>, Self::Error> {
        ledger::decide(state, command)
    }

    fn decode(recorded: &RecordedEvent) -> Result<Self::Event, String> {
        ledger::LedgerEvent::from_recorded(recorded).map_err(|error| error.to_string())
    }

    fn encode(event: &Self::Event, event_id: Uuid, metadata: Metadata) -> NewEvent {
        event.to_new_event(event_id, metadata)
    }
}

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

/// Why a command did not happen.
#[derive(Debug)]
pub enum CommandError<E> {
    /// The aggregate refused it.
    Rejected(E),
    /// Other writers kept changing the stream; tried this many times.
    Conflict {
        /// The stream.
        stream_id: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The store refused the events as malformed (a bug in an aggregate).
    Invalid(InvalidInput),
    /// An event id of this command is stored elsewhere (a reused command id).
    DuplicateEvent(String),
    /// A stored event could not be read as this aggregate's.
    Corrupt(String),
    /// The store failed.
    Store(StoreError),
}

impl<E: fmt::Display> fmt::Display for CommandError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(error) => write!(f, "{error}"),
            Self::Conflict { stream_id, attempts } => write!(
                f,
                "{stream_id} kept changing while the command was decided ({attempts} attempts); try again"
            ),
            Self::Invalid(error) => write!(f, "the command produced an invalid event: {error}"),
            Self::DuplicateEvent(message) | Self::Corrupt(message) => f.write_str(message),
            Self::Store(error) => write!(f, "{error}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CommandError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Rejected(error) => Some(error),
            Self::Store(error) => Some(error),
            Self::Invalid(error) => Some(error),
            _ => None,
        }
    }
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
}

/// Loads `stream_id` and folds it.
///
/// # Errors
/// [`CommandError::Corrupt`] for an event that is not the aggregate's;
/// [`CommandError::Store`] when the store fails.
pub async fn load<A: Aggregate>(
    store: &impl EventStore,
    stream_id: &StreamId,
) -> Result<Loaded<A>, CommandError<A::Error>> {
    let mut loaded = Loaded::<A> {
        state: A::State::default(),
        version: 0,
        position: 0,
    };
    loop {
        let page = store
            .read_stream(stream_id, loaded.version + 1, Direction::Forward, LOAD_PAGE)
            .await
            .map_err(CommandError::Store)?;
        let full = page.len() == LOAD_PAGE;
        for recorded in &page {
            let event = A::decode(recorded).map_err(|reason| {
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

/// Runs `command` against `stream_id`: load, decide, append at the version
/// read; on a conflict, again, up to [`CONFLICT_RETRIES`] more times.
///
/// Event ids are derived from `command_id` and the event's index, so a
/// retried command whose first append did commit (an unknown outcome after a
/// lost connection) is recognised by the store instead of applied twice.
///
/// Every command is counted in [`crate::metrics`] by aggregate, command
/// variant and outcome, and every append's latency is recorded there.
///
/// # Errors
/// See [`CommandError`].
pub async fn execute<A: Aggregate>(
    store: &impl EventStore,
    stream_id: &StreamId,
    command: A::Command,
    command_id: Uuid,
    metadata: Metadata,
) -> Result<Executed<A>, CommandError<A::Error>> {
    let command_name = A::command_name(&command);
    let executed = decide_and_append::<A>(store, stream_id, command, command_id, metadata).await;
    let outcome = match &executed {
        Ok(_) => CommandOutcome::Ok,
        Err(CommandError::Rejected(_)) => CommandOutcome::Refused,
        Err(CommandError::Conflict { .. }) => CommandOutcome::Conflict,
        Err(_) => CommandOutcome::Error,
    };
    metrics::record_command(A::NAME, command_name, outcome);
    executed
}

/// [`execute`] without the counting.
async fn decide_and_append<A: Aggregate>(
    store: &impl EventStore,
    stream_id: &StreamId,
    command: A::Command,
    command_id: Uuid,
    metadata: Metadata,
) -> Result<Executed<A>, CommandError<A::Error>> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let Loaded {
            state,
            version,
            position,
        } = load::<A>(store, stream_id).await?;
        let events = A::decide(&state, command.clone()).map_err(CommandError::Rejected)?;
        if events.is_empty() {
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
            .map(|(index, event)| A::encode(event, event_id(command_id, index), metadata.clone()))
            .collect();
        match metrics::timed_append(store.append(
            stream_id,
            ExpectedVersion::Exact(version),
            new_events,
        ))
        .await
        {
            Ok(appended) => {
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
