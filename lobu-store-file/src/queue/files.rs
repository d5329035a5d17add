//! The queue's directory: records, markers, the idempotency index and the queue lock.
//!
//! Two locks guard it. A run's record and idempotency entry change only under the lock of
//! the run's conversation (its `lock` file), as its state does. The queue lock guards the
//! markers' names only: a listing under it is exact (no marker is renamed meanwhile), and a
//! submit draws its sequence number under it with its marker's creation. It is held for a
//! listing or a rename, never across a sync on a turn's path (a claim, which holds it
//! throughout, syncs nothing), and never while waiting for another lock: a conversation's
//! lock comes first, and a claim, holding the queue lock, only tries a conversation's.
//!
//! ```text
//! <root>/queue/
//!   lock                      the queue lock: markers' names
//!   seq                       the last sequence number drawn (see [`super::sequence`])
//!   runs/<run>                one record file per run (source of truth, see
//!                             [`crate::record_file`])
//!   active/<marker>           one empty marker per unfinished run (the claim index)
//!   idempotency/<org>/<agent>/<conversation>/<key>   {"run": …} per idempotency key of a
//!                             run not yet pruned
//! ```

use std::path::{Path, PathBuf};

use lobu_core::{ConversationKey, IdempotencyKey, Result, RunId};

use lobu_core::RunStatus;

use super::index::{Edit, MarkerIndex};
use super::markers::Marker;
use super::runs::RunFile;
use crate::atomic::{Durability, FileLock, list_names, remove_file};
use crate::error::{FileStoreError, io_at, to_json, undecodable};
use crate::layout::nested;
use crate::record_file;
use crate::store::{Inner, Step};

#[derive(Debug)]
pub(crate) struct Queue<'a> {
    pub(crate) inner: &'a Inner,
    dir: PathBuf,
    /// The queue lock, when this handle holds it for its whole life (a claim, an erasure);
    /// otherwise each change of the markers' names takes it for that change only.
    held: Option<QueueLock>,
}

/// The queue lock, held.
#[derive(Debug)]
pub(crate) struct QueueLock {
    _lock: FileLock,
}

impl QueueLock {
    fn take(dir: &Path) -> Result<Self> {
        let lock = FileLock::exclusive(&dir.join("lock"))?;
        #[cfg(test)]
        crate::atomic::counted::queue_lock(true);
        Ok(QueueLock { _lock: lock })
    }
}

#[cfg(test)]
impl Drop for QueueLock {
    fn drop(&mut self) {
        crate::atomic::counted::queue_lock(false);
    }
}

impl<'a> Queue<'a> {
    /// The queue, its lock taken only for each change of the markers' names.
    pub(crate) fn new(inner: &'a Inner) -> Self {
        Queue {
            dir: inner.layout.queue(),
            inner,
            held: None,
        }
    }

    /// The queue with its lock held until this handle is dropped.
    pub(crate) fn locked(inner: &'a Inner) -> Result<Self> {
        let mut queue = Queue::new(inner);
        queue.held = Some(QueueLock::take(&queue.dir)?);
        Ok(queue)
    }

    /// Run `change` (of markers' names, no syncs) under the queue lock (the one this handle
    /// holds, or one taken for it), announced to every process's copy of the markers and
    /// applied to this one's by the edits it returns (see [`super::index`]).
    fn names<T>(&self, change: impl FnOnce() -> Result<(T, Vec<Edit>)>) -> Result<T> {
        let _taken = match self.held {
            Some(_) => None,
            None => Some(QueueLock::take(&self.dir)?),
        };
        let mut index = self.index();
        let exact = index.begin_change(self)?;
        match change() {
            Ok((value, edits)) => {
                index.end_change(exact, Some(edits));
                Ok(value)
            }
            Err(e) => {
                index.end_change(exact, None);
                Err(e)
            }
        }
    }

    /// This process's copy of the markers: see [`super::index`].
    pub(super) fn index(&self) -> std::sync::MutexGuard<'_, MarkerIndex> {
        // Every change leaves it consistent or drops it: a poisoned one is still usable.
        self.inner
            .marker_index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn runs_dir(&self) -> PathBuf {
        self.inner.layout.run_records()
    }

