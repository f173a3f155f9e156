//! Tenant scoping, shared by every route: what a caller's key reaches.
//!
//! A tenant key reaches its own tenant's tasks and devices only; a platform
//! key reaches all of them. Another tenant's task or device is answered
//! exactly as one that does not exist (the same 404 body), so a tenant can
//! never learn that someone else's thing exists. What spans every tenant
//! (the global feeds, chain verification, projection operations, ledger
//! confirmations) needs a platform key: 403 otherwise, naming why.
//!
//! A task's tenant is read from its first event in the log (its
//! `TaskSubmitted`), not from the read model, so a check never depends on a
//! projector's lag: a task its tenant just submitted is its tenant's at once.

use axum::extract::MatchedPath;
use axum::http::request::Parts;
use taskledger_events::device::{DeviceEvent, Imei};
use taskledger_events::task::{TaskEvent, TaskId};
use taskledger_events::tenant::{Access, TenantName};
use taskledger_events::{Direction, EventStore};

use super::auth::{Authorized, Caller, Reach};
use super::problem::Problem;
use super::tasks::no_such_task;
use super::{store_unreadable, AppState};

/// Checks the caller holds a platform key; `what` names the route
/// (`GET /v1/events`).
///
/// # Errors
/// 403 for a tenant key, naming its tenant.
fn require_platform(caller: &Caller, what: &str) -> Result<(), Problem> {
    match &caller.access {
        Access::AllTenants => Ok(()),
        Access::Tenant(tenant) => Err(Problem::forbidden(format!(
            "{what} needs a platform key (all tenants); this key is tenant {tenant}'s"
        ))),
    }
}

/// A caller holding one of `R`'s scopes with a platform key: for the routes
/// that span every tenant. Like [`Authorized`], it runs before the body is
/// read, so a tenant key gets its 403 whatever it sent.
pub(crate) type PlatformAuthorized<R> = Authorized<R, Platform>;

/// Platform keys only (all tenants), for [`PlatformAuthorized`]: a tenant
/// key is refused with a 403 naming the route and its tenant.
#[derive(Debug)]
pub enum Platform {}

impl Reach for Platform {
    fn check(caller: &Caller, parts: &Parts) -> Result<(), Problem> {
        let route = parts.extensions.get::<MatchedPath>().map_or_else(
            || parts.uri.path().to_owned(),
            |path| path.as_str().to_owned(),
        );
        require_platform(caller, &format!("{} {route}", parts.method))
    }
}

/// The tenant filters of a listing: the caller's own tenant (for a tenant
/// key) and the one it asked for with `?tenant=` (if any). Every one must
/// hold, so a tenant key asking for another tenant gets an empty list, and
/// so does any name no task or device has.
pub(crate) fn listing_tenants(caller: &Caller, requested: Option<&str>) -> Vec<String> {
    caller
        .access
        .tenant()
        .map(|own| own.as_str().to_owned())
        .into_iter()
        .chain(requested.map(str::to_owned))
        .collect()
}

/// What a caller names a tenant for: a tenant key acts for its own
/// tenant only, a platform key must name one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActingFor {
    /// A submission's task ([`super::tasks::submit_task`]), named by
    /// `"tenant"` in the body.
    Submission,
    /// An upload ([`super::blobs`]), named by `?tenant=`.
    Upload,
    /// A webhook ([`super::webhooks`]), named by `"tenant"` in the body.
    Webhook,
}

impl ActingFor {
    /// What a tenant key does here, whose tenant a platform key must name,
    /// and how to name it.
    fn words(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Submission => (
                "submits only its tasks",
                "the task's tenant",
                "add \"tenant\": \"<name>\" to the body",
            ),
            Self::Upload => (
                "uploads only its files",
                "the file's tenant",
                "add ?tenant=<name> to the URL",
            ),
            Self::Webhook => (
                "creates only its webhooks",
                "the webhook's tenant",
                "add \"tenant\": \"<name>\" to the body",
            ),
        }
    }
}

