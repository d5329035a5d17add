//! [`RunQueue`]: accepted turns, durable before `submit` returns.

use std::fmt::Debug;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::control::{CancelOutcome, Failure};
use crate::error::{Error, Result};
use crate::events::EventPage;
use crate::id::{AgentId, ConversationKey, IdempotencyKey, OrgId, RunId, WorkerId};
use crate::lock::Fence;
use crate::multitask::MultitaskStrategy;
use crate::retention::{EventPrune, RunPrune};
use crate::session::{Page, TerminalStatus, Version};

/// The most attempts a run may be given.
pub const MAX_ATTEMPTS: u32 = 100;
/// The longest retry delay.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(24 * 60 * 60);
/// The largest run payload, in bytes of JSON.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunKind {
    /// One agent turn.
    Turn,
    /// Forget the conversation: clear the store and every cached copy, write no snapshot.
    Reset,
}

impl RunKind {
    /// `turn` or `reset`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Turn => "turn",
            RunKind::Reset => "reset",
        }
    }

    /// Parse `turn` or `reset`; anything else is `InvalidInput`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "turn" => Ok(RunKind::Turn),
            "reset" => Ok(RunKind::Reset),
            other => Err(Error::invalid(format!("unknown run kind {other:?}"))),
        }
    }
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// Waiting to be claimed (new, handed back, or waiting out a retry delay).
    Pending,
    /// Claimed by a worker.
    Running,
    /// Finished successfully.
    Completed,
    /// Failed after its last attempt.
    Failed,
    /// Timed out on its last attempt.
    Timeout,
    /// Cancelled on its last attempt.
    Cancelled,
}

impl RunStatus {
    /// lobu's spelling: `pending`, `running`, `completed`, `failed`, `timeout`, `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Timeout => "timeout",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Parse lobu's spelling; anything else is `Corrupt` (it only comes from storage).
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pending" => RunStatus::Pending,
            "running" => RunStatus::Running,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "timeout" => RunStatus::Timeout,
            "cancelled" => RunStatus::Cancelled,
            other => return Err(Error::corrupt(format!("unknown run status {other:?}"))),
        })
    }

    /// Whether the run is over.
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Pending | RunStatus::Running)
    }
}

impl From<TerminalStatus> for RunStatus {
    fn from(s: TerminalStatus) -> Self {
        match s {
            TerminalStatus::Completed => RunStatus::Completed,
            TerminalStatus::Failed => RunStatus::Failed,
            TerminalStatus::Timeout => RunStatus::Timeout,
            TerminalStatus::Cancelled => RunStatus::Cancelled,
        }
    }
}

/// A run to submit.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// The conversation it belongs to.
    pub key: ConversationKey,
    /// Turn or reset.
    pub kind: RunKind,
    /// The host's payload (the user message and anything else), stored as a JSON object and
    /// handed back unchanged, unknown fields included.
    pub payload: serde_json::Value,
    /// Makes a retried submit return the first submit's run instead of a new one. Scoped to
    /// the conversation.
    pub idempotency_key: Option<IdempotencyKey>,
    /// How many times the run may be claimed before it fails for good (`1..=100`).
    pub max_attempts: u32,
    /// How long a failed attempt waits before the next (`<= 24h`).
    pub retry_delay: Duration,
    /// What to do about the conversation's unfinished runs (double texting); `Enqueue` by
    /// default.
    pub multitask: MultitaskStrategy,
}

impl NewRun {
    /// A turn with defaults: 3 attempts, 2 s retry delay, no idempotency key.
    pub fn turn(key: ConversationKey, payload: serde_json::Value) -> Self {
        NewRun {
            key,
            kind: RunKind::Turn,
            payload,
            idempotency_key: None,
            max_attempts: 3,
            retry_delay: Duration::from_secs(2),
            multitask: MultitaskStrategy::Enqueue,
        }
    }

    /// The same run with another [`MultitaskStrategy`].
    pub fn multitask(mut self, strategy: MultitaskStrategy) -> Self {
        self.multitask = strategy;
        self
    }

    /// A reset with defaults.
    pub fn reset(key: ConversationKey) -> Self {
        NewRun {
            kind: RunKind::Reset,
            ..NewRun::turn(key, serde_json::json!({}))
        }
    }

