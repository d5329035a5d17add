//! The transcript cache: the last head this process read or wrote, per conversation.
//!
//! An entry is only ever used after [`SessionStore::head`](lobu_core::SessionStore::head)
//! returned exactly its version. Versions are never reused, not even after a clear, so a
//! cached copy can never bring back a transcript that a reset removed, here or on another
//! replica (lobu's G6).

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use lobu_core::{ConversationKey, RunId, Snapshot, Version};

#[derive(Debug)]
pub(crate) struct TranscriptCache {
    state: Mutex<CacheState>,
    budget: usize,
}

#[derive(Debug, Default)]
struct CacheState {
    entries: HashMap<ConversationKey, Cached>,
    bytes: usize,
    clock: u64,
}

#[derive(Debug)]
struct Cached {
    snapshot: Snapshot,
    last_used: u64,
}

impl TranscriptCache {
    /// A cache holding at most `budget` bytes of transcripts (0: never caches).
    pub(crate) fn new(budget: usize) -> Self {
        TranscriptCache {
            state: Mutex::new(CacheState::default()),
            budget,
        }
    }

    /// The cached snapshot of `key` if it is exactly at `version`.
    pub(crate) fn get(&self, key: &ConversationKey, version: Version) -> Option<Snapshot> {
        let mut state = self.lock();
        state.clock += 1;
        let now = state.clock;
        let cached = state.entries.get_mut(key)?;
        if cached.snapshot.version != version {
            return None;
        }
        cached.last_used = now;
        Some(cached.snapshot.clone())
    }

    /// Remember `key` at `version`; evicts the least recently used entries over the budget.
    pub(crate) fn put(&self, key: &ConversationKey, version: Version, run: RunId, bytes: Bytes) {
        if bytes.len() > self.budget {
            self.remove(key);
            return;
        }
        let mut state = self.lock();
        state.clock += 1;
        let last_used = state.clock;
        let size = bytes.len();
        let snapshot = Snapshot {
            version,
            run,
            transcript: bytes,
        };
        if let Some(old) = state.entries.insert(
            key.clone(),
            Cached {
                snapshot,
                last_used,
            },
        ) {
            state.bytes -= old.snapshot.transcript.len();
        }
        state.bytes += size;
        while state.bytes > self.budget {
            let Some(oldest) = state
                .entries
                .iter()
                .min_by_key(|(_, c)| c.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(gone) = state.entries.remove(&oldest) {
                state.bytes -= gone.snapshot.transcript.len();
            }
        }
    }

    /// Forget `key` (after a reset, a failed write, or when the store has no head).
    pub(crate) fn remove(&self, key: &ConversationKey) {
        let mut state = self.lock();
        if let Some(gone) = state.entries.remove(key) {
            state.bytes -= gone.snapshot.transcript.len();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // Every update leaves the state consistent before it can panic, so poison is harmless.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: &str) -> ConversationKey {
        ConversationKey::parse("acme", "bot", c).unwrap()
    }

    #[test]
    fn a_copy_is_only_returned_at_its_exact_version() {
        let cache = TranscriptCache::new(1024);
        cache.put(&key("a"), Version(3), RunId::generate(), Bytes::from("x\n"));
        assert!(cache.get(&key("a"), Version(3)).is_some());
        assert!(cache.get(&key("a"), Version(4)).is_none());
        assert!(cache.get(&key("a"), Version(2)).is_none());
        assert!(cache.get(&key("b"), Version(3)).is_none());
        cache.remove(&key("a"));
        assert!(cache.get(&key("a"), Version(3)).is_none());
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn least_recently_used_entries_go_first_over_the_budget() {
        let cache = TranscriptCache::new(10);
        cache.put(
            &key("a"),
            Version(1),
            RunId::generate(),
            Bytes::from("aaaa"),
        );
        cache.put(
            &key("b"),
            Version(1),
            RunId::generate(),
            Bytes::from("bbbb"),
        );
        assert!(cache.get(&key("a"), Version(1)).is_some());
        cache.put(
            &key("c"),
            Version(1),
            RunId::generate(),
            Bytes::from("cccc"),
        );
        assert!(
            cache.get(&key("b"), Version(1)).is_none(),
            "b was least recent"
        );
        assert!(cache.get(&key("a"), Version(1)).is_some());
        assert!(cache.get(&key("c"), Version(1)).is_some());
        assert_eq!(cache.bytes(), 8);
    }

    #[test]
    fn a_zero_budget_caches_nothing() {
        let cache = TranscriptCache::new(0);
        cache.put(&key("a"), Version(1), RunId::generate(), Bytes::from("a"));
        assert!(cache.get(&key("a"), Version(1)).is_none());
    }
}
