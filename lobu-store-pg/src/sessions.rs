//! [`SessionStore`] on PostgreSQL: delta-chained snapshots, fenced in the write's transaction.

use async_trait::async_trait;
use bytes::Bytes;
use lobu_core::export::{Exported, Imported};
use lobu_core::retention::IdlePrune;
use lobu_core::{
    AgentId, ConversationId, ConversationKey, ConversationSummary, EraseScope, ErasureReport,
    Error, Fence, OrgId, Page, Persist, PruneReport, Result, SessionStore, Snapshot, Version,
    check_page_limit,
};
use sqlx::types::Json;
use sqlx::{PgConnection, SqlStr};
use time::OffsetDateTime;

use crate::error::{PgStoreError, stored};
use crate::persist::{Head, Plan, RunSnapshot, check_fence, plan, plan_append};
use crate::store::{PgStore, db, sql, system_time};
use crate::tx::{Ending, end};

/// The session statements, for one schema.
#[derive(Debug)]
pub(crate) struct SessionSql {
    pub(crate) hydrate: SqlStr,
    head: SqlStr,
    lock: SqlStr,
    run_snapshots: SqlStr,
    version_digest: SqlStr,
    pub(crate) persist_fast: SqlStr,
    write_delta: SqlStr,
    write_base: SqlStr,
    write_rebase: SqlStr,
    commit_delta: SqlStr,
    commit_base: SqlStr,
    commit_rebase: SqlStr,
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
                "SELECT fence, head_seq, head_bytes, head_digest, head_state, base_bytes, chain_deltas, \
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
            persist_fast: sql(include_str!("sql/persist_fast.sql"), schema),
            version_digest: sql(
                "SELECT byte_size, digest FROM {s}.snapshots \
                 WHERE org = $1 AND agent = $2 AND conversation = $3 AND seq = $4 \
                   AND status = 'completed'",
                schema,
            ),
            write_delta: write_sql(include_str!("sql/write_delta.sql"), schema, false),
            write_base: write_sql(include_str!("sql/write_base.sql"), schema, false),
            write_rebase: write_sql(&rebase(), schema, false),
            commit_delta: write_sql(include_str!("sql/write_delta.sql"), schema, true),
            commit_base: write_sql(include_str!("sql/write_base.sql"), schema, true),
            commit_rebase: write_sql(&rebase(), schema, true),
            write_other: sql(
                "INSERT INTO {s}.snapshots (org, agent, conversation, seq, run, status, \
                                            base_seq, start_offset, bytes, byte_size, digest) \
                 SELECT $1, $2, $3, v.seq, $4, $5, v.seq, 0, $6, $7, $8 \
                 FROM (SELECT nextval('{s}.versions') AS seq) v RETURNING seq",
                schema,
            ),
            clear_lock: sql(
                "SELECT fence FROM {s}.conversations \
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

/// The end of write_delta.sql / write_base.sql for `complete` (`$11` output, `$12` the NOTIFY
/// channel; `$4` is the run): the run becomes completed with the new head as its committed
/// version, in the statement that moved the head, and leaves its lane (sql/lane_left.sql).
/// The claim was checked under the run's and the conversation's row locks earlier in the
/// same transaction (sql/commit_lock.sql).
const COMMIT_TAIL: &str = ", done AS (
    UPDATE {s}.runs r
       SET status = 'completed', output = $11, committed_seq = head.seq,
           claim_expires_at = NULL, finished_at = now(), updated_at = now()
      FROM head
     WHERE r.org = $1 AND r.id = $4
    RETURNING r.id, head.seq, r.org, r.agent, r.conversation, r.seq AS run_seq
), ended_runs AS (
    SELECT org, agent, conversation, run_seq AS seq, id FROM done
), {lane_left}
SELECT seq, count(pg_notify($12, id)) AS notified FROM done GROUP BY seq";

/// The whole copy of a re-base that an append triggers, built in the server: the head's
/// chain (its whole copy and deltas, as sql/hydrate.sql reads them) then the appended `$5`.
const REBASE_BYTES: &str = "(SELECT string_agg(s.bytes, ''::bytea ORDER BY s.seq)
          FROM {s}.snapshots s JOIN {s}.conversations c
            ON s.org = c.org AND s.agent = c.agent AND s.conversation = c.conversation
         WHERE c.org = $1 AND c.agent = $2 AND c.conversation = $3
           AND s.seq BETWEEN c.base_seq AND c.head_seq AND s.status = 'completed') || $5";

/// sql/write_base.sql for a re-base built in the server.
fn rebase() -> String {
    include_str!("sql/write_base.sql").replace("{bytes}", REBASE_BYTES)
}

