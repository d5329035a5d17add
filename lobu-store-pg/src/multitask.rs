//! Double texting and steering on PostgreSQL (lobu-core's [`multitask`] rules): a submit's
//! [`MultitaskStrategy`], [`RunQueue::steerable`] and the steered runs of a [`Commit`].
//!
//! The decisions are lobu-core's: each path reads the conversation's unfinished runs (its
//! lane, sql/lane.sql) as [`Queued`] rows, asks [`multitask`], and writes the answer. The
//! `steer` flag is a column of `runs` (migration 7).
//!
//! Round trips per call (each statement or transaction control is one):
//! * `submit` with `enqueue` or `steer`: 1, as before (sql/submit.sql; a steer run also
//!   wakes the followers of the conversation's claimed run in that statement).
//! * `submit` with `reject`, `interrupt` or `rollback`: 5 (BEGIN, the conversation's submit
//!   lock, the lane read and locked, the insert, COMMIT), 6 when the plan cancels runs (one
//!   sql/cancel.sql for all of them). A refused `reject` or a matched idempotency key: 4
//!   (BEGIN, the lock, the lane read, ROLLBACK at once: see tx.rs).
//! * `steerable`: 1 (sql/steerable.sql: the claim's check and the lane); a refused claim
//!   costs one more lookup to say why.
//! * `complete` with steered runs: 5 (BEGIN, sql/commit_lock.sql with the lane, the head write
//!   or the run's completion, sql/complete_steered.sql, COMMIT), see queue.rs. A commit
//!   without steered runs never comes here and keeps its 1 or 4.
//!
//! [`multitask`]: lobu_core::multitask
//! [`MultitaskStrategy`]: lobu_core::MultitaskStrategy
//! [`RunQueue::steerable`]: lobu_core::RunQueue::steerable
//! [`Commit`]: lobu_core::Commit

use lobu_core::control::CancelOutcome;
use lobu_core::multitask::{
    MAX_STEERED, Queued, interrupted_reason, plan_submit, steerable, steered_output,
};
use lobu_core::{Claim, NewRun, Result, RunId, RunKind, RunStatus, Steered, Submitted};
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, SqlStr};

use crate::error::{PgStoreError, stored};
use crate::queue::{NOT_CANCELLED, claim_sql};
use crate::store::{PgStore, db, sql};
use crate::tx::{Ending, end};

/// The lane rows a claim's statements read: the claimed run and at most [`MAX_STEERED`] + 1
/// behind it, enough for [`steerable`] and [`check_steered`](lobu_core::multitask::check_steered).
pub(crate) const CLAIM_LANE: i64 = MAX_STEERED as i64 + 2;

/// The lane's columns ([`Lane`]) from the `lane` CTE of sql/lane.sql, oldest first.
const LANE_COLUMNS: &str = "ARRAY(SELECT id FROM lane ORDER BY seq) AS lane_ids, \
     ARRAY(SELECT kind FROM lane ORDER BY seq) AS lane_kinds, \
     ARRAY(SELECT status FROM lane ORDER BY seq) AS lane_statuses, \
     ARRAY(SELECT attempts FROM lane ORDER BY seq) AS lane_attempts, \
     ARRAY(SELECT steer FROM lane ORDER BY seq) AS lane_steers, \
     ARRAY(SELECT cancelling FROM lane ORDER BY seq) AS lane_cancelling";

/// Where a statement's lane comes from: its parameters and what it reads after.
struct LaneOf {
    agent: &'static str,
    conversation: &'static str,
    limit: &'static str,
    /// `, <cte>`: read after (and only with a row of) that CTE.
    after: &'static str,
    /// Lock the lane's rows until commit.
    lock: bool,
}

impl LaneOf {
    /// sql/lane.sql, the `lane` CTE, read as this statement reads it.
    fn cte(&self) -> String {
        let lock = if self.lock {
            "\n       FOR UPDATE OF r"
        } else {
            ""
        };
        include_str!("sql/lane.sql")
            .trim_end()
            .replace("{agent}", self.agent)
            .replace("{conversation}", self.conversation)
            .replace("{limit}", self.limit)
            .replace("{after}", self.after)
            .replace("{lock}", lock)
    }

    /// `template` with its `{lane}` CTE and `{lane_columns}` filled in.
    fn fill(&self, template: &str) -> String {
        template
            .replace("{lane}", &self.cte())
            .replace("{lane_columns}", LANE_COLUMNS)
    }
}

impl PgStore {
    /// Take the conversation's submit lock (sql/submit.sql's advisory lock) in `tx`, held
    /// until it ends: one round trip. Submits that must see the conversation's runs as they
    /// are (a repeated idempotency key, a strategy that looks at the lane) take it first.
    pub(crate) async fn lock_for_submit(
        &self,
        tx: &mut PgConnection,
        key: &lobu_core::ConversationKey,
    ) -> Result<()> {
        sqlx::query(self.inner.queue.submit_lock.clone())
            .bind(key.org.as_str())
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .execute(tx)
            .await
            .map_err(db("submit: lock conversation"))?;
        Ok(())
    }
}

