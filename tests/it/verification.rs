//! Verification at scale on real PostgreSQL: `taskledger replay verify`
//! resumed from a recorded verification or a ledger's anchor, with rows
//! tampered with in the database (`replay.rs`'s helpers), and ledger
//! confirmations carrying the chain hash (refused when it disagrees).

use serde_json::{json, Value};
use taskledger_events::apikey::Scope;
use taskledger_events::chain::{event_hash, HashInput};
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::testing::TestDatabase;
use taskledger_events::EventStore;

use crate::helpers::TestApp;
use crate::replay::{log, tamper, verify};
use crate::support::cli::{stdout, taskledger_ok};
use crate::support::http::send;
use crate::support::log::append_unrelated;

/// Appends `count` events, each on a stream of its own.
async fn append(database: &TestDatabase, count: u64) {
    let store = PgEventStore::connect(&database.url, StoreOptions::default()).unwrap();
    append_unrelated(&store, count).await;
}

/// `replay verify args…`, which must pass; what it printed.
fn verify_ok(database: &TestDatabase, args: &[&str]) -> String {
    taskledger_ok(&database.url, &[&["replay", "verify"], args].concat())
}

/// `replay verify args…`, which must fail naming `position` first.
fn verify_fails_at(database: &TestDatabase, args: &[&str], position: u64) -> String {
    let output = verify(database, args);
    let text = stdout(&output);
    assert!(!output.status.success(), "{args:?}: {output:?}");
    assert!(
        text.starts_with(&format!("FAILED at sequence {position}:")),
        "{args:?}: {text}"
    );
    text
}

/// What an attacker who knows the hash algorithm can do: change event
/// `position`'s data and recompute every hash from there to the head, so
/// that the stored chain is consistent again.
async fn rewrite_from(database: &TestDatabase, position: u64) {
    let client = database.client().await;
    let mut previous = taskledger_events::chain::GENESIS_HASH;
    if position > 1 {
        let stored: Vec<u8> = client
            .query_one(
                "SELECT hash FROM events WHERE global_position = $1",
                &[&(position as i64 - 1)],
            )
            .await
            .unwrap()
            .get(0);
        previous = stored.try_into().unwrap();
    }
    let rows = client
        .query(
            "SELECT global_position, event_id, stream_id, version, event_type, schema_version,
                    CASE WHEN global_position = $1 THEN '{\"index\":666}' ELSE data::text END,
                    metadata::text, recorded_at
             FROM events WHERE global_position >= $1 ORDER BY global_position",
            &[&(position as i64)],
        )
        .await
        .unwrap();
    let mut sql = String::new();
    for row in &rows {
        let global_position: i64 = row.get(0);
        let data: String = row.get(6);
        let recorded_at: chrono::DateTime<chrono::Utc> = row.get(8);
        let hash = event_hash(
            &previous,
            &HashInput {
                global_position: global_position as u64,
                event_id: row.get(1),
                stream_id: row.get(2),
                version: row.get::<_, i64>(3) as u64,
                event_type: row.get(4),
                schema_version: row.get::<_, i32>(5) as u32,
                data_json: &data,
                metadata_json: row.get(7),
                recorded_at_micros: recorded_at.timestamp_micros(),
            },
        );
        sql.push_str(&format!(
            "UPDATE events SET data = '{}', hash = '\\x{}' WHERE global_position = {global_position};\n",
            data.replace('\'', "''"),
            hex::encode(hash)
        ));
        previous = hash;
    }
    tamper(database, &sql).await;
}

