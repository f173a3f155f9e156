//! The event envelope: what a writer hands to the store ([`NewEvent`]) and what
//! every reader gets back ([`RecordedEvent`]).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::InvalidInput;

/// The longest event type the store accepts, in bytes.
pub const MAX_EVENT_TYPE_BYTES: usize = 200;

/// Who and what caused an event. Stored as a JSON object beside the data;
/// unknown keys written by a newer version are kept in `extra` (which must
/// not use the names of the typed fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Ties together everything done for one outside request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The message (command or event) that directly caused this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The API key id or worker id that acted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The command that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<Uuid>,
    /// The tracing id of the request, for log correlation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Keys this version does not know, kept as stored.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl Metadata {
    /// The keys of the typed fields.
    pub const KNOWN_KEYS: [&'static str; 5] = [
        "correlation_id",
        "causation_id",
        "actor",
        "command_id",
        "trace_id",
    ];

    /// Metadata that names only who acted (an API key id, a worker id,
    /// `cli`); everything else is unset.
    pub fn of_actor(actor: impl Into<String>) -> Self {
        Self {
            actor: Some(actor.into()),
            ..Self::default()
        }
    }
}

/// An event to append. The writer chooses `event_id`, so a retry of the same
/// append is recognised and answered with the original result.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Unique across the whole log.
    pub event_id: Uuid,
    /// The stable stored name, e.g. `TaskSubmitted`.
    pub event_type: String,
    /// The version of `data`'s shape for this type, from 1 to `i32::MAX`.
    pub schema_version: u32,
    /// The event's content; must be a JSON object.
    pub data: Value,
    /// Who and what caused it.
    pub metadata: Metadata,
}

impl NewEvent {
    /// An event with a fresh (time-ordered) id, schema version 1 and empty
    /// metadata.
    pub fn new(event_type: impl Into<String>, data: Value) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            data,
            metadata: Metadata::default(),
        }
    }

    /// Checks the parts the database would refuse or mangle.
    pub(crate) fn validate(&self) -> Result<(), InvalidInput> {
        if self.event_type.is_empty() || self.event_type.len() > MAX_EVENT_TYPE_BYTES {
            return Err(InvalidInput::EventType {
                event_id: self.event_id,
                length: self.event_type.len(),
            });
        }
        // Stored as a PostgreSQL integer.
        if self.schema_version == 0 || i32::try_from(self.schema_version).is_err() {
            return Err(InvalidInput::SchemaVersion {
                event_id: self.event_id,
            });
        }
        if let Some(key) = self
            .metadata
            .extra
            .keys()
            .find(|key| Metadata::KNOWN_KEYS.contains(&key.as_str()))
        {
            // It would be stored in place of (or beside) the typed field and
            // make the event unreadable.
            return Err(InvalidInput::MetadataKey {
                event_id: self.event_id,
                key: key.clone(),
            });
        }
        if !self.data.is_object() {
            return Err(InvalidInput::NotAnObject {
                event_id: self.event_id,
                field: "data",
                found: json_type_name(&self.data),
            });
        }
        Ok(())
    }
}

pub(crate) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An event as stored: the envelope every reader sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Its place in the one global order: 1, 2, 3, ... with no holes.
    /// Serialized as `position`, the name it has in every API, message and
    /// export (`global_position`, its name in exports before, is still read).
    #[serde(rename = "position", alias = "global_position")]
    pub global_position: u64,
    /// The id the writer chose.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream_id: String,
    /// Its place in the stream: 1, 2, 3, ... with no holes.
    pub version: u64,
    /// The stable stored name.
    pub event_type: String,
    /// The schema version of `data` (after upcasting, when read through an
    /// upcasting reader).
    pub schema_version: u32,
    /// The content.
    pub data: Value,
    /// Who and what caused it.
    pub metadata: Metadata,
    /// When the store recorded it, in microseconds: the database clock (or,
    /// for commits made in one round trip, the appender's clock corrected by
    /// its measured offset to the database clock), never earlier than the
    /// event before it in the global order.
    pub recorded_at: DateTime<Utc>,
    /// `sha256(previous event's hash || canonical bytes of this event)`; see
    /// [`crate::chain`]. Always the hash of the event *as stored*: recompute
    /// it from events read without upcasting.
    #[serde(with = "hex_bytes")]
    pub hash: [u8; 32],
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        bytes: &[u8; 32],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut bytes = [0_u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(serde::de::Error::custom)?;
        Ok(bytes)
    }
}

