//! `/v1/plans`: submit a task graph in one request (its edges named by
//! client-side names), list a tenant's plans, read one with its tasks and
//! counts by status, and cancel what of it has not finished.
//!
//! The submission goes through [`crate::plans`] (all its tasks and the
//! plan's event in one transaction of the log); reads come from the `plans`
//! read model (`min_position` waits for it); a cancellation reads the plan
//! from the log and cancels each unfinished task on its stream. Another
//! tenant's plan is answered exactly as one that does not exist.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use taskledger_events::command::{load, CommandError};
use taskledger_events::plan::{PlanId, Plans, MAX_PLAN_TASKS};
use taskledger_events::task::{CancelTask, OnParentFailure, TaskCommand, TaskStatus, Tasks};
use taskledger_events::RefusalKind;
use utoipa::{IntoParams, ToSchema};

use super::auth::{Authorized, Caller, ReadTasks, WriteTasks};
use super::consistency::wait_for_position;
use super::paging::{cut_page, page_size};
use super::problem::{path_extractor, uuid_segment, ApiJson, ApiQuery, OptionalJson, Problem};
use super::responses::{Authenticated, JsonBody, Malformed, OtherTenant, PositionWait};
use super::tasks::{
    check_inputs_uploaded, created_or_retried, now, submit_problem, IdempotencyKey,
};
use super::{connection, database_error, tenancy, AppState};
use crate::plans::{self, PlanEntry, PlanError, PlanRequest};
use crate::submission::{Submission, Submitter};

/// Plans per page when `limit` is not given, and at most.
const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

/// A plan: its tasks, each with a name the others' `depends_on` may use.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitPlanRequest {
    /// The tenant of the plan and of all its tasks; the same rules as a
    /// task's `tenant` (`POST /v1/tasks`).
    #[schema(example = "acme")]
    pub tenant: Option<String>,
    /// 1 to 100 tasks, each name once.
    #[schema(min_items = 1, max_items = 100)]
    pub tasks: Vec<PlanTaskRequest>,
}

/// One task of a plan: a name, `depends_on` by names, and the fields of a
/// submission (`POST /v1/tasks`) but `tenant`, `client_task_id` and
/// `depends_on` by id.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanTaskRequest {
    /// Its name in the plan: 1 to 100 bytes, no control characters.
    #[schema(example = "fetch")]
    pub name: String,
    /// Names of other tasks of the plan it depends on (or ids of existing
    /// tasks of the same tenant); at most 100, each once.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub depends_on: Vec<String>,
    /// A task kind from the service's configuration.
    #[schema(example = "url-analysis")]
    pub kind: String,
    /// The kind's parameters: strings, numbers or booleans.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    /// The submitting frontend; the tenant's name when left out.
    pub frontend_id: Option<String>,
    /// -1000 to 1000, higher first; 0 when left out.
    #[schema(minimum = -1000, maximum = 1000)]
    pub priority: Option<i32>,
    /// As for `POST /v1/tasks`.
    #[schema(minimum = 1, maximum = 604_800)]
    pub timeout_seconds: Option<u64>,
    /// As for `POST /v1/tasks`.
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// Input files by name, as for `POST /v1/tasks`.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// `cancel` (the default) or `run`, as for `POST /v1/tasks`.
    #[schema(value_type = Option<String>, example = "cancel")]
    pub on_parent_failure: Option<OnParentFailure>,
}

/// A task of a plan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanTaskView {
    /// Its name in the plan.
    pub name: String,
    /// The task (`/v1/tasks/{task_id}`).
    pub task_id: uuid::Uuid,
    /// Its status: `waiting`, `queued`, `running`, `succeeded`, `failed`,
    /// `timed_out` or `canceled`.
    pub status: String,
}

/// A plan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanView {
    /// Its id.
    pub id: uuid::Uuid,
    /// Its tenant.
    pub tenant: String,
    /// Its tasks, parents before children.
    pub tasks: Vec<PlanTaskView>,
    /// How many of its tasks are in each status (statuses with none left
    /// out).
    #[schema(value_type = Object, example = json!({"succeeded": 1, "waiting": 3}))]
    pub counts: BTreeMap<String, u64>,
    /// When it was accepted.
    pub submitted_at: DateTime<Utc>,
    /// The global position of its latest write (give it as `min_position`
    /// to a read).
    pub position: u64,
}

