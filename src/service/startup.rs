//! Building and running the service: [`Application::build`] prepares the
//! database and binds the listener; [`Application::run_until_stopped`] serves
//! until the shutdown signal.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use taskledger_events::postgres::PgEventStore;
use taskledger_projections::runtime::ProjectorStatus;
use tokio::net::TcpListener;
use tokio::sync::watch;

use taskledger_projections::api_keys::ApiKeysProjector;
use taskledger_projections::devices::DevicesProjector;
use taskledger_projections::ledgers::LedgersProjector;
use taskledger_projections::plans::PlansProjector;
use taskledger_projections::runtime::RuntimeOptions;
use taskledger_projections::tasks::TasksProjector;
use taskledger_projections::{Projector, ProjectorRuntime};

use uuid::Uuid;

use crate::adapters::blobs::BlobStore;
use crate::adapters::rabbitmq::Topology;
use crate::adapters::rockblock::{MoVerifier, MtClient, RockblockCredentials};
use crate::config::settings::Role;
use crate::config::settings::Settings;
use crate::config::FileConfig;
use crate::http::devices::MoPolicy;
use crate::http::{self, AppState};
use crate::service::database;
use crate::service::shutdown::Shutdown;
use crate::workers::gateway::{self, GatewayOptions};
use crate::workers::relay::{self, RelayOptions, RelayStatus};
use crate::workers::runner::{self, RunnerOptions};
use crate::workers::webhooks::tls::TrustedRoots;

/// A built, not yet running, service.
#[derive(Debug)]
pub struct Application {
    config: FileConfig,
    listener: TcpListener,
    store: PgEventStore,
    shutdown: Shutdown,
    log_lock_stall: Duration,
    read_wait: Duration,
    settings: Settings,
    mo: MoPolicy,
    webhook_roots: TrustedRoots,
    topology: Topology,
}

impl Application {
    /// Creates the database if needed, applies migrations, opens the store
    /// and binds the listen address (port 0 picks a free port).
    ///
    /// # Errors
    /// When the database cannot be prepared or the address cannot be bound.
    pub async fn build(settings: &Settings, shutdown: Shutdown) -> anyhow::Result<Self> {
        // A bad configuration stops start-up before anything else happens.
        let config = match &settings.config {
            Some(path) => FileConfig::load(path)?,
            None if settings.default_config => {
                tracing::info!(
                    "no TASKLEDGER_CONFIG: using the shipped default configuration (config/taskledger.toml)"
                );
                FileConfig::builtin()
            }
            None => FileConfig::default(),
        };
        tracing::info!(kinds = ?config.kinds.keys().collect::<Vec<_>>(), "task kinds configured");
        if settings.roles.contains(&Role::Runner) {
            // A Slurm kind's partition must exist where its jobs are sent.
            let file = settings.config.as_deref().map_or_else(
                || "the shipped configuration".to_owned(),
                |path| path.display().to_string(),
            );
            crate::config::slurm::check_partitions(&config, &file, "sinfo".as_ref())?;
        }
        let mo = mo_policy(&config, settings.config.as_deref())?;
        let webhook_roots = TrustedRoots::load(
            config.webhooks.ca_file.as_deref(),
            settings.config.as_deref().and_then(Path::parent),
        )?;
        let applied = database::prepare(settings).await?;
        if !applied.is_empty() {
            tracing::info!(?applied, "database migrated");
        }
        let store = database::open_store(settings)?;
        let installation = database::installation_id(&store).await?;
        let topology = Topology::for_installation(installation, settings.amqp_prefix.clone());
        tracing::info!(%installation, amqp_prefix = topology.prefix(), "installation");
        if settings.roles.contains(&Role::Api) {
            first_key_hint(&store, settings).await;
        }
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let log_lock_stall = Duration::try_from_secs_f64(settings.log_lock_stall_seconds).context(
            "TASKLEDGER_LOG_LOCK_STALL_SECONDS must be a non-negative number of seconds",
        )?;
        Ok(Self {
            config,
            listener,
            store,
            shutdown,
            log_lock_stall,
            read_wait: Duration::from_millis(settings.read_wait_ms),
            settings: settings.clone(),
            mo,
            webhook_roots,
            topology,
        })
    }

