//! The runtime: exactly-once application, one active instance, takeover,
//! and stopping (not skipping) at a failing event.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use taskledger_events::postgres::PgEventStore;
use taskledger_events::testing::TestDatabase;
use taskledger_events::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use taskledger_projections::runtime::Batch;
use taskledger_projections::runtime::{lock_key, RuntimeOptions};
use taskledger_projections::{Projector, ProjectorError, ProjectorRuntime, ProjectorState};

use crate::helpers::{database, row, scalar, wait_until, Running};

const RECORDED: &str =
    "CREATE TABLE recorded (global_position bigint PRIMARY KEY, stream_id text NOT NULL)";

/// Records every event it applies; the primary key makes a second
/// application of any event fail loudly.
struct Recorder {
    fail_on: Option<u64>,
    fixed: Arc<AtomicBool>,
    version: u32,
}

#[async_trait]
impl Projector for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn tables(&self) -> &'static [&'static str] {
        &["recorded"]
    }
    fn schema(&self) -> &'static str {
        RECORDED
    }
    async fn apply(&self, tx: &Batch<'_>, events: &[RecordedEvent]) -> Result<(), ProjectorError> {
        for event in events {
            if Some(event.global_position) == self.fail_on && !self.fixed.load(Ordering::SeqCst) {
                return Err(ProjectorError::Event {
                    global_position: event.global_position,
                    reason: "the handler cannot take this one yet".into(),
                });
            }
            tx.execute(
                "INSERT INTO recorded (global_position, stream_id) VALUES ($1, $2)",
                &[
                    &i64::try_from(event.global_position).unwrap(),
                    &event.stream_id,
                ],
            )
            .await?;
        }
        Ok(())
    }
}

fn recorder() -> Recorder {
    Recorder {
        fail_on: None,
        fixed: Arc::new(AtomicBool::new(true)),
        version: 1,
    }
}

fn fast() -> RuntimeOptions {
    RuntimeOptions {
        batch_size: 50,
        standby_retry: Duration::from_millis(200),
        failure_retry: Duration::from_millis(200),
    }
}

/// A database with the recorder's table and a log of `events` events.
async fn setup(events: u64) -> (PgEventStore, TestDatabase, tokio_postgres::Client) {
    let (store, database, client) = database().await;
    client.batch_execute(RECORDED).await.unwrap();
    append(&store, events).await;
    (store, database, client)
}

/// A database whose log holds `count` events, and a recorder running that
/// has applied them all (within `within`).
async fn caught_up(
    count: i64,
    within: Duration,
) -> (PgEventStore, TestDatabase, tokio_postgres::Client, Running) {
    let (store, database, client) = setup(u64::try_from(count).unwrap()).await;
    let running = start(&store, recorder());
    wait_for(&client, "catch-up", within, count).await;
    (store, database, client, running)
}

async fn append(store: &PgEventStore, count: u64) {
    for n in 0..count {
        let stream = StreamId::new(format!("task-{}", n % 7)).unwrap();
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![NewEvent::new("Counted", json!({ "n": n }))],
            )
            .await
            .unwrap();
    }
}

/// How many rows the recorder wrote, and the highest position among them.
async fn recorded(client: &tokio_postgres::Client) -> (i64, i64) {
    let sql = "SELECT count(*), coalesce(max(global_position), 0) FROM recorded";
    let row = row(client, sql).await;
    (row.get(0), row.get(1))
}

/// Waits, for `what`, until the recorder has applied events 1 to `through`
/// exactly once each.
async fn wait_for(client: &tokio_postgres::Client, what: &str, within: Duration, through: i64) {
    wait_until(what, within, async || {
        recorded(client).await == (through, through)
    })
    .await;
}

async fn checkpoint(client: &tokio_postgres::Client) -> Option<(i64, Option<i64>, Option<String>)> {
    crate::helpers::checkpoint(client, "recorder").await
}

