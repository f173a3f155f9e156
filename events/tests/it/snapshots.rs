//! Snapshots against the real store: a load from a snapshot and its tail
//! gives what a fold of the whole stream gives, at many versions, across a
//! state-schema change, after a drop and past a corrupted row; and
//! concurrent commands still meet the version check.

use chrono::Utc;
use taskledger_events::codec;
use taskledger_events::command::{execute, load, load_from_start, CommandError, Loaded};
use taskledger_events::device::{
    DeviceCommand, DeviceEvent, DeviceState, Devices, Imei, ReceiveDeviceMessage,
};
use taskledger_events::ledger::{LedgerName, Ledgers};
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::snapshot::{self, StoredSnapshot};
use taskledger_events::testing::{DeviceHistory, LedgerHistory};
use taskledger_events::{Aggregate, EventStore, ExpectedVersion, Metadata, StreamId};
use uuid::Uuid;

use crate::helpers::{store, store_with};

const EVERY: u64 = 100;

fn imei() -> Imei {
    Imei::new("300234010753370").unwrap()
}

/// Appends `events` to `stream` after `version`, in one append.
async fn append_events<E: codec::DomainEvent>(
    store: &PgEventStore,
    stream: &StreamId,
    version: u64,
    events: &[E],
) {
    let new_events = events
        .iter()
        .map(|event| codec::encode(event, Uuid::new_v4(), Metadata::default()))
        .collect();
    let expected = if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    };
    store.append(stream, expected, new_events).await.unwrap();
}

/// The device's stream with the first `len` events of its
/// [`DeviceHistory`] shaped by `seed`, appended in one append; and those
/// events.
async fn device_stream(
    store: &PgEventStore,
    seed: u64,
    len: usize,
) -> (StreamId, Vec<DeviceEvent>) {
    let stream = imei().stream_id();
    let history: Vec<DeviceEvent> = DeviceHistory::new(imei(), seed).take(len).collect();
    append_events(store, &stream, 0, &history).await;
    (stream, history)
}

/// The snapshot row of the device's `stream` holding `state` at `version`
/// (also its global position: the stream is the only one in the log),
/// under state schema `state_version`.
fn device_snapshot(
    stream: &StreamId,
    state_version: u32,
    version: u64,
    state: &DeviceState,
) -> StoredSnapshot {
    StoredSnapshot {
        stream_id: stream.to_string(),
        aggregate: Devices::NAME,
        state_version,
        stream_version: version,
        global_position: version,
        state: Devices::SNAPSHOTS.unwrap().encode(state).unwrap(),
    }
}

/// Loads the stream (from its snapshot), waits for any snapshot the load
/// spawned, and checks the result against a fold of the whole stream and
/// against `expected` (the events folded in memory).
async fn load_and_compare<A: Aggregate>(
    store: &PgEventStore,
    stream: &StreamId,
    expected: &A::State,
) -> Loaded<A>
where
    A::State: PartialEq + std::fmt::Debug,
{
    let loaded = load::<A>(store, stream).await.unwrap();
    store.snapshots().unwrap().settled().await;
    let full = load_from_start::<A>(store, stream).await.unwrap();
    assert_eq!(full.snapshot_version, None);
    assert_eq!(
        (loaded.version, loaded.position),
        (full.version, full.position),
        "version and position at {}",
        full.version
    );
    assert_eq!(
        loaded.state, full.state,
        "state at version {}",
        full.version
    );
    assert_eq!(&loaded.state, expected, "state at version {}", full.version);
    loaded
}

