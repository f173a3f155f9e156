//! The deployment files: `docker-compose.yml` validated by a real Compose
//! CLI (the plugin, or Debian's `docker-compose`, which scripts/test.sh
//! installs) in its default and `dind` modes, and its and the Dockerfile's
//! promises checked by `scripts/check-compose.py` (services and
//! healthchecks, the mounted configuration, the engine options, the
//! first-key command, a dependency-only build layer).

use std::path::Path;
use std::process::Command;

fn check(args: &[&str]) -> (i32, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("python3")
        .arg(root.join("scripts/check-compose.py"))
        .args(args)
        .current_dir(root)
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn the_compose_file_and_dockerfile_keep_their_promises() {
    let (code, report) = check(&["--require-cli"]);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("config` accepts the file (default mode"),
        "{report}"
    );
    assert!(
        report.contains("config` accepts the file (dind mode"),
        "{report}"
    );
    assert!(!report.contains("FAIL"), "{report}");
}

#[test]
fn the_check_fails_on_a_broken_compose_file() {
    // The checker itself must be able to fail: a compose file without the
    // healthcheck and the mounted configuration.
    let dir = std::env::temp_dir().join(format!("tl-compose-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("docker-compose.yml");
    std::fs::write(
        &broken,
        "services:\n  taskledger:\n    image: taskledger\n    ports: [\"8080:8080\"]\n",
    )
    .unwrap();
    let (code, report) = check(&["--compose", broken.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_ne!(code, 0, "{report}");
    assert!(report.contains("FAIL"), "{report}");
}
