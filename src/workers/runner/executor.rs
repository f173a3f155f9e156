//! Running one attempt's command: in a sandboxed Docker container
//! ([`run_docker`]) or, for development, as a child process ([`run_local`]).
//! Both stream stdout and stderr into size-capped buffers, stop the command
//! at the timeout or on cancellation, and collect the files written to
//! `/out` (top-level regular files, [`super::collect`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountBindOptions, MountBindOptionsPropagationEnum,
    MountType,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    KillContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use super::collect::collect_files;
use crate::config::kind::{Network, TaskKind};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The container's name (unique per task and attempt).
    pub name: String,
    /// The kind's settings (image, limits, network).
    pub kind: TaskKind,
    /// The argv, parameters already substituted.
    pub argv: Vec<String>,
    /// The attempt's wall-clock limit.
    pub timeout: Duration,
    /// The attempt, from 1: the command sees it as `TASKLEDGER_ATTEMPT`.
    pub attempt: u32,
    /// Labels for the container (task id, attempt, worker).
    pub labels: HashMap<String, String>,
    /// Input files: the name under `/in/` and the stored blob (an absolute
    /// path on the runner's machine, which the engine must share).
    pub inputs: Vec<(String, PathBuf)>,
    /// How a Docker container's `/out` comes back.
    pub out: OutMount,
}

/// How a Docker container's `/out` comes back (`[docker] out`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutMount {
    /// Bind-mounted from this directory of the runner's host (the engine
    /// must be on it), made fresh before the container and read after its
    /// exit. Removing it is the caller's: after the outcome is recorded.
    Bind(PathBuf),
    /// An anonymous volume, copied out through the engine as a tar and
    /// removed with the container.
    Archive,
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// It exited with this code.
    Exited(i64),
    /// It ran past the timeout and was killed.
    TimedOut,
    /// The task was canceled and the command killed.
    Canceled,
    /// The executor ended it unsuccessfully for a reason of its own (Slurm's
    /// `NODE_FAIL`, `OUT_OF_MEMORY`, a `scancel` taskledger did not ask for).
    Failed {
        /// The exit code, if the executor gives one.
        exit_code: Option<i32>,
        /// What happened, in the executor's words.
        error: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
}

/// A captured output stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The bytes kept (at most the kind's `log_limit_bytes`).
    pub bytes: Vec<u8>,
    /// How many bytes the stream had in all.
    pub total: u64,
}

impl Captured {
    pub(super) fn push(&mut self, chunk: &[u8], limit: u64) {
        self.total += chunk.len() as u64;
        let room = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .saturating_sub(self.bytes.len());
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// Whether bytes were dropped.
    pub fn truncated(&self) -> bool {
        self.total > self.bytes.len() as u64
    }

    /// The kept bytes, with a last line saying what was dropped.
    pub fn into_log(self) -> Vec<u8> {
        let truncated = self.truncated();
        let kept = self.bytes.len();
        let mut bytes = self.bytes;
        if truncated {
            bytes.extend_from_slice(
                format!(
                    "\n[taskledger: output truncated: kept {kept} of {} bytes]\n",
                    self.total
                )
                .as_bytes(),
            );
        }
        bytes
    }
}

/// What an attempt produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How it ended.
    pub end: End,
    /// Its standard output.
    pub stdout: Captured,
    /// Its standard error.
    pub stderr: Captured,
    /// The top-level regular files under `/out`: name and content (empty
    /// when it did not exit).
    pub files: Vec<(String, Vec<u8>)>,
}

/// Why an attempt could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The image is not on the engine (runners never pull).
    #[error("image {image:?} is not present on the Docker engine; build or load it there (runners do not pull images)")]
    MissingImage {
        /// The image.
        image: String,
    },
    /// The command's output broke a limit or was unreadable.
    #[error("{0}")]
    Output(String),
    /// The command could not be started (a local executor's program).
    #[error("the command could not be started: {0}")]
    Start(String),
    /// The Docker engine failed; another attempt may succeed.
    #[error("the Docker engine failed: {0}")]
    Engine(String),
}

impl RunError {
    /// Whether another attempt may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Engine(_))
    }
}

impl From<DockerError> for RunError {
    fn from(error: DockerError) -> Self {
        Self::Engine(error.to_string())
    }
}

