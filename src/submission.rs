//! Submitting a task on a frontend's behalf: the kind's configuration fills
//! in defaults and checks the parameters, and the task's id is derived so
//! that a retried submission finds the first task instead of making a second.
//!
//! A task's id is, in order of preference:
//! - derived from `(tenant, frontend_id, client_task_id)` when the frontend
//!   names the task itself: the same client task id always means the same
//!   task, within its tenant;
//! - derived from `(tenant, API key, Idempotency-Key)` when the request
//!   carries the header: a retry with the same key means the same task;
//! - a fresh time-ordered UUID otherwise.
//!
//! The tenant is part of every derived id, so two tenants using one client
//! id get two tasks, and no tenant can take (or find) another's id by
//! submitting first. The `default` tenant's ids are derived exactly as
//! before tenants existed, so a retry of a submission made before the
//! upgrade still finds its task. Every derivation's input is a prefix-free
//! encoding (each variable part after its length), so no two different
//! `(tenant, frontend, client id)` triples give one input.
//!
//! Derived ids are name-based (v5) UUIDs, so no lookup table is needed: the
//! task's stream *is* the idempotency record, and concurrent retries meet at
//! the store's expected-version check. A retry whose request differs from the
//! stored task is refused instead of silently answered with a task that is
//! not what was asked for.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use taskledger_events::command::{load, CommandError, Loaded};
use taskledger_events::task::{
    OnParentFailure, SubmitTask, Task, TaskCommand, TaskId, TaskStatus, Tasks,
};
use taskledger_events::tenant::{TenantName, DEFAULT_TENANT};
use taskledger_events::{EventStore, Metadata, RefusalKind};
use uuid::Uuid;

use crate::commands::execute_known;
use crate::config::kind::KindError;
use crate::config::FileConfig;
use crate::workers::graphs;

/// The namespace of derived task ids (a fixed random UUID; changing it would
/// make retries of old submissions create new tasks).
const TASK_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1e_5a0f_9b7d_4e2a_8f31_0c5d_2b9e_7a44);

/// The longest `Idempotency-Key`, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// What a frontend asks for; unset limits come from the kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// A configured task kind.
    pub kind: String,
    /// The kind's parameters (scalars only).
    pub params: Map<String, Value>,
    /// The tenant the task belongs to.
    pub tenant: TenantName,
    /// The submitting frontend.
    pub frontend_id: String,
    /// The frontend's own id for the task.
    pub client_task_id: Option<String>,
    /// Higher runs first; 0 when unset.
    pub priority: Option<i32>,
    /// The kind's `timeout_seconds` when unset; never above the kind's
    /// limit ([`crate::config::kind::TaskKind::check_limits`]).
    pub timeout_seconds: Option<u64>,
    /// The kind's `max_attempts` when unset; never above it.
    pub max_attempts: Option<u32>,
    /// Input files: name → SHA-256 of a blob uploaded with `POST /v1/blobs`.
    pub inputs: std::collections::BTreeMap<String, String>,
    /// The tasks it depends on, of the same tenant (see [`submit`]).
    pub depends_on: Vec<TaskId>,
    /// What a parent that does not succeed does to it.
    pub on_parent_failure: OnParentFailure,
}

impl Submission {
    /// A submission of `kind` with `params` from `frontend_id` of the
    /// `default` tenant, everything else left to the kind.
    pub fn new(
        kind: impl Into<String>,
        params: Map<String, Value>,
        frontend_id: impl Into<String>,
    ) -> Self {
        Self {
            kind: kind.into(),
            params,
            tenant: TenantName::default_tenant(),
            frontend_id: frontend_id.into(),
            client_task_id: None,
            priority: None,
            timeout_seconds: None,
            max_attempts: None,
            inputs: std::collections::BTreeMap::new(),
            depends_on: Vec::new(),
            on_parent_failure: OnParentFailure::Cancel,
        }
    }
}

/// Who submits, and the retry key they sent.
#[derive(Debug, Clone, Copy)]
pub struct Submitter<'a> {
    /// The API key's id (recorded as the actor and scoping idempotency keys).
    pub key_id: Uuid,
    /// The `Idempotency-Key` header, if sent (already checked by
    /// [`check_idempotency_key`]).
    pub idempotency_key: Option<&'a str>,
}

/// A submission that is stored.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The task as stored.
    pub task: Task,
    /// Its stream's version.
    pub stream_version: u64,
    /// The global position of its latest event.
    pub position: u64,
    /// `false` when the task already existed and this was a retry.
    pub created: bool,
}

