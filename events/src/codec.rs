//! Turning an aggregate's events into envelopes and back, once for all
//! aggregates.
//!
//! An aggregate's events are one serde enum tagged internally with `type`
//! (`#[serde(tag = "type")]`, each variant renamed to its stored name). Stored,
//! `event_type` holds the name and `data` the variant's fields *without* the
//! tag (the envelope already says it); read, the envelope's type is put back
//! as the tag, so a `type` key in stored data never decides anything.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::envelope::json_type_name;
use crate::{Metadata, NewEvent, RecordedEvent};

/// An aggregate's event enum.
pub trait DomainEvent: Serialize + DeserializeOwned {
    /// The aggregate with its article, for messages (`a task`, `an api key`).
    const AGGREGATE: &'static str;
    /// Every stored type name of the enum.
    const TYPES: &'static [&'static str];
    /// The schema version written, and the only one read (older ones are
    /// upcast first).
    const CURRENT_SCHEMA_VERSION: u32;
    /// This event's stored type name (its serde tag).
    fn stored_type(&self) -> &'static str;
}

/// The event ready to append, with the id the caller chose.
///
/// # Panics
/// Never for events made of strings, numbers, times and string-keyed maps
/// (serializing those cannot fail); an event type that could fail to
/// serialize is a programming error.
pub fn encode<E: DomainEvent>(event: &E, event_id: Uuid, metadata: Metadata) -> NewEvent {
    let mut data = serde_json::to_value(event).expect("a domain event always serializes to JSON");
    if let Value::Object(fields) = &mut data {
        fields.remove("type");
    }
    NewEvent {
        event_id,
        event_type: event.stored_type().to_owned(),
        schema_version: E::CURRENT_SCHEMA_VERSION,
        data,
        metadata,
    }
}

/// Reads a stored event of `E`. Fields added by a later version are ignored;
/// a missing optional field reads as `None`.
///
/// # Errors
/// [`DecodeError`]: another aggregate's type, another schema version, data
/// that is not an object, or fields that do not fit.
pub fn decode<E: DomainEvent>(recorded: &RecordedEvent) -> Result<E, DecodeError> {
    let position = recorded.global_position;
    let event_type = || recorded.event_type.clone();
    if !E::TYPES.contains(&recorded.event_type.as_str()) {
        return Err(DecodeError::UnknownType {
            global_position: position,
            event_type: event_type(),
            aggregate: E::AGGREGATE,
        });
    }
    if recorded.schema_version != E::CURRENT_SCHEMA_VERSION {
        return Err(DecodeError::UnsupportedSchemaVersion {
            global_position: position,
            event_type: event_type(),
            schema_version: recorded.schema_version,
        });
    }
    let Value::Object(fields) = &recorded.data else {
        return Err(DecodeError::NotAnObject {
            global_position: position,
            event_type: event_type(),
            found: json_type_name(&recorded.data),
        });
    };
    let mut tagged = fields.clone();
    tagged.insert("type".into(), Value::String(recorded.event_type.clone()));
    E::deserialize(Value::Object(tagged)).map_err(|source| DecodeError::Malformed {
        global_position: position,
        event_type: event_type(),
        source,
    })
}

/// Why a stored event could not be read as an aggregate's event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The event's type is not one of the aggregate's.
    #[error("event at global position {global_position} has type {event_type:?}, which is not {aggregate} event")]
    UnknownType {
        /// Where.
        global_position: u64,
        /// The stored type.
        event_type: String,
        /// The aggregate that was expected, with its article.
        aggregate: &'static str,
    },
    /// The event's schema version is not the one this code reads.
    #[error(
        "{event_type} at global position {global_position} has schema version {schema_version}; \
         only the current version can be read (upcast older versions on read)"
    )]
    UnsupportedSchemaVersion {
        /// Where.
        global_position: u64,
        /// The stored type.
        event_type: String,
        /// The stored schema version.
        schema_version: u32,
    },
    /// The event's data is not a JSON object.
    #[error("{event_type} at global position {global_position}: data must be a JSON object, not {found}")]
    NotAnObject {
        /// Where.
        global_position: u64,
        /// The stored type.
        event_type: String,
        /// The JSON type found instead.
        found: &'static str,
    },
    /// The event's data does not have the fields its type needs.
    #[error("{event_type} at global position {global_position} is malformed: {source}")]
    Malformed {
        /// Where.
        global_position: u64,
        /// The stored type.
        event_type: String,
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
}