/// Runs `spec` in a container: no network unless the kind allows it, every
/// capability dropped, no new privileges, read-only root with a `/tmp`
/// tmpfs, memory, CPU and process limits, the inputs read-only, and `/out`
/// the one writable place: bind-mounted from the host directory of
/// [`OutMount::Bind`] (read there after the exit, and left for the caller
/// to remove), or an anonymous volume copied out after the exit. The
/// container is always removed (with its volume).
///
/// Engine calls per attempt: create, start, logs (followed), wait, remove,
/// and with [`OutMount::Archive`] the archive of `/out` (after an exit);
/// a kill when it timed out or was canceled, and for a `bridge` kind a
/// look at the bridge network first.
///
/// # Errors
/// See [`RunError`].
pub async fn run_docker(
    docker: &Docker,
    spec: &RunSpec,
    mut canceled: watch::Receiver<bool>,
) -> Result<Outcome, RunError> {
    if spec.kind.network == Network::Bridge {
        // Under `dockerd --bridge=none` the container would silently run
        // with no network at all: refuse instead.
        crate::service::dependencies::bridge_network(docker)
            .await
            .map_err(RunError::Start)?;
    }
    // Inputs are bind-mounted read-only, one file each.
    let binds: Vec<String> = spec
        .inputs
        .iter()
        .map(|(name, path)| format!("{}:/in/{name}:ro", path.display()))
        .collect();
    let (volumes, mounts) = match &spec.out {
        OutMount::Bind(dir) => {
            super::out_dir::prepare(dir).await?;
            let out = Mount {
                target: Some("/out".to_owned()),
                source: Some(dir.display().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(false),
                // Unlike a `binds` entry, a missing source is an error, not
                // an empty directory the engine makes on its own host.
                bind_options: Some(MountBindOptions {
                    propagation: Some(MountBindOptionsPropagationEnum::RPRIVATE),
                    ..MountBindOptions::default()
                }),
                ..Mount::default()
            };
            (None, Some(vec![out]))
        }
        OutMount::Archive => (Some(vec!["/out".to_owned()]), None),
    };
    let body = ContainerCreateBody {
        image: Some(spec.kind.image.clone()),
        cmd: Some(spec.argv.clone()),
        env: Some(vec![format!("TASKLEDGER_ATTEMPT={}", spec.attempt)]),
        labels: Some(spec.labels.clone()),
        volumes,
        host_config: Some(HostConfig {
            network_mode: Some(
                match spec.kind.network {
                    Network::None => "none",
                    Network::Bridge => "bridge",
                }
                .to_owned(),
            ),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            memory: Some(i64::try_from(spec.kind.memory_mb * 1024 * 1024).unwrap_or(i64::MAX)),
            memory_swap: Some(i64::try_from(spec.kind.memory_mb * 1024 * 1024).unwrap_or(i64::MAX)),
            nano_cpus: Some((spec.kind.cpus * 1e9) as i64),
            pids_limit: Some(spec.kind.pids_limit),
            readonly_rootfs: Some(true),
            binds: (!binds.is_empty()).then_some(binds),
            mounts,
            tmpfs: Some(HashMap::from([(
                "/tmp".to_owned(),
                "rw,noexec,nosuid,size=64m".to_owned(),
            )])),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    let id = create(docker, spec, body).await?;
    let outcome = run_created(docker, &id, spec, &mut canceled).await;
    remove(docker, &id).await;
    outcome
}

/// Creates the attempt's container; its id. One engine call in the usual
/// case: the image is not inspected first (the engine answers the create
/// of a missing image with 404 and never pulls), and no container of the
/// same name is removed first (the create answers 409 then: that one is a
/// leftover of a runner that died running this very attempt, so it is
/// removed, with its volume, and the create made once more).
async fn create(
    docker: &Docker,
    spec: &RunSpec,
    body: ContainerCreateBody,
) -> Result<String, RunError> {
    let options = CreateContainerOptionsBuilder::default()
        .name(&spec.name)
        .build();
    let missing = |message: &str| {
        // A 404 of a create names what is missing; only the image can be.
        message.to_ascii_lowercase().contains("image")
    };
    match docker
        .create_container(Some(options.clone()), body.clone())
        .await
    {
        Ok(created) => return Ok(created.id),
        Err(DockerError::DockerResponseServerError {
            status_code: 409, ..
        }) => {
            tracing::info!(container = %spec.name, "removing a leftover container of this attempt");
            remove(docker, &spec.name).await;
        }
        Err(DockerError::DockerResponseServerError {
            status_code: 404,
            message,
        }) if missing(&message) => {
            return Err(RunError::MissingImage {
                image: spec.kind.image.clone(),
            })
        }
        Err(error) => return Err(error.into()),
    }
    match docker.create_container(Some(options), body).await {
        Ok(created) => Ok(created.id),
        Err(DockerError::DockerResponseServerError {
            status_code: 404,
            message,
        }) if missing(&message) => Err(RunError::MissingImage {
            image: spec.kind.image.clone(),
        }),
        Err(error) => Err(error.into()),
    }
}

async fn run_created(
    docker: &Docker,
    id: &str,
    spec: &RunSpec,
    canceled: &mut watch::Receiver<bool>,
) -> Result<Outcome, RunError> {
    docker.start_container(id, None).await?;
    let limit = spec.kind.log_limit_bytes;
    let logs = {
        let docker = docker.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            let options = LogsOptionsBuilder::default()
                .follow(true)
                .stdout(true)
                .stderr(true)
                .build();
            let mut stream = docker.logs(&id, Some(options));
            let (mut stdout, mut stderr) = (Captured::default(), Captured::default());
            while let Some(item) = stream.next().await {
                match item {
                    Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                        stdout.push(&message, limit);
                    }
                    Ok(LogOutput::StdErr { message }) => stderr.push(&message, limit),
                    Ok(LogOutput::StdIn { .. }) => {}
                    Err(error) => {
                        tracing::warn!(%error, "reading a container's logs failed");
                        break;
                    }
                }
            }
            (stdout, stderr)
        })
    };
    let wait = async {
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        match docker.wait_container(id, Some(options)).next().await {
            Some(Ok(response)) => Ok(response.status_code),
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(error)) => Err(RunError::from(error)),
            None => Err(RunError::Engine(
                "the wait for the container ended early".into(),
            )),
        }
    };
    let end = tokio::select! {
        code = wait => End::Exited(code?),
        () = tokio::time::sleep(spec.timeout) => End::TimedOut,
        () = wait_canceled(canceled) => End::Canceled,
    };
    if !matches!(end, End::Exited(_)) {
        let options = KillContainerOptionsBuilder::default()
            .signal("KILL")
            .build();
        if let Err(error) = docker.kill_container(id, Some(options)).await {
            tracing::debug!(%error, "killing a container that may have exited");
        }
    }
    let abort_logs = logs.abort_handle();
    let (stdout, stderr) = match tokio::time::timeout(Duration::from_secs(10), logs).await {
        Ok(Ok(captured)) => captured,
        _ => {
            abort_logs.abort();
            (Captured::default(), Captured::default())
        }
    };
    let limit = spec.kind.files_limit_bytes;
    let files = match (&end, &spec.out) {
        (End::Exited(_), OutMount::Bind(dir)) => collect_files(dir, limit, "/out").await?,
        (End::Exited(_), OutMount::Archive) => copy_out(docker, id, limit).await?,
        (End::TimedOut | End::Canceled | End::Failed { .. }, _) => Vec::new(),
    };
    Ok(Outcome {
        end,
        stdout,
        stderr,
        files,
    })
}