    /// The address actually bound.
    ///
    /// # Errors
    /// When the socket cannot report it.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("reading the bound address")
    }

    /// The structured configuration (task kinds).
    pub fn config(&self) -> &FileConfig {
        &self.config
    }

    /// The event store the service uses.
    pub fn store(&self) -> &PgEventStore {
        &self.store
    }

    /// Serves until the shutdown signal, then lets in-flight requests finish.
    /// A worker (projector, relay, runner, gateway, dependency checks) that
    /// stops while no shutdown was asked for stops the whole process, with
    /// an error naming it, so that its supervisor restarts it rather than
    /// leave a process that looks alive and does part of its job.
    ///
    /// # Errors
    /// When the server fails or a worker stopped unexpectedly.
    pub async fn run_until_stopped(mut self) -> anyhow::Result<()> {
        // Everything below stops on this signal: the outer one (SIGTERM, a
        // test), or a worker's unexpected end.
        let (stop_all, inner) = crate::service::shutdown::channel();
        {
            let mut outer = self.shutdown.clone();
            let stop_all = stop_all.clone();
            tokio::spawn(async move {
                outer.wait().await;
                stop_all.trigger();
            });
        }
        self.shutdown = inner;
        let address = self.local_addr()?;
        let roles = &self.settings.roles;
        tracing::info!(%address, ?roles, "taskledger listening");
        let config = Arc::new(self.config);
        let mut workers = Vec::new();
        let runs_tasks = roles.contains(&Role::Runner);
        let uses_broker = runs_tasks || roles.contains(&Role::Relay);
        if uses_broker && self.settings.amqp_url.is_none() {
            tracing::warn!(
                "NO AMQP_URL: jobs pass IN-PROCESS, which is right for one process only; \
                 set AMQP_URL (e.g. amqp://guest:guest@127.0.0.1:5672/%2f) to run jobs through RabbitMQ"
            );
        }
        let dependencies = Arc::new(crate::service::dependencies::Dependencies::new(
            config.clone(),
            runs_tasks,
            self.settings.amqp_url.clone().filter(|_| uses_broker),
        ));
        {
            let mut stop = self.shutdown.clone();
            workers.push((
                "dependency checks",
                tokio::spawn(dependencies.clone().watch(async move { stop.wait().await })),
            ));
        }
        // The projectors: each active in one process at a time, standing by
        // in the others; all stop on the same signal as the server.
        let mut tasks_projection = None;
        if roles.contains(&Role::Projector) {
            let (tasks, tasks_status) =
                spawn_projector(&self.store, TasksProjector, &self.shutdown);
            let (api_keys, _) = spawn_projector(&self.store, ApiKeysProjector, &self.shutdown);
            let (devices, _) = spawn_projector(&self.store, DevicesProjector, &self.shutdown);
            let (ledgers, _) = spawn_projector(&self.store, LedgersProjector, &self.shutdown);
            let (plans, _) = spawn_projector(&self.store, PlansProjector, &self.shutdown);
            workers.extend([
                ("tasks projector", tasks),
                ("api_keys projector", api_keys),
                ("devices projector", devices),
                ("ledgers projector", ledgers),
                ("plans projector", plans),
            ]);
            let mut stop = self.shutdown.clone();
            workers.push((
                "read-model statistics",
                tokio::spawn(taskledger_projections::statistics::keep(
                    self.store.clone(),
                    taskledger_projections::tables(),
                    async move { stop.wait().await },
                )),
            ));
            tasks_projection = Some(tasks_status);
        }
        let topology = self.topology.clone();
        if roles.contains(&Role::Relay) {
            match &self.settings.amqp_url {
                Some(amqp_url) => {
                    let options = RelayOptions {
                        amqp_url: amqp_url.clone(),
                        topology: topology.clone(),
                        kinds: config.kinds.keys().cloned().collect(),
                    };
                    let (status, _) = watch::channel(RelayStatus::default());
                    let mut stop = self.shutdown.clone();
                    workers.push((
                        "relay",
                        tokio::spawn(relay::run(
                            self.store.clone(),
                            options,
                            status,
                            async move { stop.wait().await },
                        )),
                    ));
                }
                None => tracing::info!(
                    "no AMQP_URL: the relay is not needed; runners take jobs in-process"
                ),
            }
        }
        if roles.contains(&Role::Runner) {
            let options = RunnerOptions {
                amqp_url: self.settings.amqp_url.clone(),
                topology,
                config: config.clone(),
                slots: self.settings.runner_slots,
                worker_id: self.settings.worker_id.clone().unwrap_or_else(|| {
                    format!("runner-{}", &Uuid::new_v4().simple().to_string()[..12])
                }),
                blobs: BlobStore::new(self.settings.data_dir.join("blobs")),
                work_dir: self
                    .settings
                    .work_dir
                    .clone()
                    .unwrap_or_else(|| self.settings.data_dir.join("work")),
                bind_out: config
                    .docker
                    .out
                    .binds(self.settings.docker_host.as_deref(), runner::runs_as_root()),
                lease_ttl: Duration::from_secs(self.settings.lease_ttl_seconds),
            };
            let mut stop = self.shutdown.clone();
            workers.push((
                "runner",
                tokio::spawn(runner::run(self.store.clone(), options, async move {
                    stop.wait().await
                })),
            ));
        }
        if roles.contains(&Role::Gateway) {
            match gateway_options(&config, &self.settings) {
                Some(options) => {
                    let mut stop = self.shutdown.clone();
                    workers.push(("gateway", tokio::spawn(gateway::run(
                        self.store.clone(),
                        options,
                        async move { stop.wait().await },
                    ))));
                }
                None => tracing::info!(
                    "no [rockblock] mt_url configured: the device gateway does not run; messages to devices stay queued"
                ),
            }
        }
        if roles.contains(&Role::Graphs) {
            let mut stop = self.shutdown.clone();
            workers.push((
                "graph follower",
                tokio::spawn(crate::workers::graphs::run(
                    self.store.clone(),
                    async move { stop.wait().await },
                )),
            ));
        }
        if roles.contains(&Role::Webhooks) {
            let mut stop = self.shutdown.clone();
            workers.push((
                "webhook deliverer",
                tokio::spawn(crate::workers::webhooks::run(
                    self.store.clone(),
                    config.webhooks.clone(),
                    self.webhook_roots.clone(),
                    async move { stop.wait().await },
                )),
            ));
        }
        let state = AppState {
            store: self.store,
            log_lock_stall: self.log_lock_stall,
            limits: Arc::new(http::limits::Limits::new(&config.limits)),
            key_watches: Arc::default(),
            key_cache: Arc::default(),
            console_sessions: Arc::new(http::console::Sessions::new(Duration::from_secs(
                self.settings.console_idle_seconds,
            ))),
            config,
            read_wait: self.read_wait,
            tasks_projection,
            blobs: BlobStore::new(self.settings.data_dir.join("blobs")),
            mo: self.mo,
            http_metrics: Arc::default(),
            shutdown: Some(self.shutdown.clone()),
            dependencies,
            installation: self
                .topology
                .installation()
                .map(|id| (id, self.topology.prefix().to_owned())),
        };
        let router = if roles.contains(&Role::Api) {
            http::router(state)
        } else {
            http::probes_router(state)
        };
        let supervisor = tokio::spawn(supervise(workers, stop_all.clone(), self.shutdown.clone()));
        let mut shutdown = self.shutdown;
        let served = axum::serve(self.listener, router)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await
            .context("serving HTTP");
        // The server ended (a signal, a worker, or its own failure): stop
        // the workers too and wait for them.
        stop_all.trigger();
        let unexpected = supervisor.await.context("the worker supervisor panicked")?;
        served?;
        if let Some(worker) = unexpected {
            anyhow::bail!(
                "the {worker} stopped unexpectedly, so the process stopped (a supervisor should restart it)"
            );
        }
        tracing::info!("taskledger stopped");
        Ok(())
    }
}