impl PlanView {
    fn new(
        id: uuid::Uuid,
        tenant: String,
        tasks: Vec<PlanTaskView>,
        submitted_at: DateTime<Utc>,
        position: u64,
    ) -> Self {
        let counts = plans::counts(tasks.iter().map(|task| task.status.as_str()));
        Self {
            id,
            tenant,
            tasks,
            counts,
            submitted_at,
            position,
        }
    }
}

/// A page of plans, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanPage {
    /// The plans.
    pub items: Vec<PlanView>,
    /// Give as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// What a plan's cancellation did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CanceledPlanView {
    /// The plan.
    pub id: uuid::Uuid,
    /// The tasks it canceled (each now `canceled`).
    pub canceled: Vec<PlanTaskView>,
    /// The tasks that had already finished, left as they were.
    pub finished: Vec<PlanTaskView>,
    /// The global position of the last cancellation (0: none).
    pub position: u64,
}

/// A plan's cancellation (the body may be empty).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelPlanRequest {
    /// Why, for each task's history.
    pub reason: Option<String>,
}

/// Listing plans.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListPlansQuery {
    /// Plans per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this tenant's (a tenant key sees only its own anyway).
    pub tenant: Option<String>,
    /// Wait until the list shows the log up to this global position.
    pub min_position: Option<u64>,
}

/// Reading a plan.
#[derive(Debug, Clone, Copy, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetPlanQuery {
    /// Wait until the plan shows the log up to this global position (the
    /// `position` of a write).
    pub min_position: Option<u64>,
}

/// A plan's id in the path (`{id}`): 400 unless it is a UUID.
#[derive(Debug, Clone, Copy, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PlanPath {
    /// The plan's id
    #[param(value_type = Uuid)]
    pub id: PlanId,
}

path_extractor!(PlanPath, "id", |id| Ok(Self {
    id: PlanId(uuid_segment(id, "a plan id")?),
}));

fn no_such_plan(id: PlanId) -> Problem {
    Problem::not_found(format!("plan {} does not exist", id.0))
}

/// Submits a plan: every task at once, or none.
///
/// Each task gets `depends_on` set to its parents' ids, so it waits until
/// they succeeded (see `POST /v1/tasks`). Retrying is safe with the same
/// `Idempotency-Key`: the retry answers 200 with the plan the first try
/// made, or 422 when the request differs.
#[utoipa::path(
    post, path = "/v1/plans", tag = "plans",
    request_body = SubmitPlanRequest,
    params(IdempotencyKey),
    responses(
        (status = 201, description = "The plan and its tasks were created", body = PlanView,
            headers(("Location" = String, description = "The plan: `/v1/plans/{id}`"))),
        (status = 200, description = "An earlier try of this plan created it", body = PlanView,
            headers(("Location" = String, description = "The plan: `/v1/plans/{id}`"))),
        Authenticated, JsonBody,
        OtherTenant,
        (status = 422, description = "An empty plan, more than 100 tasks, a repeated or bad name, a cycle (named in order), a `depends_on` naming no task of the plan (named) or of the tenant, a task refused as `POST /v1/tasks` would refuse it, or a reused Idempotency-Key; nothing was stored", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["tasks:write"]))
)]
pub async fn submit_plan(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<WriteTasks>,
    idempotency: IdempotencyKey,
    ApiJson(request): ApiJson<SubmitPlanRequest>,
) -> Result<Response, Problem> {
    let tenant = tenancy::acting_tenant(
        &caller,
        request.tenant.as_deref(),
        tenancy::ActingFor::Submission,
    )?;
    if request.tasks.len() > MAX_PLAN_TASKS {
        return Err(Problem::unprocessable(format!(
            "a plan holds at most {MAX_PLAN_TASKS} tasks; this one has {}",
            request.tasks.len()
        )));
    }
    let mut hash = Sha256::new();
    hash.update(tenant.as_str().as_bytes());
    hash.update([0]);
    hash.update(serde_json::to_vec(&request.tasks).map_err(|_| Problem::internal())?);
    let request_sha256 = hex::encode(hash.finalize());
    let mut entries = Vec::with_capacity(request.tasks.len());
    for task in request.tasks {
        check_inputs_uploaded(&state, &tenant, &task.inputs)
            .await
            .map_err(|mut problem| {
                problem.detail = format!("task {:?}: {}", task.name, problem.detail);
                problem
            })?;
        entries.push(PlanEntry {
            name: task.name,
            depends_on: task.depends_on,
            submission: Submission {
                kind: task.kind,
                params: task.params,
                tenant: tenant.clone(),
                frontend_id: task
                    .frontend_id
                    .unwrap_or_else(|| tenant.as_str().to_owned()),
                client_task_id: None,
                priority: task.priority,
                timeout_seconds: task.timeout_seconds,
                max_attempts: task.max_attempts,
                inputs: task.inputs,
                depends_on: Vec::new(),
                on_parent_failure: task.on_parent_failure.unwrap_or_default(),
            },
        });
    }
    let submitted = plans::submit_plan(
        &state.store,
        &state.config,
        PlanRequest {
            tenant,
            entries,
            request_sha256,
        },
        Submitter {
            key_id: caller.key_id,
            idempotency_key: idempotency.key.as_deref(),
        },
        now(),
    )
    .await
    .map_err(plan_problem)?;
    let statuses: HashMap<_, _> = submitted
        .tasks
        .iter()
        .map(|task| (task.id, task.status))
        .collect();
    let tasks = submitted
        .plan
        .tasks
        .iter()
        .map(|member| PlanTaskView {
            name: member.name.clone(),
            task_id: member.task_id.0,
            status: statuses
                .get(&member.task_id)
                .map_or(TaskStatus::Waiting, |status| *status)
                .as_str()
                .to_owned(),
        })
        .collect();
    let view = PlanView::new(
        submitted.plan.plan_id.0,
        submitted.plan.tenant.as_str().to_owned(),
        tasks,
        submitted.plan.submitted_at,
        submitted.position,
    );
    created_or_retried(submitted.created, format!("/v1/plans/{}", view.id), view)
}