/// What the writer expects the stream's version to be before its append.
/// A stream's version is the version of its last event; 0 when it has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// Append whatever the version is.
    Any,
    /// The stream must not exist yet (version 0).
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream must be at exactly this version (0 is the same as NoStream).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` satisfies the expectation.
    pub fn accepts(self, actual: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == 0,
            Self::StreamExists => actual > 0,
            Self::Exact(expected) => actual == expected,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::StreamExists => f.write_str("an existing stream"),
            Self::Exact(version) => write!(f, "version {version}"),
        }
    }
}

/// The outcome of a successful append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// The stream appended to.
    pub stream_id: String,
    /// The version of the first event appended.
    pub first_version: u64,
    /// The stream's version after the append (its last event's version).
    pub stream_version: u64,
    /// The global position of the first event appended.
    pub first_position: u64,
    /// The global position of the last event appended.
    pub last_position: u64,
    /// True when these events were already stored by an earlier append with the
    /// same event ids at the same place, and nothing new was written.
    pub already_stored: bool,
}

/// The order in which to read a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Oldest first, from `from_version` up.
    Forward,
    /// Newest first, from `from_version` down.
    Backward,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expected_version_cases() {
        assert!(ExpectedVersion::Any.accepts(0));
        assert!(ExpectedVersion::Any.accepts(7));
        assert!(ExpectedVersion::NoStream.accepts(0));
        assert!(!ExpectedVersion::NoStream.accepts(1));
        assert!(!ExpectedVersion::StreamExists.accepts(0));
        assert!(ExpectedVersion::StreamExists.accepts(1));
        assert!(ExpectedVersion::Exact(3).accepts(3));
        assert!(!ExpectedVersion::Exact(3).accepts(2));
    }

    #[test]
    fn data_must_be_an_object() {
        let mut event = NewEvent::new("Thing", json!([1, 2]));
        assert!(matches!(
            event.validate(),
            Err(InvalidInput::NotAnObject {
                field: "data",
                found: "an array",
                ..
            })
        ));
        event.data = json!({"a": 1});
        assert!(event.validate().is_ok());
        event.event_type = String::new();
        assert!(matches!(
            event.validate(),
            Err(InvalidInput::EventType { length: 0, .. })
        ));
    }

    #[test]
    fn metadata_keeps_unknown_keys() {
        let stored = json!({"actor": "key-1", "tenant": "acme"});
        let metadata: Metadata = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(metadata.actor.as_deref(), Some("key-1"));
        assert_eq!(serde_json::to_value(&metadata).unwrap(), stored);
    }

    #[test]
    fn an_envelope_names_its_position_position_and_reads_the_old_name() {
        let event = RecordedEvent {
            global_position: 7,
            event_id: Uuid::nil(),
            stream_id: "s".into(),
            version: 1,
            event_type: "Thing".into(),
            schema_version: 1,
            data: json!({}),
            metadata: Metadata::default(),
            recorded_at: DateTime::<Utc>::UNIX_EPOCH,
            hash: [0; 32],
        };
        let mut json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["position"], 7);
        assert!(json.get("global_position").is_none());
        let position = json.as_object_mut().unwrap().remove("position").unwrap();
        json["global_position"] = position;
        assert_eq!(
            serde_json::from_value::<RecordedEvent>(json).unwrap(),
            event
        );
    }
}
