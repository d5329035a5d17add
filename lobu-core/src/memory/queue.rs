//! The run queue in memory.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::MemoryBackend;
use super::run::{Front, Holder, Run};
use crate::error::{Error, Result};
use crate::id::{ConversationKey, IdempotencyKey, OrgId, RunId, WorkerId};
use crate::lock::check_lease_duration;
use crate::queue::{AfterFailure, Claim, NewRun, RunQueue, RunRecord, RunStatus, Submitted};
use crate::session::TerminalStatus;

#[derive(Default)]
pub(super) struct QueueTable {
    runs: HashMap<RunId, Run>,
    /// Unfinished runs per conversation, oldest first. Only the front may be claimed, which
    /// gives first in, first out and never two claimed runs of one conversation.
    lanes: HashMap<ConversationKey, VecDeque<RunId>>,
    /// Kept after `prune_runs`, so a retried submit keeps getting its first run back.
    idempotency: HashMap<(ConversationKey, IdempotencyKey), RunId>,
    last_seq: u64,
    /// One counter for all runs: claim tokens only grow.
    last_token: u64,
}

impl QueueTable {
    pub(super) fn len(&self) -> usize {
        self.runs.len()
    }

    fn submit(&mut self, new: NewRun, now: SystemTime) -> Submitted {
        if let Some(idempotency_key) = &new.idempotency_key
            && let Some(run) = self
                .idempotency
                .get(&(new.key.clone(), idempotency_key.clone()))
        {
            return Submitted {
                run: run.clone(),
                created: false,
            };
        }
        let id = RunId::generate();
        self.last_seq += 1;
        if let Some(idempotency_key) = new.idempotency_key {
            self.idempotency
                .insert((new.key.clone(), idempotency_key), id.clone());
        }
        self.lanes
            .entry(new.key.clone())
            .or_default()
            .push_back(id.clone());
        let record = RunRecord {
            run: id.clone(),
            key: new.key,
            kind: new.kind,
            status: RunStatus::Pending,
            attempts: 0,
            max_attempts: new.max_attempts,
            error: None,
            output: None,
            payload: new.payload,
            created_at: now,
            updated_at: now,
        };
        let run = Run {
            record,
            seq: self.last_seq,
            retry_delay: new.retry_delay,
            not_before: now,
            holder: None,
        };
        self.runs.insert(id.clone(), run);
        Submitted {
            run: id,
            created: true,
        }
    }

    fn front(&self, lane: &VecDeque<RunId>) -> Option<&Run> {
        lane.front().and_then(|id| self.runs.get(id))
    }

    fn claim(&mut self, worker: &WorkerId, lease: Duration, now: SystemTime) -> Option<Claim> {
        // First fail the runs whose last attempt's claim expired: their lanes move on.
        let exhausted: Vec<RunId> = self
            .lanes
            .values()
            .filter_map(|lane| self.front(lane))
            .filter(|run| matches!(run.front(now), Front::Exhausted))
            .map(|run| run.record.run.clone())
            .collect();
        for id in exhausted {
            let Some(run) = self.runs.get_mut(&id) else {
                continue;
            };
            let record = &mut run.record;
            record.status = RunStatus::Failed;
            record.error = Some(format!(
                "the claim of attempt {} of {} expired (its worker stopped heartbeating)",
                record.attempts, record.max_attempts
            ));
            record.updated_at = now;
            let key = record.key.clone();
            self.finish(&key, &id);
        }
        let next = self
            .lanes
            .values()
            .filter_map(|lane| self.front(lane))
            .filter(|run| matches!(run.front(now), Front::Ready))
            .min_by_key(|run| run.seq)
            .map(|run| run.record.run.clone())?;
        self.last_token += 1;
        let run = self.runs.get_mut(&next)?;
        if run.record.status == RunStatus::Running {
            run.record.error = Some(format!(
                "the claim of attempt {} expired (its worker stopped heartbeating); re-delivered",
                run.record.attempts
            ));
        }
        run.record.status = RunStatus::Running;
        // Counted when the attempt starts, so a worker that dies mid-run still used it.
        run.record.attempts += 1;
        run.record.updated_at = now;
        run.holder = Some(Holder {
            worker: worker.clone(),
            token: self.last_token,
            expires_at: now + lease,
        });
        run.claim_of()
    }

    /// The claimed run, if `claim` is its newest claim.
    fn held(&mut self, claim: &Claim) -> Result<&mut Run> {
        let run = self.runs.get_mut(&claim.run).ok_or_else(|| {
            Error::not_found(format!("run {} does not exist (or was pruned)", claim.run))
        })?;
        run.check_claim(claim)?;
        Ok(run)
    }

    /// Take a run that reached a terminal status out of its lane.
    fn finish(&mut self, key: &ConversationKey, id: &RunId) {
        if let Some(lane) = self.lanes.get_mut(key) {
            lane.retain(|queued| queued != id);
            if lane.is_empty() {
                self.lanes.remove(key);
            }
        }
    }

    fn heartbeat(&mut self, claim: &Claim, lease: Duration, now: SystemTime) -> Result<Claim> {
        let run = self.held(claim)?;
        if let Some(holder) = run.holder.as_mut() {
            holder.expires_at = now + lease;
        }
        run.claim_of()
            .ok_or_else(|| Error::fenced("the claim vanished"))
    }

