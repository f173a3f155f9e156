//! A child task's inputs from its parents (`depends_on`): each parent's
//! artifacts, as the log records them, named `{parent_id}/{artifact}`, so
//! a container sees them read-only under `/in/{parent_id}/` (bind mounts of
//! the blobs, as for input files) and a local or Slurm command under
//! `$TASKLEDGER_IN/{parent_id}/` (copies).

use std::path::PathBuf;

use taskledger_events::command::load;
use taskledger_events::task::{is_input_name, Task, Tasks};

use super::executor::RunError;
use super::Context;

/// The `(name under /in/, blob path)` of every artifact of every parent of
/// `task`. An artifact whose name is not a plain file name (letters,
/// digits, `.`, `_`, `-`: what a bind mount's syntax can carry) is left
/// out, with a warning.
///
/// # Errors
/// A parent that cannot be read, or an artifact not in this runner's blob
/// store (a start error: runners must share the blob store).
pub(super) async fn parent_inputs(
    context: &Context,
    task: &Task,
) -> Result<Vec<(String, PathBuf)>, RunError> {
    let mut inputs = Vec::new();
    for parent in &task.depends_on {
        let loaded = load::<Tasks>(&context.store, &parent.stream_id())
            .await
            .map_err(|error| RunError::Start(format!("reading parent {parent}: {error}")))?;
        let Some(parent_task) = loaded.state else {
            continue;
        };
        for artifact in &parent_task.artifacts {
            if !is_input_name(&artifact.name) {
                tracing::warn!(
                    task = %task.id, %parent, artifact = artifact.name,
                    "a parent's artifact whose name is not a plain file name is not mounted"
                );
                continue;
            }
            let path = context
                .options
                .blobs
                .path(&artifact.sha256)
                .filter(|path| path.is_file())
                .ok_or_else(|| {
                    RunError::Start(format!(
                        "artifact {:?} of parent {parent} (blob {}) is not in this runner's \
                         blob store; runners must share TASKLEDGER_DATA_DIR",
                        artifact.name, artifact.sha256
                    ))
                })?;
            let path = std::fs::canonicalize(&path).map_err(|error| {
                RunError::Start(format!(
                    "artifact {:?} of parent {parent}: {error}",
                    artifact.name
                ))
            })?;
            inputs.push((format!("{parent}/{}", artifact.name), path));
        }
    }
    Ok(inputs)
}
