//! All configuration, in one place: command-line flags with environment
//! variable fallbacks. Nothing else in taskledger reads the environment
//! (Docker clients read the standard `DOCKER_HOST` themselves).

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

/// The database used when `DATABASE_URL` is not set; created if missing.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/taskledger";

/// The settings a process runs with, resolved from the command line and the
/// environment. Each subcommand parses only the groups of options it uses
/// ([`DatabaseArgs`], [`ServeArgs`], …) and fills the rest with defaults, so
/// `taskledger keys create --help` lists the options `keys create` reads.
#[derive(Debug, Clone)]
pub struct Settings {
    /// PostgreSQL holding the event log and the read models. Never printed
    /// (`Debug` redacts it: the URL may hold a password).
    pub database_url: SecretString,
    /// Whether a missing database is created (`serve` and `migrate` do;
    /// commands that write refuse unless `--create-database` is given).
    pub create_database: bool,
    /// RabbitMQ for task jobs and the event feed; `None`: jobs pass
    /// in-process.
    pub amqp_url: Option<String>,
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// A TOML file with task kinds and other structured settings.
    pub config: Option<PathBuf>,
    /// With no `config` file: load the shipped default configuration
    /// (`config/taskledger.toml`, built into the binary). `serve` does;
    /// tests and tools start with no kinds.
    pub default_config: bool,
    /// Where artifacts (task output files) and uploaded inputs are stored.
    pub data_dir: PathBuf,
    /// Where runners make attempts' working directories (`None`: `work/`
    /// in `data_dir`).
    pub work_dir: Option<PathBuf>,
    /// The Docker engine the Docker client reaches (its own `DOCKER_HOST`;
    /// `None`: the local socket). Read only to choose how `/out` leaves a
    /// container (`[docker] out = "auto"`).
    pub docker_host: Option<String>,
    /// Log filter, in `tracing` syntax.
    pub log_filter: String,
    /// Connections in each of the two database pools (the event store's
    /// own, and the one for read models and everything else).
    pub db_pool_size: usize,
    /// How long taking a connection from either pool may wait before the
    /// request is answered 503 with `Retry-After`.
    pub db_pool_wait_ms: u64,
    /// `/readyz` fails while one transaction has held the log lock longer.
    pub log_lock_stall_seconds: f64,
    /// How long a read given `min_version` or `min_position` waits.
    pub read_wait_ms: u64,
    /// How long a console session may go without a request before it ends.
    pub console_idle_seconds: u64,
    /// What this process does.
    pub roles: Vec<Role>,
    /// Prefix of every RabbitMQ exchange and queue name; `None`: one derived
    /// from this installation's id (`taskledger-<id>`), so installations
    /// sharing a broker never share queues.
    pub amqp_prefix: Option<String>,
    /// Attempts a runner process runs at once (also its prefetch).
    pub runner_slots: usize,
    /// This runner's name in the log.
    pub worker_id: Option<String>,
    /// A running attempt's lease lasts this long unrenewed (the same for
    /// every runner of an installation).
    pub lease_ttl_seconds: u64,
    /// Messages the device gateway has with the provider at once (one
    /// per device at a time).
    pub gateway_in_flight: usize,
    /// The RockBLOCK account's user name.
    pub rockblock_username: Option<String>,
    /// The RockBLOCK account's password. Never printed (`Debug` redacts
    /// it).
    pub rockblock_password: Option<SecretString>,
}

/// Which database: every subcommand that reads or writes the log.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL holding the event log and the read models.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        global = true,
        hide_env_values = true,
        value_parser = secret
    )]
    pub database_url: SecretString,

    /// Connections in each of the two database pools: the event store's own
    /// and the one for read models and everything else (opened as needed).
    #[arg(
        long,
        env = "TASKLEDGER_DB_POOL_SIZE",
        default_value_t = 16,
        global = true
    )]
    pub db_pool_size: usize,

    /// How long (milliseconds) taking a connection from either pool may
    /// wait; then the request is answered 503 with Retry-After instead of
    /// waiting without bound.
    #[arg(
        long,
        env = "TASKLEDGER_DB_POOL_WAIT_MS",
        default_value_t = 5_000,
        global = true
    )]
    pub db_pool_wait_ms: u64,
}

/// For commands that write: whether a missing database may be created.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateDatabaseArgs {
    /// Create the database if it does not exist. Without it a command that
    /// writes refuses a missing database, so a mistyped or forgotten
    /// DATABASE_URL does not start a second, empty installation.
    #[arg(long, global = true)]
    pub create_database: bool,
}

