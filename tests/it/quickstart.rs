//! The README's quick start, as written: the real binary serves with the
//! shipped default configuration, RabbitMQ and the Docker engine, and the
//! README's shell blocks (marked `<!-- quickstart -->`) run in bash against
//! it, with only the address changed to the test's port. Needs the images of
//! the shipped kinds (scripts/images.sh).

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};

use taskledger_events::testing::TestDatabase;

use crate::running::{amqp_url, delete_topology, BROKER};

use crate::support::cli::{free_port, BINARY};

/// The shell blocks that follow a `<!-- quickstart -->` line in README.md.
fn quickstart_blocks() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "<!-- quickstart -->" {
            continue;
        }
        assert_eq!(
            lines.next().map(str::trim),
            Some("```sh"),
            "a marked block is ```sh"
        );
        let block: Vec<&str> = lines
            .by_ref()
            .take_while(|line| line.trim() != "```")
            .collect();
        blocks.push(block.join("\n"));
    }
    blocks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_quick_start_works_as_written() {
    let _broker = BROKER.read().await;
    let blocks = quickstart_blocks();
    assert!(blocks.len() >= 2, "README.md marks its quick start blocks");
    let database = TestDatabase::create().await;
    let port = free_port();
    let data_dir = std::env::temp_dir().join(format!("tl-quickstart-{}", uuid::Uuid::new_v4()));
    let prefix = format!("tl-test-{}", uuid::Uuid::new_v4().simple());
    let mut server = Command::new(BINARY)
        .arg("serve")
        .env("DATABASE_URL", &database.url)
        .env("TASKLEDGER_LISTEN", format!("127.0.0.1:{port}"))
        .env("AMQP_URL", amqp_url())
        .env("TASKLEDGER_AMQP_PREFIX", &prefix)
        .env("TASKLEDGER_DATA_DIR", &data_dir)
        .env_remove("TASKLEDGER_CONFIG")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    crate::helpers::wait_until_ready(&mut server, port, 60).await;

    let script = format!(
        "set -euo pipefail\n{}\n",
        blocks
            .join("\n")
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
    );
    let binary_dir = Path::new(BINARY).parent().unwrap();
    let path = format!(
        "{}:{}",
        binary_dir.display(),
        std::env::var("PATH").unwrap()
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["180", "bash", "-c", &script])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("PATH", path)
            .env("DATABASE_URL", &database.url)
            .output()
            .map(|output| (output, database))
    })
    .await
    .unwrap()
    .unwrap();
    let (output, database) = output;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let mut server_log = String::new();
    let _ = server.wait();
    let _ = server
        .stderr
        .as_mut()
        .unwrap()
        .read_to_string(&mut server_log);
    assert!(
        output.status.success(),
        "the quick start failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- server\n{server_log}",
        output.status
    );
    // The demo ran in the sandbox: its result and its file.
    assert!(
        stdout.contains("\"greeting\": \"hello, reader\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"network_interfaces\": 1"),
        "only loopback: {stdout}"
    );
    assert!(stdout.contains("taskledger demo output"), "{stdout}");
    // Thug ran the sample page's JavaScript.
    assert!(stdout.contains("tl-iframe-42.html"), "{stdout}");
    // The first start said how to make the first key.
    assert!(server_log.contains("no API keys yet"), "{server_log}");
    assert!(
        !server_log.contains('\u{1b}'),
        "no colour codes into a file"
    );
    assert!(
        !server_log.contains("already exists, skipping"),
        "PostgreSQL notices are not logged: {server_log}"
    );

    delete_topology(&prefix, &taskledger::config::FileConfig::builtin()).await;
    database.drop_database().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}