async fn wait_canceled(canceled: &mut watch::Receiver<bool>) {
    if canceled.wait_for(|canceled| *canceled).await.is_err() {
        // The watcher is gone: never canceled.
        std::future::pending::<()>().await;
    }
}

/// The top-level regular files under the container's `/out`.
async fn copy_out(
    docker: &Docker,
    id: &str,
    limit: u64,
) -> Result<Vec<(String, Vec<u8>)>, RunError> {
    let options = DownloadFromContainerOptionsBuilder::default()
        .path("/out")
        .build();
    let mut stream = docker.download_from_container(id, Some(options));
    let mut archive = Vec::new();
    // Tar framing adds 512 bytes per file and some padding.
    let ceiling = limit.saturating_add(1024 * 1024);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        archive.extend_from_slice(&chunk);
        if archive.len() as u64 > ceiling {
            return Err(RunError::Output(format!(
                "the files in /out exceed the kind's files_limit_bytes ({limit} bytes)"
            )));
        }
    }
    let mut files = Vec::new();
    let mut total = 0_u64;
    let mut reader = tar::Archive::new(archive.as_slice());
    let entries = reader
        .entries()
        .map_err(|error| RunError::Output(format!("/out could not be read: {error}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|error| RunError::Output(format!("/out could not be read: {error}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|error| RunError::Output(format!("/out holds an unreadable name: {error}")))?
            .into_owned();
        let mut parts = path.components();
        // Entries are `out/<name>`; deeper files are not collected.
        let (Some(_), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Some(name) = name.as_os_str().to_str().map(str::to_owned) else {
            continue;
        };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes)
            .map_err(|error| RunError::Output(format!("/out/{name} could not be read: {error}")))?;
        total += bytes.len() as u64;
        if total > limit {
            return Err(RunError::Output(format!(
                "the files in /out exceed the kind's files_limit_bytes ({limit} bytes)"
            )));
        }
        files.push((name, bytes));
    }
    Ok(files)
}

/// Kills and removes a container and its volumes; a missing one is fine.
pub async fn remove(docker: &Docker, id_or_name: &str) {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id_or_name, Some(options)).await {
        Ok(())
        | Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(error) => tracing::warn!(%error, container = id_or_name, "removing a container failed"),
    }
}