/// The tenant the caller acts for: a tenant key's own (it may name it, but
/// no other), or the one a platform key must name.
///
/// # Errors
/// 403 when a tenant key names another tenant; 422 when a platform key names
/// none, or a name that is not a tenant name.
pub(crate) fn acting_tenant(
    caller: &Caller,
    requested: Option<&str>,
    acting_for: ActingFor,
) -> Result<TenantName, Problem> {
    let (does, whose, how) = acting_for.words();
    match (&caller.access, requested) {
        (Access::Tenant(own), None) => Ok(own.clone()),
        (Access::Tenant(own), Some(name)) if name == own.as_str() => Ok(own.clone()),
        (Access::Tenant(own), Some(_)) => Err(Problem::forbidden(format!(
            "this key is tenant {own}'s and {does}; leave out the tenant (or give {own:?})"
        ))),
        (Access::AllTenants, None) => Err(Problem::unprocessable(format!(
            "a platform key (all tenants) must name {whose}: {how}"
        ))),
        (Access::AllTenants, Some(name)) => {
            name.parse()
                .map_err(|error: taskledger_events::tenant::InvalidTenantName| {
                    Problem::unprocessable(format!("tenant: {error}"))
                })
        }
    }
}

/// Checks the caller may see task `task_id`, from the log: a platform key
/// may see any; a tenant key only its own tenant's.
///
/// # Errors
/// For a tenant key, the 404 of a task that does not exist — also when the
/// task is another tenant's; 5xx when the log cannot be read.
pub(crate) async fn check_task(
    state: &AppState,
    caller: &Caller,
    task_id: TaskId,
) -> Result<(), Problem> {
    let Some(own) = caller.access.tenant() else {
        return Ok(());
    };
    let first = state
        .store
        .read_stream(&task_id.stream_id(), 1, Direction::Forward, 1)
        .await
        .map_err(store_unreadable(format!("reading task {task_id}'s stream")))?;
    let tenant = match first.first().map(TaskEvent::from_recorded) {
        Some(Ok(TaskEvent::Submitted(submitted))) => Some(submitted.tenant),
        Some(Err(error)) => {
            return Err(Problem::internal().because("reading a task's submission", error))
        }
        _ => None,
    };
    match tenant {
        Some(tenant) if &tenant == own => Ok(()),
        _ => Err(no_such_task(task_id)),
    }
}

/// The tenant device `imei` is assigned to now, from its stream in the log
/// (`None`: never assigned, or no such device).
///
/// # Errors
/// 5xx when the log cannot be read.
pub(crate) async fn device_tenant(
    state: &AppState,
    imei: &Imei,
) -> Result<Option<TenantName>, Problem> {
    // The latest assignment is the one that holds: one indexed read,
    // however many messages the device has sent.
    let assigned = state
        .store
        .latest_of_type(&imei.stream_id(), "DeviceAssigned")
        .await
        .map_err(store_unreadable(format!(
            "reading device {}'s assignment",
            imei.as_str()
        )))?;
    match assigned.as_ref().map(DeviceEvent::from_recorded) {
        None => Ok(None),
        Some(Ok(DeviceEvent::Assigned(assigned))) => Ok(Some(assigned.tenant)),
        Some(Ok(_)) => Ok(None),
        Some(Err(error)) => {
            Err(Problem::internal().because("reading a device's assignment", error))
        }
    }
}

/// Checks the caller may see and send to device `imei`: a platform key any;
/// a tenant key only one assigned to its tenant.
///
/// # Errors
/// For a tenant key, `not_found` — the 404 of a device that does not exist,
/// also when it is another tenant's or nobody's.
pub(crate) async fn check_device(
    state: &AppState,
    caller: &Caller,
    imei: &Imei,
    not_found: impl FnOnce() -> Problem,
) -> Result<(), Problem> {
    let Some(own) = caller.access.tenant() else {
        return Ok(());
    };
    match device_tenant(state, imei).await? {
        Some(tenant) if &tenant == own => Ok(()),
        _ => Err(not_found()),
    }
}
