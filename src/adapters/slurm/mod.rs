//! Slurm through its own command-line tools: `sbatch` submits, `squeue`
//! (then `sacct`, where accounting is on) looks jobs up, `scancel` cancels.
//!
//! The job's argv is never put into a shell script: every job runs one fixed
//! batch script, `exec "$@"`, and the argv follows the script's path on
//! `sbatch`'s command line, so Slurm hands the elements to it as positional
//! arguments unchanged (spaces, quotes, `$(...)`, `;`, leading `-`).
//! No process here is run through a shell either.
//!
//! Jobs are named by the caller (`tl-{task}-{attempt}`): [`Slurm::find_by_name`]
//! before [`Slurm::submit`] is what keeps a restarted runner from submitting an
//! attempt twice.

mod state;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub use state::{ExitStatus, FailureKind, JobId, JobInfo, JobState};
use tracing::instrument;

/// The batch script every job runs: the job's argv, exec'ed as given.
const BATCH_SCRIPT: &str =
    "#!/bin/sh\n# taskledger: runs the job's argv as given (no shell re-parse)\nexec \"$@\"\n";

/// Where the batch script is written, inside the job's working directory.
const BATCH_SCRIPT_NAME: &str = ".taskledger-slurm.sh";

/// One job to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// The job name, unique per attempt (`tl-{task}-{attempt}`): what
    /// [`Slurm::find_by_name`] looks for.
    pub name: String,
    /// The program and its arguments, passed as argv elements.
    pub argv: Vec<String>,
    /// `--partition`; the cluster's default partition when `None`.
    pub partition: Option<String>,
    /// `--account`; the user's default account when `None`.
    pub account: Option<String>,
    /// `--time`, rounded up to whole minutes (Slurm's unit); the partition's
    /// limit when `None`.
    pub time_limit: Option<Duration>,
    /// `--mem` in MiB; the partition's default when `None`.
    pub memory_mb: Option<u64>,
    /// `--cpus-per-task`; one when `None`.
    pub cpus: Option<u32>,
    /// `--nice`: positive values lower the job's priority.
    pub nice: Option<i32>,
    /// `--chdir`: created if missing; the batch script is written here. It
    /// must be on a file system the compute nodes share.
    pub work_dir: PathBuf,
    /// The job's artifact directory, created if missing and named in the
    /// job's environment as `TASKLEDGER_OUT`.
    pub out_dir: PathBuf,
    /// `--output` (stdout and stderr together); `{work_dir}/slurm-%j.log`
    /// when `None`.
    pub log_file: Option<PathBuf>,
    /// The job's environment besides `PATH` and `TASKLEDGER_OUT`: nothing
    /// else of the submitting process reaches the job.
    pub env: Vec<(String, String)>,
}

/// Why a Slurm command did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    /// `sbatch` refused the job (bad account, partition or limits): retrying
    /// the same job cannot help. The message is Slurm's own.
    #[error("Slurm refused the job: {message}")]
    Rejected { message: String },
    /// A command failed for another reason (e.g. the controller does not
    /// answer); the message is Slurm's own.
    #[error("{program} failed ({status}): {message}")]
    Command {
        program: String,
        status: String,
        message: String,
    },
    /// The command could not be started (not installed, not on `PATH`).
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The command did not finish within the client's timeout.
    #[error("{program} did not finish within {seconds}s")]
    Timeout { program: String, seconds: u64 },
    /// The command printed something this client cannot read.
    #[error("{program} printed something unexpected: {output:?}")]
    Unexpected { program: String, output: String },
    /// Neither the controller nor accounting knows the job.
    #[error("Slurm knows no job {0}")]
    UnknownJob(JobId),
    /// The job cannot be submitted as specified (caught before `sbatch`).
    #[error("invalid Slurm job: {0}")]
    InvalidSpec(String),
    /// The working or output directory, or the batch script, could not be made.
    #[error("preparing {path}: {source}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A client of one Slurm cluster, through its CLIs.
#[derive(Debug, Clone)]
pub struct Slurm {
    bin_dir: Option<PathBuf>,
    timeout: Duration,
}

