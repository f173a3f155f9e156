//! From an attempt's end to the command that records it: the result
//! document, the artifacts (the `/out` files and the logs), and the report,
//! retried until the log has it.

use super::*;

/// The command that records `outcome`; `None` when there is nothing to
/// record (the task was canceled).
pub(super) async fn outcome_command(
    context: &Context,
    task: &taskledger_events::task::Task,
    attempt: u32,
    outcome: Outcome,
) -> Option<TaskCommand> {
    let task_id = task.id;
    let retry = context
        .options
        .config
        .kinds
        .get(&task.kind)
        .map(|kind| kind.retry.clone())
        .unwrap_or_default();
    let failed =
        |error: String, exit_code: Option<i32>, retryable: bool, artifacts: Vec<Artifact>| {
            let failed_at = now();
            Some(TaskCommand::Fail(FailTask {
                artifacts,
                task_id,
                attempt,
                error,
                exit_code,
                retryable,
                next_attempt_at: wait::next_attempt_at(
                    context, &task.kind, attempt, retryable, failed_at,
                ),
                failed_at,
            }))
        };
    match outcome.end.clone() {
        End::Canceled => None,
        End::Failed {
            exit_code,
            error,
            retryable,
        } => {
            // The logs are kept, as for a non-zero exit.
            let logs = failure_logs(context, task_id, outcome).await;
            failed(error, exit_code, retryable, logs)
        }
        End::TimedOut => Some(TaskCommand::TimeOut(TimeOutTask {
            task_id,
            attempt,
            timed_out_at: now(),
        })),
        End::Exited(code) => {
            let exit_code = i32::try_from(code).unwrap_or(i32::MAX);
            if code != 0 {
                // The command's verdict, unless the kind lists its code as
                // "try again".
                let retryable = retry.retries_exit_code(exit_code);
                let error = format!(
                    "the command exited with code {code}{}",
                    stderr_tail(&outcome.stderr.bytes)
                );
                // The logs are kept as for a success: they are what a
                // failure is understood from.
                let logs = failure_logs(context, task_id, outcome).await;
                return failed(error, Some(exit_code), retryable, logs);
            }
            let result = match outcome.files.iter().find(|(name, _)| name == "result.json") {
                None => Map::new(),
                Some((_, bytes)) => match serde_json::from_slice::<Value>(bytes) {
                    Ok(Value::Object(result)) => result,
                    Ok(_) => {
                        return failed(
                            "/out/result.json is not a JSON object".into(),
                            Some(exit_code),
                            false,
                            Vec::new(),
                        )
                    }
                    Err(error) => {
                        return failed(
                            format!("/out/result.json is not valid JSON: {error}"),
                            Some(exit_code),
                            false,
                            Vec::new(),
                        )
                    }
                },
            };
            match store_artifacts(&context.options.blobs, outcome).await {
                Ok(artifacts) => Some(TaskCommand::Complete(CompleteTask {
                    task_id,
                    attempt,
                    result,
                    exit_code,
                    artifacts,
                    finished_at: now(),
                })),
                Err(error) => failed(
                    format!("storing the attempt's files failed: {error}"),
                    Some(exit_code),
                    true,
                    Vec::new(),
                ),
            }
        }
    }
}

/// The logs of a failed attempt, stored (its `/out` files are not kept);
/// none when storing them fails, which is logged: the failure is recorded
/// without them.
async fn failure_logs(context: &Context, task_id: TaskId, outcome: Outcome) -> Vec<Artifact> {
    let logs = Outcome {
        files: Vec::new(),
        ..outcome
    };
    match store_artifacts(&context.options.blobs, logs).await {
        Ok(artifacts) => artifacts,
        Err(error) => {
            tracing::warn!(%error, task = %task_id, "storing a failed attempt's logs failed; recording the failure without them");
            Vec::new()
        }
    }
}

/// Stores the files of `/out` and the two logs (`stdout.log`,
/// `stderr.log`, unless `/out` has files of those names).
pub(super) async fn store_artifacts(
    blobs: &BlobStore,
    outcome: Outcome,
) -> std::io::Result<Vec<Artifact>> {
    let mut files = outcome.files;
    for (name, captured) in [
        ("stdout.log", outcome.stdout),
        ("stderr.log", outcome.stderr),
    ] {
        if captured.total > 0 && !files.iter().any(|(existing, _)| existing == name) {
            files.push((name.to_owned(), captured.into_log()));
        }
    }
    let mut artifacts = Vec::with_capacity(files.len());
    for (name, bytes) in files {
        let sha256 = blobs.put(&bytes).await?;
        artifacts.push(Artifact {
            media_type: media_type(&name).to_owned(),
            size: bytes.len() as u64,
            sha256,
            name,
        });
    }
    artifacts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(artifacts)
}