/// A head write for persist (`commit = false`: returns the version) or for complete (also
/// ends the ownership and completes the run, see [`COMMIT_TAIL`]).
fn write_sql(template: &str, schema: &str, commit: bool) -> SqlStr {
    let (end_lease, finish) = if commit {
        (
            ",\n           lease_expires_at = least(c.lease_expires_at, now())",
            COMMIT_TAIL,
        )
    } else {
        ("", "\nSELECT seq FROM head")
    };
    let text = template
        .replace("{bytes}", "$5")
        .replace("{end_lease}", end_lease)
        .replace("{finish}", finish);
    sql(&text, schema)
}

/// How the planned write ends: a plain persist, or the commit of a run (`complete`).
pub(crate) enum Finish<'a> {
    /// `SessionStore::persist`: the version only.
    Persist,
    /// `RunQueue::complete`: the run becomes completed with `output`, the ownership ends and
    /// waiters on `channel` are woken, in the same statement as the head write.
    Commit {
        output: Option<&'a serde_json::Value>,
        channel: &'a str,
    },
}

/// Run a head write (`q`, its own parameters bound); for a `complete`, bind the run's output
/// and the wake-up channel first (the statement's last two parameters).
async fn finish_write<'q>(
    q: sqlx::query::QueryScalar<'q, sqlx::Postgres, i64, sqlx::postgres::PgArguments>,
    commit: Option<(Option<&'q serde_json::Value>, &'q str)>,
    tx: &mut PgConnection,
    what: &'static str,
) -> Result<i64> {
    let q = match commit {
        Some((output, channel)) => q.bind(output.map(Json)).bind(channel),
        None => q,
    };
    q.fetch_one(tx).await.map_err(db(what))
}

/// What [`PgStore::write_planned`] did.
pub(crate) enum Written {
    /// The write was stored already (a retry): nothing was written, `Finish` not applied.
    Retry(i64),
    /// Stored at this version, `Finish` applied.
    Stored(i64),
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
pub(crate) const OFF_THREAD_BYTES: usize = 512 * 1024;

pub(crate) fn version(seq: i64) -> Result<Version> {
    u64::try_from(seq)
        .map(Version)
        .map_err(|_| PgStoreError::Corrupt(format!("negative snapshot sequence {seq}")).into())
}

pub(crate) fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Check 1 of persist's contract: `TooLarge` over the configured limit.
    pub(crate) fn check_size(&self, key: &ConversationKey, len: usize) -> Result<()> {
        let limit = self.inner.config.max_transcript_bytes;
        if len > limit {
            return Err(Error::too_large(format!(
                "transcript of {key} is {len} bytes; the limit is {limit}"
            )));
        }
        Ok(())
    }

