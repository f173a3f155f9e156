//! What one task's whole life costs PostgreSQL: the committed transactions
//! of submit (HTTP) → relay → RabbitMQ → runner (lease, claim, outcome) →
//! projections and checkpoints, for a `local` kind running `true`, held to
//! the budget of `docs/task-path.md`.
//!
//! Counted from `pg_stat_database.xact_commit` of the test's own database,
//! read from another database only once every connection to it has closed
//! (a backend flushes its statistics when it exits, so nothing is pending):
//! a service runs [`TASKS`] tasks, and then the same service runs as long
//! with none; the difference over [`TASKS`] is one task's cost, with the
//! background pollers' share taken out. The test's own completion polls are
//! counted and taken out too. Needs RabbitMQ (`scripts/services.sh`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use taskledger::config::settings::Role;
use taskledger::config::FileConfig;
use taskledger_events::apikey::Scope;
use taskledger_events::testing::TestDatabase;
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::running::{amqp_url, delete_topology, BROKER};

/// Committed transactions one task may cost (`docs/task-path.md`): what
/// was measured when the budget was set, plus a little headroom, so a
/// change that adds a round trip per task fails here.
const BUDGET: f64 = 15.0;

/// Tasks per measured run: enough to average out the pollers.
const TASKS: usize = 50;

const NOOP: &str = r#"
[kinds.noop]
image = "unused"
executor = "local"
command = ["true"]
max_attempts = 1
timeout_seconds = 30
"#;

/// Per table: rows inserted, updated, deleted, and scans (sequential and
/// by index), which say where the reads went.
type Writes = BTreeMap<String, [i64; 4]>;

