//! [`Backend`]: the three traits a runtime needs, bundled.

use std::sync::Arc;

use crate::lock::ConversationLocks;
use crate::queue::RunQueue;
use crate::session::SessionStore;

/// The three halves of a backend, as trait objects. Most backends implement all three on one
/// type: build the bundle with [`Backend::from_shared`].
#[derive(Debug, Clone)]
pub struct Backend {
    /// Where transcripts live.
    pub sessions: Arc<dyn SessionStore>,
    /// Conversation leases (their fences are checked by `sessions`, so both must be of one backend).
    pub locks: Arc<dyn ConversationLocks>,
    /// The run queue.
    pub queue: Arc<dyn RunQueue>,
}

impl Backend {
    /// One value that implements all three traits.
    pub fn from_shared<T>(backend: Arc<T>) -> Self
    where
        T: SessionStore + ConversationLocks + RunQueue,
    {
        Backend {
            sessions: backend.clone(),
            locks: backend.clone(),
            queue: backend,
        }
    }
}
