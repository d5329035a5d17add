//! Durable file operations, each in one helper so no call site can skip a sync.
//!
//! * [`Disk::write_atomic`]: a staging file created with `create_new` next to the target,
//!   written, `sync_all`ed, renamed over the target, then the directory synced. A crash at
//!   any byte leaves either the old file or the new one, never a mix; a torn staging file is
//!   only ever garbage with a name no reader looks at.
//! * [`Disk::append_at`] and [`Disk::sync_appended`]: bytes written at an offset past the
//!   committed length, then `sync_data`. They mean nothing until a commit record says so.
//! * [`Disk::write_record`]: a record file's new record appended as one checksummed line
//!   (see [`crate::record_file`]), synced with `fdatasync` when it must be durable.
//! * [`Disk::rename`] and [`Disk::create_dirs`]: directory changes followed by a directory sync.
//! * [`Durability::Recoverable`]: a replace or rename whose directory is not synced. Still
//!   atomic (the new file's bytes are synced before the rename, so a power loss leaves the
//!   old file or the new one, never a torn one), but a power loss may undo it. Only for
//!   changes a restart does without: a claim's ownership and a heartbeat (no owner outlives
//!   a power loss), and the removal of a finished run's marker (a claim that finds the
//!   marker again removes it).
//! * [`FileLock`]: a short OS lock (`flock`) on a lock file, held only for one
//!   read-modify-write and released when dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{FileStoreError, io_at};
use crate::record_file;

type Result<T, E = FileStoreError> = std::result::Result<T, E>;

/// How hard to push bytes to the device. Everything real syncs; tests of logic (not of
/// durability) may turn syncing off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Disk {
    pub(crate) fsync: bool,
}

/// Whether a directory change must be on the device when the call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// The directory is synced after the change.
    Durable,
    /// Atomic, not synced: see the module docs for what may use it.
    Recoverable,
}

