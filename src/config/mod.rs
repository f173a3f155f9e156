//! The structured configuration file (`TASKLEDGER_CONFIG`, TOML): task kinds
//! now, other structured settings as they come.
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
//! network = "none"
//! memory_mb = 1024
//! ```
//!
//! A command template is an argv: each `{param}` is replaced inside its own
//! element, so a parameter's value always stays one argument and never
//! reaches a shell. A group (`["-p", "{proxy}"]`) is left out whole when an
//! optional parameter it uses is absent.

pub mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The shipped default configuration's text.
pub const BUILTIN: &str = include_str!("../../config/taskledger.toml");

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Task kinds by name.
    #[serde(default)]
    pub kinds: BTreeMap<String, TaskKind>,
    /// The RockBLOCK web API, for satellite devices.
    #[serde(default)]
    pub rockblock: Option<RockblockConfig>,
}

/// `[rockblock]`: where mobile-terminated messages go and how
/// mobile-originated webhooks are checked.
///
/// ```toml
/// [rockblock]
/// mt_url = "https://…/rockblock/MT"
/// username = "…"          # or ROCKBLOCK_USERNAME
/// password = "…"          # or ROCKBLOCK_PASSWORD
/// mo_public_key_file = "rock7.pem"
/// verify_mo_jwt = true
/// ```
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RockblockConfig {
    /// The provider's MT endpoint.
    pub mt_url: Option<String>,
    /// The account's user name (the environment's `ROCKBLOCK_USERNAME`
    /// wins).
    pub username: Option<String>,
    /// The account's password (the environment's `ROCKBLOCK_PASSWORD`
    /// wins). Never logged.
    pub password: Option<String>,
    /// The PEM public key that signs MO webhooks; a relative path is read
    /// from the configuration file's directory.
    pub mo_public_key_file: Option<std::path::PathBuf>,
    /// Check the webhooks' JWT (default true; turning it off accepts
    /// unsigned webhooks and is logged loudly at start-up).
    #[serde(default = "default_true")]
    pub verify_mo_jwt: bool,
    /// Attempts per outbound message before it fails for good.
    #[serde(default = "default_mt_attempts")]
    pub max_attempts: u32,
    /// The first retry's delay after a transient failure; each further one
    /// doubles it (at most an hour).
    #[serde(default = "default_retry_backoff")]
    pub retry_backoff_seconds: u64,
}

impl std::fmt::Debug for RockblockConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RockblockConfig")
            .field("mt_url", &self.mt_url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("mo_public_key_file", &self.mo_public_key_file)
            .field("verify_mo_jwt", &self.verify_mo_jwt)
            .field("max_attempts", &self.max_attempts)
            .field("retry_backoff_seconds", &self.retry_backoff_seconds)
            .finish()
    }
}

fn default_true() -> bool {
    true
}
fn default_mt_attempts() -> u32 {
    5
}
fn default_retry_backoff() -> u64 {
    30
}

/// How tasks of one kind run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskKind {
    /// The container image.
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
    /// The wall-clock limit of one attempt.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Attempts before a task fails for good.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
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
    /// How the command runs: `docker` (default: a sandboxed container) or
    /// `local` (a plain child process, for development without a Docker
    /// engine; `image`, `network` and the limits do not apply).
    #[serde(default)]
    pub executor: Executor,
}

/// What runs a kind's command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Executor {
    /// A container through the Docker API (the default).
    #[default]
    Docker,
    /// A child process of the runner, with `TASKLEDGER_OUT` naming a
    /// fresh directory that plays `/out`. Development only: no sandbox.
    Local,
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
    /// An input names a blob that was never uploaded.
    #[error("input {input:?} names blob {sha256}, which was not uploaded (POST /v1/blobs first)")]
    MissingBlob {
        /// The input's name.
        input: String,
        /// The blob's SHA-256.
        sha256: String,
    },
}

