//! Logging: `tracing` to standard error, filtered by `TASKLEDGER_LOG`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. A filter that does not parse falls back to
/// `info` (and says so).
pub fn init(filter: &str) {
    let (filter, bad) = match EnvFilter::try_new(filter) {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new("info"), Some(error)),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    if let Some(error) = bad {
        tracing::warn!(%error, "TASKLEDGER_LOG does not parse; logging at info");
    }
}