impl Default for Slurm {
    fn default() -> Self {
        Self::new()
    }
}

impl Slurm {
    /// The cluster of the CLIs on `PATH` (and of `SLURM_CONF`, if set); each
    /// command may take up to a minute.
    pub fn new() -> Self {
        Self {
            bin_dir: None,
            timeout: Duration::from_secs(60),
        }
    }

    /// The CLIs in `bin_dir` instead of those on `PATH`.
    pub fn with_bin_dir(bin_dir: impl Into<PathBuf>) -> Self {
        Self {
            bin_dir: Some(bin_dir.into()),
            ..Self::new()
        }
    }

    /// Submits `job`; returns its id once the controller has accepted it.
    ///
    /// Errors: [`SlurmError::Rejected`] when Slurm refuses the job,
    /// [`SlurmError::InvalidSpec`] for an empty argv or name, others when
    /// Slurm cannot be reached. Does not look for an earlier job of the same
    /// name: call [`Slurm::find_by_name`] first.
    #[instrument(skip_all, fields(job = %job.name), err)]
    pub async fn submit(&self, job: &JobSpec) -> Result<JobId, SlurmError> {
        let arguments = sbatch_arguments(job)?;
        for dir in [&job.work_dir, &job.out_dir] {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| prepare_error(dir, source))?;
        }
        let script = job.work_dir.join(BATCH_SCRIPT_NAME);
        tokio::fs::write(&script, BATCH_SCRIPT)
            .await
            .map_err(|source| prepare_error(&script, source))?;
        let mut command = self.command("sbatch");
        // Only what the spec names reaches the job (sbatch --export=ALL
        // passes sbatch's own environment); SBATCH_* of the runner does not
        // change the submission either.
        command.env_clear();
        for name in ["PATH", "SLURM_CONF"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command
            .envs(job.env.iter().map(|(name, value)| (name, value)))
            .env("TASKLEDGER_OUT", &job.out_dir)
            .args(arguments)
            .arg(&script)
            .args(&job.argv);
        let output = match self.run("sbatch", command).await {
            Err(SlurmError::Command { message, .. }) if is_refusal(&message) => {
                return Err(SlurmError::Rejected { message });
            }
            other => other?,
        };
        // `--parsable` prints `id` or `id;cluster`.
        let first = output.lines().next().unwrap_or("").trim();
        first
            .split(';')
            .next()
            .and_then(|id| id.parse().ok())
            .map(JobId)
            .ok_or_else(|| SlurmError::Unexpected {
                program: "sbatch".into(),
                output: output.clone(),
            })
    }

    /// The job named `name` of the current user, if Slurm knows one: of
    /// several, an unfinished one, else the newest. Asks the controller,
    /// then accounting (the last week) if that is enabled.
    #[instrument(skip(self), err)]
    pub async fn find_by_name(&self, name: &str) -> Result<Option<JobInfo>, SlurmError> {
        let mut command = self.command("squeue");
        command.args(["--noheader", "--me", "--states=all", "--name", name]);
        command.args(["--Format", state::SQUEUE_FORMAT]);
        let output = self.run("squeue", command).await?;
        let jobs: Vec<JobInfo> = output
            .lines()
            .filter_map(state::parse_squeue_line)
            .filter(|job| job.name == name)
            .collect();
        if !jobs.is_empty() {
            return Ok(state::pick_for_adoption(jobs));
        }
        let jobs = self
            .sacct(&["--name", name, "--starttime", "now-7days"])
            .await?;
        Ok(state::pick_for_adoption(
            jobs.into_iter().filter(|job| job.name == name).collect(),
        ))
    }

