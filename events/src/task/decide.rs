//! The task's rules: which command is allowed in which state, and which
//! events it produces ([`decide`]).

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::commands::{
    Artifact, CancelTask, CompleteTask, FailTask, RecordJobRunning, RecordJobSubmitted,
    RecordTaskProgress, ResolveDependencies, RetryTask, StartTask, SubmitTask, TaskCommand,
    TimeOutTask, MAX_ARTIFACT_NAME_BYTES, MAX_ATTEMPTS, MAX_CLIENT_TASK_ID_BYTES, MAX_DEPENDS_ON,
    MAX_EXECUTOR_JOB_BYTES, MAX_FRONTEND_ID_BYTES, MAX_INPUTS, MAX_INPUT_NAME_BYTES,
    MAX_KIND_BYTES, MAX_MESSAGE_BYTES, MAX_TIMEOUT_SECONDS, MAX_WORKER_ID_BYTES, PRIORITIES,
};
use super::events::{
    OnParentFailure, TaskCanceled, TaskEvent, TaskFailed, TaskJobRunning, TaskJobSubmitted,
    TaskProgressRecorded, TaskReleased, TaskRetried, TaskStarted, TaskSucceeded, TaskTimedOut,
};
use super::{Task, TaskId, TaskState, TaskStatus};
use crate::{check, Refusal};

/// The events `command` produces in `state`, or why it is refused. Pure: the
/// same state and command always give the same answer.
///
/// Checks run in this order and the first refusal is returned: the task
/// exists (or, for [`SubmitTask`], does not); its status allows the command;
/// the command's attempt is the current one (the next one for
/// [`StartTask`]); the command's own fields are valid.
///
/// Outcomes:
/// - [`SubmitTask`] → `TaskSubmitted`; the task is queued, or waiting when
///   it has parents (`depends_on`: at most [`MAX_DEPENDS_ON`], none twice,
///   not itself).
/// - [`ResolveDependencies`] (waiting) → `TaskReleased` when every parent
///   succeeded (with `on_parent_failure = run`: ended); `TaskCanceled`
///   ("parent {id} failed") for the first parent, in `depends_on` order,
///   that failed, timed out or was canceled; no event while a parent may
///   still succeed.
/// - [`CancelTask`] (waiting, queued or running) → `TaskCanceled`, with `was_running`.
/// - [`StartTask`] (queued) → `TaskStarted`.
/// - [`RecordTaskProgress`] (running) → `TaskProgressRecorded`.
/// - [`CompleteTask`] (running) → `TaskSucceeded`.
/// - [`FailTask`] (running) → `TaskRetried` when the failure is retryable and
///   attempts remain (`attempts_started < max_attempts`), the task going back
///   to queued; otherwise `TaskFailed`, with the worker's error as given.
/// - [`TimeOutTask`] (running) → `TaskTimedOut`; never retried.
/// - [`RetryTask`] (running) → `TaskRetried` when attempts remain; otherwise
///   `TaskFailed` with the error "gave up after N attempts: {reason}".
/// - [`RecordJobSubmitted`] (running, no job recorded for the attempt yet) →
///   `TaskJobSubmitted`.
/// - [`RecordJobRunning`] (running, that job recorded and not yet running) →
///   `TaskJobRunning`.
///
/// # Errors
/// A [`Refusal`] whose [`kind`](Refusal::kind) is
/// - `NotFound` when the state holds no task, or holds a different task than
///   the command names (the caller loaded the wrong stream; nothing is known
///   of the command's task);
/// - `AlreadyExists` for a [`SubmitTask`] when the task exists;
/// - `InvalidTransition` when the status does not allow the command, or the
///   command's attempt is stale, not yet started, or not the next one;
/// - `Invalid` when a field of the command is out of bounds (see the limits
///   in the command's documentation).
pub fn decide(state: &TaskState, command: TaskCommand) -> Result<Vec<TaskEvent>, Refusal> {
    let event = match command {
        TaskCommand::Submit(submit) => submit_task(state, submit)?,
        TaskCommand::Cancel(cancel) => cancel_task(existing(state, cancel.task_id)?, cancel)?,
        TaskCommand::Start(start) => start_task(existing(state, start.task_id)?, start)?,
        TaskCommand::RecordProgress(progress) => {
            record_progress(existing(state, progress.task_id)?, progress)?
        }
        TaskCommand::Complete(complete) => {
            complete_task(existing(state, complete.task_id)?, complete)?
        }
        TaskCommand::Fail(fail) => fail_task(existing(state, fail.task_id)?, fail)?,
        TaskCommand::TimeOut(time_out) => {
            time_out_task(existing(state, time_out.task_id)?, time_out)?
        }
        TaskCommand::Retry(retry) => retry_task(existing(state, retry.task_id)?, retry)?,
        TaskCommand::RecordJobSubmitted(submitted) => {
            record_job_submitted(existing(state, submitted.task_id)?, submitted)?
        }
        TaskCommand::RecordJobRunning(running) => {
            record_job_running(existing(state, running.task_id)?, running)?
        }
        TaskCommand::ResolveDependencies(resolve) => {
            return resolve_dependencies(existing(state, resolve.task_id)?, resolve)
        }
    };
    Ok(vec![event])
}