    /// Check attempts, delay and payload; every backend calls this first in `submit`.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS {
            return Err(Error::invalid(format!(
                "max_attempts must be between 1 and {MAX_ATTEMPTS}, got {}",
                self.max_attempts
            )));
        }
        if self.retry_delay > MAX_RETRY_DELAY {
            return Err(Error::invalid("retry_delay must be at most 24h"));
        }
        if !self.payload.is_object() {
            return Err(Error::invalid("run payload must be a JSON object"));
        }
        if has_nul(&self.payload) {
            // Every backend must store the payload as it is; PostgreSQL's jsonb cannot hold
            // `\u0000`, so it is refused everywhere rather than only on some stores.
            return Err(Error::invalid(
                "run payload must not contain NUL characters (\\u0000)",
            ));
        }
        let size = serde_json::to_vec(&self.payload)?.len();
        if size > MAX_PAYLOAD_BYTES {
            return Err(Error::too_large(format!(
                "run payload is {size} bytes; the limit is {MAX_PAYLOAD_BYTES}"
            )));
        }
        Ok(())
    }
}

/// Check the status passed to [`RunQueue::fail`]: failed, timeout or cancelled. `Completed`
/// is `InvalidInput` (a success goes through [`RunQueue::complete`]). Every backend calls this
/// first in `fail`.
pub fn check_failure_status(status: TerminalStatus) -> Result<()> {
    if status == TerminalStatus::Completed {
        return Err(Error::invalid(
            "fail takes failed, timeout or cancelled; use complete for a completed run",
        ));
    }
    Ok(())
}

/// Whether any string (or key) in `value` contains a NUL character.
fn has_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// What `submit` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The run (the earlier one, when the idempotency key matched).
    pub run: RunId,
    /// `false` when an earlier submit with the same idempotency key was found.
    pub created: bool,
}

/// A claim on a run: proof that this worker owns the run's conversation for this attempt.
///
/// Claiming a run makes the claimer the conversation's owner (contract v2): the claim carries
/// the conversation's [`Fence`], drawn from the same per-conversation sequence as
/// [`ConversationLocks`](crate::ConversationLocks) leases, so it only grows and is never
/// reused (not after a reset or a prune either). Every write the run makes — `persist`,
/// `clear`, `complete`, `fail`, `release` — carries this fence and is refused with `Fenced`
/// once a newer claim (or lease) of the conversation exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The run.
    pub run: RunId,
    /// Its conversation.
    pub key: ConversationKey,
    /// Turn or reset.
    pub kind: RunKind,
    /// The payload as submitted.
    pub payload: serde_json::Value,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// The run's attempt limit.
    pub max_attempts: u32,
    /// Who holds the claim.
    pub worker: WorkerId,
    /// The conversation's fence for this claim: pass it to
    /// [`SessionStore::persist`](crate::SessionStore::persist) and
    /// [`SessionStore::clear`](crate::SessionStore::clear).
    pub fence: Fence,
    /// The conversation's head version when the run was claimed (`None`: no head). A worker
    /// whose cached copy has this version need not read the transcript again: nobody else
    /// can move the head while the claim is held.
    pub head: Option<Version>,
    /// When the claim lapses unless heartbeated, by the store's clock (informational: a
    /// worker measures its own deadlines on its local monotonic clock).
    pub expires_at: SystemTime,
}

impl Claim {
    /// The completed write a commit of this claim makes: its run's `transcript` over the
    /// head `expected`, under the claim's fence (what `complete` checks as `persist` would).
    pub fn completed_write(
        &self,
        transcript: bytes::Bytes,
        expected: Option<Version>,
        base_len: Option<usize>,
    ) -> crate::Persist {
        crate::Persist {
            run: self.run.clone(),
            status: crate::TerminalStatus::Completed,
            transcript,
            expected,
            fence: self.fence,
            base_len,
        }
    }

    /// `Fenced` unless this claim is the newest claim of its run and of its conversation: the
    /// run is `Running`, held by this claim's worker under this claim's fence, and no newer
    /// fence was issued for the conversation (`newest`). Backends call this before every
    /// claim-fenced change.
    pub fn check_newest(
        &self,
        status: RunStatus,
        holder: Option<(&WorkerId, Fence)>,
        newest: Option<Fence>,
    ) -> Result<()> {
        let held = status == RunStatus::Running
            && holder.is_some_and(|(worker, fence)| *worker == self.worker && fence == self.fence)
            && newest == Some(self.fence);
        if held {
            Ok(())
        } else {
            Err(Error::fenced(format!(
                "claim of run {} by {} with {} is no longer the newest",
                self.run, self.worker, self.fence
            )))
        }
    }
}