#[tokio::test]
async fn an_incremental_verify_checks_only_what_followed_the_record() {
    let database = log().await;
    // With nothing recorded yet, it checks from 1 and records 1..=12.
    let first = verify_ok(&database, &["--from-last-verified", "--record"]);
    assert!(
        first.starts_with("OK: 12 events verified, sequences 1..=12"),
        "{first}"
    );
    assert!(
        first.contains("recorded: verified through sequence 12"),
        "{first}"
    );
    // The record is event 13; five more follow.
    append(&database, 5).await;
    let second = verify_ok(&database, &["--from-last-verified", "--record"]);
    // 12 (the anchor, recomputed), the record at 13, and 14..=18.
    assert!(
        second.starts_with("OK: 7 events verified, sequences 12..=18"),
        "{second}"
    );
    assert!(second.contains("resumed at sequence 12"), "{second}");
    assert!(
        second.contains("sequences 1..=11 were not re-checked by this run"),
        "{second}"
    );
    assert!(
        second.contains("recorded: verified through sequence 18"),
        "{second}"
    );
    // Recording again no further than the last record adds nothing.
    let again = verify_ok(
        &database,
        &["--from-last-verified", "--to", "18", "--record"],
    );
    assert!(
        again.starts_with("OK: 1 events verified, sequences 18..=18"),
        "{again}"
    );
    assert!(again.contains("not recorded"), "{again}");
    let third = verify_ok(&database, &["--from-last-verified"]);
    assert!(
        third.starts_with("OK: 2 events verified, sequences 18..=19"),
        "{third}"
    );
    let records = verify_ok(&database, &[]);
    assert!(
        records.starts_with("OK: 19 events verified, sequences 1..=19"),
        "{records}"
    );
    database.drop_database().await;
}

#[tokio::test]
async fn tampering_after_the_record_is_found_by_the_incremental_verify() {
    let database = log().await;
    verify_ok(&database, &["--record"]);
    append(&database, 5).await;
    tamper(
        &database,
        "UPDATE events SET data = '{\"more\":false}' WHERE global_position = 16",
    )
    .await;
    verify_fails_at(&database, &["--from-last-verified"], 16);
    database.drop_database().await;
    // The record itself (13) is in the chain: changing what it says is
    // found too, before anything after it is trusted.
    let database = log().await;
    verify_ok(&database, &["--record"]);
    tamper(
        &database,
        "UPDATE events SET data = replace(data::text, '\"verified_by\":\"cli\"', '\"verified_by\":\"mallory\"')::json
         WHERE global_position = 13",
    )
    .await;
    verify_fails_at(&database, &["--from-last-verified"], 13);
    database.drop_database().await;
}

#[tokio::test]
async fn tampering_before_the_record_is_not_claimed_and_a_full_verify_names_it() {
    let database = log().await;
    verify_ok(&database, &["--record"]);
    append(&database, 3).await;
    tamper(
        &database,
        "UPDATE events SET data = '{\"index\":99}' WHERE global_position = 5",
    )
    .await;
    let resumed = verify_ok(&database, &["--from-last-verified"]);
    // It says what it checked, and that 5 is not among it.
    assert!(
        resumed.starts_with("OK: 5 events verified, sequences 12..=16"),
        "{resumed}"
    );
    assert!(
        resumed.contains("sequences 1..=11 were not re-checked by this run"),
        "{resumed}"
    );
    assert!(!resumed.contains("1..=16"), "{resumed}");
    verify_fails_at(&database, &[], 5);
    database.drop_database().await;
}

#[tokio::test]
async fn a_record_the_stored_chain_no_longer_matches_fails_the_incremental_verify() {
    // Event 12 altered, its hash left: the anchor's event is recomputed.
    let database = log().await;
    verify_ok(&database, &["--record"]);
    tamper(
        &database,
        "UPDATE events SET data = '{\"index\":99}' WHERE global_position = 12",
    )
    .await;
    verify_fails_at(&database, &["--from-last-verified"], 12);
    database.drop_database().await;

    // Event 12 altered and the chain rewritten from there consistently: a
    // full verify cannot tell, the record can.
    let database = log().await;
    verify_ok(&database, &["--record"]);
    append(&database, 2).await;
    rewrite_from(&database, 12).await;
    verify_ok(&database, &[]);
    let text = verify_fails_at(&database, &["--from-last-verified"], 12);
    assert!(
        text.contains("is not the one the verification recorded at"),
        "{text}"
    );
    database.drop_database().await;
}

