//! How tasks of one kind run: the `[kinds.NAME]` table of the configuration
//! file, its checks, a submission's checks against it, and its argv.
//!
//! ```toml
//! [kinds.url-analysis]
//! image = "thug:latest"
//! command = ["thug", "-u", "{useragent}", "-r", "{referer}", ["-p", "{proxy}"], "{url}"]
//! required_params = ["url"]
//! optional_params = ["proxy"]
//! defaults = { useragent = "winxpie60", referer = "about:blank" }
//! timeout_seconds = 600
//! max_attempts = 3
//! retry = { initial_backoff_seconds = 2, max_backoff_seconds = 300, jitter = 0.2 }
//! network = "none"
//! memory_mb = 1024
//! max_running = 4
//! ```
//!
//! A command template is an argv: each `{param}` is replaced inside its own
//! element, so a parameter's value always stays one argument and never
//! reaches a shell. A group (`["-p", "{proxy}"]`) is left out whole when an
//! optional parameter it uses is absent.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::retry::RetryPolicy;
use super::slurm::SlurmSettings;

/// How tasks of one kind run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskKind {
    /// The container image (not used, and not needed, by `executor =
    /// "slurm"` kinds).
    #[serde(default)]
    pub image: String,
    /// The argv template: strings, and groups of strings (e.g. `["-p",
    /// "{proxy}"]`) that are left out whole when a parameter they use is
    /// absent.
    pub command: Vec<ArgTemplate>,
    /// Parameters every submission must give.
    #[serde(default)]
    pub required_params: Vec<String>,
    /// Parameters a submission may give (besides those with defaults).
    #[serde(default)]
    pub optional_params: Vec<String>,
    /// Values for parameters a submission leaves out.
    #[serde(default)]
    pub defaults: BTreeMap<String, toml::Value>,
    /// Input files every submission must name (uploaded with `POST
    /// /v1/blobs`); the runner mounts each read-only at `/in/{name}`.
    #[serde(default)]
    pub required_inputs: Vec<String>,
    /// Input files a submission may name.
    #[serde(default)]
    pub optional_inputs: Vec<String>,
    /// The wall-clock limit of one attempt. A submission may ask for less,
    /// never for more (up to `max_timeout_seconds` when the kind declares
    /// it).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// The longest timeout a submission may ask for; unset: the kind's own
    /// `timeout_seconds`.
    #[serde(default)]
    pub max_timeout_seconds: Option<u64>,
    /// Attempts before a task fails for good. A submission may ask for
    /// fewer, never for more.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Which failed attempts are retried and how long the next one waits
    /// (see [`RetryPolicy`]; a kind without one gets its defaults).
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Container network: `none` (default) or `bridge`.
    #[serde(default)]
    pub network: Network,
    /// Memory limit of the container.
    #[serde(default = "default_memory")]
    pub memory_mb: u64,
    /// CPUs the container may use (fractions allowed).
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// The most processes the container may run.
    #[serde(default = "default_pids")]
    pub pids_limit: i64,
    /// Bytes of stdout and of stderr kept (each); the rest is dropped and
    /// the log says so.
    #[serde(default = "default_log_limit")]
    pub log_limit_bytes: u64,
    /// Bytes of files under `/out` collected at most; more fails the task.
    #[serde(default = "default_files_limit")]
    pub files_limit_bytes: u64,
    /// How the command runs: `docker` (default: a sandboxed container),
    /// `local` (a plain child process, for development without a Docker
    /// engine; `image`, `network` and the limits do not apply) or `slurm`
    /// (a batch job on a Slurm cluster, see `slurm`; `image`, `network`,
    /// `memory_mb`, `cpus` and `pids_limit` do not apply).
    #[serde(default)]
    pub executor: Executor,
    /// The most attempts of this kind that run at once across every runner
    /// of the installation (a rate-limited outside service, a licence
    /// count); unset: no limit. Held by the runners' leases
    /// (`workers::runner::limit`).
    #[serde(default, deserialize_with = "positive_limit")]
    pub max_running: Option<u32>,
    /// Where and with what an `executor = "slurm"` kind's jobs run.
    #[serde(default)]
    pub slurm: Option<SlurmSettings>,
}

