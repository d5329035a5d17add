//! [`MemoryBackend`]: all three traits in memory, the reference implementation.
//!
//! It follows every `# Contract` of [`SessionStore`](crate::SessionStore),
//! [`ConversationLocks`](crate::ConversationLocks) and [`RunQueue`](crate::RunQueue) exactly
//! and passes the whole conformance suite, so it serves both as the executable reading of the
//! contract and as a fast test double for code built on the traits. Nothing survives the
//! process: use a durable store for anything real.
//!
//! Notes on how it keeps the contract:
//!
//! * Versions and fences (one sequence for leases and run claims) come from counters that only grow, so they are never
//!   reused for a conversation, not even after a clear or a prune.
//! * A completed transcript that extends the head shares the head's buffer: older snapshots
//!   of the chain become slices of the newest one, so a long conversation costs memory in
//!   proportion to its largest transcript, not to the sum of its turns.
//! * Everything sits behind one [`std::sync::Mutex`], never held across an `.await`.
//!   [`RunQueue::wait_for_work`](crate::RunQueue::wait_for_work) is woken by a
//!   [`tokio::sync::Notify`] on submit, release and fail, and by the clock when a retry delay
//!   or a claim lease runs out.
//!
//! ```
//! use lobu_core::{Backend, memory::MemoryBackend};
//!
//! let backend: Backend = MemoryBackend::new().with_max_transcript_bytes(1 << 20).into();
//! assert_eq!(backend.sessions.max_transcript_bytes(), 1 << 20);
//! ```

mod events;
mod locks;
mod queue;
mod run;
mod sessions;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::backend::Backend;
use crate::error::{Error, ErrorKind, Result};
use crate::session::DEFAULT_MAX_TRANSCRIPT_BYTES;
use crate::signals::RunSignals;

use self::locks::LeaseTable;
use self::queue::QueueTable;
use self::sessions::SessionTable;

/// All three lobu traits, in memory. Cheap to create; clone the [`Backend`] (or wrap this in
/// an [`Arc`]) to share it between tasks.
pub struct MemoryBackend {
    state: Mutex<State>,
    work: Notify,
    /// Wakes followers of runs whose status changed.
    runs: RunSignals,
    max_transcript_bytes: usize,
}

/// Sessions and leases share one lock so that the fence check and the write of `persist`
/// are one atomic step, as they are in a durable store's transaction.
#[derive(Default)]
struct State {
    sessions: SessionTable,
    leases: LeaseTable,
    queue: QueueTable,
}

impl MemoryBackend {
    /// An empty backend with the default size limit,
    /// [`DEFAULT_MAX_TRANSCRIPT_BYTES`].
    pub fn new() -> Self {
        MemoryBackend {
            state: Mutex::new(State::default()),
            work: Notify::new(),
            runs: RunSignals::new(),
            max_transcript_bytes: DEFAULT_MAX_TRANSCRIPT_BYTES,
        }
    }

    /// The same backend with another transcript size limit (in bytes).
    pub fn with_max_transcript_bytes(mut self, max: usize) -> Self {
        self.max_transcript_bytes = max;
        self
    }

    /// Bundle this backend as the three trait objects a runtime takes.
    pub fn into_backend(self) -> Backend {
        Backend::from_shared(Arc::new(self))
    }

    /// `TooLarge` if a transcript of `size` bytes is over the limit.
    fn check_size(&self, key: &crate::ConversationKey, size: usize) -> Result<()> {
        crate::persist_plan::check_size(key, size, self.max_transcript_bytes)
    }

    fn state(&self) -> Result<MutexGuard<'_, State>> {
        // A panic while the lock was held may have left the tables half-updated: refuse to
        // go on rather than serve state that may break the contract.
        self.state.lock().map_err(|_| {
            Error::new(
                ErrorKind::Other,
                "memory backend is unusable: an earlier operation panicked while holding its lock",
            )
        })
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::new()
    }
}

impl From<MemoryBackend> for Backend {
    fn from(backend: MemoryBackend) -> Self {
        backend.into_backend()
    }
}

impl fmt::Debug for MemoryBackend {
    // Counts only: printing transcripts or payloads would flood logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("MemoryBackend");
        out.field("max_transcript_bytes", &self.max_transcript_bytes);
        match self.state.lock() {
            Ok(state) => out
                .field("conversations", &state.sessions.conversation_count())
                .field("leases", &state.leases.len())
                .field("runs", &state.queue.len()),
            Err(_) => out.field("state", &"poisoned"),
        };
        out.finish()
    }
}