/// A device stream of 3,000 mixed events grown in batches of 1 to 60: after
/// every batch the load (which writes its own snapshots as it goes) equals
/// the full fold, reads a snapshot once there is one, and folds a bounded
/// tail. Then snapshots written at every 97th version each load to the
/// full fold's state.
#[tokio::test]
async fn snapshot_and_tail_equal_the_full_fold_at_many_versions() {
    let (store, database) = store().await;
    let stream = imei().stream_id();
    let history: Vec<DeviceEvent> = DeviceHistory::new(imei(), 7).take(3_000).collect();
    let mut version = 0_u64;
    let mut batch = 1_usize;
    let mut from_snapshot = 0;
    while (version as usize) < history.len() {
        let end = (version as usize + batch).min(history.len());
        append_events(&store, &stream, version, &history[version as usize..end]).await;
        version = end as u64;
        let expected = Devices::fold(&history[..end]);
        let loaded = load_and_compare::<Devices>(&store, &stream, &expected).await;
        assert!(
            loaded.folded() < EVERY + batch as u64,
            "at {version} the load folded {} events",
            loaded.folded()
        );
        // The first load that folds `EVERY` events writes the first
        // snapshot; every later one starts from one (batches are at most
        // 66 events).
        if version >= EVERY + 66 {
            assert!(
                loaded.snapshot_version.is_some(),
                "no snapshot at {version}"
            );
            from_snapshot += 1;
        }
        batch = batch % 60 + 7;
    }
    assert!(from_snapshot > 50, "{from_snapshot} loads from a snapshot");

    let policy = Devices::SNAPSHOTS.unwrap();
    let snapshots = store.snapshots().unwrap();
    let full = Devices::fold(&history);
    for at in (1..=history.len()).step_by(97) {
        snapshots.drop_all(None).await.unwrap();
        let state = Devices::fold(&history[..at]);
        snapshots
            .write(&device_snapshot(
                &stream,
                policy.state_version,
                at as u64,
                &state,
            ))
            .await
            .unwrap();
        let loaded = load_and_compare::<Devices>(&store, &stream, &full).await;
        assert_eq!(loaded.snapshot_version, Some(at as u64));
    }
    database.drop_database().await;
}

/// The same for a ledger's confirmations (with holes filled later).
#[tokio::test]
async fn a_ledgers_snapshot_and_tail_equal_the_full_fold() {
    let (store, database) = store().await;
    let name = LedgerName::new("warehouse").unwrap();
    let stream = StreamId::new(format!("{}{}", Ledgers::STREAM_PREFIX, name.as_str())).unwrap();
    let history: Vec<_> = LedgerHistory::new(name, 3).take(1_000).collect();
    let mut version = 0;
    for chunk in history.chunks(37) {
        append_events(&store, &stream, version, chunk).await;
        version += chunk.len() as u64;
        let expected = Ledgers::fold(&history[..version as usize]);
        let loaded = load_and_compare::<Ledgers>(&store, &stream, &expected).await;
        if version >= EVERY + 37 {
            assert!(
                loaded.snapshot_version.is_some(),
                "no snapshot at {version}"
            );
        }
    }
    database.drop_database().await;
}

/// A snapshot written under another state schema (the aggregate's state
/// changed shape since) is never read: the load folds the whole stream,
/// and the row is replaced by one of the current schema.
#[tokio::test]
async fn a_snapshot_of_another_state_schema_is_never_read() {
    let (store, database) = store().await;
    let (stream, history) = device_stream(&store, 11, 500).await;
    let policy = Devices::SNAPSHOTS.unwrap();
    let snapshots = store.snapshots().unwrap();
    // What schema k wrote at version 400: a state that, read as today's,
    // would be wrong (the state after 10 events) — it must not be used.
    let stale = Devices::fold(&history[..10]);
    for other in [policy.state_version + 1, policy.state_version - 1] {
        let row = device_snapshot(&stream, other, 400, &stale);
        assert!(snapshots.write(&row).await.unwrap());
        assert_eq!(
            snapshots
                .read(&stream, Devices::NAME, policy.state_version)
                .await
                .unwrap(),
            None
        );
        let loaded = load_and_compare::<Devices>(&store, &stream, &Devices::fold(&history)).await;
        assert_eq!(loaded.snapshot_version, None, "folded from the start");
        // The load replaced it with one of the current schema.
        let replaced = snapshots
            .read(&stream, Devices::NAME, policy.state_version)
            .await
            .unwrap()
            .expect("a snapshot of the current schema");
        assert_eq!(replaced.stream_version, 500);
        assert_eq!(
            snapshots.read(&stream, Devices::NAME, other).await.unwrap(),
            None
        );
    }
    database.drop_database().await;
}

