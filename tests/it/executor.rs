//! The Docker executor on its own, against the real engine: what it does
//! when it meets what a dead runner left behind, and with an image the
//! engine does not have.
//!
//! Needs `scripts/services.sh` (dockerd and the image
//! `taskledger-test-busybox:latest`).

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use taskledger::config::FileConfig;
use taskledger::workers::runner::executor::{self, End, RunError, RunSpec};
use tokio::sync::watch;
use uuid::Uuid;

const IMAGE: &str = "taskledger-test-busybox:latest";

fn spec(image: &str, argv: &[&str]) -> RunSpec {
    let config = FileConfig::parse(&format!(
        "[kinds.probe]\nimage = {image:?}\ncommand = [\"true\"]\nmemory_mb = 32\n"
    ))
    .expect("the probe kind parses");
    let test = Uuid::new_v4().simple().to_string();
    RunSpec {
        name: format!("taskledger-executor-test-{test}"),
        kind: config.kind("probe").expect("configured").clone(),
        argv: argv.iter().map(|&part| part.to_owned()).collect(),
        timeout: Duration::from_secs(60),
        attempt: 1,
        labels: HashMap::from([("taskledger.executor-test".to_owned(), test)]),
        inputs: Vec::new(),
    }
}

/// Containers (running or not) named exactly `name`.
async fn containers_named(name: &str) -> Vec<String> {
    let output = tokio::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("name=^{name}$"),
            "--format",
            "{{.ID}} {{.Status}}",
        ])
        .output()
        .await
        .expect("the docker CLI runs (scripts/services.sh installs it)");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_leftover_container_of_the_same_attempt_is_replaced_and_the_attempt_runs() {
    let docker = Docker::connect_with_defaults().expect("the Docker engine answers");
    let spec = spec(
        IMAGE,
        &["sh", "-c", "printf fresh > /out/mark.txt; echo ran"],
    );
    // What a runner that died mid-attempt leaves: a running container
    // under the attempt's name.
    let leftover = tokio::process::Command::new("docker")
        .args([
            "run",
            "-d",
            "--name",
            &spec.name,
            "--label",
            "taskledger.executor-test=leftover",
            IMAGE,
            "sleep",
            "300",
        ])
        .output()
        .await
        .expect("the docker CLI runs");
    assert!(leftover.status.success(), "{leftover:?}");
    let leftover_id = String::from_utf8_lossy(&leftover.stdout).trim().to_owned();
    assert_eq!(containers_named(&spec.name).await.len(), 1);

    let (_cancel, canceled) = watch::channel(false);
    let outcome = executor::run_docker(&docker, &spec, canceled)
        .await
        .expect("the attempt runs in spite of the leftover");
    assert_eq!(outcome.end, End::Exited(0));
    assert_eq!(outcome.stdout.bytes, b"ran\n");
    assert_eq!(
        outcome.files,
        vec![("mark.txt".to_owned(), b"fresh".to_vec())]
    );
    // Both the leftover and the attempt's own container are gone.
    let left = containers_named(&spec.name).await;
    assert!(left.is_empty(), "left behind: {left:?}");
    let inspect = tokio::process::Command::new("docker")
        .args(["inspect", &leftover_id])
        .output()
        .await
        .expect("the docker CLI runs");
    assert!(!inspect.status.success(), "the leftover still exists");
}

#[tokio::test]
async fn an_image_the_engine_lacks_is_named_and_nothing_is_left() {
    let docker = Docker::connect_with_defaults().expect("the Docker engine answers");
    let image = format!(
        "taskledger-no-such-image-{}:latest",
        Uuid::new_v4().simple()
    );
    let spec = spec(&image, &["true"]);
    let (_cancel, canceled) = watch::channel(false);
    let error = executor::run_docker(&docker, &spec, canceled)
        .await
        .expect_err("there is no such image");
    assert!(
        matches!(&error, RunError::MissingImage { image: named } if *named == image),
        "{error:?}"
    );
    assert!(!error.retryable(), "a missing image is not retried");
    assert!(error.to_string().contains("not present"), "{error}");
    assert!(containers_named(&spec.name).await.is_empty());
}