/// RabbitMQ: the service and the benchmarks that use it.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// RabbitMQ for task jobs and the event feed (e.g.
    /// amqp://guest:guest@127.0.0.1:5672/%2f). Unset: jobs pass in-process
    /// (one process only).
    #[arg(long, env = "AMQP_URL")]
    pub amqp_url: Option<String>,

    /// Prefix of every RabbitMQ exchange and queue name. Default:
    /// `taskledger-` and this installation's id, so installations sharing
    /// a broker never share queues.
    #[arg(long, env = "TASKLEDGER_AMQP_PREFIX")]
    pub amqp_prefix: Option<String>,
}

/// Task kinds and where files go: the service, and `cleanup`.
#[derive(Debug, Clone, clap::Args)]
pub struct FilesArgs {
    /// Where artifacts (task output files) and uploaded inputs are stored.
    #[arg(long, env = "TASKLEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// Everything `taskledger serve` reads.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The database.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// The broker.
    #[command(flatten)]
    pub broker: BrokerArgs,

    /// Files.
    #[command(flatten)]
    pub files: FilesArgs,

    /// A TOML file with task kinds and other structured settings. Unset:
    /// the shipped default configuration (config/taskledger.toml, built
    /// into the binary).
    #[arg(long, env = "TASKLEDGER_CONFIG")]
    pub config: Option<PathBuf>,

    /// Where the HTTP API listens. Loopback unless told otherwise.
    #[arg(long, env = "TASKLEDGER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// `/readyz` fails while one transaction has held the log lock longer
    /// than this many seconds (every append waits behind it).
    #[arg(
        long,
        env = "TASKLEDGER_LOG_LOCK_STALL_SECONDS",
        default_value_t = 30.0
    )]
    pub log_lock_stall_seconds: f64,

    /// How long a read given `min_version` or `min_position` waits for the
    /// read model to catch up before answering 503 with Retry-After.
    #[arg(long, env = "TASKLEDGER_READ_WAIT_MS", default_value_t = 2_000)]
    pub read_wait_ms: u64,

    /// A console session (`/console/`) ends after this many seconds without
    /// a request; its key then has to be given again.
    #[arg(long, env = "TASKLEDGER_CONSOLE_IDLE_SECONDS", default_value_t = 1_800)]
    pub console_idle_seconds: u64,

    /// What this process does, comma-separated: `api` (the HTTP API; without
    /// it only /healthz and /readyz are served), `projector` (the read
    /// models), `relay` (log → RabbitMQ), `runner` (runs tasks), `gateway`
    /// (RockBLOCK), `webhooks` (delivers webhooks), `graphs` (releases
    /// tasks whose parents succeeded). Several processes with different roles share the work
    /// safely.
    #[arg(
        long,
        env = "TASKLEDGER_ROLES",
        value_delimiter = ',',
        default_value = "api,projector,relay,runner,gateway,webhooks,graphs"
    )]
    pub roles: Vec<Role>,

    /// Attempts a runner process runs at once (also its prefetch).
    #[arg(long, env = "TASKLEDGER_RUNNER_SLOTS", default_value_t = 2)]
    pub runner_slots: usize,

    /// This runner's name in the log (default: `runner-` and a random id).
    #[arg(long, env = "TASKLEDGER_WORKER_ID")]
    pub worker_id: Option<String>,

    /// Where a runner makes its attempts' working directories (Docker's
    /// bind-mounted `/out`, Slurm jobs, local commands). Default: `work/`
    /// in the data directory.
    #[arg(long, env = "TASKLEDGER_WORK_DIR")]
    pub work_dir: Option<PathBuf>,

    /// Seconds a running attempt's lease lasts unrenewed (it is renewed
    /// every third of this): a dead runner's attempt is retried, and its
    /// slot of a kind's `max_running` freed, this long after its last
    /// renewal. Give every runner of an installation the same value.
    #[arg(
        long,
        env = "TASKLEDGER_LEASE_TTL_SECONDS",
        default_value_t = 15,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub lease_ttl_seconds: u64,

    /// Messages the device gateway has with RockBLOCK at once: different
    /// devices overlap, one device's messages go one at a time, in order.
    #[arg(
        long,
        env = "TASKLEDGER_GATEWAY_IN_FLIGHT",
        default_value_t = 8,
        value_parser = clap::value_parser!(u64).range(1..=256)
    )]
    pub gateway_in_flight: u64,

    /// The RockBLOCK account's user name (overrides `[rockblock] username`).
    #[arg(long, env = "ROCKBLOCK_USERNAME")]
    pub rockblock_username: Option<String>,

    /// The RockBLOCK account's password (overrides `[rockblock] password`).
    /// Never logged.
    #[arg(
        long,
        env = "ROCKBLOCK_PASSWORD",
        hide_env_values = true,
        value_parser = secret
    )]
    pub rockblock_password: Option<SecretString>,
}

