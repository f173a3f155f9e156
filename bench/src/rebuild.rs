//! `taskledger-bench rebuild`: how fast a projection is rebuilt blue/green
//! from the log. Seeds task lifecycles (submitted, started, progress,
//! succeeded: four events each) into the scratch database in
//! `DATABASE_URL`, brings the live `tasks` projection up to date, then
//! rebuilds it beside the live tables and swaps it in, printing progress
//! and the rate.

use std::time::Instant;

use anyhow::Context;
use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::{json, Map};
use taskledger::config::settings::Settings;
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::task::{
    TaskEvent, TaskId, TaskProgressRecorded, TaskStarted, TaskSubmitted, TaskSucceeded,
};
use taskledger_events::{EventStore, ExpectedVersion, Metadata};
use taskledger_projections::rebuild::{self, RebuildOptions};
use taskledger_projections::runtime::RuntimeOptions;
use taskledger_projections::tasks::TasksProjector;
use taskledger_projections::ProjectorRuntime;
use uuid::Uuid;

/// Options of `taskledger-bench rebuild`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RebuildBenchArgs {
    /// Task lifecycles (four events each) in the log before the rebuild;
    /// only what is missing is appended.
    #[arg(long, default_value_t = 50_000)]
    pub(crate) tasks: u64,
    /// Events per rebuild transaction.
    #[arg(long, default_value_t = RebuildOptions::default().batch_size)]
    pub(crate) batch: usize,
}

/// Runs the benchmark.
///
/// # Errors
/// When the database fails or the rebuild fails.
pub(crate) async fn rebuild(settings: &Settings, args: &RebuildBenchArgs) -> anyhow::Result<()> {
    let store = PgEventStore::connect(
        settings.database_url.expose_secret(),
        StoreOptions::default(),
    )?;
    let head = store.head_position().await?;
    let wanted = args.tasks * 4;
    if head < wanted {
        let began = Instant::now();
        seed(&store, (wanted - head) / 4).await?;
        let seeded = store.head_position().await? - head;
        println!(
            "seeded events={seeded} events_per_s={:.0}",
            seeded as f64 / began.elapsed().as_secs_f64()
        );
    }
    let head = store.head_position().await?;

    let began = Instant::now();
    let runtime = ProjectorRuntime::new(store.clone(), TasksProjector, RuntimeOptions::default());
    let before = runtime
        .catch_up(std::time::Duration::from_secs(600))
        .await
        .context("bringing the live tasks projection up to date")?;
    println!(
        "live projection caught up to {before} in {:.1}s",
        began.elapsed().as_secs_f64()
    );

    let options = RebuildOptions {
        batch_size: args.batch,
        ..RebuildOptions::default()
    };
    let report = rebuild::rebuild(&store, &TasksProjector, &options, &|at| eprintln!("{at}"))
        .await
        .context("rebuilding the tasks projection")?;
    println!(
        "rebuild projection=tasks events={head} batch={} events_per_s={:.0} seconds={:.2}",
        args.batch,
        report.events_per_s(),
        report.elapsed.as_secs_f64()
    );
    Ok(())
}

/// Appends `tasks` four-event task lifecycles from 8 concurrent writers.
async fn seed(store: &PgEventStore, tasks: u64) -> anyhow::Result<()> {
    let writers = 8;
    let mut handles = Vec::new();
    for writer in 0..writers {
        let store = store.clone();
        let count = tasks / writers + u64::from(writer < tasks % writers);
        handles.push(tokio::spawn(async move {
            for _ in 0..count {
                let task_id = TaskId(Uuid::new_v4());
                let now = Utc::now();
                let mut params = Map::new();
                params.insert("url".into(), json!("http://example.invalid/page"));
                let events = [
                    TaskEvent::Submitted(TaskSubmitted {
                        inputs: Default::default(),
                        task_id,
                        kind: "bench".into(),
                        params,
                        tenant: taskledger_events::tenant::TenantName::default_tenant(),
                        frontend_id: "bench".into(),
                        client_task_id: None,
                        priority: 0,
                        timeout_seconds: 60,
                        max_attempts: 1,
                        submitted_at: now,
                        submitted_by: None,
                        depends_on: Vec::new(),
                        on_parent_failure: Default::default(),
                    }),
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
                ];
                let events = events
                    .iter()
                    .map(|event| event.to_new_event(Uuid::new_v4(), Metadata::default()))
                    .collect();
                store
                    .append(&task_id.stream_id(), ExpectedVersion::NoStream, events)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    Ok(())
}
