//! A tiny run of each benchmark, each against its own scratch database
//! (`tl_test_…`, dropped at the end; `scripts/test.sh` drops any a failed
//! run left), checking the lines it prints.

use std::time::Duration;

use crate::helpers::{bench, bench_on_scratch, database_url, line, server_client};

/// How long a tiny run of a benchmark against PostgreSQL alone may take.
const TINY_RUN: Duration = Duration::from_secs(120);

#[tokio::test]
async fn append_creates_its_database_and_prints_a_line_per_run() {
    let name = format!("tl_test_{}", uuid::Uuid::new_v4().simple());
    let run = bench(
        &database_url(&name),
        "append --writers 1,2 --batch 1 --seconds 0.3",
        Duration::from_secs(60),
    )
    .await;
    let header = run.stdout.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("# bench append against ")
            && header.contains(&name)
            && header.ends_with(
                "0.3 s per run, group commit; appends use ExpectedVersion::Exact on 8 streams per writer"
            ),
        "{run:#?}"
    );
    for writers in ["writers=1 ", "writers=2 "] {
        line(
            &run,
            writers,
            &["batch", "events_per_s", "p50_ms", "p99_ms", "lag_p99_ms"],
        );
    }
    server_client()
        .await
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .expect("the benchmark created its database");
}

#[tokio::test]
async fn rebuild_seeds_rebuilds_and_prints_the_rate() {
    let run = bench_on_scratch("rebuild --tasks 25 --batch 10", TINY_RUN).await;
    line(&run, "seeded ", &["events", "events_per_s"]);
    assert!(
        run.stdout
            .lines()
            .any(|line| line.starts_with("live projection caught up to ")),
        "{run:#?}"
    );
    let rebuilt = line(
        &run,
        "rebuild projection=tasks ",
        &["events", "batch", "events_per_s", "seconds"],
    );
    assert!(
        rebuilt.starts_with("rebuild projection=tasks events=100 batch=10 "),
        "{rebuilt}"
    );
    // Progress goes to standard error, the swap announced.
    assert!(run.stderr.contains(" swapping: built up to "), "{run:#?}");
}

#[tokio::test]
async fn api_serves_itself_and_prints_posts_gets_and_visibility() {
    let run = bench_on_scratch(
        "api --connections 2 --seconds 0.3 --visible-samples 6 --visible-clients 2",
        TINY_RUN,
    )
    .await;
    let fields = ["requests_per_s", "p50_ms", "p99_ms", "errors"];
    line(&run, "POST /v1/tasks connections=2 ", &fields);
    line(&run, "GET /v1/tasks/{id} connections=2 ", &fields);
    assert!(
        run.stdout
            .lines()
            .any(|line| line.starts_with("tasks projection caught up ")
                && line.ends_with(" ms after the POST run ended")),
        "{run:#?}"
    );
    line(
        &run,
        "submit-to-visible ",
        &["samples", "p50_ms", "p99_ms", "max_ms"],
    );
}

#[tokio::test]
async fn mo_signs_webhooks_the_service_verifies() {
    let run = bench_on_scratch("mo --rate 20 --seconds 1 --devices 3", TINY_RUN).await;
    let printed = line(
        &run,
        "mo-webhook ",
        &[
            "rate", "seconds", "answered", "failed", "p50_ms", "p99_ms", "max_ms",
        ],
    );
    // Every webhook verified and recorded: the signing key and the key the
    // service trusts are a pair.
    assert!(printed.contains(" answered=20 failed=0 "), "{run:#?}");
}

#[tokio::test]
async fn tasks_runs_containers_through_rabbitmq_and_times_the_relay() {
    let run = bench_on_scratch(
        "tasks --slots 1 --tasks 3 --relay-events 200",
        Duration::from_secs(240),
    )
    .await;
    let printed = line(
        &run,
        "tasks slots=1 ",
        &["tasks", "succeeded", "failed", "tasks_per_s", "seconds"],
    );
    assert!(
        printed.contains(" tasks=3 succeeded=3 failed=0 "),
        "{run:#?}"
    );
    let relay = line(&run, "relay ", &["events", "events_per_s", "seconds"]);
    assert!(
        relay.ends_with(" (publisher confirms, persistent messages)"),
        "{relay}"
    );
}