    /// The job `id` as Slurm knows it now, or `None` if neither the
    /// controller nor accounting knows it.
    #[instrument(skip(self), fields(job_id = %id), err)]
    pub async fn job(&self, id: JobId) -> Result<Option<JobInfo>, SlurmError> {
        let id_text = id.to_string();
        let mut command = self.command("squeue");
        command.args(["--noheader", "--states=all", "--jobs", &id_text]);
        command.args(["--Format", state::SQUEUE_FORMAT]);
        let found = match self.run("squeue", command).await {
            Ok(output) => output
                .lines()
                .filter_map(state::parse_squeue_line)
                .find(|job| job.id == id),
            // The controller has forgotten it (older than MinJobAge).
            Err(SlurmError::Command { message, .. }) if message.contains("Invalid job id") => None,
            Err(error) => return Err(error),
        };
        if found.is_some() {
            return Ok(found);
        }
        let jobs = self.sacct(&["--jobs", &id_text]).await?;
        Ok(jobs.into_iter().find(|job| job.id == id))
    }

    /// The state of job `id`; [`SlurmError::UnknownJob`] if Slurm knows no
    /// such job.
    pub async fn state(&self, id: JobId) -> Result<JobState, SlurmError> {
        match self.job(id).await? {
            Some(job) => Ok(job.state),
            None => Err(SlurmError::UnknownJob(id)),
        }
    }

    /// Asks Slurm to cancel job `id` (`scancel`); the job then ends
    /// `CANCELLED` unless it finished first. Cancelling a finished job is not
    /// an error; [`SlurmError::UnknownJob`] if Slurm knows no such job.
    #[instrument(skip(self), fields(job_id = %id), err)]
    pub async fn cancel(&self, id: JobId) -> Result<(), SlurmError> {
        let mut command = self.command("scancel");
        // scancel exits 0 even when it could not cancel; only --verbose
        // prints why, as "error:" lines on stderr.
        command.arg("--verbose").arg(id.to_string());
        let (_, stderr) = self.run_capturing("scancel", command).await?;
        let error = stderr.lines().find(|line| line.contains("error:"));
        match error {
            None => Ok(()),
            Some(line) if line.contains("already completing or completed") => Ok(()),
            Some(line) if line.contains("Invalid job id") => Err(SlurmError::UnknownJob(id)),
            Some(line) => Err(SlurmError::Command {
                program: "scancel".into(),
                status: "exit status: 0".into(),
                message: line.trim().to_owned(),
            }),
        }
    }

    /// Jobs from `sacct` with `filters`; none when accounting is disabled.
    async fn sacct(&self, filters: &[&str]) -> Result<Vec<JobInfo>, SlurmError> {
        let mut command = self.command("sacct");
        command.args(["--noheader", "--parsable2", "--allocations"]);
        command.args(["--format", state::SACCT_FORMAT]);
        command.args(filters);
        match self.run("sacct", command).await {
            Ok(output) => Ok(output.lines().filter_map(state::parse_sacct_line).collect()),
            Err(SlurmError::Command { message, .. })
                if message.contains("accounting storage is disabled") =>
            {
                Ok(Vec::new())
            }
            Err(error) => Err(error),
        }
    }

    fn command(&self, program: &str) -> tokio::process::Command {
        let path = match &self.bin_dir {
            Some(dir) => dir.join(program),
            None => PathBuf::from(program),
        };
        let mut command = tokio::process::Command::new(path);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs `command`; its stdout on success, Slurm's stderr in the error.
    async fn run(
        &self,
        program: &str,
        command: tokio::process::Command,
    ) -> Result<String, SlurmError> {
        self.run_capturing(program, command)
            .await
            .map(|(stdout, _)| stdout)
    }

    /// Runs `command`; its stdout and stderr on success, Slurm's stderr in
    /// the error.
    async fn run_capturing(
        &self,
        program: &str,
        mut command: tokio::process::Command,
    ) -> Result<(String, String), SlurmError> {
        let child = command.spawn().map_err(|source| SlurmError::Spawn {
            program: program.into(),
            source,
        })?;
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| SlurmError::Timeout {
                program: program.into(),
                seconds: self.timeout.as_secs(),
            })?
            .map_err(|source| SlurmError::Spawn {
                program: program.into(),
                source,
            })?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            return Ok((stdout, stderr.into_owned()));
        }
        let message = stderr.lines().map(str::trim).collect::<Vec<_>>().join("; ");
        Err(SlurmError::Command {
            program: program.into(),
            status: output.status.to_string(),
            message,
        })
    }
}