/// Runs `spec`'s argv as a child process in a fresh directory (named by
/// `TASKLEDGER_OUT`, playing `/out`) under `work_root`. For development
/// without a Docker engine: there is no sandbox.
///
/// # Errors
/// See [`RunError`].
pub async fn run_local(
    spec: &RunSpec,
    work_root: &std::path::Path,
    mut canceled: watch::Receiver<bool>,
) -> Result<Outcome, RunError> {
    let out: PathBuf = work_root.join(&spec.name);
    tokio::fs::create_dir_all(&out)
        .await
        .map_err(|error| RunError::Start(format!("creating {}: {error}", out.display())))?;
    let outcome = run_local_in(spec, &out, &mut canceled).await;
    let _ = tokio::fs::remove_dir_all(&out).await;
    let _ = tokio::fs::remove_dir_all(out.with_extension("in")).await;
    outcome
}

/// Copies each input to its name under `dir` (made, with the folders a
/// parent's artifact, `{parent_id}/{name}`, needs): for executors that
/// cannot mount them read-only.
pub(super) async fn copy_inputs(
    inputs: &[(String, PathBuf)],
    dir: &std::path::Path,
) -> Result<(), RunError> {
    let creating = |at: &std::path::Path, error: std::io::Error| {
        RunError::Start(format!("creating {}: {error}", at.display()))
    };
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|error| creating(dir, error))?;
    for (name, path) in inputs {
        let copy = dir.join(name);
        if let Some(parent) = copy.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|error| creating(parent, error))?;
        }
        tokio::fs::copy(path, &copy)
            .await
            .map_err(|error| RunError::Start(format!("copying input {name}: {error}")))?;
    }
    Ok(())
}

async fn run_local_in(
    spec: &RunSpec,
    out: &std::path::Path,
    canceled: &mut watch::Receiver<bool>,
) -> Result<Outcome, RunError> {
    let (program, arguments) = spec
        .argv
        .split_first()
        .ok_or_else(|| RunError::Start("the command is empty".into()))?;
    // Inputs: copies under `in/` beside the output directory, named in
    // TASKLEDGER_IN (the local executor has no read-only mounts).
    let inputs = out.with_extension("in");
    if !spec.inputs.is_empty() {
        copy_inputs(&spec.inputs, &inputs).await?;
    }
    let mut child = tokio::process::Command::new(program)
        .args(arguments)
        .env("TASKLEDGER_OUT", out)
        .env("TASKLEDGER_IN", &inputs)
        .env("TASKLEDGER_ATTEMPT", spec.attempt.to_string())
        .current_dir(out)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| RunError::Start(format!("{program}: {error}")))?;
    let limit = spec.kind.log_limit_bytes;
    let stdout = tokio::spawn(capture(child.stdout.take(), limit));
    let stderr = tokio::spawn(capture(child.stderr.take(), limit));
    let end = tokio::select! {
        status = child.wait() => {
            let status = status.map_err(|error| RunError::Start(error.to_string()))?;
            End::Exited(i64::from(status.code().unwrap_or(-1)))
        }
        () = tokio::time::sleep(spec.timeout) => End::TimedOut,
        () = wait_canceled(canceled) => End::Canceled,
    };
    if !matches!(end, End::Exited(_)) {
        let _ = child.kill().await;
    }
    // A background grandchild can keep the pipes open after the command
    // ended: do not wait for it for long.
    let drain = |handle: tokio::task::JoinHandle<Captured>| async move {
        let abort = handle.abort_handle();
        match tokio::time::timeout(Duration::from_secs(5), handle).await {
            Ok(Ok(captured)) => captured,
            _ => {
                abort.abort();
                Captured::default()
            }
        }
    };
    let stdout = drain(stdout).await;
    let stderr = drain(stderr).await;
    let files = match end {
        End::Exited(_) => {
            collect_files(out, spec.kind.files_limit_bytes, "the output directory").await?
        }
        _ => Vec::new(),
    };
    Ok(Outcome {
        end,
        stdout,
        stderr,
        files,
    })
}

async fn capture(stream: Option<impl AsyncRead + Unpin>, limit: u64) -> Captured {
    let mut captured = Captured::default();
    let Some(mut stream) = stream else {
        return captured;
    };
    let mut buffer = vec![0; 64 * 1024];
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        captured.push(&buffer[..read], limit);
    }
    captured
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_the_limit_and_says_what_it_dropped() {
        let mut captured = Captured::default();
        captured.push(b"hello ", 8);
        captured.push(b"world", 8);
        assert_eq!(captured.bytes, b"hello wo");
        assert_eq!(captured.total, 11);
        assert!(captured.truncated());
        let log = String::from_utf8(captured.into_log()).unwrap();
        assert!(log.starts_with("hello wo\n[taskledger: output truncated: kept 8 of 11 bytes]"));
    }
}