/// Staging files are hidden and end in `.tmp`; encoded names never start with a dot, so they
/// cannot collide with anything the store reads.
pub(crate) fn is_staging(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

impl Disk {
    /// Replace `dir/name` with `bytes`, atomically and durably.
    pub(crate) fn write_atomic(&self, dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
        self.write_atomic_with(dir, name, bytes, Durability::Durable)
    }

    /// Replace `dir/name` with `bytes`, atomically; durably unless `durability` says not.
    pub(crate) fn write_atomic_with(
        &self,
        dir: &Path,
        name: &str,
        bytes: &[u8],
        durability: Durability,
    ) -> Result<()> {
        self.stage(dir, name)?.commit(bytes, durability)
    }

    /// A new empty file under a staging name beside `dir/name`, for
    /// [`Staged::commit`] to fill and rename into place (removed if dropped before). Its
    /// inode exists from now on, so other names can be linked to it first.
    pub(crate) fn stage(&self, dir: &Path, name: &str) -> Result<Staged> {
        let path = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_at("create staging file", &path))?;
        Ok(Staged {
            disk: *self,
            file: Some(file),
            path,
            target: dir.join(name),
        })
    }

    /// Make `json` the current record of the record file `dir/name` (see
    /// [`crate::record_file`]): [appended](Disk::append_record), or, when it cannot be, the
    /// file replaced by one holding only it (as [`Disk::write_atomic`] does, always durably).
    /// The caller holds the file's lock.
    pub(crate) fn write_record(
        &self,
        dir: &Path,
        name: &str,
        json: &[u8],
        durability: Durability,
    ) -> Result<()> {
        if self.append_record(dir, name, json, durability)? {
            return Ok(());
        }
        // Durably whatever `durability` says: the lines appended to the new file later are
        // synced, and last only if its name does.
        self.write_atomic(dir, name, &record_file::file_of(json))
    }

    /// Append `json` as one line to the record file `dir/name`, past its last whole line
    /// (cutting a torn tail); `false`, with nothing written, when the file is missing, was
    /// written by format 1 or would grow past [`COMPACT_AT`](crate::record_file::COMPACT_AT).
    /// Syncs: 1 (`fdatasync`) when `durability` is `Durable`, none when it is `Recoverable`
    /// (a power loss may undo it; a torn line is skipped by readers). The caller holds the
    /// file's lock.
    pub(crate) fn append_record(
        &self,
        dir: &Path,
        name: &str,
        json: &[u8],
        durability: Durability,
    ) -> Result<bool> {
        let path = dir.join(name);
        let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_at("open record file", &path)(e)),
        };
        let read = record_file::read_current(&mut file, &path)?;
        let line = record_file::line(json);
        let end = match read.end {
            Some(end) if end + line.len() as u64 <= record_file::COMPACT_AT as u64 => end,
            _ => return Ok(false),
        };
        if read.len > end {
            file.set_len(end)
                .map_err(io_at("cut torn tail of", &path))?;
        }
        file.seek(SeekFrom::Start(end))
            .map_err(io_at("seek in", &path))?;
        file.write_all(&line).map_err(io_at("append to", &path))?;
        if durability == Durability::Durable {
            self.sync_data(&file, &path)?;
        }
        Ok(true)
    }

    /// `fdatasync` an open file (when syncing is on).
    pub(crate) fn sync_data(&self, file: &File, path: &Path) -> Result<()> {
        if self.fsync {
            file.sync_data().map_err(io_at("sync", path))?;
            #[cfg(test)]
            counted::file();
        }
        Ok(())
    }

    /// Replace `target` with what `source` yields, as [`Disk::write_atomic`] does but streamed
    /// (for files too large to hold in memory), through `staging`: a hidden name beside
    /// `target` that only the caller uses (under a lock), so a leftover there is a crashed
    /// replace's, removed first. Syncs: 2 (the staging file, the directory).
    pub(crate) fn replace_from(
        &self,
        staging: &Path,
        target: &Path,
        source: &mut impl Read,
    ) -> Result<()> {
        let Some(dir) = target.parent() else {
            return Err(FileStoreError::corrupt(target, "not a file path"));
        };
        remove_file(staging)?;
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(staging)
                .map_err(io_at("create staging file", staging))?;
            io::copy(source, &mut file).map_err(io_at("write staging file", staging))?;
            self.sync_file(&file, staging)?;
            drop(file);
            fs::rename(staging, target).map_err(io_at("rename staging file to", target))
        })();
        if written.is_err() {
            let _ = fs::remove_file(staging);
        }
        written?;
        self.sync_dir(dir)
    }

    /// Write `bytes` at `offset` of `path` (created if missing), cutting off anything past
    /// `offset` first. Not synced yet: pass the result to [`Disk::sync_appended`].
    pub(crate) fn append_at(&self, path: &Path, offset: u64, bytes: &[u8]) -> Result<Appended> {
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_at("open for append", path))?;
        let size = file.metadata().map_err(io_at("inspect", path))?.len();
        if size < offset {
            // Extending would fill committed bytes with zeros: refuse instead.
            return Err(FileStoreError::corrupt(
                path,
                format!("{offset} bytes are committed but only {size} remain"),
            ));
        }
        if size > offset {
            file.set_len(offset)
                .map_err(io_at("cut uncommitted tail of", path))?;
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(io_at("seek in", path))?;
        file.write_all(bytes).map_err(io_at("append to", path))?;
        Ok(Appended {
            file,
            path: path.to_owned(),
            created: !existed,
        })
    }

    /// Sync appends to files of `dir`, and `dir` itself if one of them was created. Several
    /// appends synced together often share one journal commit.
    pub(crate) fn sync_appended(&self, dir: &Path, appended: &[Appended]) -> Result<()> {
        if self.fsync {
            for a in appended {
                a.file.sync_data().map_err(io_at("sync", &a.path))?;
                #[cfg(test)]
                counted::file();
            }
        }
        if appended.iter().any(|a| a.created) {
            self.sync_dir(dir)?;
        }
        Ok(())
    }

    /// Make `to` a second name of the file `from` (both in `dir`) and sync `dir`.
    pub(crate) fn link(&self, dir: &Path, from: &Path, to: &Path) -> Result<()> {
        fs::hard_link(from, to).map_err(io_at("link to", to))?;
        self.sync_dir(dir)
    }

    /// Rename `from` to `to` (both in `dir`) and sync `dir`.
    pub(crate) fn rename(&self, dir: &Path, from: &Path, to: &Path) -> Result<()> {
        self.rename_with(dir, from, to, Durability::Durable)
    }

    /// Rename `from` to `to` (both in `dir`), syncing `dir` unless `durability` says not.
    pub(crate) fn rename_with(
        &self,
        dir: &Path,
        from: &Path,
        to: &Path,
        durability: Durability,
    ) -> Result<()> {
        fs::rename(from, to).map_err(io_at("rename to", to))?;
        self.sync_dir_for(dir, durability)
    }

    /// Sync `dir` if the change in it must be durable.
    pub(crate) fn sync_dir_for(&self, dir: &Path, durability: Durability) -> Result<()> {
        match durability {
            Durability::Durable => self.sync_dir(dir),
            Durability::Recoverable => Ok(()),
        }
    }

    /// Create `path` and any missing parents, syncing each parent that gained an entry.
    pub(crate) fn create_dirs(&self, path: &Path) -> Result<()> {
        if path.is_dir() {
            return Ok(());
        }
        let mut missing: Vec<&Path> = Vec::new();
        let mut at = Some(path);
        while let Some(dir) = at.filter(|d| !d.is_dir()) {
            missing.push(dir);
            at = dir.parent();
        }
        for dir in missing.into_iter().rev() {
            match fs::create_dir(dir) {
                Ok(()) => {}
                // Another process made it at the same moment; it syncs its parent.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => continue,
                Err(e) => return Err(io_at("create directory", dir)(e)),
            }
            if let Some(parent) = dir.parent() {
                self.sync_dir(parent)?;
            }
        }
        Ok(())
    }

    /// Sync a directory, making renames, creations and removals in it durable.
    pub(crate) fn sync_dir(&self, dir: &Path) -> Result<()> {
        // Only Unix lets a directory be opened and synced; elsewhere (NTFS) the file system
        // journals renames itself.
        if self.fsync && cfg!(unix) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_at("sync directory", dir))?;
            #[cfg(test)]
            counted::dir();
        }
        Ok(())
    }

    fn sync_file(&self, file: &File, path: &Path) -> Result<()> {
        if self.fsync {
            file.sync_all().map_err(io_at("sync", path))?;
            #[cfg(test)]
            counted::file();
        }
        Ok(())
    }
}

