//! Filling the log with events no projector cares about, for tests that
//! need a longer log (verification ranges, resumed checks).

use serde_json::json;
use taskledger_events::postgres::PgEventStore;
use taskledger_events::{EventStore, ExpectedVersion, NewEvent, StreamId};

/// Appends `count` events, each on a stream of its own.
pub(crate) async fn append_unrelated(store: &PgEventStore, count: u64) {
    for _ in 0..count {
        let stream = StreamId::new(format!("more-{}", uuid::Uuid::new_v4())).unwrap();
        store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![NewEvent::new("Added", json!({ "more": true }))],
            )
            .await
            .unwrap();
    }
}