fn existing(state: &TaskState, task_id: TaskId) -> Result<&Task, Refusal> {
    match state {
        Some(task) if task.id == task_id => Ok(task),
        _ => Err(not_found(task_id)),
    }
}

/// "task 3f2a1b4c… does not exist".
fn not_found(task_id: TaskId) -> Refusal {
    Refusal::not_found(format!("task {} does not exist", task_id.short()))
}

/// "task 3f2a1b4c… already exists".
fn already_exists(task_id: TaskId) -> Refusal {
    Refusal::already_exists(format!("task {} already exists", task_id.short()))
}

fn submit_task(state: &TaskState, submit: SubmitTask) -> Result<TaskEvent, Refusal> {
    let task_id = submit.task_id;
    if state.is_some() {
        return Err(already_exists(task_id));
    }
    check::text("kind", &submit.kind, MAX_KIND_BYTES)?;
    check::text("frontend_id", &submit.frontend_id, MAX_FRONTEND_ID_BYTES)?;
    if let Some(client_task_id) = &submit.client_task_id {
        check::text("client_task_id", client_task_id, MAX_CLIENT_TASK_ID_BYTES)?;
    }
    if !PRIORITIES.contains(&submit.priority) {
        return Err(Refusal::invalid(format!(
            "priority must be from {} to {}; got {}",
            PRIORITIES.start(),
            PRIORITIES.end(),
            submit.priority
        )));
    }
    if !(1..=MAX_TIMEOUT_SECONDS).contains(&submit.timeout_seconds) {
        return Err(Refusal::invalid(format!(
            "timeout_seconds must be from 1 to {MAX_TIMEOUT_SECONDS} (7 days); got {}",
            submit.timeout_seconds
        )));
    }
    if !(1..=MAX_ATTEMPTS).contains(&submit.max_attempts) {
        return Err(Refusal::invalid(format!(
            "max_attempts must be from 1 to {MAX_ATTEMPTS}; got {}",
            submit.max_attempts
        )));
    }
    check_document("params", &submit.params)?;
    check_inputs(&submit.inputs)?;
    check_depends_on(task_id, &submit.depends_on)?;
    if let Some(submitted_by) = &submit.submitted_by {
        check_message("submitted_by", submitted_by)?;
    }
    Ok(TaskEvent::Submitted(submit))
}

fn cancel_task(task: &Task, cancel: CancelTask) -> Result<TaskEvent, Refusal> {
    let was_running = match task.status {
        TaskStatus::Waiting | TaskStatus::Queued => false,
        TaskStatus::Running => true,
        _ => return Err(cannot(task, "be canceled")),
    };
    if let Some(reason) = &cancel.reason {
        check_message("reason", reason)?;
    }
    Ok(TaskEvent::Canceled(TaskCanceled {
        reason: cancel.reason,
        canceled_at: cancel.canceled_at,
        was_running,
    }))
}

fn check_depends_on(task_id: TaskId, depends_on: &[TaskId]) -> Result<(), Refusal> {
    if depends_on.len() > MAX_DEPENDS_ON {
        return Err(Refusal::invalid(format!(
            "depends_on names at most {MAX_DEPENDS_ON} tasks; got {}",
            depends_on.len()
        )));
    }
    let mut seen = HashSet::with_capacity(depends_on.len());
    for parent in depends_on {
        if *parent == task_id {
            return Err(Refusal::invalid(format!(
                "depends_on names the task itself ({parent})"
            )));
        }
        if !seen.insert(parent) {
            return Err(Refusal::invalid(format!(
                "depends_on names task {parent} more than once"
            )));
        }
    }
    Ok(())
}