/// What the end of a successful run writes, as one commit with the run's completion.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// The run's whole transcript after the turn (with [`base_len`](Commit::base_len): only
    /// the bytes the turn appended), to become the head; `None` for a run that writes none
    /// (a reset, or a turn that appended nothing).
    pub transcript: Option<bytes::Bytes>,
    /// The head version the turn started from (`None`: no head); checked like
    /// [`Persist::expected`](crate::Persist::expected). Ignored without a transcript.
    pub expected: Option<Version>,
    /// What the worker reports (e.g. `{"deleted": 3}` for a reset).
    pub output: Option<serde_json::Value>,
    /// `Some(n)`: an append, as [`Persist::base_len`](crate::Persist::base_len): the transcript is the first `n` bytes
    /// of the `expected` head followed by `transcript`, so the commit sends and hashes only
    /// what the turn appended. `None`: `transcript` is whole.
    pub base_len: Option<usize>,
    /// Steered runs the turn took (see [`RunQueue::steerable`]), in the order it took them:
    /// they complete with this commit, atomically.
    pub steered: Vec<RunId>,
}

impl Commit {
    /// A commit that writes `transcript` over the head `expected`.
    pub fn transcript(transcript: bytes::Bytes, expected: Option<Version>) -> Self {
        Commit {
            transcript: Some(transcript),
            expected,
            ..Commit::default()
        }
    }

    /// A commit that writes the first `base_len` bytes of the head `expected` (all of it,
    /// for a turn that only appended) followed by `appended`.
    pub fn append(appended: bytes::Bytes, expected: Option<Version>, base_len: usize) -> Self {
        Commit {
            base_len: Some(base_len),
            ..Commit::transcript(appended, expected)
        }
    }

    /// The transcript's length: the base and the appended bytes of an append.
    pub fn transcript_len(&self) -> Option<usize> {
        let appended = self.transcript.as_ref()?.len();
        Some(self.base_len.unwrap_or(0).saturating_add(appended))
    }

    /// A commit that only reports `output` (no transcript).
    pub fn output(output: Option<serde_json::Value>) -> Self {
        Commit {
            output,
            ..Commit::default()
        }
    }
}

/// A message waiting for the running turn, as [`RunQueue::steerable`] offers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steered {
    /// Its run (submitted with [`MultitaskStrategy::Steer`]).
    pub run: RunId,
    /// Its payload as submitted.
    pub payload: serde_json::Value,
}

impl Steered {
    /// The message: the payload's `text` field (empty if it has none).
    pub fn text(&self) -> &str {
        self.payload
            .get("text")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
    }
}

/// A run as [`RunQueue::status`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run.
    pub run: RunId,
    /// Its conversation.
    pub key: ConversationKey,
    /// Turn or reset.
    pub kind: RunKind,
    /// Where it is.
    pub status: RunStatus,
    /// How many attempts have started.
    pub attempts: u32,
    /// The attempt limit.
    pub max_attempts: u32,
    /// The last failure's message, if any.
    pub error: Option<String>,
    /// What the worker reported on completion (e.g. `{"deleted": 3}` for a reset).
    pub output: Option<serde_json::Value>,
    /// The payload as submitted.
    pub payload: serde_json::Value,
    /// When it was submitted.
    #[serde(with = "crate::time_serde")]
    pub created_at: SystemTime,
    /// When it last changed.
    #[serde(with = "crate::time_serde")]
    pub updated_at: SystemTime,
}

/// Which runs [`RunQueue::runs`] lists: all of an org's by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only this agent's runs.
    pub agent: Option<AgentId>,
    /// Only runs in one of these states (empty: any).
    pub statuses: Vec<RunStatus>,
}

impl RunFilter {
    /// Every run of the org.
    pub fn all() -> Self {
        RunFilter::default()
    }

    /// Runs not finished yet: pending (waiting, or waiting out a retry) and running.
    pub fn unfinished() -> Self {
        RunFilter::all().statuses([RunStatus::Pending, RunStatus::Running])
    }

