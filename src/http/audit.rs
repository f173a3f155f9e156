//! Auditors' reads of the log itself (scope `audit:read`): any stream's
//! events as stored (`GET /v1/streams/{stream}/events`) and the chain's
//! verification over a bounded range (`GET /v1/audit/verify`). A task as it
//! was is `GET /v1/tasks/{id}?as_of=…` ([`super::tasks::get_task`]).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use taskledger_events::apikey::ApiKeyId;
use taskledger_events::command::CommandError;
use taskledger_events::device::Imei;
use taskledger_events::ledger::LedgerName;
use taskledger_events::task::TaskId;
use taskledger_events::{Direction, EventStore, StreamId};
use taskledger_replay::resume::{self, Anchor};
use utoipa::{IntoParams, ToSchema};

use super::auth::ReadLog;
use super::problem::{ApiJson, ApiPath, ApiQuery, Problem};
use super::responses::{Malformed, PlatformOnly};
use super::tasks::{stream_page, EventPage};
use super::tenancy::PlatformAuthorized;
use super::{log_unreadable, store_unreadable, AppState};

/// The widest range `GET /v1/audit/verify` checks in one request; wider
/// ranges are for `taskledger replay verify`, which reports progress and
/// holds no HTTP request open.
pub const MAX_VERIFY_RANGE: u64 = 100_000;

/// Paging of a stream's events.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamEventsQuery {
    /// Events after this stream version (0, the default, reads from the
    /// first); pass the previous page's `next_cursor`.
    pub after_version: Option<u64>,
    /// Events per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// A stream's events, oldest first, as stored (envelope, data, metadata,
/// hash), read from the log.
#[utoipa::path(
    get, path = "/v1/streams/{stream}/events", tag = "audit",
    // Not the function's name: the live feed's handler is `stream_events`
    // too, and operation ids must be unique.
    operation_id = "list_stream_events",
    params(
        ("stream" = String, Path, description = "The stream: `task-{uuid}`, `apikey-{uuid}`, `device-{imei}`, `ledger-{name}` or `verification-chain` (the recorded verifications)",
         pattern = "^((task|apikey)-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|device-[0-9]{15}|ledger-[a-z0-9._-]{1,100}|verification-chain)$"),
        StreamEventsQuery
    ),
    responses(
        (status = 200, description = "A page of the stream's events; `next_cursor` is the last version (pass it as `after_version`) when more follow", body = EventPage),
        PlatformOnly,
        (status = 400, description = "A malformed stream name or query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The stream holds no event", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["audit:read"]))
)]
pub async fn stream_events(
    State(state): State<AppState>,
    _: PlatformAuthorized<ReadLog>,
    ApiPath(stream): ApiPath<String>,
    ApiQuery(query): ApiQuery<StreamEventsQuery>,
) -> Result<ApiJson<EventPage>, Problem> {
    let stream_id = parse_stream(&stream)?;
    let after = query.after_version.unwrap_or(0);
    if after == u64::MAX {
        return Err(Problem::bad_request("after_version is out of range"));
    }
    let page = stream_page(&state, &stream_id, after, query.limit).await?;
    if page.items.is_empty() {
        // Past the end of a stream is an empty page; no stream at all is 404.
        let newest = state
            .store
            .read_stream(&stream_id, u64::MAX, Direction::Backward, 1)
            .await
            .map_err(store_unreadable(format!("reading stream {stream_id}")))?;
        if newest.is_empty() {
            return Err(Problem::not_found(format!(
                "stream {stream_id} holds no event"
            )));
        }
    }
    Ok(ApiJson(page))
}

/// A stream name of one of the forms the service writes; anything else is
/// a malformed name (400), not an unknown stream.
fn parse_stream(text: &str) -> Result<StreamId, Problem> {
    let well_formed = TaskId::from_stream_id(text).is_some()
        || ApiKeyId::from_stream_id(text).is_some()
        || Imei::from_stream_id(text).is_some()
        || text
            .strip_prefix("ledger-")
            .is_some_and(|name| LedgerName::new(name).is_ok())
        || text == taskledger_events::verification::VERIFICATION_STREAM;
    let malformed = || {
        Problem::bad_request(format!(
            "{:?} is not a stream name; streams are task-{{uuid}}, apikey-{{uuid}}, \
             device-{{imei}} (15 digits), ledger-{{name}} (a-z, 0-9, '.', '_', '-') and verification-chain",
            text
        ))
    };
    if !well_formed {
        return Err(malformed());
    }
    StreamId::new(text).map_err(|_| malformed())
}

