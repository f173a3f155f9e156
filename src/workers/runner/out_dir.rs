//! Docker's `/out` bind-mounted from the runner's host (`[docker] out =
//! "bind"`): one directory per attempt, `{work_dir}/docker-out/{container
//! name}`, made before the container, read after its exit
//! ([`super::collect`]), and removed only once the attempt's outcome is in
//! the log.
//!
//! - `docker-out/` is the runner's alone (mode 0700): a container's user
//!   may write anything into its `/out` (a set-uid file of its root), and
//!   no other user of the host can reach it. An attempt's directory is
//!   mode 0777 so that a container of any user can write to it; only the
//!   engine reaches it, through the bind mount.
//! - Removed after the outcome is recorded: a crash before that leaves the
//!   attempt to be retried (its collected files are not needed), a crash
//!   after it leaves a directory the next start-up's [`sweep`] removes.
//! - [`sweep`] removes a directory exactly when the container sweep would
//!   remove its container ([`super::intake::attempt_is_held`]): when the
//!   log shows its attempt ended, or no runner has renewed its lease
//!   within the TTL. A directory of an attempt that another runner on this
//!   host still runs (sharing the work directory) is left alone, and so is
//!   one of a task this log does not hold.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use super::intake::attempt_is_held;
use super::*;

/// The folder of the attempts' directories under the work directory.
const ROOT: &str = "docker-out";

/// The bind-mounted `/out` of the container named `container`.
pub(super) fn path(work_dir: &Path, container: &str) -> PathBuf {
    work_dir.join(ROOT).join(container)
}

/// Makes `dir` (from [`path`]) fresh and empty, writable by any user, in a
/// folder only the runner reaches.
///
/// # Errors
/// [`RunError::Start`] when a directory cannot be made.
pub(super) async fn prepare(dir: &Path) -> Result<(), RunError> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let failed = |what: &Path, error: std::io::Error| {
            RunError::Start(format!("preparing /out at {}: {error}", what.display()))
        };
        if let Some(root) = dir.parent() {
            std::fs::create_dir_all(root).map_err(|error| failed(root, error))?;
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
                .map_err(|error| failed(root, error))?;
        }
        // A leftover of this very attempt holds nothing it may keep.
        match std::fs::remove_dir_all(&dir) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(failed(&dir, error))
            }
            _ => {}
        }
        std::fs::create_dir(&dir).map_err(|error| failed(&dir, error))?;
        // Not left to the umask: the container's user may be anyone.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|error| failed(&dir, error))
    })
    .await
    .map_err(|error| RunError::Start(error.to_string()))?
}

/// Removes an attempt's directory with everything in it (never following
/// a link out of it); a missing one is fine, a failure is logged.
pub(super) async fn remove(dir: &Path) {
    let dir = dir.to_owned();
    let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err((dir, error)),
        _ => Ok(()),
    })
    .await;
    if let Ok(Err((dir, error))) = removed {
        tracing::warn!(
            %error,
            dir = %dir.display(),
            "removing an attempt's /out directory failed (files a container's user made that \
             the runner may not delete: run the runner as root or as that user, or set \
             [docker] out = \"archive\")"
        );
    }
}

/// Removes the directory of `attempt` of `task_id`, if the runner binds
/// `/out`.
pub(super) async fn remove_attempt(context: &Context, task_id: TaskId, attempt: u32) {
    if context.options.bind_out {
        remove(&path(
            &context.options.work_dir,
            &container_name(task_id, attempt),
        ))
        .await;
    }
}

/// Removes the directories of attempts no runner holds any more (see the
/// module documentation), left by a runner that crashed or was stopped.
/// Looks whatever `[docker] out` says now: a runner that bound `/out`
/// before may have left some.
pub(super) async fn sweep(context: &Context) {
    let root = context.options.work_dir.join(ROOT);
    let Ok(mut listing) = tokio::fs::read_dir(&root).await else {
        return;
    };
    while let Ok(Some(entry)) = listing.next_entry().await {
        let Some((task, attempt)) = entry.file_name().to_str().and_then(parse_name) else {
            continue;
        };
        if !attempt_is_held(context, task, attempt).await {
            tracing::info!(task = %task, attempt, "removing an attempt's /out directory no runner holds");
            remove(&entry.path()).await;
        }
    }
}

/// The task and attempt of a directory named by [`container_name`].
fn parse_name(name: &str) -> Option<(Uuid, u32)> {
    let rest = name.strip_prefix("taskledger-")?;
    let (task, attempt) = rest.rsplit_once('-')?;
    let task = Uuid::parse_str(task).ok()?;
    let attempt = attempt.parse().ok()?;
    (container_name(TaskId(task), attempt) == name).then_some((task, attempt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_name_gives_back_its_task_and_attempt() {
        let task = Uuid::new_v4();
        let name = container_name(TaskId(task), 3);
        assert_eq!(parse_name(&name), Some((task, 3)));
        assert_eq!(parse_name("taskledger-nope-3"), None);
        assert_eq!(parse_name(&format!("{name}.old")), None);
        assert_eq!(parse_name(&format!("x{name}")), None);
    }
}
