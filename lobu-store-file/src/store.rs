//! [`FileStore`]: one value implementing all three lobu-core traits under one root directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lobu_core::{Backend, ConversationKey, DEFAULT_MAX_TRANSCRIPT_BYTES, Result, RunSignals};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::atomic::{Disk, read_optional};
use crate::error::{FileStoreError, io_at, to_json, undecodable};
use crate::events::Tails;
use crate::history_index::HistoryIndex;
use crate::layout::Layout;
use crate::watch::Watch;

/// The on-disk format this version writes. Format 2 changes state and run records by
/// appending checksummed lines (see the crate docs); a root of format 1 opens as it is (its
/// records read as they are and become record files when next changed) and its marker is
/// moved to 2, so a version that reads only format 1 refuses it instead of misreading it.
pub const FORMAT: u32 = 2;
/// The earlier format this version opens.
const FORMAT_1: u32 = 1;
/// The file at the root that names the format.
const FORMAT_FILE: &str = "lobu-store.json";
/// How often [`wait_for_work`](lobu_core::RunQueue::wait_for_work) looks at the queue by
/// default: other processes cannot wake this one, so it polls.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// The largest transcript size limit [`FileStore::with_max_transcript_bytes`] accepts (as in
/// lobu-store-pg): every persist and hydrate holds a whole transcript in memory.
pub const MAX_TRANSCRIPT_BYTES_LIMIT: usize = 256 * 1024 * 1024;

/// See [`Inner::orphan_marker_age`]: far longer than a submit takes between its marker and
/// its record, short enough that a crashed submit holds its conversation's later runs back
/// only briefly.
const ORPHAN_MARKER_AGE: Duration = Duration::from_secs(30);

/// lobu's file backend: [`SessionStore`](lobu_core::SessionStore),
/// [`ConversationLocks`](lobu_core::ConversationLocks) and [`RunQueue`](lobu_core::RunQueue)
/// in plain files under one root directory, safe to share between any number of tasks and
/// processes on one machine. Cheap to clone (clones share everything).
///
/// Open it with [`FileStore::open`], adjust it with the `with_*` methods, and hand it to the
/// runtime with [`FileStore::into_backend`].
#[derive(Debug, Clone)]
pub struct FileStore {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
pub(crate) struct Inner {
    pub(crate) layout: Layout,
    pub(crate) disk: Disk,
    pub(crate) max_transcript_bytes: usize,
    pub(crate) poll_interval: Duration,
    /// Wakes this process's `wait_for_work` callers on submit, release and fail.
    pub(crate) work: Arc<Notify>,
    /// Wakes this process's followers of runs: signalled by this process's changes at once,
    /// and by other processes' through [`watch`](crate::watch).
    pub(crate) runs: Arc<RunSignals>,
    /// Watches the run records and event logs for other processes' changes, once a follower
    /// first waits.
    pub(crate) watch: Arc<Mutex<Watch>>,
    /// What this process last saw of runs' event logs.
    pub(crate) event_tails: Arc<Mutex<Tails>>,
    /// Lanes this process's last claims found owned by a lease, with when it lapses (ms):
    /// a hint that keeps `wait_for_work` from reporting their due runs as claimable now.
    pub(crate) owned_lanes: Arc<Mutex<HashMap<String, u64>>>,
    /// The history records this process has read, per conversation.
    pub(crate) history: Arc<HistoryIndex>,
    /// This machine's boot, if it can be told: commits leave bytes unsynced only then.
    pub(crate) boot: Option<Arc<str>>,
    /// How old a marker without a record must be before a claim takes it for a crashed
    /// submit's and removes it; a younger one may be a submit writing its record now.
    pub(crate) orphan_marker_age: Duration,
    /// The largest sequence number the markers carried when this process first drew one
    /// (see [`crate::queue`]'s `sequence`).
    pub(crate) sequence_floor: Arc<Mutex<Option<u64>>>,
    /// This process's copy of the markers (see [`crate::queue`]'s `index`).
    pub(crate) marker_index: Arc<Mutex<crate::queue::MarkerIndex>>,
    #[cfg(test)]
    pub(crate) crash_at: Option<Step>,
}

/// Points inside a multi-step write where tests make the store stop as if the process had
/// died there (the files stay exactly as they are at that point).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// A completed transcript's bytes are written (appended, or staged whole), uncommitted.
    TranscriptWritten,
    /// Its history record is appended too, still uncommitted.
    HistoryWritten,
    /// The state record is committed; a rewrite's old file is not yet removed.
    Committed,
    /// A non-completed snapshot's version is reserved; its files are not yet written.
    VersionReserved,
    /// `clear` committed; the old files are not yet removed.
    Cleared,
    /// A submit wrote its idempotency entry; its marker and record are not written yet.
    IdempotencyReserved,
    /// A queue change wrote one of its two files (marker or record), not the other.
    QueueHalfway,
    /// A commit that took steered runs wrote its run's completed record, not yet theirs.
    SteeredPending,
    /// An erasure removed the scope's idempotency entries and markers, not yet its runs.
    ErasureIndexed,
    /// An erasure removed the scope's runs, not yet its conversations.
    ErasureRunsGone,
}

