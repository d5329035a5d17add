//! `SessionStore::persist` of an append in one statement (sql/persist_fast.sql): a completed
//! write that appends to the whole head it expected, under the newest fence, with the
//! head's hash state at hand ([`HeadStates`](crate::commit_fast::HeadStates): filled by
//! claims and by this store's own writes). One round trip and one commit instead of a
//! transaction of five; any other case finds no row, changes nothing, and takes the general
//! path, which decides and explains.

use lobu_core::transcript::hash::TranscriptHash;
use lobu_core::{ConversationKey, Persist, Result, TerminalStatus};

use crate::delta::SMALL_CHAIN_SHARE;
use crate::store::{PgStore, db};

impl PgStore {
    /// `Some(seq)`: `write` was stored by the one statement; `None`: nothing changed.
    pub(crate) async fn persist_fast(
        &self,
        key: &ConversationKey,
        write: &Persist,
    ) -> Result<Option<i64>> {
        let (Some(base_len), Some(expected)) = (write.base_len, write.expected) else {
            return Ok(None);
        };
        let plain = write.status == TerminalStatus::Completed
            && base_len > 0
            && !write.transcript.is_empty();
        let (Ok(expected), Ok(fence)) = (i64::try_from(expected.0), i64::try_from(write.fence.0))
        else {
            return Ok(None);
        };
        if !plain {
            return Ok(None);
        }
        let Some(state_used) = self.inner.head_states.take(expected) else {
            return Ok(None);
        };
        let mut hasher = TranscriptHash::resume(&state_used)?;
        hasher.update(&write.transcript);
        let len = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let max_deltas = i32::try_from(self.inner.config.max_chain_deltas).unwrap_or(i32::MAX);
        let new_state = hasher.state();
        let seq: Option<i64> = sqlx::query_scalar(self.inner.sessions.persist_fast.clone())
            .bind(key.org.as_str())
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .bind(write.run.as_str())
            .bind(fence)
            .bind(expected)
            .bind(len(base_len))
            .bind(&state_used)
            .bind(&write.transcript[..])
            .bind(len(write.len()))
            .bind(hasher.digest().to_vec())
            .bind(max_deltas)
            .bind(lobu_core::transcript::title(&write.transcript))
            .bind(&new_state)
            .bind(SMALL_CHAIN_SHARE)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db("persist"))?;
        match seq {
            Some(seq) => self.inner.head_states.remember(seq, new_state),
            // Still the head's state: the general path or a retry may use it.
            None => self.inner.head_states.remember(expected, state_used),
        }
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use lobu_core::{ConversationLocks, ErrorKind, Fence, RunId, SessionStore, Version};
    use sqlx::PgPool;
    use std::time::Duration;

    use super::*;

    const FIRST: &[u8] = b"{\"type\":\"session\"}\n{\"n\":1}\n";

    fn key() -> ConversationKey {
        ConversationKey::parse("acme", "bot", "persisted").unwrap()
    }

    fn append(fence: Fence, expected: Version, base_len: usize, new: &'static [u8]) -> Persist {
        Persist {
            run: RunId::generate(),
            status: TerminalStatus::Completed,
            transcript: Bytes::from_static(new),
            expected: Some(expected),
            fence,
            base_len: Some(base_len),
        }
    }

    /// A lease of a fresh conversation and the version of its first, whole write.
    async fn first_write(store: &PgStore) -> (Fence, Version) {
        let lease = store.try_acquire(&key(), Duration::from_secs(60)).await;
        let fence = lease.unwrap().expect("free").fence;
        let first = Persist {
            base_len: None,
            expected: None,
            transcript: Bytes::from_static(FIRST),
            ..append(fence, Version(0), 0, b"")
        };
        (fence, store.persist(&key(), first).await.unwrap())
    }

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn appends_after_the_first_write_take_one_statement(pool: PgPool) {
        let store = PgStore::new(pool);
        let (fence, v1) = first_write(&store).await;
        let second = append(fence, v1, FIRST.len(), b"{\"n\":2}\n");
        let v2 = store.persist_fast(&key(), &second).await.unwrap();
        let v2 = Version(u64::try_from(v2.expect("the one statement")).unwrap());
        let whole = [FIRST, b"{\"n\":2}\n"].concat();
        let head = store.hydrate(&key()).await.unwrap().unwrap();
        assert_eq!((head.version, &head.transcript[..]), (v2, &whole[..]));
        // The same append again is not a fast write: the general path answers it.
        assert_eq!(store.persist_fast(&key(), &second).await.unwrap(), None);
        assert_eq!(store.persist(&key(), second).await.unwrap(), v2);
        // The next one is fast again, from the state the last write left.
        let third = append(fence, v2, whole.len(), b"{\"n\":3}\n");
        assert!(store.persist_fast(&key(), &third).await.unwrap().is_some());
    }

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn a_stale_fence_or_a_wrong_base_changes_nothing(pool: PgPool) {
        let store = PgStore::new(pool);
        let (fence, v1) = first_write(&store).await;
        let stale = append(Fence(fence.0 - 1), v1, FIRST.len(), b"{\"n\":2}\n");
        assert_eq!(store.persist_fast(&key(), &stale).await.unwrap(), None);
        let err = store.persist(&key(), stale).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Fenced);
        let short = append(fence, v1, FIRST.len() - 1, b"{\"n\":2}\n");
        assert_eq!(store.persist_fast(&key(), &short).await.unwrap(), None);
        let head = store.hydrate(&key()).await.unwrap().unwrap();
        assert_eq!((head.version, &head.transcript[..]), (v1, FIRST));
    }
}
