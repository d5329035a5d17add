//! The common end of a turn in one statement (sql/commit_fast.sql): a turn that only
//! appended to the head it expected, which the runtime says by [`Commit::base_len`]. One
//! round trip and one commit instead of a transaction of four round trips; any other case
//! (a first turn, a re-base, a retry, a conflict, a stale claim) finds no row, changes
//! nothing, and takes the general path, which decides and explains.
//!
//! [`Commit::base_len`]: lobu_core::Commit::base_len

use bytes::Bytes;
use lobu_core::{Claim, Error, ErrorKind, Result, Version};
use sqlx::types::Json;

use crate::delta::{Digests, last_line_start};
use crate::sessions::OFF_THREAD_BYTES;
use crate::store::{PgStore, db};

impl PgStore {
    /// Commit `transcript` as a delta over the head `expected`, whose `base_len` bytes it
    /// starts with. `Some(seq)`: committed; `None`: nothing changed, take the general path.
    pub(crate) async fn commit_fast(
        &self,
        claim: &Claim,
        fence: i64,
        transcript: &Bytes,
        expected: Version,
        base_len: usize,
        output: &Option<serde_json::Value>,
    ) -> Result<Option<i64>> {
        if base_len == 0 || base_len >= transcript.len() {
            return Ok(None); // nothing to chain to, or nothing appended
        }
        let Ok(expected) = i64::try_from(expected.0) else {
            return Ok(None);
        };
        let (digests, title) = if transcript.len() > OFF_THREAD_BYTES {
            let bytes = transcript.clone();
            tokio::task::spawn_blocking(move || summarise(&bytes, base_len))
                .await
                .map_err(|e| {
                    Error::new(ErrorKind::Other, "complete: hashing task failed").with_source(e)
                })?
        } else {
            summarise(transcript, base_len)
        };
        let Some(prefix) = digests.prefix else {
            return Ok(None);
        };
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
            .bind(prefix)
            .bind(&transcript[base_len..])
            .bind(len(transcript.len()))
            .bind(digests.full)
            .bind(max_deltas)
            .bind(title)
            .bind(output.as_ref().map(Json))
            .bind(self.channel())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db("complete"))?;
        Ok(row.map(|(seq, _)| seq))
    }
}

/// The digests of the whole transcript and of its first `base_len` bytes, and a title from
/// the new bytes (used only if the conversation has none yet).
fn summarise(transcript: &[u8], base_len: usize) -> (Digests, Option<String>) {
    let digests = Digests::of(transcript, Some(base_len));
    let new = &transcript[last_line_start(transcript, base_len)..];
    (digests, lobu_core::transcript::title(new))
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
    const SECOND: &[u8] = b"{\"type\":\"session\"}\n{\"n\":1}\n{\"n\":2}\n";

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn a_turn_that_only_appended_commits_in_one_statement(pool: PgPool) {
        let store = PgStore::new(pool);
        let (v1, c) = with_head(&store, FIRST).await;
        let bytes = Bytes::from_static(SECOND);
        let seq = fast(&store, &c, &bytes, v1, FIRST.len())
            .await
            .expect("the fast path");
        let head = store.hydrate(&key()).await.unwrap().unwrap();
        assert_eq!(head.transcript, bytes);
        assert_eq!(i64::try_from(head.version.0).unwrap(), seq);
        let record = store.status(&c.key.org, &c.run).await.unwrap().unwrap();
        assert_eq!(record.status, RunStatus::Completed);
        // The ownership ended: the conversation's next run is claimable at once.
        let next = claim(&store).await;
        assert_eq!(next.head, Some(head.version));
        // A retry of the landed commit takes the general path and answers the same version.
        let again = store
            .complete(&c, Commit::append(bytes, Some(v1), FIRST.len()))
            .await;
        assert_eq!(again.unwrap(), Some(head.version));
    }

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn anything_but_a_plain_append_changes_nothing_and_falls_back(pool: PgPool) {
        let store = PgStore::new(pool);
        let (v1, c) = with_head(&store, FIRST).await;
        let bytes = Bytes::from_static(SECOND);
        let rewritten = Bytes::from_static(b"{\"type\":\"session\"}\n{\"n\":9}\n{\"n\":2}\n");
        // A wrong base length, a rewritten prefix, a stale expected version, no new bytes.
        assert_eq!(fast(&store, &c, &bytes, v1, FIRST.len() - 1).await, None);
        assert_eq!(fast(&store, &c, &rewritten, v1, FIRST.len()).await, None);
        assert_eq!(
            fast(&store, &c, &bytes, Version(v1.0 + 1), FIRST.len()).await,
            None
        );
        assert_eq!(
            fast(&store, &c, &Bytes::from_static(FIRST), v1, FIRST.len()).await,
            None
        );
        // A claim that is no longer the newest.
        let stale = Claim {
            fence: lobu_core::Fence(c.fence.0 - 1),
            ..c.clone()
        };
        assert_eq!(fast(&store, &stale, &bytes, v1, FIRST.len()).await, None);
        let head = store.hydrate(&key()).await.unwrap().unwrap();
        assert_eq!((head.version, &head.transcript[..]), (v1, FIRST));
        let record = store.status(&c.key.org, &c.run).await.unwrap().unwrap();
        assert_eq!(record.status, RunStatus::Running);
        // The general path still commits the claim's turn.
        let v2 = store.complete(&c, Commit::append(bytes.clone(), Some(v1), FIRST.len() - 1));
        let v2 = v2.await.unwrap().unwrap();
        assert_eq!(
            store.hydrate(&key()).await.unwrap().unwrap().transcript,
            bytes
        );
        assert!(v2 > v1);
    }
}
