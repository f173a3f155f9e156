//! Running an attempt of an `executor = "slurm"` kind as a Slurm batch job
//! ([`run`]), through the adapter in [`crate::adapters::slurm`].
//!
//! - The job is named `tl-{task}-{attempt}`. Before submitting, the runner
//!   looks the name up and adopts a job it finds, so a runner that died
//!   between `sbatch` and recording the job id, or a runner adopting a dead
//!   runner's attempt, never submits the attempt twice. A job found already
//!   finished (a `FAILED` record a refused submission left) is that
//!   attempt's outcome, not something to run again.
//! - Once `sbatch` accepted it, `TaskJobSubmitted` records the job id (the
//!   task is shown `queued`); when `squeue` first shows it running,
//!   `TaskJobRunning` (shown `running`), and the task's `timeout_seconds`
//!   counts from there.
//! - The state is polled every [`POLL`]. An error from Slurm (a controller
//!   that is restarting or unreachable) is waited out with a growing pause:
//!   the attempt never fails or resubmits because the controller is down.
//! - At the timeout, or when the task is canceled in taskledger, the job is
//!   `scancel`led (retried until the controller takes it).
//! - Its working directory is `{work_dir}/slurm/tl-{task}-{attempt}` (it must
//!   be on a file system the compute nodes and every runner share); the
//!   job's `TASKLEDGER_OUT` is its `out/`, whose top-level files are the
//!   artifacts (`result.json` the result) exactly as Docker's `/out`, and
//!   Slurm's `slurm-%j.log` (stdout and stderr together) is its
//!   `stdout.log`.

use std::path::{Path, PathBuf};

use crate::adapters::slurm::{FailureKind, JobId, JobSpec, JobState, Slurm, SlurmError};
use taskledger_events::task::{RecordJobRunning, RecordJobSubmitted, Task};

use super::collect::collect_files;
use super::executor::{copy_inputs, Captured};
use super::*;

/// How often a job's state is asked for while Slurm answers.
const POLL: Duration = Duration::from_millis(500);
/// The longest pause between tries while Slurm does not answer.
const LONGEST_PAUSE: Duration = Duration::from_secs(10);
/// How many polls in a row may find no such job before the attempt fails
/// (the controller forgot it: its state was lost).
const UNKNOWN_POLLS: u32 = 60;
/// The executor's name in `TaskJobSubmitted`.
const EXECUTOR: &str = "slurm";

/// The Slurm job name of a task's attempt.
pub(super) fn job_name(task_id: TaskId, attempt: u32) -> String {
    format!("tl-{task_id}-{attempt}")
}

/// Whether tasks of `kind` run on Slurm here.
pub(super) fn runs_on_slurm(context: &Context, kind: &str) -> bool {
    context
        .options
        .config
        .kinds
        .get(kind)
        .is_some_and(|kind| kind.executor == Executor::Slurm)
}

/// The attempt's working directory.
fn job_dir(context: &Context, name: &str) -> PathBuf {
    context.options.work_dir.join("slurm").join(name)
}

/// Removes the attempt's working directory, once its outcome is recorded.
pub(super) async fn clean_up(context: &Context, task_id: TaskId, attempt: u32) {
    let _ = tokio::fs::remove_dir_all(job_dir(context, &job_name(task_id, attempt))).await;
}

/// Slurm's `--nice` for a task's priority (-1000 to 1000): 1000 minus it,
/// so 0 to 2000, never negative (which only an administrator may set) and
/// lower for higher priorities.
pub(super) fn nice_for(priority: i32) -> i32 {
    1000 - priority.clamp(-1000, 1000)
}

