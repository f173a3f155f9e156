//! Ledger sync: consumers confirm what their ledger recorded
//! (`POST /v1/ledgers/{ledger}/confirmations`), and anyone auditing asks what
//! is confirmed and what is pending, for every ledger, per ledger and per
//! task, and where the holes are.
//!
//! A confirmation is decided on the ledger's own stream (`ledger-{name}`)
//! and answered from it; status, holes and a task's view are read from the
//! ledger status read model (`ledger_ranges`, the `ledgers` projector), and
//! accept `min_position` to wait for a confirmation just made.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use taskledger_events::ledger::{
    AnchorCheck, ChainAnchor, ConfirmLedgerEntries, ConfirmationKind, LedgerName, LedgerState,
    Ledgers, PositionRange,
};
use taskledger_events::{Direction, EventStore};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use taskledger_projections::ledgers::query::{self as ledger_reads, TaskEventConfirmation};

use super::auth::{Authorized, ReadHistory, ReadLedger, WriteLedger};
use super::consistency::wait_for_position;
use super::problem::{path_extractor, ApiJson, Problem};
use super::responses::{
    Authenticated, JsonBody, Malformed, NoSuchTask, PlatformOnly, PositionWait,
};
use super::tasks::{no_such_task, TaskPath};
use super::tenancy::PlatformAuthorized;
use super::{execute_as, AppState};

/// A confirmation: either a range of sequences or a list of event ids, and
/// the ledger's transaction reference.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmationRequest {
    /// The first sequence of the range (with `to_sequence`); sequences
    /// start at 1.
    #[schema(minimum = 1)]
    pub from_sequence: Option<u64>,
    /// The last sequence of the range, inclusive.
    #[schema(minimum = 1)]
    pub to_sequence: Option<u64>,
    /// Or: the ids of single events.
    pub event_ids: Option<Vec<Uuid>>,
    /// The ledger's own reference for what it recorded (a transaction id).
    pub reference: String,
    /// Optional, with a range: the chain hash (64 lowercase hex digits) the
    /// ledger received for `to_sequence`. It must be the hash the log stores
    /// there, or the confirmation is refused (422) and nothing is recorded;
    /// once accepted, the ledger anchors the chain up to that sequence
    /// (`anchored_through`).
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub chain_hash: Option<String>,
}

/// An inclusive range of sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SequenceRange {
    /// The first sequence.
    pub from: u64,
    /// The last sequence.
    pub to: u64,
}

impl From<PositionRange> for SequenceRange {
    fn from(range: PositionRange) -> Self {
        Self {
            from: range.from,
            to: range.to,
        }
    }
}

/// Where a ledger stands against the log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LedgerStatus {
    /// The ledger.
    pub ledger: String,
    /// The last sequence the ledger owes: the newest event that is not a
    /// ledger confirmation (those need no confirming).
    pub head: u64,
    /// Every sequence from 1 to this is confirmed.
    pub confirmed_through: u64,
    /// The highest confirmed sequence.
    pub max_confirmed: u64,
    /// How many sequences are confirmed.
    pub confirmed: u64,
    /// How many sequences up to `head` are not.
    pub pending: u64,
    /// Everything up to the head is confirmed.
    pub in_sync: bool,
    /// Unconfirmed ranges below `max_confirmed` (see `/holes`).
    pub holes: u64,
    /// The reference of the latest confirmation.
    pub last_reference: Option<String>,
    /// The last sequence whose chain hash this ledger holds (sent as
    /// `chain_hash` and matched against the log); 0 when it sent none.
    pub anchored_through: u64,
}

/// The answer to a confirmation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConfirmationResult {
    /// The sequences this confirmation added (empty when all were already
    /// confirmed).
    pub newly_confirmed: Vec<SequenceRange>,
    /// The ledger's status after it.
    pub status: LedgerStatus,
    /// The ledger stream's version after it.
    pub stream_version: u64,
    /// The global position of the ledger's latest event: pass it as
    /// `min_position` to the status routes to read this write.
    pub position: u64,
}