/// Waits for every worker to end. The first that ends while `shutdown` has
/// not begun is logged at once and triggers `stop_all`; its name is
/// returned.
async fn supervise(
    workers: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
    stop_all: crate::service::shutdown::ShutdownTrigger,
    shutdown: Shutdown,
) -> Option<&'static str> {
    use futures::StreamExt as _;
    let mut running: futures::stream::FuturesUnordered<_> = workers
        .into_iter()
        .map(|(name, handle)| async move { (name, handle.await) })
        .collect();
    let mut unexpected = None;
    while let Some((name, ended)) = running.next().await {
        if !shutdown.is_triggered() && unexpected.is_none() {
            match &ended {
                Ok(()) => tracing::error!(
                    worker = name,
                    "a worker stopped unexpectedly; stopping the process"
                ),
                Err(error) => {
                    tracing::error!(worker = name, %error, "a worker failed; stopping the process")
                }
            }
            unexpected = Some(name);
            stop_all.trigger();
        } else if let Err(error) = ended {
            tracing::error!(worker = name, %error, "a worker failed while stopping");
        }
    }
    unexpected
}

/// On a log without API keys, says how to make the first one (nothing can
/// be done through the API without one).
async fn first_key_hint(store: &PgEventStore, settings: &Settings) {
    let Ok(client) = store.pool().get().await else {
        return;
    };
    let none = client
        .query_opt(
            "SELECT 1 FROM events WHERE stream_id LIKE 'apikey-%' LIMIT 1",
            &[],
        )
        .await
        .is_ok_and(|row| row.is_none());
    if none {
        // The database is named the way every command names it (host, port
        // and name, never the password).
        let database = if settings.database_url.expose_secret()
            == crate::config::settings::DEFAULT_DATABASE_URL
        {
            String::new()
        } else {
            format!(
                "\n\nwith DATABASE_URL set as for this service (database {})",
                database::describe_url(settings.database_url.expose_secret())
            )
        };
        tracing::warn!(
            "this installation has no API keys yet. Make the first admin key with:\n\n    \
             taskledger keys create --name admin --scopes admin --all-tenants{database}\n\n\
             (it prints the key once, on its last line)"
        );
    }
}