/// Lists plans, newest first: a tenant key's own tenant's only, every
/// tenant's for a platform key (`tenant` filters).
#[utoipa::path(
    get, path = "/v1/plans", tag = "plans",
    params(ListPlansQuery),
    responses(
        (status = 200, description = "A page of plans", body = PlanPage),
        Authenticated,
        (status = 400, description = "A malformed limit or cursor", body = Problem, content_type = "application/problem+json"),
        PositionWait,
    ),
    security(("api_key" = ["tasks:read"]))
)]
pub async fn list_plans(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<ReadTasks>,
    ApiQuery(query): ApiQuery<ListPlansQuery>,
) -> Result<ApiJson<PlanPage>, Problem> {
    let limit = page_size(query.limit, DEFAULT_PAGE, MAX_PAGE)?;
    let before = query
        .cursor
        .as_deref()
        .map(|cursor| {
            cursor.parse::<u64>().map_err(|_| {
                Problem::bad_request("cursor must be the next_cursor of an earlier page")
            })
        })
        .transpose()?;
    let tenants = tenancy::listing_tenants(&caller, query.tenant.as_deref());
    wait_for_position(&state, "plans", query.min_position).await?;
    let client = connection(&state).await?;
    let stored = taskledger_projections::plans::query::plans(
        &client,
        &tenants,
        before,
        i64::from(limit) + 1,
    )
    .await
    .map_err(database_error("listing plans"))?;
    let (stored, next_cursor) = cut_page(stored, limit as usize, |plan| plan.position.to_string());
    let mut items = Vec::with_capacity(stored.len());
    for plan in stored {
        items.push(plan_view(&client, plan).await?);
    }
    Ok(ApiJson(PlanPage { items, next_cursor }))
}

async fn plan_view(
    client: &deadpool_postgres::Client,
    plan: taskledger_projections::plans::query::StoredPlan,
) -> Result<PlanView, Problem> {
    let tasks = taskledger_projections::plans::query::plan_tasks(client, plan.plan_id)
        .await
        .map_err(database_error("reading a plan's tasks"))?
        .into_iter()
        .map(|task| PlanTaskView {
            name: task.name,
            task_id: task.task_id,
            status: task.status,
        })
        .collect();
    Ok(PlanView::new(
        plan.plan_id,
        plan.tenant,
        tasks,
        plan.submitted_at,
        plan.position,
    ))
}

