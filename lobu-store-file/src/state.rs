//! One conversation's directory and its state record, `state.json`: the commit record of the
//! transcript (the head) and the counters that survive `clear` (versions, fences, the lease).
//!
//! ```text
//! <root>/orgs/<org>/<agent>/<conversation>/
//!   state.json      head (version, run, committed bytes, SHA-256, turns, title), counters, lease
//!   session.<version>-<stamp>.jsonl
//!                   the committed transcript: exactly its first `head.bytes` bytes
//!   history.jsonl   one record per completed snapshot (its first `head.history_bytes` bytes)
//!   forensic/       non-completed snapshots: <version>.<status>.jsonl and .json, never hydrated
//!   lock            the OS lock file taken for each read-modify-write
//! ```
//!
//! The head names its transcript file. Bytes a head commits never change in place: a
//! persist appends past them, and a rewrite or a reset's next turn starts a file of a new
//! name (its first version and a time stamp, so not even a conversation erased and made
//! again reuses one), switched to by the commit and the old file removed after. So a reader
//! needs no lock: it reads the state record, opens the file it names and reads the
//! committed length; a file gone meanwhile was replaced, and the state is read again.
//! Format 1 kept the transcript in `session.jsonl` and renamed rewrites over it; such a head
//! is read under the shared lock, and its next writer links the file under a name of its own.

use std::path::PathBuf;
use std::time::SystemTime;

use lobu_core::{ConversationKey, Result, RunId};
use serde::{Deserialize, Serialize};

use crate::atomic::{Durability, FileLock, is_staging, list_names, remove_file, truncate_to};
use crate::error::{FileStoreError, to_json, undecodable};
use crate::record_file;
use crate::store::Inner;

pub(crate) const STATE: &str = "state.json";
pub(crate) const SESSION: &str = "session.jsonl";
pub(crate) const HISTORY: &str = "history.jsonl";
pub(crate) const FORENSIC: &str = "forensic";
const LOCK: &str = "lock";

/// A whole transcript staged by a rewrite of format 1: `session.v<version>.jsonl`.
pub(crate) fn staged_name(version: u64) -> String {
    format!("session.v{version}.jsonl")
}

/// The name of a transcript file started by `version`: `session.<version>-<stamp>.jsonl`,
/// the stamp the time in nanoseconds (hex), so that a reader holding an old state never
/// finds another transcript under the name it read, even after an erasure.
pub(crate) fn transcript_name(version: u64) -> String {
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("session.{version}-{stamp:x}.jsonl")
}

/// Whether `name` is a transcript file of any format (`session.jsonl`, a staged rewrite of
/// format 1, a named transcript).
pub(crate) fn is_transcript(name: &str) -> bool {
    name.starts_with("session.") && name.ends_with(".jsonl")
}

/// `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) format: u32,
    /// The conversation, for people reading the file and as a check on the path mapping.
    pub(crate) key: ConversationKey,
    /// The newest version handed out; never reused, not even after `clear`.
    pub(crate) last_version: u64,
    /// The newest fence handed out (0: none yet).
    pub(crate) last_fence: u64,
    pub(crate) lease: Option<LeaseRecord>,
    /// Forensic records at or below this version were cleared (their files may linger).
    pub(crate) cleared_through: u64,
    pub(crate) head: Option<Head>,
    /// The boot in which commits last left transcript and history bytes unsynced, carried by
    /// this file's lines (see [`crate::carry`]); `None`: both files are durable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) unsynced: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LeaseRecord {
    pub(crate) fence: u64,
    #[serde(with = "crate::clock")]
    pub(crate) expires_at: SystemTime,
}

/// The committed head: what hydrate returns, and how much of each file is committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Head {
    pub(crate) version: u64,
    pub(crate) run: RunId,
    /// Committed bytes of the transcript.
    pub(crate) bytes: u64,
    pub(crate) sha256: String,
    /// The SHA-256 state after the head's bytes, hex (`TranscriptHash::state`): an append
    /// over the whole head digests only its new bytes. Absent in heads written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sha256_state: Option<String>,
    /// Completed snapshots since the last clear.
    pub(crate) turns: u64,
    pub(crate) title: Option<String>,
    #[serde(with = "crate::clock")]
    pub(crate) written_at: SystemTime,
    /// Committed bytes of `history.jsonl`.
    pub(crate) history_bytes: u64,
    /// The transcript was written whole to [`staged_name`] and may not be renamed to
    /// `session.jsonl` yet; whichever of the two exists holds it (format 1 only).
    pub(crate) staged: bool,
    /// The transcript file's name ([`transcript_name`]); `None` in a head of format 1, whose
    /// transcript is `session.jsonl` (or its staged rewrite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) file: Option<String>,
}

impl State {
    pub(crate) fn fresh(key: &ConversationKey) -> Self {
        State {
            format: crate::store::FORMAT,
            key: key.clone(),
            last_version: 0,
            last_fence: 0,
            lease: None,
            cleared_through: 0,
            head: None,
            unsynced: None,
        }
    }
}

/// One conversation's directory.
#[derive(Debug)]
pub(crate) struct Conversation<'a> {
    pub(crate) inner: &'a Inner,
    pub(crate) key: &'a ConversationKey,
    pub(crate) dir: PathBuf,
}

impl<'a> Conversation<'a> {
    pub(crate) fn new(inner: &'a Inner, key: &'a ConversationKey) -> Self {
        let dir = inner.layout.conversation_dir(key);
        Conversation { inner, key, dir }
    }

    /// A conversation found on disk (listing, prune) at `dir`.
    pub(crate) fn at(inner: &'a Inner, key: &'a ConversationKey, dir: PathBuf) -> Self {
        Conversation { inner, key, dir }
    }

