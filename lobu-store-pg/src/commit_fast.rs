//! The common end of a turn in one statement (sql/commit_fast.sql): a turn that only
//! appended to the head it expected ([`Commit::append`] with the head's whole length). One
//! round trip and one commit instead of a transaction of four round trips, and work that
//! follows the turn: the new bytes are sent and hashed, resuming the head's SHA-256 from the
//! state its claim returned ([`HeadStates`]). Any other case (a first turn, a re-base, a
//! retry, a conflict, a stale claim, a state not at hand) finds no row, changes nothing, and
//! takes the general path, which decides and explains.
//!
//! [`Commit::append`]: lobu_core::Commit::append

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use lobu_core::transcript::hash::TranscriptHash;
use lobu_core::{Claim, Result, Version};
use sqlx::types::Json;

use crate::delta::SMALL_CHAIN_SHARE;
use crate::store::{PgStore, db};

/// The hash states of heads this store's claims returned, by version. A version's bytes
/// never change, so an entry is never stale; it saves the commit a read. Taken by the
/// commit; bounded (cleared when full) since a claim that never commits leaves its entry.
#[derive(Debug, Default)]
pub(crate) struct HeadStates(Mutex<HashMap<i64, Vec<u8>>>);

impl HeadStates {
    const MAX: usize = 4096;

    pub(crate) fn remember(&self, seq: i64, state: Vec<u8>) {
        let mut states = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if states.len() >= Self::MAX {
            states.clear();
        }
        states.insert(seq, state);
    }

    pub(crate) fn take(&self, seq: i64) -> Option<Vec<u8>> {
        let mut states = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        states.remove(&seq)
    }
}

impl PgStore {
    /// Commit `appended` as a delta after the head `expected`, which is `base_len` bytes
    /// long. `Some(seq)`: committed; `None`: nothing changed, take the general path.
    pub(crate) async fn commit_fast(
        &self,
        claim: &Claim,
        fence: i64,
        appended: &Bytes,
        expected: Version,
        base_len: usize,
        output: &Option<serde_json::Value>,
    ) -> Result<Option<i64>> {
        let Ok(expected) = i64::try_from(expected.0) else {
            return Ok(None);
        };
        if base_len == 0 || appended.is_empty() {
            return Ok(None); // nothing to chain to, or nothing appended
        }
        let Some(state_used) = self.inner.head_states.take(expected) else {
            return Ok(None);
        };
        let mut hasher = TranscriptHash::resume(&state_used)?;
        hasher.update(appended);
        let title = lobu_core::transcript::title(appended);
        let key = &claim.key;
        let len = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let max_deltas = i32::try_from(self.inner.config.max_chain_deltas).unwrap_or(i32::MAX);
        let row: Option<(i64, i64)> = sqlx::query_as(self.inner.queue.commit_fast.clone())
            .bind(key.org.as_str())
            .bind(claim.run.as_str())
            .bind(claim.worker.as_str())
            .bind(fence)
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .bind(expected)
            .bind(len(base_len))
            .bind(&state_used)
            .bind(&appended[..])
            .bind(len(base_len.saturating_add(appended.len())))
            .bind(hasher.digest().to_vec())
            .bind(max_deltas)
            .bind(title)
            .bind(output.as_ref().map(Json))
            .bind(self.channel())
            .bind(hasher.state())
            .bind(SMALL_CHAIN_SHARE)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db("complete"))?;
        if row.is_none() {
            // Still the head's state: a retry of this commit may use it.
            self.inner.head_states.remember(expected, state_used);
        }
        Ok(row.map(|(seq, _)| seq))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lobu_core::{Commit, ConversationKey, NewRun, RunQueue, RunStatus, SessionStore, WorkerId};
    use serde_json::json;
    use sqlx::PgPool;

    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    fn key() -> ConversationKey {
        ConversationKey::parse("acme", "bot", "fast").unwrap()
    }

    async fn claim(store: &PgStore) -> Claim {
        store
            .submit(NewRun::turn(key(), json!({"text": "hi"})))
            .await
            .unwrap();
        store
            .claim(&WorkerId::generate(), LONG)
            .await
            .unwrap()
            .expect("a claimable run")
    }

    /// A conversation whose head is `first` (committed by the general path), and a claim
    /// of its next run.
    async fn with_head(store: &PgStore, first: &'static [u8]) -> (Version, Claim) {
        let c = claim(store).await;
        let commit = Commit::transcript(Bytes::from_static(first), None);
        let v1 = store.complete(&c, commit).await.unwrap().unwrap();
        (v1, claim(store).await)
    }