    /// Checks 3 and 4 of persist's contract and the write they decide, in `tx`, which holds
    /// the conversation's row lock and has checked the fence. `earlier` is the run's stored
    /// snapshots, newest first. One statement (none for a retry). Shared by persist and by
    /// complete, whose commit is a completed persist plus the run's completion (`finish`).
    pub(crate) async fn write_planned(
        &self,
        tx: &mut PgConnection,
        key: &ConversationKey,
        write: &Persist,
        head: &Head,
        earlier: Vec<RunSnapshot>,
        finish: Finish<'_>,
    ) -> Result<Written> {
        let sessions = &self.inner.sessions;
        let max_deltas = self.inner.config.max_chain_deltas;
        let (plan, write) = match plan_append(key, write, head, &earlier, max_deltas)? {
            Some(plan) => (plan, write.clone()),
            None => {
                let write = self.whole(tx, key, write, head).await?;
                (self.plan_whole(key, &write, head, earlier).await?, write)
            }
        };
        let bytes = &write.transcript[..];
        let size = len_i64(write.len());
        let key_run = |q: SqlStr| {
            sqlx::query_scalar::<_, i64>(q)
                .bind(key.org.as_str())
                .bind(key.agent.as_str())
                .bind(key.conversation.as_str())
                .bind(write.run.as_str())
        };
        let commit = match finish {
            Finish::Persist => None,
            Finish::Commit { output, channel } => Some((output, channel)),
        };
        let (delta_sql, base_sql, rebase_sql) = match commit {
            None => (
                &sessions.write_delta,
                &sessions.write_base,
                &sessions.write_rebase,
            ),
            Some(_) => (
                &sessions.commit_delta,
                &sessions.commit_base,
                &sessions.commit_rebase,
            ),
        };
        // Every head write binds its hash state last ($10) and then the commit's tail.
        let (q, state, what) = match &plan {
            Plan::Retry(seq) => return Ok(Written::Retry(*seq)),
            Plan::Forensic { .. } if commit.is_some() => {
                return Err(Error::new(
                    lobu_core::ErrorKind::Other,
                    "complete planned a non-completed snapshot",
                ));
            }
            Plan::Forensic { digest } => {
                let seq = key_run(sessions.write_other.clone())
                    .bind(write.status.as_str())
                    .bind(bytes)
                    .bind(size)
                    .bind(&digest[..])
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db("persist: write forensic copy"))?;
                return Ok(Written::Stored(seq));
            }
            Plan::Delta {
                from,
                new_bytes,
                digests,
                title,
            } => {
                let q = key_run(delta_sql.clone())
                    .bind(&new_bytes[..])
                    .bind(len_i64(*from))
                    .bind(size)
                    .bind(&digests.full[..])
                    .bind(title.as_deref());
                (q, &digests.state, "persist: write delta")
            }
            Plan::Base {
                digests,
                title,
                replace_title,
            } => {
                let q = key_run(base_sql.clone())
                    .bind(bytes)
                    .bind(size)
                    .bind(&digests.full[..])
                    .bind(*replace_title)
                    .bind(title.as_deref());
                (q, &digests.state, "persist: write whole copy")
            }
            Plan::Rebase {
                new_bytes,
                digests,
                title,
            } => {
                let q = key_run(rebase_sql.clone())
                    .bind(&new_bytes[..])
                    .bind(size)
                    .bind(&digests.full[..])
                    .bind(false)
                    .bind(title.as_deref());
                (q, &digests.state, "persist: re-base")
            }
        };
        let seq = finish_write(q.bind(&state[..]), commit, &mut *tx, what).await?;
        // For the next append (persist_fast.rs); harmless if this rolls back.
        self.inner.head_states.remember(seq, state.clone());
        Ok(Written::Stored(seq))
    }

    /// The plan of a whole transcript. Hashing (and, for a rewrite, finding the title) is
    /// linear in the transcript: large ones are planned off the async worker threads.
    async fn plan_whole(
        &self,
        key: &ConversationKey,
        write: &Persist,
        head: &Head,
        earlier: Vec<RunSnapshot>,
    ) -> Result<Plan> {
        let max_deltas = self.inner.config.max_chain_deltas;
        if write.transcript.len() <= OFF_THREAD_BYTES {
            return plan(key, write, head, &earlier, max_deltas);
        }
        let (key, write, head) = (key.clone(), write.clone(), head.clone());
        tokio::task::spawn_blocking(move || plan(&key, &write, &head, &earlier, max_deltas))
            .await
            .map_err(|e| {
                Error::new(lobu_core::ErrorKind::Other, "persist: planning task failed")
                    .with_source(e)
            })?
    }

    /// An append as the whole transcript it stands for (lobu-core's rule), read from the
    /// head in `tx`: for an append that the head's hash state cannot take as a delta (a head
    /// written before schema version 4, a re-base, a base other than the head).
    async fn whole(
        &self,
        tx: &mut PgConnection,
        key: &ConversationKey,
        write: &Persist,
        head: &Head,
    ) -> Result<Persist> {
        let Some(base_len) = write.base_len else {
            return Ok(write.clone());
        };
        let head_bytes = match head.head_seq {
            Some(_) => self
                .read_head(&mut *tx, key)
                .await?
                .map(|s| s.transcript)
                .unwrap_or_default(),
            None => Bytes::new(),
        };
        let found = match head.head_seq {
            Some(seq) => Some((version(seq)?, head_bytes.len() as u64)),
            None => None,
        };
        let ancestor = match (write.expected, found) {
            (Some(expected), Some((head_version, _))) if expected != head_version => {
                self.ancestor(&mut *tx, key, expected, &head_bytes).await?
            }
            _ => None,
        };
        let to = lobu_core::persist_plan::append_to(key, write.expected, base_len, found, || {
            Ok(ancestor)
        })?;
        let appended = write.transcript.clone();
        Ok(Persist {
            transcript: lobu_core::persist_plan::rebuild(to, &head_bytes, base_len, appended),
            base_len: None,
            ..write.clone()
        })
    }

    /// The length of completed version `expected` if `head_bytes` starts with its bytes.
    async fn ancestor(
        &self,
        tx: &mut PgConnection,
        key: &ConversationKey,
        expected: Version,
        head_bytes: &[u8],
    ) -> Result<Option<u64>> {
        let Ok(seq) = i64::try_from(expected.0) else {
            return Ok(None);
        };
        let row: Option<(i64, Vec<u8>)> =
            sqlx::query_as(self.inner.sessions.version_digest.clone())
                .bind(key.org.as_str())
                .bind(key.agent.as_str())
                .bind(key.conversation.as_str())
                .bind(seq)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("persist: read the expected version"))?;
        let Some((size, digest)) = row else {
            return Ok(None);
        };
        let prefix = usize::try_from(size).ok().and_then(|n| head_bytes.get(..n));
        let starts_head =
            prefix.is_some_and(|p| lobu_core::transcript::hash::digest(p)[..] == digest[..]);
        Ok(u64::try_from(size).ok().filter(|_| starts_head))
    }
}

