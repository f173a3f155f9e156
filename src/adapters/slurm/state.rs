//! What Slurm says about a job, read from `squeue` and `sacct` lines, and
//! mapped onto the few states an executor acts on.
//!
//! Pure: no processes are run here, so every mapping is unit-tested.

use std::fmt;

/// A Slurm job id (the number `sbatch --parsable` prints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

/// Why a finished job counts as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// `FAILED`: the batch script exited non-zero (or was killed by a signal),
    /// or the job could not be started (reason `BadConstraints`, ...).
    Exit,
    /// `NODE_FAIL` / `BOOT_FAIL`: the node the job ran on went away.
    NodeFail,
    /// `OUT_OF_MEMORY`: the job went over its memory limit.
    OutOfMemory,
    /// Anything else terminal: `DEADLINE`, `PREEMPTED`, `SPECIAL_EXIT`,
    /// `REVOKED`, or a state this version does not know.
    Other,
}

/// The state of one job, as an executor acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for resources, held or requeued (`PENDING`, `REQUEUED`,
    /// `CONFIGURING`, ...); `reason` is Slurm's (`Priority`, `Resources`, ...).
    Pending { reason: String },
    /// Started and not finished (`RUNNING`, `COMPLETING`, `SUSPENDED`, ...).
    Running,
    /// `COMPLETED`: the batch script exited 0.
    Completed,
    /// Finished unsuccessfully; `slurm_state` is Slurm's own word for it.
    Failed {
        kind: FailureKind,
        exit_code: Option<i32>,
        signal: Option<i32>,
        reason: String,
        slurm_state: String,
    },
    /// `TIMEOUT`: killed at its time limit.
    TimedOut,
    /// `CANCELLED` (by `scancel` or an administrator).
    Cancelled,
}

impl JobState {
    /// Whether the job has finished (no later state follows).
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Self::Pending { .. } | Self::Running)
    }

    /// Maps Slurm's state word (`squeue %T` / `sacct State`; sacct's
    /// `CANCELLED by 0` counts as `CANCELLED`) with the job's reason and
    /// exit status.
    pub fn from_slurm(state: &str, reason: &str, exit: ExitStatus) -> Self {
        let word = state.split_whitespace().next().unwrap_or("");
        let reason = if reason == "None" { "" } else { reason }.to_owned();
        let failed = |kind| Self::Failed {
            kind,
            exit_code: exit.code,
            signal: exit.signal,
            reason: reason.clone(),
            slurm_state: word.to_owned(),
        };
        match word {
            "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED"
            | "RESV_DEL_HOLD" => Self::Pending { reason },
            "RUNNING" | "COMPLETING" | "SUSPENDED" | "STOPPED" | "RESIZING" | "SIGNALING"
            | "STAGE_OUT" => Self::Running,
            "COMPLETED" => Self::Completed,
            "FAILED" => failed(FailureKind::Exit),
            "NODE_FAIL" | "BOOT_FAIL" => failed(FailureKind::NodeFail),
            "OUT_OF_MEMORY" => failed(FailureKind::OutOfMemory),
            "TIMEOUT" => Self::TimedOut,
            "CANCELLED" => Self::Cancelled,
            _ => failed(FailureKind::Other),
        }
    }
}

/// How the batch script ended: its exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitStatus {
    /// From `squeue -O exit_code`: a raw wait(2) status (`768` = exit 3).
    pub fn from_wait_status(raw: &str) -> Self {
        let Ok(status) = raw.trim().parse::<i32>() else {
            return Self::default();
        };
        let signal = status & 0x7f;
        if signal == 0 {
            Self {
                code: Some((status >> 8) & 0xff),
                signal: None,
            }
        } else {
            Self {
                code: None,
                signal: Some(signal),
            }
        }
    }

    /// From `sacct ExitCode`: `code:signal` (`3:0` = exit 3, `0:9` = SIGKILL).
    pub fn from_code_signal(text: &str) -> Self {
        let mut parts = text.trim().splitn(2, ':');
        let code = parts.next().and_then(|part| part.parse::<i32>().ok());
        let signal = parts.next().and_then(|part| part.parse::<i32>().ok());
        match signal {
            Some(signal) if signal != 0 => Self {
                code: None,
                signal: Some(signal),
            },
            _ => Self { code, signal: None },
        }
    }
}

/// One job as `squeue`/`sacct` list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub id: JobId,
    pub name: String,
    pub state: JobState,
}

/// The `squeue --Format` that [`parse_squeue_line`] reads: `|` after every
/// field but the name, which comes last so that it may contain `|`.
pub(super) const SQUEUE_FORMAT: &str = "JobID:|,State:|,Reason:|,exit_code:|,Name:";

/// The `sacct --format` that [`parse_sacct_line`] reads (with `--parsable2`).
pub(super) const SACCT_FORMAT: &str = "JobID,State,Reason,ExitCode,JobName";

/// Reads a line printed with [`SQUEUE_FORMAT`]; `None` if it is not one.
pub(super) fn parse_squeue_line(line: &str) -> Option<JobInfo> {
    // The name without trailing blanks.
    parse_job_line(line, ExitStatus::from_wait_status, str::trim_end)
}

