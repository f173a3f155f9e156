//! Checks every aggregate's event enum shares: its stored form round-trips
//! through serde and the envelope, and what is not one of its events is
//! refused. The stored names themselves stay each aggregate's own test.

use std::collections::BTreeSet;
use std::fmt::Debug;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::codec::{self, DecodeError, DomainEvent};
use crate::{Metadata, NewEvent, RecordedEvent, StreamId};

/// `new_event` as the store would hand it back: at global position 41, as
/// version 1 of `stream_id`, recorded at `recorded_at`.
pub fn recorded(
    new_event: NewEvent,
    stream_id: &StreamId,
    recorded_at: DateTime<Utc>,
) -> RecordedEvent {
    RecordedEvent {
        global_position: 41,
        event_id: new_event.event_id,
        stream_id: stream_id.to_string(),
        version: 1,
        event_type: new_event.event_type,
        schema_version: new_event.schema_version,
        data: new_event.data,
        metadata: new_event.metadata,
        recorded_at,
        hash: [0; 32],
    }
}

/// Asserts that `event` is stored as `event_type` with exactly `data`: the
/// stored shape, which every later version of the code must go on reading.
///
/// # Panics
/// When it is stored otherwise.
#[track_caller]
pub fn assert_stored_as<E: DomainEvent>(event: &E, event_type: &str, data: Value) {
    let stored = codec::encode(event, Uuid::nil(), Metadata::default());
    assert_eq!(stored.event_type, event_type);
    assert_eq!(stored.data, data, "the data of {event_type}");
}

/// Asserts that each of `events` serializes with its stored name as the
/// `type` tag and back; that its envelope has the id and metadata given,
/// that name, the current schema version and as data the serde form
/// without the tag; that it reads back from a stored copy (see
/// [`recorded`]); and that `events` cover every stored name of `E` and no
/// other.
///
/// # Panics
/// When any of that does not hold.
#[track_caller]
pub fn assert_round_trips<E>(
    events: impl IntoIterator<Item = E>,
    stream_id: &StreamId,
    recorded_at: DateTime<Utc>,
) where
    E: DomainEvent + PartialEq + Debug,
{
    let mut types = BTreeSet::new();
    for event in events {
        let serialized = serde_json::to_value(&event).unwrap();
        assert_eq!(serialized["type"], json!(event.stored_type()), "{event:?}");
        let back: E = serde_json::from_value(serialized.clone()).unwrap();
        assert_eq!(back, event);

        let metadata = Metadata {
            actor: Some("worker-1".into()),
            ..Metadata::default()
        };
        let new_event = codec::encode(&event, Uuid::from_u128(99), metadata.clone());
        assert_eq!(new_event.event_id, Uuid::from_u128(99));
        assert_eq!(new_event.event_type, event.stored_type());
        assert_eq!(new_event.schema_version, E::CURRENT_SCHEMA_VERSION);
        assert_eq!(new_event.metadata, metadata);
        let Value::Object(mut without_tag) = serialized else {
            panic!("{event:?} does not serialize to an object");
        };
        without_tag.remove("type");
        assert_eq!(new_event.data, Value::Object(without_tag));

        let read: E = codec::decode(&recorded(new_event, stream_id, recorded_at)).unwrap();
        assert_eq!(read, event);
        types.insert(event.stored_type());
    }
    let all: BTreeSet<_> = E::TYPES.iter().copied().collect();
    assert_eq!(types, all, "every type is covered, and only these");
}

/// Asserts that `good` (a stored event of `E`) is refused once it is
/// something else: another aggregate's `foreign_type`, a newer schema
/// version, data that is not an object. Returns the error for
/// `foreign_type`, whose message the caller checks.
///
/// # Panics
/// When one of them is read, or refused for another reason.
#[track_caller]
pub fn assert_refuses_other_shapes<E: DomainEvent + Debug>(
    good: &RecordedEvent,
    foreign_type: &str,
) -> DecodeError {
    let mut unknown = good.clone();
    unknown.event_type = foreign_type.into();
    let error = codec::decode::<E>(&unknown).unwrap_err();
    assert!(
        matches!(&error, DecodeError::UnknownType { event_type, global_position, aggregate }
            if event_type == foreign_type
                && *global_position == good.global_position
                && *aggregate == E::AGGREGATE),
        "{error:?}"
    );

    let mut newer = good.clone();
    newer.schema_version = E::CURRENT_SCHEMA_VERSION + 1;
    assert!(matches!(
        codec::decode::<E>(&newer),
        Err(DecodeError::UnsupportedSchemaVersion { schema_version, .. })
            if schema_version == E::CURRENT_SCHEMA_VERSION + 1
    ));

    let mut array = good.clone();
    array.data = json!(["x", 1, "2023-11-14T22:16:40Z"]);
    assert!(matches!(
        codec::decode::<E>(&array),
        Err(DecodeError::NotAnObject {
            found: "an array",
            ..
        })
    ));
    error
}
