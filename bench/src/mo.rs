//! `taskledger-bench mo`: the RockBLOCK mobile-originated webhook at a
//! fixed request rate (open loop: requests start on schedule whether or not
//! earlier ones answered), signed RS256 like the provider's and verified by
//! the service, spread over many devices. Prints the latency distribution.
//!
//! The webhooks are signed with the repository's *test* key
//! (`tests/fixtures/rockblock/`), which the service is configured to trust
//! for the run; no real provider key is involved.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};
use taskledger::config::settings::{Role, Settings};
use taskledger::service::shutdown;
use taskledger::service::startup::Application;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::measure::{millis, percentile};

const TEST_PRIVATE_KEY: &[u8] = include_bytes!("../../tests/fixtures/rockblock/mo-test-key.pem");
const TEST_PUBLIC_KEY: &[u8] = include_bytes!("../../tests/fixtures/rockblock/mo-test-key.pub.pem");

/// Options of `taskledger-bench mo`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MoBenchArgs {
    /// Requests per second.
    #[arg(long, default_value_t = 200)]
    pub(crate) rate: u32,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    pub(crate) seconds: u32,
    /// Devices the messages come from.
    #[arg(long, default_value_t = 100)]
    pub(crate) devices: u32,
}

/// Runs the benchmark against a service started on a loopback port.
///
/// # Errors
/// When the service cannot start or requests fail.
pub(crate) async fn mo(settings: &Settings, args: &MoBenchArgs) -> anyhow::Result<()> {
    let directory = std::env::temp_dir().join(format!("taskledger-bench-mo-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&directory)?;
    std::fs::write(directory.join("mo.pub.pem"), TEST_PUBLIC_KEY)?;
    let config = directory.join("taskledger.toml");
    std::fs::write(
        &config,
        "[rockblock]\nmo_public_key_file = \"mo.pub.pem\"\nverify_mo_jwt = true\n",
    )?;
    let mut settings = settings.clone();
    settings.config = Some(config);
    settings.listen = ([127, 0, 0, 1], 0).into();
    settings.roles = vec![Role::Api, Role::Projector];
    let (stop, signal) = shutdown::channel();
    let application = Application::build(&settings, signal).await?;
    let url = format!("http://{}/v1/rockblock/mo", application.local_addr()?);
    let server = tokio::spawn(application.run_until_stopped());
    let key = EncodingKey::from_rsa_pem(TEST_PRIVATE_KEY).context("the test key")?;

    // Bodies are made (and signed) before the clock starts.
    let run = Uuid::new_v4().as_u128();
    let total = args.rate * args.seconds;
    let mut bodies = Vec::with_capacity(total as usize);
    for index in 0..total {
        let device = index % args.devices.max(1);
        let imei = format!(
            "3{:014}",
            (run % 1_000_000_000) as u64 * 1000 + u64::from(device)
        );
        let fields = [
            ("imei", imei),
            ("serial", (10_000 + device).to_string()),
            ("momsn", index.to_string()),
            ("transmit_time", "26-11-24 00:00:00".to_owned()),
            ("iridium_latitude", "52.3867".to_owned()),
            ("iridium_longitude", "-0.2938".to_owned()),
            ("iridium_cep", "8.0".to_owned()),
            ("data", hex::encode(format!("bench message {index}"))),
        ];
        let claims: Map<String, Value> = fields
            .iter()
            .map(|(name, value)| ((*name).to_owned(), Value::String(value.clone())))
            .collect();
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key)?;
        let mut body: Vec<String> = fields
            .iter()
            .map(|(name, value)| format!("{name}={}", value.replace(' ', "+").replace(':', "%3A")))
            .collect();
        body.push(format!("JWT={jwt}"));
        bodies.push(body.join("&"));
    }

    let client = reqwest::Client::new();
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let began = Instant::now();
    let mut requests = Vec::with_capacity(total as usize);
    for (index, body) in bodies.into_iter().enumerate() {
        let due = began + interval * u32::try_from(index).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due.into()).await;
        let client = client.clone();
        let url = url.clone();
        let latencies = latencies.clone();
        let failures = failures.clone();
        requests.push(tokio::spawn(async move {
            let sent = Instant::now();
            let response = client
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await;
            match response {
                Ok(response) if response.status().is_success() => {
                    latencies.lock().await.push(sent.elapsed());
                }
                _ => {
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for request in requests {
        request.await?;
    }
    let elapsed = began.elapsed();
    let mut latencies = std::mem::take(&mut *latencies.lock().await);
    latencies.sort_unstable();
    println!(
        "mo-webhook rate={} seconds={:.1} answered={} failed={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        args.rate,
        elapsed.as_secs_f64(),
        latencies.len(),
        failures.load(std::sync::atomic::Ordering::Relaxed),
        millis(percentile(&latencies, 0.50)),
        millis(percentile(&latencies, 0.99)),
        millis(latencies.last().copied().unwrap_or_default()),
    );
    stop.trigger();
    server.await??;
    let _ = std::fs::remove_dir_all(&directory);
    Ok(())
}
