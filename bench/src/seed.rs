//! Task lifecycles appended straight to the log, for the benchmarks that
//! need a long history (`rebuild`, `verify`, `growth`): a submission, and for the
//! finished ones a start, a progress report and a success; and one at a
//! time, for `webhooks`' task completions.

use chrono::Utc;
use serde_json::{json, Map};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::task::{
    TaskEvent, TaskId, TaskProgressRecorded, TaskStarted, TaskSubmitted, TaskSucceeded,
};
use taskledger_events::tenant::TenantName;
use taskledger_events::{EventStore, ExpectedVersion, Metadata};
use uuid::Uuid;

/// What the `index`-th seeded task looks like.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    pub(crate) tenant: TenantName,
    pub(crate) kind: String,
    pub(crate) frontend_id: String,
    /// Whether it ran and succeeded (four events) or is still queued (one).
    pub(crate) finished: bool,
}

impl Shape {
    /// Every task alike: the default tenant, kind `bench`, finished.
    pub(crate) fn uniform(_index: u64) -> Self {
        Self {
            tenant: TenantName::default_tenant(),
            kind: "bench".into(),
            frontend_id: "bench".into(),
            finished: true,
        }
    }
}

/// Appends `tasks` task lifecycles shaped by `shape(first + i)` from
/// `writers` concurrent writers (each task its own stream, one append each,
/// so the group committer batches them as it would live traffic).
///
/// # Errors
/// When an append fails.
pub(crate) async fn tasks(
    store: &PgEventStore,
    first: u64,
    tasks: u64,
    writers: u64,
    shape: fn(u64) -> Shape,
) -> anyhow::Result<()> {
    let mut handles = Vec::new();
    for writer in 0..writers {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut index = first + writer;
            while index < first + tasks {
                append_one(&store, shape(index)).await?;
                index += writers;
            }
            anyhow::Ok(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    Ok(())
}

/// Appends uniform task lifecycles from `writers` concurrent writers until
/// the log holds at least `events` events (nothing when it already does),
/// and prints how many were added and how fast: the head of the benchmarks
/// that need a log of a given size (`rebuild`, `verify`).
///
/// # Errors
/// When an append or the head's read fails.
pub(crate) async fn log_up_to(
    store: &PgEventStore,
    events: u64,
    writers: u64,
) -> anyhow::Result<()> {
    let head = store.head_position().await?;
    if head >= events {
        return Ok(());
    }
    let began = std::time::Instant::now();
    tasks(
        store,
        0,
        (events - head).div_ceil(4),
        writers,
        Shape::uniform,
    )
    .await?;
    let seeded = store.head_position().await? - head;
    println!(
        "seeded events={seeded} events_per_s={:.0}",
        seeded as f64 / began.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Appends one task lifecycle shaped `shape` (one append, its own stream).
///
/// # Errors
/// When the append fails.
pub(crate) async fn append_one(store: &PgEventStore, shape: Shape) -> anyhow::Result<()> {
    let task_id = TaskId(Uuid::new_v4());
    let now = Utc::now();
    let mut params = Map::new();
    params.insert("url".into(), json!("http://example.invalid/page"));
    let mut events = vec![TaskEvent::Submitted(TaskSubmitted {
        inputs: Default::default(),
        task_id,
        kind: shape.kind,
        params,
        tenant: shape.tenant,
        frontend_id: shape.frontend_id,
        client_task_id: None,
        priority: 0,
        timeout_seconds: 60,
        max_attempts: 1,
        submitted_at: now,
        submitted_by: None,
        depends_on: Vec::new(),
        on_parent_failure: Default::default(),
    })];
    if shape.finished {
        events.extend([
            TaskEvent::Started(TaskStarted {
                worker_id: "bench".into(),
                attempt: 1,
                started_at: now,
            }),
            TaskEvent::ProgressRecorded(TaskProgressRecorded {
                attempt: 1,
                percent: Some(50.0),
                message: Some("half way".into()),
                recorded_at: now,
            }),
            TaskEvent::Succeeded(TaskSucceeded {
                attempt: 1,
                result: Map::new(),
                exit_code: 0,
                artifacts: Vec::new(),
                finished_at: now,
            }),
        ]);
    }
    let events = events
        .iter()
        .map(|event| event.to_new_event(Uuid::new_v4(), Metadata::default()))
        .collect();
    store
        .append(&task_id.stream_id(), ExpectedVersion::NoStream, events)
        .await?;
    Ok(())
}
