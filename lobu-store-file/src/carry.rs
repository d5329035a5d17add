//! One sync per turn: the state record's line that commits an append carries the bytes the
//! append wrote to the transcript file and `history.jsonl`, and only the state record is
//! synced.
//!
//! A persist that extends the head writes its new bytes to both files, then appends the
//! line committing them to `state.json` with the same bytes in it, and syncs that one file:
//! when the call returns the line is durable, and with it the bytes. The two files hold them
//! in the page cache, which a process crash does not lose but a power loss may. So a state
//! that carries bytes names the boot it was written in (`unsynced`), and a conversation whose
//! state names another boot (the machine restarted since, perhaps on a power loss) is
//! repaired before its files are read: every carried byte is written back where it belongs,
//! both files are synced, and the record file is replaced by its current record alone.
//!
//! The invariant: both files are durable up to the lengths in the head of the record file's
//! first line, and every line after it that committed an append carries that append's bytes.
//! Whatever replaces the record file (its size limit, a repair) syncs both files first;
//! whatever changes them otherwise (a rewrite, a reset, an import over a head) replaces it.
//! Where the boot cannot be told (other systems than Linux) nothing is carried: both files
//! are synced before their commit, as in format 1.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use lobu_core::Result;
use serde::{Deserialize, Serialize};

use crate::atomic::{Durability, FileLock, read_optional};
use crate::error::{io_at, to_json};
use crate::record_file;
use crate::state::{Conversation, HISTORY, STATE, State};

/// What a commit appended, carried by its line of the state record.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Carried<'a> {
    /// Where `transcript` starts in the head's transcript file (the previous head's length).
    pub(crate) at: u64,
    pub(crate) transcript: Cow<'a, str>,
    /// Where `history` starts in `history.jsonl`.
    pub(crate) history_at: u64,
    pub(crate) history: Cow<'a, str>,
}

/// A state record line with what its commit carries.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    state: &'a State,
    carried: &'a Carried<'a>,
}

/// Only what a line carries, if anything.
#[derive(Deserialize)]
struct CarriedBy<'a> {
    #[serde(default, borrow)]
    carried: Option<Carried<'a>>,
}

/// This machine's boot, read once per store: Linux names each boot with a random id.
pub(crate) fn boot_id() -> Option<Arc<str>> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| Arc::from(id))
}

impl Conversation<'_> {
    /// `body` as text if a commit appending it may leave it unsynced for its line to carry:
    /// the boot can be told, and the bytes are text (a line is JSON).
    pub(crate) fn carriable<'b>(&self, body: &'b [u8]) -> Option<&'b str> {
        self.inner.boot.as_ref()?;
        std::str::from_utf8(body).ok()
    }

    /// Commit `state` with one line carrying `carried`, synced (1 sync; a replace for the
    /// file's size syncs both files, the new record file and the directory instead).
    pub(crate) fn commit_carrying(&self, state: &mut State, carried: &Carried<'_>) -> Result<()> {
        state.unsynced = self.inner.boot.as_deref().map(str::to_owned);
        let json = to_json(&self.path(STATE), &Line { state, carried })?;
        let disk = self.inner.disk;
        if disk.append_record(&self.dir, STATE, &json, Durability::Durable)? {
            return Ok(());
        }
        self.replace(state)
    }

    /// Replace the record file by one holding `state` alone, syncing first what its lines
    /// carried. Always durably, directory included: later lines are appended to the new file
    /// and synced, which makes them last only if its name does.
    pub(crate) fn replace(&self, state: &mut State) -> Result<()> {
        if state.unsynced.is_some() {
            self.sync_carried(state)?;
            state.unsynced = None;
        }
        let json = to_json(&self.path(STATE), state)?;
        let bytes = record_file::file_of(&json);
        let disk = self.inner.disk;
        Ok(disk.write_atomic(&self.dir, STATE, &bytes)?)
    }

    /// Sync the history and `state`'s transcript file (and the directory, where a first
    /// turn created them). A rewrite's state names a new file, already synced: the file its
    /// lines carried bytes of is removed after it.
    fn sync_carried(&self, state: &State) -> Result<()> {
        let disk = self.inner.disk;
        let transcript = state.head.as_ref().map(|h| self.transcript_path(h));
        for path in transcript.into_iter().chain([self.path(HISTORY)]) {
            match File::open(&path) {
                Ok(file) => disk.sync_data(&file, &path)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at("open", &path)(e).into()),
            }
        }
        Ok(disk.sync_dir(&self.dir)?)
    }

    /// Whether `state` carries bytes written in another boot than this one.
    pub(crate) fn needs_repair(&self, state: &State) -> bool {
        let here = self.inner.boot.as_deref();
        state
            .unsynced
            .as_deref()
            .is_some_and(|boot| here != Some(boot))
    }

    /// Write back everything the record file's lines carry, sync both files, and replace the
    /// record file by `state` alone. Under the conversation's exclusive lock; what lies past
    /// the head afterwards is uncommitted, cut by [`Conversation::recover`].
    pub(crate) fn repair(&self, state: &mut State) -> Result<()> {
        tracing::info!(conversation = %self.key,
            "last written before a restart: writing back the bytes its commits carry");
        let path = self.path(STATE);
        let bytes = read_optional(&path)?.unwrap_or_default();
        for json in record_file::records(&bytes) {
            let Ok(CarriedBy {
                carried: Some(carried),
            }) = serde_json::from_slice(json)
            else {
                continue;
            };
            // Every line of the file carries bytes of the head's file: whatever starts
            // another file (a rewrite, a reset) replaces the record file.
            if let Some(head) = &state.head {
                write_at(&self.transcript_path(head), carried.at, &carried.transcript)?;
            }
            write_at(&self.path(HISTORY), carried.history_at, &carried.history)?;
        }
        self.replace(state)
    }

    /// The state under a shared lock, repaired first (under the exclusive lock) if it carries
    /// bytes of another boot; `None` if there is no state.
    pub(crate) fn load_intact(&self) -> Result<Option<(FileLock, State)>> {
        let shared = self.lock_shared()?;
        let Some(state) = self.load()? else {
            return Ok(None);
        };
        if !self.needs_repair(&state) {
            return Ok(Some((shared, state)));
        }
        drop(shared);
        let exclusive = self.lock()?;
        let Some(mut state) = self.load()? else {
            return Ok(None);
        };
        if self.needs_repair(&state) {
            self.repair(&mut state)?;
        }
        Ok(Some((exclusive, state)))
    }
}

/// Write `text` at `at` of `path` (created if missing), leaving the rest as it is.
fn write_at(path: &Path, at: u64, text: &str) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_at("open for repair", path))?;
    file.seek(SeekFrom::Start(at))
        .map_err(io_at("seek in", path))?;
    file.write_all(text.as_bytes())
        .map_err(io_at("write back to", path))?;
    Ok(())
}