    fn complete(
        &mut self,
        claim: &Claim,
        output: Option<serde_json::Value>,
        now: SystemTime,
    ) -> Result<()> {
        let run = self.held(claim)?;
        run.record.status = RunStatus::Completed;
        run.record.output = output;
        run.record.updated_at = now;
        let key = run.record.key.clone();
        self.finish(&key, &claim.run);
        Ok(())
    }

    fn fail(
        &mut self,
        claim: &Claim,
        status: TerminalStatus,
        error: &str,
        now: SystemTime,
    ) -> Result<AfterFailure> {
        crate::check_failure_status(status)?;
        let run = self.held(claim)?;
        run.record.error = Some(error.to_owned());
        run.record.updated_at = now;
        if run.record.attempts < run.record.max_attempts {
            let at = now + run.retry_delay;
            run.record.status = RunStatus::Pending;
            run.not_before = at;
            return Ok(AfterFailure::Retry { at });
        }
        let status = RunStatus::from(status);
        run.record.status = status;
        let key = run.record.key.clone();
        self.finish(&key, &claim.run);
        Ok(AfterFailure::Final(status))
    }

    fn release(&mut self, claim: &Claim, now: SystemTime) -> Result<()> {
        let run = self.held(claim)?;
        run.record.status = RunStatus::Pending;
        // The attempt did not happen as far as the limit is concerned.
        run.record.attempts = run.record.attempts.saturating_sub(1);
        run.record.updated_at = now;
        run.not_before = now;
        Ok(())
    }

    fn status(&self, org: &OrgId, id: &RunId) -> Option<RunRecord> {
        let run = self.runs.get(id)?;
        (run.record.key.org == *org).then(|| run.record.clone())
    }

    fn depth(&self) -> u64 {
        let pending = self.lanes.values().flatten();
        pending
            .filter(|id| {
                self.runs
                    .get(*id)
                    .is_some_and(|run| run.record.status == RunStatus::Pending)
            })
            .count() as u64
    }

    fn prune_runs(&mut self, before: SystemTime) -> u64 {
        let count = self.runs.len();
        self.runs
            .retain(|_, run| !(run.record.status.is_terminal() && run.record.updated_at < before));
        (count - self.runs.len()) as u64
    }

    /// How long until something may be claimable: zero when something is now, `None` when
    /// nothing is queued.
    fn next_due(&self, now: SystemTime) -> Option<Duration> {
        self.lanes
            .values()
            .filter_map(|lane| self.front(lane))
            .map(|run| match run.front(now) {
                Front::Ready | Front::Exhausted => Duration::ZERO,
                Front::Later(at) => at.duration_since(now).unwrap_or_default(),
            })
            .min()
    }
}

#[async_trait]
impl RunQueue for MemoryBackend {
    async fn submit(&self, run: NewRun) -> Result<Submitted> {
        run.validate()?;
        let submitted = self.state()?.queue.submit(run, SystemTime::now());
        self.work.notify_waiters();
        Ok(submitted)
    }

    async fn claim(&self, worker: &WorkerId, lease: Duration) -> Result<Option<Claim>> {
        check_lease_duration(lease)?;
        let now = SystemTime::now();
        Ok(self.state()?.queue.claim(worker, lease, now))
    }

    async fn heartbeat(&self, claim: &Claim, lease: Duration) -> Result<Claim> {
        check_lease_duration(lease)?;
        let now = SystemTime::now();
        self.state()?.queue.heartbeat(claim, lease, now)
    }

    async fn complete(&self, claim: &Claim, output: Option<serde_json::Value>) -> Result<()> {
        let now = SystemTime::now();
        self.state()?.queue.complete(claim, output, now)?;
        // The conversation's next run may be claimable now.
        self.work.notify_waiters();
        Ok(())
    }

    async fn fail(
        &self,
        claim: &Claim,
        status: TerminalStatus,
        error: &str,
    ) -> Result<AfterFailure> {
        let now = SystemTime::now();
        let after = self.state()?.queue.fail(claim, status, error, now)?;
        // Waiters recompute when the retry is due, or claim the conversation's next run.
        self.work.notify_waiters();
        Ok(after)
    }

    async fn release(&self, claim: &Claim) -> Result<()> {
        let now = SystemTime::now();
        self.state()?.queue.release(claim, now)?;
        self.work.notify_waiters();
        Ok(())
    }

    async fn status(&self, org: &OrgId, run: &RunId) -> Result<Option<RunRecord>> {
        Ok(self.state()?.queue.status(org, run))
    }

    async fn depth(&self) -> Result<u64> {
        Ok(self.state()?.queue.depth())
    }

    async fn prune_runs(&self, before: SystemTime) -> Result<u64> {
        Ok(self.state()?.queue.prune_runs(before))
    }

    async fn wait_for_work(&self, max: Duration) {
        // Registered before looking, so a submit between the look and the wait still wakes us.
        let notified = self.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let due = match self.state() {
            Ok(state) => state.queue.next_due(SystemTime::now()),
            Err(_) => None,
        };
        let wait = due.map_or(max, |due| due.min(max));
        if wait.is_zero() {
            return;
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
