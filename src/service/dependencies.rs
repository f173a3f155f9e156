//! The outside parts a process depends on: the Docker engine, RabbitMQ, and
//! what each task kind needs of the engine (its image, its network).
//! Checked at start-up (problems are logged loudly there), again every
//! [`REFRESH`], and shown by `/readyz` and `GET /v1/kinds`, so a missing
//! image or an engine without the network a kind asks for is known before
//! a task fails on it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bollard::errors::Error as DockerError;
use bollard::Docker;
use serde::Serialize;
use utoipa::ToSchema;

use crate::adapters::rabbitmq;
use crate::config::kind::{Executor, Network};
use crate::config::FileConfig;

/// How often the checks run again in the background.
pub const REFRESH: Duration = Duration::from_secs(30);
/// How old a report `/readyz` accepts before checking again.
const FRESH: Duration = Duration::from_secs(5);
/// How long one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// One outside part's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PartCheck {
    /// It answers.
    pub ok: bool,
    /// What is wrong, and what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl PartCheck {
    fn answers() -> Self {
        Self {
            ok: true,
            detail: None,
        }
    }

    fn fails(detail: String) -> Self {
        Self {
            ok: false,
            detail: Some(detail),
        }
    }
}

/// Whether a kind's tasks can run here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct KindCheck {
    /// Its tasks can run on this process's runner.
    pub available: bool,
    /// Why not (a missing image, an engine without the kind's network, no
    /// engine at all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// What the last check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The Docker engine, when this process runs containers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker: Option<PartCheck>,
    /// RabbitMQ, when this process relays or runs jobs through it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rabbitmq: Option<PartCheck>,
    /// Each kind, when this process runs tasks.
    pub kinds: BTreeMap<String, KindCheck>,
}

impl Report {
    /// Whether every part this process needs answers (kinds' problems are
    /// reported, not counted: the other kinds still run).
    pub fn parts_ok(&self) -> bool {
        self.docker.as_ref().is_none_or(|check| check.ok)
            && self.rabbitmq.as_ref().is_none_or(|check| check.ok)
    }
}

/// The checks of one process.
#[derive(Debug)]
pub struct Dependencies {
    docker: Option<Docker>,
    /// Containers are run here (the runner role, and a Docker kind).
    runs_containers: bool,
    /// RabbitMQ is used here (relay or runner, with `AMQP_URL`).
    amqp_url: Option<String>,
    config: Arc<FileConfig>,
    last: RwLock<Option<(Instant, Report)>>,
}

impl Dependencies {
    /// Checks for a process that runs tasks (`runs_tasks`) of `config`'s
    /// kinds and uses RabbitMQ at `amqp_url` (when it relays or runs jobs).
    pub fn new(config: Arc<FileConfig>, runs_tasks: bool, amqp_url: Option<String>) -> Self {
        let runs_containers = runs_tasks
            && config
                .kinds
                .values()
                .any(|kind| kind.executor == Executor::Docker);
        let docker = if runs_containers {
            Docker::connect_with_defaults().ok()
        } else {
            None
        };
        Self {
            docker,
            runs_containers,
            amqp_url,
            config: if runs_tasks {
                config
            } else {
                Arc::new(FileConfig::default())
            },
            last: RwLock::new(None),
        }
    }

    /// Nothing to check (a process without runner or relay).
    pub fn none() -> Self {
        Self::new(Arc::new(FileConfig::default()), false, None)
    }

    /// The latest report, checking again when it is older than a few
    /// seconds.
    pub async fn report(&self) -> Report {
        if let Ok(last) = self.last.read() {
            if let Some((at, report)) = last.as_ref() {
                if at.elapsed() < FRESH {
                    return report.clone();
                }
            }
        }
        self.check().await
    }