/// Syncs made by this thread, for tests of what a call costs.
#[cfg(test)]
pub(crate) mod counted {
    use std::cell::Cell;

    thread_local! {
        static SYNCS: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
    }

    thread_local! {
        /// How many queue locks this thread holds, and the syncs it made while holding one.
        static QUEUE_HELD: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
    }

    fn synced() {
        QUEUE_HELD.with(|q| {
            let (held, syncs) = q.get();
            q.set((held, syncs + u32::from(held > 0)));
        });
    }

    pub(super) fn file() {
        SYNCS.with(|s| s.set((s.get().0 + 1, s.get().1)));
        synced();
    }

    pub(super) fn dir() {
        SYNCS.with(|s| s.set((s.get().0, s.get().1 + 1)));
        synced();
    }

    /// This thread took (`true`) or let go of (`false`) the queue lock.
    pub(crate) fn queue_lock(taken: bool) {
        QUEUE_HELD.with(|q| {
            let (held, syncs) = q.get();
            q.set((if taken { held + 1 } else { held - 1 }, syncs));
        });
    }

    /// Syncs this thread made while holding the queue lock since the last call.
    pub(crate) fn take_under_queue_lock() -> u32 {
        QUEUE_HELD.with(|q| {
            let (held, syncs) = q.get();
            q.set((held, 0));
            syncs
        })
    }