/// The hash stored at `position`, in hex.
async fn hash_at(store: &PgEventStore, position: u64) -> String {
    let events = store.read_all_as_stored(position - 1, 1).await.unwrap();
    assert_eq!(events[0].global_position, position);
    hex::encode(events[0].hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_anchors_the_chain_only_with_the_stored_hash() {
    let app = TestApp::spawn().await;
    let ledger = app.key(&[Scope::LedgerWrite]).await;
    let tenant_ledger = app.tenant_key("acme", &[Scope::LedgerWrite]).await;
    let store = app.store();
    let head = store.head_position().await.unwrap();
    assert!(head >= 2, "the keys' events");
    let post = |key: &str, body: Value| app.confirm(key, &body);
    let status = || app.read_at_head(&ledger, "/v1/ledgers");
    let right = hash_at(&store, head).await;
    let wrong = hash_at(&store, head - 1).await;

    // Without a hash, as before: confirmed, nothing anchored.
    let plain = post(
        &ledger,
        json!({"from_sequence": 1, "to_sequence": head - 1, "reference": "tx-1"}),
    )
    .await;
    assert_eq!(plain.status(), 201);
    let plain: Value = plain.json().await.unwrap();
    assert_eq!(plain["status"]["anchored_through"], 0, "{plain}");

    // A wrong hash: 422 naming the position, and nothing is recorded.
    let log_head = app.store().head_position().await.unwrap();
    let refused = post(
        &ledger,
        json!({"from_sequence": head, "to_sequence": head, "reference": "tx-2", "chain_hash": wrong}),
    )
    .await;
    assert_eq!(refused.status(), 422);
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("not the hash this log stores at sequence {head}")),
        "{problem}"
    );
    assert_eq!(app.store().head_position().await.unwrap(), log_head);
    let unchanged = status().await;
    assert_eq!(
        unchanged["items"][0]["confirmed_through"],
        head - 1,
        "{unchanged}"
    );
    assert_eq!(unchanged["items"][0]["anchored_through"], 0, "{unchanged}");
    // Not hex, and a hash with an event-id confirmation: refused too.
    for body in [
        json!({"from_sequence": head, "to_sequence": head, "reference": "tx-2", "chain_hash": "zz"}),
        json!({"event_ids": [uuid::Uuid::new_v4()], "reference": "tx-2", "chain_hash": right}),
    ] {
        let response = post(&ledger, body.clone()).await;
        assert_eq!(response.status(), 422, "{body}");
    }
    // A tenant's key meets the route's rule, hash or not, and changes nothing.
    let tenant_plain = post(
        &tenant_ledger,
        json!({"from_sequence": head, "to_sequence": head, "reference": "tx-3"}),
    )
    .await
    .status();
    let tenant_anchored = post(
        &tenant_ledger,
        json!({"from_sequence": head, "to_sequence": head, "reference": "tx-3", "chain_hash": right}),
    )
    .await
    .status();
    assert_eq!(tenant_plain, tenant_anchored);
    assert!(tenant_anchored.is_client_error(), "{tenant_anchored}");
    assert_eq!(app.store().head_position().await.unwrap(), log_head);

    // The right hash: accepted, and anchored_through moves.
    let accepted = post(
        &ledger,
        json!({"from_sequence": head, "to_sequence": head, "reference": "tx-4", "chain_hash": right}),
    )
    .await;
    assert_eq!(accepted.status(), 201);
    let accepted: Value = accepted.json().await.unwrap();
    assert_eq!(accepted["status"]["anchored_through"], head, "{accepted}");
    let listed = status().await;
    assert_eq!(listed["items"][0]["anchored_through"], head, "{listed}");
    let single = send(app.get(&ledger, "/v1/ledgers/chain-a/status")).await;
    let single: Value = single.json().await.unwrap();
    assert_eq!(single["anchored_through"], head, "{single}");
    // The same again changes nothing.
    let repeat = post(
        &ledger,
        json!({"from_sequence": 1, "to_sequence": head, "reference": "tx-4", "chain_hash": right}),
    )
    .await;
    assert_eq!(repeat.status(), 200);

    // Verification can resume at the ledger's anchor; tampering before it
    // is found by a full verify, a rewrite of the chain through it by the
    // anchor.
    let database = &app.database;
    let resumed = verify_ok(database, &["--from-anchor", "chain-a"]);
    assert!(
        resumed.starts_with("OK: ") && resumed.contains(&format!("sequences {head}..=")),
        "{resumed}"
    );
    assert!(
        resumed.contains("anchored there by ledger chain-a"),
        "{resumed}"
    );
    tamper(
        database,
        &format!(
            "UPDATE events SET data = '{{\"tampered\":1}}' WHERE global_position = {}",
            head - 1
        ),
    )
    .await;
    verify_ok(database, &["--from-anchor", "chain-a"]);
    verify_fails_at(database, &[], head - 1);
    rewrite_from(database, head - 1).await;
    verify_ok(database, &[]);
    let text = verify_fails_at(database, &["--from-anchor", "chain-a"], head);
    assert!(text.contains("ledger chain-a holds"), "{text}");
    app.finish().await;
}
