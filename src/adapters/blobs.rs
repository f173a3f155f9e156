//! Content-addressed blob storage for artifacts: a file's SHA-256 is its
//! name (`{root}/sha256/ab/abcdef…`), so storing the same bytes twice keeps
//! one copy and a stored blob never changes.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A directory of blobs.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Blobs under `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Where the blob with hexadecimal SHA-256 `sha256` lives (it may not
    /// exist). `None` for anything that is not 64 lowercase hex digits, so
    /// no caller-supplied text ever becomes a path.
    pub fn path(&self, sha256: &str) -> Option<PathBuf> {
        let valid = sha256.len() == 64
            && sha256
                .bytes()
                .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| self.root.join("sha256").join(&sha256[..2]).join(sha256))
    }

    /// Whether the blob named `sha256` is stored (`false` for a name that
    /// is not a digest).
    pub async fn contains(&self, sha256: &str) -> bool {
        match self.path(sha256) {
            Some(path) => tokio::fs::try_exists(path).await.unwrap_or(false),
            None => false,
        }
    }

    /// Stores `bytes`; their SHA-256 (hexadecimal). Written to a temporary
    /// file, synced and renamed, so a blob is either whole or absent.
    ///
    /// # Errors
    /// When the directory cannot be written.
    pub async fn put(&self, bytes: &[u8]) -> io::Result<String> {
        self.store(bytes).await.map(|(sha256, _)| sha256)
    }

    /// Stores `bytes` as [`BlobStore::put`] does; their SHA-256 and whether
    /// they were new (`false`: the same bytes were stored before).
    ///
    /// # Errors
    /// When the directory cannot be written.
    pub async fn store(&self, bytes: &[u8]) -> io::Result<(String, bool)> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let path = self
            .path(&sha256)
            .expect("a hex digest is always a valid blob name");
        if tokio::fs::try_exists(&path).await? {
            return Ok((sha256, false));
        }
        let directory = path.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(directory).await?;
        let temporary = directory.join(format!(".{}.tmp", Uuid::new_v4()));
        let written = async {
            let mut file = tokio::fs::File::create(&temporary).await?;
            tokio::io::AsyncWriteExt::write_all(&mut file, bytes).await?;
            file.sync_all().await?;
            tokio::fs::rename(&temporary, &path).await
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&temporary).await;
        }
        written.map(|()| (sha256, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blobs_are_named_by_content_and_paths_by_digests_only() {
        let root = std::env::temp_dir().join(format!("tl-blobs-{}", Uuid::new_v4()));
        let store = BlobStore::new(&root);
        let first = store.put(b"hello").await.unwrap();
        assert_eq!(
            first,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(store.put(b"hello").await.unwrap(), first);
        let path = store.path(&first).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"hello");
        assert!(store.path("../../etc/passwd").is_none());
        assert!(store.path(&first.to_uppercase()).is_none());
        std::fs::remove_dir_all(root).unwrap();
    }
}