/// Every ledger that confirmed anything, by name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LedgerPage {
    /// Each ledger's status.
    pub items: Vec<LedgerStatus>,
    /// Always `null`.
    pub next_cursor: Option<String>,
}

/// The holes in a ledger's confirmed range.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HolePage {
    /// Unconfirmed ranges between 1 and the highest confirmed sequence.
    pub items: Vec<SequenceRange>,
    /// Always `null`.
    pub next_cursor: Option<String>,
}

/// One ledger's view of a task.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskLedgerView {
    /// The ledger.
    pub ledger: String,
    /// How many of the task's events it confirmed.
    pub confirmed: u64,
    /// The task's events it has not confirmed, by sequence.
    pub pending: Vec<u64>,
    /// Every event of the task is confirmed.
    pub in_sync: bool,
    /// The ledger's references for the task's confirmed events.
    pub references: Vec<String>,
}

/// Every ledger's view of a task.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskLedgers {
    /// The task.
    pub task_id: Uuid,
    /// The sequences of its events.
    pub sequences: Vec<u64>,
    /// One entry per ledger that has confirmed anything.
    pub items: Vec<TaskLedgerView>,
    /// Always `null`.
    pub next_cursor: Option<String>,
}

/// A ledger's name in the path (`{ledger}`): 400 unless it is one.
#[derive(Debug, Clone, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct LedgerPath {
    /// The ledger's name: 1 to 100 of a-z, 0-9, '.', '_', '-'
    #[param(value_type = String, pattern = "^[a-z0-9._-]{1,100}$")]
    pub ledger: LedgerName,
}

path_extractor!(LedgerPath, "ledger", |name| Ok(Self {
    ledger: LedgerName::new(name).map_err(Problem::bad_request)?,
}));

fn unavailable<E: Into<anyhow::Error>>(error: E) -> Problem {
    super::log_unreadable("a ledger read")(error)
}

/// The ledger's confirmed ranges, anchor and latest reference, from the
/// `ledger_ranges` and `ledger_anchors` read model.
async fn ranges_of(state: &AppState, ledger: &LedgerName) -> Result<Shown, Problem> {
    let client = state.store.pool().get().await.map_err(unavailable)?;
    let (ranges, last_reference) = ledger_reads::confirmed_ranges(&client, ledger)
        .await
        .map_err(unavailable)?;
    let anchored_through = ledger_reads::anchored_through(&client, ledger)
        .await
        .map_err(unavailable)?;
    Ok(Shown {
        ledger_state: LedgerState::from_ranges(ranges),
        last_reference,
        anchored_through,
    })
}

/// What the status routes show of a ledger's read model.
struct Shown {
    ledger_state: LedgerState,
    last_reference: Option<String>,
    anchored_through: u64,
}

fn status(
    ledger: &LedgerName,
    ledger_state: &LedgerState,
    head: u64,
    last_reference: Option<String>,
    anchored_through: u64,
) -> LedgerStatus {
    LedgerStatus {
        ledger: ledger.as_str().to_owned(),
        head,
        confirmed_through: ledger_state.confirmed_through(),
        max_confirmed: ledger_state.max_confirmed(),
        confirmed: ledger_state.count(),
        pending: head.saturating_sub(ledger_state.count_through(head)),
        in_sync: ledger_state.confirmed_through() >= head,
        holes: ledger_state.holes().len() as u64,
        last_reference,
        anchored_through,
    }
}

/// The last sequence a ledger owes a confirmation for: the newest event
/// that is not itself a ledger confirmation (confirming those would chase
/// its own tail: each confirmation is a new event).
async fn owed_head(state: &AppState) -> Result<u64, Problem> {
    let client = state.store.pool().get().await.map_err(unavailable)?;
    let row = client
        .query_opt(
            "SELECT global_position FROM events WHERE stream_id NOT LIKE 'ledger-%'
             ORDER BY global_position DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(unavailable)?;
    Ok(row.map_or(0, |row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)))
}