/// Reads `[kinds.*]` one kind at a time, so that a kind's bad field (an
/// unknown one, a value of the wrong type) is reported with the kind's
/// name, not only a line number.
pub(super) fn by_name<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, TaskKind>, D::Error> {
    let tables = BTreeMap::<String, toml::Value>::deserialize(deserializer)?;
    tables
        .into_iter()
        .map(|(name, table)| {
            let kind = TaskKind::deserialize(table).map_err(|error| {
                serde::de::Error::custom(format!("task kind {name:?}: {}", error.message()))
            })?;
            Ok((name, kind))
        })
        .collect()
}

/// What runs a kind's command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Executor {
    /// A container through the Docker API (the default).
    #[default]
    Docker,
    /// A child process of the runner, with `TASKLEDGER_OUT` naming a
    /// fresh directory that plays `/out`. Development only: no sandbox.
    Local,
    /// A batch job on a Slurm cluster, through `sbatch`/`squeue`/`scancel`
    /// (see the kind's `slurm` table).
    Slurm,
}

impl TryFrom<String> for Executor {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.as_str() {
            "docker" => Ok(Self::Docker),
            "local" => Ok(Self::Local),
            "slurm" => Ok(Self::Slurm),
            other => Err(format!(
                "executor must be \"docker\", \"local\" or \"slurm\"; got {other:?}"
            )),
        }
    }
}

/// One element of a command template.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ArgTemplate {
    /// One argument.
    One(String),
    /// Arguments that appear together or not at all.
    Group(Vec<String>),
}

impl ArgTemplate {
    fn parts(&self) -> &[String] {
        match self {
            Self::One(part) => std::slice::from_ref(part),
            Self::Group(parts) => parts,
        }
    }
}

/// A container's network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// No network at all (the default).
    #[default]
    None,
    /// Docker's default bridge, for kinds that must reach the internet.
    Bridge,
}

fn default_timeout() -> u64 {
    600
}
fn default_attempts() -> u32 {
    3
}
fn default_memory() -> u64 {
    512
}
fn default_cpus() -> f64 {
    1.0
}
fn default_pids() -> i64 {
    256
}
fn default_log_limit() -> u64 {
    1024 * 1024
}
fn default_files_limit() -> u64 {
    64 * 1024 * 1024
}

/// `max_running`: a positive integer (to `u32::MAX`), refused otherwise
/// with the field named (serde's own message would not name it).
fn positive_limit<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u32>, D::Error> {
    let value = toml::Value::deserialize(deserializer)?;
    match &value {
        toml::Value::Integer(limit) => u32::try_from(*limit).ok().filter(|limit| *limit >= 1),
        _ => None,
    }
    .map(Some)
    .ok_or_else(|| {
        serde::de::Error::custom(format!(
            "max_running must be a positive integer (the most attempts of the kind running at once); got {value}"
        ))
    })
}

/// Why a submission's kind or parameters are refused (an HTTP 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    /// No such kind is configured.
    #[error("unknown task kind {kind:?}; configured kinds: {known}")]
    UnknownKind {
        /// What was asked for.
        kind: String,
        /// The configured ones, comma-separated.
        known: String,
    },
    /// A required parameter is missing.
    #[error("task kind {kind:?} needs the parameter {param:?}")]
    MissingParam {
        /// The kind.
        kind: String,
        /// The parameter.
        param: String,
    },
    /// A parameter the kind does not declare.
    #[error("task kind {kind:?} has no parameter {param:?}; it takes: {known}")]
    UnknownParam {
        /// The kind.
        kind: String,
        /// The parameter.
        param: String,
        /// The declared ones.
        known: String,
    },
    /// A parameter whose value is not a string, number or boolean.
    #[error("parameter {param:?} must be a string, number or boolean")]
    NotScalar {
        /// The parameter.
        param: String,
    },
    /// A required input file is missing.
    #[error("task kind {kind:?} needs the input file {input:?} (upload it with POST /v1/blobs and name its sha256 in \"inputs\")")]
    MissingInput {
        /// The kind.
        kind: String,
        /// The input's name.
        input: String,
    },
    /// An input file the kind does not declare.
    #[error("task kind {kind:?} has no input file {input:?}; it takes: {known}")]
    UnknownInput {
        /// The kind.
        kind: String,
        /// The input's name.
        input: String,
        /// The declared ones.
        known: String,
    },
    /// A submission asked for a longer timeout than the kind allows.
    #[error("task kind {kind:?} allows a timeout of at most {limit} seconds; timeout_seconds {asked} is more")]
    TimeoutAboveLimit {
        /// The kind.
        kind: String,
        /// What the submission asked for.
        asked: u64,
        /// The kind's limit.
        limit: u64,
    },
    /// A submission asked for more attempts than the kind allows.
    #[error("task kind {kind:?} allows at most {limit} attempts; max_attempts {asked} is more")]
    AttemptsAboveLimit {
        /// The kind.
        kind: String,
        /// What the submission asked for.
        asked: u32,
        /// The kind's limit.
        limit: u32,
    },
    /// An input names a blob that was never uploaded.
    #[error("input {input:?} names blob {sha256}, which was not uploaded (POST /v1/blobs first)")]
    MissingBlob {
        /// The input's name.
        input: String,
        /// The blob's SHA-256.
        sha256: String,
    },
}