/// Dropping snapshots (all, or one aggregate's) changes no load's result;
/// a rebuild writes them again from the log.
#[tokio::test]
async fn dropped_and_rebuilt_snapshots_give_the_same_results() {
    let (store, database) = store().await;
    let (device, devices) = device_stream(&store, 5, 700).await;
    let name = LedgerName::new("mirror").unwrap();
    let ledger = StreamId::new(format!("ledger-{}", name.as_str())).unwrap();
    let ledgers: Vec<_> = LedgerHistory::new(name, 5).take(300).collect();
    append_events(&store, &ledger, 0, &ledgers).await;
    let snapshots = store.snapshots().unwrap();

    load_and_compare::<Devices>(&store, &device, &Devices::fold(&devices)).await;
    load_and_compare::<Ledgers>(&store, &ledger, &Ledgers::fold(&ledgers)).await;
    assert_eq!(snapshots.drop_all(Some(Devices::NAME)).await.unwrap(), 1);
    let loaded = load_and_compare::<Devices>(&store, &device, &Devices::fold(&devices)).await;
    assert_eq!(loaded.snapshot_version, None);
    let loaded = load_and_compare::<Ledgers>(&store, &ledger, &Ledgers::fold(&ledgers)).await;
    assert_eq!(loaded.snapshot_version, Some(300), "the ledger's is kept");

    assert_eq!(snapshots.drop_all(None).await.unwrap(), 2);
    assert_eq!(snapshot::rebuild::<Devices>(&store).await.unwrap(), 1);
    assert_eq!(snapshot::rebuild::<Ledgers>(&store).await.unwrap(), 1);
    let loaded = load_and_compare::<Devices>(&store, &device, &Devices::fold(&devices)).await;
    assert_eq!(loaded.snapshot_version, Some(700));
    let loaded = load_and_compare::<Ledgers>(&store, &ledger, &Ledgers::fold(&ledgers)).await;
    assert_eq!(loaded.snapshot_version, Some(300));
    database.drop_database().await;
}

/// A snapshot row that is not a state (garbage bytes, or JSON of another
/// shape) is ignored: the load folds the whole stream, with the same
/// result, and writes a good snapshot over it.
#[tokio::test]
async fn a_corrupted_snapshot_is_ignored_and_replaced() {
    let (store, database) = store().await;
    let (stream, history) = device_stream(&store, 13, 400).await;
    let policy = Devices::SNAPSHOTS.unwrap();
    let client = store.pool().get().await.unwrap();
    let garbage: [&[u8]; 3] = [b"\xff\x00not json", br#"{"outbound": 7}"#, b""];
    for garbage in garbage {
        client
            .execute(
                "INSERT INTO aggregate_snapshots \
                   (stream_id, aggregate, state_version, stream_version, global_position, state) \
                 VALUES ($1, $2, $3, 390, 390, $4) \
                 ON CONFLICT (stream_id) DO UPDATE SET stream_version = 390, state = $4",
                &[
                    &stream.as_str(),
                    &Devices::NAME,
                    &(policy.state_version as i32),
                    &garbage,
                ],
            )
            .await
            .unwrap();
        let loaded = load_and_compare::<Devices>(&store, &stream, &Devices::fold(&history)).await;
        assert_eq!(loaded.snapshot_version, None, "a full fold");
        let mended = store
            .snapshots()
            .unwrap()
            .read(&stream, Devices::NAME, policy.state_version)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(mended.stream_version, 400);
        assert_eq!(
            policy.decode(&mended.state).unwrap(),
            Devices::fold(&history)
        );
    }
    database.drop_database().await;
}

/// Two writers of the same stream's snapshot: the newer version stays,
/// whichever writes last.
#[tokio::test]
async fn an_older_snapshot_never_replaces_a_newer_one() {
    let (store, database) = store().await;
    let (stream, history) = device_stream(&store, 17, 300).await;
    let policy = Devices::SNAPSHOTS.unwrap();
    let snapshots = store.snapshots().unwrap();
    let at = |version: usize| {
        let state = Devices::fold(&history[..version]);
        device_snapshot(&stream, policy.state_version, version as u64, &state)
    };
    assert!(snapshots.write(&at(250)).await.unwrap());
    assert!(!snapshots.write(&at(200)).await.unwrap(), "older: kept out");
    // Racing: whichever lands last, 260 stays.
    let (at_260, at_240) = (at(260), at(240));
    let (newer, older) = tokio::join!(snapshots.write(&at_260), snapshots.write(&at_240));
    assert!(newer.unwrap(), "the newer is always stored");
    older.unwrap();
    let stored = snapshots
        .read(&stream, Devices::NAME, policy.state_version)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.stream_version, 260);
    database.drop_database().await;
}