/// Read-your-writes for the status routes.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LedgerReadQuery {
    /// Wait until the ledger status read model reflects every event up to
    /// this global position (the `position` of a confirmation).
    pub min_position: Option<u64>,
}

/// Confirms that the ledger recorded a range of sequences (which must
/// continue its confirmed prefix) or single events by id.
#[utoipa::path(
    post, path = "/v1/ledgers/{ledger}/confirmations", tag = "ledger",
    params(LedgerPath),
    request_body = ConfirmationRequest,
    responses(
        (status = 201, description = "Recorded (new sequences, or an anchor past the ledger's last one)", body = ConfirmationResult),
        (status = 200, description = "Everything named was already confirmed (and anchored); nothing changed", body = ConfirmationResult),
        PlatformOnly, JsonBody,
        (status = 400, description = "A malformed ledger name, or a body that is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Other confirmations kept arriving; retry", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A body of the wrong shape, sequences or events that do not exist, a range that skips a hole, a bad reference, or a `chain_hash` that is not the hash stored at `to_sequence` (nothing is recorded)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["ledger:write"]))
)]
pub async fn confirm(
    State(state): State<AppState>,
    PlatformAuthorized { caller, .. }: PlatformAuthorized<WriteLedger>,
    LedgerPath { ledger }: LedgerPath,
    ApiJson(request): ApiJson<ConfirmationRequest>,
) -> Result<Response, Problem> {
    let (kind, ranges) = match (
        request.from_sequence,
        request.to_sequence,
        &request.event_ids,
    ) {
        (Some(from), Some(to), None) => (ConfirmationKind::Range, vec![PositionRange { from, to }]),
        (None, None, Some(ids)) if !ids.is_empty() => {
            (ConfirmationKind::Events, positions_of(&state, ids).await?)
        }
        _ => {
            return Err(Problem::unprocessable(
                "give either from_sequence and to_sequence, or a non-empty event_ids",
            ))
        }
    };
    let head = state.store.head_position().await.map_err(unavailable)?;
    let anchor = match (request.chain_hash, &ranges[..]) {
        (None, _) => None,
        (Some(chain_hash), ranges) => {
            // The hash at the range's end; for anything else the aggregate
            // refuses the anchor, whatever is looked up.
            let position = ranges.last().map_or(0, |range| range.to);
            let stored_hash = stored_hash(&state, position, head).await?;
            if stored_hash
                .as_deref()
                .is_some_and(|stored| stored != chain_hash)
            {
                // Refused below, and nothing is recorded; an operator should
                // still hear of it: either the ledger or this log is wrong.
                tracing::warn!(
                    ledger = ledger.as_str(),
                    position,
                    "a ledger's chain hash disagrees with the stored one; refusing its confirmation"
                );
            }
            Some(AnchorCheck {
                claimed: ChainAnchor {
                    position,
                    chain_hash,
                },
                stored_hash,
            })
        }
    };
    let command = ConfirmLedgerEntries {
        ledger: ledger.clone(),
        kind,
        ranges,
        reference: request.reference,
        head,
        confirmed_at: Utc::now().trunc_subsecs(6),
        confirmed_by: Some(caller.key_id.to_string()),
        anchor,
    };
    let executed = execute_as::<Ledgers>(&state, &caller, &ledger.stream_id(), command).await?;
    let newly_confirmed: Vec<SequenceRange> = executed
        .events
        .iter()
        .flat_map(|event| {
            let taskledger_events::ledger::LedgerEvent::Confirmed(confirmed) = event;
            confirmed.ranges.iter().copied().map(SequenceRange::from)
        })
        .collect();
    let code = if executed.events.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let last_reference = executed.events.last().map(|event| {
        let taskledger_events::ledger::LedgerEvent::Confirmed(confirmed) = event;
        confirmed.reference.clone()
    });
    let owed = owed_head(&state).await?;
    let body = ConfirmationResult {
        newly_confirmed,
        status: status(
            &ledger,
            &executed.state,
            owed,
            last_reference,
            executed.state.anchored_through(),
        ),
        stream_version: executed.stream_version,
        position: executed.position,
    };
    Ok((code, ApiJson(body)).into_response())
}