impl TaskKind {
    /// Checks the kind is consistent: an image and a command, every
    /// placeholder a declared parameter, limits in range.
    ///
    /// # Errors
    /// The first problem found.
    pub fn check(&self) -> anyhow::Result<()> {
        match (self.executor, &self.slurm) {
            (Executor::Slurm, slurm) => slurm.clone().unwrap_or_default().check()?,
            (_, Some(_)) => {
                anyhow::bail!("slurm applies only to kinds with executor = \"slurm\"")
            }
            (_, None) => anyhow::ensure!(!self.image.trim().is_empty(), "image is empty"),
        }
        anyhow::ensure!(!self.command.is_empty(), "command is empty");
        anyhow::ensure!(
            self.timeout_seconds > 0,
            "timeout_seconds must be at least 1"
        );
        if let Some(limit) = self.max_timeout_seconds {
            anyhow::ensure!(
                limit >= self.timeout_seconds,
                "max_timeout_seconds ({limit}) must be at least timeout_seconds ({})",
                self.timeout_seconds
            );
        }
        anyhow::ensure!(
            (1..=100).contains(&self.max_attempts),
            "max_attempts must be 1 to 100"
        );
        self.retry.check()?;
        anyhow::ensure!(self.memory_mb >= 6, "memory_mb must be at least 6");
        anyhow::ensure!(
            self.cpus > 0.0 && self.cpus <= 1024.0,
            "cpus must be above 0 and at most 1024"
        );
        anyhow::ensure!(self.pids_limit >= 1, "pids_limit must be at least 1");
        for input in self.required_inputs.iter().chain(&self.optional_inputs) {
            anyhow::ensure!(
                taskledger_events::task::is_input_name(input),
                "input name {input:?} must be a plain file name (letters, digits, '.', '_', '-'; at most 100 bytes)"
            );
        }
        anyhow::ensure!(
            self.log_limit_bytes >= 1024,
            "log_limit_bytes must be at least 1024"
        );
        let declared = self.declared_params();
        for element in self.command.iter().flat_map(ArgTemplate::parts) {
            for param in placeholders(element) {
                anyhow::ensure!(
                    declared.contains(param),
                    "command uses {{{param}}}, which is neither required, optional nor defaulted"
                );
            }
        }
        for (param, value) in &self.defaults {
            anyhow::ensure!(
                matches!(
                    value,
                    toml::Value::String(_)
                        | toml::Value::Integer(_)
                        | toml::Value::Float(_)
                        | toml::Value::Boolean(_)
                ),
                "default for {param:?} must be a string, number or boolean"
            );
        }
        Ok(())
    }

    fn declared_params(&self) -> BTreeSet<&str> {
        self.required_params
            .iter()
            .chain(&self.optional_params)
            .map(String::as_str)
            .chain(self.defaults.keys().map(String::as_str))
            .collect()
    }