fn resolve_dependencies(
    task: &Task,
    resolve: ResolveDependencies,
) -> Result<Vec<TaskEvent>, Refusal> {
    if task.status != TaskStatus::Waiting {
        return Err(cannot(task, "be released"));
    }
    let mut all_succeeded = true;
    let mut all_final = true;
    for parent in &task.depends_on {
        let Some(&(_, status)) = resolve.parents.iter().find(|(id, _)| id == parent) else {
            return Err(Refusal::invalid(format!(
                "the status of parent {parent} was not given"
            )));
        };
        all_succeeded &= status == TaskStatus::Succeeded;
        all_final &= status.is_final();
        let failed = status.is_final() && status != TaskStatus::Succeeded;
        if failed && task.on_parent_failure == OnParentFailure::Cancel {
            return Ok(vec![TaskEvent::Canceled(TaskCanceled {
                reason: Some(format!("parent {parent} {status}")),
                canceled_at: resolve.resolved_at,
                was_running: false,
            })]);
        }
    }
    let release = match task.on_parent_failure {
        OnParentFailure::Cancel => all_succeeded,
        OnParentFailure::Run => all_final,
    };
    Ok(if release {
        vec![TaskEvent::Released(TaskReleased {
            released_at: resolve.resolved_at,
        })]
    } else {
        Vec::new()
    })
}

fn start_task(task: &Task, start: StartTask) -> Result<TaskEvent, Refusal> {
    match task.status {
        TaskStatus::Queued => {}
        TaskStatus::Running => return Err(cannot(task, "be started again")),
        _ => return Err(cannot(task, "be started")),
    }
    let next = task.attempts_started.saturating_add(1);
    if start.attempt != next {
        return Err(Refusal::invalid_transition(format!(
            "attempt {} is not next; the task has started {}",
            start.attempt,
            attempts(task.attempts_started)
        )));
    }
    if start.attempt > task.max_attempts {
        // Not reached through decide (a task with no attempts left is never
        // queued), but a hand-built state must not start a forbidden attempt.
        return Err(Refusal::invalid_transition(format!(
            "attempt {} is beyond the task's limit of {}",
            start.attempt,
            attempts(task.max_attempts)
        )));
    }
    check::text("worker_id", &start.worker_id, MAX_WORKER_ID_BYTES)?;
    Ok(TaskEvent::Started(TaskStarted {
        worker_id: start.worker_id,
        attempt: start.attempt,
        started_at: start.started_at,
    }))
}

fn record_progress(task: &Task, progress: RecordTaskProgress) -> Result<TaskEvent, Refusal> {
    check_current_attempt(task, progress.attempt, "record progress")?;
    if let Some(percent) = progress.percent {
        // NaN is not contained in any range, so it is refused here too.
        if !(0.0..=100.0).contains(&percent) {
            return Err(Refusal::invalid(format!(
                "percent must be from 0 to 100; got {percent}"
            )));
        }
    }
    if let Some(message) = &progress.message {
        check_message("message", message)?;
    }
    Ok(TaskEvent::ProgressRecorded(TaskProgressRecorded {
        attempt: progress.attempt,
        percent: progress.percent,
        message: progress.message,
        recorded_at: progress.recorded_at,
    }))
}

fn complete_task(task: &Task, complete: CompleteTask) -> Result<TaskEvent, Refusal> {
    check_current_attempt(task, complete.attempt, "be completed")?;
    check_artifacts(&complete.artifacts)?;
    check_document("result", &complete.result)?;
    Ok(TaskEvent::Succeeded(TaskSucceeded {
        attempt: complete.attempt,
        result: complete.result,
        exit_code: complete.exit_code,
        artifacts: complete.artifacts,
        finished_at: complete.finished_at,
    }))
}

fn fail_task(task: &Task, fail: FailTask) -> Result<TaskEvent, Refusal> {
    check_current_attempt(task, fail.attempt, "be failed")?;
    check_message("error", &fail.error)?;
    check_artifacts(&fail.artifacts)?;
    if fail.retryable && attempts_remain(task) {
        return Ok(TaskEvent::Retried(TaskRetried {
            attempt: fail.attempt,
            reason: fail.error,
            exit_code: fail.exit_code,
            retried_at: fail.failed_at,
            next_attempt_at: fail.next_attempt_at,
        }));
    }
    Ok(TaskEvent::Failed(TaskFailed {
        attempt: fail.attempt,
        error: fail.error,
        exit_code: fail.exit_code,
        artifacts: fail.artifacts,
        failed_at: fail.failed_at,
    }))
}

