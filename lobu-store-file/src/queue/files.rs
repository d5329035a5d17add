//! The queue's directory: records, markers, the idempotency index and the queue lock.
//!
//! ```text
//! <root>/queue/
//!   lock                      the OS lock taken for every change to the queue
//!   runs/<run>                one record file per run (source of truth, see
//!                             [`crate::record_file`])
//!   active/<marker>           one empty marker per unfinished run (the claim index)
//!   idempotency/<org>/<agent>/<conversation>/<key>   {"run": …} per idempotency key of a
//!                             run not yet pruned
//! ```

use std::path::{Path, PathBuf};

use lobu_core::{ConversationKey, IdempotencyKey, Result, RunId};

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
}

impl<'a> Queue<'a> {
    pub(crate) fn new(inner: &'a Inner) -> Self {
        Queue {
            dir: inner.layout.queue(),
            inner,
        }
    }

    /// Every change to the queue happens under this lock, held for that change only.
    pub(crate) fn lock(&self) -> Result<FileLock> {
        Ok(FileLock::exclusive(&self.dir.join("lock"))?)
    }

    pub(crate) fn runs_dir(&self) -> PathBuf {
        self.inner.layout.run_records()
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

    /// Remove an idempotency entry and the directories it leaves empty, up to (not
    /// including) `idempotency/`. Only ever called under the queue lock, which every submit
    /// also holds, so no submit is creating one of these directories meanwhile.
    pub(crate) fn remove_idempotency(
        &self,
        key: &ConversationKey,
        idem: &IdempotencyKey,
    ) -> Result<()> {
        let path = self.idempotency_path(key, idem);
        remove_file(&path)?;
        let top = self.idempotency_dir();
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

    /// Rename a marker (a no-op when the name is unchanged).
    pub(crate) fn move_marker(&self, from: &Marker, to: &Marker) -> Result<()> {
        self.move_marker_with(from, to, Durability::Durable)
    }

    fn move_marker_with(&self, from: &Marker, to: &Marker, durability: Durability) -> Result<()> {
        if from.name == to.name {
            return Ok(());
        }
        let dir = self.active_dir();
        let (from, to) = (dir.join(&from.name), dir.join(&to.name));
        Ok(self.inner.disk.rename_with(&dir, &from, &to, durability)?)
    }

    pub(crate) fn remove_marker(&self, marker: &Marker) -> Result<()> {
        self.remove_marker_with(marker, Durability::Durable)
    }

    fn remove_marker_with(&self, marker: &Marker, durability: Durability) -> Result<()> {
        let dir = self.active_dir();
        remove_file(&dir.join(&marker.name))?;
        Ok(self.inner.disk.sync_dir_for(&dir, durability)?)
    }

    fn create_marker(&self, marker: &Marker) -> Result<()> {
        let dir = self.active_dir();
        let disk = self.inner.disk;
        disk.create_dirs(&dir)?;
        let path = dir.join(&marker.name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_at("create marker", &path))?;
        Ok(disk.sync_dir(&dir)?)
    }
}
