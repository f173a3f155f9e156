//! A tiny run of each benchmark, each against its own scratch database
//! (`tl_test_…`, dropped at the end; `scripts/test.sh` drops any a failed
//! run left), checking the lines it prints.

use std::time::Duration;

use taskledger_events::testing::TestDatabase;

use crate::helpers::{bench, bench_ending, bench_on_scratch, database_url, line, server_client};

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
async fn verify_seeds_verifies_in_full_and_from_an_anchor() {
    let run = bench_on_scratch("verify --events 40,100 --tail 20 --runs 2", TINY_RUN).await;
    // One line per size.
    line(&run, "verify full events=40 ", &["seconds", "events_per_s"]);
    line(
        &run,
        "verify full events=100 ",
        &["seconds", "events_per_s"],
    );
    let incremental = line(
        &run,
        "verify incremental ",
        &[
            "events",
            "of",
            "runs",
            "median_ms",
            "max_ms",
            "events_per_s",
            "full_over_incremental",
        ],
    );
    assert!(
        incremental.starts_with("verify incremental events=20 of=100 runs=2 "),
        "{incremental}"
    );
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

/// The `key=` words of `line` that name what a run was (everything before
/// the first measured figure).
fn shape(line: &str) -> String {
    line.split_whitespace()
        .take_while(|word| !word.starts_with("tasks=") && !word.starts_with("ms_per_task="))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn tasks_alternates_with_the_bare_docker_engine_and_prints_the_overhead() {
    let run = bench_on_scratch(
        "tasks --slots 2 --tasks 2 --rounds 2 --relay-events 0",
        Duration::from_secs(240),
    )
    .await;
    let runs: Vec<String> = run
        .stdout
        .lines()
        .filter(|line| line.starts_with("tasks ") || line.starts_with("bare "))
        .map(shape)
        .collect();
    // Each round: taskledger, then each bare engine, at the same parallelism.
    let round = [
        "tasks slots=2",
        "bare docker-run parallel=2",
        "bare docker-api parallel=2",
    ];
    assert_eq!(runs, [round, round].concat(), "{run:#?}");
    for line in run.stdout.lines().filter(|line| line.starts_with("bare ")) {
        assert!(line.contains(" tasks=2 failed=0 "), "{line}");
    }
    let bare = run
        .stdout
        .lines()
        .find(|line| line.starts_with("bare docker-run "))
        .unwrap_or_default();
    // The same image, sandboxed like the runner's containers.
    assert!(
        bare.contains("docker run --rm --network none --cap-drop ALL")
            && bare.contains("--read-only")
            && bare.contains("taskledger-test-busybox:latest true)"),
        "{bare}"
    );
    let fields = [
        "ms_per_task",
        "bare_ms_per_task",
        "overhead_ms",
        "ratio",
        "tasks_per_s",
        "bare_tasks_per_s",
    ];
    for baseline in ["docker-run", "docker-api"] {
        let overhead = line(&run, &format!("overhead {baseline} slots=2 "), &fields);
        assert!(overhead.contains("over 2 rounds"), "{overhead}");
    }
    assert!(
        !run.stdout.lines().any(|line| line.starts_with("relay ")),
        "--relay-events 0 skips the relay run: {run:#?}"
    );
}

#[tokio::test]
async fn tasks_on_slurm_measures_bare_sbatch_and_names_a_refused_kind() {
    let database = TestDatabase::create().await;
    let (run, status) = bench_ending(
        &database.url,
        "tasks --executor slurm --slots 1 --tasks 1 --relay-events 0",
        Duration::from_secs(240),
    )
    .await;
    database.drop_database().await;
    let bare = line(
        &run,
        "bare sbatch parallel=1 ",
        &["tasks", "failed", "tasks_per_s", "seconds"],
    );
    assert!(bare.contains(" tasks=1 failed=0 "), "{bare}");
    assert!(
        bare.contains("sbatch --wait --quiet --partition=debug "),
        "{bare}"
    );
    if status.success() {
        // A build whose configuration knows `executor = "slurm"`.
        line(
            &run,
            "tasks slots=1 ",
            &["tasks", "succeeded", "failed", "tasks_per_s", "seconds"],
        );
        line(
            &run,
            "overhead sbatch slots=1 ",
            &["ms_per_task", "bare_ms_per_task", "overhead_ms", "ratio"],
        );
    } else {
        assert!(
            run.stderr
                .contains("this build's configuration refuses the benchmark's Slurm kind")
                && run.stderr.contains("executor = \"slurm\""),
            "{run:#?}"
        );
        assert!(
            !run.stdout.lines().any(|line| line.starts_with("overhead ")),
            "{run:#?}"
        );
    }
}

#[tokio::test]
async fn gateway_sends_through_a_stand_in_and_prints_the_ratio() {
    let run = bench_on_scratch("gateway --in-flight 1,4 --delay-ms 50 --rounds 2", TINY_RUN).await;
    let fields = [
        "messages_per_s",
        "ratio_vs_1",
        "messages",
        "devices",
        "delay_ms",
        "seconds",
        "provider_calls",
        "provider_most_open",
    ];
    let one = line(&run, "gateway in_flight=1 ", &fields);
    assert!(
        one.contains(" ratio_vs_1=1.00 messages=2 devices=2 delay_ms=50 ")
            && one.ends_with(" provider_calls=2 provider_most_open=1"),
        "{run:#?}"
    );
    let four = line(&run, "gateway in_flight=4 ", &fields);
    // Every message sent once; the stand-in saw several at once.
    assert!(four.contains(" messages=8 devices=8 "), "{four}");
    assert!(four.contains(" provider_calls=8 "), "{four}");
    assert!(!four.ends_with(" provider_most_open=1"), "{four}");
}

#[tokio::test]
async fn webhooks_delivers_to_its_receiver_and_prints_rate_latency_and_the_goal() {
    // Two webhooks per tenant: every completion is two deliveries.
    let run = bench_on_scratch(
        "webhooks --webhooks 10 --tenants 5 --burst 20 --rate 20 --seconds 1",
        TINY_RUN,
    )
    .await;
    let warm_up = line(&run, "webhooks warm_up ", &["deliveries", "seconds"]);
    assert!(warm_up.contains(" deliveries=10 "), "{warm_up}");
    let bare = line(
        &run,
        "webhooks bare_posts ",
        &["senders", "posts", "posts_per_s", "seconds"],
    );
    assert!(
        bare.starts_with("webhooks bare_posts senders=10 posts=40 "),
        "{bare}"
    );
    let burst = line(
        &run,
        "webhooks burst ",
        &[
            "webhooks",
            "tenants",
            "completions",
            "deliveries",
            "deliveries_per_s",
            "ratio_vs_bare",
            "append_seconds",
            "seconds",
        ],
    );
    assert!(
        burst.contains(" webhooks=10 tenants=5 completions=20 deliveries=40 "),
        "{burst}"
    );
    let paced = line(
        &run,
        "webhooks paced ",
        &[
            "completions_per_s",
            "achieved_per_s",
            "deliveries",
            "p50_ms",
            "p99_ms",
            "max_ms",
            "ratio_p99_vs_goal",
        ],
    );
    assert!(paced.contains(" deliveries=40 "), "{paced}");
    // The goal is stated for 1,000 webhooks at 200/s: not this run's.
    let goal: Vec<&str> = run
        .stdout
        .lines()
        .filter(|line| line.starts_with("webhooks goal p99_ms<100 at 200 completions/s"))
        .collect();
    assert_eq!(goal.len(), 1, "{run:#?}");
    assert!(
        goal[0].contains("not checked (this run: 20 completions/s, 10 webhooks)"),
        "{goal:?}"
    );
}

#[tokio::test]
async fn tasks_against_celery_alternates_both_and_prints_each_ratio() {
    // Installs Celery into the benchmark's own virtual environment on the
    // first run (from the package index), so it is given longer.
    let run = bench_on_scratch(
        "tasks --celery --tasks 10 --submitters 1,2 --paced-rate 50",
        Duration::from_secs(900),
    )
    .await;
    let measured = ["tasks", "failed", "tasks_per_s", "p50_ms", "p99_ms"];
    for what in ["submitters=1", "submitters=2", "paced=50/s"] {
        for system in ["taskledger", "celery"] {
            let printed = line(&run, &format!("{system} {what} "), &measured);
            assert!(printed.contains(" tasks=10 failed=0 "), "{run:#?}");
        }
        let ratio = line(
            &run,
            &format!("ratio {what} "),
            &["tasks_per_s", "p50", "p99"],
        );
        assert!(ratio.contains("(taskledger over Celery; "), "{ratio}");
    }
    // Both systems' runs alternate: taskledger first, then Celery, per plan.
    let order: Vec<String> = run
        .stdout
        .lines()
        .filter(|line| line.starts_with("taskledger ") || line.starts_with("celery "))
        .map(|line| {
            line.split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let expected: Vec<String> = ["submitters=1", "submitters=2", "paced=50/s"]
        .into_iter()
        .flat_map(|what| [format!("taskledger {what}"), format!("celery {what}")])
        .collect();
    assert_eq!(order, expected, "{run:#?}");
    assert!(!run.stdout.contains("# warning:"), "{run:#?}");
}