    /// Files and directories synced on this thread since the last call.
    pub(crate) fn take() -> (u32, u32) {
        SYNCS.with(|s| s.replace((0, 0)))
    }
}

/// Bytes appended by [`Disk::append_at`], not yet synced.
#[must_use = "appended bytes must be synced with Disk::sync_appended before they are committed"]
#[derive(Debug)]
pub(crate) struct Appended {
    file: File,
    path: PathBuf,
    created: bool,
}

/// Read the first `len` bytes of `path`. A file shorter than `len` lost committed bytes (or
/// the commit record is damaged): `Corrupt`. The file's real size is checked before anything
/// is allocated, so a damaged length can never make the buffer huge.
pub(crate) fn read_prefix(path: &Path, len: u64) -> Result<Vec<u8>> {
    read_range(path, 0, len)
}

/// Bytes `from..to` of `path`, checked as [`read_prefix`] checks its prefix.
pub(crate) fn read_range(path: &Path, from: u64, to: u64) -> Result<Vec<u8>> {
    let mut file = File::open(path).map_err(io_at("open", path))?;
    let size = file.metadata().map_err(io_at("inspect", path))?.len();
    let short = |found: u64| {
        FileStoreError::corrupt(
            path,
            format!("{to} bytes are committed but only {found} remain"),
        )
    };
    if size < to {
        return Err(short(size));
    }
    let capacity = usize::try_from(to.saturating_sub(from))
        .map_err(|_| FileStoreError::corrupt(path, "length overflows"))?;
    file.seek(SeekFrom::Start(from))
        .map_err(io_at("seek in", path))?;
    let mut bytes = Vec::with_capacity(capacity);
    if size == to {
        // To the end (a transcript read whole): the file's own `read_to_end` knows its
        // size, so it reads in one call instead of in doubling steps.
        file.read_to_end(&mut bytes)
    } else {
        file.take(to.saturating_sub(from)).read_to_end(&mut bytes)
    }
    .map_err(io_at("read", path))?;
    // Appended to since the size check: only the range is wanted.
    bytes.truncate(capacity);
    // The file may have been cut between the size check and the read.
    if bytes.len() != capacity {
        return Err(short(from + bytes.len() as u64));
    }
    Ok(bytes)
}

/// The first `len` bytes of `path`, read without asking its size (a hydrate: one open, one
/// read); `None` if there is no file. Fewer bytes than `len`: `Corrupt`, as
/// [`read_prefix`].
pub(crate) fn read_committed(path: &Path, len: u64) -> Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at("open", path)(e)),
    };
    let capacity =
        usize::try_from(len).map_err(|_| FileStoreError::corrupt(path, "length overflows"))?;
    // Reserved as asked: the length comes from a record whose checksum matched. Read past
    // the end's probe costs nothing: `take` stops at `len` without a call.
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(capacity)
        .map_err(|_| FileStoreError::corrupt(path, format!("{len} bytes do not fit in memory")))?;
    file.take(len)
        .read_to_end(&mut bytes)
        .map_err(io_at("read", path))?;
    if bytes.len() != capacity {
        let detail = format!("{len} bytes are committed but only {} remain", bytes.len());
        return Err(FileStoreError::corrupt(path, detail));
    }
    Ok(Some(bytes))
}

/// The whole file, or `None` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at("read", path)(e)),
    }
}

/// Remove a file; one that is already gone is fine.
pub(crate) fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Cut `path` to `len` bytes if it is longer (an uncommitted tail); a missing file is fine.
pub(crate) fn truncate_to(path: &Path, len: u64) -> Result<()> {
    match fs::metadata(path) {
        Ok(meta) if meta.len() > len => OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(len))
            .map_err(io_at("cut uncommitted tail of", path)),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at("inspect", path)(e)),
    }
}

