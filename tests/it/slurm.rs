//! The Slurm adapter against the real one-node cluster of scripts/slurm.sh
//! (started by scripts/services.sh): submit, look up, cancel, and argv that
//! reaches the job unchanged.

use std::path::PathBuf;
use std::time::Duration;

use taskledger::adapters::slurm::{FailureKind, JobId, JobSpec, JobState, Slurm, SlurmError};
use uuid::Uuid;

use crate::support::poll::eventually;

fn partition() -> String {
    std::env::var("TASKLEDGER_SLURM_PARTITION").unwrap_or_else(|_| "debug".into())
}

/// The client, once `sinfo` shows the test partition up; panics with how to
/// start the cluster otherwise (these tests never skip).
fn cluster() -> Slurm {
    let partition = partition();
    let answer = std::process::Command::new("sinfo")
        .args(["--noheader", "--partition", &partition, "--format", "%a %t"])
        .output();
    let seen = match answer {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            if text.lines().any(|line| line.starts_with("up ")) {
                return Slurm::new();
            }
            format!("sinfo shows partition {partition} as {text:?}")
        }
        Ok(output) => format!(
            "sinfo failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => format!("cannot run sinfo: {error}"),
    };
    panic!("the test Slurm cluster is not up: {seen}. Start it with scripts/services.sh (or scripts/slurm.sh, as root).");
}

/// A job in a fresh directory under the system temp dir (one host: the
/// compute node sees it too).
fn job(argv: &[&str]) -> (JobSpec, PathBuf) {
    let id = Uuid::new_v4();
    let work_dir = std::env::temp_dir().join(format!("taskledger-slurm-{id}"));
    let spec = JobSpec {
        name: format!("tl-{id}-1"),
        argv: argv.iter().map(|arg| (*arg).to_owned()).collect(),
        partition: Some(partition()),
        account: None,
        time_limit: Some(Duration::from_secs(120)),
        memory_mb: Some(64),
        cpus: Some(1),
        nice: None,
        out_dir: work_dir.join("out"),
        work_dir: work_dir.clone(),
        log_file: None,
        env: Vec::new(),
    };
    (spec, work_dir)
}

async fn wait_for(slurm: &Slurm, id: JobId, done: fn(&JobState) -> bool) -> JobState {
    eventually(
        Duration::from_secs(90),
        Duration::from_millis(200),
        || async {
            match slurm.state(id).await {
                Ok(state) if done(&state) => Ok(state),
                other => Err(format!("job {id} is {other:?}")),
            }
        },
    )
    .await
}

async fn finished(slurm: &Slurm, id: JobId) -> JobState {
    wait_for(slurm, id, JobState::is_terminal).await
}