#[async_trait]
impl SessionStore for PgStore {
    async fn hydrate(&self, key: &ConversationKey) -> Result<Option<Snapshot>> {
        self.read_head(&self.inner.pool, key).await
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
        self.check_size(key, write.len())?;
        // The common append: one statement (persist_fast.rs); else the transaction below.
        if let Some(seq) = self.persist_fast(key, &write).await? {
            return version(seq);
        }
        let mut tx = self
            .inner
            .pool
            .begin()
            .await
            .map_err(db("persist: begin"))?;
        let outcome = self.persist_in(&mut tx, key, &write).await;
        // A retry that writes nothing, or a refusal, is rolled back now, so the row lock
        // does not outlive the call (see tx.rs).
        let seq = end(tx, "persist: commit", outcome).await?;
        version(seq)
    }

    async fn clear(&self, key: &ConversationKey, fence: Fence) -> Result<u64> {
        // Fenced exactly like persist: the row is locked and its fence checked in the
        // transaction that deletes. Round trips: BEGIN, lock, delete, COMMIT (a stale fence:
        // BEGIN, lock, rollback).
        let fenced = || {
            Error::fenced(format!(
                "{key}: {fence} is not the newest fence of this conversation"
            ))
        };
        let wanted = i64::try_from(fence.0).map_err(|_| fenced())?;
        let mut tx = self.inner.pool.begin().await.map_err(db("clear: begin"))?;
        let outcome = self.clear_in(&mut tx, key, wanted, fenced).await;
        // A stale fence is rolled back now, so the row lock does not outlive the call.
        let removed = end(tx, "clear: commit", outcome).await?;
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

    async fn prune_with(&self, prune: &IdlePrune) -> Result<PruneReport> {
        self.prune_idle(prune).await
    }

    async fn erase(&self, scope: &EraseScope) -> Result<ErasureReport> {
        self.erase_scope(scope).await
    }

    async fn scan(&self, cursor: Option<&str>, limit: usize) -> Result<Page<ConversationKey>> {
        self.scan_keys(cursor, limit).await
    }

    async fn export(&self, key: &ConversationKey) -> Result<Option<Exported>> {
        self.export_head(key).await
    }

    async fn import(&self, conversation: &Exported) -> Result<Imported> {
        self.import_head(conversation).await
    }

    fn max_transcript_bytes(&self) -> usize {
        self.inner.config.max_transcript_bytes
    }
}

impl PgStore {
    /// The body of a whole-transcript persist: the row lock, the fence, the run's earlier
    /// snapshots, the planned write. `RollBack` when nothing was written (a retry).
    async fn persist_in(
        &self,
        tx: &mut PgConnection,
        key: &ConversationKey,
        write: &Persist,
    ) -> Result<Ending<i64>> {
        let sessions = &self.inner.sessions;
        let head: Option<Head> = sqlx::query_as(sessions.lock.clone())
            .bind(key.org.as_str())
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("persist: lock conversation"))?;
        let head = check_fence(key, write, head.as_ref())?;
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
        let written = self
            .write_planned(tx, key, write, head, earlier, Finish::Persist)
            .await?;
        Ok(match written {
            Written::Retry(seq) => Ending::RollBack(seq),
            Written::Stored(seq) => Ending::Commit(seq),
        })
    }

    /// The body of `clear`: lock, check the fence (`fenced` when stale), delete.
    async fn clear_in(
        &self,
        tx: &mut PgConnection,
        key: &ConversationKey,
        wanted: i64,
        fenced: impl Fn() -> Error,
    ) -> Result<Ending<i64>> {
        // Lock first: a persist in flight commits before our DELETE takes its snapshot.
        let newest: Option<i64> = sqlx::query_scalar(self.inner.sessions.clear_lock.clone())
            .bind(key.org.as_str())
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("clear: lock conversation"))?;
        if newest != Some(wanted) {
            return Err(fenced());
        }
        let removed: i64 = sqlx::query_scalar(self.inner.sessions.clear.clone())
            .bind(key.org.as_str())
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("clear"))?;
        Ok(Ending::Commit(removed))
    }
}
