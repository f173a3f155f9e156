//! The structured configuration file (`TASKLEDGER_CONFIG`, TOML; with none,
//! the shipped default built into the binary): reading and checking it, and
//! its tables — task kinds (`[kinds.NAME]`, see [`kind`], and their retry
//! policies, [`retry`], and Slurm settings, [`slurm`]), `[limits]` (see
//! [`limits`]), `[webhooks]` (see [`webhooks`]), `[docker]` (see
//! [`DockerConfig`]) and `[rockblock]`.

pub mod kind;
pub mod limits;
pub mod retry;
pub mod settings;
pub mod slurm;
#[cfg(test)]
mod tests;
pub mod webhooks;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use secrecy::SecretString;
use serde::Deserialize;

use kind::{KindError, TaskKind};
use limits::LimitsConfig;
use webhooks::WebhooksConfig;

/// The shipped default configuration's text.
pub const BUILTIN: &str = include_str!("../../config/taskledger.toml");

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Task kinds by name.
    #[serde(default, deserialize_with = "kind::by_name")]
    pub kinds: BTreeMap<String, TaskKind>,
    /// The RockBLOCK web API, for satellite devices.
    #[serde(default)]
    pub rockblock: Option<RockblockConfig>,
    /// Per-key request and stream limits of one process.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Webhook targets and retries.
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// How runners use the Docker engine.
    #[serde(default)]
    pub docker: DockerConfig,
}

/// `[docker]`: how a runner's containers hand back their files.
///
/// ```toml
/// [docker]
/// out = "auto"   # or "bind", "archive"
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// How `/out` leaves a container.
    #[serde(default)]
    pub out: DockerOut,
}

/// How `/out` leaves a container (`[docker] out`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DockerOut {
    /// `bind` where it works safely — the engine is reached through a local
    /// unix socket and the runner runs as root (so it can read and delete
    /// whatever a container's user writes) — `archive` otherwise.
    #[default]
    Auto,
    /// `/out` is bind-mounted from a fresh directory of the runner's work
    /// directory and read there: the engine must be on the runner's host
    /// (it resolves the path in its own file system).
    Bind,
    /// `/out` is an anonymous volume, copied out through the engine API as
    /// a tar after the exit and removed with the container: works with any
    /// engine, remote ones too.
    Archive,
}

impl DockerOut {
    /// Whether `/out` is bind-mounted. `Auto` binds when the engine is the
    /// local one — `docker_host` (the `DOCKER_HOST` the Docker client reads)
    /// is unset or a `unix://` socket — and `runner_is_root`.
    pub fn binds(self, docker_host: Option<&str>, runner_is_root: bool) -> bool {
        match self {
            Self::Bind => true,
            Self::Archive => false,
            Self::Auto => {
                runner_is_root
                    && docker_host.is_none_or(|host| host.is_empty() || host.starts_with("unix://"))
            }
        }
    }
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
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RockblockConfig {
    /// The provider's MT endpoint.
    pub mt_url: Option<String>,
    /// The account's user name (the environment's `ROCKBLOCK_USERNAME`
    /// wins).
    pub username: Option<String>,
    /// The account's password (the environment's `ROCKBLOCK_PASSWORD`
    /// wins). Never printed (`Debug` redacts it).
    pub password: Option<SecretString>,
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

fn default_true() -> bool {
    true
}
fn default_mt_attempts() -> u32 {
    5
}
fn default_retry_backoff() -> u64 {
    30
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
        config.limits.check().context("[limits]")?;
        config.webhooks.check().context("[webhooks]")?;
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
