//! The `taskledger` binary as a child process.

use std::process::{Command, Output};

/// The binary Cargo built for these tests.
pub(crate) const BINARY: &str = env!("CARGO_BIN_EXE_taskledger");

/// `taskledger args…` against the database at `database_url`, logging
/// warnings only; what it printed and how it exited. Panics if it cannot be
/// started.
pub(crate) fn taskledger(database_url: &str, args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("TASKLEDGER_LOG", "warn")
        .output()
        .unwrap()
}

/// [`taskledger`] that must succeed (it panics with the output otherwise);
/// its standard output.
pub(crate) fn taskledger_ok(database_url: &str, args: &[&str]) -> String {
    let output = taskledger(database_url, args);
    assert!(output.status.success(), "{args:?}: {output:?}");
    stdout(&output)
}

/// Panics with the standard error unless `output` is of a successful run.
pub(crate) fn assert_success(output: &Output) {
    assert!(output.status.success(), "{}", stderr(output));
}

/// The standard output, as text.
pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The standard error, as text.
pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A TCP port nothing listens on at the moment of asking.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
