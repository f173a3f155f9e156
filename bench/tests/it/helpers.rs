//! Running the binary with a deadline, and reading its `key=value` lines.

use std::time::Duration;

use taskledger_events::testing::{config_to_url, TestDatabase, DEFAULT_TEST_SERVER};

pub(crate) const BINARY: &str = env!("CARGO_BIN_EXE_taskledger-bench");

/// What a finished run printed.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `taskledger-bench` with the arguments of `command_line` (split at
/// white space, as a shell would split one without quotes) with
/// `DATABASE_URL` set to `database_url` and the broker the tests use; panics
/// unless it succeeds within `deadline`.
pub(crate) async fn bench(database_url: &str, command_line: &str, deadline: Duration) -> Run {
    let (run, status) = bench_ending(database_url, command_line, deadline).await;
    assert!(
        status.success(),
        "taskledger-bench {command_line:?} exited with {status}: {run:#?}"
    );
    run
}

/// [`bench`], but the run may fail: what it printed and how it exited.
pub(crate) async fn bench_ending(
    database_url: &str,
    command_line: &str,
    deadline: Duration,
) -> (Run, std::process::ExitStatus) {
    let args: Vec<&str> = command_line.split_whitespace().collect();
    let mut command = tokio::process::Command::new(BINARY);
    command
        .args(&args)
        .env("DATABASE_URL", database_url)
        .env("TASKLEDGER_LOG", "warn")
        .env_remove("TASKLEDGER_AMQP_PREFIX")
        .kill_on_drop(true);
    if let Ok(amqp_url) = std::env::var("TEST_AMQP_URL") {
        command.env("AMQP_URL", amqp_url);
    }
    let output = tokio::time::timeout(deadline, command.output())
        .await
        .unwrap_or_else(|_| panic!("taskledger-bench {args:?} did not finish within {deadline:?}"))
        .expect("taskledger-bench runs");
    let run = Run {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    (run, output.status)
}

/// [`bench`] against a fresh database of its own, dropped once the run has
/// finished.
pub(crate) async fn bench_on_scratch(command_line: &str, deadline: Duration) -> Run {
    let database = TestDatabase::create().await;
    let run = bench(&database.url, command_line, deadline).await;
    database.drop_database().await;
    run
}

/// The one line of `run` that starts with `prefix`, checked to go on with
/// exactly `fields` as `name=number`, in this order (anything after them,
/// such as a parenthesised note, is allowed).
pub(crate) fn line<'a>(run: &'a Run, prefix: &str, fields: &[&str]) -> &'a str {
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|line| line.starts_with(prefix))
        .collect();
    assert_eq!(lines.len(), 1, "one line starting {prefix:?} in {run:#?}");
    let rest = &lines[0][prefix.len()..];
    let words: Vec<&str> = rest.split_whitespace().take(fields.len()).collect();
    assert_eq!(words.len(), fields.len(), "{:?}: too few fields", lines[0]);
    for (word, field) in words.iter().zip(fields) {
        let value = word
            .strip_prefix(field)
            .and_then(|value| value.strip_prefix('='))
            .unwrap_or_else(|| panic!("{:?}: {word:?} is not `{field}=…`", lines[0]));
        assert!(
            value.parse::<f64>().is_ok(),
            "{:?}: {field}={value} is not a number",
            lines[0]
        );
    }
    lines[0]
}

/// A URL for database `name` on the test server (`TEST_DATABASE_URL`).
pub(crate) fn database_url(name: &str) -> String {
    let base =
        std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_SERVER.to_owned());
    let mut config: tokio_postgres::Config = base.parse().expect("TEST_DATABASE_URL parses");
    config.dbname(name);
    config_to_url(&config)
}

/// A client of the test server's own database.
pub(crate) async fn server_client() -> tokio_postgres::Client {
    let (client, connection) = database_url("postgres")
        .parse::<tokio_postgres::Config>()
        .expect("TEST_DATABASE_URL parses")
        .connect(tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL answers (scripts/services.sh starts it)");
    tokio::spawn(connection);
    client
}
