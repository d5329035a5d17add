//! [`RunQueue`] on PostgreSQL (lobu-core contract v2): a claim is its conversation's
//! ownership. Claims take the conversation's fence (the `fences` sequence, shared with
//! leases) and lease in the statement that picks the run (`FOR UPDATE SKIP LOCKED`, FIFO per
//! conversation); every claim-holder call checks the run and the conversation's fence;
//! `complete` commits the transcript and the run in one transaction. Bounded attempts,
//! idempotent submits, `NOTIFY` wake-ups.
//!
//! Round trips per call (each statement or transaction control is one):
//! * `submit`: 1 (sql/submit.sql); +4 when a key used concurrently sends it to the locked
//!   transaction (BEGIN, lock, the statement again, COMMIT); with `reject`, `interrupt` or
//!   `rollback`: 5 or 6, see multitask.rs.
//! * `claim`: 1 (the claim statement). At most once a second per store, +1 for the reaper
//!   first; and when a claim finds nothing, +1 for the reaper (at most every 100 ms) and, if
//!   it reaped something, +1 for a second claim.
//! * `heartbeat`, `fail`, `release`, `cancel`: 1.
//! * `complete` without a transcript: 1; with one: 4 (BEGIN, lock and read, write the head
//!   and complete the run in one statement, COMMIT), or 1 on the fast path (commit_fast.rs).
//!   A refused or retried call costs one more lookup to say why (or to answer the first
//!   call's version). With steered runs: 5, its own path (multitask.rs); without, never more
//!   than before.
//! * `steerable`: 1, see multitask.rs.
//!
//! Cancellation (`cancel`, sql/cancel.sql) of a claimed run marks it (`cancel_requested`):
//! the claim-holder statements that extend or commit (heartbeat, complete, commit_fast) match
//! only a run without the mark, so a marked run changes nothing, and the lookup that says why
//! answers `Cancelled`; fail and release end a marked run `cancelled`.
//! * `record_events`, `read_events`: see events.rs; `prune_runs_with`, `prune_events_with`:
//!   see retention.rs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lobu_core::control::{CancelOutcome, Failure, Retry};
use lobu_core::events::EventPage;
use lobu_core::multitask::check_steered;
use lobu_core::retention::{EventPrune, RunPrune};
use lobu_core::run_state::error_text;
use lobu_core::{
    AfterFailure, Claim, Commit, ConversationKey, Error, ErrorKind, Fence, MultitaskStrategy,
    NewRun, OrgId, Page, Result, RunFilter, RunId, RunKind, RunQueue, RunRecord, RunStatus,
    Steered, Submitted, Version, WorkerId, check_lease_duration,
};
use sqlx::postgres::{PgArguments, Postgres};
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, SqlStr};
use time::OffsetDateTime;

use crate::error::{PgStoreError, stored};
use crate::multitask::{CLAIM_LANE, Lane, commit_lock_sql};
use crate::persist::{Head, RunSnapshot};
use crate::sessions::{Finish, Written, version};
use crate::store::{PgStore, db, micros, sql, system_time};

/// The reaper runs before a claim at most this often per store.
const REAP_EVERY: Duration = Duration::from_secs(1);
/// A claim that found nothing runs the reaper (and claims again if it reaped something) at
/// most this often per store: an exhausted run blocks its conversation until it is reaped.
const REAP_WHEN_IDLE: Duration = Duration::from_millis(100);