#[tokio::test]
async fn a_job_that_exits_0_completes_with_the_files_it_wrote() {
    let slurm = cluster();
    let (spec, dir) = job(&[
        "/bin/sh",
        "-c",
        "echo hello > \"$TASKLEDGER_OUT/result.txt\"",
    ]);
    let id = slurm.submit(&spec).await.unwrap();
    assert_eq!(finished(&slurm, id).await, JobState::Completed);
    let written = std::fs::read_to_string(spec.out_dir.join("result.txt")).unwrap();
    assert_eq!(written, "hello\n");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_job_that_exits_3_fails_with_exit_code_3() {
    let slurm = cluster();
    let (spec, dir) = job(&["/bin/sh", "-c", "exit 3"]);
    let id = slurm.submit(&spec).await.unwrap();
    match finished(&slurm, id).await {
        JobState::Failed {
            kind, exit_code, ..
        } => {
            assert_eq!(kind, FailureKind::Exit);
            assert_eq!(exit_code, Some(3));
        }
        other => panic!("expected FAILED with exit code 3, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_cancelled_running_job_ends_cancelled() {
    let slurm = cluster();
    let (spec, dir) = job(&["sleep", "600"]);
    let id = slurm.submit(&spec).await.unwrap();
    wait_for(&slurm, id, |state| *state == JobState::Running).await;
    slurm.cancel(id).await.unwrap();
    assert_eq!(finished(&slurm, id).await, JobState::Cancelled);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn argv_elements_and_the_environment_reach_the_job_unchanged() {
    let slurm = cluster();
    let canary = std::env::temp_dir().join(format!("taskledger-slurm-canary-{}", Uuid::new_v4()));
    let substitution = format!("$(touch {})", canary.display());
    let semicolon = format!("; touch {}", canary.display());
    let elements = [
        "two words",
        "\"double\" 'single'",
        substitution.as_str(),
        semicolon.as_str(),
        "--epochs",
        "*",
        "",
        "back\\slash\nnewline",
    ];
    let script = "for a; do printf '%s\\0' \"$a\"; done > \"$TASKLEDGER_OUT/argv\"; \
                  printf '%s' \"$TL_GREETING|${CARGO_MANIFEST_DIR-unset}\" > \"$TASKLEDGER_OUT/env\"";
    let mut argv = vec!["/bin/sh", "-c", script, "sh"];
    argv.extend(elements);
    let (mut spec, dir) = job(&argv);
    spec.env = vec![("TL_GREETING".into(), "hello, world; $(x)".into())];
    let id = slurm.submit(&spec).await.unwrap();
    assert_eq!(finished(&slurm, id).await, JobState::Completed);
    let written = std::fs::read(spec.out_dir.join("argv")).unwrap();
    let received: Vec<&[u8]> = written.split(|byte| *byte == 0).collect();
    let expected: Vec<&[u8]> = elements
        .iter()
        .map(|e| e.as_bytes())
        .chain([&b""[..]])
        .collect();
    assert_eq!(received, expected, "argv as the job saw it");
    assert!(!canary.exists(), "an argument was run by a shell");
    let env = std::fs::read_to_string(spec.out_dir.join("env")).unwrap();
    assert_eq!(
        env, "hello, world; $(x)|unset",
        "the spec's environment, and only it"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn find_by_name_finds_a_submitted_job_and_nothing_for_an_unknown_name() {
    let slurm = cluster();
    let (spec, dir) = job(&["sleep", "600"]);
    let id = slurm.submit(&spec).await.unwrap();
    let found = slurm
        .find_by_name(&spec.name)
        .await
        .unwrap()
        .expect("the job by its name");
    assert_eq!(found.id, id);
    assert_eq!(found.name, spec.name);
    assert!(!found.state.is_terminal(), "{:?}", found.state);
    let unknown = format!("tl-{}-1", Uuid::new_v4());
    assert_eq!(slurm.find_by_name(&unknown).await.unwrap(), None);
    slurm.cancel(id).await.unwrap();
    finished(&slurm, id).await;
    // Cancelling it again is no error; a job Slurm never had is one.
    slurm.cancel(id).await.unwrap();
    let never = JobId(u64::from(u32::MAX) - 7);
    assert!(matches!(
        slurm.cancel(never).await,
        Err(SlurmError::UnknownJob(_))
    ));
    assert!(matches!(
        slurm.state(never).await,
        Err(SlurmError::UnknownJob(_))
    ));
    // Still found once finished (the controller keeps it for MinJobAge).
    let found = slurm
        .find_by_name(&spec.name)
        .await
        .unwrap()
        .expect("the finished job");
    assert_eq!((found.id, found.state), (id, JobState::Cancelled));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_job_for_a_partition_that_does_not_exist_is_refused_with_slurms_message() {
    let slurm = cluster();
    let (mut spec, dir) = job(&["/bin/true"]);
    spec.partition = Some("no-such-partition".into());
    match slurm.submit(&spec).await {
        Err(SlurmError::Rejected { message }) => {
            assert!(message.contains("partition"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(dir);
}