/// Reads a plan: its tasks (name, id, status) and how many are in each
/// status.
#[utoipa::path(
    get, path = "/v1/plans/{id}", tag = "plans",
    params(PlanPath, GetPlanQuery),
    responses(
        (status = 200, description = "The plan", body = PlanView),
        Authenticated, Malformed, PositionWait,
        (status = 404, description = "No such plan", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["tasks:read"]))
)]
pub async fn get_plan(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<ReadTasks>,
    PlanPath { id }: PlanPath,
    ApiQuery(query): ApiQuery<GetPlanQuery>,
) -> Result<ApiJson<PlanView>, Problem> {
    wait_for_position(&state, "plans", query.min_position).await?;
    let client = connection(&state).await?;
    let plan = taskledger_projections::plans::query::plan(&client, id.0)
        .await
        .map_err(database_error("reading a plan"))?
        .filter(|plan| visible(&caller, &plan.tenant))
        .ok_or_else(|| no_such_plan(id))?;
    plan_view(&client, plan).await.map(ApiJson)
}

/// Whether `caller` may see what belongs to `tenant`.
fn visible(caller: &Caller, tenant: &str) -> bool {
    caller
        .access
        .tenant()
        .is_none_or(|own| own.as_str() == tenant)
}

/// Cancels every task of a plan that has not finished (children before
/// their parents, so each is canceled with this request's reason); those
/// that finished are left as they were.
#[utoipa::path(
    post, path = "/v1/plans/{id}/cancel", tag = "plans",
    params(PlanPath),
    request_body(content = Option<CancelPlanRequest>, description = "Optional; may be empty"),
    responses(
        (status = 200, description = "What was canceled and what had finished", body = CanceledPlanView),
        Authenticated, JsonBody,
        (status = 404, description = "No such plan", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A task kept changing; retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["tasks:write"]))
)]
pub async fn cancel_plan(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<WriteTasks>,
    PlanPath { id }: PlanPath,
    OptionalJson(request): OptionalJson<CancelPlanRequest>,
) -> Result<ApiJson<CanceledPlanView>, Problem> {
    let plan = load::<Plans>(&state.store, &id.stream_id())
        .await
        .map_err(Problem::from)?
        .state
        .filter(|plan| visible(&caller, plan.tenant.as_str()))
        .ok_or_else(|| no_such_plan(id))?;
    let reason = match request.reason {
        Some(reason) => format!("plan {} canceled: {reason}", id.0),
        None => format!("plan {} canceled", id.0),
    };
    let (mut canceled, mut finished, mut position) = (Vec::new(), Vec::new(), 0);
    for member in plan.tasks.iter().rev() {
        let view = |status: TaskStatus| PlanTaskView {
            name: member.name.clone(),
            task_id: member.task_id.0,
            status: status.as_str().to_owned(),
        };
        let stream_id = member.task_id.stream_id();
        let command = TaskCommand::Cancel(CancelTask {
            task_id: member.task_id,
            reason: Some(reason.clone()),
            canceled_at: now(),
        });
        match crate::commands::execute::<Tasks>(
            &state.store,
            &stream_id,
            command,
            uuid::Uuid::new_v4(),
            caller.metadata(),
        )
        .await
        {
            Ok(executed) => {
                position = position.max(executed.position);
                let status = executed
                    .state
                    .as_ref()
                    .map_or(TaskStatus::Canceled, |task| task.status);
                canceled.push(view(status));
            }
            // It had finished (or a parent's cancellation reached it first).
            Err(CommandError::Rejected(refusal))
                if refusal.kind() == RefusalKind::InvalidTransition =>
            {
                let task = load::<Tasks>(&state.store, &stream_id)
                    .await
                    .map_err(Problem::from)?;
                let status = task.state.map_or(TaskStatus::Canceled, |task| task.status);
                finished.push(view(status));
            }
            Err(error) => return Err(error.into()),
        }
    }
    canceled.reverse();
    finished.reverse();
    Ok(ApiJson(CanceledPlanView {
        id: id.0,
        canceled,
        finished,
        position,
    }))
}

fn plan_problem(error: PlanError) -> Problem {
    match error {
        PlanError::Task { name, error } => {
            let mut problem = submit_problem(error);
            problem.detail = format!("task {name:?}: {}", problem.detail);
            problem
        }
        error @ PlanError::IdempotencyKeyReused { .. } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency-Key reused",
            error.to_string(),
        ),
        error @ PlanError::Cycle(_) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "plan-cycle",
            "The plan has a cycle",
            error.to_string(),
        ),
        error @ PlanError::UnknownNames(_) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown-plan-reference",
            "Unknown reference",
            error.to_string(),
        ),
        error @ (PlanError::Invalid(_) | PlanError::UnknownParent { .. }) => {
            Problem::unprocessable(error.to_string())
        }
        PlanError::Command(error) => error.into(),
    }
}
