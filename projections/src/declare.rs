//! What every projector's `impl Projector` shares: its description (name,
//! version, tables, schema) declared in one line each by [`describe`],
//! picking and decoding the events of its streams ([`events_of`],
//! [`decode`]), which stops the projector at an event it cannot read, and
//! the whole `impl` of a projector that applies one event at a time
//! ([`each_event_projector`]).

use taskledger_events::codec::{self, DomainEvent};
use taskledger_events::RecordedEvent;

use crate::runtime::ProjectorError;

/// The event `recorded` holds, as `E`.
///
/// # Errors
/// [`ProjectorError::Event`] at its position when it is not an `E`.
fn decode<E: DomainEvent>(recorded: &RecordedEvent) -> Result<E, ProjectorError> {
    codec::decode(recorded).map_err(|error| ProjectorError::Event {
        global_position: recorded.global_position,
        reason: error.to_string(),
    })
}

/// The events of `events` on the streams `stream_of` recognizes (it gives
/// the stream's id, or `None` for a stream the projector does not read),
/// in order, each with that id and decoded as `E`.
///
/// # Errors
/// An item is [`ProjectorError::Event`] at the first recognized event that
/// is not an `E`.
pub(crate) fn events_of<'a, Id, E: DomainEvent>(
    events: &'a [RecordedEvent],
    stream_of: impl Fn(&str) -> Option<Id> + 'a,
) -> impl Iterator<Item = Result<(Id, &'a RecordedEvent, E), ProjectorError>> + 'a {
    events.iter().filter_map(move |recorded| {
        let id = stream_of(&recorded.stream_id)?;
        Some(decode(recorded).map(|event| (id, recorded, event)))
    })
}

/// `Ok` when the statement that applied `recorded` changed exactly one
/// row; otherwise the log and the read model disagree, and the projector
/// stops at that event rather than guess.
///
/// # Errors
/// [`ProjectorError::Event`] at `recorded`'s position, its reason `missing()`.
pub(crate) fn one_row_changed(
    changed: u64,
    recorded: &RecordedEvent,
    missing: impl FnOnce() -> String,
) -> Result<(), ProjectorError> {
    if changed == 1 {
        return Ok(());
    }
    Err(ProjectorError::Event {
        global_position: recorded.global_position,
        reason: missing(),
    })
}

/// The four describing methods of an `impl Projector` (`name`, `version`,
/// `tables`, `schema`), each from one line; a doc comment before `version`
/// says what each version changed.
macro_rules! describe {
    (
        name: $name:literal,
        $(#[$version_doc:meta])*
        version: $version:literal,
        tables: [$($table:literal),+ $(,)?],
        schema: $schema:expr $(,)?
    ) => {
        fn name(&self) -> &'static str {
            $name
        }

        $(#[$version_doc])*
        fn version(&self) -> u32 {
            $version
        }

        fn tables(&self) -> &'static [&'static str] {
            &[$($table),+]
        }

        fn schema(&self) -> &'static str {
            $schema
        }
    };
}

pub(crate) use describe;

/// The whole `impl Projector` of a projector that applies its events one at
/// a time: `Type: (stream_of, apply_one),` and then [`describe`]'s lines.
/// Its `apply` calls `apply_one(tx, id, recorded, &event)` for each event of
/// the streams `stream_of` recognizes ([`events_of`]), in order, decoded as
/// the event type `apply_one` takes.
macro_rules! each_event_projector {
    ($projector:ty: ($stream_of:expr, $apply_one:path), $($description:tt)*) => {
        #[::async_trait::async_trait]
        impl $crate::runtime::Projector for $projector {
            $crate::declare::describe! { $($description)* }

            async fn apply(
                &self,
                tx: &$crate::runtime::Batch<'_>,
                events: &[::taskledger_events::RecordedEvent],
            ) -> Result<(), $crate::runtime::ProjectorError> {
                for decoded in $crate::declare::events_of(events, $stream_of) {
                    let (id, recorded, event) = decoded?;
                    $apply_one(tx, id, recorded, &event).await?;
                }
                Ok(())
            }

            fn projects(&self, event: &::taskledger_events::RecordedEvent) -> bool {
                ($stream_of)(&event.stream_id).is_some()
            }
        }
    };
}

pub(crate) use each_event_projector;