/// Reads a line printed with [`SACCT_FORMAT`]; `None` if it is not one
/// (or is a job step such as `12.batch`).
pub(super) fn parse_sacct_line(line: &str) -> Option<JobInfo> {
    parse_job_line(line, ExitStatus::from_code_signal, |name| name)
}

/// Reads `id|state|reason|exit|name` (the name last, so that it may hold
/// `|`), the exit status as `exit` reads it and the name as `name` leaves it.
fn parse_job_line(
    line: &str,
    exit: fn(&str) -> ExitStatus,
    name: fn(&str) -> &str,
) -> Option<JobInfo> {
    let mut fields = line.trim_end_matches(['\r', '\n']).splitn(5, '|');
    let id = fields.next()?.trim().parse().ok().map(JobId)?;
    let state = fields.next()?.trim();
    let reason = fields.next()?.trim();
    let exit = exit(fields.next()?);
    let name = name(fields.next()?).to_owned();
    Some(JobInfo {
        id,
        name,
        state: JobState::from_slurm(state, reason, exit),
    })
}

/// Of several jobs of one name, the one to adopt: an unfinished one if there
/// is one, else the newest.
pub(super) fn pick_for_adoption(mut jobs: Vec<JobInfo>) -> Option<JobInfo> {
    jobs.sort_by_key(|job| (!job.state.is_terminal(), job.id));
    jobs.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitStatus {
        ExitStatus {
            code: Some(code),
            signal: None,
        }
    }

    #[test]
    fn squeue_lines_map_to_states() {
        let completed = parse_squeue_line("7|COMPLETED|None|0|tl-a-1").unwrap();
        assert_eq!(completed.id, JobId(7));
        assert_eq!(completed.name, "tl-a-1");
        assert_eq!(completed.state, JobState::Completed);

        let failed = parse_squeue_line("8|FAILED|NonZeroExitCode|768|tl-b-2").unwrap();
        assert_eq!(
            failed.state,
            JobState::Failed {
                kind: FailureKind::Exit,
                exit_code: Some(3),
                signal: None,
                reason: "NonZeroExitCode".into(),
                slurm_state: "FAILED".into(),
            }
        );

        let pending = parse_squeue_line("9|PENDING|Priority|0|a|name|with|bars").unwrap();
        assert_eq!(pending.name, "a|name|with|bars");
        assert_eq!(
            pending.state,
            JobState::Pending {
                reason: "Priority".into()
            }
        );
        assert_eq!(parse_squeue_line("JOBID|STATE"), None);
        assert_eq!(parse_squeue_line(""), None);
    }

    #[test]
    fn sacct_lines_map_to_states() {
        let cancelled = parse_sacct_line("12|CANCELLED by 0|None|0:15|tl-c-1").unwrap();
        assert_eq!(cancelled.state, JobState::Cancelled);
        let oom = parse_sacct_line("13|OUT_OF_MEMORY|OutOfMemory|0:125|tl-d-1").unwrap();
        assert!(matches!(
            oom.state,
            JobState::Failed {
                kind: FailureKind::OutOfMemory,
                signal: Some(125),
                ..
            }
        ));
        assert_eq!(parse_sacct_line("13.batch|COMPLETED|None|0:0|batch"), None);
    }

    #[test]
    fn every_terminal_word_has_its_state() {
        let map = |word| JobState::from_slurm(word, "None", exit(1));
        assert_eq!(map("TIMEOUT"), JobState::TimedOut);
        assert_eq!(map("RUNNING"), JobState::Running);
        assert_eq!(map("COMPLETING"), JobState::Running);
        assert!(matches!(
            map("NODE_FAIL"),
            JobState::Failed {
                kind: FailureKind::NodeFail,
                ..
            }
        ));
        assert!(matches!(
            map("SOMETHING_NEW"),
            JobState::Failed {
                kind: FailureKind::Other,
                ..
            }
        ));
        assert!(map("PREEMPTED").is_terminal());
        assert!(!map("REQUEUED").is_terminal());
    }

    #[test]
    fn wait_statuses_give_code_or_signal() {
        assert_eq!(ExitStatus::from_wait_status("0"), exit(0));
        assert_eq!(ExitStatus::from_wait_status("768"), exit(3));
        assert_eq!(
            ExitStatus::from_wait_status("9"),
            ExitStatus {
                code: None,
                signal: Some(9)
            }
        );
        assert_eq!(ExitStatus::from_code_signal("3:0"), exit(3));
        assert_eq!(ExitStatus::from_wait_status("N/A"), ExitStatus::default());
    }

    #[test]
    fn adoption_prefers_an_unfinished_job_then_the_newest() {
        let job = |id, state| JobInfo {
            id: JobId(id),
            name: "tl-x-1".into(),
            state,
        };
        let picked = pick_for_adoption(vec![
            job(3, JobState::Cancelled),
            job(2, JobState::Running),
            job(1, JobState::Completed),
        ]);
        assert_eq!(picked.unwrap().id, JobId(2));
        let picked = pick_for_adoption(vec![
            job(1, JobState::Completed),
            job(4, JobState::Cancelled),
        ]);
        assert_eq!(picked.unwrap().id, JobId(4));
        assert_eq!(pick_for_adoption(Vec::new()), None);
    }
}