/// The hash stored at `position` in hex, or `None` past the head.
async fn stored_hash(
    state: &AppState,
    position: u64,
    head: u64,
) -> Result<Option<String>, Problem> {
    if position == 0 || position > head {
        return Ok(None);
    }
    let client = state.store.pool().get().await.map_err(unavailable)?;
    let hash = taskledger_events::postgres::verify::stored_hash(&client, position)
        .await
        .map_err(unavailable)?;
    Ok(hash.map(hex::encode))
}

/// The positions of `ids`, as single-position ranges; 422 naming the ids
/// that are not in the log.
async fn positions_of(state: &AppState, ids: &[Uuid]) -> Result<Vec<PositionRange>, Problem> {
    let client = state.store.pool().get().await.map_err(unavailable)?;
    let rows = client
        .query(
            "SELECT event_id, global_position FROM events WHERE event_id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(unavailable)?;
    let found: HashMap<Uuid, i64> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !found.contains_key(id))
        .map(ToString::to_string)
        .collect();
    if !missing.is_empty() {
        return Err(Problem::unprocessable(format!(
            "these events do not exist: {}",
            missing.join(", ")
        )));
    }
    Ok(found
        .values()
        .map(|position| {
            let position = u64::try_from(*position).unwrap_or(0);
            PositionRange {
                from: position,
                to: position,
            }
        })
        .collect())
}

/// What a ledger has confirmed and what is pending (from the ledger status
/// read model).
#[utoipa::path(
    get, path = "/v1/ledgers/{ledger}/status", tag = "ledger",
    params(LedgerPath, LedgerReadQuery),
    responses(
        (status = 200, description = "The ledger's status (all zero for a ledger that confirmed nothing yet)", body = LedgerStatus),
        PlatformOnly, Malformed, PositionWait,
    ),
    security(("api_key" = ["audit:read"]), ("api_key" = ["ledger:write"]))
)]
pub async fn ledger_status(
    State(state): State<AppState>,
    _: PlatformAuthorized<ReadLedger>,
    LedgerPath { ledger }: LedgerPath,
    super::problem::ApiQuery(query): super::problem::ApiQuery<LedgerReadQuery>,
) -> Result<ApiJson<LedgerStatus>, Problem> {
    wait_for_position(&state, "ledgers", query.min_position).await?;
    let shown = ranges_of(&state, &ledger).await?;
    let head = owed_head(&state).await?;
    Ok(ApiJson(status(
        &ledger,
        &shown.ledger_state,
        head,
        shown.last_reference,
        shown.anchored_through,
    )))
}

/// Every ledger that confirmed anything, with its status (as
/// `/v1/ledgers/{ledger}/status` answers it), by name.
#[utoipa::path(
    get, path = "/v1/ledgers", tag = "ledger",
    params(LedgerReadQuery),
    responses(
        (status = 200, description = "The ledgers (none before the first confirmation)", body = LedgerPage),
        PlatformOnly, Malformed, PositionWait,
    ),
    security(("api_key" = ["audit:read"]), ("api_key" = ["ledger:write"]))
)]
pub async fn list_ledgers(
    State(state): State<AppState>,
    _: PlatformAuthorized<ReadLedger>,
    super::problem::ApiQuery(query): super::problem::ApiQuery<LedgerReadQuery>,
) -> Result<ApiJson<LedgerPage>, Problem> {
    wait_for_position(&state, "ledgers", query.min_position).await?;
    let names = {
        let client = state.store.pool().get().await.map_err(unavailable)?;
        ledger_reads::ledger_names(&client)
            .await
            .map_err(unavailable)?
    };
    let head = owed_head(&state).await?;
    let mut items = Vec::with_capacity(names.len());
    // Every stored name was checked when it was confirmed.
    for ledger in names.iter().filter_map(|name| LedgerName::new(name).ok()) {
        let shown = ranges_of(&state, &ledger).await?;
        items.push(status(
            &ledger,
            &shown.ledger_state,
            head,
            shown.last_reference,
            shown.anchored_through,
        ));
    }
    Ok(ApiJson(LedgerPage {
        items,
        next_cursor: None,
    }))
}