/// The range to verify, or where a resumed verification starts.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// The first sequence (global position) to check, 1 or more; default:
    /// 100,000 below `to` (or 1). Not with `from_last_verified` or
    /// `from_anchor`, which say where the check starts.
    #[param(minimum = 1)]
    pub from: Option<u64>,
    /// The last sequence to check, 1 or more; default: the log's head.
    #[param(minimum = 1)]
    pub to: Option<u64>,
    /// `true`: resume from the newest recorded verification (a
    /// `ChainVerified` event of stream `verification-chain`, recorded by
    /// `taskledger replay verify --record`): its hash must still be the
    /// stored one, and only what follows it is checked. Nothing is recorded
    /// by this request.
    pub from_last_verified: Option<bool>,
    /// A ledger's name: resume from the newest position whose chain hash
    /// that ledger confirmed (`anchored_through` in `GET /v1/ledgers`).
    pub from_anchor: Option<String>,
}

/// Where a resumed verification started, and what it did not re-check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ResumedFrom {
    /// The anchor's sequence, the first one checked (its event is
    /// recomputed from the hash stored before it).
    pub position: u64,
    /// The chain hash the anchor holds for that sequence (64 hex digits),
    /// found equal to the stored one (else the verdict names `position`).
    pub chain_hash: String,
    /// Who holds the anchor, in words: `the verification recorded at … by
    /// …` or `ledger {name}`.
    pub anchored_by: String,
    /// Sequences `1..=not_rechecked_through` were not re-checked by this
    /// verification: a change there is found only by one from sequence 1.
    pub not_rechecked_through: u64,
}

impl ResumedFrom {
    /// Resumed from `anchor`, the check starting at `from` on a log whose
    /// head is `head`: what lies before `from` (or the whole log, when the
    /// anchor is past its end) is taken on the anchor's word.
    fn at(anchor: &Anchor, from: u64, head: u64) -> Self {
        Self {
            position: from,
            chain_hash: anchor.chain_hash.clone(),
            anchored_by: anchor.anchored_by.clone(),
            not_rechecked_through: (from - 1).min(head),
        }
    }
}

/// The verdict on a range of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct VerifyView {
    /// Whether every event of the range verified.
    pub ok: bool,
    /// The first sequence checked.
    pub from: u64,
    /// The last sequence of the range.
    pub to: u64,
    /// Events that verified before the check ended.
    pub checked: u64,
    /// The first sequence that does not verify (`null` when `ok`).
    pub first_bad_sequence: Option<u64>,
    /// What is wrong there, in words (`null` when `ok`).
    pub problem: Option<String>,
    /// Present only when the request resumed from an anchor
    /// (`from_last_verified` or `from_anchor`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<ResumedFrom>,
}

/// The anchor the query asks to resume from, if it asks: the newest
/// recorded verification or a ledger's newest confirmed hash, both folded
/// from the log.
async fn resume_anchor(state: &AppState, query: &VerifyQuery) -> Result<Option<Anchor>, Problem> {
    let last_verified = query.from_last_verified.unwrap_or(false);
    if last_verified && query.from_anchor.is_some() {
        return Err(Problem::unprocessable(
            "from_last_verified and from_anchor are two places to resume from; give one",
        ));
    }
    if (last_verified || query.from_anchor.is_some()) && query.from.is_some() {
        return Err(Problem::unprocessable(
            "from is not taken with from_last_verified or from_anchor: a resumed \
             verification starts at its anchor",
        ));
    }
    let unreadable = |error: CommandError| match error {
        CommandError::Store(error) => log_unreadable("reading the anchor to resume from")(error),
        error => Problem::internal().because("reading the anchor to resume from", error),
    };
    if last_verified {
        let record = resume::last_recorded(&state.store)
            .await
            .map_err(unreadable)?
            .ok_or_else(|| {
                Problem::unprocessable(
                    "no verification is recorded yet, so there is nothing to resume from: \
                     verify without from_last_verified, and record one with \
                     taskledger replay verify --record",
                )
            })?;
        return Ok(Some(Anchor::of_record(&record)));
    }
    let Some(name) = &query.from_anchor else {
        return Ok(None);
    };
    let ledger = LedgerName::new(name).map_err(|error| {
        Problem::bad_request(format!(
            "from_anchor {name:?} is not a ledger name: {error}"
        ))
    })?;
    let anchor = resume::ledger_anchor(&state.store, &ledger)
        .await
        .map_err(unreadable)?
        .ok_or_else(|| {
            Problem::unprocessable(format!(
                "ledger {} has confirmed no chain hash: there is no anchor to resume from",
                ledger.as_str()
            ))
        })?;
    Ok(Some(anchor))
}