    /// `queue/seq`: see [`super::sequence`].
    pub(crate) fn sequence_path(&self) -> PathBuf {
        self.dir.join("seq")
    }

    pub(crate) fn active_dir(&self) -> PathBuf {
        self.dir.join("active")
    }

    pub(crate) fn run_path(&self, run: &RunId) -> PathBuf {
        nested(&self.runs_dir(), run.as_str())
    }

    /// `<root>/queue/idempotency`: entries nested by org, agent and conversation.
    pub(crate) fn idempotency_dir(&self) -> PathBuf {
        self.dir.join("idempotency")
    }

    pub(crate) fn idempotency_path(&self, key: &ConversationKey, idem: &IdempotencyKey) -> PathBuf {
        let mut path = self.idempotency_dir();
        for part in [
            key.org.as_str(),
            key.agent.as_str(),
            key.conversation.as_str(),
        ] {
            path = nested(&path, part);
        }
        nested(&path, idem.as_str())
    }

    /// Remove an idempotency entry and the directories of its conversation it leaves empty.
    /// Only ever called under the conversation's lock, which every submit with a key holds,
    /// so no submit is creating one of these directories meanwhile (the org's and agent's,
    /// which other conversations' submits may be creating, stay).
    pub(crate) fn remove_idempotency(
        &self,
        key: &ConversationKey,
        idem: &IdempotencyKey,
    ) -> Result<()> {
        let path = self.idempotency_path(key, idem);
        remove_file(&path)?;
        let top = nested(
            &nested(&self.idempotency_dir(), key.org.as_str()),
            key.agent.as_str(),
        );
        let mut dir = path.parent();
        while let Some(at) = dir.filter(|d| d.starts_with(&top) && *d != top) {
            // Fails (and stops the climb) once a directory still holds other entries.
            if std::fs::remove_dir(at).is_err() {
                break;
            }
            dir = at.parent();
        }
        let synced = dir.unwrap_or(&top);
        Ok(self.inner.disk.sync_dir(synced)?)
    }

    pub(crate) fn load_run(&self, run: &RunId) -> Result<Option<RunFile>> {
        self.load_run_at(&self.run_path(run))
    }

    pub(crate) fn load_run_at(&self, path: &Path) -> Result<Option<RunFile>> {
        let Some(json) = record_file::read_optional(path)? else {
            return Ok(None);
        };
        let file = serde_json::from_slice(&json).map_err(undecodable(path))?;
        Ok(Some(file))
    }

    pub(crate) fn save_run(&self, file: &RunFile) -> Result<()> {
        self.save_run_with(file, Durability::Durable)
    }

