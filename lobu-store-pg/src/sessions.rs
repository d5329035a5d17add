//! [`SessionStore`] on PostgreSQL: delta-chained snapshots, fenced in the write's transaction.

use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use lobu_core::{
    AgentId, ConversationId, ConversationKey, ConversationSummary, Error, OrgId, Page, Persist,
    PruneReport, Result, SessionStore, Snapshot, Version, check_page_limit,
};
use sqlx::SqlStr;
use time::OffsetDateTime;

use crate::error::{PgStoreError, stored};
use crate::persist::{Head, Plan, RunSnapshot, check_fence, plan};
use crate::store::{PgStore, db, sql, system_time};

/// The session statements, for one schema.
#[derive(Debug)]
pub(crate) struct SessionSql {
    hydrate: SqlStr,
    head: SqlStr,
    lock: SqlStr,
    run_snapshots: SqlStr,
    write_delta: SqlStr,
    write_base: SqlStr,
    write_other: SqlStr,
    clear_lock: SqlStr,
    clear: SqlStr,
    list: SqlStr,
}

impl SessionSql {
    pub(crate) fn new(schema: &str) -> Self {
        SessionSql {
            hydrate: sql(include_str!("sql/hydrate.sql"), schema),
            head: sql(
                "SELECT head_seq FROM {s}.conversations \
                 WHERE org = $1 AND agent = $2 AND conversation = $3",
                schema,
            ),
            lock: sql(
                "SELECT fence, head_seq, head_bytes, head_digest, base_bytes, chain_deltas, \
                        chain_bytes, title IS NOT NULL AS has_title \
                 FROM {s}.conversations \
                 WHERE org = $1 AND agent = $2 AND conversation = $3 FOR UPDATE",
                schema,
            ),
            run_snapshots: sql(
                "SELECT seq, status, byte_size, digest FROM {s}.snapshots \
                 WHERE org = $1 AND agent = $2 AND conversation = $3 AND run = $4 \
                 ORDER BY seq DESC",
                schema,
            ),
            write_delta: sql(include_str!("sql/write_delta.sql"), schema),
            write_base: sql(include_str!("sql/write_base.sql"), schema),
            write_other: sql(
                "INSERT INTO {s}.snapshots (org, agent, conversation, seq, run, status, \
                                            base_seq, start_offset, bytes, byte_size, digest) \
                 SELECT $1, $2, $3, v.seq, $4, $5, v.seq, 0, $6, $7, $8 \
                 FROM (SELECT nextval('{s}.versions') AS seq) v RETURNING seq",
                schema,
            ),
            clear_lock: sql(
                "SELECT 1 FROM {s}.conversations \
                 WHERE org = $1 AND agent = $2 AND conversation = $3 FOR UPDATE",
                schema,
            ),
            clear: sql(include_str!("sql/clear.sql"), schema),
            list: sql(
                "SELECT conversation, head_seq, turns, head_bytes, title, updated_at \
                 FROM {s}.conversations \
                 WHERE org = $1 AND agent = $2 AND head_seq IS NOT NULL \
                   AND ($3::text IS NULL OR conversation > $3) \
                 ORDER BY conversation LIMIT $4",
                schema,
            ),
        }
    }
}

#[derive(sqlx::FromRow)]
struct Hydrated {
    head_seq: i64,
    head_run: String,
    head_bytes: i64,
    base_seq: i64,
    first_seq: Option<i64>,
    transcript: Option<Vec<u8>>,
}

#[derive(sqlx::FromRow)]
struct Listed {
    conversation: String,
    head_seq: i64,
    turns: i64,
    head_bytes: i64,
    title: Option<String>,
    updated_at: OffsetDateTime,
}

/// Transcripts larger than this are hashed on a blocking thread (a few ms of CPU and more).
const OFF_THREAD_BYTES: usize = 512 * 1024;

fn version(seq: i64) -> Result<Version> {
    u64::try_from(seq)
        .map(Version)
        .map_err(|_| PgStoreError::Corrupt(format!("negative snapshot sequence {seq}")).into())
}

fn corrupt(message: String) -> Error {
    PgStoreError::Corrupt(message).into()
}

fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl SessionStore for PgStore {
    async fn hydrate(&self, key: &ConversationKey) -> Result<Option<Snapshot>> {
        let row: Option<Hydrated> = sqlx::query_as(self.inner.sessions.hydrate.clone())
            .bind(key.org.as_str())
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db("hydrate"))?;
        let Some(row) = row else { return Ok(None) };
        let transcript = row.transcript.unwrap_or_default();
        if row.first_seq != Some(row.base_seq) || len_i64(transcript.len()) != row.head_bytes {
            return Err(corrupt(format!(
                "{key}: the chain of v{} rebuilds {} bytes from {:?}, expected {} bytes from v{}",
                row.head_seq,
                transcript.len(),
                row.first_seq,
                row.head_bytes,
                row.base_seq
            )));
        }
        Ok(Some(Snapshot {
            version: version(row.head_seq)?,
            run: stored("head run id", lobu_core::RunId::new(&row.head_run))?,
            transcript: Bytes::from(transcript),
        }))
    }

    async fn head(&self, key: &ConversationKey) -> Result<Option<Version>> {
        let head: Option<Option<i64>> = sqlx::query_scalar(self.inner.sessions.head.clone())
            .bind(key.org.as_str())
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db("head"))?;
        head.flatten().map(version).transpose()
    }

    async fn persist(&self, key: &ConversationKey, write: Persist) -> Result<Version> {
        let limit = self.inner.config.max_transcript_bytes;
        if write.transcript.len() > limit {
            return Err(Error::too_large(format!(
                "transcript of {key} is {} bytes; the limit is {limit}",
                write.transcript.len()
            )));
        }
        let sessions = &self.inner.sessions;
        let mut tx = self
            .inner
            .pool
            .begin()
            .await
            .map_err(db("persist: begin"))?;
        let head: Option<Head> = sqlx::query_as(sessions.lock.clone())
            .bind(key.org.as_str())
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("persist: lock conversation"))?;
        let head = check_fence(key, &write, head.as_ref())?;
        // A separate statement, so it sees a same-run write committed while we waited for
        // the row lock (READ COMMITTED takes a new snapshot per statement).
        let earlier: Vec<RunSnapshot> = sqlx::query_as(sessions.run_snapshots.clone())
            .bind(key.org.as_str())
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .bind(write.run.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(db("persist: find run"))?;
        let max_deltas = self.inner.config.max_chain_deltas;
        // Hashing (and, for a rewrite, finding the title) is linear in the transcript: keep
        // large ones off the async worker threads.
        let plan = if write.transcript.len() > OFF_THREAD_BYTES {
            let (key, write, head) = (key.clone(), write.clone(), head.clone());
            tokio::task::spawn_blocking(move || plan(&key, &write, &head, &earlier, max_deltas))
                .await
                .map_err(|e| {
                    Error::new(lobu_core::ErrorKind::Other, "persist: planning task failed")
                        .with_source(e)
                })??
        } else {
            plan(key, &write, head, &earlier, max_deltas)?
        };
        let bytes = &write.transcript[..];
        let size = len_i64(bytes.len());
        let key_run = |q: SqlStr| {
            sqlx::query_scalar::<_, i64>(q)
                .bind(key.org.as_str())
                .bind(key.agent.as_str())
                .bind(key.conversation.as_str())
                .bind(write.run.as_str())
        };
        let seq = match plan {
            // Nothing to write: dropping `tx` rolls back and releases the row lock.
            Plan::Retry(seq) => return version(seq),
            Plan::Forensic { digest } => key_run(sessions.write_other.clone())
                .bind(write.status.as_str())
                .bind(bytes)
                .bind(size)
                .bind(digest)
                .fetch_one(&mut *tx)
                .await
                .map_err(db("persist: write forensic copy"))?,
            Plan::Delta {
                from,
                digest,
                title,
            } => key_run(sessions.write_delta.clone())
                .bind(&bytes[from..])
                .bind(len_i64(from))
                .bind(size)
                .bind(digest)
                .bind(title)
                .fetch_one(&mut *tx)
                .await
                .map_err(db("persist: write delta"))?,
            Plan::Base {
                digest,
                title,
                replace_title,
            } => key_run(sessions.write_base.clone())
                .bind(bytes)
                .bind(size)
                .bind(digest)
                .bind(replace_title)
                .bind(title)
                .fetch_one(&mut *tx)
                .await
                .map_err(db("persist: write whole copy"))?,
        };
        tx.commit().await.map_err(db("persist: commit"))?;
        version(seq)
    }

    async fn clear(&self, key: &ConversationKey) -> Result<u64> {
        let mut tx = self.inner.pool.begin().await.map_err(db("clear: begin"))?;
        // Lock first: a persist in flight commits before our DELETE takes its snapshot.
        sqlx::query(self.inner.sessions.clear_lock.clone())
            .bind(key.org.as_str())
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("clear: lock conversation"))?;
        let removed: i64 = sqlx::query_scalar(self.inner.sessions.clear.clone())
            .bind(key.org.as_str())
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("clear"))?;
        tx.commit().await.map_err(db("clear: commit"))?;
        Ok(u64::try_from(removed).unwrap_or(0))
    }

    async fn list(
        &self,
        org: &OrgId,
        agent: &AgentId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationSummary>> {
        check_page_limit(limit)?;
        if cursor.is_some_and(|c| c.contains('\0')) {
            return Err(Error::invalid("cursor must not contain NUL"));
        }
        let rows: Vec<Listed> = sqlx::query_as(self.inner.sessions.list.clone())
            .bind(org.as_str())
            .bind(agent.as_str())
            .bind(cursor)
            .bind(len_i64(limit + 1))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(db("list"))?;
        let more = rows.len() > limit;
        let mut items = Vec::with_capacity(limit.min(rows.len()));
        for row in rows.into_iter().take(limit) {
            items.push(ConversationSummary {
                conversation: stored("conversation id", ConversationId::new(&row.conversation))?,
                version: version(row.head_seq)?,
                turns: u64::try_from(row.turns).unwrap_or(0),
                bytes: u64::try_from(row.head_bytes).unwrap_or(0),
                title: row.title,
                updated_at: system_time(row.updated_at),
            });
        }
        let next_cursor = more
            .then(|| items.last().map(|s| s.conversation.as_str().to_owned()))
            .flatten();
        Ok(Page { items, next_cursor })
    }

    async fn prune(&self, idle_before: SystemTime) -> Result<PruneReport> {
        self.prune_in_batches(idle_before).await
    }

    fn max_transcript_bytes(&self) -> usize {
        self.inner.config.max_transcript_bytes
    }
}