impl FileConfig {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    /// When the file cannot be read, is not valid TOML of this shape, or a
    /// kind is inconsistent (see [`TaskKind::check`]); the message names the
    /// file and the kind.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading TASKLEDGER_CONFIG {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses and checks configuration text.
    ///
    /// # Errors
    /// As [`FileConfig::load`].
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text).context("not a valid taskledger configuration")?;
        for (name, kind) in &config.kinds {
            kind.check()
                .with_context(|| format!("task kind {name:?}"))?;
        }
        Ok(config)
    }

    /// The shipped default configuration (`config/taskledger.toml`, built
    /// into the binary): what `serve` runs when no file is named.
    ///
    /// # Panics
    /// Never: a test holds the shipped file to [`FileConfig::parse`].
    pub fn builtin() -> Self {
        Self::parse(BUILTIN).expect("the shipped config/taskledger.toml is valid")
    }

    /// The kind named `name`.
    ///
    /// # Errors
    /// [`KindError::UnknownKind`], listing the configured kinds.
    pub fn kind(&self, name: &str) -> Result<&TaskKind, KindError> {
        self.kinds.get(name).ok_or_else(|| KindError::UnknownKind {
            kind: name.to_owned(),
            known: self.kinds.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }
}

impl TaskKind {
    /// Checks the kind is consistent: an image and a command, every
    /// placeholder a declared parameter, limits in range.
    ///
    /// # Errors
    /// The first problem found.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.image.trim().is_empty(), "image is empty");
        anyhow::ensure!(!self.command.is_empty(), "command is empty");
        anyhow::ensure!(
            self.timeout_seconds > 0,
            "timeout_seconds must be at least 1"
        );
        anyhow::ensure!(
            (1..=100).contains(&self.max_attempts),
            "max_attempts must be 1 to 100"
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SAMPLE: &str = r#"
        [kinds.url-analysis]
        image = "thug:latest"
        command = ["thug", "-u", "{useragent}", "-r", "{referer}", ["-p", "{proxy}"], "{url}"]
        required_params = ["url"]
        optional_params = ["proxy"]
        defaults = { useragent = "winxpie60", referer = "about:blank" }
        timeout_seconds = 600
        max_attempts = 3
        network = "none"
        memory_mb = 1024

        [kinds.batch]
        image = "taskledger-test-busybox:latest"
        command = ["sh", "-c", "{script}"]
        required_params = ["script"]
    "#;

    fn params(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn the_shipped_default_configuration_loads_with_an_offline_demo() {
        let config = FileConfig::builtin();
        assert_eq!(
            config.kinds.keys().collect::<Vec<_>>(),
            ["batch", "demo", "page-analysis", "url-analysis"]
        );
        let demo = config.kind("demo").unwrap();
        assert!(demo.required_params.is_empty() && demo.required_inputs.is_empty());
        assert_eq!(demo.network, Network::None);
        assert_eq!(demo.argv(&Map::new()).last().unwrap(), "world");
        let page = config.kind("page-analysis").unwrap();
        assert_eq!(page.required_inputs, ["page.html"]);
        assert_eq!(page.network, Network::None);
        assert!(page
            .argv(&Map::new())
            .ends_with(&["/in/page.html".to_owned()]));
    }

    #[test]
    fn inputs_are_checked_against_the_kind() {
        let config = FileConfig::builtin();
        let page = config.kind("page-analysis").unwrap();
        let digest = "a".repeat(64);
        let named = |names: &[&str]| -> BTreeMap<String, String> {
            names
                .iter()
                .map(|name| ((*name).to_owned(), digest.clone()))
                .collect()
        };
        assert!(page
            .check_inputs("page-analysis", &named(&["page.html"]))
            .is_ok());
        assert!(matches!(
            page.check_inputs("page-analysis", &named(&[])),
            Err(KindError::MissingInput { .. })
        ));
        assert!(matches!(
            page.check_inputs("page-analysis", &named(&["page.html", "x.js"])),
            Err(KindError::UnknownInput { .. })
        ));
        assert!(FileConfig::parse(
            "[kinds.k]\nimage = \"i\"\ncommand = [\"true\"]\nrequired_inputs = [\"../etc\"]\n"
        )
        .is_err());
    }

    #[test]
    fn the_example_configuration_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/taskledger.example.toml");
        let config = FileConfig::load(&path).unwrap();
        assert_eq!(
            config.kinds.keys().collect::<Vec<_>>(),
            ["batch", "url-analysis"]
        );
        let argv = config
            .kind("url-analysis")
            .unwrap()
            .argv(&params(json!({ "url": "http://a.test" })));
        assert_eq!(
            argv,
            [
                "taskledger-thug",
                "url",
                "-u",
                "winxpie60",
                "-r",
                "about:blank",
                "-T",
                "300",
                "http://a.test"
            ]
        );
    }

    #[test]
    fn parses_the_documented_shape_with_defaults() {
        let config = FileConfig::parse(SAMPLE).unwrap();
        let kind = config.kind("url-analysis").unwrap();
        assert_eq!(kind.network, Network::None);
        assert_eq!(
            (kind.timeout_seconds, kind.max_attempts, kind.memory_mb),
            (600, 3, 1024)
        );
        let batch = config.kind("batch").unwrap();
        assert_eq!(
            (batch.timeout_seconds, batch.max_attempts, batch.network),
            (600, 3, Network::None)
        );
    }

    #[test]
    fn params_become_separate_arguments_never_a_shell_string() {
        let config = FileConfig::parse(SAMPLE).unwrap();
        let kind = config.kind("url-analysis").unwrap();
        let hostile = "http://x.test/; rm -rf / #";
        let argv = kind.argv(&params(json!({ "url": hostile, "proxy": "http://p:3128" })));
        assert_eq!(
            argv,
            [
                "thug",
                "-u",
                "winxpie60",
                "-r",
                "about:blank",
                "-p",
                "http://p:3128",
                hostile
            ]
        );
        // An absent optional parameter takes its whole group (the flag too),
        // so no empty argument or dangling flag is left.
        let argv = kind.argv(&params(
            json!({ "url": "http://a.test", "useragent": "win10" }),
        ));
        assert_eq!(
            argv,
            ["thug", "-u", "win10", "-r", "about:blank", "http://a.test"]
        );
    }

    #[test]
    fn unknown_kinds_and_bad_params_name_the_problem() {
        let config = FileConfig::parse(SAMPLE).unwrap();
        let error = config.kind("nope").unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown task kind \"nope\"; configured kinds: batch, url-analysis"
        );
        let kind = config.kind("url-analysis").unwrap();
        let error = kind
            .check_params("url-analysis", &params(json!({ "referer": "x" })))
            .unwrap_err();
        assert_eq!(
            error,
            KindError::MissingParam {
                kind: "url-analysis".into(),
                param: "url".into()
            }
        );
        let error = kind
            .check_params(
                "url-analysis",
                &params(json!({ "url": "u", "colour": "red" })),
            )
            .unwrap_err();
        assert!(
            matches!(error, KindError::UnknownParam { ref param, .. } if param == "colour"),
            "{error}"
        );
        let error = kind
            .check_params("url-analysis", &params(json!({ "url": ["a"] })))
            .unwrap_err();
        assert_eq!(
            error,
            KindError::NotScalar {
                param: "url".into()
            }
        );
        assert!(kind
            .check_params(
                "url-analysis",
                &params(json!({ "url": "u", "proxy": null }))
            )
            .is_ok());
    }

    #[test]
    fn inconsistent_kinds_are_refused_at_load() {
        let undeclared = "[kinds.k]\nimage = \"i\"\ncommand = [\"run\", \"{target}\"]\n";
        let error = FileConfig::parse(undeclared).unwrap_err();
        assert!(format!("{error:#}").contains("{target}"), "{error:#}");
        let typo = "[kinds.k]\nimage = \"i\"\ncommand = [\"run\"]\ntimeout = 5\n";
        assert!(format!("{:#}", FileConfig::parse(typo).unwrap_err()).contains("unknown field"));
        let no_image = "[kinds.k]\nimage = \"\"\ncommand = [\"run\"]\n";
        assert!(
            format!("{:#}", FileConfig::parse(no_image).unwrap_err()).contains("image is empty")
        );
    }
}