    /// Whether anything was ever stored for it (a lease counts).
    pub(crate) fn exists(&self) -> bool {
        self.dir.join(STATE).is_file()
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Create the directory (for the first lease).
    pub(crate) fn create(&self) -> Result<()> {
        Ok(self.inner.disk.create_dirs(&self.dir)?)
    }

    pub(crate) fn lock(&self) -> Result<FileLock> {
        Ok(FileLock::exclusive(&self.path(LOCK))?)
    }

    /// The exclusive lock if nobody holds it now (a claim, which holds the queue lock and so
    /// must never wait for a conversation's); `None` if someone does.
    pub(crate) fn try_lock(&self) -> Result<Option<FileLock>> {
        Ok(FileLock::try_exclusive(&self.path(LOCK))?)
    }

    /// The exclusive lock, creating the directory first if need be (its first use).
    pub(crate) fn create_and_lock(&self) -> Result<FileLock> {
        self.create()?;
        self.lock()
    }

    /// The exclusive lock when the directory exists; `None` (no lock) when it does not:
    /// nothing of the conversation is stored, so nothing of it can change.
    pub(crate) fn lock_if_present(&self) -> Result<Option<FileLock>> {
        if self.dir.is_dir() {
            self.lock().map(Some)
        } else {
            Ok(None)
        }
    }

    pub(crate) fn lock_shared(&self) -> Result<FileLock> {
        Ok(FileLock::shared(&self.path(LOCK))?)
    }

    /// The state record, or `None` if there is none.
    pub(crate) fn load(&self) -> Result<Option<State>> {
        let path = self.path(STATE);
        let Some(json) = record_file::read_optional(&path)? else {
            return Ok(None);
        };
        let state: State = serde_json::from_slice(&json).map_err(undecodable(&path))?;
        if state.key != *self.key {
            let detail = format!("it belongs to {}, not {}", state.key, self.key);
            return Err(FileStoreError::corrupt(&path, detail).into());
        }
        Ok(Some(state))
    }

    /// Commit `state` (the single commit point of every change to the conversation): one
    /// line appended to the record file and synced (see [`crate::record_file`]).
    pub(crate) fn save(&self, state: &State) -> Result<()> {
        self.save_with(state, Durability::Durable)
    }

    /// [`save`](Self::save), durably unless `durability` says not (a claim's ownership, a
    /// heartbeat: see [`Durability::Recoverable`]).
    pub(crate) fn save_with(&self, state: &State, durability: Durability) -> Result<()> {
        let path = self.path(STATE);
        let bytes = to_json(&path, state)?;
        if self
            .inner
            .disk
            .append_record(&self.dir, STATE, &bytes, durability)?
        {
            return Ok(());
        }
        // Missing, of format 1, or full: replaced (durably, whatever `durability` says: see
        // `replace`), after syncing what its lines carried.
        self.replace(&mut state.clone())
    }

    /// The file holding the head's transcript.
    pub(crate) fn transcript_path(&self, head: &Head) -> PathBuf {
        if let Some(file) = &head.file {
            return self.path(file);
        }
        let staged = self.path(&staged_name(head.version));
        if head.staged && staged.is_file() {
            staged
        } else {
            self.path(SESSION)
        }
    }

    /// Undo what a crashed writer left behind, under the exclusive lock, before writing:
    /// write back what a restart may have lost (see [`crate::carry`]), give a head of format
    /// 1 a transcript file of its own ([`Conversation::name_transcript`]), remove staging
    /// files and transcript files no head names, and cut uncommitted tails off the
    /// transcript and the history. `state` may come back changed (a head's new file name):
    /// the caller's commit saves it.
    pub(crate) fn recover(&self, state: &mut State) -> Result<()> {
        if self.needs_repair(state) {
            self.repair(state)?;
        }
        // The file a committed state may still name, kept until a commit names another.
        let named = self.name_transcript(state)?;
        let head_file = state.head.as_ref().and_then(|h| h.file.clone());
        for (name, path) in list_names(&self.dir)? {
            let kept = Some(&name) == head_file.as_ref() || Some(&name) == named.as_ref();
            if is_staging(&name) || (is_transcript(&name) && !kept) {
                remove_file(&path)?;
            }
        }
        let (bytes, history) = state
            .head
            .as_ref()
            .map_or((0, 0), |h| (h.bytes, h.history_bytes));
        if let Some(head) = &state.head {
            truncate_to(&self.transcript_path(head), bytes)?;
        }
        truncate_to(&self.path(HISTORY), history)?;
        Ok(())
    }

    /// Give a head of format 1 its own transcript file: finish its committed rewrite (rename
    /// the staged file into place), then link `session.jsonl` under a [`transcript_name`]
    /// and name that in `state`. Returns `session.jsonl` while the stored state may still
    /// name it (until the caller commits), `None` otherwise.
    fn name_transcript(&self, state: &mut State) -> Result<Option<String>> {
        let Some(head) = state.head.as_mut().filter(|h| h.file.is_none()) else {
            return Ok(None);
        };
        let disk = self.inner.disk;
        let session = self.path(SESSION);
        let staged = self.path(&staged_name(head.version));
        if head.staged && staged.is_file() {
            disk.rename(&self.dir, &staged, &session)?;
        }
        let name = transcript_name(head.version);
        let path = self.path(&name);
        match disk.link(&self.dir, &session, &path) {
            // An empty head may never have made the file.
            Err(e) if head.bytes == 0 && e.is_not_found() => {
                let made = disk.append_at(&path, 0, &[])?;
                disk.sync_appended(&self.dir, &[made])?;
            }
            linked => linked?,
        }
        head.file = Some(name);
        head.staged = false;
        Ok(Some(SESSION.to_owned()))
    }
}
