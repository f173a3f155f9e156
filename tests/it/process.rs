//! The real binary: `migrate`, and `serve` creating its database, serving
//! and stopping cleanly on SIGTERM; no benchmarks and no private keys in it.

use std::process::{Command, Stdio};
use std::time::Duration;

use taskledger_events::testing::{config_to_url, DEFAULT_TEST_SERVER};

use crate::support::cli::{assert_success, free_port, BINARY};

fn server_url(dbname: &str) -> String {
    let base =
        std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_SERVER.to_owned());
    let mut config: tokio_postgres::Config = base.parse().unwrap();
    config.dbname(dbname);
    config_to_url(&config)
}

/// A connection to the server's `postgres` database.
async fn server_client() -> tokio_postgres::Client {
    let (client, connection) = server_url("postgres")
        .parse::<tokio_postgres::Config>()
        .unwrap()
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

async fn drop_database(name: &str) {
    server_client()
        .await
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
}

#[tokio::test]
async fn migrate_creates_the_database_and_is_idempotent() {
    let name = format!("tl_test_{}", uuid::Uuid::new_v4().simple());
    let url = server_url(&name);
    let first = Command::new(BINARY)
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert_success(&first);
    // Every migration the binary has, in order.
    let every: Vec<i64> = taskledger_events::migrate::MIGRATIONS
        .iter()
        .map(|migration| migration.version)
        .collect();
    assert_eq!(
        every,
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 24, 25]
    );
    assert!(
        String::from_utf8_lossy(&first.stdout).contains(&format!("applied migrations: {every:?}"))
    );
    let second = Command::new(BINARY)
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stdout).contains("up to date"));
    drop_database(&name).await;
}

#[tokio::test]
async fn a_bad_database_url_fails_with_a_clear_message() {
    let output = Command::new(BINARY)
        .arg("migrate")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect to PostgreSQL at 127.0.0.1:1/nowhere"),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_creates_its_database_serves_and_stops_on_sigterm() {
    let name = format!("tl_test_{}", uuid::Uuid::new_v4().simple());
    let port = free_port();
    let mut child = Command::new(BINARY)
        .arg("serve")
        .env("DATABASE_URL", server_url(&name))
        .env("TASKLEDGER_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    crate::helpers::wait_until_ready(&mut child, port, 30).await;

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not exit within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(exit.success(), "serve exited with {exit}: {stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    assert!(stderr.contains("taskledger stopped"), "{stderr}");
    drop_database(&name).await;
}

#[tokio::test]
async fn serve_refuses_a_bad_configuration_file_and_says_why() {
    let path = std::env::temp_dir().join(format!(
        "taskledger-bad-{}.toml",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(
        &path,
        "[kinds.k]\nimage = \"i\"\ncommand = [\"run\", \"{target}\"]\n",
    )
    .unwrap();
    let output = Command::new(BINARY)
        .arg("serve")
        .env("TASKLEDGER_CONFIG", &path)
        .env(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/never-reached",
        )
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("task kind \"k\"") && stderr.contains("{target}"),
        "{stderr}"
    );
}

#[tokio::test]
async fn writing_commands_refuse_a_missing_database_and_say_which_they_use() {
    let name = format!("tl_test_{}", uuid::Uuid::new_v4().simple());
    for args in [
        &[
            "keys",
            "create",
            "--name",
            "x",
            "--scopes",
            "admin",
            "--all-tenants",
        ][..],
        &["keys", "list"][..],
        &["projections", "list"][..],
        &["cleanup", "--dry-run"][..],
        &["replay", "verify"][..],
    ] {
        let output = Command::new(BINARY)
            .args(args)
            .env("DATABASE_URL", server_url(&name))
            .env_remove("NO_COLOR")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("/{name} does not exist")),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("--create-database"), "{args:?}: {stderr}");
        // Each error once, and no colour codes into a pipe.
        assert_eq!(
            stderr.matches("does not exist").count(),
            1,
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains('\u{1b}'), "{args:?}: {stderr:?}");
    }
    let exists = server_client()
        .await
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .unwrap();
    assert!(exists.is_none(), "a refused command created the database");

    // Told to, it creates it, and says which database it wrote to.
    let output = Command::new(BINARY)
        .args([
            "keys",
            "create",
            "--name",
            "first",
            "--scopes",
            "admin",
            "--all-tenants",
            "--create-database",
        ])
        .env("DATABASE_URL", server_url(&name))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("using database 127.0.0.1:5432/{name}")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("already exists, skipping"),
        "notices are quiet: {stderr}"
    );
    drop_database(&name).await;
}

