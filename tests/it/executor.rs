//! The Docker executor on its own, against the real engine: what it does
//! when it meets what a dead runner left behind, with an image the engine
//! does not have, and how `/out` comes back (bind-mounted or copied out).
//!
//! Needs `scripts/services.sh` (dockerd and the image
//! `taskledger-test-busybox:latest`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use taskledger::config::FileConfig;
use taskledger::workers::runner::executor::{self, End, OutMount, RunError, RunSpec};
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
        out: OutMount::Archive,
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

/// A fresh host directory for a bound `/out` (not made: the executor
/// makes it), under a temporary work directory.
fn bound_out() -> (PathBuf, OutMount) {
    let work = std::env::temp_dir().join(format!("tl-executor-work-{}", Uuid::new_v4()));
    let dir = work.join("docker-out").join("attempt");
    (work, OutMount::Bind(dir))
}

fn bound_dir(out: &OutMount) -> &Path {
    match out {
        OutMount::Bind(dir) => dir,
        OutMount::Archive => panic!("not bound"),
    }
}

/// Several files, one of them `result.json` and one binary (the start of
/// busybox itself: the same in every run), and some that are not collected
/// (deeper ones, a directory).
const SEVERAL_FILES: &str = r#"
    printf '{"answer": 42}' > /out/result.json
    printf 'report body' > /out/report.txt
    head -c 3000 /proc/self/exe > /out/noise.bin
    : > /out/empty
    mkdir /out/deeper && printf 'not collected' > /out/deeper/inner.txt
    echo done
"#;

#[tokio::test]
async fn a_bound_out_gives_the_same_files_as_the_archive() {
    let docker = Docker::connect_with_defaults().expect("the Docker engine answers");
    let (_cancel, canceled) = watch::channel(false);
    let script = SEVERAL_FILES;
    let archived = executor::run_docker(
        &docker,
        &spec(IMAGE, &["sh", "-c", script]),
        canceled.clone(),
    )
    .await
    .expect("the archive attempt runs");
    let (work, out) = bound_out();
    let bound_spec = RunSpec {
        out: out.clone(),
        ..spec(IMAGE, &["sh", "-c", script])
    };
    let bound = executor::run_docker(&docker, &bound_spec, canceled)
        .await
        .expect("the bound attempt runs");
    assert_eq!(bound.end, End::Exited(0));
    assert_eq!(bound.stdout.bytes, b"done\n");
    let names: Vec<&str> = bound.files.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["empty", "noise.bin", "report.txt", "result.json"]);
    let mut archived_files = archived.files.clone();
    archived_files.sort();
    assert_eq!(
        bound.files, archived_files,
        "the same names and bytes either way"
    );
    // The directory stays for the caller to remove once the outcome is
    // recorded; its parent is the runner's alone.
    let dir = bound_dir(&out);
    assert!(dir.join("result.json").is_file());
    use std::os::unix::fs::PermissionsExt as _;
    let root_mode = std::fs::metadata(dir.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(root_mode & 0o777, 0o700, "docker-out is the runner's alone");
    assert!(containers_named(&bound_spec.name).await.is_empty());
    std::fs::remove_dir_all(&work).unwrap();
}

#[tokio::test]
async fn a_bound_out_reads_no_link_and_waits_on_no_fifo() {
    let docker = Docker::connect_with_defaults().expect("the Docker engine answers");
    // A file of the runner's host that the container cannot see, and that
    // a link in /out names by its host path.
    let secret = std::env::temp_dir().join(format!("tl-host-secret-{}", Uuid::new_v4()));
    let secret_text = format!("host secret {}", Uuid::new_v4());
    std::fs::write(&secret, &secret_text).unwrap();
    let script = format!(
        "ln -s {} /out/secret.txt; ln -s /etc/passwd /out/passwd; ln -s / /out/root; \
         mkfifo /out/pipe; printf ok > /out/ok.txt; \
         if touch /etc/probe 2>/dev/null; then echo root-writable; fi",
        secret.display()
    );
    let (work, out) = bound_out();
    let spec = RunSpec {
        out: out.clone(),
        ..spec(IMAGE, &["sh", "-c", &script])
    };
    let (_cancel, canceled) = watch::channel(false);
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        executor::run_docker(&docker, &spec, canceled),
    )
    .await
    .expect("a FIFO in /out does not hang the collector")
    .expect("the attempt runs");
    assert_eq!(outcome.end, End::Exited(0));
    assert!(
        outcome.stdout.bytes.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&outcome.stdout.bytes)
    );
    assert_eq!(outcome.files, vec![("ok.txt".to_owned(), b"ok".to_vec())]);
    let host_passwd = std::fs::read("/etc/passwd").unwrap();
    for (name, bytes) in &outcome.files {
        assert!(
            !String::from_utf8_lossy(bytes).contains(&secret_text) && *bytes != host_passwd,
            "{name} holds a host file's content"
        );
    }
    // The links and the FIFO are there, as the container left them.
    let dir = bound_dir(&out);
    assert!(std::fs::symlink_metadata(dir.join("secret.txt"))
        .unwrap()
        .file_type()
        .is_symlink());
    std::fs::remove_dir_all(&work).unwrap();
    assert!(secret.is_file(), "removing /out did not follow the link");
    std::fs::remove_file(&secret).unwrap();
}

#[tokio::test]
async fn a_container_of_another_user_writes_to_a_bound_out() {
    let docker = Docker::connect_with_defaults().expect("the Docker engine answers");
    // The test image as user 65534 (`nobody`), made from it locally.
    let image = "taskledger-test-busybox-nobody:latest";
    let base = tokio::process::Command::new("docker")
        .args(["create", IMAGE, "true"])
        .output()
        .await
        .expect("the docker CLI runs");
    assert!(base.status.success(), "{base:?}");
    let base = String::from_utf8_lossy(&base.stdout).trim().to_owned();
    let commit = tokio::process::Command::new("docker")
        .args(["commit", "--change", "USER 65534:65534", &base, image])
        .output()
        .await
        .expect("the docker CLI runs");
    let _ = tokio::process::Command::new("docker")
        .args(["rm", &base])
        .output()
        .await;
    assert!(commit.status.success(), "{commit:?}");
    let (work, out) = bound_out();
    let spec = RunSpec {
        out,
        ..spec(image, &["sh", "-c", "id -u > /out/uid.txt; umask 077; printf x > /out/private.txt; mkdir /out/sub; : > /out/sub/f"])
    };
    let (_cancel, canceled) = watch::channel(false);
    let outcome = executor::run_docker(&docker, &spec, canceled)
        .await
        .expect("the attempt runs");
    assert_eq!(
        outcome.end,
        End::Exited(0),
        "{:?}",
        String::from_utf8_lossy(&outcome.stderr.bytes)
    );
    assert_eq!(
        outcome.files,
        vec![
            ("private.txt".to_owned(), b"x".to_vec()),
            ("uid.txt".to_owned(), b"65534\n".to_vec()),
        ]
    );
    // The runner (root here) removes whatever that user made.
    std::fs::remove_dir_all(&work).unwrap();
}