/// The gateway's settings, when `[rockblock]` names an MT endpoint.
fn gateway_options(config: &FileConfig, settings: &Settings) -> Option<GatewayOptions> {
    let rockblock = config.rockblock.as_ref()?;
    let mt_url = rockblock.mt_url.clone()?;
    let credentials = RockblockCredentials {
        username: settings
            .rockblock_username
            .clone()
            .or_else(|| rockblock.username.clone())
            .unwrap_or_default(),
        password: settings
            .rockblock_password
            .clone()
            .or_else(|| rockblock.password.clone())
            .unwrap_or_default(),
    };
    Some(GatewayOptions {
        client: MtClient::new(reqwest::Client::new(), mt_url, credentials),
        max_attempts: rockblock.max_attempts.max(1),
        retry_backoff: Duration::from_secs(rockblock.retry_backoff_seconds),
        in_flight: settings.gateway_in_flight.max(1),
    })
}

/// How MO webhooks are checked, from `[rockblock]`: the public key file is
/// read (relative to the configuration file) and must hold an RSA key.
fn mo_policy(config: &FileConfig, config_path: Option<&Path>) -> anyhow::Result<MoPolicy> {
    let Some(rockblock) = &config.rockblock else {
        return Ok(MoPolicy::NotConfigured);
    };
    if !rockblock.verify_mo_jwt {
        tracing::warn!(
            "verify_mo_jwt = false: RockBLOCK webhooks are accepted WITHOUT checking their signature"
        );
        return Ok(MoPolicy::Unverified);
    }
    let file = rockblock.mo_public_key_file.as_ref().context(
        "[rockblock] needs mo_public_key_file (or verify_mo_jwt = false, which accepts forged webhooks)",
    )?;
    let file = match config_path.and_then(Path::parent) {
        Some(directory) if file.is_relative() => directory.join(file),
        _ => file.clone(),
    };
    let pem = std::fs::read(&file)
        .with_context(|| format!("reading mo_public_key_file {}", file.display()))?;
    let verifier = MoVerifier::from_pem(&pem)
        .map_err(|error| anyhow::anyhow!("mo_public_key_file {}: {error}", file.display()))?;
    Ok(MoPolicy::Verify(Arc::new(verifier)))
}

fn spawn_projector<P: Projector>(
    store: &PgEventStore,
    projector: P,
    shutdown: &Shutdown,
) -> (
    tokio::task::JoinHandle<()>,
    watch::Receiver<ProjectorStatus>,
) {
    let runtime = ProjectorRuntime::new(store.clone(), projector, RuntimeOptions::default());
    let status = runtime.status();
    let mut stop = shutdown.clone();
    (
        tokio::spawn(runtime.run(async move { stop.wait().await })),
        status,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_that_stops_unexpectedly_stops_the_others() {
        let (stop_all, shutdown) = crate::service::shutdown::channel();
        let mut waits = shutdown.clone();
        let patient = tokio::spawn(async move { waits.wait().await });
        let quitter = tokio::spawn(async {});
        let ended = tokio::time::timeout(
            Duration::from_secs(5),
            supervise(
                vec![("patient worker", patient), ("quitting worker", quitter)],
                stop_all,
                shutdown.clone(),
            ),
        )
        .await
        .expect("the supervisor stopped the patient worker too");
        assert_eq!(ended, Some("quitting worker"));
        assert!(shutdown.is_triggered());
    }

    #[tokio::test]
    async fn workers_that_stop_on_the_signal_are_not_unexpected() {
        let (stop_all, shutdown) = crate::service::shutdown::channel();
        let mut waits = shutdown.clone();
        let worker = tokio::spawn(async move { waits.wait().await });
        stop_all.trigger();
        assert_eq!(
            supervise(vec![("worker", worker)], stop_all.clone(), shutdown).await,
            None
        );
    }
}
