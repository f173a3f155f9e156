//! `taskledger replay verify` on real PostgreSQL, with rows tampered with
//! directly in the database: the verdict names the exact first bad sequence.

use std::process::{Command, Output};

use serde_json::json;
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::testing::TestDatabase;
use taskledger_events::{EventStore, ExpectedVersion, NewEvent, StreamId};

const BINARY: &str = env!("CARGO_BIN_EXE_taskledger");

/// A database holding 12 events over two streams (alternating).
async fn log() -> TestDatabase {
    let database = TestDatabase::create().await;
    let store = PgEventStore::connect(&database.url, StoreOptions::default()).unwrap();
    for index in 0..12_u64 {
        let stream = StreamId::new(format!("audit-{}", index % 2)).unwrap();
        let version = index / 2;
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        store
            .append(
                &stream,
                expected,
                vec![NewEvent::new("Audited", json!({ "index": index }))],
            )
            .await
            .unwrap();
    }
    assert_eq!(store.head_position().await.unwrap(), 12);
    database
}

/// Runs SQL as the superuser with the append-only trigger off, as an
/// attacker with database access could.
async fn tamper(database: &TestDatabase, sql: &str) {
    database
        .client()
        .await
        .batch_execute(&format!(
            "ALTER TABLE events DISABLE TRIGGER events_append_only;
             {sql};
             ALTER TABLE events ENABLE TRIGGER events_append_only;"
        ))
        .await
        .unwrap();
}

fn verify(database: &TestDatabase, args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(["replay", "verify"])
        .args(args)
        .env("DATABASE_URL", &database.url)
        .env("TASKLEDGER_LOG", "warn")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn an_untouched_log_verifies() {
    let database = log().await;
    let output = verify(&database, &[]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout(&output).starts_with("OK: 12 events verified, sequences 1..=12"),
        "{output:?}"
    );
    database.drop_database().await;
}

#[tokio::test]
async fn each_kind_of_tampering_is_found_at_its_place() {
    let cases = [
        (
            "altered data",
            "UPDATE events SET data = '{\"index\":99}' WHERE global_position = 5",
            5,
        ),
        ("deleted row", "DELETE FROM events WHERE global_position = 7", 7),
        (
            "swapped rows",
            "UPDATE events SET data = CASE global_position WHEN 3 THEN (SELECT data FROM events WHERE global_position = 4)
                                                          ELSE (SELECT data FROM events WHERE global_position = 3) END
             WHERE global_position IN (3, 4)",
            3,
        ),
        (
            "broken version",
            "UPDATE events SET version = 40 WHERE global_position = 6",
            6,
        ),
    ];
    for (what, sql, position) in cases {
        let database = log().await;
        tamper(&database, sql).await;
        let output = verify(&database, &[]);
        assert!(!output.status.success(), "{what}: {output:?}");
        assert!(
            stdout(&output).starts_with(&format!("FAILED at sequence {position}:")),
            "{what}: {}",
            stdout(&output)
        );
        // The range before the damage still verifies.
        let before = verify(&database, &["--to", &(position - 1).to_string()]);
        assert!(before.status.success(), "{what}: {before:?}");
        database.drop_database().await;
    }
}
