//! Logging: `tracing` to standard error, filtered by `TASKLEDGER_LOG`.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// PostgreSQL's notices (`relation … already exists, skipping`) are logged
/// by tokio-postgres at INFO; they say nothing an operator needs, so they
/// are shown only when the filter names `tokio_postgres` itself.
const QUIET_NOTICES: &str = "tokio_postgres=warn";

/// Installs the global subscriber. A filter that does not parse falls back to
/// `info` (and says so). Colour only when standard error is a terminal and
/// `NO_COLOR` is not set.
pub fn init(filter: &str) {
    let with_notices = if filter.contains("tokio_postgres") {
        filter.to_owned()
    } else {
        format!("{filter},{QUIET_NOTICES}")
    };
    let (filter, bad) = match EnvFilter::try_new(&with_notices) {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new(format!("info,{QUIET_NOTICES}")), Some(error)),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(crate::config::settings::colour(
            std::io::stderr().is_terminal(),
        ))
        .with_writer(std::io::stderr)
        .try_init();
    if let Some(error) = bad {
        tracing::warn!(%error, "TASKLEDGER_LOG does not parse; logging at info");
    }
}