fn start(store: &PgEventStore, projector: Recorder) -> Running {
    Running::start(ProjectorRuntime::new(store.clone(), projector, fast()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_every_event_once_and_resumes_from_its_checkpoint() {
    let (store, database, client) = setup(120).await;
    let running = start(&store, recorder());
    let status = running.status.clone();
    wait_for(
        &client,
        "the projector to catch up",
        Duration::from_secs(20),
        120,
    )
    .await;
    assert_eq!(checkpoint(&client).await.unwrap().0, 120);
    assert_eq!(status.borrow().position, 120);
    // Live events are applied as they come.
    append(&store, 30).await;
    wait_for(&client, "live events", Duration::from_secs(20), 150).await;
    let active = async || {
        taskledger_projections::runtime::lags(&client)
            .await
            .unwrap()[0]
            .active
    };
    assert!(active().await, "the running instance holds its lock");
    running.stop().await;
    assert_eq!(status.borrow().state, ProjectorState::Stopped);
    wait_until("the lock to go", Duration::from_secs(10), async || {
        !active().await
    })
    .await;

    // A new instance continues from the checkpoint: nothing is applied twice
    // (the primary key would fail the batch).
    append(&store, 10).await;
    let running = start(&store, recorder());
    wait_for(
        &client,
        "the restarted projector",
        Duration::from_secs(20),
        160,
    )
    .await;
    assert_eq!(checkpoint(&client).await.unwrap(), (160, None, None));
    running.stop().await;
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_is_active_and_a_standby_takes_over_when_it_dies() {
    let (store, database, client) = setup(40).await;
    let a = start(&store, recorder());
    wait_until(
        "the first instance to be active",
        Duration::from_secs(20),
        async || a.status.borrow().state == ProjectorState::Running,
    )
    .await;
    let b = start(&store, recorder());
    wait_until(
        "the second instance to stand by",
        Duration::from_secs(20),
        async || b.status.borrow().state == ProjectorState::Standby,
    )
    .await;
    wait_for(&client, "catch-up", Duration::from_secs(20), 40).await;

    // Kill the active instance's connection, as a crashed process would.
    let killed = client
        .query(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l
             WHERE l.locktype = 'advisory' AND l.granted
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND ((l.classid::bigint << 32) | l.objid::bigint) = $1",
            &[&lock_key("recorder")],
        )
        .await
        .unwrap();
    assert_eq!(killed.len(), 1);
    append(&store, 25).await;
    wait_for(
        &client,
        "the standby to take over and catch up",
        Duration::from_secs(10),
        65,
    )
    .await;
    assert_eq!(
        b.status.borrow().state,
        ProjectorState::Running,
        "b took over"
    );
    assert_eq!(checkpoint(&client).await.unwrap().0, 65);
    a.stop().await;
    b.stop().await;
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_stops_at_the_event_and_resumes_after_a_fix() {
    let (store, database, client) = setup(30).await;
    let fixed = Arc::new(AtomicBool::new(false));
    let projector = Recorder {
        fail_on: Some(17),
        fixed: fixed.clone(),
        version: 1,
    };
    let running = start(&store, projector);
    let status = running.status.clone();
    wait_until(
        "the failure to be reported",
        Duration::from_secs(20),
        async || {
            matches!(
                status.borrow().state,
                ProjectorState::Failed {
                    global_position: 17,
                    ..
                }
            )
        },
    )
    .await;
    // Everything before it is applied; nothing at or after it.
    wait_until(
        "the failure to be recorded",
        Duration::from_secs(5),
        async || matches!(checkpoint(&client).await, Some((_, Some(17), Some(_)))),
    )
    .await;
    let (count, max) = recorded(&client).await;
    assert!(
        max < 17 && count == max,
        "applied up to {max} ({count} rows)"
    );
    assert!(checkpoint(&client).await.unwrap().0 < 17);
    // The lag report names the stuck event and counts what waits behind it.
    let lag = taskledger_projections::runtime::lags(&client)
        .await
        .unwrap()
        .into_iter()
        .find(|lag| lag.name == "recorder")
        .unwrap();
    assert_eq!(lag.head, 30);
    assert_eq!(lag.position, 16);
    assert_eq!(lag.lag_events, 14);
    assert!(lag.lag_seconds > 0.0, "{lag:?}");
    assert_eq!(lag.failure.as_ref().map(|(at, _)| *at), Some(17));

    fixed.store(true, Ordering::SeqCst);
    wait_for(
        &client,
        "the projector to resume",
        Duration::from_secs(20),
        30,
    )
    .await;
    assert_eq!(checkpoint(&client).await.unwrap(), (30, None, None));
    assert_eq!(status.borrow().state, ProjectorState::Running);
    let lags = taskledger_projections::runtime::lags(&client)
        .await
        .unwrap();
    assert_eq!(lags.len(), 1);
    assert_eq!(
        (
            lags[0].lag_events,
            lags[0].lag_seconds,
            lags[0].failure.clone()
        ),
        (0, 0.0, None)
    );
    running.stop().await;
    database.drop_database().await;
}

/// The table's identity: a swap replaces it with another one.
async fn table_oid(client: &tokio_postgres::Client) -> u32 {
    scalar(client, "SELECT 'recorded'::regclass::oid").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_swaps_new_tables_in_under_concurrent_writes_and_reads() {
    use taskledger_projections::rebuild::{rebuild, RebuildOptions};

    let (store, database, client, running) = caught_up(3_000, Duration::from_secs(30)).await;
    let live_table = table_oid(&client).await;

    // A writer appends throughout; a reader counts rows throughout with a
    // prepared statement (the way the API reads), and must never fail nor
    // see fewer rows than before (a half-built table would show fewer).
    let writing = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn({
        let (store, writing) = (store.clone(), writing.clone());
        async move {
            let mut appended = 0_u64;
            while writing.load(Ordering::SeqCst) {
                append(&store, 1).await;
                appended += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            appended
        }
    });
    let reader_client = database.client().await;
    let reading = Arc::new(AtomicBool::new(true));
    let reader = tokio::spawn({
        let reading = reading.clone();
        async move {
            let count = reader_client
                .prepare("SELECT count(*) FROM recorded")
                .await
                .unwrap();
            let (mut reads, mut last) = (0_u64, 0_i64);
            while reading.load(Ordering::SeqCst) {
                let now: i64 = reader_client.query_one(&count, &[]).await.unwrap().get(0);
                assert!(now >= last, "the reader saw {now} rows after {last}");
                last = now;
                reads += 1;
            }
            reads
        }
    });

    let progress = std::sync::Mutex::new(Vec::new());
    let options = RebuildOptions {
        batch_size: 400,
        progress_every: Duration::ZERO,
        ..RebuildOptions::default()
    };
    let report = rebuild(&store, &recorder(), &options, &|p| {
        progress.lock().unwrap().push(p.clone());
    })
    .await
    .unwrap();
    assert!(report.position >= 3_000, "{report}");
    let progress = progress.into_inner().unwrap();
    assert!(progress.len() > 3, "progress was reported: {progress:?}");
    assert!(progress.windows(2).all(|w| w[0].position <= w[1].position));
    assert_eq!(progress.last().unwrap().phase, "swapping");

    // Keep writing a little after the swap: the live projector carries on
    // into the new table.
    tokio::time::sleep(Duration::from_millis(200)).await;
    writing.store(false, Ordering::SeqCst);
    let appended = writer.await.unwrap();
    let total = 3_000 + i64::try_from(appended).unwrap();
    wait_for(
        &client,
        "the live projector",
        Duration::from_secs(30),
        total,
    )
    .await;
    reading.store(false, Ordering::SeqCst);
    let reads = reader.await.unwrap();
    assert!(reads > 10, "the reader kept reading ({reads} reads)");
    assert_ne!(
        table_oid(&client).await,
        live_table,
        "the table was swapped"
    );
    assert_eq!(checkpoint(&client).await.unwrap().0, total);
    assert_eq!(running.status.borrow().state, ProjectorState::Running);
    let leftovers: i64 = scalar(
        &client,
        "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tl\\_%'",
    )
    .await;
    assert_eq!(leftovers, 0, "the shadow and retired schemas are dropped");
    let state: String = scalar(
        &client,
        "SELECT state FROM projection_rebuilds WHERE projector = 'recorder'",
    )
    .await;
    assert_eq!(state, "done");
    // A rebuild recorded as still going whose lock nobody holds (its process
    // died) reads as interrupted.
    client
        .execute(
            "UPDATE projection_rebuilds SET state = 'building', finished_at = NULL",
            &[],
        )
        .await
        .unwrap();
    let last = &taskledger_projections::rebuild::rebuilds(&client)
        .await
        .unwrap()[0];
    assert_eq!(last.state, "interrupted");
    running.stop().await;
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_is_built_beside_the_old_one_which_then_stands_down() {
    let (store, database, client, old) = caught_up(50, Duration::from_secs(20)).await;
    let old_table = table_oid(&client).await;
    let new = start(
        &store,
        Recorder {
            version: 2,
            ..recorder()
        },
    );
    wait_until(
        "the new version to take over",
        Duration::from_secs(30),
        async || new.status.borrow().state == ProjectorState::Running,
    )
    .await;
    append(&store, 20).await;
    wait_for(&client, "live events", Duration::from_secs(20), 70).await;
    assert_ne!(table_oid(&client).await, old_table);
    assert_eq!(
        old.status.borrow().state,
        ProjectorState::Outdated { stored: 2 }
    );
    let lag = &taskledger_projections::runtime::lags(&client)
        .await
        .unwrap()[0];
    assert_eq!((lag.version, lag.position), (2, 70));
    old.stop().await;
    new.stop().await;
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_projector_applies_nothing_until_resumed_and_a_reset_replays_the_log() {
    use taskledger_projections::runtime::{reset, set_paused};

    let (store, database, mut client, running) = caught_up(10, Duration::from_secs(20)).await;
    assert!(set_paused(&client, "recorder", true).await.unwrap());
    append(&store, 10).await;
    wait_until("the pause", Duration::from_secs(5), async || {
        running.status.borrow().state == ProjectorState::Paused
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        recorded(&client).await,
        (10, 10),
        "nothing applied while paused"
    );
    assert!(
        taskledger_projections::runtime::lags(&client)
            .await
            .unwrap()[0]
            .paused
    );
    assert!(set_paused(&client, "recorder", false).await.unwrap());
    wait_for(&client, "the resume", Duration::from_secs(10), 20).await;
    assert!(!set_paused(&client, "nobody", true).await.unwrap());

    // A reset empties the table and the live projector applies it all again.
    client
        .execute("INSERT INTO recorded VALUES (-1, 'stray row')", &[])
        .await
        .unwrap();
    assert!(reset(&mut client, &recorder()).await.unwrap());
    wait_for(&client, "the replay", Duration::from_secs(10), 20).await;
    let min: i64 = scalar(&client, "SELECT min(global_position) FROM recorded").await;
    assert_eq!(min, 1, "the stray row went with the reset");
    running.stop().await;
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_waits_out_a_long_reader_without_blocking_others_and_gives_up_cleanly() {
    use taskledger_projections::rebuild::{rebuild, RebuildError, RebuildOptions};

    let (store, database, client, running) = caught_up(200, Duration::from_secs(20)).await;
    let live_table = table_oid(&client).await;
    let options = RebuildOptions {
        lock_timeout: Duration::from_millis(200),
        swap_attempts: 3,
        ..RebuildOptions::default()
    };

    // A reader holding the table for longer than every attempt: the rebuild
    // gives up, the live table is untouched and the shadow is gone.
    let long_reader = database.client().await;
    long_reader
        .batch_execute("BEGIN; SELECT count(*) FROM recorded;")
        .await
        .unwrap();
    let error = rebuild(&store, &recorder(), &options, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(error, RebuildError::SwapStarved(3)), "{error}");
    // Nothing of the swap is left queued: another reader gets in while the
    // long one still holds the table (a leftover exclusive request would
    // queue it behind the long reader, which never finishes here).
    let read = tokio::time::timeout(Duration::from_secs(10), recorded(&client)).await;
    assert_eq!(read.expect("a reader was left queued"), (200, 200));
    assert_eq!(table_oid(&client).await, live_table);
    let shadows: i64 = scalar(
        &client,
        "SELECT count(*) FROM pg_namespace WHERE nspname = 'tl_next_recorder'",
    )
    .await;
    assert_eq!(shadows, 0);

    // Released part way through, the swap gets in on a later attempt. The
    // reader lets go only after one attempt has queued for the table and
    // given up (seen in pg_locks), so the first attempt always fails,
    // however slowly this machine reaches the swap.
    let watcher = database.client().await;
    let release = tokio::spawn(async move {
        let waiting = || async {
            scalar::<i64>(
                &watcher,
                "SELECT count(*) FROM pg_locks \
                 WHERE NOT granted AND relation = 'recorded'::regclass",
            )
            .await
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while waiting().await == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no swap attempt queued"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        while waiting().await > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the swap attempt never gave up"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        long_reader.batch_execute("COMMIT").await.unwrap();
    });
    let report = rebuild(
        &store,
        &recorder(),
        &RebuildOptions {
            swap_attempts: 20,
            ..options
        },
        &|_| {},
    )
    .await
    .unwrap();
    release.await.unwrap();
    assert!(report.swap_attempts > 1, "{report}");
    assert_ne!(table_oid(&client).await, live_table);
    append(&store, 5).await;
    wait_for(&client, "the live projector", Duration::from_secs(20), 205).await;
    running.stop().await;
    database.drop_database().await;
}