/// The queue statements, for one schema.
#[derive(Debug)]
pub(crate) struct QueueSql {
    pub(crate) submit_lock: SqlStr,
    submit: SqlStr,
    reap: SqlStr,
    claim: SqlStr,
    heartbeat: SqlStr,
    commit_lock: SqlStr,
    pub(crate) commit_fast: SqlStr,
    complete: SqlStr,
    fail: SqlStr,
    release: SqlStr,
    cancel: SqlStr,
    claim_state: SqlStr,
    status: SqlStr,
    depth: SqlStr,
}

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
            // A run whose cancellation was requested is not held by the statements that
            // extend or commit its claim; fail and release take it (and end it cancelled).
            heartbeat: claim_sql(include_str!("sql/heartbeat.sql"), schema, NOT_CANCELLED),
            commit_lock: commit_lock_sql(schema, false),
            commit_fast: claim_sql(include_str!("sql/commit_fast.sql"), schema, NOT_CANCELLED),
            complete: claim_sql(include_str!("sql/complete.sql"), schema, NOT_CANCELLED),
            fail: claim_sql(include_str!("sql/fail.sql"), schema, ""),
            release: claim_sql(include_str!("sql/release.sql"), schema, ""),
            cancel: sql(include_str!("sql/cancel.sql"), schema),
            claim_state: sql(
                "SELECT r.status, r.claimed_by, r.claim_token, r.committed_seq, \
                        r.cancel_requested, \
                        (SELECT c.fence FROM {s}.conversations c \
                          WHERE c.org = r.org AND c.agent = r.agent \
                            AND c.conversation = r.conversation) AS newest \
                   FROM {s}.runs r WHERE r.org = $1 AND r.id = $2",
                schema,
            ),
            status: sql(
                &format!("SELECT {RUN_RECORD} FROM {{s}}.runs r WHERE r.org = $1 AND r.id = $2"),
                schema,
            ),
            // Pending runs: the lanes' unfinished runs less the claimed ones, both read by
            // partial indexes (lanes with work, running runs), so sampling the depth never
            // walks the backlog. One statement, one snapshot: exact.
            depth: sql(
                "SELECT (SELECT coalesce(sum(unfinished), 0) FROM {s}.lanes \
                          WHERE unfinished > 0) \
                      - (SELECT count(*) FROM {s}.runs WHERE status = 'running')",
                schema,
            ),
        }
    }
}

/// When this store last ran the reaper: one timestamp per store (clones share it).
#[derive(Debug)]
pub(crate) struct Reaper {
    since: Instant,
    /// Milliseconds after `since` of the last run, plus one; 0: never ran.
    last: AtomicU64,
}