/// sql/commit_lock.sql: with the lane (a commit that took steered runs, parameter $5 its
/// size) or without (every other commit, exactly as before).
pub(crate) fn commit_lock_sql(schema: &str, with_lane: bool) -> SqlStr {
    let template = include_str!("sql/commit_lock.sql");
    let text = if with_lane {
        let lane = LaneOf {
            agent: "$2",
            conversation: "$3",
            limit: "$5",
            after: ", conv",
            lock: true,
        };
        template
            .replace("{lane}", &format!(",\n{}", lane.cte()))
            .replace("{lane_columns}", &format!(",\n       {LANE_COLUMNS}"))
    } else {
        template.replace("{lane}", "").replace("{lane_columns}", "")
    };
    sql(&text, schema)
}

/// The multitask statements, for one schema.
#[derive(Debug)]
pub(crate) struct MultitaskSql {
    submit_lane: SqlStr,
    steerable: SqlStr,
    pub(crate) commit_lock: SqlStr,
    complete_steered: SqlStr,
}

impl MultitaskSql {
    pub(crate) fn new(schema: &str) -> Self {
        let submit = LaneOf {
            agent: "$2",
            conversation: "$3",
            limit: "ALL",
            after: "",
            lock: true,
        };
        let claimed = LaneOf {
            agent: "$5",
            conversation: "$6",
            limit: "$7",
            after: ", owner",
            lock: false,
        };
        let steerable = claimed.fill(include_str!("sql/steerable.sql"));
        MultitaskSql {
            submit_lane: sql(&submit.fill(include_str!("sql/submit_lane.sql")), schema),
            steerable: claim_sql(&steerable, schema, NOT_CANCELLED),
            commit_lock: commit_lock_sql(schema, true),
            complete_steered: sql(include_str!("sql/complete_steered.sql"), schema),
        }
    }
}

/// A conversation's lane as [`LANE_COLUMNS`] reads it (absent columns: an empty lane, for
/// the statements that read none).
#[derive(FromRow, Default)]
pub(crate) struct Lane {
    #[sqlx(default)]
    lane_ids: Vec<String>,
    #[sqlx(default)]
    lane_kinds: Vec<String>,
    #[sqlx(default)]
    lane_statuses: Vec<String>,
    #[sqlx(default)]
    lane_attempts: Vec<i32>,
    #[sqlx(default)]
    lane_steers: Vec<bool>,
    #[sqlx(default)]
    lane_cancelling: Vec<bool>,
}

impl Lane {
    /// The runs as lobu-core's rules take them, every stored value parsed again.
    pub(crate) fn queued(&self) -> Result<Vec<Queued>> {
        let n = self.lane_ids.len();
        let lengths = [
            self.lane_kinds.len(),
            self.lane_statuses.len(),
            self.lane_attempts.len(),
            self.lane_steers.len(),
            self.lane_cancelling.len(),
        ];
        if lengths.iter().any(|&len| len != n) {
            return Err(PgStoreError::Corrupt("a lane's columns differ in length".into()).into());
        }
        (0..n)
            .map(|i| {
                let attempts = self.lane_attempts[i];
                Ok(Queued {
                    run: stored("run id", RunId::new(&self.lane_ids[i]))?,
                    kind: stored("run kind", RunKind::parse(&self.lane_kinds[i]))?,
                    status: stored("run status", RunStatus::parse(&self.lane_statuses[i]))?,
                    attempts: u32::try_from(attempts).map_err(|_| {
                        PgStoreError::Corrupt(format!("a run with {attempts} attempts"))
                    })?,
                    steer: self.lane_steers[i],
                    cancel_requested: self.lane_cancelling[i],
                })
            })
            .collect()
    }
}

/// What sql/submit_lane.sql reads.
#[derive(FromRow)]
struct SubmitLane {
    existing: Option<String>,
    #[sqlx(flatten)]
    lane: Lane,
}

/// What sql/steerable.sql reads.
#[derive(FromRow)]
struct Offer {
    #[sqlx(flatten)]
    lane: Lane,
    payloads: Option<Json<Vec<serde_json::Value>>>,
}

impl PgStore {
    /// A submit whose strategy looks at the lane (`reject`, `interrupt`, `rollback`), in one
    /// transaction under the conversation's submit lock: the key's earlier run if it has one
    /// (and nothing else), else [`plan_submit`] on the locked lane, its cancellations (as
    /// `cancel` makes them, sql/cancel.sql) and the insert (sql/submit.sql), or nothing at
    /// all when the plan is `Conflict`. Returns what was submitted and the runs cancelled.
    pub(crate) async fn submit_to_lane(
        &self,
        run: &NewRun,
    ) -> Result<(Submitted, Vec<(RunId, CancelOutcome)>)> {
        let mut tx = self.inner.pool.begin().await.map_err(db("submit: begin"))?;
        let outcome = self.lane_submit(&mut tx, run).await;
        // Refused or answered from the key: rolled back now, not when the connection is next
        // used, so the lane's locks do not outlive the call (see tx.rs).
        end(tx, "submit: commit", outcome).await
    }