/// One run's committed transactions (the test's own polls taken out), its
/// rows written per table and how long the service had work.
struct Run {
    transactions: i64,
    writes: Writes,
    busy: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_task_costs_at_most_its_transaction_budget() {
    let _broker = BROKER.read().await;
    let prefix = format!("tl-test-{}", Uuid::new_v4().simple());
    let data_dir = std::env::temp_dir().join(format!("tl-data-{}", Uuid::new_v4()));
    let config = std::env::temp_dir().join(format!("taskledger-kinds-{}.toml", Uuid::new_v4()));
    std::fs::write(&config, NOOP).unwrap();
    let observer = Observer::connect().await;
    let mut database = TestDatabase::create().await;
    let mut key = None;
    // Warm-up: migrations, queues, checkpoints and the key exist before
    // either measured run, so both start the same way.
    let mut runs = Vec::new();
    let mut writes_before = Writes::new();
    for tasks in [1, TASKS, 0] {
        let idle_for = runs.first().map_or(Duration::ZERO, |run: &Run| run.busy);
        let before = observer.settled(&database).await;
        let app = TestApp::spawn_on(database, |settings| {
            settings.roles = vec![Role::Api, Role::Projector, Role::Relay, Role::Runner];
            settings.amqp_url = Some(amqp_url());
            settings.amqp_prefix = Some(prefix.clone());
            settings.data_dir = data_dir.clone();
            settings.config = Some(config.clone());
        })
        .await;
        app.wait_until_ready(Duration::from_secs(30)).await;
        if key.is_none() {
            key = Some(app.key(&[Scope::TasksRead, Scope::TasksWrite]).await);
        }
        let key = key.as_deref().unwrap();
        let began = Instant::now();
        let mut ids = Vec::new();
        for _ in 0..tasks {
            let task = app
                .submitted(
                    key,
                    json!({"kind": "noop", "tenant": "default", "frontend_id": "web", "params": {}}),
                )
                .await;
            ids.push(Uuid::parse_str(task["id"].as_str().unwrap()).unwrap());
        }
        let polls = if tasks == 0 {
            tokio::time::sleep(idle_for).await;
            0
        } else {
            all_succeeded(&app.database, &ids).await
        };
        let busy = began.elapsed();
        database = app.stop().await;
        let after = observer.settled(&database).await;
        // Read after the count, so its transaction falls between runs.
        let writes_after = table_writes(&database).await;
        let writes = difference(&writes_after, &writes_before);
        writes_before = writes_after;
        if tasks == 1 {
            continue;
        }
        runs.push(Run {
            transactions: after - before - polls,
            writes,
            busy,
        });
    }
    let (busy, idle) = (&runs[0], &runs[1]);
    let per_task = (busy.transactions - idle.transactions) as f64 / TASKS as f64;
    eprintln!(
        "transactions: {} with {TASKS} tasks in {:?}, {} idle as long: {per_task:.1} per task (budget {BUDGET})",
        busy.transactions, busy.busy, idle.transactions
    );
    for (table, [inserted, updated, deleted, scans]) in difference(&busy.writes, &idle.writes) {
        let per = |rows: i64| rows as f64 / TASKS as f64;
        if [inserted, updated, deleted, scans] != [0, 0, 0, 0] {
            eprintln!(
                "  {table}: {:.2} inserted, {:.2} updated, {:.2} deleted, {:.2} scans per task",
                per(inserted),
                per(updated),
                per(deleted),
                per(scans)
            );
        }
    }
    // The relay moves its checkpoint at most once a second while events
    // flow, and once more when they stop; not after every batch (about two
    // moves per task, a hundred here).
    let relay_moves = busy
        .writes
        .get("relay_checkpoints")
        .map_or(0, |rows| rows[1]);
    let allowed = i64::try_from(busy.busy.as_secs()).unwrap_or(i64::MAX) + 2;
    assert!(
        relay_moves <= allowed,
        "the relay moved its checkpoint {relay_moves} times in {:?}, more than once a second",
        busy.busy
    );
    // None of these tasks is in a plan (their ids are fresh), so the
    // plans projector passes over their events: it looks one up in
    // `plan_tasks` only when its checkpoint moves past them, at most once
    // a second (by applying the last, which changes nothing), where it
    // used to for each of a task's three events.
    let plan_lookups = busy.writes.get("plan_tasks").map_or(0, |rows| rows[3]);
    assert!(
        plan_lookups <= allowed + 1,
        "the plans projector looked tasks that are in no plan up in plan_tasks {plan_lookups} times in {:?}",
        busy.busy
    );
    // Below 4 the counting is broken, not the task path: a task appends at
    // least its submission, claim and outcome, each its own commit.
    assert!(
        per_task >= 4.0,
        "{per_task:.1} transactions per task: the counting is broken"
    );
    assert!(
        per_task <= BUDGET,
        "one task cost {per_task:.1} PostgreSQL transactions, over its budget of {BUDGET} (docs/task-path.md)"
    );
    database.drop_database().await;
    delete_topology(&prefix, &FileConfig::parse(NOOP).unwrap()).await;
    let _ = std::fs::remove_dir_all(&data_dir);
    let _ = std::fs::remove_file(&config);
}

/// Polls the test database until every task in `ids` is `succeeded` in the
/// read model; how many polls it took (each one committed transaction).
async fn all_succeeded(database: &TestDatabase, ids: &[Uuid]) -> i64 {
    let client = database.client().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut polls = 0;
    loop {
        let row = client
            .query_one(
                "SELECT count(*) FROM tasks WHERE status = 'succeeded' AND task_id = ANY($1)",
                &[&ids],
            )
            .await
            .unwrap();
        polls += 1;
        if row.get::<_, i64>(0) == ids.len() as i64 {
            return polls;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} tasks succeeded within 60 s",
            row.get::<_, i64>(0),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`Writes`] so far, per table of `database`.
async fn table_writes(database: &TestDatabase) -> Writes {
    let client = database.client().await;
    client
        .query(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del,
                    coalesce(seq_scan, 0) + coalesce(idx_scan, 0)
             FROM pg_stat_user_tables",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.get(0), [1, 2, 3, 4].map(|column| row.get(column))))
        .collect()
}

fn difference(after: &Writes, before: &Writes) -> Writes {
    after
        .iter()
        .map(|(table, rows)| {
            let was = before.get(table).copied().unwrap_or_default();
            (
                table.clone(),
                [0, 1, 2, 3].map(|index| rows[index] - was[index]),
            )
        })
        .collect()
}

/// A connection to the server's own database, from which the test
/// database's counters are read without adding to them.
struct Observer(tokio_postgres::Client);

impl Observer {
    async fn connect() -> Self {
        let url = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|error| panic!("connecting to {url}: {error}"));
        tokio::spawn(connection);
        Self(client)
    }

    /// `database`'s committed transactions once no connection to it is
    /// left (each flushed its counts when it closed).
    async fn settled(&self, database: &TestDatabase) -> i64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let open: i64 = self
                .0
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                    &[&database.name],
                )
                .await
                .unwrap()
                .get(0);
            if open == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{open} connections to {} still open 30 s after the service stopped",
                database.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.0
            .batch_execute("SELECT pg_stat_clear_snapshot()")
            .await
            .unwrap();
        self.0
            .query_one(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = $1",
                &[&database.name],
            )
            .await
            .unwrap()
            .get(0)
    }
}
