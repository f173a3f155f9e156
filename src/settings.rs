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
}

impl Settings {
    /// Settings for tests and embedding: the given database, everything else
    /// at its default, listening on an ephemeral loopback port.
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
        }
    }
}
