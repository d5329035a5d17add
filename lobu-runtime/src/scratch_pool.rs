//! Scratch directories made ahead of the turns that take them, and handed back by the turns
//! that never looked at them.
//!
//! Making a directory allocates an inode, which can cost more than the rest of a quick
//! turn's local work: on ext4 without a journal every new inode scans past the ones deleted
//! in the last minutes (130 µs per `mkdir` measured on this project's machines, on the turn's
//! path with its trip through the blocking pool). A turn takes a directory made ahead, and
//! another is made in the background for the next. Each directory is new and empty when
//! taken and used by one attempt only. After the attempt, in the background (off the turn's
//! path): a directory the agent asked for ([`Turn::scratch_dir`](crate::Turn::scratch_dir))
//! is removed; one it never asked for, and that is still empty, goes back to the pool for a
//! later attempt as it was made, so an agent that needs no files costs no directory at all.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lobu_core::Result;
use tokio_util::task::TaskTracker;

use crate::scratch::ScratchDir;

/// Directories made ahead, at most `limit` (the worker's concurrency) ready or taken.
#[derive(Debug)]
pub(crate) struct ScratchPool {
    root: PathBuf,
    limit: usize,
    ready: Mutex<Vec<ScratchDir>>,
    /// Directories taken and not yet handed back (or removed).
    taken: AtomicUsize,
    /// Set when the worker loop ended: nothing more is made, and what is ready is removed.
    closed: AtomicBool,
    /// Hand-backs and removals under way, which `close` waits for.
    background: TaskTracker,
}

impl ScratchPool {
    pub(crate) fn new(root: PathBuf, limit: usize) -> Self {
        ScratchPool {
            root,
            limit: limit.max(1),
            ready: Mutex::new(Vec::new()),
            taken: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            background: TaskTracker::new(),
        }
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, Vec<ScratchDir>> {
        // Every change is one push or pop: a poisoned lock holds consistent data.
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new, empty directory: one ready if there is one, else made now. Either way another
    /// is made in the background while the pool holds fewer than its limit.
    pub(crate) async fn take(self: &Arc<Self>) -> Result<ScratchDir> {
        let ready = self.ready().pop();
        let dir = match ready {
            Some(dir) => dir,
            None => ScratchDir::create(&self.root).await?,
        };
        self.taken.fetch_add(1, Ordering::AcqRel);
        self.make_ahead();
        Ok(dir)
    }

    /// The attempt that took `dir` ended; `looked`: its agent asked for the directory.
    /// Removed, or kept for a later attempt, in the background.
    pub(crate) fn hand_back(self: &Arc<Self>, dir: ScratchDir, looked: bool) {
        let pool = Arc::clone(self);
        self.background.spawn(async move {
            let unwanted = if looked || !dir.is_empty().await {
                Some(dir)
            } else {
                pool.keep(dir)
            };
            pool.taken.fetch_sub(1, Ordering::AcqRel);
            if let Some(dir) = unwanted {
                dir.remove().await;
                pool.make_ahead();
            }
        });
    }

    /// Add `dir` to the ready ones, unless the pool is closed or full: then it is handed
    /// back, for the caller to remove.
    fn keep(&self, dir: ScratchDir) -> Option<ScratchDir> {
        let mut ready = self.ready();
        if self.closed.load(Ordering::Acquire) || ready.len() >= self.limit {
            return Some(dir);
        }
        ready.push(dir);
        None
    }

    fn make_ahead(self: &Arc<Self>) {
        let held = self.ready().len() + self.taken.load(Ordering::Acquire);
        if self.closed.load(Ordering::Acquire) || held >= self.limit {
            return;
        }
        let pool = Arc::clone(self);
        self.background.spawn(async move {
            match ScratchDir::create(&pool.root).await {
                Ok(dir) => {
                    if let Some(dir) = pool.keep(dir) {
                        dir.remove().await;
                    }
                }
                // The next turn makes its own, and reports the error if it persists.
                Err(e) => tracing::debug!(error = %e, "could not make a scratch directory ahead"),
            }
        });
    }

    /// Make nothing more, let what is under way finish, and remove what is ready (the worker
    /// loop ended).
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.background.close();
        self.background.wait().await;
        let ready: Vec<ScratchDir> = std::mem::take(&mut *self.ready());
        for dir in ready {
            dir.remove().await;
        }
    }

    /// The directory directories are made in.
    #[cfg(test)]
    pub(crate) fn root(&self) -> &std::path::Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    fn entries(root: &Path) -> usize {
        std::fs::read_dir(root).map_or(0, Iterator::count)
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what} did not happen");
    }

    #[tokio::test]
    async fn each_turn_takes_a_new_empty_directory_made_ahead_and_closing_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Arc::new(ScratchPool::new(dir.path().join("scratch"), 2));
        let first = pool.take().await.unwrap();
        // The next one is made ahead, beside the one in use.
        until("a directory made ahead", || entries(pool.root()) == 2).await;
        std::fs::write(first.path().join("work.txt"), b"x").unwrap();
        let second = pool.take().await.unwrap();
        assert_ne!(first.path(), second.path());
        assert_eq!(std::fs::read_dir(second.path()).unwrap().count(), 0);
        let (a, b) = (first.path().to_path_buf(), second.path().to_path_buf());
        pool.hand_back(first, true);
        pool.hand_back(second, true);
        until("both removed", || !a.exists() && !b.exists()).await;
        until("the next made ahead", || entries(pool.root()) == 2).await;
        pool.close().await;
        assert_eq!(entries(pool.root()), 0, "closing removes what is ready");
        // A turn after closing still gets a directory; none is made ahead any more.
        let late = pool.take().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(entries(pool.root()), 1);
        late.remove().await;
    }

    #[tokio::test]
    async fn a_directory_its_agent_never_asked_for_is_kept_if_still_empty() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Arc::new(ScratchPool::new(dir.path().join("scratch"), 1));
        let unseen = pool.take().await.unwrap();
        let kept = unseen.path().to_path_buf();
        pool.hand_back(unseen, false);
        until("kept", || pool.ready().len() == 1).await;
        let again = pool.take().await.unwrap();
        assert_eq!(again.path(), kept, "taken again, as empty as it was made");
        // Not empty any more (something wrote there without asking): removed.
        std::fs::write(again.path().join("stray"), b"x").unwrap();
        pool.hand_back(again, false);
        until("removed", || !kept.exists()).await;
        pool.close().await;
        assert_eq!(entries(pool.root()), 0);
    }
}