    async fn lane_submit(
        &self,
        tx: &mut PgConnection,
        run: &NewRun,
    ) -> Result<Ending<(Submitted, Vec<(RunId, CancelOutcome)>)>> {
        let key = &run.key;
        self.lock_for_submit(&mut *tx, key).await?;
        let read: SubmitLane = sqlx::query_as(self.inner.multitask.submit_lane.clone())
            .bind(key.org.as_str())
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .bind(run.idempotency_key.as_ref().map(|k| k.as_str()))
            .fetch_one(&mut *tx)
            .await
            .map_err(db("submit: read the conversation's runs"))?;
        if let Some(existing) = read.existing {
            let run = stored("run id", RunId::new(existing))?;
            let earlier = Submitted {
                run,
                created: false,
            };
            return Ok(Ending::RollBack((earlier, Vec::new())));
        }
        let cancel = plan_submit(run.multitask, &read.lane.queued()?)?;
        let id = RunId::generate();
        let cancelled = if cancel.is_empty() {
            Vec::new()
        } else {
            let reason = interrupted_reason(run.multitask, &id);
            self.cancel_runs(&mut *tx, &key.org, &cancel, &reason)
                .await?
        };
        let (stored_id, created, _) = self
            .submit_statement(run, &id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("submit"))?;
        let run = stored("run id", RunId::new(stored_id))?;
        Ok(Ending::Commit((Submitted { run, created }, cancelled)))
    }

    /// [`RunQueue::steerable`](lobu_core::RunQueue::steerable): one statement, and one
    /// lookup more to say why a claim was refused.
    pub(crate) async fn offer(&self, claim: &Claim) -> Result<Vec<Steered>> {
        let key = &claim.key;
        let offer: Option<Offer> = sqlx::query_as(self.inner.multitask.steerable.clone())
            .bind(key.org.as_str())
            .bind(claim.run.as_str())
            .bind(claim.worker.as_str())
            .bind(Self::fence(claim)?)
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .bind(CLAIM_LANE)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db("steerable"))?;
        let Some(offer) = offer else {
            return Err(self.claim_refused(claim).await);
        };
        let lane = offer.lane.queued()?;
        let mut payloads = offer.payloads.map(|p| p.0).unwrap_or_default();
        if payloads.len() != lane.len() {
            return Err(PgStoreError::Corrupt("a lane without its payloads".into()).into());
        }
        let offered = steerable(&claim.run, &lane);
        offered
            .into_iter()
            .map(|run| {
                let at = lane.iter().position(|queued| queued.run == run);
                let payload = at.map(|i| std::mem::take(&mut payloads[i]));
                match payload {
                    Some(payload) if payload.is_object() => Ok(Steered { run, payload }),
                    _ => {
                        Err(PgStoreError::Corrupt(format!("steer run {run} has no payload")).into())
                    }
                }
            })
            .collect()
    }

    /// Complete the steered runs of `claim`'s commit, in its transaction (their rows locked
    /// and checked by then): 1 statement.
    pub(crate) async fn complete_steered(
        &self,
        tx: &mut PgConnection,
        claim: &Claim,
        steered: &[RunId],
    ) -> Result<()> {
        let ids: Vec<&str> = steered.iter().map(RunId::as_str).collect();
        let done: i64 = sqlx::query_scalar(self.inner.multitask.complete_steered.clone())
            .bind(claim.key.org.as_str())
            .bind(&ids)
            .bind(Json(steered_output(&claim.run)))
            .bind(self.channel())
            .fetch_one(tx)
            .await
            .map_err(db("complete: steered runs"))?;
        if usize::try_from(done).ok() != Some(steered.len()) {
            return Err(PgStoreError::Corrupt(format!(
                "{done} of {} checked steered runs completed",
                steered.len()
            ))
            .into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_has_its_lane_and_claim_check_filled_in() {
        let statements = MultitaskSql::new("lobu");
        for statement in [
            &statements.submit_lane,
            &statements.steerable,
            &statements.commit_lock,
            &statements.complete_steered,
        ] {
            let text = statement.as_str();
            assert!(!text.contains('{'), "a placeholder left in {text}");
            assert!(text.contains("lobu.runs"), "{text}");
        }
        // The submit's and the commit's lanes are locked; a look locks none of it.
        assert!(statements.submit_lane.as_str().contains("FOR UPDATE OF r"));
        assert!(statements.commit_lock.as_str().contains("FOR UPDATE OF r"));
        assert!(statements.commit_lock.as_str().contains("LIMIT $5"));
        let look = statements.steerable.as_str();
        assert!(look.contains("LIMIT $7") && !look.contains("FOR UPDATE OF r"));
    }

    #[test]
    fn a_commit_without_steered_runs_reads_no_lane() {
        let plain = commit_lock_sql("lobu", false);
        let text = plain.as_str();
        assert!(!text.contains('{'), "{text}");
        assert!(
            !text.contains("lane AS") && !text.contains("lane_ids"),
            "{text}"
        );
        assert!(!text.contains("LIMIT $5"), "{text}");
    }
}