impl Reaper {
    pub(crate) fn new() -> Self {
        Reaper {
            since: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// Whether the reaper last ran at least `gap` ago (or never); if so, this caller takes
    /// the turn (concurrent callers do not all run it).
    fn due(&self, gap: Duration) -> bool {
        let now = u64::try_from(self.since.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        let gap = u64::try_from(gap.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < gap {
            return false;
        }
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
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
    fence: i64,
    claim_expires_at: OffsetDateTime,
    head_seq: Option<i64>,
    head_state: Option<Vec<u8>>,
}

/// A run's claim as stored (to tell a retried commit from a stale claim).
#[derive(FromRow)]
pub(crate) struct ClaimState {
    pub(crate) status: String,
    claimed_by: Option<String>,
    /// The fence of the run's newest claim (0: never claimed).
    pub(crate) claim_token: i64,
    committed_seq: Option<i64>,
    /// The reason of a cancellation requested while the run was claimed.
    cancel_requested: Option<String>,
    /// The conversation's fence (the newest issued; `None`: no conversation row).
    newest: Option<i64>,
}

impl ClaimState {
    /// `Some(version)` when this claim's commit already completed the run: a retry.
    fn committed_by(&self, claim: &Claim, fence: i64) -> Option<Option<i64>> {
        (self.status == "completed"
            && self.claimed_by.as_deref() == Some(claim.worker.as_str())
            && self.claim_token == fence)
            .then_some(self.committed_seq)
    }

    /// [`Claim::check_newest`] with the holder as stored (this claim's worker if it holds
    /// the run), then `Cancelled` if a cancellation of the run was requested.
    fn check(&self, claim: &Claim) -> Result<()> {
        let status = stored("run status", RunStatus::parse(&self.status))?;
        let holder = (self.claimed_by.as_deref() == Some(claim.worker.as_str()))
            .then(|| u64::try_from(self.claim_token).ok())
            .flatten()
            .map(|token| (&claim.worker, Fence(token)));
        let newest = self.newest.and_then(|f| u64::try_from(f).ok()).map(Fence);
        claim.check_newest(status, holder, newest)?;
        match &self.cancel_requested {
            Some(reason) => Err(Error::new(
                ErrorKind::Cancelled,
                format!("run {} was cancelled: {reason}", claim.run),
            )),
            None => Ok(()),
        }
    }

    /// Why a claim-holder statement matched nothing: `Fenced` or `Cancelled` as
    /// [`check`](Self::check) says, else (the run changed since) `Fenced`.
    fn refusal(&self, claim: &Claim) -> Error {
        self.check(claim).err().unwrap_or_else(|| stale(claim))
    }
}

/// What sql/commit_lock.sql reads under the run's and the conversation's row locks.
#[derive(FromRow)]
struct CommitRow {
    #[sqlx(flatten)]
    claim: ClaimState,
    head_seq: Option<i64>,
    head_bytes: i64,
    head_digest: Option<Vec<u8>>,
    head_state: Option<Vec<u8>>,
    base_bytes: i64,
    chain_deltas: i32,
    chain_bytes: i64,
    has_title: bool,
    earlier_seq: Vec<i64>,
    earlier_status: Vec<String>,
    earlier_size: Vec<i64>,
    earlier_digest: Vec<Vec<u8>>,
    /// The conversation's lane, read only for a commit with steered runs.
    #[sqlx(flatten)]
    lane: Lane,
}

impl CommitRow {
    fn head(&self) -> Head {
        Head {
            fence: self.claim.newest.unwrap_or(-1),
            head_seq: self.head_seq,
            head_bytes: self.head_bytes,
            head_digest: self.head_digest.clone(),
            head_state: self.head_state.clone(),
            base_bytes: self.base_bytes,
            chain_deltas: self.chain_deltas,
            chain_bytes: self.chain_bytes,
            has_title: self.has_title,
        }
    }

    fn earlier(self) -> Vec<RunSnapshot> {
        let rows = self.earlier_seq.into_iter().zip(self.earlier_status);
        let rows = rows.zip(self.earlier_size.into_iter().zip(self.earlier_digest));
        rows.map(|((seq, status), (byte_size, digest))| RunSnapshot {
            seq,
            status,
            byte_size,
            digest,
        })
        .collect()
    }
}

/// The columns of a run's record ([`RunRow`]) from `{s}.runs r`, for every statement that
/// reads one (`status`, sql/read_events.sql).
pub(crate) const RUN_RECORD: &str = "r.id, r.org, r.agent, r.conversation, r.kind, r.status, \
     r.attempts, r.max_attempts, r.error, r.output, r.payload, r.created_at, r.updated_at";

/// A run's record as [`RUN_RECORD`] reads it.
#[derive(FromRow)]
pub(crate) struct RunRow {
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

impl RunRow {
    /// The record, every stored value parsed again (`Corrupt` if one no longer parses).
    pub(crate) fn record(self) -> Result<RunRecord> {
        Ok(RunRecord {
            run: stored("run id", RunId::new(&self.id))?,
            key: stored_key(&self.org, &self.agent, &self.conversation)?,
            kind: stored("run kind", RunKind::parse(&self.kind))?,
            status: stored("run status", RunStatus::parse(&self.status))?,
            attempts: count(self.attempts),
            max_attempts: count(self.max_attempts),
            error: self.error,
            output: self.output.map(|j| j.0),
            payload: self.payload.0,
            created_at: system_time(self.created_at),
            updated_at: system_time(self.updated_at),
        })
    }
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

fn versions(seq: Option<i64>) -> Result<Option<Version>> {
    seq.map(version).transpose()
}

/// A failure message as stored: NUL (which PostgreSQL text cannot hold) replaced, then cut
/// as every backend cuts it ([`error_text`]).
fn stored_error(error: &str) -> String {
    if error.contains('\0') {
        error_text(&error.replace('\0', "\u{FFFD}"))
    } else {
        error_text(error)
    }
}

impl PgStore {
    /// sql/submit.sql with its parameters bound: the run's id, whether it was created, and
    /// for a steer run the conversation's claimed run it woke.
    pub(crate) fn submit_statement<'q>(
        &'q self,
        run: &'q NewRun,
        id: &'q RunId,
    ) -> sqlx::query::QueryAs<'q, Postgres, Submit, PgArguments> {
        let key = &run.key;
        sqlx::query_as(self.inner.queue.submit.clone())
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
            .bind(run.multitask == MultitaskStrategy::Steer)
    }

    /// [`RunQueue::complete`] without the local wake-up.
    async fn commit(&self, claim: &Claim, commit: Commit) -> Result<Option<Version>> {
        let fence = Self::fence(claim)?;
        let Commit {
            transcript,
            expected,
            output,
            base_len,
            steered,
        } = commit;
        if let Some(transcript) = &transcript {
            let len = base_len.unwrap_or(0).saturating_add(transcript.len());
            self.check_size(&claim.key, len)?;
        }
        if !steered.is_empty() {
            // The slower path of its own (multitask.rs): the lane is read and checked under
            // the locks the commit holds. Commits without steered runs never come here.
            let write = transcript.map(|t| claim.completed_write(t, expected, base_len));
            return self
                .commit_locked(claim, fence, write, output.as_ref(), &steered)
                .await;
        }
        if let Some(transcript) = transcript {
            if let (Some(expected), Some(base_len)) = (expected, base_len) {
                let fast = self.commit_fast(claim, fence, &transcript, expected, base_len, &output);
                if let Some(seq) = fast.await? {
                    return versions(Some(seq));
                }
            }
            let write = claim.completed_write(transcript, expected, base_len);
            return self
                .commit_locked(claim, fence, Some(write), output.as_ref(), &[])
                .await;
        }
        if self
            .finish(&self.inner.pool, claim, fence, output.as_ref(), None)
            .await?
        {
            return Ok(None);
        }
        match self.claim_state(claim).await? {
            Some(state) => match state.committed_by(claim, fence) {
                Some(committed) => versions(committed), // a retry of a commit that landed
                None => Err(state.refusal(claim)),
            },
            None => Err(Error::not_found(format!(
                "run {} does not exist",
                claim.run
            ))),
        }
    }

    /// The run's claim as stored, `None` if the run does not exist in the claim's org.
    pub(crate) async fn claim_state(&self, claim: &Claim) -> Result<Option<ClaimState>> {
        sqlx::query_as(self.inner.queue.claim_state.clone())
            .bind(claim.key.org.as_str())
            .bind(claim.run.as_str())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db("look up refused claim"))
    }

    /// Why a claim-holder statement matched nothing: the run is gone, the claim is stale, or
    /// the run's cancellation was requested.
    pub(crate) async fn claim_refused(&self, claim: &Claim) -> Error {
        match self.claim_state(claim).await {
            Ok(Some(state)) => state.refusal(claim),
            Ok(None) => Error::not_found(format!("run {} does not exist", claim.run)),
            Err(e) => e,
        }
    }

    /// Cancel `runs` of `org` with `reason` (already cut) in one statement (sql/cancel.sql,
    /// lobu-core's `cancel_outcome` in SQL), on `conn`: the pool for `cancel`, a submit's
    /// transaction for its strategy. Returns what became of each run the org has.
    pub(crate) async fn cancel_runs(
        &self,
        conn: impl sqlx::PgExecutor<'_>,
        org: &OrgId,
        runs: &[RunId],
        reason: &str,
    ) -> Result<Vec<(RunId, CancelOutcome)>> {
        let ids: Vec<&str> = runs.iter().map(RunId::as_str).collect();
        let rows: Vec<(String, String, String, i64)> =
            sqlx::query_as(self.inner.queue.cancel.clone())
                .bind(org.as_str())
                .bind(&ids)
                .bind(stored_error(reason))
                .bind(self.channel())
                .fetch_all(conn)
                .await
                .map_err(db("cancel"))?;
        rows.into_iter()
            .map(|(id, before, outcome, _)| {
                let outcome = match outcome.as_str() {
                    "cancelled" => CancelOutcome::Cancelled,
                    "requested" => CancelOutcome::Requested,
                    _ => CancelOutcome::Finished(stored("run status", RunStatus::parse(&before))?),
                };
                Ok((stored("run id", RunId::new(id))?, outcome))
            })
            .collect()
    }

    /// The claim's fence as stored; a fence that does not fit was never issued.
    pub(crate) fn fence(claim: &Claim) -> Result<i64> {
        i64::try_from(claim.fence.0).map_err(|_| stale(claim))
    }

    pub(crate) fn channel(&self) -> &str {
        self.inner.wakeup.channel()
    }

    /// Run the reaper once; returns how many runs it finished.
    async fn reap(&self) -> Result<i64> {
        sqlx::query_scalar(self.inner.queue.reap.clone())
            .bind(self.channel())
            .fetch_one(&self.inner.pool)
            .await
            .map_err(db("claim: reap lapsed claims"))
    }

    async fn claim_once(&self, worker: &WorkerId, lease: Duration) -> Result<Option<ClaimedRow>> {
        sqlx::query_as(self.inner.queue.claim.clone())
            .bind(worker.as_str())
            .bind(micros(lease))
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db("claim"))
    }

    /// Complete without a transcript (or after a retried head write, `committed` set):
    /// one statement that checks the claim, completes the run and ends the ownership.
    async fn finish(
        &self,
        conn: impl sqlx::PgExecutor<'_>,
        claim: &Claim,
        fence: i64,
        output: Option<&serde_json::Value>,
        committed: Option<i64>,
    ) -> Result<bool> {
        let key = &claim.key;
        let done: i64 = sqlx::query_scalar(self.inner.queue.complete.clone())
            .bind(key.org.as_str())
            .bind(claim.run.as_str())
            .bind(claim.worker.as_str())
            .bind(fence)
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .bind(output.map(Json))
            .bind(committed)
            .bind(self.channel())
            .fetch_one(conn)
            .await
            .map_err(db("complete"))?;
        Ok(done > 0)
    }

    /// The commit of a turn with a transcript, or with steered runs, in one transaction:
    /// lock and check (with steered runs, also read the lane and check what the turn took,
    /// multitask.rs), write the head and complete the run (one statement), complete the
    /// steered runs (one statement), commit. 4 round trips, 5 with steered runs.
    async fn commit_locked(
        &self,
        claim: &Claim,
        fence: i64,
        write: Option<lobu_core::Persist>,
        output: Option<&serde_json::Value>,
        steered: &[RunId],
    ) -> Result<Option<Version>> {
        let key = &claim.key;
        let mut tx = self
            .inner
            .pool
            .begin()
            .await
            .map_err(db("complete: begin"))?;
        let lock = if steered.is_empty() {
            sqlx::query_as(self.inner.queue.commit_lock.clone())
        } else {
            sqlx::query_as(self.inner.multitask.commit_lock.clone())
        };
        let lock = lock
            .bind(key.org.as_str())
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .bind(claim.run.as_str());
        let lock = if steered.is_empty() {
            lock
        } else {
            lock.bind(CLAIM_LANE)
        };
        let row: Option<CommitRow> = lock
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("complete: lock run and conversation"))?;
        let Some(row) = row else {
            return Err(Error::not_found(format!(
                "run {} does not exist",
                claim.run
            )));
        };
        if let Some(committed) = row.claim.committed_by(claim, fence) {
            return versions(committed); // this claim's commit already landed: a retry
        }
        row.claim.check(claim)?; // the run is locked: a requested cancellation refuses here
        // A taken run that was cancelled, or taken out of order, refuses the whole commit.
        check_steered(&claim.run, &row.lane.queued()?, steered)?;
        let seq = match write {
            Some(write) => Some(
                self.write_commit(&mut tx, claim, fence, write, output, row)
                    .await?,
            ),
            None => {
                if !self.finish(&mut *tx, claim, fence, output, None).await? {
                    return Err(stale(claim));
                }
                None
            }
        };
        if !steered.is_empty() {
            self.complete_steered(&mut tx, claim, steered).await?;
        }
        tx.commit().await.map_err(db("complete: commit"))?;
        for run in steered {
            // Their followers here wake now; other replicas' by the NOTIFY ('events:<run>').
            self.inner.wakeup.wake_followers(run);
        }
        versions(seq)
    }

    /// The head write of a commit in `tx` (the run and the conversation locked and checked
    /// as `row` read them), which also completes the run: one statement.
    async fn write_commit(
        &self,
        tx: &mut PgConnection,
        claim: &Claim,
        fence: i64,
        write: lobu_core::Persist,
        output: Option<&serde_json::Value>,
        row: CommitRow,
    ) -> Result<i64> {
        let head = row.head();
        let finish = Finish::Commit {
            output,
            channel: self.channel(),
        };
        let written = self
            .write_planned(tx, &claim.key, &write, &head, row.earlier(), finish)
            .await?;
        Ok(match written {
            Written::Stored(seq) => seq,
            // The run stored these bytes already (a persist before complete): complete it
            // with that version.
            Written::Retry(seq) => {
                if !self
                    .finish(&mut *tx, claim, fence, output, Some(seq))
                    .await?
                {
                    return Err(stale(claim));
                }
                seq
            }
        })
    }
}

/// Whether a cancellation changed the run (ended or marked it): its followers wake.
fn changed(outcome: CancelOutcome) -> bool {
    matches!(outcome, CancelOutcome::Cancelled | CancelOutcome::Requested)
}

/// What sql/submit.sql returns: the run's id, whether it was created, and the claimed run a
/// steer run woke.
pub(crate) type Submit = (String, bool, Option<String>);

fn stale(claim: &Claim) -> Error {
    Error::fenced(format!(
        "run {}: the claim of {} with {} is no longer the newest",
        claim.run, claim.worker, claim.fence
    ))
}

/// The extra condition of held_claim.sql for the statements that extend or commit a claim:
/// a run whose cancellation was requested is not held.
pub(crate) const NOT_CANCELLED: &str = " AND r.cancel_requested IS NULL";

/// A statement of a claim holder: `{held_claim}` becomes the check and row locks of the
/// newest claim (parameters $1–$6, see sql/held_claim.sql, with `not_cancelled` added to the
/// run's condition) and `{end_ownership}` the update that ends the conversation's ownership,
/// so the rule is written once for heartbeat, complete, fail and release.
pub(crate) fn claim_sql(template: &str, schema: &str, not_cancelled: &str) -> SqlStr {
    let held = include_str!("sql/held_claim.sql")
        .trim_end()
        .replace("{not_cancelled}", not_cancelled);
    let text = template.replace("{held_claim}", &held).replace(
        "{end_ownership}",
        include_str!("sql/end_ownership.sql").trim_end(),
    );
    sql(&text, schema)
}

#[async_trait]
impl RunQueue for PgStore {
    async fn submit(&self, run: NewRun) -> Result<Submitted> {
        run.validate()?;
        if run.multitask.looks_at_the_lane() {
            // A transaction of its own (multitask.rs): 5 or 6 round trips.
            let (submitted, cancelled) = self.submit_to_lane(&run).await?;
            for (run, outcome) in &cancelled {
                if changed(*outcome) {
                    self.inner.wakeup.run_changed(run);
                }
            }
            if submitted.created {
                // Its echo is not awaited here (the id is drawn inside): it wakes again.
                self.inner.wakeup.submitted();
            }
            return Ok(submitted);
        }
        let id = RunId::generate();
        // Awaited before the statement: the notification may come back before its answer.
        let echo = self.inner.wakeup.run_echo(&id);
        // One autocommitted statement (1 round trip); a key used concurrently by another
        // submit comes back empty, and the locked transaction below finds its run.
        let row = self
            .submit_statement(&run, &id)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db("submit"))?;
        let (stored_id, created, running) = match row {
            Some(row) => row,
            None => {
                let mut tx = self.inner.pool.begin().await.map_err(db("submit: begin"))?;
                self.lock_for_submit(&mut tx, &run.key).await?;
                let row = self
                    .submit_statement(&run, &id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db("submit"))?;
                tx.commit().await.map_err(db("submit: commit"))?;
                row
            }
        };
        if let Some(running) = running.and_then(|id| RunId::new(id).ok()) {
            // A steer run: the claimed run's followers here wake now (a hint; other
            // replicas' by the NOTIFY).
            self.inner.wakeup.wake_followers(&running);
        }
        if created {
            // This process's workers claim it now, not after the NOTIFY's round trip.
            echo.sent();
            self.inner.wakeup.submitted();
        }
        Ok(Submitted {
            run: stored("run id", RunId::new(stored_id))?,
            created,
        })
    }

    async fn claim(&self, worker: &WorkerId, lease: Duration) -> Result<Option<Claim>> {
        check_lease_duration(lease)?;
        let reaper = &self.inner.reaper;
        if reaper.due(REAP_EVERY) {
            self.reap().await?;
        }
        let mut row = self.claim_once(worker, lease).await?;
        // A lapsed last attempt blocks its conversation until it is reaped: when nothing
        // was claimable, reap (rate-limited) and look once more if that freed something.
        if row.is_none() && reaper.due(REAP_WHEN_IDLE) && self.reap().await? > 0 {
            row = self.claim_once(worker, lease).await?;
        }
        let Some(row) = row else { return Ok(None) };
        if let (Some(seq), Some(state)) = (row.head_seq, row.head_state) {
            // For this claim's commit (commit_fast.rs): it resumes the head's digest.
            self.inner.head_states.remember(seq, state);
        }
        let fence = u64::try_from(row.fence)
            .map_err(|_| PgStoreError::Corrupt(format!("negative fence {}", row.fence)))?;
        Ok(Some(Claim {
            run: stored("run id", RunId::new(&row.id))?,
            key: stored_key(&row.org, &row.agent, &row.conversation)?,
            kind: stored("run kind", RunKind::parse(&row.kind))?,
            payload: row.payload.0,
            attempt: count(row.attempts),
            max_attempts: count(row.max_attempts),
            worker: worker.clone(),
            fence: Fence(fence),
            head: versions(row.head_seq)?,
            expires_at: system_time(row.claim_expires_at),
        }))
    }

    async fn heartbeat(&self, claim: &Claim, lease: Duration) -> Result<Claim> {
        check_lease_duration(lease)?;
        let key = &claim.key;
        let expires_at: Option<OffsetDateTime> =
            sqlx::query_scalar(self.inner.queue.heartbeat.clone())
                .bind(key.org.as_str())
                .bind(claim.run.as_str())
                .bind(claim.worker.as_str())
                .bind(Self::fence(claim)?)
                .bind(key.agent.as_str())
                .bind(key.conversation.as_str())
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

    async fn complete(&self, claim: &Claim, commit: Commit) -> Result<Option<Version>> {
        let echo = self.inner.wakeup.run_echo(&claim.run);
        let version = self.commit(claim, commit).await?;
        echo.sent();
        // Followers here wake now; other replicas' by the NOTIFY the commit sent.
        self.inner.wakeup.wake_followers(&claim.run);
        Ok(version)
    }

    async fn fail(&self, claim: &Claim, failure: &Failure) -> Result<AfterFailure> {
        failure.validate()?;
        // sql/fail.sql's $10 (delay, NULL: the run's own) and $11 (retried at all).
        let (delay, retried) = match failure.retry {
            Retry::AfterRunDelay => (None, true),
            Retry::After(delay) => (Some(micros(delay)), true),
            Retry::Never => (None, false),
            // A retry added to lobu-core after this store: refused before anything is
            // written, so the claim lapses and the claim rules re-deliver the run or end it.
            other => {
                return Err(Error::invalid(format!(
                    "this version of lobu-store-pg cannot record {other:?}"
                )));
            }
        };
        let key = &claim.key;
        let echo = self.inner.wakeup.run_echo(&claim.run);
        let row: Option<(String, OffsetDateTime, i64)> =
            sqlx::query_as(self.inner.queue.fail.clone())
                .bind(key.org.as_str())
                .bind(claim.run.as_str())
                .bind(claim.worker.as_str())
                .bind(Self::fence(claim)?)
                .bind(key.agent.as_str())
                .bind(key.conversation.as_str())
                .bind(failure.status.as_str())
                .bind(stored_error(&failure.error))
                .bind(self.channel())
                .bind(delay)
                .bind(retried)
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(db("fail"))?;
        let Some((stored_status, run_at, _)) = row else {
            return Err(self.claim_refused(claim).await);
        };
        echo.sent();
        self.inner.wakeup.wake_followers(&claim.run);
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
        let key = &claim.key;
        let echo = self.inner.wakeup.run_echo(&claim.run);
        let back: i64 = sqlx::query_scalar(self.inner.queue.release.clone())
            .bind(key.org.as_str())
            .bind(claim.run.as_str())
            .bind(claim.worker.as_str())
            .bind(Self::fence(claim)?)
            .bind(key.agent.as_str())
            .bind(key.conversation.as_str())
            .bind(self.channel())
            .fetch_one(&self.inner.pool)
            .await
            .map_err(db("release run"))?;
        if back == 0 {
            return Err(self.claim_refused(claim).await);
        }
        echo.sent();
        self.inner.wakeup.wake_followers(&claim.run);
        Ok(())
    }

    async fn cancel(
        &self,
        org: &OrgId,
        run: &RunId,
        reason: &str,
    ) -> Result<Option<CancelOutcome>> {
        let reason = &lobu_core::control::cancel_reason(reason);
        let echo = self.inner.wakeup.run_echo(run);
        let runs = std::slice::from_ref(run);
        let outcome = self
            .cancel_runs(&self.inner.pool, org, runs, reason)
            .await?;
        let Some((_, outcome)) = outcome.into_iter().next() else {
            return Ok(None);
        };
        if changed(outcome) {
            // Followers and workers here wake now; other replicas' by the NOTIFY.
            echo.sent();
            self.inner.wakeup.run_changed(run);
        }
        Ok(Some(outcome))
    }

    async fn steerable(&self, claim: &Claim) -> Result<Vec<Steered>> {
        self.offer(claim).await
    }

    async fn status(&self, org: &OrgId, run: &RunId) -> Result<Option<RunRecord>> {
        let row: Option<RunRow> = sqlx::query_as(self.inner.queue.status.clone())
            .bind(org.as_str())
            .bind(run.as_str())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(db("status"))?;
        row.map(RunRow::record).transpose()
    }

    async fn runs(
        &self,
        org: &OrgId,
        filter: &RunFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<RunRecord>> {
        self.list_runs(org, filter, cursor, limit).await
    }

    async fn depth(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(self.inner.queue.depth.clone())
            .fetch_one(&self.inner.pool)
            .await
            .map_err(db("depth"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn prune_runs_with(&self, prune: &RunPrune) -> Result<u64> {
        self.prune_finished_runs(prune).await
    }

    async fn record_events(&self, claim: &Claim, events: &[String]) -> Result<u64> {
        self.append_events(claim, events).await
    }

    async fn read_events(
        &self,
        org: &OrgId,
        run: &RunId,
        after: u64,
        limit: usize,
    ) -> Result<Option<EventPage>> {
        self.event_page(org, run, after, limit).await
    }

    async fn prune_events_with(&self, prune: &EventPrune) -> Result<u64> {
        self.prune_finished_events(prune).await
    }

    async fn wait_for_work(&self, max: Duration) {
        let wait = max.min(self.inner.config.poll_interval);
        self.inner.wakeup.wait(|| self.direct_options(), wait).await;
    }

    async fn wait_for_run(&self, _org: &OrgId, run: &RunId, since: Instant, max: Duration) {
        let options = || self.direct_options();
        self.inner
            .wakeup
            .wait_for_run(options, run, since, max)
            .await;
    }
}
