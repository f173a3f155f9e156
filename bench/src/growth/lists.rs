//! The `lists` section of `growth`: `GET /v1/tasks` p50/p99 as the read
//! model grows. Serves the API in this process on a loopback port, seeds
//! tasks straight into the log (ten tenants, five kinds, fifty frontends, a
//! quarter finished), lets the service's own `tasks` projector catch up,
//! then times each query from several clients.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use taskledger::config::settings::{Role, Settings};
use taskledger::service::shutdown;
use taskledger::service::startup::Application;
use taskledger_events::tenant::TenantName;

use super::GrowthArgs;
use crate::measure::{millis, percentile};
use crate::seed::Shape;

const TENANTS: u64 = 10;
const KINDS: u64 = 5;
const FRONTENDS: u64 = 50;

/// The `index`-th seeded task: spread over tenants, kinds and frontends,
/// every fourth one finished.
fn shape(index: u64) -> Shape {
    Shape {
        tenant: format!("growth-{}", index % TENANTS)
            .parse::<TenantName>()
            .expect("a valid tenant name"),
        kind: format!("growth-kind-{}", index % KINDS),
        frontend_id: format!("frontend-{}", index % FRONTENDS),
        finished: index % 4 == 0,
    }
}

/// The queries timed at each size: a name for the output line and the
/// query string (a page of 100, the API's default).
const QUERIES: [(&str, &str); 5] = [
    ("first_page", ""),
    ("status", "status=succeeded"),
    ("kind_status", "kind=growth-kind-3&status=queued"),
    ("frontend", "frontend_id=frontend-17"),
    ("tenant", "tenant=growth-7"),
];

/// Runs the section against `settings`' (scratch) database.
///
/// # Errors
/// When the service cannot start, seeding fails, the projection does not
/// catch up, or a query fails.
pub(super) async fn lists(settings: &Settings, args: &GrowthArgs) -> anyhow::Result<()> {
    let mut settings = settings.clone();
    settings.listen = ([127, 0, 0, 1], 0).into();
    settings.roles = vec![Role::Api, Role::Projector];
    let (stop, signal) = shutdown::channel();
    let application = Application::build(&settings, signal).await?;
    let base = format!("http://{}/v1/tasks", application.local_addr()?);
    let store = application.store().clone();
    let server = tokio::spawn(application.run_until_stopped());
    let key = crate::api::bench_key(&store).await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.list_connections)
        .build()?;

    let mut smallest: Vec<Option<f64>> = vec![None; QUERIES.len()];
    for &size in &args.list_sizes {
        let have = seeded_tasks(&store).await?;
        if have < size {
            let began = Instant::now();
            crate::seed::tasks(&store, have, size - have, 16, shape).await?;
            println!(
                "growth lists seeded tasks={} in {:.1}s",
                size - have,
                began.elapsed().as_secs_f64()
            );
        }
        let behind = crate::api::catch_up_within(&store, Duration::from_secs(3600)).await?;
        println!(
            "growth lists tasks projection caught up in {:.1}s",
            behind.as_secs_f64()
        );
        let rows = seeded_tasks(&store).await?;
        for (index, (name, query)) in QUERIES.iter().enumerate() {
            let url = format!("{base}?{query}");
            let latencies = time_query(&client, &url, &key, args).await?;
            let p99 = millis(percentile(&latencies, 0.99));
            let base_p99 = *smallest[index].get_or_insert(p99);
            println!(
                "growth lists tasks={rows} query={name} p50_ms={:.2} p99_ms={p99:.2} \
                 p99_ratio_vs_smallest={:.2}",
                millis(percentile(&latencies, 0.50)),
                p99 / base_p99
            );
        }
    }
    stop.trigger();
    server.await.context("the server task failed")??;
    Ok(())
}

/// Rows in the tasks read model the benchmark seeded.
async fn seeded_tasks(store: &taskledger_events::postgres::PgEventStore) -> anyhow::Result<u64> {
    // The log, not the read model: seeding appends one stream per task.
    let client = store.pool().get().await?;
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE event_type = 'TaskSubmitted'",
            &[],
        )
        .await?
        .get(0);
    Ok(u64::try_from(count).unwrap_or(0))
}

/// `args.list_requests` GETs of `url` from `args.list_connections` clients
/// (after a warm-up of one per client); the sorted latencies.
async fn time_query(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    args: &GrowthArgs,
) -> anyhow::Result<Vec<Duration>> {
    let remaining = Arc::new(AtomicUsize::new(args.list_requests));
    let mut clients = Vec::new();
    for _ in 0..args.list_connections.max(1) {
        let (client, url, key) = (client.clone(), url.to_owned(), key.to_owned());
        let remaining = remaining.clone();
        clients.push(tokio::spawn(async move {
            get(&client, &url, &key).await?;
            let mut latencies = Vec::new();
            while remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .is_ok()
            {
                let began = Instant::now();
                get(&client, &url, &key).await?;
                latencies.push(began.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await??);
    }
    latencies.sort_unstable();
    Ok(latencies)
}

async fn get(client: &reqwest::Client, url: &str, key: &str) -> anyhow::Result<()> {
    let response = client.get(url).bearer_auth(key).send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        bail!(
            "GET {url} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}