    async fn fast(
        store: &PgStore,
        c: &Claim,
        bytes: &Bytes,
        v: Version,
        base: usize,
    ) -> Option<i64> {
        let fence = i64::try_from(c.fence.0).unwrap();
        store
            .commit_fast(c, fence, bytes, v, base, &None)
            .await
            .unwrap()
    }

    const FIRST: &[u8] = b"{\"type\":\"session\"}\n{\"n\":1}\n";
    const NEW: &[u8] = b"{\"n\":2}\n";

    fn whole(base: &[u8]) -> Bytes {
        Bytes::from([base, NEW].concat())
    }

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn a_turn_that_only_appended_commits_in_one_statement(pool: PgPool) {
        let store = PgStore::new(pool);
        let (v1, c) = with_head(&store, FIRST).await;
        let new = Bytes::from_static(NEW);
        let seq = fast(&store, &c, &new, v1, FIRST.len())
            .await
            .expect("the fast path");
        let head = store.hydrate(&key()).await.unwrap().unwrap();
        assert_eq!(head.transcript, whole(FIRST));
        assert_eq!(i64::try_from(head.version.0).unwrap(), seq);
        let record = store.status(&c.key.org, &c.run).await.unwrap().unwrap();
        assert_eq!(record.status, RunStatus::Completed);
        // The ownership ended: the conversation's next run is claimable at once, and its
        // claim brings the new head's hash state, so its turn takes the fast path too.
        let next = claim(&store).await;
        assert_eq!(next.head, Some(head.version));
        let third = fast(&store, &next, &new, head.version, head.transcript.len()).await;
        assert!(
            third.is_some(),
            "the state written by the fast path resumes"
        );
        // A retry of the landed commit takes the general path and answers the same version.
        let again = store
            .complete(&c, Commit::append(new, Some(v1), FIRST.len()))
            .await;
        assert_eq!(again.unwrap(), Some(head.version));
    }

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn anything_but_a_plain_append_changes_nothing_and_falls_back(pool: PgPool) {
        let store = PgStore::new(pool);
        let (v1, c) = with_head(&store, FIRST).await;
        let new = Bytes::from_static(NEW);
        // A wrong base length, a stale expected version, no new bytes.
        assert_eq!(fast(&store, &c, &new, v1, FIRST.len() - 1).await, None);
        assert_eq!(
            fast(&store, &c, &new, Version(v1.0 + 1), FIRST.len()).await,
            None
        );
        assert_eq!(fast(&store, &c, &Bytes::new(), v1, FIRST.len()).await, None);
        // A claim that is no longer the newest.
        let stale = Claim {
            fence: lobu_core::Fence(c.fence.0 - 1),
            ..c.clone()
        };
        assert_eq!(fast(&store, &stale, &new, v1, FIRST.len()).await, None);
        let head = store.hydrate(&key()).await.unwrap().unwrap();
        assert_eq!((head.version, &head.transcript[..]), (v1, FIRST));
        let record = store.status(&c.key.org, &c.run).await.unwrap().unwrap();
        assert_eq!(record.status, RunStatus::Running);
        // The general path commits what the append stands for: the base's bytes, then the
        // new ones.
        let base = FIRST.len() - 1;
        let v2 = store.complete(&c, Commit::append(new.clone(), Some(v1), base));
        let v2 = v2.await.unwrap().unwrap();
        let head = store.hydrate(&key()).await.unwrap().unwrap();
        assert_eq!((head.version, head.transcript), (v2, whole(&FIRST[..base])));
    }

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn an_append_without_the_state_at_hand_is_still_a_delta(pool: PgPool) {
        let store = PgStore::new(pool.clone());
        let (v1, c) = with_head(&store, FIRST).await;
        // As on a replica whose cache lost the claim's state.
        store.inner.head_states.0.lock().unwrap().clear();
        let new = Bytes::from_static(NEW);
        assert_eq!(fast(&store, &c, &new, v1, FIRST.len()).await, None);
        let v2 = store.complete(&c, Commit::append(new, Some(v1), FIRST.len()));
        let v2 = v2.await.unwrap().unwrap();
        let head = store.hydrate(&key()).await.unwrap().unwrap();
        assert_eq!((head.version, head.transcript), (v2, whole(FIRST)));
        let deltas: i32 = sqlx::query_scalar(
            "SELECT chain_deltas FROM lobu.conversations WHERE conversation = 'fast'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(deltas, 1, "the general path stored only the new bytes");
    }
}