    /// [`save_run`](Self::save_run), durably unless `durability` says not.
    pub(crate) fn save_run_with(&self, file: &RunFile, durability: Durability) -> Result<()> {
        let path = self.run_path(&file.record.run);
        let bytes = to_json(&path, file)?;
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            return Err(FileStoreError::corrupt(&path, "not a file path").into());
        };
        let disk = self.inner.disk;
        disk.create_dirs(dir)?;
        Ok(disk.write_record(dir, name, &bytes, durability)?)
    }

    pub(crate) fn remove_run(&self, run: &RunId) -> Result<()> {
        Ok(remove_file(&self.run_path(run))?)
    }

    /// Atomically and durably write `value` as JSON at `path`, creating its directories.
    pub(crate) fn write_json<T: serde::Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        let bytes = to_json(path, value)?;
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            return Err(FileStoreError::corrupt(path, "not a file path").into());
        };
        let disk = self.inner.disk;
        disk.create_dirs(dir)?;
        Ok(disk.write_atomic(dir, name, &bytes)?)
    }

    /// Every marker, in no particular order.
    pub(crate) fn markers(&self) -> Result<Vec<Marker>> {
        let names = list_names(&self.active_dir())?;
        Ok(names
            .into_iter()
            .filter_map(|(name, _)| Marker::parse(&name))
            .collect())
    }

    /// The marker of `file` as it is on disk: by the name its record remembers, else by a
    /// search for its sequence number (a crash or a repair moved it since).
    pub(crate) fn find_marker(&self, file: &RunFile) -> Result<Option<Marker>> {
        if let Some(name) = &file.marker
            && self.active_dir().join(name).is_file()
        {
            return Ok(Marker::parse(name));
        }
        let found = self
            .markers()?
            .into_iter()
            .find(|m| m.seq == file.seq && m.run == file.record.run);
        Ok(found)
    }

    /// Write `file`'s new state and bring its marker in line, in the order that keeps every
    /// marker's instant at or before its run's (see [`super::markers`]).
    pub(crate) fn commit(&self, file: &mut RunFile, current: Option<Marker>) -> Result<()> {
        let durable = Durability::Durable;
        self.commit_with(file, current, durable, durable)
    }

    /// [`commit`](Self::commit), the record and the marker each durably unless its
    /// durability says not. A record made durable with a marker that is not can lose the
    /// marker's move to a power loss: the marker then names an instant at or before the
    /// run's, still a lower bound. A claim's record and marker, both recoverable, can
    /// come back as the marker at the claim's expiry and the record before the claim: the
    /// run then waits out that expiry, as for a worker that died holding it.
    pub(crate) fn commit_with(
        &self,
        file: &mut RunFile,
        current: Option<Marker>,
        record: Durability,
        marker: Durability,
    ) -> Result<()> {
        let wanted = file.wanted_marker();
        file.marker = wanted.as_ref().map(|m| m.name.clone());
        let halfway = || self.inner.reached(Step::QueueHalfway);
        match (current, wanted) {
            (Some(current), Some(wanted)) if wanted.due_ms < current.due_ms => {
                self.move_marker_with(&current, &wanted, marker)?;
                halfway()?;
                self.save_run_with(file, record)
            }
            (Some(current), Some(wanted)) => {
                self.save_run_with(file, record)?;
                halfway()?;
                self.move_marker_with(&current, &wanted, marker)
            }
            (Some(current), None) => {
                self.save_run_with(file, record)?;
                halfway()?;
                self.remove_marker_with(&current, marker)
            }
            (None, Some(wanted)) => {
                self.create_marker(&wanted)?;
                halfway()?;
                self.save_run_with(file, record)
            }
            (None, None) => self.save_run_with(file, record),
        }
    }

    /// Rename a marker (a no-op when the name is unchanged) under the queue lock; the directory is synced (when `durability`
    /// says) after the lock is let go.
    pub(crate) fn move_marker_with(
        &self,
        from: &Marker,
        to: &Marker,
        durability: Durability,
    ) -> Result<()> {
        if from.name == to.name {
            return Ok(());
        }
        let dir = self.active_dir();
        let (old, new) = (dir.join(&from.name), dir.join(&to.name));
        self.names(|| {
            std::fs::rename(&old, &new).map_err(io_at("rename to", &new))?;
            Ok((
                (),
                vec![Edit::Remove(from.clone()), Edit::Insert(to.clone())],
            ))
        })?;
        Ok(self.inner.disk.sync_dir_for(&dir, durability)?)
    }

    pub(crate) fn remove_marker(&self, marker: &Marker) -> Result<()> {
        self.remove_marker_with(marker, Durability::Durable)
    }

    /// Remove a marker under the queue lock; synced as [`move_marker_with`](Self::move_marker_with).
    pub(crate) fn remove_marker_with(&self, marker: &Marker, durability: Durability) -> Result<()> {
        let dir = self.active_dir();
        self.names(|| {
            remove_file(&dir.join(&marker.name))?;
            Ok(((), vec![Edit::Remove(marker.clone())]))
        })?;
        Ok(self.inner.disk.sync_dir_for(&dir, durability)?)
    }

    fn create_marker(&self, marker: &Marker) -> Result<()> {
        let dir = self.active_dir();
        self.inner.disk.create_dirs(&dir)?;
        self.names(|| {
            self.create_marker_file(marker)?;
            Ok(((), vec![Edit::Insert(marker.clone())]))
        })?;
        Ok(self.inner.disk.sync_dir(&dir)?)
    }

    /// Create a marker's file (the caller holds the queue lock and made the directory).
    fn create_marker_file(&self, marker: &Marker) -> Result<()> {
        let path = self.active_dir().join(&marker.name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_at("create marker", &path))?;
        Ok(())
    }

    /// Queue a new run `run`, built by `build` from its sequence number: larger than every
    /// earlier run's, drawn under the queue lock with the marker's creation (first in, first
    /// out within each conversation). The marker is synced before the record is written, so
    /// a record is never without its marker; a claim that finds the marker without its
    /// record leaves it alone while it is young (see [`Inner::orphan_marker_age`]).
    ///
    /// The marker is a second name (a hard link) of the record's file, made empty before the
    /// queue lock is taken and filled after: a run costs one new inode, and removing its
    /// marker frees none. On ext4 without a journal every new inode scans past those freed in
    /// the last minutes: `perf` put ~45 % of `throughput/file`'s CPU there. Where hard links
    /// fail, the marker is an empty file of its own.
    ///
    /// Syncs: 3 (the marker's directory, the record and its directory), none under the queue
    /// lock, which is taken twice: to make the marker, and to see it is still there.
    pub(crate) fn enqueue(
        &self,
        run: &lobu_core::RunId,
        build: impl FnOnce(u64) -> RunFile,
    ) -> Result<RunFile> {
        let disk = self.inner.disk;
        let active = self.active_dir();
        // Made (and their parents synced) before the lock, for the store's first run.
        disk.create_dirs(&active)?;
        let path = self.run_path(run);
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            return Err(FileStoreError::corrupt(&path, "not a file path").into());
        };
        disk.create_dirs(dir)?;
        let staged = disk.stage(dir, name)?;
        let file = self.names(|| {
            let seq = super::sequence::draw(self)?;
            let mut file = build(seq);
            let marker = file
                .wanted_marker()
                .ok_or_else(|| lobu_core::Error::invalid("a new run must be unfinished"))?;
            let at = active.join(&marker.name);
            if std::fs::hard_link(staged.path(), &at).is_err() {
                self.create_marker_file(&marker)?;
            }
            file.marker = Some(marker.name.clone());
            Ok((file, vec![Edit::Insert(marker)]))
        })?;
        disk.sync_dir(&active)?;
        self.inner.reached(Step::QueueHalfway)?;
        let bytes = to_json(&path, &file)?;
        staged.commit(&record_file::file_of(&bytes), Durability::Durable)?;
        // Without the lock while the marker is where it was made (nearly always).
        let made = file.marker.as_ref().map(|name| active.join(name));
        if !made.is_some_and(|at| at.is_file()) && self.names(|| self.restore_marker(&file))? {
            disk.sync_dir(&active)?;
        }
        Ok(file)
    }

    /// A claim took `file`'s young marker for a crashed submit's after all (the submit
    /// stalled for longer than [`Inner::orphan_marker_age`]): make it again, unless the run
    /// has moved on since (then its marker was moved or removed by whoever moved it). Under
    /// the queue lock; whether it made one.
    fn restore_marker(&self, file: &RunFile) -> Result<(bool, Vec<Edit>)> {
        let none = Ok((false, Vec::new()));
        let Some(name) = &file.marker else {
            return none;
        };
        if self.active_dir().join(name).is_file() {
            return none;
        }
        let Some(current) = self.load_run(&file.record.run)? else {
            return none;
        };
        let untouched = current.seq == file.seq
            && current.record.status == RunStatus::Pending
            && current.holder.is_none();
        if untouched && self.find_marker(&current)?.is_none() {
            tracing::warn!(run = %file.record.run,
                "a claim removed the marker of this submit as a crashed one's; made again");
            if let Some(marker) = current.wanted_marker() {
                self.create_marker_file(&marker)?;
                return Ok((true, vec![Edit::Insert(marker)]));
            }
        }
        none
    }
}