/// `sbatch`'s options for `job` (without the script and its argv).
fn sbatch_arguments(job: &JobSpec) -> Result<Vec<String>, SlurmError> {
    if job.argv.is_empty() {
        return Err(SlurmError::InvalidSpec("the command is empty".into()));
    }
    if job.name.is_empty() || job.name.contains(char::is_whitespace) {
        return Err(SlurmError::InvalidSpec(format!(
            "job name {:?} must be non-empty, without whitespace",
            job.name
        )));
    }
    let log = job
        .log_file
        .clone()
        .unwrap_or_else(|| job.work_dir.join("slurm-%j.log"));
    let mut arguments = vec![
        "--parsable".to_owned(),
        format!("--job-name={}", job.name),
        format!("--chdir={}", job.work_dir.display()),
        format!("--output={}", log.display()),
        "--export=ALL".to_owned(),
        "--nodes=1".to_owned(),
        "--ntasks=1".to_owned(),
        // A node failure must end the attempt, not rerun it silently.
        "--no-requeue".to_owned(),
    ];
    if let Some(partition) = &job.partition {
        arguments.push(format!("--partition={partition}"));
    }
    if let Some(account) = &job.account {
        arguments.push(format!("--account={account}"));
    }
    if let Some(limit) = job.time_limit {
        let minutes = limit.as_secs().div_ceil(60).max(1);
        arguments.push(format!("--time={minutes}"));
    }
    if let Some(memory) = job.memory_mb {
        arguments.push(format!("--mem={memory}"));
    }
    if let Some(cpus) = job.cpus {
        arguments.push(format!("--cpus-per-task={cpus}"));
    }
    if let Some(nice) = job.nice {
        arguments.push(format!("--nice={nice}"));
    }
    Ok(arguments)
}

/// Whether `sbatch`'s message says the job itself is unacceptable, rather
/// than that the controller could not be reached.
fn is_refusal(message: &str) -> bool {
    message.contains("Batch job submission failed") && !message.contains("Unable to contact")
}

fn prepare_error(path: &Path, source: std::io::Error) -> SlurmError {
    SlurmError::Prepare {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            name: "tl-task-1".into(),
            argv: vec!["/bin/true".into()],
            partition: Some("debug".into()),
            account: None,
            time_limit: Some(Duration::from_secs(61)),
            memory_mb: Some(512),
            cpus: Some(2),
            nice: Some(10),
            work_dir: PathBuf::from("/w"),
            out_dir: PathBuf::from("/w/out"),
            log_file: None,
            env: Vec::new(),
        }
    }

    #[test]
    fn sbatch_options_come_from_the_spec() {
        let arguments = sbatch_arguments(&spec()).unwrap();
        for expected in [
            "--job-name=tl-task-1",
            "--chdir=/w",
            "--output=/w/slurm-%j.log",
            "--partition=debug",
            "--time=2",
            "--mem=512",
            "--cpus-per-task=2",
            "--nice=10",
            "--no-requeue",
        ] {
            assert!(
                arguments.iter().any(|a| a == expected),
                "{expected} in {arguments:?}"
            );
        }
        assert!(!arguments.iter().any(|a| a.starts_with("--account")));
    }

    #[test]
    fn an_empty_argv_or_a_name_with_spaces_is_refused_before_sbatch() {
        let empty = JobSpec {
            argv: Vec::new(),
            ..spec()
        };
        assert!(matches!(
            sbatch_arguments(&empty),
            Err(SlurmError::InvalidSpec(_))
        ));
        let spaced = JobSpec {
            name: "tl a".into(),
            ..spec()
        };
        assert!(matches!(
            sbatch_arguments(&spaced),
            Err(SlurmError::InvalidSpec(_))
        ));
    }

    #[test]
    fn refusals_are_told_from_an_unreachable_controller() {
        assert!(is_refusal(
            "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified"
        ));
        assert!(!is_refusal(
            "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"
        ));
    }
}