fn time_out_task(task: &Task, time_out: TimeOutTask) -> Result<TaskEvent, Refusal> {
    check_current_attempt(task, time_out.attempt, "be timed out")?;
    Ok(TaskEvent::TimedOut(TaskTimedOut {
        attempt: time_out.attempt,
        timed_out_at: time_out.timed_out_at,
    }))
}

fn retry_task(task: &Task, retry: RetryTask) -> Result<TaskEvent, Refusal> {
    if task.status != TaskStatus::Running {
        return Err(cannot(task, "be retried"));
    }
    check_message("reason", &retry.reason)?;
    let attempt = task.attempts_started;
    if attempts_remain(task) {
        return Ok(TaskEvent::Retried(TaskRetried {
            attempt,
            reason: retry.reason,
            exit_code: None,
            retried_at: retry.retried_at,
            next_attempt_at: retry.next_attempt_at,
        }));
    }
    Ok(TaskEvent::Failed(TaskFailed {
        attempt,
        error: format!("gave up after {}: {}", attempts(attempt), retry.reason),
        exit_code: None,
        artifacts: Vec::new(),
        failed_at: retry.retried_at,
    }))
}

fn record_job_submitted(task: &Task, submitted: RecordJobSubmitted) -> Result<TaskEvent, Refusal> {
    check_current_attempt(task, submitted.attempt, "record a job")?;
    if let Some(job) = &task.executor_job {
        return Err(Refusal::invalid_transition(format!(
            "attempt {} already has {} job {}",
            submitted.attempt, job.executor, job.job_id
        )));
    }
    check::text("executor", &submitted.executor, MAX_EXECUTOR_JOB_BYTES)?;
    check::text("job_id", &submitted.job_id, MAX_EXECUTOR_JOB_BYTES)?;
    Ok(TaskEvent::JobSubmitted(TaskJobSubmitted {
        attempt: submitted.attempt,
        executor: submitted.executor,
        job_id: submitted.job_id,
        submitted_at: submitted.submitted_at,
    }))
}

fn record_job_running(task: &Task, running: RecordJobRunning) -> Result<TaskEvent, Refusal> {
    check_current_attempt(task, running.attempt, "record a running job")?;
    match &task.executor_job {
        Some(job) if job.job_id == running.job_id && job.running_at.is_none() => {}
        Some(job) if job.job_id == running.job_id => {
            return Err(Refusal::invalid_transition(format!(
                "job {} of attempt {} is already recorded as running",
                job.job_id, running.attempt
            )))
        }
        Some(job) => {
            return Err(Refusal::invalid_transition(format!(
                "attempt {} runs job {}, not {}",
                running.attempt, job.job_id, running.job_id
            )))
        }
        None => {
            return Err(Refusal::invalid_transition(format!(
                "attempt {} has no job recorded",
                running.attempt
            )))
        }
    }
    Ok(TaskEvent::JobRunning(TaskJobRunning {
        attempt: running.attempt,
        job_id: running.job_id,
        running_at: running.running_at,
    }))
}

fn attempts_remain(task: &Task) -> bool {
    task.attempts_started < task.max_attempts
}

/// Refuses a worker's command unless the task is running `attempt`.
/// `action` completes "it cannot …".
fn check_current_attempt(task: &Task, attempt: u32, action: &str) -> Result<(), Refusal> {
    if task.status != TaskStatus::Running {
        return Err(cannot(task, action));
    }
    let current = task.attempts_started;
    let problem = if attempt < current {
        "is no longer current"
    } else if attempt > current {
        "has not started"
    } else {
        return Ok(());
    };
    Err(Refusal::invalid_transition(format!(
        "attempt {attempt} {problem}; the task is on attempt {current}"
    )))
}

/// "task 3f2a1b4c… is already succeeded; it cannot be canceled".
fn cannot(task: &Task, action: &str) -> Refusal {
    let status = match task.status {
        TaskStatus::Waiting => "waiting for its parents".to_owned(),
        TaskStatus::Queued => "queued".to_owned(),
        TaskStatus::Running => format!("running attempt {}", task.attempts_started),
        done => format!("already {done}"),
    };
    Refusal::invalid_transition(format!(
        "task {} is {status}; it cannot {action}",
        task.id.short()
    ))
}

