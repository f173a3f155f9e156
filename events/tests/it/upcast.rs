//! Old schema versions are upcast on read and stay as they were in storage.

use serde_json::json;
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::testing::TestDatabase;
use taskledger_events::upcast::Upcasters;
use taskledger_events::{Direction, EventStore, ExpectedVersion, NewEvent};

use crate::helpers::stream;

#[tokio::test]
async fn old_schema_versions_are_upcast_on_every_read_path() {
    let database = TestDatabase::create().await;
    let plain = PgEventStore::connect(&database.url, StoreOptions::default()).unwrap();
    let s = stream("task-upcast");
    let mut old = NewEvent::new("TaskSubmitted", json!({"url": "http://example.test"}));
    old.schema_version = 1;
    let mut current = NewEvent::new(
        "TaskSubmitted",
        json!({"params": {"url": "x"}, "priority": 5}),
    );
    current.schema_version = 2;
    plain
        .append(&s, ExpectedVersion::NoStream, vec![old, current.clone()])
        .await
        .unwrap();

    let upcasters = Upcasters::new().register("TaskSubmitted", 1, |data| {
        Ok(json!({ "params": { "url": data["url"] }, "priority": 0 }))
    });
    let config: tokio_postgres::Config = database.url.parse().unwrap();
    let store = PgEventStore::from_config(config, StoreOptions::default(), upcasters).unwrap();

    let read = store
        .read_stream(&s, 1, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(read[0].schema_version, 2);
    assert_eq!(
        read[0].data,
        json!({"params": {"url": "http://example.test"}, "priority": 0})
    );
    assert_eq!(read[1].data, current.data, "a current event is left alone");
    let all = store.read_all(0, 10).await.unwrap();
    assert_eq!(all[0].data, read[0].data);
    let mut feed = store.subscribe_all(0);
    let fed = feed.next().await.unwrap().unwrap();
    assert_eq!(
        (fed.schema_version, fed.data.clone()),
        (2, read[0].data.clone())
    );

    // Storage keeps the original, and the chain still verifies.
    let stored = store.read_all_as_stored(0, 10).await.unwrap();
    assert_eq!(stored[0].schema_version, 1);
    assert_eq!(stored[0].data, json!({"url": "http://example.test"}));
    assert!(taskledger_events::chain::verify_run(
        0,
        taskledger_events::chain::GENESIS_HASH,
        &stored
    )
    .is_ok());
    database.drop_database().await;
}