    /// Runs that ended without completing: failed, timed out or cancelled.
    pub fn failed() -> Self {
        RunFilter::all().statuses([RunStatus::Failed, RunStatus::Timeout, RunStatus::Cancelled])
    }

    /// Only `agent`'s runs.
    pub fn agent(mut self, agent: AgentId) -> Self {
        self.agent = Some(agent);
        self
    }

    /// Only runs in these states (added to those already asked for).
    pub fn statuses(mut self, statuses: impl IntoIterator<Item = RunStatus>) -> Self {
        self.statuses.extend(statuses);
        self
    }

    /// Whether the filter takes `record` (the rule every backend applies; SQL backends say
    /// the same in their `WHERE`).
    pub fn matches(&self, record: &RunRecord) -> bool {
        self.agent.as_ref().is_none_or(|a| *a == record.key.agent)
            && (self.statuses.is_empty() || self.statuses.contains(&record.status))
    }
}

/// What became of a run after [`RunQueue::fail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AfterFailure {
    /// It will be tried again, not before `at`.
    Retry {
        /// The earliest next claim.
        at: SystemTime,
    },
    /// Attempts are used up; the run is now terminal with this status.
    Final(RunStatus),
}

/// The durable run queue, whose claims are the conversations' owners (contract v2).
///
/// # Contract
///
/// * [`submit`](Self::submit) returns only after the run is durable. With an idempotency
///   key that the conversation already used, it returns the earlier run (`created: false`),
///   whatever that run's status, and stores nothing new. Bad attempts, delays or payloads are
///   `InvalidInput` (or `TooLarge`) and store nothing.
/// * [`claim`](Self::claim) hands out at most one run per call. Per conversation, runs are
///   claimed first in, first out, and a conversation never has two claimed runs at once: a
///   conversation whose oldest unfinished run is claimed, or waiting out its retry delay, has
///   nothing claimable. Claiming starts an attempt (`attempt` counts from 1).
/// * **A claim is the conversation's ownership.** Claiming draws the conversation's next
///   fence (shared with [`ConversationLocks`](crate::ConversationLocks): strictly increasing,
///   never reused, also across clear and prune) and reports the head version in
///   [`Claim::head`]. A conversation whose lease is live has nothing claimable, and
///   `try_acquire` finds a conversation with a live claim busy. The claim's expiry is the
///   ownership's expiry; one [`heartbeat`](Self::heartbeat) renews both.
/// * A claim whose lease expired (its worker died or stalled) is re-delivered by a later
///   `claim`; if that would exceed `max_attempts`, the run fails instead, with status `failed`
///   (the reaper). A run whose transcript became the head is never failed or re-delivered:
///   a claim or reap that finds it there completes it instead.
/// * [`heartbeat`](Self::heartbeat), [`complete`](Self::complete), [`fail`](Self::fail) and
///   [`release`](Self::release) require the newest claim (`worker` and `fence`, and no newer
///   fence of the conversation); anything else gets `Fenced` and changes nothing, except a
///   claim of a run that does not exist in its org (never did, was pruned, or is another
///   org's), which is `NotFound`.
/// * `complete` is the end of a turn, **one commit**: the [`Commit`]'s transcript becomes the
///   head (checked as [`SessionStore::persist`](crate::SessionStore::persist) checks a
///   completed write, with the claim's fence) and the run becomes `completed`, both or
///   neither. A failed check changes nothing. Completing again with the same claim and the
///   same commit after it succeeded (a lost answer) is `Ok` with the same version. The
///   conversation's next run is claimable at once.
/// * `fail` records a failed attempt and schedules the retry as its [`Failure`] says (after
///   the run's `retry_delay`, after a delay of its own, or never) while attempts remain, else
///   makes the run terminal with the failure's status, in one step (a bad failure is
///   `InvalidInput` and changes nothing). `release` hands it back at once without counting
///   the attempt (graceful shutdown). Both end the ownership.
///
/// ## Cancellation
///
/// * [`cancel`](Self::cancel) decides by [`control::cancel_outcome`](crate::control::cancel_outcome):
///   a waiting run (or one whose claim lapsed) ends `cancelled` at once, with `reason` as
///   its error, and the conversation's next run is claimable; a claimed run is marked, and
///   from then on its claim's `heartbeat` and `complete` answer `Cancelled` (changing
///   nothing), and its `fail` or `release` ends it `cancelled` whatever attempts remain. If
///   its claim lapses instead, the store either ends it `cancelled` at the next claim (memory,
///   files) or re-delivers it to a claim that is told `Cancelled` at its first heartbeat and
///   cannot commit (PostgreSQL): either way it never completes. A finished run is left as it
///   is. Cancelling wakes the run's followers.
/// * [`status`](Self::status) only finds runs of the given org: another org's run is `None`.
///
/// ## Double texting and steering
///
/// * `submit` applies the run's [`MultitaskStrategy`] by
///   [`multitask::plan_submit`](crate::multitask::plan_submit), atomically with queueing it
///   (under the conversation's submit lock): `reject` is `Conflict` naming the
///   conversation's oldest unfinished run and queues nothing; `interrupt` and `rollback`
///   cancel the runs the plan names, as [`cancel`](Self::cancel) would (with
///   [`multitask::interrupted_reason`](crate::multitask::interrupted_reason)), then queue. A
///   submit whose idempotency key matched returns the earlier run and does none of this.
///   A `steer` submit is stored as such and wakes the followers of the conversation's claimed
///   run, if it has one (a hint, where the backend can).
/// * [`steerable`](Self::steerable) offers a claim the runs
///   [`multitask::steerable`](crate::multitask::steerable) names, with their payloads; it
///   takes nothing (a turn that dies after looking loses nothing). It requires the newest
///   claim like `heartbeat` (`Fenced`, or `Cancelled` once a cancellation was asked for).
/// * A [`Commit`] with [`steered`](Commit::steered) runs is checked by
///   [`multitask::check_steered`](crate::multitask::check_steered) (`Conflict`, nothing
///   changes); the steered runs complete with the turn, in the same step, with output
///   [`multitask::steered_output`](crate::multitask::steered_output) and no attempt counted,
///   and their followers are woken.
///
/// ## Run events
///
/// * [`record_events`](Self::record_events) stores an attempt's events (JSON objects, checked
///   by [`events::check_events`](crate::events::check_events): bad ones are `InvalidInput` or
///   `TooLarge` and nothing of the call is stored) and numbers them: the run's events get
///   seqs 1, 2, 3, … in the order recorded, across attempts and replicas, never reused. Only
///   the run's newest claim may record, and only while the run is unfinished
///   ([`events::check_may_record`](crate::events::check_may_record)); anything else is
///   `Fenced` and stores nothing (a claim of a run that does not exist in its org is
///   `NotFound`). An append is all or nothing, and wakes the run's followers
///   ([`wait_for_run`](Self::wait_for_run)) here and, where the backend can, on other replicas.
/// * [`read_events`](Self::read_events) reads the run's record and its events after a seq at
///   one moment (see [`EventPage`]); another org's run, or an unknown one, is `None`.
/// * [`prune_events`](Self::prune_events) removes the events of runs that finished before a
///   time; [`prune_runs`](Self::prune_runs) removes a pruned run's events with it.
#[async_trait]
pub trait RunQueue: Debug + Send + Sync + 'static {
    /// Make a run durable and return its id.
    async fn submit(&self, run: NewRun) -> Result<Submitted>;

    /// Claim the next runnable run for `worker`, with a claim lease of `lease`.
    async fn claim(&self, worker: &WorkerId, lease: Duration) -> Result<Option<Claim>>;

    /// Extend a claim's lease (and so the conversation's ownership) by `lease` from now;
    /// `Fenced` if the claim is no longer the newest.
    async fn heartbeat(&self, claim: &Claim, lease: Duration) -> Result<Claim>;

    /// Commit the run: its transcript (if any) becomes the head and the run is completed, in
    /// one step. Returns the head version the commit wrote (`None` without a transcript).
    async fn complete(&self, claim: &Claim, commit: Commit) -> Result<Option<Version>>;

    /// Record a failed attempt (see [`Failure`]: how it failed, why, whether to retry).
    async fn fail(&self, claim: &Claim, failure: &Failure) -> Result<AfterFailure>;

    /// Cancel a run of `org`: see [`CancelOutcome`]; `None` if the org has no such run.
    /// `reason` becomes the run's error (empty: "cancelled").
    async fn cancel(&self, org: &OrgId, run: &RunId, reason: &str)
    -> Result<Option<CancelOutcome>>;

    /// The steered messages waiting for the claim's turn, oldest first (see the contract).
    async fn steerable(&self, claim: &Claim) -> Result<Vec<Steered>>;

    /// Hand the run back without counting the attempt.
    async fn release(&self, claim: &Claim) -> Result<()>;

    /// Look a run up within one org.
    async fn status(&self, org: &OrgId, run: &RunId) -> Result<Option<RunRecord>>;

    /// The org's runs that `filter` matches, whatever their age (until pruned), ordered by
    /// run id (a generated id is time-ordered). `cursor` is a `next_cursor` from an earlier
    /// page (the last run id of it: the page holds ids strictly greater); `limit` is
    /// `1..=200`. For operators (`lobu runs`): unfinished and failed runs.
    async fn runs(
        &self,
        org: &OrgId,
        filter: &RunFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<RunRecord>>;

    /// How many runs are pending (for metrics).
    async fn depth(&self) -> Result<u64>;

    /// Remove terminal runs that finished before `before`; returns how many. Snapshots are
    /// not touched: transcript lifetime never depends on run retention.
    async fn prune_runs(&self, before: SystemTime) -> Result<u64> {
        self.prune_runs_with(&RunPrune::everything_before(before))
            .await
    }

    /// Remove at most [`limit`](RunPrune::limit) runs that [`RunPrune::takes`] (with their
    /// idempotency keys and events) and return how many; with
    /// [`dry_run`](RunPrune::dry_run), count them and remove nothing. Snapshots are never
    /// touched. A bad limit is `InvalidInput`.
    async fn prune_runs_with(&self, prune: &RunPrune) -> Result<u64>;

    /// Store events of the claim's attempt, in order; returns the seq of the run's newest
    /// event afterwards.
    async fn record_events(&self, claim: &Claim, events: &[String]) -> Result<u64>;

    /// The run (of `org`) and at most `limit` of its events with a seq above `after`, read at
    /// one moment; `None` if the org has no such run. `limit` outside
    /// `1..=`[`MAX_EVENTS_PER_READ`](crate::events::MAX_EVENTS_PER_READ) is `InvalidInput`.
    async fn read_events(
        &self,
        org: &OrgId,
        run: &RunId,
        after: u64,
        limit: usize,
    ) -> Result<Option<EventPage>>;

    /// Remove every event of runs that finished before `before`; returns how many events.
    async fn prune_events(&self, before: SystemTime) -> Result<u64> {
        self.prune_events_with(&EventPrune::everything_before(before))
            .await
    }

    /// Remove at most [`limit`](EventPrune::limit) events of runs that [`EventPrune::takes`]
    /// and return how many (the runs stay); with [`dry_run`](EventPrune::dry_run), count
    /// them and remove nothing. A bad limit is `InvalidInput`.
    async fn prune_events_with(&self, prune: &EventPrune) -> Result<u64>;

    /// Wait until new work may be claimable, or `max` passes. Backends with a wake-up
    /// channel (NOTIFY, an in-process signal) return early; others just sleep. Callers must
    /// still poll: a wake-up is a hint, never a guarantee.
    async fn wait_for_work(&self, max: Duration);

    /// Wait until `run` may have changed after `since` (it recorded events, ended, failed an
    /// attempt, or went back to the queue), or `max` passes; at once if it may have changed since
    /// already. Followers of a run that executes elsewhere call it between status reads.
    /// Backends that learn of other replicas' writes (NOTIFY) or see their own (one process)
    /// return early, with [`RunSignals`](crate::RunSignals); the default just sleeps.
    /// A hint, never a guarantee: callers read the status afterwards.
    async fn wait_for_run(&self, org: &OrgId, run: &RunId, since: Instant, max: Duration) {
        let _ = (org, run, since);
        tokio::time::sleep(max).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn key() -> ConversationKey {
        ConversationKey::parse("o", "a", "c").unwrap()
    }

    #[test]
    fn payload_with_nul_anywhere_is_invalid_input() {
        for payload in [
            serde_json::json!({"text": "a\u{0}b"}),
            serde_json::json!({"text": "ok", "meta": {"k\u{0}": 1}}),
            serde_json::json!({"text": "ok", "list": ["x", "\u{0}"]}),
        ] {
            let err = NewRun::turn(key(), payload).validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
        }
        assert!(
            NewRun::turn(key(), serde_json::json!({"text": "ok ✓"}))
                .validate()
                .is_ok()
        );
    }
}
