//! `GET /v1/kinds`: the task kinds this installation runs, for frontends
//! and the console: what each needs (parameters, input files), its limits,
//! and whether its tasks can run here right now.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::{Authorized, ReadKinds};
use super::problem::{ApiJson, Problem};
use super::responses::Authenticated;
use super::AppState;
use crate::config::kind::{Executor, Network, TaskKind};
use crate::service::dependencies::KindCheck;

/// One task kind.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KindView {
    /// Its name: a submission's `kind`.
    pub name: String,
    /// `docker` (a sandboxed container), `local` (a child process) or
    /// `slurm` (a Slurm batch job).
    pub executor: String,
    /// The container image (for `docker`).
    pub image: String,
    /// `none` or `bridge`.
    pub network: String,
    /// Parameters every submission must give.
    pub required_params: Vec<String>,
    /// Parameters a submission may give.
    pub optional_params: Vec<String>,
    /// Values of parameters a submission leaves out.
    #[schema(value_type = Object)]
    pub defaults: BTreeMap<String, Value>,
    /// Input files every submission must name (`POST /v1/blobs` first).
    pub required_inputs: Vec<String>,
    /// Input files a submission may name.
    pub optional_inputs: Vec<String>,
    /// One attempt's wall-clock limit (a submission may set a shorter one,
    /// up to `max_timeout_seconds`).
    pub timeout_seconds: u64,
    /// The longest timeout a submission may ask for.
    pub max_timeout_seconds: u64,
    /// Attempts in all (a submission may ask for fewer, never more).
    pub max_attempts: u32,
    /// The container's memory limit.
    pub memory_mb: u64,
    /// The container's CPU limit.
    pub cpus: f64,
    /// Whether its tasks can run here, as the runner in this process last
    /// checked (`null` when this process runs no tasks).
    pub availability: Option<KindCheck>,
}

/// The kinds, by name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KindPage {
    /// Every configured kind.
    pub items: Vec<KindView>,
}

impl KindView {
    fn new(name: &str, kind: &TaskKind, availability: Option<KindCheck>) -> Self {
        Self {
            name: name.to_owned(),
            executor: match kind.executor {
                Executor::Docker => "docker",
                Executor::Local => "local",
                Executor::Slurm => "slurm",
            }
            .to_owned(),
            image: kind.image.clone(),
            network: match kind.network {
                Network::None => "none",
                Network::Bridge => "bridge",
            }
            .to_owned(),
            required_params: kind.required_params.clone(),
            optional_params: kind.optional_params.clone(),
            defaults: kind
                .defaults
                .iter()
                // Scalars only (the kind's check refuses anything else).
                .map(|(name, value)| {
                    (
                        name.clone(),
                        serde_json::to_value(value).unwrap_or(Value::Null),
                    )
                })
                .collect(),
            required_inputs: kind.required_inputs.clone(),
            optional_inputs: kind.optional_inputs.clone(),
            timeout_seconds: kind.timeout_seconds,
            max_timeout_seconds: kind.timeout_limit(),
            max_attempts: kind.max_attempts,
            memory_mb: kind.memory_mb,
            cpus: kind.cpus,
            availability,
        }
    }
}

/// Lists the configured task kinds.
#[utoipa::path(
    get, path = "/v1/kinds", tag = "tasks",
    responses(
        (status = 200, description = "The kinds", body = KindPage),
        Authenticated,
    ),
    security(("api_key" = ["tasks:read", "tasks:write"]))
)]
pub async fn list_kinds(
    State(state): State<AppState>,
    _: Authorized<ReadKinds>,
) -> Result<ApiJson<KindPage>, Problem> {
    let report = state.dependencies.report().await;
    let items = state
        .config
        .kinds
        .iter()
        .map(|(name, kind)| KindView::new(name, kind, report.kinds.get(name).cloned()))
        .collect();
    Ok(ApiJson(KindPage { items }))
}
