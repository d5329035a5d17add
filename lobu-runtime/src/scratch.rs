//! Per-run scratch directories: created empty before the agent runs, removed after it,
//! whatever the outcome.

use std::io;
use std::path::{Path, PathBuf};

use lobu_core::{Error, Result};

/// A fresh directory owned by one attempt of one run.
///
/// [`ScratchDir::remove`] deletes it; if the attempt is dropped on the way (a panic, an
/// aborted task), `Drop` removes it in the background instead.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: Option<PathBuf>,
}

impl ScratchDir {
    /// Create `root/run-<uuid>` (and `root` if needed), private to this user on Unix.
    pub(crate) async fn create(root: &Path) -> Result<Self> {
        // A UUID, not the run id: run ids are arbitrary text and must never become paths.
        let path = root.join(format!("run-{}", uuid::Uuid::new_v4()));
        let dir = path.clone();
        let root = root.to_path_buf();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            std::fs::create_dir_all(&root)?;
            let mut builder = std::fs::DirBuilder::new();
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            // `create`, not `create_all`: the directory must be new, hence empty.
            builder.create(&dir)
        })
        .await
        .map_err(|e| Error::new(lobu_core::ErrorKind::Other, "scratch task failed").with_source(e))?
        .map_err(|e| {
            Error::unavailable(format!(
                "cannot create scratch directory {}",
                path.display()
            ))
            .with_source(e)
        })?;
        Ok(ScratchDir { path: Some(path) })
    }

    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Whether the directory holds nothing (a directory that cannot be read does not).
    pub(crate) async fn is_empty(&self) -> bool {
        let path = self.path().to_path_buf();
        let empty = tokio::task::spawn_blocking(move || {
            std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
        });
        empty.await.unwrap_or(false)
    }

    /// Delete the directory and everything in it.
    pub(crate) async fn remove(mut self) {
        if let Some(path) = self.path.take() {
            remove_now(path).await;
        }
    }
}

async fn remove_now(path: PathBuf) {
    let shown = path.display().to_string();
    let result = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&path)).await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {}
        Ok(Err(error)) => tracing::warn!(%error, path = %shown, "cannot remove scratch directory"),
        Err(error) => tracing::warn!(%error, path = %shown, "scratch removal task failed"),
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn(remove_now(path));
                }
                // No runtime left (process exit): best effort, inline.
                Err(_) => {
                    let _ = std::fs::remove_dir_all(path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scratch_dir_is_new_empty_and_removed_after() {
        let root = tempfile::tempdir().unwrap();
        let nested = root.path().join("a/b");
        let a = ScratchDir::create(&nested).await.unwrap();
        let b = ScratchDir::create(&nested).await.unwrap();
        assert_ne!(a.path(), b.path());
        assert!(a.path().starts_with(&nested));
        assert_eq!(std::fs::read_dir(a.path()).unwrap().count(), 0);
        std::fs::write(a.path().join("file"), b"x").unwrap();
        std::fs::create_dir(a.path().join("sub")).unwrap();
        let path = a.path().to_path_buf();
        a.remove().await;
        assert!(!path.exists());
        let path = b.path().to_path_buf();
        drop(b);
        for _ in 0..500 {
            if !path.exists() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("a dropped scratch dir was not removed");
    }

    #[tokio::test]
    async fn an_unusable_root_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let e = ScratchDir::create(&file).await.unwrap_err();
        assert_eq!(e.kind(), lobu_core::ErrorKind::Unavailable);
    }
}