#[derive(Serialize, Deserialize)]
struct FormatMarker {
    format: u32,
    store: String,
}

impl FileStore {
    /// Open (creating it if needed) the store rooted at `root`; [`root`](Self::root) is
    /// then its absolute path. A root written by an unknown format is `Corrupt`; a root that
    /// cannot be created is an I/O error.
    pub async fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root: PathBuf = root.as_ref().to_owned();
        let disk = Disk { fsync: true };
        let layout = tokio::task::spawn_blocking(move || prepare(&root, disk))
            .await
            .map_err(FileStoreError::Task)??;
        Ok(FileStore {
            inner: Arc::new(Inner {
                layout,
                disk,
                max_transcript_bytes: DEFAULT_MAX_TRANSCRIPT_BYTES,
                poll_interval: DEFAULT_POLL_INTERVAL,
                work: Arc::new(Notify::new()),
                runs: Arc::default(),
                watch: Arc::default(),
                event_tails: Arc::default(),
                owned_lanes: Arc::default(),
                history: Arc::default(),
                boot: crate::carry::boot_id(),
                orphan_marker_age: ORPHAN_MARKER_AGE,
                sequence_floor: Arc::default(),
                marker_index: Arc::default(),
                #[cfg(test)]
                crash_at: None,
            }),
        })
    }

    /// The same store with another transcript size limit, in bytes (default
    /// [`DEFAULT_MAX_TRANSCRIPT_BYTES`]). A limit of 0 or above [`MAX_TRANSCRIPT_BYTES_LIMIT`]
    /// is `InvalidInput`.
    pub fn with_max_transcript_bytes(mut self, max: usize) -> Result<Self> {
        if max == 0 || max > MAX_TRANSCRIPT_BYTES_LIMIT {
            return Err(lobu_core::Error::invalid(format!(
                "max_transcript_bytes must be between 1 and {MAX_TRANSCRIPT_BYTES_LIMIT}, got {max}"
            )));
        }
        Arc::make_mut(&mut self.inner).max_transcript_bytes = max;
        Ok(self)
    }

    /// The same store with syncing on (the default) or off. **Off gives up durability**: a
    /// power cut may lose or tear anything written recently. Only for tests and throwaway data.
    pub fn with_fsync(mut self, fsync: bool) -> Self {
        Arc::make_mut(&mut self.inner).disk = Disk { fsync };
        self
    }

    /// The same store polling the queue at most every `interval` in
    /// [`wait_for_work`](lobu_core::RunQueue::wait_for_work) (default
    /// [`DEFAULT_POLL_INTERVAL`]; raised to 1 ms if smaller).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        Arc::make_mut(&mut self.inner).poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        self.inner.layout.root()
    }

    /// The directory of one conversation's files (its transcript, `state.json`, …; see the
    /// crate docs for the layout). It may not exist yet.
    pub fn conversation_dir(&self, key: &ConversationKey) -> PathBuf {
        self.inner.layout.conversation_dir(key)
    }

    /// The file holding a conversation's committed transcript, byte for byte (its first
    /// `bytes` bytes, as its head says), read from its state record; `None` if it has no
    /// head. For tools and tests that inspect a data directory: the name changes when a
    /// rewrite or a reset's next turn starts a new file.
    ///
    /// # Errors
    /// `Corrupt` if the state record does not decode, `Io` if it cannot be read.
    pub fn transcript_path(&self, key: &ConversationKey) -> Result<Option<PathBuf>> {
        let conversation = crate::state::Conversation::new(&self.inner, key);
        let head = conversation.load()?.and_then(|state| state.head);
        Ok(head.map(|head| conversation.transcript_path(&head)))
    }

    /// Bundle this store as the three trait objects a runtime takes (one value behind all
    /// three, so the fences the locks issue are the ones persist checks).
    pub fn into_backend(self) -> Backend {
        Backend::from_shared(Arc::new(self))
    }

    /// Run `op` on the blocking pool: every file-system call goes through here.
    pub(crate) async fn blocking<T, F>(&self, op: F) -> Result<T>
    where
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || op(&inner))
            .await
            .map_err(FileStoreError::Task)?
    }

    /// The same store as a process started after a restart of the machine would open it.
    #[cfg(test)]
    pub(crate) fn rebooted(mut self) -> Self {
        let inner = Arc::make_mut(&mut self.inner);
        inner.boot = Some(Arc::from(uuid::Uuid::new_v4().to_string()));
        inner.history = Arc::default();
        self
    }

    /// The same store, taking markers without a record for crashed submits' at once (as a
    /// process opened long after the crash would).
    #[cfg(test)]
    pub(crate) fn orphan_markers_at_once(mut self) -> Self {
        Arc::make_mut(&mut self.inner).orphan_marker_age = Duration::ZERO;
        self
    }

    /// The same store, stopping every write at `step` as if the process died there.
    #[cfg(test)]
    pub(crate) fn crashing_at(mut self, step: Step) -> Self {
        Arc::make_mut(&mut self.inner).crash_at = Some(step);
        self
    }
}

