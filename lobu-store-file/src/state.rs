//! One conversation's directory and its state record, `state.json`: the commit record of the
//! transcript (the head) and the counters that survive `clear` (versions, fences, the lease).
//!
//! ```text
//! <root>/orgs/<org>/<agent>/<conversation>/
//!   state.json      head (version, run, committed bytes, SHA-256, turns, title), counters, lease
//!   session.jsonl   the committed transcript: exactly its first `head.bytes` bytes
//!   history.jsonl   one record per completed snapshot (its first `head.history_bytes` bytes)
//!   forensic/       non-completed snapshots: <version>.<status>.jsonl and .json, never hydrated
//!   lock            the OS lock file taken for each read-modify-write
//! ```

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

/// A whole transcript staged by a rewrite: `session.v<version>.jsonl`.
pub(crate) fn staged_name(version: u64) -> String {
    format!("session.v{version}.jsonl")
}

pub(crate) fn is_staged_session(name: &str) -> bool {
    name.strip_prefix("session.v")
        .and_then(|rest| rest.strip_suffix(".jsonl"))
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
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
    /// `session.jsonl` yet; whichever of the two exists holds it.
    pub(crate) staged: bool,
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
        let staged = self.path(&staged_name(head.version));
        if head.staged && staged.is_file() {
            staged
        } else {
            self.path(SESSION)
        }
    }

    /// Undo what a crashed writer left behind, under the exclusive lock, before writing:
    /// write back what a restart may have lost (see [`crate::carry`]), finish a committed rewrite (rename its staged file into place), remove staging files
    /// and uncommitted staged transcripts, and cut uncommitted tails off the transcript and
    /// the history.
    pub(crate) fn recover(&self, state: &mut State) -> Result<()> {
        if self.needs_repair(state) {
            self.repair(state)?;
        }
        let disk = self.inner.disk;
        if let Some(head) = state.head.as_ref().filter(|h| h.staged) {
            let staged = self.path(&staged_name(head.version));
            if staged.is_file() {
                disk.rename(&self.dir, &staged, &self.path(SESSION))?;
            }
        }
        for (name, path) in list_names(&self.dir)? {
            if is_staging(&name) || is_staged_session(&name) {
                remove_file(&path)?;
            }
        }
        let (bytes, history) = state
            .head
            .as_ref()
            .map_or((0, 0), |h| (h.bytes, h.history_bytes));
        truncate_to(&self.path(SESSION), bytes)?;
        truncate_to(&self.path(HISTORY), history)?;
        Ok(())
    }
}