/// "1 attempt", "3 attempts".
fn attempts(count: u32) -> String {
    if count == 1 {
        "1 attempt".to_owned()
    } else {
        format!("{count} attempts")
    }
}

/// Free text (a reason, an error, a progress message): at most
/// [`MAX_MESSAGE_BYTES`], and no NUL character, which PostgreSQL's `text`
/// cannot hold (the read models could never show such an event).
fn check_message(field: &str, value: &str) -> Result<(), Refusal> {
    let problem = if value.len() > MAX_MESSAGE_BYTES {
        format!(
            "{field} is {} bytes long; the limit is {MAX_MESSAGE_BYTES}",
            value.len()
        )
    } else if value.contains('\0') {
        format!("{field} must not contain a NUL character")
    } else {
        return Ok(());
    };
    Err(Refusal::invalid(problem))
}

/// A JSON document kept in a read model: no NUL character in any key or
/// string, which PostgreSQL's `jsonb` cannot hold.
fn check_document(field: &str, document: &Map<String, Value>) -> Result<(), Refusal> {
    fn has_nul(value: &Value) -> bool {
        match value {
            Value::String(text) => text.contains('\0'),
            Value::Array(items) => items.iter().any(has_nul),
            Value::Object(map) => map
                .iter()
                .any(|(key, value)| key.contains('\0') || has_nul(value)),
            _ => false,
        }
    }
    if document
        .iter()
        .any(|(key, value)| key.contains('\0') || has_nul(value))
    {
        return Err(Refusal::invalid(format!(
            "{field} must not contain a NUL character (\\u0000)"
        )));
    }
    Ok(())
}

/// Input names are plain file names (they become `/in/{name}`): a letter
/// or digit first, then letters, digits, `.`, `_` or `-`.
fn check_inputs(inputs: &std::collections::BTreeMap<String, String>) -> Result<(), Refusal> {
    if inputs.len() > MAX_INPUTS {
        return Err(Refusal::invalid(format!(
            "at most {MAX_INPUTS} input files; got {}",
            inputs.len()
        )));
    }
    for (name, sha256) in inputs {
        if !super::commands::is_input_name(name) {
            return Err(Refusal::invalid(format!(
                "input name {name:?} must be 1 to {MAX_INPUT_NAME_BYTES} letters, digits, \
                     '.', '_' or '-', starting with a letter or digit"
            )));
        }
        if !check::is_lowercase_sha256(sha256) {
            return Err(Refusal::invalid(format!("input {name:?}: the blob must be named by 64 lowercase hexadecimal digits (its SHA-256)"),
            ));
        }
    }
    Ok(())
}

fn check_artifacts(artifacts: &[Artifact]) -> Result<(), Refusal> {
    let mut names = HashSet::with_capacity(artifacts.len());
    for (index, artifact) in artifacts.iter().enumerate() {
        let name = artifact.name.as_str();
        let problem = if name.is_empty() {
            Some(format!("artifact {index} has an empty name"))
        } else if name.len() > MAX_ARTIFACT_NAME_BYTES {
            Some(format!(
                "artifact {index} has a name of {} bytes; the limit is {MAX_ARTIFACT_NAME_BYTES}",
                name.len()
            ))
        } else if name.contains('/') {
            Some(format!("artifact name {name:?} must not contain '/'"))
        } else if name.contains('\0') {
            Some(format!(
                "artifact name {name:?} must not contain a NUL character"
            ))
        } else if name == "." || name == ".." {
            Some(format!("artifact name {name:?} is not a file name"))
        } else if !names.insert(name) {
            Some(format!("artifact name {name:?} appears more than once"))
        } else if !check::is_lowercase_sha256(&artifact.sha256) {
            Some(format!(
                "artifact {name:?}: sha256 must be 64 lowercase hexadecimal digits"
            ))
        } else if artifact.media_type.is_empty() {
            Some(format!("artifact {name:?}: media_type must not be empty"))
        } else if artifact.media_type.len() > 255
            || artifact.media_type.chars().any(char::is_control)
        {
            Some(format!(
                "artifact {name:?}: media_type must be at most 255 bytes without control characters"
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(Refusal::invalid(problem));
        }
    }
    Ok(())
}