/// Many concurrent commands on one long device stream, snapshots on: every
/// command that succeeded is in the log exactly once (no lost update: the
/// version check still holds from a snapshot), the versions have no holes,
/// and the final load equals the full fold.
#[tokio::test]
async fn concurrent_commands_from_a_snapshot_keep_the_version_check() {
    let (store, database) = store_with(StoreOptions::default()).await;
    let (stream, _) = device_stream(&store, 19, 1_000).await;
    load::<Devices>(&store, &stream).await.unwrap();
    store.snapshots().unwrap().settled().await;

    let base = 1_000_000;
    let commands = (0..48_u64).map(|n| {
        let store = store.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            let command = DeviceCommand::Receive(ReceiveDeviceMessage {
                momsn: base + n,
                transmit_time: "26-12-02 00:00:00".into(),
                payload: vec![1, 2, 3],
                serial: None,
                latitude: None,
                longitude: None,
                cep: None,
                received_at: Utc::now(),
            });
            execute::<Devices>(
                &store,
                &stream,
                (imei(), command),
                Uuid::new_v4(),
                Metadata::default(),
            )
            .await
            .map(|executed| (n, executed.stream_version))
        })
    });
    let outcomes: Vec<_> = futures::future::join_all(commands)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut succeeded = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok(done) => succeeded.push(done),
            Err(CommandError::Conflict { .. }) => {}
            Err(other) => panic!("a command failed: {other}"),
        }
    }
    assert!(!succeeded.is_empty());
    let mut versions: Vec<u64> = succeeded.iter().map(|(_, version)| *version).collect();
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(
        versions.len(),
        succeeded.len(),
        "two commands at one version"
    );
    store.snapshots().unwrap().settled().await;
    let full = load_from_start::<Devices>(&store, &stream).await.unwrap();
    assert_eq!(full.version, 1_000 + succeeded.len() as u64, "none lost");
    for (n, _) in &succeeded {
        assert!(
            full.state.has_received(base + n, "26-12-02 00:00:00"),
            "message {n} recorded"
        );
    }
    let loaded = load::<Devices>(&store, &stream).await.unwrap();
    assert_eq!(loaded.state, full.state);
    assert_eq!(loaded.version, full.version);
    database.drop_database().await;
}

/// With snapshots off, loads fold the whole stream and write none.
#[tokio::test]
async fn a_store_without_snapshots_folds_everything() {
    let (store, database) = store_with(StoreOptions {
        snapshots: false,
        ..StoreOptions::default()
    })
    .await;
    let (stream, history) = device_stream(&store, 23, 300).await;
    let loaded = load::<Devices>(&store, &stream).await.unwrap();
    assert_eq!(loaded.snapshot_version, None);
    assert_eq!(loaded.state, Devices::fold(&history));
    let client = store.pool().get().await.unwrap();
    let rows: i64 = client
        .query_one("SELECT count(*) FROM aggregate_snapshots", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
    database.drop_database().await;
}