    /// Checks everything now and keeps the report.
    pub async fn check(&self) -> Report {
        let mut report = Report::default();
        let engine = if self.runs_containers {
            let check = match &self.docker {
                None => PartCheck::fails(
                    "no Docker client could be set up (DOCKER_HOST?); Docker kinds cannot run"
                        .into(),
                ),
                Some(docker) => match answered("the Docker engine", docker.ping(), |error| {
                    format!(
                        "the Docker engine does not answer: {error} (scripts/services.sh starts one)"
                    )
                })
                .await
                {
                    Ok(_) => PartCheck::answers(),
                    Err(check) => check,
                },
            };
            let up = check.ok;
            report.docker = Some(check);
            up.then_some(self.docker.as_ref()).flatten()
        } else {
            None
        };
        if let Some(url) = &self.amqp_url {
            let connection = rabbitmq::connect(url, "taskledger-readyz");
            let answer = answered("RabbitMQ", connection, |error| {
                format!("RabbitMQ does not answer at AMQP_URL: {error}")
            });
            report.rabbitmq = Some(match answer.await {
                Ok(connection) => {
                    let _ = connection.close(200, "readiness check".into()).await;
                    PartCheck::answers()
                }
                Err(check) => check,
            });
        }
        let mut bridge: Option<Result<(), String>> = None;
        for (name, kind) in &self.config.kinds {
            let problem = match (kind.executor, engine) {
                // Its partition was checked at start-up; a controller that
                // is down meanwhile is waited out by the runner.
                (Executor::Local | Executor::Slurm, _) => None,
                (Executor::Docker, None) => Some("no Docker engine answers this runner".to_owned()),
                (Executor::Docker, Some(docker)) => {
                    let mut problem = image_problem(docker, &kind.image).await;
                    if problem.is_none() && kind.network == Network::Bridge {
                        if bridge.is_none() {
                            bridge = Some(bridge_network(docker).await);
                        }
                        problem = bridge.clone().and_then(Result::err);
                    }
                    problem
                }
            };
            report.kinds.insert(
                name.clone(),
                KindCheck {
                    available: problem.is_none(),
                    problem,
                },
            );
        }
        if let Ok(mut last) = self.last.write() {
            *last = Some((Instant::now(), report.clone()));
        }
        report
    }

    /// Checks at start-up and logs every problem loudly, then again every
    /// [`REFRESH`] (logging what changed) until `stop` resolves.
    pub async fn watch(self: Arc<Self>, stop: impl std::future::Future<Output = ()> + Send) {
        let mut previous = self.check().await;
        log_problems(&previous, None);
        let work = async {
            loop {
                tokio::time::sleep(REFRESH).await;
                let report = self.check().await;
                log_problems(&report, Some(&previous));
                previous = report;
            }
        };
        tokio::select! {
            () = stop => {}
            () = work => {}
        }
    }
}

/// What `answer` gives within [`CHECK_TIMEOUT`], or the failed check: the
/// error it gave, as `refused` words it, or that `part` did not answer in
/// time.
async fn answered<T, E>(
    part: &str,
    answer: impl std::future::Future<Output = Result<T, E>>,
    refused: impl FnOnce(E) -> String,
) -> Result<T, PartCheck> {
    match tokio::time::timeout(CHECK_TIMEOUT, answer).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(PartCheck::fails(refused(error))),
        Err(_) => Err(PartCheck::fails(format!(
            "{part} did not answer within {}s",
            CHECK_TIMEOUT.as_secs()
        ))),
    }
}

async fn image_problem(docker: &Docker, image: &str) -> Option<String> {
    match tokio::time::timeout(CHECK_TIMEOUT, docker.inspect_image(image)).await {
        Ok(Ok(_)) => None,
        Ok(Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        })) => Some(format!(
            "image {image:?} is not on the Docker engine (runners never pull; scripts/images.sh builds the shipped kinds' images)"
        )),
        Ok(Err(error)) => Some(format!("inspecting image {image:?} failed: {error}")),
        Err(_) => Some(format!("inspecting image {image:?} timed out")),
    }
}

/// Whether the engine has the `bridge` network a `network = "bridge"` kind
/// is given (an engine started with `--bridge=none` has none, and its
/// containers would run without any network).
pub async fn bridge_network(docker: &Docker) -> Result<(), String> {
    let options = bollard::query_parameters::InspectNetworkOptions::default();
    match tokio::time::timeout(
        CHECK_TIMEOUT,
        docker.inspect_network("bridge", Some(options)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        })) => Err(
            "the kind asks for network \"bridge\", but the Docker engine has no bridge network \
             (it runs with --bridge=none): its tasks cannot reach any network here"
                .to_owned(),
        ),
        Ok(Err(error)) => Err(format!("inspecting the bridge network failed: {error}")),
        Err(_) => Err("inspecting the bridge network timed out".to_owned()),
    }
}

fn log_problems(report: &Report, previous: Option<&Report>) {
    for (part, check) in [("docker", &report.docker), ("rabbitmq", &report.rabbitmq)] {
        let Some(check) = check else { continue };
        let before = previous.and_then(|previous| match part {
            "docker" => previous.docker.as_ref(),
            _ => previous.rabbitmq.as_ref(),
        });
        if before == Some(check) {
            continue;
        }
        match &check.detail {
            Some(detail) => tracing::error!(part, "{detail}"),
            None if before.is_some() => tracing::info!(part, "answers again"),
            None => {}
        }
    }
    for (kind, check) in &report.kinds {
        if previous.and_then(|previous| previous.kinds.get(kind)) == Some(check) {
            continue;
        }
        match &check.problem {
            Some(problem) => {
                tracing::error!(kind, "task kind cannot run here: {problem}");
            }
            None if previous.is_some() => tracing::info!(kind, "task kind can run again"),
            None => {}
        }
    }
}