/// A media type from a file name's extension.
pub(super) fn media_type(name: &str) -> &'static str {
    let extension = name
        .rsplit_once('.')
        .map(|(_, extension)| extension.to_ascii_lowercase());
    match extension.as_deref() {
        Some("json") => "application/json",
        Some("txt" | "log") => "text/plain; charset=utf-8",
        Some("html" | "htm") => "text/html",
        Some("csv") => "text/csv",
        Some("xml") => "application/xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("pdf") => "application/pdf",
        Some("zip") => "application/zip",
        Some("gz") => "application/gzip",
        _ => "application/octet-stream",
    }
}

/// ": <the end of stderr>" for a failure message, or nothing.
pub(super) fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim().replace('\0', "");
    if text.is_empty() {
        return String::new();
    }
    let start = text
        .char_indices()
        .rev()
        .nth(ERROR_TAIL_BYTES - 1)
        .map_or(0, |(index, _)| index);
    format!("; stderr ends: {}", &text[start..])
}

/// Appends a worker command. Store failures are retried until it is
/// stored (the attempt's outcome exists nowhere else); the job stays
/// unacknowledged meanwhile and the lease renewed. A refusal because the
/// task moved on (canceled, or the attempt is stale) is the end of it; a
/// refusal of the outcome itself (e.g. a result the log cannot hold) is
/// recorded as the attempt's failure instead, so the task never stays
/// running.
pub(super) async fn report(context: &Context, task_id: TaskId, command: TaskCommand) {
    report_known(context, task_id, command, None).await;
}

/// [`report`], its first try decided on `known` (the stream as this
/// runner's claim left it) instead of a fresh load; a stream that changed
/// since makes that try's append conflict, and it is read again.
pub(super) async fn report_known(
    context: &Context,
    task_id: TaskId,
    command: TaskCommand,
    mut known: Option<Loaded<Tasks>>,
) {
    let stream = task_id.stream_id();
    let mut command = command;
    let mut command_id = Uuid::new_v4();
    // The store is expected back soon; a longer outage is waited out at
    // one try in 10 s.
    let mut pauses = Pauses::doubling(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match execute_known::<Tasks>(
            &context.store,
            &stream,
            known.take(),
            command.clone(),
            command_id,
            metadata(context),
        )
        .await
        {
            Ok(_) => return,
            Err(CommandError::Rejected(error)) if error.kind() == RefusalKind::Invalid => {
                let attempt = match &command {
                    TaskCommand::Complete(complete) => complete.attempt,
                    TaskCommand::Fail(fail) => fail.attempt,
                    TaskCommand::RecordProgress(progress) => progress.attempt,
                    TaskCommand::TimeOut(time_out) => time_out.attempt,
                    _ => {
                        tracing::error!(%error, task = %task_id, "a worker command was refused as invalid");
                        return;
                    }
                };
                if matches!(&command, TaskCommand::Fail(fail) if fail.error.starts_with("the attempt's outcome was refused"))
                {
                    tracing::error!(%error, task = %task_id, "even the failure report was refused");
                    return;
                }
                tracing::warn!(%error, task = %task_id, "an attempt's outcome was refused; recording it as a failure");
                command = TaskCommand::Fail(FailTask {
                    artifacts: Vec::new(),
                    task_id,
                    attempt,
                    error: format!("the attempt's outcome was refused: {}", error.message()),
                    exit_code: None,
                    retryable: false,
                    next_attempt_at: None,
                    failed_at: now(),
                });
                command_id = Uuid::new_v4();
            }
            Err(CommandError::Rejected(error)) => {
                tracing::info!(%error, task = %task_id, "an attempt's report was refused");
                return;
            }
            Err(error) => {
                let pause = pauses.next_pause();
                tracing::warn!(%error, task = %task_id, retry_in = ?pause, "recording an attempt's outcome failed; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_follow_extensions() {
        assert_eq!(media_type("result.json"), "application/json");
        assert_eq!(media_type("REPORT.TXT"), "text/plain; charset=utf-8");
        assert_eq!(media_type("blob"), "application/octet-stream");
    }

    #[test]
    fn failures_quote_the_end_of_stderr() {
        assert_eq!(stderr_tail(b""), "");
        assert_eq!(stderr_tail(b"boom\n"), "; stderr ends: boom");
        let long = "x".repeat(2_000);
        assert_eq!(
            stderr_tail(long.as_bytes()).len(),
            "; stderr ends: ".len() + 500
        );
    }
}
