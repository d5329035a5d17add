//! [`RunQueue`] on PostgreSQL: `FOR UPDATE SKIP LOCKED` claims with leases and tokens,
//! per-conversation FIFO, bounded attempts, idempotent submits, `NOTIFY` wake-ups.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use lobu_core::{
    AfterFailure, Claim, ConversationKey, Error, NewRun, OrgId, Result, RunId, RunKind, RunQueue,
    RunRecord, RunStatus, Submitted, TerminalStatus, WorkerId, check_lease_duration,
};
use sqlx::types::Json;
use sqlx::{FromRow, SqlStr};
use time::OffsetDateTime;

use crate::error::{PgStoreError, stored};
use crate::store::{PgStore, db, micros, offset_date_time, sql, system_time};

/// The longest failure message kept; longer ones are cut at a character boundary.
const MAX_ERROR_BYTES: usize = 16 * 1024;

/// The queue statements, for one schema.
#[derive(Debug)]
pub(crate) struct QueueSql {
    submit_lock: SqlStr,
    submit: SqlStr,
    reap: SqlStr,
    claim: SqlStr,
    heartbeat: SqlStr,
    complete: SqlStr,
    fail: SqlStr,
    release: SqlStr,
    exists: SqlStr,
    status: SqlStr,
    depth: SqlStr,
    prune: SqlStr,
}

/// "After this claim's fence": every claim-holder statement matches the newest claim only.
const CLAIMED: &str = "org = $1 AND id = $2 AND status = 'running' \
                       AND claimed_by = $3 AND claim_token = $4";

impl QueueSql {
    pub(crate) fn new(schema: &str) -> Self {
        QueueSql {
            // Serialises submits per conversation for the length of the transaction (never a
            // session lock, so poolers are fine). Two-key form in a namespace of our own
            // ('lbrq'), so it cannot meet sqlx's migration lock or a host's bigint keys; a
            // hash collision only makes two submits take turns.
            submit_lock: sql(
                "SELECT pg_advisory_xact_lock(1818391153, \
                     hashtext(concat_ws(chr(31), '{s}', $1::text, $2::text, $3::text)))",
                schema,
            ),
            submit: sql(include_str!("sql/submit.sql"), schema),
            reap: sql(include_str!("sql/reap.sql"), schema),
            claim: sql(include_str!("sql/claim.sql"), schema),
            // The CTE takes the run's row lock before the new expiry is computed (a plain
            // UPDATE computes it before waiting), so a heartbeat that waited for the row
            // still gets its full lease from when it got the row.
            heartbeat: sql(
                &format!(
                    "WITH held AS MATERIALIZED ( \
                         SELECT id FROM {{s}}.runs WHERE {CLAIMED} FOR UPDATE) \
                     UPDATE {{s}}.runs r \
                        SET claim_expires_at = clock_timestamp() + $5 * interval '1 microsecond', \
                            updated_at = now() \
                       FROM held WHERE r.id = held.id RETURNING r.claim_expires_at"
                ),
                schema,
            ),
            complete: sql(
                &format!(
                    "WITH done AS ( \
                         UPDATE {{s}}.runs \
                            SET status = 'completed', output = $5, claimed_by = NULL, \
                                claim_expires_at = NULL, finished_at = now(), updated_at = now() \
                          WHERE {CLAIMED} RETURNING id) \
                     SELECT count(pg_notify($6, '')) FROM done"
                ),
                schema,
            ),
            fail: sql(include_str!("sql/fail.sql"), schema),
            // Hand back without counting the attempt (graceful shutdown, a busy lease).
            release: sql(
                &format!(
                    "WITH back AS ( \
                         UPDATE {{s}}.runs \
                            SET status = 'pending', attempts = attempts - 1, run_at = now(), \
                                claimed_by = NULL, claim_expires_at = NULL, updated_at = now() \
                          WHERE {CLAIMED} RETURNING id) \
                     SELECT count(pg_notify($5, '')) FROM back"
                ),
                schema,
            ),
            exists: sql("SELECT 1 FROM {s}.runs WHERE org = $1 AND id = $2", schema),
            status: sql(
                "SELECT id, org, agent, conversation, kind, status, attempts, max_attempts, \
                        error, output, payload, created_at, updated_at \
                   FROM {s}.runs WHERE org = $1 AND id = $2",
                schema,
            ),
            depth: sql(
                "SELECT count(*) FROM {s}.runs WHERE status = 'pending'",
                schema,
            ),
            prune: sql("DELETE FROM {s}.runs WHERE finished_at < $1", schema),
        }
    }
}

