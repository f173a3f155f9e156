//! `taskledger-bench gateway`: mobile-terminated messages per second
//! through the device gateway with one message in flight and with several,
//! in one run, against a stand-in for the RockBLOCK MT endpoint on a
//! loopback port that answers `OK,<id>` after a realistic delay (the
//! provider's round trip). A message counts once its `sent` status is in
//! the read model: the attempt recorded, the call answered, the outcome
//! recorded and projected.
//!
//! Each run queues its own messages, spread over more devices than there
//! are messages in flight (one device's messages go one at a time), and
//! waits for them all; the first in-flight count is the baseline every
//! other is compared with.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use secrecy::ExposeSecret;
use taskledger::adapters::rockblock::{MtClient, RockblockCredentials};
use taskledger::commands::execute_device;
use taskledger::config::settings::{Role, Settings};
use taskledger::service::shutdown;
use taskledger::service::startup::Application;
use taskledger::workers::gateway::{self, GatewayOptions};
use taskledger_events::device::{DeviceCommand, Imei, QueueDeviceMessage};
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::Metadata;
use uuid::Uuid;

/// Options of `taskledger-bench gateway`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct GatewayBenchArgs {
    /// Messages in flight, comma-separated; the first is the baseline.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub(crate) in_flight: Vec<usize>,
    /// How long the stand-in takes to answer each message, milliseconds.
    #[arg(long, default_value_t = 500)]
    pub(crate) delay_ms: u64,
    /// Messages per run: this many for each message in flight.
    #[arg(long, default_value_t = 12)]
    pub(crate) rounds: usize,
}

/// The stand-in's counters.
#[derive(Debug, Default)]
struct StandIn {
    answered: AtomicU64,
    open: AtomicUsize,
    most_open: AtomicUsize,
}

/// Runs the benchmark.
///
/// # Errors
/// When the service cannot start, the database fails, or a run does not
/// finish within ten times its ideal time plus a minute.
pub(crate) async fn gateway(settings: &Settings, args: &GatewayBenchArgs) -> anyhow::Result<()> {
    let delay = Duration::from_millis(args.delay_ms);
    let stand_in = Arc::new(StandIn::default());
    let mt_url = serve_stand_in(Arc::clone(&stand_in), delay).await?;

    // The projector keeps `device_messages`, the gateway's work list; the
    // gateway itself is started per run with its in-flight count.
    let mut settings = settings.clone();
    settings.listen = ([127, 0, 0, 1], 0).into();
    settings.roles = vec![Role::Projector];
    let (stop, signal) = shutdown::channel();
    let application = Application::build(&settings, signal).await?;
    let server = tokio::spawn(application.run_until_stopped());
    let store = PgEventStore::connect(
        settings.database_url.expose_secret(),
        StoreOptions::default(),
    )?;
    let client = MtClient::new(
        reqwest::Client::new(),
        mt_url,
        RockblockCredentials {
            username: "bench".to_owned(),
            password: "bench".into(),
        },
    );
    println!(
        "# bench gateway: stand-in answers after {} ms; {} messages per message in flight, each run on its own devices",
        args.delay_ms, args.rounds
    );

    let mut baseline: Option<f64> = None;
    for &in_flight in &args.in_flight {
        let in_flight = in_flight.max(1);
        let messages = in_flight * args.rounds.max(1);
        // Twice as many devices as slots: a free slot always finds one.
        let devices = 2 * in_flight;
        let run = Uuid::new_v4();
        let mut ids = Vec::with_capacity(messages);
        for index in 0..messages {
            let imei = Imei::new(&format!(
                "9{:08}{:06}",
                run.as_u128() % 100_000_000,
                index % devices
            ))
            .map_err(|reason| anyhow::anyhow!("a bench IMEI: {reason}"))?;
            let message_id = Uuid::new_v4();
            execute_device(
                &store,
                &imei,
                DeviceCommand::Queue(QueueDeviceMessage {
                    message_id,
                    payload: format!("bench message {index}").into_bytes(),
                    flush: false,
                    queued_at: Utc::now(),
                    queued_by: None,
                }),
                Metadata::of_actor("bench"),
            )
            .await
            .context("queueing a bench message")?;
            ids.push(message_id);
        }
        let database = store.pool().get().await.context("a database connection")?;
        let limit = Duration::from_secs(60) + 10 * delay * u32::try_from(args.rounds).unwrap_or(1);
        wait_for(&database, &ids, "queued", Duration::from_secs(60)).await?;

        stand_in.most_open.store(0, Ordering::Relaxed);
        let answered_before = stand_in.answered.load(Ordering::Relaxed);
        let (stop_gateway, stopped) = tokio::sync::oneshot::channel::<()>();
        let options = GatewayOptions {
            client: client.clone(),
            max_attempts: 5,
            retry_backoff: Duration::from_secs(30),
            in_flight,
        };
        let began = Instant::now();
        let running = tokio::spawn(gateway::run(store.clone(), options, async move {
            let _ = stopped.await;
        }));
        wait_for(&database, &ids, "sent", limit).await?;
        let elapsed = began.elapsed();
        let _ = stop_gateway.send(());
        running.await.context("the gateway panicked")?;

        let rate = messages as f64 / elapsed.as_secs_f64();
        let baseline = *baseline.get_or_insert(rate);
        println!(
            "gateway in_flight={in_flight} messages_per_s={rate:.2} ratio_vs_{}={:.2} messages={messages} devices={devices} delay_ms={} seconds={:.2} provider_calls={} provider_most_open={}",
            args.in_flight[0].max(1),
            rate / baseline,
            args.delay_ms,
            elapsed.as_secs_f64(),
            stand_in.answered.load(Ordering::Relaxed) - answered_before,
            stand_in.most_open.load(Ordering::Relaxed),
        );
    }
    stop.trigger();
    server.await??;
    Ok(())
}

/// Waits until every message of `ids` has `status` in `device_messages`.
async fn wait_for(
    database: &tokio_postgres::Client,
    ids: &[Uuid],
    status: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let expected = i64::try_from(ids.len()).unwrap_or(i64::MAX);
    loop {
        let count: i64 = database
            .query_one(
                "SELECT count(*) FROM device_messages WHERE message_id = ANY($1) AND status = $2",
                &[&ids, &status],
            )
            .await?
            .get(0);
        if count == expected {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {count} of {expected} bench messages became {status} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Serves the MT stand-in on a loopback port: every POST is answered
/// `OK,<id>` after `delay`, many at once as the provider does. Its URL.
async fn serve_stand_in(stand_in: Arc<StandIn>, delay: Duration) -> anyhow::Result<String> {
    async fn mt(
        axum::extract::State((stand_in, delay)): axum::extract::State<(Arc<StandIn>, Duration)>,
        _body: String,
    ) -> String {
        let open = stand_in.open.fetch_add(1, Ordering::Relaxed) + 1;
        stand_in.most_open.fetch_max(open, Ordering::Relaxed);
        tokio::time::sleep(delay).await;
        stand_in.open.fetch_sub(1, Ordering::Relaxed);
        let id = stand_in.answered.fetch_add(1, Ordering::Relaxed) + 1;
        format!("OK,{id}")
    }
    let app = axum::Router::new()
        .route("/rockblock/MT", axum::routing::post(mt))
        .with_state((stand_in, delay));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{address}/rockblock/MT"))
}