/// Why a submission was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Unknown kind, or parameters the kind does not accept.
    #[error(transparent)]
    Kind(#[from] KindError),
    /// The same `Idempotency-Key` was used for a different submission.
    #[error("the Idempotency-Key was already used for task {task_id} with a different request; use a new key for a new task")]
    IdempotencyKeyReused {
        /// The task the key made.
        task_id: TaskId,
    },
    /// The client task id already names a task with different contents (of
    /// the same tenant: ids are derived per tenant).
    #[error("client_task_id {client_task_id:?} of frontend {frontend_id:?} already names task {task_id}, submitted with a different request")]
    ClientTaskIdTaken {
        /// The frontend.
        frontend_id: String,
        /// Its id.
        client_task_id: String,
        /// The task it names.
        task_id: TaskId,
    },
    /// `depends_on` names a task that does not exist or is another
    /// tenant's: the two are one error, so a tenant learns nothing of
    /// another's tasks.
    /// The message names the entry by its place, not its id, so the
    /// answers for the two cases are byte for byte the same.
    #[error("depends_on[{index}] names no task of this tenant")]
    UnknownParent {
        /// Its place in `depends_on`, from 0.
        index: usize,
    },
    /// The command failed (a refused field, a conflict, the store).
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// Checks an `Idempotency-Key` header value: 1 to
/// [`MAX_IDEMPOTENCY_KEY_BYTES`] bytes of visible ASCII.
///
/// # Errors
/// What is wrong with it, for a 400.
pub fn check_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes"
        ));
    }
    if !key.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err("Idempotency-Key must be visible ASCII without spaces".into());
    }
    Ok(())
}

/// The id a submission's task gets (see the module documentation).
pub fn task_id_for(submission: &Submission, submitter: Submitter<'_>) -> TaskId {
    let name = match (&submission.client_task_id, submitter.idempotency_key) {
        // Lengths first, so no two different pairs give the same name.
        (Some(client_task_id), _) => Some(format!(
            "client:{}:{}:{client_task_id}",
            submission.frontend_id.len(),
            submission.frontend_id
        )),
        // A key id is a UUID: of fixed length.
        (None, Some(key)) => Some(format!("idempotency:{}:{key}", submitter.key_id)),
        (None, None) => None,
    };
    // Another tenant's name: its length and itself first. No name before
    // tenants began with "tenant:", so these never meet the default
    // tenant's, which keep their old form.
    let name = name.map(|name| match submission.tenant.as_str() {
        DEFAULT_TENANT => name,
        tenant => format!("tenant:{}:{tenant}:{name}", tenant.len()),
    });
    TaskId(name.map_or_else(Uuid::now_v7, |name| {
        Uuid::new_v5(&TASK_ID_NAMESPACE, name.as_bytes())
    }))
}

/// Submits a task, or finds the one an earlier try of the same submission
/// stored.
///
/// # Errors
/// See [`SubmitError`]; nothing is stored when it fails.
pub async fn submit(
    store: &impl EventStore,
    config: &FileConfig,
    submission: Submission,
    submitter: Submitter<'_>,
    now: DateTime<Utc>,
) -> Result<Submitted, SubmitError> {
    let kind = config.kind(&submission.kind)?;
    kind.check_params(&submission.kind, &submission.params)?;
    kind.check_inputs(&submission.kind, &submission.inputs)?;
    kind.check_limits(
        &submission.kind,
        submission.timeout_seconds,
        submission.max_attempts,
    )?;
    check_parents(store, &submission).await?;
    let task_id = task_id_for(&submission, submitter);
    let command = SubmitTask {
        inputs: submission.inputs.clone(),
        task_id,
        kind: submission.kind.clone(),
        params: submission.params.clone(),
        tenant: submission.tenant.clone(),
        frontend_id: submission.frontend_id.clone(),
        client_task_id: submission.client_task_id.clone(),
        priority: submission.priority.unwrap_or(0),
        timeout_seconds: submission.timeout_seconds.unwrap_or(kind.timeout_seconds),
        max_attempts: submission.max_attempts.unwrap_or(kind.max_attempts),
        submitted_at: now,
        submitted_by: Some(submitter.key_id.to_string()),
        depends_on: submission.depends_on.clone(),
        on_parent_failure: submission.on_parent_failure,
    };
    let stream_id = task_id.stream_id();
    let metadata = Metadata::of_actor(submitter.key_id.to_string());
    // The same command id for every try of the same task, so two tries that
    // race produce the same event ids and the store keeps one.
    let command_id = Uuid::new_v5(&task_id.0, b"submit");
    // Decided on an empty stream, without a read: almost every submission
    // is a new task. An earlier try's stream makes the append find its
    // events already stored, or conflict and read the stream and decide
    // again (`AlreadyExists`); both answer with what is stored.
    match execute_known::<Tasks>(
        store,
        &stream_id,
        Some(Loaded::empty()),
        TaskCommand::Submit(command.clone()),
        command_id,
        metadata,
    )
    .await
    {
        Ok(executed)
            if executed
                .appended
                .as_ref()
                .is_some_and(|a| !a.already_stored) =>
        {
            let mut task = executed.state.expect("a submitted task exists");
            let (mut stream_version, mut position) = (executed.stream_version, executed.position);
            // Parents that had all ended release (or cancel) the task at
            // once; otherwise the graph follower does when they end.
            if !task.depends_on.is_empty() {
                let resolved = graphs::resolve(store, task_id, now).await?;
                if resolved.is_some_and(|resolved| resolved.status != TaskStatus::Waiting) {
                    let loaded = load::<Tasks>(store, &stream_id).await?;
                    task = loaded.state.expect("a submitted task exists");
                    (stream_version, position) = (loaded.version, loaded.position);
                }
            }
            Ok(Submitted {
                task,
                stream_version,
                position,
                created: true,
            })
        }
        // A concurrent try stored its events first (`already_stored`), or
        // the task existed before this try: answer with what is stored.
        Ok(_) => existing(store, &command, &submission, submitter).await,
        Err(CommandError::Rejected(error)) if error.kind() == RefusalKind::AlreadyExists => {
            existing(store, &command, &submission, submitter).await
        }
        Err(error) => Err(error.into()),
    }
}