/// Runs the attempt as a Slurm job: looks it up by name (or submits it),
/// follows it to its end, and returns how it ended. `task` is the task as
/// loaded before the attempt was claimed or adopted (its recorded job, if
/// any, is this attempt's when it runs `attempt`).
pub(super) async fn run(
    context: &Context,
    task: &Task,
    spec: &RunSpec,
    mut canceled: watch::Receiver<bool>,
) -> Result<Outcome, RunError> {
    let slurm = Slurm::new();
    let name = job_name(task.id, spec.attempt);
    let dir = job_dir(context, &name);
    let recorded = task
        .executor_job
        .as_ref()
        .filter(|_| task.status == TaskStatus::Running && task.attempts_started == spec.attempt)
        .and_then(|job| Some((job.job_id.parse().ok().map(JobId)?, job.running_at)));
    let (id, running_at) = match recorded {
        Some(recorded) => recorded,
        None => {
            let id = find_or_submit(&slurm, job_spec(task, spec, &name, &dir).await?).await?;
            let command = TaskCommand::RecordJobSubmitted(RecordJobSubmitted {
                task_id: task.id,
                attempt: spec.attempt,
                executor: EXECUTOR.to_owned(),
                job_id: id.to_string(),
                submitted_at: now(),
            });
            report(context, task.id, command).await;
            (id, None)
        }
    };
    tracing::info!(task = %task.id, job = %id, %name, "following a Slurm job");
    let remaining = |since: chrono::DateTime<Utc>| {
        let ran = (Utc::now() - since).to_std().unwrap_or_default();
        tokio::time::Instant::now() + spec.timeout.saturating_sub(ran)
    };
    let mut deadline = running_at.map(remaining);
    let mut pauses = Pauses::doubling(POLL, LONGEST_PAUSE);
    let mut unknown = 0;
    loop {
        let pause = match slurm.state(id).await {
            Ok(state) => {
                unknown = 0;
                pauses.reset();
                match state {
                    JobState::Pending { .. } => {}
                    JobState::Running => {
                        if deadline.is_none() {
                            let running_at = now();
                            deadline = Some(remaining(running_at));
                            let command = TaskCommand::RecordJobRunning(RecordJobRunning {
                                task_id: task.id,
                                attempt: spec.attempt,
                                job_id: id.to_string(),
                                running_at,
                            });
                            report(context, task.id, command).await;
                        }
                    }
                    finished => {
                        let end = end_of(id, finished, *canceled.borrow());
                        return outcome(spec, &dir, id, end).await;
                    }
                }
                POLL
            }
            Err(SlurmError::UnknownJob(_)) if unknown + 1 >= UNKNOWN_POLLS => {
                return Err(RunError::Engine(format!(
                    "Slurm no longer knows job {id} (its controller lost the job's state)"
                )));
            }
            Err(error) => {
                if matches!(error, SlurmError::UnknownJob(_)) {
                    unknown += 1;
                }
                let pause = pauses.next_pause();
                tracing::warn!(%error, job = %id, retry_in = ?pause, "asking Slurm for a job's state failed; waiting");
                pause
            }
        };
        let at_deadline = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = wait_canceled(&mut canceled) => {
                cancel(&slurm, id).await;
                return outcome(spec, &dir, id, End::Canceled).await;
            }
            () = at_deadline => {
                cancel(&slurm, id).await;
                return outcome(spec, &dir, id, End::TimedOut).await;
            }
        }
    }
}

/// The job's submission: the kind's `slurm` table, the task's timeout as
/// `--time` (Slurm's own backstop), `--nice` from its priority, and its
/// inputs copied under `in/` (named by `TASKLEDGER_IN`).
async fn job_spec(
    task: &Task,
    spec: &RunSpec,
    name: &str,
    dir: &Path,
) -> Result<JobSpec, RunError> {
    let settings = spec.kind.slurm.clone().unwrap_or_default();
    let mut env = vec![("TASKLEDGER_ATTEMPT".to_owned(), spec.attempt.to_string())];
    if !spec.inputs.is_empty() {
        let inputs = dir.join("in");
        copy_inputs(&spec.inputs, &inputs).await?;
        env.push(("TASKLEDGER_IN".to_owned(), inputs.display().to_string()));
    }
    Ok(JobSpec {
        name: name.to_owned(),
        argv: spec.argv.clone(),
        partition: settings.partition,
        account: settings.account,
        time_limit: Some(spec.timeout),
        memory_mb: settings.memory_mb,
        cpus: settings.cpus,
        nice: Some(nice_for(task.priority)),
        work_dir: dir.to_owned(),
        out_dir: dir.join("out"),
        log_file: None,
        env,
    })
}

/// The attempt's job: the one Slurm already has under its name, else a new
/// one. A submission Slurm refuses is the attempt's failure (Slurm's own
/// message, no retry); a controller that does not answer is waited out, and
/// the name looked up again before the next `sbatch` (the last one may have
/// been accepted without its answer arriving).
async fn find_or_submit(slurm: &Slurm, job: JobSpec) -> Result<JobId, RunError> {
    let mut pauses = Pauses::doubling(POLL, LONGEST_PAUSE);
    loop {
        let error = match slurm.find_by_name(&job.name).await {
            Ok(Some(found)) => {
                tracing::info!(job = %found.id, name = %job.name, state = ?found.state, "adopting the Slurm job of this attempt");
                return Ok(found.id);
            }
            Ok(None) => match slurm.submit(&job).await {
                Ok(id) => return Ok(id),
                Err(SlurmError::Rejected { message }) => {
                    return Err(RunError::Start(format!("Slurm refused the job: {message}")))
                }
                Err(error @ (SlurmError::InvalidSpec(_) | SlurmError::Prepare { .. })) => {
                    return Err(RunError::Start(error.to_string()))
                }
                Err(error) => error,
            },
            Err(error) => error,
        };
        let pause = pauses.next_pause();
        tracing::warn!(%error, name = %job.name, retry_in = ?pause, "Slurm did not take the job; trying again");
        tokio::time::sleep(pause).await;
    }
}

