//! All configuration, in one place: command-line flags with environment
//! variable fallbacks. Nothing else in taskledger reads the environment
//! (Docker clients read the standard `DOCKER_HOST` themselves).

use std::net::SocketAddr;
use std::path::PathBuf;

/// The database used when `DATABASE_URL` is not set; created if missing.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/taskledger";

/// Settings shared by every subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// PostgreSQL holding the event log and the read models. The database is
    /// created if it does not exist (the server must allow it).
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true)]
    pub database_url: String,

    /// RabbitMQ for task jobs and the event feed (e.g.
    /// amqp://guest:guest@127.0.0.1:5672/%2f). Unset: jobs pass in-process.
    #[arg(long, env = "AMQP_URL", global = true)]
    pub amqp_url: Option<String>,

    /// Where the HTTP API listens. Loopback unless told otherwise.
    #[arg(
        long,
        env = "TASKLEDGER_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,

    /// A TOML file with task kinds and other structured settings.
    #[arg(long, env = "TASKLEDGER_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Where artifacts (task output files) are stored.
    #[arg(
        long,
        env = "TASKLEDGER_DATA_DIR",
        default_value = "./data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Log filter, in `tracing` syntax (e.g. `info,taskledger_events=debug`).
    #[arg(long, env = "TASKLEDGER_LOG", default_value = "info", global = true)]
    pub log_filter: String,

    /// Connections in the database pool.
    #[arg(
        long,
        env = "TASKLEDGER_DB_POOL_SIZE",
        default_value_t = 16,
        global = true
    )]
    pub db_pool_size: usize,

    /// `/readyz` fails while one transaction has held the log lock longer
    /// than this many seconds (every append waits behind it).
    #[arg(
        long,
        env = "TASKLEDGER_LOG_LOCK_STALL_SECONDS",
        default_value_t = 30.0,
        global = true
    )]
    pub log_lock_stall_seconds: f64,

    /// How long a read given `min_version` or `min_position` waits for the
    /// read model to catch up before answering 503 with Retry-After.
    #[arg(
        long,
        env = "TASKLEDGER_READ_WAIT_MS",
        default_value_t = 2_000,
        global = true
    )]
    pub read_wait_ms: u64,

    /// What this process does, comma-separated: `api` (the HTTP API; without
    /// it only /healthz and /readyz are served), `projector` (the read
    /// models), `relay` (log → RabbitMQ), `runner` (runs tasks). Several
    /// processes with different roles share the work safely.
    #[arg(
        long,
        env = "TASKLEDGER_ROLES",
        value_delimiter = ',',
        default_value = "api,projector,relay,runner,gateway",
        global = true
    )]
    pub roles: Vec<Role>,

    /// Prefix of every RabbitMQ exchange and queue name.
    #[arg(
        long,
        env = "TASKLEDGER_AMQP_PREFIX",
        default_value = "taskledger",
        global = true
    )]
    pub amqp_prefix: String,

    /// Attempts a runner process runs at once (also its prefetch).
    #[arg(
        long,
        env = "TASKLEDGER_RUNNER_SLOTS",
        default_value_t = 2,
        global = true
    )]
    pub runner_slots: usize,

    /// This runner's name in the log (default: `runner-` and a random id).
    #[arg(long, env = "TASKLEDGER_WORKER_ID", global = true)]
    pub worker_id: Option<String>,

    /// The RockBLOCK account's user name (overrides `[rockblock] username`).
    #[arg(long, env = "ROCKBLOCK_USERNAME", global = true)]
    pub rockblock_username: Option<String>,

    /// The RockBLOCK account's password (overrides `[rockblock] password`).
    /// Never logged.
    #[arg(
        long,
        env = "ROCKBLOCK_PASSWORD",
        hide_env_values = true,
        global = true
    )]
    pub rockblock_password: Option<Secret>,
}

/// A setting that must never be printed: `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
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
}

impl Settings {
    /// Settings for tests and embedding: the given database, the `api` and
    /// `projector` roles only, everything else at its default, listening on
    /// an ephemeral loopback port.
    pub fn for_database(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            amqp_url: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            config: None,
            data_dir: PathBuf::from("./data"),
            log_filter: "info".into(),
            db_pool_size: 16,
            log_lock_stall_seconds: 30.0,
            read_wait_ms: 2_000,
            // Tests of the API must not have their tasks run.
            roles: vec![Role::Api, Role::Projector],
            amqp_prefix: "taskledger".into(),
            runner_slots: 2,
            worker_id: None,
            rockblock_username: None,
            rockblock_password: None,
        }
    }
}
