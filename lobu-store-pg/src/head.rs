//! The head read in one statement (sql/hydrate.sql): the head's whole copy and the deltas
//! after it, concatenated here. Hydrate, persist's rebuild of an append and export all read
//! the head this way.

use std::time::SystemTime;

use bytes::Bytes;
use lobu_core::{ConversationKey, Result, RunId, Snapshot};
use time::OffsetDateTime;

use crate::error::{PgStoreError, stored};
use crate::sessions::{len_i64, version};
use crate::store::{PgStore, db, system_time};

/// One row of sql/hydrate.sql: the head, and one snapshot of its chain.
#[derive(sqlx::FromRow)]
struct ChainRow {
    head_seq: i64,
    head_run: String,
    head_bytes: i64,
    base_seq: i64,
    /// When the head was written (the conversation's `updated_at`).
    updated_at: OffsetDateTime,
    seq: Option<i64>,
    bytes: Option<Vec<u8>>,
}

impl PgStore {
    /// The head snapshot in one read (sql/hydrate.sql), on `conn`: the pool, or a transaction
    /// that holds the conversation's row lock.
    pub(crate) async fn read_head(
        &self,
        conn: impl sqlx::PgExecutor<'_>,
        key: &ConversationKey,
    ) -> Result<Option<Snapshot>> {
        Ok(self
            .read_written_head(conn, key)
            .await?
            .map(|(head, _)| head))
    }

    /// The head snapshot and when it was written, in one read (sql/hydrate.sql).
    pub(crate) async fn read_written_head(
        &self,
        conn: impl sqlx::PgExecutor<'_>,
        key: &ConversationKey,
    ) -> Result<Option<(Snapshot, SystemTime)>> {
        let rows: Vec<ChainRow> = sqlx::query_as(self.inner.sessions.hydrate.clone())
            .bind(key.org.as_str())
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .fetch_all(conn)
            .await
            .map_err(db("hydrate"))?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let (head_seq, head_bytes, base_seq) = (first.head_seq, first.head_bytes, first.base_seq);
        let version = version(head_seq)?;
        let run = stored("head run id", RunId::new(&first.head_run))?;
        let written = system_time(first.updated_at);
        let first_seq = first.seq;
        let chain_len = rows.len();
        let mut pieces = rows.into_iter().map(|r| r.bytes);
        // A head that is one whole copy (the common case after a re-base) is not copied.
        let transcript = if chain_len == 1 {
            pieces.next().flatten()
        } else {
            let capacity = usize::try_from(head_bytes).unwrap_or(0);
            pieces.try_fold(Vec::with_capacity(capacity), |mut all, piece| {
                all.extend_from_slice(&piece?);
                Some(all)
            })
        };
        let whole = transcript.filter(|t| len_i64(t.len()) == head_bytes);
        let Some(transcript) = whole.filter(|_| first_seq == Some(base_seq)) else {
            return Err(PgStoreError::Corrupt(format!(
                "{key}: the chain of v{head_seq} ({chain_len} rows from {first_seq:?}) does not \
                 rebuild {head_bytes} bytes from v{base_seq}"
            ))
            .into());
        };
        let head = Snapshot {
            version,
            run,
            transcript: Bytes::from(transcript),
        };
        Ok(Some((head, written)))
    }
}