/// Reconciliation: the unconfirmed ranges below the ledger's highest
/// confirmed sequence.
#[utoipa::path(
    get, path = "/v1/ledgers/{ledger}/holes", tag = "ledger",
    params(LedgerPath, LedgerReadQuery),
    responses(
        (status = 200, description = "The holes, in order", body = HolePage),
        PlatformOnly, Malformed, PositionWait,
    ),
    security(("api_key" = ["audit:read"]), ("api_key" = ["ledger:write"]))
)]
pub async fn ledger_holes(
    State(state): State<AppState>,
    _: PlatformAuthorized<ReadLedger>,
    LedgerPath { ledger }: LedgerPath,
    super::problem::ApiQuery(query): super::problem::ApiQuery<LedgerReadQuery>,
) -> Result<ApiJson<HolePage>, Problem> {
    wait_for_position(&state, "ledgers", query.min_position).await?;
    let shown = ranges_of(&state, &ledger).await?;
    Ok(ApiJson(HolePage {
        items: shown
            .ledger_state
            .holes()
            .into_iter()
            .map(SequenceRange::from)
            .collect(),
        next_cursor: None,
    }))
}

/// Which of a task's events each ledger has confirmed.
#[utoipa::path(
    get, path = "/v1/tasks/{id}/ledger", tag = "ledger",
    params(TaskPath),
    responses(
        (status = 200, description = "Per ledger: confirmed and pending events of the task", body = TaskLedgers),
        Authenticated, Malformed, NoSuchTask,
    ),
    security(("api_key" = ["tasks:read"]), ("api_key" = ["audit:read"]))
)]
pub async fn task_ledger(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<ReadHistory>,
    TaskPath { id: task_id }: TaskPath,
) -> Result<ApiJson<TaskLedgers>, Problem> {
    super::tenancy::check_task(&state, &caller, task_id).await?;
    let events = state
        .store
        .read_stream(&task_id.stream_id(), 1, Direction::Forward, 100_000)
        .await
        .map_err(unavailable)?;
    if events.is_empty() {
        return Err(no_such_task(task_id));
    }
    let sequences: Vec<u64> = events.iter().map(|event| event.global_position).collect();
    let client = state.store.pool().get().await.map_err(unavailable)?;
    let confirmations = ledger_reads::stream_confirmations(&client, task_id.stream_id().as_str())
        .await
        .map_err(unavailable)?;
    let mut items: Vec<TaskLedgerView> = Vec::new();
    for confirmation in confirmations {
        let TaskEventConfirmation {
            ledger,
            sequence,
            reference,
        } = confirmation;
        if items.last().is_none_or(|item| item.ledger != ledger) {
            items.push(TaskLedgerView {
                ledger,
                confirmed: 0,
                pending: Vec::new(),
                in_sync: true,
                references: Vec::new(),
            });
        }
        let item = items.last_mut().expect("pushed above");
        match reference {
            Some(reference) => {
                item.confirmed += 1;
                if !item.references.contains(&reference) {
                    item.references.push(reference);
                }
            }
            None => {
                item.pending.push(sequence);
                item.in_sync = false;
            }
        }
    }
    Ok(ApiJson(TaskLedgers {
        task_id: task_id.0,
        sequences,
        items,
        next_cursor: None,
    }))
}
