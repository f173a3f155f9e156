//! The bare engines `taskledger-bench tasks` compares taskledger with: the
//! same trivial job run straight on the engine, `parallel` at a time, with
//! nothing of taskledger in the way.
//!
//! - `docker-run`: the `docker run --rm` command line (what a user without
//!   taskledger types, and what issue 15 names), with the same image and the
//!   same sandbox flags as the runner's containers (no network, every
//!   capability dropped, no new privileges, read-only root with a `/tmp`
//!   tmpfs, the kind's memory, CPU and process limits). Without them the
//!   bare container would pay for a bridge network's set-up that taskledger's
//!   do not, and taskledger would look better than it is.
//! - `docker-api`: the fewest engine calls a container can take (create,
//!   start, wait, remove) through the engine API, with the same sandbox: the
//!   floor under any runner, without the CLI's own process start.
//! - `sbatch`: `sbatch --wait` of the command, through the same one-line
//!   `exec "$@"` batch script the runner's Slurm adapter submits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder};
use bollard::Docker;
use futures::StreamExt;
use taskledger::config::kind::TaskKind;
use tokio::task::JoinSet;

/// A bare engine and what it runs.
#[derive(Debug, Clone)]
pub(crate) enum Bare {
    /// `docker run --rm` with these arguments (flags, image, argv).
    DockerRun(Vec<String>),
    /// Create, start, wait and remove through the engine API.
    DockerApi(Docker, Box<ContainerCreateBody>),
    /// `sbatch --wait` with these arguments (flags, script, argv).
    Sbatch(Vec<String>),
}

impl Bare {
    /// `docker run --rm` of `kind`'s image and `argv`, sandboxed like the
    /// runner's containers.
    pub(crate) fn docker_run(kind: &TaskKind, argv: &[String]) -> Self {
        let memory = format!("{}m", kind.memory_mb);
        let mut args: Vec<String> = [
            "run",
            "--rm",
            "--network",
            "none",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--read-only",
            "--tmpfs",
            "/tmp:rw,noexec,nosuid,size=64m",
            "--memory",
            &memory,
            "--memory-swap",
            &memory,
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        args.extend([
            "--cpus".to_owned(),
            kind.cpus.to_string(),
            "--pids-limit".to_owned(),
            kind.pids_limit.to_string(),
            kind.image.clone(),
        ]);
        args.extend(argv.iter().cloned());
        Self::DockerRun(args)
    }

    /// The engine-API floor for `kind`'s image and `argv`, same sandbox.
    pub(crate) fn docker_api(docker: Docker, kind: &TaskKind, argv: &[String]) -> Self {
        let memory = i64::try_from(kind.memory_mb * 1024 * 1024).unwrap_or(i64::MAX);
        let body = ContainerCreateBody {
            image: Some(kind.image.clone()),
            cmd: Some(argv.to_vec()),
            host_config: Some(HostConfig {
                network_mode: Some("none".to_owned()),
                cap_drop: Some(vec!["ALL".to_owned()]),
                security_opt: Some(vec!["no-new-privileges".to_owned()]),
                memory: Some(memory),
                memory_swap: Some(memory),
                nano_cpus: Some((kind.cpus * 1e9) as i64),
                pids_limit: Some(kind.pids_limit),
                readonly_rootfs: Some(true),
                tmpfs: Some(HashMap::from([(
                    "/tmp".to_owned(),
                    "rw,noexec,nosuid,size=64m".to_owned(),
                )])),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        Self::DockerApi(docker, Box::new(body))
    }

    /// `sbatch --wait` of `argv` on `partition`, through the adapter's
    /// `exec "$@"` script, written into `work_dir`.
    ///
    /// # Errors
    /// When `work_dir` or the script cannot be written.
    pub(crate) fn sbatch(
        partition: &str,
        argv: &[String],
        work_dir: &Path,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(work_dir)
            .with_context(|| format!("creating {}", work_dir.display()))?;
        let script: PathBuf = work_dir.join("bare-sbatch.sh");
        std::fs::write(&script, "#!/bin/sh\nexec \"$@\"\n")
            .with_context(|| format!("writing {}", script.display()))?;
        let mut args: Vec<String> = vec![
            "--wait".to_owned(),
            "--quiet".to_owned(),
            format!("--partition={partition}"),
            "--job-name=tl-bench-bare".to_owned(),
            format!("--chdir={}", work_dir.display()),
            format!("--output={}", work_dir.join("slurm-%j.log").display()),
            script.display().to_string(),
        ];
        args.extend(argv.iter().cloned());
        Ok(Self::Sbatch(args))
    }

    /// The name printed for this baseline.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::DockerRun(_) => "docker-run",
            Self::DockerApi(..) => "docker-api",
            Self::Sbatch(_) => "sbatch",
        }
    }

    /// What it runs, as a note for the printed line.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::DockerRun(args) => format!("docker {}", args.join(" ")),
            Self::DockerApi(..) => {
                "engine API: create, start, wait, remove; same image and sandbox".to_owned()
            }
            Self::Sbatch(args) => format!("sbatch {}", args.join(" ")),
        }
    }

    /// Runs the job `tasks` times, `parallel` at a time; (failed, elapsed).
    ///
    /// # Errors
    /// When the engine cannot be reached at all (nothing succeeded).
    pub(crate) async fn run(
        &self,
        tasks: usize,
        parallel: usize,
    ) -> anyhow::Result<(usize, Duration)> {
        let next = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let began = Instant::now();
        let mut workers = JoinSet::new();
        for _ in 0..parallel.max(1) {
            let (bare, next, failed) = (self.clone(), next.clone(), failed.clone());
            workers.spawn(async move {
                let mut first_error = None;
                while next.fetch_add(1, Ordering::Relaxed) < tasks {
                    if let Err(error) = bare.once().await {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert(error);
                    }
                }
                first_error
            });
        }
        let mut first_error = None;
        while let Some(joined) = workers.join_next().await {
            if let Some(error) = joined? {
                first_error.get_or_insert(error);
            }
        }
        let elapsed = began.elapsed();
        let failed = failed.load(Ordering::Relaxed);
        if let Some(error) = first_error.filter(|_| failed == tasks) {
            bail!("no bare {} job succeeded: {error:#}", self.name());
        }
        Ok((failed, elapsed))
    }

    async fn once(&self) -> anyhow::Result<()> {
        match self {
            Self::DockerRun(args) => command("docker", args).await,
            Self::Sbatch(args) => command("sbatch", args).await,
            Self::DockerApi(docker, body) => {
                let created = docker.create_container(None, (**body).clone()).await?;
                let outcome = async {
                    docker.start_container(&created.id, None).await?;
                    let options = WaitContainerOptionsBuilder::default()
                        .condition("not-running")
                        .build();
                    match docker
                        .wait_container(&created.id, Some(options))
                        .next()
                        .await
                    {
                        Some(Ok(response)) if response.status_code == 0 => Ok(()),
                        Some(Ok(response)) => bail!("exited with {}", response.status_code),
                        Some(Err(error)) => Err(error.into()),
                        None => bail!("the wait ended early"),
                    }
                }
                .await;
                let options = RemoveContainerOptionsBuilder::default().force(true).build();
                docker
                    .remove_container(&created.id, Some(options))
                    .await
                    .context("removing the container")?;
                outcome
            }
        }
    }
}

async fn command(program: &str, args: &[String]) -> anyhow::Result<()> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