/// Checks that every parent in `depends_on` is a task of the submission's
/// tenant, read from the log: one that does not exist and another
/// tenant's are refused alike ([`SubmitError::UnknownParent`]). The
/// aggregate checks the count and duplicates.
async fn check_parents(
    store: &impl EventStore,
    submission: &Submission,
) -> Result<(), SubmitError> {
    if submission.depends_on.len() > taskledger_events::task::MAX_DEPENDS_ON {
        // The aggregate's refusal says so; no need to read 100s of streams.
        return Ok(());
    }
    for (index, parent) in submission.depends_on.iter().enumerate() {
        let loaded = load::<Tasks>(store, &parent.stream_id()).await?;
        match loaded.state {
            Some(task) if task.tenant == submission.tenant => {}
            _ => return Err(SubmitError::UnknownParent { index }),
        }
    }
    Ok(())
}

/// The stored task `command` would have created, if it is the same request.
/// Limits the submission left to its kind are not compared: an operator may
/// have changed the kind's defaults since the first try.
async fn existing(
    store: &impl EventStore,
    command: &SubmitTask,
    submission: &Submission,
    submitter: Submitter<'_>,
) -> Result<Submitted, SubmitError> {
    let loaded = load::<Tasks>(store, &command.task_id.stream_id()).await?;
    let task = loaded
        .state
        .expect("the task exists: its submission was refused as a duplicate");
    if task.tenant != command.tenant {
        // Derived ids include the tenant, so this is a UUID collision; never
        // say what the other tenant's task is. Trying again cannot help a
        // derived id, but it says nothing either.
        return Err(SubmitError::Command(CommandError::Conflict {
            stream_id: command.task_id.stream_id().to_string(),
            attempts: 1,
        }));
    }
    let same = task.kind == command.kind
        && task.params == command.params
        && task.inputs == command.inputs
        && task.frontend_id == command.frontend_id
        && task.client_task_id == command.client_task_id
        && task.priority == command.priority
        && task.depends_on == command.depends_on
        && task.on_parent_failure == command.on_parent_failure
        && (submission.timeout_seconds.is_none()
            || task.timeout_seconds == command.timeout_seconds)
        && (submission.max_attempts.is_none() || task.max_attempts == command.max_attempts);
    if !same {
        return Err(match &command.client_task_id {
            Some(client_task_id) => SubmitError::ClientTaskIdTaken {
                frontend_id: command.frontend_id.clone(),
                client_task_id: client_task_id.clone(),
                task_id: task.id,
            },
            None if submitter.idempotency_key.is_some() => {
                SubmitError::IdempotencyKeyReused { task_id: task.id }
            }
            // A fresh v7 id does not collide; if it ever did, the caller
            // may simply try again and get a new one.
            None => SubmitError::Command(CommandError::Conflict {
                stream_id: command.task_id.stream_id().to_string(),
                attempts: 1,
            }),
        });
    }
    Ok(Submitted {
        task,
        stream_version: loaded.version,
        position: loaded.position,
        created: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission(client_task_id: Option<&str>) -> Submission {
        Submission {
            client_task_id: client_task_id.map(str::to_owned),
            ..Submission::new("echo", Map::new(), "web")
        }
    }

    #[test]
    fn derived_ids_are_stable_and_scoped() {
        let key = Uuid::new_v4();
        let plain = Submitter {
            key_id: key,
            idempotency_key: None,
        };
        let keyed = Submitter {
            key_id: key,
            idempotency_key: Some("retry-1"),
        };
        let client = submission(Some("order-7"));
        assert_eq!(task_id_for(&client, plain), task_id_for(&client, plain));
        // The client task id wins over the header: one client id, one task.
        assert_eq!(task_id_for(&client, plain), task_id_for(&client, keyed));
        let mut other_frontend = client.clone();
        other_frontend.frontend_id = "mobile".into();
        assert_ne!(
            task_id_for(&client, plain),
            task_id_for(&other_frontend, plain)
        );
        let anonymous = submission(None);
        assert_eq!(
            task_id_for(&anonymous, keyed),
            task_id_for(&anonymous, keyed)
        );
        let other_key = Submitter {
            key_id: Uuid::new_v4(),
            idempotency_key: Some("retry-1"),
        };
        assert_ne!(
            task_id_for(&anonymous, keyed),
            task_id_for(&anonymous, other_key)
        );
        assert_ne!(
            task_id_for(&anonymous, plain),
            task_id_for(&anonymous, plain)
        );
    }

    #[test]
    fn the_default_tenants_ids_are_derived_as_before_tenants_existed() {
        let key = Uuid::from_u128(42);
        let plain = Submitter {
            key_id: key,
            idempotency_key: None,
        };
        // What the derivation gave before tenants: these ids are in logs.
        assert_eq!(
            task_id_for(&submission(Some("order-7")), plain).0,
            Uuid::new_v5(&TASK_ID_NAMESPACE, b"client:3:web:order-7")
        );
        let keyed = Submitter {
            key_id: key,
            idempotency_key: Some("retry-1"),
        };
        assert_eq!(
            task_id_for(&submission(None), keyed).0,
            Uuid::new_v5(
                &TASK_ID_NAMESPACE,
                format!("idempotency:{key}:retry-1").as_bytes()
            )
        );
    }

    #[test]
    fn two_tenants_get_two_tasks_for_one_client_id_or_idempotency_key() {
        let in_tenant = |tenant: &str, client_task_id: Option<&str>| Submission {
            tenant: tenant.parse().unwrap(),
            ..submission(client_task_id)
        };
        let plain = Submitter {
            key_id: Uuid::from_u128(1),
            idempotency_key: None,
        };
        let keyed = Submitter {
            key_id: Uuid::from_u128(1),
            idempotency_key: Some("retry-1"),
        };
        let ids = |submitter| {
            ["default", "acme", "globex"]
                .map(|tenant| task_id_for(&in_tenant(tenant, Some("order-7")), submitter))
        };
        let by_client = ids(plain);
        assert!(by_client[0] != by_client[1] && by_client[1] != by_client[2]);
        assert!(by_client[0] != by_client[2]);
        let acme = task_id_for(&in_tenant("acme", None), keyed);
        assert_ne!(acme, task_id_for(&in_tenant("globex", None), keyed));
        assert_ne!(acme, task_id_for(&in_tenant("default", None), keyed));
        assert_eq!(acme, task_id_for(&in_tenant("acme", None), keyed));
        // No (tenant, frontend, client id) triple shares another's input:
        // a frontend or client id shaped like a tenant's prefix stays apart.
        let shaped = Submission {
            frontend_id: "tenant:4:acme:client:3:web".into(),
            ..submission(Some("order-7"))
        };
        assert_ne!(task_id_for(&shaped, plain), by_client[1]);
        let mut split = in_tenant("acme", Some("order-7"));
        split.frontend_id = "we".into();
        split.client_task_id = Some("b:order-7".into());
        assert_ne!(task_id_for(&split, plain), by_client[1]);
    }

    #[test]
    fn idempotency_keys_are_checked() {
        assert!(check_idempotency_key("a1-B2_c3").is_ok());
        assert!(check_idempotency_key("").is_err());
        assert!(check_idempotency_key("has space").is_err());
        assert!(check_idempotency_key("ünïcode").is_err());
        assert!(check_idempotency_key(&"k".repeat(256)).is_err());
    }
}
