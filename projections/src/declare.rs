//! What every projector's `impl Projector` shares: its description (name,
//! version, tables, schema) declared in one line each by [`describe`], and
//! decoding an event of its streams ([`decode`]), which stops the projector
//! at that event when it cannot be read.

use taskledger_events::codec::{self, DomainEvent};
use taskledger_events::RecordedEvent;

use crate::runtime::ProjectorError;

/// The event `recorded` holds, as `E`.
///
/// # Errors
/// [`ProjectorError::Event`] at its position when it is not an `E`.
pub(crate) fn decode<E: DomainEvent>(recorded: &RecordedEvent) -> Result<E, ProjectorError> {
    codec::decode(recorded).map_err(|error| ProjectorError::Event {
        global_position: recorded.global_position,
        reason: error.to_string(),
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
