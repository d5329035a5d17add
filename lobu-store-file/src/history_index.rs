//! [`HistoryIndex`]: the records of conversations' `history.jsonl` this process has read,
//! so that a persist reads only the lines written since its last look instead of the whole
//! history (which grows by a line a turn: 10,000 turns are about 2 MB read per persist).
//!
//! History is append-only below its committed length, which only a reset (`clear`) or an
//! erasure shrinks by removing the file. A cached entry is used only if the committed
//! length did not shrink and the file still holds, at the cached end, the exact last line
//! read (a run id, a SHA-256 and a time: a file written anew never matches it by chance),
//! so lines written by other processes are read, and a history removed and written again
//! is read again from its start.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use lobu_core::{Result, RunId};
use lru::LruCache;

use crate::atomic::read_range;
use crate::error::{FileStoreError, undecodable};
use crate::records::Record;

/// How many conversations' histories stay cached (a record is about 150 bytes held).
const CONVERSATIONS: usize = 256;

#[derive(Debug)]
pub(crate) struct HistoryIndex {
    entries: Mutex<LruCache<PathBuf, Indexed>>,
    /// Bytes read from history files, for tests of what a lookup costs.
    #[cfg(test)]
    read: std::sync::atomic::AtomicU64,
}

impl Default for HistoryIndex {
    fn default() -> Self {
        let capacity = NonZeroUsize::new(CONVERSATIONS).unwrap_or(NonZeroUsize::MIN);
        HistoryIndex {
            entries: Mutex::new(LruCache::new(capacity)),
            #[cfg(test)]
            read: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// One history read up to `len` bytes.
#[derive(Debug, Default)]
struct Indexed {
    len: u64,
    /// The last line read, with its newline.
    last_line: Vec<u8>,
    records: Vec<Record>,
    /// Where each run's records are in `records`: a persist looks up its own run's, and a
    /// scan of 10,000 records per persist was a tenth of its time.
    by_run: HashMap<RunId, Vec<usize>>,
}

/// The records of one history, oldest first.
#[derive(Debug)]
pub(crate) struct History<'a> {
    records: &'a [Record],
    by_run: &'a HashMap<RunId, Vec<usize>>,
}

impl History<'_> {
    /// `run`'s records, oldest first.
    pub(crate) fn of_run(&self, run: &RunId) -> Vec<Record> {
        let at = self.by_run.get(run).map_or(&[][..], Vec::as_slice);
        at.iter().map(|&i| self.records[i].clone()).collect()
    }

    /// The record of `version`. Versions grow along a history, so it is searched for by
    /// halves; a miss looks at every record (an imported head could break the order).
    pub(crate) fn of_version(&self, version: u64) -> Option<Record> {
        let at = self.records.binary_search_by_key(&version, |r| r.version);
        let found = match at {
            Ok(i) => self.records.get(i),
            Err(_) => self.records.iter().find(|r| r.version == version),
        };
        found.cloned()
    }
}

impl HistoryIndex {
    /// `f` over the records of the history at `path` whose first `committed` bytes are
    /// committed; reads only what this process has not read yet.
    pub(crate) fn with_records<T>(
        &self,
        path: &Path,
        committed: u64,
        f: impl FnOnce(&History<'_>) -> T,
    ) -> Result<T> {
        // Taken out while its file is read, so other conversations never wait on this one.
        let cached = self.lock().pop(path);
        let mut indexed = match cached {
            Some(entry) if entry.len <= committed && self.still_holds(path, &entry)? => entry,
            _ => Indexed::default(),
        };
        if indexed.len < committed {
            let tail = self.read_range(path, indexed.len, committed)?;
            indexed.extend(path, &tail)?;
        }
        let answer = f(&History {
            records: &indexed.records,
            by_run: &indexed.by_run,
        });
        self.lock().put(path.to_owned(), indexed);
        Ok(answer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<PathBuf, Indexed>> {
        // Every update is one put or pop: a poisoned lock holds consistent data.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the file still holds the entry's last line where the entry ends.
    fn still_holds(&self, path: &Path, entry: &Indexed) -> Result<bool> {
        if entry.last_line.is_empty() {
            return Ok(true); // nothing read yet: nothing to check
        }
        let Some(start) = entry.len.checked_sub(entry.last_line.len() as u64) else {
            return Ok(false);
        };
        match self.read_range(path, start, entry.len) {
            Ok(bytes) => Ok(bytes == entry.last_line),
            // Gone or shorter: written anew since.
            Err(_) => Ok(false),
        }
    }

    fn read_range(&self, path: &Path, from: u64, to: u64) -> Result<Vec<u8>> {
        let bytes = read_range(path, from, to)?;
        #[cfg(test)]
        self.read
            .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(bytes)
    }
}

impl Indexed {
    /// Decode the whole lines of `tail`, the bytes after `len`.
    fn extend(&mut self, path: &Path, tail: &[u8]) -> Result<()> {
        for line in tail.split_inclusive(|b| *b == b'\n') {
            if line.last() != Some(&b'\n') {
                // Committed history ends with a whole line; anything else is damage.
                return Err(
                    FileStoreError::corrupt(path, "committed history ends mid-line").into(),
                );
            }
            let record: Record = serde_json::from_slice(line).map_err(undecodable(path))?;
            let at = self.records.len();
            self.by_run.entry(record.run.clone()).or_default().push(at);
            self.records.push(record);
            self.last_line = line.to_vec();
        }
        self.len += tail.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    use std::time::SystemTime;

    use lobu_core::TerminalStatus;

    use super::*;

    fn line(version: u64) -> Vec<u8> {
        let record = Record {
            version,
            run: RunId::generate(),
            status: TerminalStatus::Completed,
            bytes: version * 10,
            sha256: format!("{version:064x}"),
            written_at: SystemTime::now(),
        };
        let mut line = serde_json::to_vec(&record).unwrap();
        line.push(b'\n');
        line
    }

    fn append(path: &Path, bytes: &[u8]) -> u64 {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(bytes).unwrap();
        file.metadata().unwrap().len()
    }

    fn versions(index: &HistoryIndex, path: &Path, committed: u64) -> Vec<u64> {
        index
            .with_records(path, committed, |history| {
                history.records.iter().map(|r| r.version).collect()
            })
            .unwrap()
    }

    #[test]
    fn a_run_and_a_version_are_looked_up_among_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let mut committed = 0;
        for version in 1..=50 {
            committed = append(&path, &line(version));
        }
        let index = HistoryIndex::default();
        let (of_run, of_version, absent) = index
            .with_records(&path, committed, |history| {
                let run = history.records[20].run.clone();
                let of_run: Vec<u64> = history.of_run(&run).iter().map(|r| r.version).collect();
                let of_version = history.of_version(33).map(|r| r.version);
                (of_run, of_version, history.of_version(51))
            })
            .unwrap();
        assert_eq!(of_run, [21]);
        assert_eq!(of_version, Some(33));
        assert!(absent.is_none());
    }

    #[test]
    fn a_second_look_reads_only_the_lines_written_since_and_the_last_one_it_knew() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let index = HistoryIndex::default();
        let mut committed = 0;
        for version in 1..=100 {
            committed = append(&path, &line(version));
        }
        assert_eq!(
            versions(&index, &path, committed),
            (1..=100).collect::<Vec<_>>()
        );
        assert_eq!(index.read.swap(0, Ordering::Relaxed), committed);
        // Another writer (another process) appends a line and commits it.
        let (last, next) = (line(100).len() as u64, line(101));
        let grown = append(&path, &next);
        assert_eq!(versions(&index, &path, grown).last(), Some(&101));
        let read = index.read.load(Ordering::Relaxed);
        assert!(
            read <= last + next.len() as u64 + 8,
            "read {read} bytes again"
        );
        // Uncommitted bytes past the committed length are not read.
        append(&path, b"{\"torn\":");
        assert_eq!(versions(&index, &path, grown).len(), 101);
    }

    #[test]
    fn a_history_written_anew_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let index = HistoryIndex::default();
        let committed = append(&path, &[line(1), line(2)].concat());
        assert_eq!(versions(&index, &path, committed), vec![1, 2]);
        // A reset removes it; the next turns write a new one, longer than the old.
        std::fs::remove_file(&path).unwrap();
        let anew = append(&path, &[line(7), line(8), line(9)].concat());
        assert_eq!(versions(&index, &path, anew), vec![7, 8, 9]);
        // A committed length below what was read (a reset, then one turn) starts over too.
        std::fs::remove_file(&path).unwrap();
        let shorter = append(&path, &line(10));
        assert_eq!(versions(&index, &path, shorter), vec![10]);
    }

    #[test]
    fn committed_history_that_ends_mid_line_or_short_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let index = HistoryIndex::default();
        let whole = append(&path, &line(1));
        let torn = append(&path, b"{\"version\":2");
        let error = index.with_records(&path, torn, |_| ()).unwrap_err();
        assert!(error.is(lobu_core::ErrorKind::Corrupt), "{error}");
        let error = index.with_records(&path, torn + 5, |_| ()).unwrap_err();
        assert!(error.is(lobu_core::ErrorKind::Corrupt), "{error}");
        assert_eq!(versions(&index, &path, whole), vec![1]);
    }
}