#[derive(FromRow)]
struct ClaimedRow {
    id: String,
    org: String,
    agent: String,
    conversation: String,
    kind: String,
    payload: Json<serde_json::Value>,
    attempts: i32,
    max_attempts: i32,
    claim_token: i64,
    claim_expires_at: OffsetDateTime,
}

#[derive(FromRow)]
struct RunRow {
    id: String,
    org: String,
    agent: String,
    conversation: String,
    kind: String,
    status: String,
    attempts: i32,
    max_attempts: i32,
    error: Option<String>,
    output: Option<Json<serde_json::Value>>,
    payload: Json<serde_json::Value>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

fn stored_key(org: &str, agent: &str, conversation: &str) -> Result<ConversationKey> {
    stored(
        "conversation key",
        ConversationKey::parse(org, agent, conversation),
    )
}

fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// A failure message as stored: NUL (which PostgreSQL text cannot hold) replaced, and cut to
/// [`MAX_ERROR_BYTES`] so one runaway message cannot bloat the queue.
fn error_text(error: &str) -> String {
    let mut text = error.replace('\0', "\u{FFFD}");
    if text.len() > MAX_ERROR_BYTES {
        let mut cut = MAX_ERROR_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

impl PgStore {
    /// Why a claim-holder statement matched nothing: the run is gone, or the claim is stale.
    async fn claim_refused(&self, claim: &Claim) -> Error {
        let found = sqlx::query(self.inner.queue.exists.clone())
            .bind(claim.key.org.as_str())
            .bind(claim.run.as_str())
            .fetch_optional(&self.inner.pool)
            .await;
        match found {
            Ok(Some(_)) => Error::fenced(format!(
                "run {}: the claim of {} (token {}) is no longer the newest",
                claim.run, claim.worker, claim.token
            )),
            Ok(None) => Error::not_found(format!("run {} does not exist", claim.run)),
            Err(e) => db("look up refused claim")(e),
        }
    }

    /// The claim's token as stored; a token that does not fit was never handed out.
    fn token(claim: &Claim) -> Result<i64> {
        i64::try_from(claim.token).map_err(|_| {
            Error::fenced(format!(
                "run {}: token {} was never issued",
                claim.run, claim.token
            ))
        })
    }

    fn channel(&self) -> &str {
        self.inner.wakeup.channel()
    }
}

#[async_trait]
impl RunQueue for PgStore {
    async fn submit(&self, run: NewRun) -> Result<Submitted> {
        run.validate()?;
        let key = &run.key;
        let id = RunId::generate();
        let queue = &self.inner.queue;
        let mut tx = self.inner.pool.begin().await.map_err(db("submit: begin"))?;
        sqlx::query(queue.submit_lock.clone())
            .bind(key.org.as_str())
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db("submit: lock conversation"))?;
        let (stored_id, created): (String, bool) = sqlx::query_as(queue.submit.clone())
            .bind(key.org.as_str())
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .bind(id.as_str())
            .bind(run.idempotency_key.as_ref().map(|k| k.as_str()))
            .bind(run.kind.as_str())
            .bind(Json(&run.payload))
            .bind(i32::try_from(run.max_attempts).unwrap_or(i32::MAX))
            .bind(micros(run.retry_delay))
            .bind(self.channel())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("submit"))?;
        tx.commit().await.map_err(db("submit: commit"))?;
        Ok(Submitted {
            run: stored("run id", RunId::new(stored_id))?,
            created,
        })
    }

    async fn claim(&self, worker: &WorkerId, lease: Duration) -> Result<Option<Claim>> {
        check_lease_duration(lease)?;
        let queue = &self.inner.queue;
        sqlx::query(queue.reap.clone())
            .bind(self.channel())
            .execute(&self.inner.pool)
            .await
            .map_err(db("claim: fail lapsed last attempts"))?;
        let row: Option<ClaimedRow> = sqlx::query_as(queue.claim.clone())
            .bind(worker.as_str())
            .bind(micros(lease))
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db("claim"))?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Claim {
            run: stored("run id", RunId::new(&row.id))?,
            key: stored_key(&row.org, &row.agent, &row.conversation)?,
            kind: stored("run kind", RunKind::parse(&row.kind))?,
            payload: row.payload.0,
            attempt: count(row.attempts),
            max_attempts: count(row.max_attempts),
            worker: worker.clone(),
            token: u64::try_from(row.claim_token).map_err(|_| {
                PgStoreError::Corrupt(format!("negative claim token {}", row.claim_token))
            })?,
            expires_at: system_time(row.claim_expires_at),
        }))
    }

    async fn heartbeat(&self, claim: &Claim, lease: Duration) -> Result<Claim> {
        check_lease_duration(lease)?;
        let expires_at: Option<OffsetDateTime> =
            sqlx::query_scalar(self.inner.queue.heartbeat.clone())
                .bind(claim.key.org.as_str())
                .bind(claim.run.as_str())
                .bind(claim.worker.as_str())
                .bind(Self::token(claim)?)
                .bind(micros(lease))
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(db("heartbeat"))?;
        match expires_at {
            Some(at) => Ok(Claim {
                expires_at: system_time(at),
                ..claim.clone()
            }),
            None => Err(self.claim_refused(claim).await),
        }
    }

    async fn complete(&self, claim: &Claim, output: Option<serde_json::Value>) -> Result<()> {
        let done: i64 = sqlx::query_scalar(self.inner.queue.complete.clone())
            .bind(claim.key.org.as_str())
            .bind(claim.run.as_str())
            .bind(claim.worker.as_str())
            .bind(Self::token(claim)?)
            .bind(output.map(Json))
            .bind(self.channel())
            .fetch_one(&self.inner.pool)
            .await
            .map_err(db("complete"))?;
        if done == 0 {
            return Err(self.claim_refused(claim).await);
        }
        Ok(())
    }

    async fn fail(
        &self,
        claim: &Claim,
        status: TerminalStatus,
        error: &str,
    ) -> Result<AfterFailure> {
        lobu_core::check_failure_status(status)?;
        let row: Option<(String, OffsetDateTime, i64)> =
            sqlx::query_as(self.inner.queue.fail.clone())
                .bind(claim.key.org.as_str())
                .bind(claim.run.as_str())
                .bind(claim.worker.as_str())
                .bind(Self::token(claim)?)
                .bind(status.as_str())
                .bind(error_text(error))
                .bind(self.channel())
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(db("fail"))?;
        let Some((stored_status, run_at, _)) = row else {
            return Err(self.claim_refused(claim).await);
        };
        Ok(
            match stored("run status", RunStatus::parse(&stored_status))? {
                RunStatus::Pending => AfterFailure::Retry {
                    at: system_time(run_at),
                },
                terminal => AfterFailure::Final(terminal),
            },
        )
    }

    async fn release(&self, claim: &Claim) -> Result<()> {
        let back: i64 = sqlx::query_scalar(self.inner.queue.release.clone())
            .bind(claim.key.org.as_str())
            .bind(claim.run.as_str())
            .bind(claim.worker.as_str())
            .bind(Self::token(claim)?)
            .bind(self.channel())
            .fetch_one(&self.inner.pool)
            .await
            .map_err(db("release run"))?;
        if back == 0 {
            return Err(self.claim_refused(claim).await);
        }
        Ok(())
    }

    async fn status(&self, org: &OrgId, run: &RunId) -> Result<Option<RunRecord>> {
        let row: Option<RunRow> = sqlx::query_as(self.inner.queue.status.clone())
            .bind(org.as_str())
            .bind(run.as_str())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db("status"))?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(RunRecord {
            run: stored("run id", RunId::new(&row.id))?,
            key: stored_key(&row.org, &row.agent, &row.conversation)?,
            kind: stored("run kind", RunKind::parse(&row.kind))?,
            status: stored("run status", RunStatus::parse(&row.status))?,
            attempts: count(row.attempts),
            max_attempts: count(row.max_attempts),
            error: row.error,
            output: row.output.map(|j| j.0),
            payload: row.payload.0,
            created_at: system_time(row.created_at),
            updated_at: system_time(row.updated_at),
        }))
    }

    async fn depth(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(self.inner.queue.depth.clone())
            .fetch_one(&self.inner.pool)
            .await
            .map_err(db("depth"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn prune_runs(&self, before: SystemTime) -> Result<u64> {
        let removed = sqlx::query(self.inner.queue.prune.clone())
            .bind(offset_date_time(before))
            .execute(&self.inner.pool)
            .await
            .map_err(db("prune_runs"))?
            .rows_affected();
        Ok(removed)
    }

    async fn wait_for_work(&self, max: Duration) {
        let wait = max.min(self.inner.config.poll_interval);
        self.inner.wakeup.wait(|| self.direct_options(), wait).await;
    }
}