impl From<FileStore> for Backend {
    fn from(store: FileStore) -> Self {
        store.into_backend()
    }
}

impl Inner {
    /// A point of a multi-step write; in tests, where the simulated crash happens.
    #[inline]
    pub(crate) fn reached(&self, step: Step) -> Result<()> {
        #[cfg(test)]
        if self.crash_at == Some(step) {
            return Err(lobu_core::Error::unavailable(format!(
                "simulated crash at {step:?}"
            )));
        }
        let _ = step;
        Ok(())
    }
}

/// Create the root and its top directories, and check or write the format marker.
/// The root is made absolute, so a later change of working directory cannot move the store.
fn prepare(root: &Path, disk: Disk) -> Result<Layout> {
    disk.create_dirs(root)?;
    let root = std::fs::canonicalize(root).map_err(io_at("resolve", root))?;
    let layout = Layout::new(root);
    disk.create_dirs(&layout.orgs())?;
    disk.create_dirs(&layout.queue())?;
    // Stores written before events existed lack it; logs would create it all the same.
    disk.create_dirs(&layout.events())?;
    let path = layout.root().join(FORMAT_FILE);
    match read_optional(&path)? {
        Some(bytes) => {
            let marker: FormatMarker =
                serde_json::from_slice(&bytes).map_err(undecodable(&path))?;
            match marker.format {
                FORMAT => {}
                FORMAT_1 => write_format(disk, &layout, &path)?,
                found => {
                    return Err(FileStoreError::UnknownFormat {
                        path,
                        found: found.to_string(),
                        expected: FORMAT,
                    }
                    .into());
                }
            }
        }
        None => write_format(disk, &layout, &path)?,
    }
    Ok(layout)
}

fn write_format(disk: Disk, layout: &Layout, path: &Path) -> Result<()> {
    let marker = FormatMarker {
        format: FORMAT,
        store: "lobu-store-file".to_owned(),
    };
    let bytes = to_json(path, &marker)?;
    Ok(disk.write_atomic(layout.root(), FORMAT_FILE, &bytes)?)
}