/// A file being made: see [`Disk::stage`].
#[derive(Debug)]
pub(crate) struct Staged {
    disk: Disk,
    file: Option<File>,
    path: PathBuf,
    target: PathBuf,
}

impl Staged {
    /// Its staging path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Write `bytes`, sync them, and rename the file over its target; its directory is
    /// synced unless `durability` says not. Syncs: 2 (1 when `Recoverable`).
    pub(crate) fn commit(mut self, bytes: &[u8], durability: Durability) -> Result<()> {
        let Some(mut file) = self.file.take() else {
            return Err(FileStoreError::corrupt(&self.path, "committed twice"));
        };
        file.write_all(bytes)
            .map_err(io_at("write staging file", &self.path))?;
        self.disk.sync_file(&file, &self.path)?;
        // Dropping closes; close errors surface through sync_all above on Linux.
        drop(file);
        fs::rename(&self.path, &self.target)
            .map_err(io_at("rename staging file to", &self.target))?;
        self.path = PathBuf::new();
        match self.target.parent() {
            Some(dir) => self.disk.sync_dir_for(dir, durability),
            None => Ok(()),
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// An exclusive or shared OS lock on a lock file, released when dropped. Holders keep it for
/// one read-modify-write only; a lease or a claim is data, never a held lock.
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}

impl FileLock {
    /// Wait for the exclusive lock (other processes' and this process's holders alike:
    /// every holder opens its own file description).
    pub(crate) fn exclusive(path: &Path) -> Result<Self> {
        let file = open_lock_file(path)?;
        file.lock().map_err(io_at("lock", path))?;
        Ok(FileLock { _file: file })
    }

    /// The exclusive lock if nobody holds it now; `None` if someone does (this process's
    /// other holders too).
    pub(crate) fn try_exclusive(path: &Path) -> Result<Option<Self>> {
        let file = open_lock_file(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(io_at("lock", path)(e)),
        }
    }

    /// Wait for a shared lock (readers that must see a commit record and its data together).
    pub(crate) fn shared(path: &Path) -> Result<Self> {
        let file = open_lock_file(path)?;
        file.lock_shared().map_err(io_at("lock", path))?;
        Ok(FileLock { _file: file })
    }
}

fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_at("open lock file", path))
}

/// Names in `dir` (a missing directory has none); names that are not UTF-8 are skipped.
pub(crate) fn list_names(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_at("list", dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_at("list", dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push((name, entry.path()));
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DISK: Disk = Disk { fsync: true };

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_staging_behind() {
        let dir = tempfile::tempdir().unwrap();
        DISK.write_atomic(dir.path(), "state.json", b"one").unwrap();
        DISK.write_atomic(dir.path(), "state.json", b"two").unwrap();
        assert_eq!(fs::read(dir.path().join("state.json")).unwrap(), b"two");
        let names = list_names(dir.path()).unwrap();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn append_at_cuts_an_uncommitted_tail_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.jsonl");
        let first = DISK.append_at(&path, 0, b"a\n").unwrap();
        assert!(first.created);
        DISK.sync_appended(dir.path(), &[first]).unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"torn")
            .unwrap();
        let second = DISK.append_at(&path, 2, b"b\n").unwrap();
        assert!(!second.created);
        DISK.sync_appended(dir.path(), &[second]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"a\nb\n");
        assert_eq!(read_prefix(&path, 2).unwrap(), b"a\n");
        let short = read_prefix(&path, 10).unwrap_err();
        assert_eq!(short.kind(), lobu_core::ErrorKind::Corrupt);
    }

    #[test]
    fn an_exclusive_lock_excludes_other_holders_in_the_same_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = FileLock::exclusive(&path).unwrap();
        let other = open_lock_file(&path).unwrap();
        assert!(
            other.try_lock_shared().is_err(),
            "a second description is excluded"
        );
        drop(held);
        assert!(other.try_lock().is_ok(), "free once dropped");
    }
}
