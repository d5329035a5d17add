//! The transcript cache: the last head this process read or wrote, per conversation.
//!
//! An entry is only ever used after [`SessionStore::head`](lobu_core::SessionStore::head)
//! returned exactly its version. Versions are never reused, not even after a clear, so a
//! cached copy can never bring back a transcript that a reset removed, here or on another
//! replica (lobu's G6).
//!
//! Beside the bytes it keeps their parse, so a turn does not parse the whole history again:
//! a turn takes the parse out, appends its own entries and puts it back with the new head
//! (the cost of a turn follows the turn, not the conversation's length).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lobu_core::transcript::Transcript;
use lobu_core::{ConversationKey, RunId, Snapshot, Version};
use lru::LruCache;

#[derive(Debug)]
pub(crate) struct TranscriptCache {
    state: Mutex<CacheState>,
    budget: usize,
}

/// Entries in recency order (the `lru` crate: eviction takes the oldest in O(1)), bounded
/// by their bytes rather than their number.
#[derive(Debug)]
struct CacheState {
    entries: LruCache<ConversationKey, Cached>,
    bytes: usize,
}

#[derive(Debug)]
struct Cached {
    snapshot: Snapshot,
    /// `parse(snapshot.transcript)`, unless a turn has taken it out.
    parsed: Option<Arc<Transcript>>,
}

/// A cached head: its snapshot and, when the cache had it, its parse.
#[derive(Debug)]
pub(crate) struct CachedHead {
    pub(crate) snapshot: Snapshot,
    pub(crate) parsed: Option<Arc<Transcript>>,
}

/// What [`TranscriptCache::get`] does with the cached parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parse {
    /// Share it (a reader).
    Share,
    /// Take it out (a turn, which extends it without a copy and puts it back on commit).
    Take,
}

impl TranscriptCache {
    /// A cache holding at most `budget` bytes of transcripts (0: never caches).
    pub(crate) fn new(budget: usize) -> Self {
        TranscriptCache {
            state: Mutex::new(CacheState {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            budget,
        }
    }

    /// The cached head of `key` if it is exactly at `version`.
    pub(crate) fn get(
        &self,
        key: &ConversationKey,
        version: Version,
        parse: Parse,
    ) -> Option<CachedHead> {
        let mut state = self.lock();
        let cached = state.entries.get_mut(key)?;
        if cached.snapshot.version != version {
            return None;
        }
        let parsed = match parse {
            Parse::Share => cached.parsed.clone(),
            Parse::Take => cached.parsed.take(),
        };
        Some(CachedHead {
            snapshot: cached.snapshot.clone(),
            parsed,
        })
    }

    /// Remember `key` at `version` (with its parse, if known); evicts the least recently
    /// used entries over the budget.
    pub(crate) fn put(
        &self,
        key: &ConversationKey,
        version: Version,
        run: RunId,
        bytes: Bytes,
        parsed: Option<Arc<Transcript>>,
    ) {
        if bytes.len() > self.budget {
            self.remove(key);
            return;
        }
        let mut state = self.lock();
        let size = bytes.len();
        let snapshot = Snapshot {
            version,
            run,
            transcript: bytes,
        };
        if let Some(old) = state.entries.put(key.clone(), Cached { snapshot, parsed }) {
            state.bytes -= old.snapshot.transcript.len();
        }
        state.bytes += size;
        while state.bytes > self.budget {
            let Some((_, gone)) = state.entries.pop_lru() else {
                break;
            };
            state.bytes -= gone.snapshot.transcript.len();
        }
    }

    /// Forget `key` (after a reset, a failed write, or when the store has no head).
    pub(crate) fn remove(&self, key: &ConversationKey) {
        let mut state = self.lock();
        if let Some(gone) = state.entries.pop(key) {
            state.bytes -= gone.snapshot.transcript.len();
        }
    }

    /// Forget every conversation `covered` says yes to (an erasure).
    pub(crate) fn remove_where(&self, covered: impl Fn(&ConversationKey) -> bool) {
        let mut state = self.lock();
        let gone: Vec<ConversationKey> = state
            .entries
            .iter()
            .filter(|(key, _)| covered(key))
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            if let Some(cached) = state.entries.pop(&key) {
                state.bytes -= cached.snapshot.transcript.len();
            }
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
        cache.put(
            &key("a"),
            Version(3),
            RunId::generate(),
            Bytes::from("x\n"),
            None,
        );
        assert!(cache.get(&key("a"), Version(3), Parse::Share).is_some());
        assert!(cache.get(&key("a"), Version(4), Parse::Share).is_none());
        assert!(cache.get(&key("a"), Version(2), Parse::Share).is_none());
        assert!(cache.get(&key("b"), Version(3), Parse::Share).is_none());
        cache.remove(&key("a"));
        assert!(cache.get(&key("a"), Version(3), Parse::Share).is_none());
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
            None,
        );
        cache.put(
            &key("b"),
            Version(1),
            RunId::generate(),
            Bytes::from("bbbb"),
            None,
        );
        assert!(cache.get(&key("a"), Version(1), Parse::Share).is_some());
        cache.put(
            &key("c"),
            Version(1),
            RunId::generate(),
            Bytes::from("cccc"),
            None,
        );
        assert!(
            cache.get(&key("b"), Version(1), Parse::Share).is_none(),
            "b was least recent"
        );
        assert!(cache.get(&key("a"), Version(1), Parse::Share).is_some());
        assert!(cache.get(&key("c"), Version(1), Parse::Share).is_some());
        assert_eq!(cache.bytes(), 8);
    }

    #[test]
    fn a_zero_budget_caches_nothing() {
        let cache = TranscriptCache::new(0);
        cache.put(
            &key("a"),
            Version(1),
            RunId::generate(),
            Bytes::from("a"),
            None,
        );
        assert!(cache.get(&key("a"), Version(1), Parse::Share).is_none());
    }

    #[test]
    fn a_parse_taken_by_a_turn_is_not_shared_until_a_commit_puts_one_back() {
        let cache = TranscriptCache::new(1024);
        let parsed = Arc::new(lobu_core::transcript::parse(b"{\"type\":\"x\"}\n"));
        let bytes = Bytes::from("{\"type\":\"x\"}\n");
        cache.put(
            &key("a"),
            Version(1),
            RunId::generate(),
            bytes.clone(),
            Some(parsed),
        );
        let shared = cache.get(&key("a"), Version(1), Parse::Share).unwrap();
        assert!(shared.parsed.is_some());
        let taken = cache.get(&key("a"), Version(1), Parse::Take).unwrap();
        assert!(taken.parsed.is_some());
        let after = cache.get(&key("a"), Version(1), Parse::Share).unwrap();
        assert!(after.parsed.is_none(), "the turn owns the parse now");
        assert_eq!(after.snapshot.transcript, bytes, "the bytes stay cached");
        cache.put(
            &key("a"),
            Version(2),
            RunId::generate(),
            bytes,
            taken.parsed,
        );
        assert!(
            cache
                .get(&key("a"), Version(2), Parse::Share)
                .unwrap()
                .parsed
                .is_some()
        );
    }
}
