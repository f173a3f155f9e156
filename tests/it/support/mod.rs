//! What several test modules share besides a running service (that is
//! `crate::helpers`): polling with a deadline, the binary as a child
//! process (and `serve` as one a test can SIGKILL), filling the log, and
//! reading HTTP answers and event streams.

pub(crate) mod cli;
pub(crate) mod http;
pub(crate) mod kinds;
pub(crate) mod log;
pub(crate) mod poll;
pub(crate) mod serve;
pub(crate) mod sse;