impl ServeArgs {
    /// The service's settings: these options, a missing database created,
    /// the shipped default configuration when no file is named.
    pub fn settings(&self, log_filter: &str) -> Settings {
        let mut settings = Settings::from_database(&self.database, log_filter);
        settings.create_database = true;
        settings.amqp_url.clone_from(&self.broker.amqp_url);
        settings.amqp_prefix.clone_from(&self.broker.amqp_prefix);
        settings.data_dir.clone_from(&self.files.data_dir);
        settings.config.clone_from(&self.config);
        settings.default_config = true;
        settings.listen = self.listen;
        settings.log_lock_stall_seconds = self.log_lock_stall_seconds;
        settings.read_wait_ms = self.read_wait_ms;
        settings.console_idle_seconds = self.console_idle_seconds;
        settings.roles.clone_from(&self.roles);
        settings.runner_slots = self.runner_slots;
        settings.worker_id.clone_from(&self.worker_id);
        settings.work_dir.clone_from(&self.work_dir);
        // The Docker client's own variable, read here so nothing else
        // reads the environment.
        settings.docker_host = std::env::var("DOCKER_HOST").ok();
        settings.lease_ttl_seconds = self.lease_ttl_seconds;
        settings.gateway_in_flight = usize::try_from(self.gateway_in_flight).unwrap_or(1);
        settings
            .rockblock_username
            .clone_from(&self.rockblock_username);
        settings
            .rockblock_password
            .clone_from(&self.rockblock_password);
        settings
    }
}

/// A secret option's value, kept where `Debug` cannot show it.
fn secret(text: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(text.into())
}

/// Whether log lines and progress may be coloured: only on a terminal, and
/// never when `NO_COLOR` is set (<https://no-color.org>).
pub fn colour(stream_is_terminal: bool) -> bool {
    stream_is_terminal && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

/// A part of the service a process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The HTTP API.
    Api,
    /// The projectors (read models).
    Projector,
    /// The relay from the log to RabbitMQ.
    Relay,
    /// The task runner.
    Runner,
    /// The device gateway (RockBLOCK mobile-terminated messages).
    Gateway,
    /// The webhook deliverer.
    Webhooks,
    /// The graph follower: releases (or cancels) tasks waiting for their
    /// parents.
    Graphs,
}

impl Settings {
    /// Settings for tests and embedding: the given database, the `api` and
    /// `projector` roles only, everything else at its default, listening on
    /// an ephemeral loopback port, no task kinds.
    pub fn for_database(database_url: impl Into<String>) -> Self {
        Self {
            database_url: SecretString::from(database_url.into()),
            create_database: true,
            amqp_url: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            config: None,
            default_config: false,
            data_dir: PathBuf::from("./data"),
            work_dir: None,
            docker_host: None,
            log_filter: "info".into(),
            db_pool_size: 16,
            db_pool_wait_ms: 5_000,
            log_lock_stall_seconds: 30.0,
            read_wait_ms: 2_000,
            console_idle_seconds: 1_800,
            // Tests of the API must not have their tasks run.
            roles: vec![Role::Api, Role::Projector],
            amqp_prefix: None,
            runner_slots: 2,
            worker_id: None,
            lease_ttl_seconds: 15,
            gateway_in_flight: 8,
            rockblock_username: None,
            rockblock_password: None,
        }
    }

    /// The settings of a command that only needs the database: a missing
    /// database is not created.
    pub fn from_database(database: &DatabaseArgs, log_filter: &str) -> Self {
        let mut settings = Self::for_database(database.database_url.expose_secret());
        settings.create_database = false;
        settings.db_pool_size = database.db_pool_size;
        settings.db_pool_wait_ms = database.db_pool_wait_ms;
        log_filter.clone_into(&mut settings.log_filter);
        settings
    }
}