/// Verifies a range of the log as stored: no missing sequence, every
/// stream's versions consecutive, and the SHA-256 chain recomputed from the
/// stored text (a range starting after 1 continues from the hash stored at
/// `from - 1`). With `from_last_verified` or `from_anchor` the range starts
/// at the anchor, whose hash must first equal the stored one, and the answer
/// names what was not re-checked (`resumed_from`). A log that does not
/// verify is still a 200 answer, with `ok` false and the first bad sequence.
/// Nothing is recorded: `taskledger replay verify --record` does that.
#[utoipa::path(
    get, path = "/v1/audit/verify", tag = "audit",
    params(VerifyQuery),
    responses(
        (status = 200, description = "The verdict (`ok` false names the first bad sequence; `resumed_from` when resumed)", body = VerifyView),
        PlatformOnly, Malformed,
        (status = 422, description = "A range wider than 100,000 events (use `taskledger replay verify`), backwards, from 0 or past the head; `from` with a resume; or nothing to resume from", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["audit:read"]))
)]
pub async fn verify(
    State(state): State<AppState>,
    _: PlatformAuthorized<ReadLog>,
    ApiQuery(query): ApiQuery<VerifyQuery>,
) -> Result<ApiJson<VerifyView>, Problem> {
    let unreadable = log_unreadable::<taskledger_events::StoreError>("verifying the log");
    let anchor = resume_anchor(&state, &query).await?;
    let head = state.store.head_position().await.map_err(&unreadable)?;
    let to = query.to.unwrap_or(head);
    let from = match (&anchor, query.from) {
        (Some(anchor), _) => anchor.position.max(1),
        (None, Some(from)) => from,
        (None, None) => to.saturating_sub(MAX_VERIFY_RANGE - 1).max(1),
    };
    if from == 0 {
        return Err(Problem::unprocessable(
            "from must be at least 1 (sequences start at 1)",
        ));
    }
    if let Some(anchor) = anchor.as_ref().filter(|anchor| anchor.position > head) {
        // Only a log cut short (or restored from an older copy) ends before
        // an anchor taken from it: the verdict names the anchor's sequence.
        if query.to.is_some_and(|to| to > head) {
            return Err(Problem::unprocessable(format!(
                "to {to} is beyond the log, which ends at sequence {head}"
            )));
        }
        return Ok(ApiJson(VerifyView {
            ok: false,
            from,
            to,
            checked: 0,
            first_bad_sequence: Some(from),
            problem: Some(format!(
                "the log ends at sequence {head}, before sequence {from} where {} holds \
                 its hash: events were removed",
                anchor.anchored_by
            )),
            resumed_from: Some(ResumedFrom::at(anchor, from, head)),
        }));
    }
    if let (Some(anchor), Some(to)) = (&anchor, query.to) {
        if to < from {
            return Err(Problem::unprocessable(format!(
                "to {to} is before the anchor at sequence {from} ({}), where this \
                 verification starts",
                anchor.anchored_by
            )));
        }
    }
    // An empty log with the default range checks nothing (from 1 to 0).
    if from > to && (query.from.is_some() || query.to.is_some()) {
        return Err(Problem::unprocessable(format!(
            "from {from} is after to {to}"
        )));
    }
    let width = if from > to { 0 } else { to - from + 1 };
    if width > MAX_VERIFY_RANGE {
        let start = match (&query.from_anchor, anchor.is_some()) {
            (Some(ledger), _) => format!("--from-anchor {ledger}"),
            (None, true) => "--from-last-verified".to_owned(),
            (None, false) => format!("--from {from}"),
        };
        return Err(Problem::unprocessable(format!(
            "the range {from}..={to} holds {width} events, more than the {MAX_VERIFY_RANGE} \
             one request checks; verify it with the command line: \
             taskledger replay verify {start} --to {to}"
        )));
    }
    if to > head {
        return Err(Problem::unprocessable(format!(
            "to {to} is beyond the log, which ends at sequence {head}"
        )));
    }
    let verification = match &anchor {
        Some(anchor) => resume::verify_from(&state.store, anchor, Some(to), |_| {}).await,
        None => taskledger_replay::verify(&state.store, from, Some(to), |_| {}).await,
    }
    .map_err(unreadable)?;
    Ok(ApiJson(VerifyView {
        ok: verification.defect.is_none(),
        from,
        to,
        checked: verification.checked,
        first_bad_sequence: verification
            .defect
            .as_ref()
            .map(taskledger_events::postgres::verify::Defect::global_position),
        problem: verification.defect.map(|defect| defect.to_string()),
        resumed_from: anchor
            .as_ref()
            .map(|anchor| ResumedFrom::at(anchor, from, head)),
    }))
}