#[test]
fn each_subcommand_lists_only_the_options_it_reads() {
    let help = |args: &[&str]| {
        let output = Command::new(BINARY)
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let keys = help(&["keys", "create"]);
    for present in [
        "--name",
        "--scopes",
        "--tenant",
        "--all-tenants",
        "--expires-in",
        "--rate-limit",
        "--database-url",
        "--create-database",
    ] {
        assert!(
            keys.contains(present),
            "keys create --help lacks {present}:\n{keys}"
        );
    }
    for absent in [
        "--listen",
        "--amqp-url",
        "--runner-slots",
        "--roles",
        "--rockblock",
    ] {
        assert!(
            !keys.contains(absent),
            "keys create --help lists {absent}:\n{keys}"
        );
    }
    let serve = help(&["serve"]);
    for present in [
        "--listen",
        "--amqp-url",
        "--runner-slots",
        "--roles",
        "--config",
    ] {
        assert!(
            serve.contains(present),
            "serve --help lacks {present}:\n{serve}"
        );
    }
    assert!(!serve.contains("--create-database"), "{serve}");
    let replay = help(&["replay", "verify"]);
    assert!(
        replay.contains("--database-url") && !replay.contains("--data-dir"),
        "{replay}"
    );
}

#[test]
fn the_benchmarks_are_not_part_of_the_service_binary() {
    // They are `taskledger-bench` (bench/): `mo` signs with a test key.
    let output = Command::new(BINARY)
        .args(["bench", "append"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("unrecognized subcommand 'bench'"),
        "{stderr}"
    );
    let output = Command::new(BINARY).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && help.contains("serve"), "{help}");
    assert!(
        !help
            .lines()
            .any(|line| line.trim_start().starts_with("bench")),
        "{help}"
    );
}

#[test]
fn the_service_binary_embeds_no_private_key() {
    let bytes = std::fs::read(BINARY).unwrap();
    // Lossy: the keys' PEM text is ASCII and survives; std's optimised
    // substring search then beats a byte-by-byte scan of an unoptimised
    // test build by far (the binary is hundreds of MB).
    let binary = String::from_utf8_lossy(&bytes);
    // The armour of any PEM private key (PKCS#8, PKCS#1, encrypted). The
    // bare label "PRIVATE KEY" is there, and may be: PEM parsers name it,
    // and the MO verifier refuses a private key by it.
    assert!(
        !binary.contains("PRIVATE KEY-----"),
        "{BINARY} embeds a PEM private key"
    );
    // Nor the repository's test keys without their armour: the second line
    // of each body (the first is alike in every RSA-2048 PKCS#8 key).
    for (name, pem) in [
        ("mo-test-key.pem", crate::rockblock::MO_PRIVATE_KEY),
        ("forger-key.pem", crate::rockblock::FORGER_KEY),
    ] {
        let line = std::str::from_utf8(pem).unwrap().lines().nth(2).unwrap();
        assert!(
            !binary.contains(line),
            "{BINARY} embeds tests/fixtures/rockblock/{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_asks_readyz_and_exits_by_its_answer() {
    let app = crate::helpers::TestApp::spawn().await;
    let output = Command::new(BINARY)
        .args(["health", "--url", &app.url("/readyz")])
        .output()
        .unwrap();
    assert_success(&output);
    // From TASKLEDGER_LISTEN, an unspecified address asked on loopback.
    let output = Command::new(BINARY)
        .arg("health")
        .env(
            "TASKLEDGER_LISTEN",
            format!("0.0.0.0:{}", app.address.port()),
        )
        .output()
        .unwrap();
    assert_success(&output);
    app.finish().await;
    let output = Command::new(BINARY)
        .args([
            "health",
            "--url",
            &format!("http://127.0.0.1:{}/readyz", free_port()),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("did not answer"), "{stderr}");
}