/// `scancel`s the job, retried until the controller takes it (a finished or
/// forgotten job is fine).
async fn cancel(slurm: &Slurm, id: JobId) {
    let mut pauses = Pauses::doubling(POLL, LONGEST_PAUSE);
    loop {
        match slurm.cancel(id).await {
            Ok(()) | Err(SlurmError::UnknownJob(_)) => return,
            Err(error) => {
                let pause = pauses.next_pause();
                tracing::warn!(%error, job = %id, retry_in = ?pause, "scancel failed; trying again");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// How a finished job ended, as the attempt's [`End`]. A job Slurm
/// cancelled without taskledger asking (an administrator's `scancel`, a
/// preemption) is a failure saying so: the task was not canceled by its
/// owner.
fn end_of(id: JobId, state: JobState, canceled_here: bool) -> End {
    match state {
        JobState::Completed => End::Exited(0),
        JobState::TimedOut => End::TimedOut,
        JobState::Cancelled if canceled_here => End::Canceled,
        JobState::Cancelled => End::Failed {
            exit_code: None,
            error: format!("Slurm cancelled job {id}; taskledger did not ask it to"),
            retryable: false,
        },
        JobState::Failed {
            kind: FailureKind::Exit,
            exit_code: Some(code),
            ..
        } if code != 0 => End::Exited(i64::from(code)),
        JobState::Failed {
            kind,
            exit_code,
            signal,
            reason,
            slurm_state,
        } => {
            let mut error = format!("Slurm ended job {id} as {slurm_state}");
            if !reason.is_empty() {
                error.push_str(&format!(" ({reason})"));
            }
            if let Some(signal) = signal {
                error.push_str(&format!("; killed by signal {signal}"));
            }
            End::Failed {
                exit_code,
                error,
                // A lost node is the infrastructure's failure: another
                // attempt may succeed.
                retryable: kind == FailureKind::NodeFail,
            }
        }
        // Not terminal: not called for these.
        JobState::Pending { .. } | JobState::Running => End::Failed {
            exit_code: None,
            error: format!("job {id} had not finished"),
            retryable: true,
        },
    }
}

/// The attempt's outcome: the job's log as its output (capped at the kind's
/// `log_limit_bytes`), and the files of `out/` when it exited.
async fn outcome(spec: &RunSpec, dir: &Path, id: JobId, end: End) -> Result<Outcome, RunError> {
    let mut stdout = Captured::default();
    if let Ok(log) = tokio::fs::read(dir.join(format!("slurm-{id}.log"))).await {
        stdout.push(&log, spec.kind.log_limit_bytes);
    }
    let files = match end {
        End::Exited(_) => {
            let out = dir.join("out");
            if tokio::fs::metadata(&out).await.is_err() {
                return Err(RunError::Output(format!(
                    "the job's output directory {} is missing; the runners and the compute \
                     nodes must share the runner's work directory",
                    out.display()
                )));
            }
            collect_files(&out, spec.kind.files_limit_bytes, "the output directory").await?
        }
        _ => Vec::new(),
    };
    Ok(Outcome {
        end,
        stdout,
        stderr: Captured::default(),
        files,
    })
}

/// A redelivered job of a task canceled while no runner watched its Slurm
/// job: `scancel` whatever job the attempt left.
pub(super) async fn cancel_leftover(task_id: TaskId, attempt: u32) {
    let slurm = Slurm::new();
    if let Ok(Some(job)) = slurm.find_by_name(&job_name(task_id, attempt)).await {
        if !job.state.is_terminal() {
            cancel(&slurm, job.id).await;
        }
    }
}

async fn wait_canceled(canceled: &mut watch::Receiver<bool>) {
    if canceled.wait_for(|canceled| *canceled).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priorities_get_lower_nice_values_never_negative() {
        assert_eq!(nice_for(1000), 0);
        assert_eq!(nice_for(0), 1000);
        assert_eq!(nice_for(-1000), 2000);
        assert!(nice_for(10) < nice_for(9));
    }

    #[test]
    fn slurm_states_map_onto_the_attempts_end() {
        let id = JobId(7);
        let failed = |kind, exit_code| JobState::Failed {
            kind,
            exit_code,
            signal: None,
            reason: "NonZeroExitCode".into(),
            slurm_state: "FAILED".into(),
        };
        assert_eq!(end_of(id, JobState::Completed, false), End::Exited(0));
        assert_eq!(end_of(id, JobState::TimedOut, false), End::TimedOut);
        assert_eq!(end_of(id, JobState::Cancelled, true), End::Canceled);
        assert!(matches!(
            end_of(id, JobState::Cancelled, false),
            End::Failed { retryable: false, ref error, .. } if error.contains("taskledger did not")
        ));
        assert_eq!(
            end_of(id, failed(FailureKind::Exit, Some(3)), false),
            End::Exited(3)
        );
        assert!(matches!(
            end_of(id, failed(FailureKind::OutOfMemory, Some(0)), false),
            End::Failed { retryable: false, exit_code: Some(0), ref error } if error.contains("job 7 as FAILED (NonZeroExitCode)")
        ));
        assert!(matches!(
            end_of(id, failed(FailureKind::NodeFail, None), false),
            End::Failed {
                retryable: true,
                ..
            }
        ));
    }
}