/// Gives an aggregate's event enum its stored form, once for every
/// aggregate: `SCHEMA_VERSION`, `EVENT_TYPES`, `event_type()`,
/// `to_new_event`, `from_recorded` and the [`DomainEvent`] impl, from one
/// list of its variants and their stored names.
///
/// The names are the enum's explicit serde renames, written again here
/// because a `const` list cannot be read out of serde (and `strum` would
/// need the same names a second time as well); every aggregate's tests
/// check the two agree.
macro_rules! stored_events {
    (
        $event:ident: $aggregate:literal, schema version $version:literal,
        { $($variant:ident => $name:literal),+ $(,)? }
    ) => {
        impl $event {
            /// The schema version every event of this enum is written with,
            /// and the only one [`Self::from_recorded`] reads (older ones
            /// must be upcast first).
            pub const SCHEMA_VERSION: u32 = $version;

            /// Every stored type name, e.g. for a projector's filter.
            pub const EVENT_TYPES: [&'static str; [$($name),+].len()] = [$($name),+];

            /// The stored name of this event, equal to the `type` tag of
            /// its serde form.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $name,)+
                }
            }

            /// The event ready to append: its
            /// [`event_type`](Self::event_type),
            /// [`SCHEMA_VERSION`](Self::SCHEMA_VERSION), and as `data` the
            /// event's own fields as a JSON object *without* a `type` field
            /// (the envelope already says it). The caller chooses
            /// `event_id`, so a retried append of the same decision is
            /// recognised by the store.
            pub fn to_new_event(
                &self,
                event_id: ::uuid::Uuid,
                metadata: $crate::Metadata,
            ) -> $crate::NewEvent {
                $crate::codec::encode(self, event_id, metadata)
            }

            /// Reads a stored event of this enum from its `event_type` and
            /// `data` (a `type` field in `data`, if any, is ignored; the
            /// envelope's type decides). Fields added by a later version
            /// are ignored; a missing optional field reads as `None`.
            ///
            /// # Errors
            /// - [`DecodeError::UnknownType`]($crate::codec::DecodeError::UnknownType)
            ///   when `event_type` is not one of
            ///   [`EVENT_TYPES`](Self::EVENT_TYPES);
            /// - [`DecodeError::UnsupportedSchemaVersion`]($crate::codec::DecodeError::UnsupportedSchemaVersion)
            ///   when `schema_version` is not
            ///   [`SCHEMA_VERSION`](Self::SCHEMA_VERSION) (read it through
            ///   an upcasting reader);
            /// - [`DecodeError::NotAnObject`]($crate::codec::DecodeError::NotAnObject)
            ///   when `data` is not a JSON object;
            /// - [`DecodeError::Malformed`]($crate::codec::DecodeError::Malformed)
            ///   when a field is missing or has the wrong type.
            pub fn from_recorded(
                recorded: &$crate::RecordedEvent,
            ) -> Result<Self, $crate::codec::DecodeError> {
                $crate::codec::decode(recorded)
            }
        }

        impl $crate::codec::DomainEvent for $event {
            const AGGREGATE: &'static str = $aggregate;
            const TYPES: &'static [&'static str] = &Self::EVENT_TYPES;
            const CURRENT_SCHEMA_VERSION: u32 = Self::SCHEMA_VERSION;

            fn stored_type(&self) -> &'static str {
                self.event_type()
            }
        }
    };
}
pub(crate) use stored_events;