    /// Checks a submission's parameters against the kind.
    ///
    /// # Errors
    /// A missing required parameter, an undeclared one, or a value that is
    /// not a scalar.
    pub fn check_params(&self, kind: &str, params: &Map<String, Value>) -> Result<(), KindError> {
        for param in &self.required_params {
            if params.get(param).is_none_or(Value::is_null) {
                return Err(KindError::MissingParam {
                    kind: kind.to_owned(),
                    param: param.clone(),
                });
            }
        }
        let declared = self.declared_params();
        for (param, value) in params {
            if !declared.contains(param.as_str()) {
                return Err(KindError::UnknownParam {
                    kind: kind.to_owned(),
                    param: param.clone(),
                    known: declared.iter().copied().collect::<Vec<_>>().join(", "),
                });
            }
            if !matches!(
                value,
                Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null
            ) {
                return Err(KindError::NotScalar {
                    param: param.clone(),
                });
            }
        }
        Ok(())
    }

    /// The longest timeout a submission may ask for: `max_timeout_seconds`,
    /// or the kind's own `timeout_seconds`.
    pub fn timeout_limit(&self) -> u64 {
        self.max_timeout_seconds.unwrap_or(self.timeout_seconds)
    }

    /// Checks a submission's own timeout and attempts: each may lower the
    /// kind's, never raise it past [`TaskKind::timeout_limit`] and
    /// `max_attempts`.
    ///
    /// # Errors
    /// The limit a value is above, named.
    pub fn check_limits(
        &self,
        kind: &str,
        timeout_seconds: Option<u64>,
        max_attempts: Option<u32>,
    ) -> Result<(), KindError> {
        let limit = self.timeout_limit();
        if let Some(asked) = timeout_seconds.filter(|asked| *asked > limit) {
            return Err(KindError::TimeoutAboveLimit {
                kind: kind.to_owned(),
                asked,
                limit,
            });
        }
        if let Some(asked) = max_attempts.filter(|asked| *asked > self.max_attempts) {
            return Err(KindError::AttemptsAboveLimit {
                kind: kind.to_owned(),
                asked,
                limit: self.max_attempts,
            });
        }
        Ok(())
    }

    /// Checks a submission's input file names against the kind (that each
    /// names an uploaded blob is checked by the caller, which has the blob
    /// store).
    ///
    /// # Errors
    /// A missing required input or an undeclared one.
    pub fn check_inputs(
        &self,
        kind: &str,
        inputs: &BTreeMap<String, String>,
    ) -> Result<(), KindError> {
        if let Some(input) = self
            .required_inputs
            .iter()
            .find(|input| !inputs.contains_key(*input))
        {
            return Err(KindError::MissingInput {
                kind: kind.to_owned(),
                input: input.clone(),
            });
        }
        let declared: BTreeSet<&str> = self
            .required_inputs
            .iter()
            .chain(&self.optional_inputs)
            .map(String::as_str)
            .collect();
        if let Some(input) = inputs
            .keys()
            .find(|input| !declared.contains(input.as_str()))
        {
            return Err(KindError::UnknownInput {
                kind: kind.to_owned(),
                input: input.clone(),
                known: if declared.is_empty() {
                    "none".to_owned()
                } else {
                    declared.iter().copied().collect::<Vec<_>>().join(", ")
                },
            });
        }
        Ok(())
    }

    /// The argv for a submission: each template element with its
    /// placeholders replaced by the parameter (or its default). An element
    /// or group that uses an absent optional parameter is left out whole, so
    /// neither an empty argument nor a dangling flag appears.
    pub fn argv(&self, params: &Map<String, Value>) -> Vec<String> {
        let value_of = |param: &str| -> Option<String> {
            match params.get(param) {
                Some(Value::String(text)) => Some(text.clone()),
                Some(Value::Null) | None => self.defaults.get(param).map(|value| match value {
                    toml::Value::String(text) => text.clone(),
                    other => other.to_string(),
                }),
                Some(other) => Some(other.to_string()),
            }
        };
        let mut argv = Vec::with_capacity(self.command.len());
        for element in &self.command {
            let parts = element.parts();
            let complete = parts
                .iter()
                .flat_map(|part| placeholders(part))
                .all(|name| value_of(name).is_some());
            if !complete {
                continue;
            }
            for part in parts {
                let mut out = part.clone();
                for name in placeholders(part) {
                    out = out.replace(&format!("{{{name}}}"), &value_of(name).unwrap_or_default());
                }
                argv.push(out);
            }
        }
        argv
    }
}

/// The `{name}` placeholders in one template element.
fn placeholders(element: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = element;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            names.push(name);
        }
        rest = &after[end + 1..];
    }
    names
}
