//! Reading an output directory on the runner's host (Docker's bind-mounted
//! `/out`, a Slurm job's or a local command's `TASKLEDGER_OUT`): its
//! top-level regular files, and nothing the command could use to make the
//! runner read something else.
//!
//! The directory's content was written by the command, so it is read as
//! untrusted: an entry is read only if it is a regular file when opened
//! with `O_NOFOLLOW` (a symbolic link to `/etc/passwd` is skipped, not
//! followed — also if it replaced a file after the listing) and
//! `O_NONBLOCK` (a FIFO never blocks the open); FIFOs, sockets, devices,
//! directories and links are skipped; at most the kind's limit is read.

use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;

use super::executor::RunError;

/// The top-level regular files of `dir`, sorted by name, at most `limit`
/// bytes in all. `shown` names the directory in errors (`/out`).
///
/// # Errors
/// [`RunError::Output`] when the directory or a file cannot be read, or
/// the files exceed `limit`.
pub(super) async fn collect_files(
    dir: &Path,
    limit: u64,
    shown: &str,
) -> Result<Vec<(String, Vec<u8>)>, RunError> {
    let dir = dir.to_owned();
    let shown = shown.to_owned();
    tokio::task::spawn_blocking(move || collect_blocking(&dir, limit, &shown))
        .await
        .map_err(|error| RunError::Output(format!("reading the output files failed: {error}")))?
}

fn collect_blocking(
    dir: &Path,
    limit: u64,
    shown: &str,
) -> Result<Vec<(String, Vec<u8>)>, RunError> {
    let too_big = || {
        RunError::Output(format!(
            "the files in {shown} exceed the kind's files_limit_bytes ({limit} bytes)"
        ))
    };
    let unreadable = |name: &str, error: std::io::Error| {
        let hint = if error.kind() == std::io::ErrorKind::PermissionDenied {
            " (the runner cannot read what the container's user wrote: run the runner as root \
             or as that user, or set [docker] out = \"archive\")"
        } else {
            ""
        };
        RunError::Output(format!("{shown}/{name} could not be read: {error}{hint}"))
    };
    let mut names: Vec<(String, PathBuf)> = Vec::new();
    let listing = std::fs::read_dir(dir)
        .map_err(|error| RunError::Output(format!("{shown} could not be read: {error}")))?;
    for entry in listing {
        let entry = entry
            .map_err(|error| RunError::Output(format!("{shown} could not be read: {error}")))?;
        // The entry's own type: a symbolic link is not followed here.
        let regular = entry.file_type().is_ok_and(|kind| kind.is_file());
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if regular {
            names.push((name, entry.path()));
        }
    }
    names.sort();
    let mut files = Vec::with_capacity(names.len());
    let mut total = 0_u64;
    for (name, path) in names {
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32)
            .open(&path);
        let file = match opened {
            Ok(file) => file,
            // Replaced by a link after the listing (ELOOP), or gone.
            Err(error)
                if error.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
                    || error.kind() == std::io::ErrorKind::NotFound =>
            {
                continue
            }
            Err(error) => return Err(unreadable(&name, error)),
        };
        // What was opened, not what was listed.
        let metadata = file.metadata().map_err(|error| unreadable(&name, error))?;
        if !metadata.is_file() {
            continue;
        }
        let room = limit.saturating_sub(total);
        if metadata.len() > room {
            return Err(too_big());
        }
        let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
        // One byte more than there is room for tells a file that grew.
        file.take(room.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|error| unreadable(&name, error))?;
        total += bytes.len() as u64;
        if total > limit {
            return Err(too_big());
        }
        files.push((name, bytes));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tl-collect-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn only_regular_top_level_files_are_read_and_links_are_not_followed() {
        let dir = scratch();
        let secret = dir.with_extension("secret");
        std::fs::write(&secret, b"host secret").unwrap();
        std::fs::write(dir.join("b.txt"), b"bee").unwrap();
        std::fs::write(dir.join("a.json"), b"{}").unwrap();
        std::os::unix::fs::symlink(&secret, dir.join("passwd")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("etc-passwd")).unwrap();
        std::fs::create_dir(dir.join("deeper")).unwrap();
        std::fs::write(dir.join("deeper/c.txt"), b"sea").unwrap();
        let fifo = std::process::Command::new("mkfifo")
            .arg(dir.join("pipe"))
            .status()
            .unwrap();
        assert!(fifo.success());
        let files = collect_files(&dir, 1024, "/out").await.unwrap();
        assert_eq!(
            files,
            vec![
                ("a.json".to_owned(), b"{}".to_vec()),
                ("b.txt".to_owned(), b"bee".to_vec()),
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_file(&secret).unwrap();
    }

    #[tokio::test]
    async fn the_limit_counts_every_file() {
        let dir = scratch();
        std::fs::write(dir.join("one"), vec![1; 600]).unwrap();
        std::fs::write(dir.join("two"), vec![2; 600]).unwrap();
        let error = collect_files(&dir, 1000, "/out").await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "the files in /out exceed the kind's files_limit_bytes (1000 bytes)"
        );
        assert_eq!(collect_files(&dir, 1200, "/out").await.unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
