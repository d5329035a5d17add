//! The run queue in memory.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

use super::locks::LeaseTable;
use super::run::{Holder, Run};
use super::sessions::SessionTable;
use super::{MemoryBackend, State};
use crate::control::{CancelOutcome, Failure, cancel_outcome, cancel_reason};
use crate::error::{Error, Result};
use crate::events::EventPage;
use crate::id::{ConversationKey, IdempotencyKey, OrgId, RunId, WorkerId};
use crate::lock::check_lease_duration;
use crate::multitask::{
    MultitaskStrategy, Queued, check_steered, interrupted_reason, plan_submit, steerable,
    steered_output,
};
use crate::queue::{
    AfterFailure, Claim, Commit, NewRun, RunFilter, RunQueue, RunRecord, RunStatus, Steered,
    Submitted,
};
use crate::retention::{EventPrune, RunPrune};
use crate::run_state::{Due, error_text, exhausted_error, redelivered_error};
use crate::session::{Page, Version, check_page_limit};

#[derive(Default)]
pub(super) struct QueueTable {
    pub(super) runs: HashMap<RunId, Run>,
    /// Unfinished runs per conversation, oldest first. Only the front may be claimed, which
    /// gives first in, first out and never two claimed runs of one conversation.
    lanes: HashMap<ConversationKey, VecDeque<RunId>>,
    /// Kept after `prune_runs`, so a retried submit keeps getting its first run back.
    idempotency: HashMap<(ConversationKey, IdempotencyKey), RunId>,
    last_seq: u64,
    /// Runs a claim failed as exhausted, for their followers' signals.
    reaped: Vec<RunId>,
}

impl QueueTable {
    /// Remove the scope's runs (any status), their events, lanes and idempotency keys;
    /// returns their conversations and how many runs and events went.
    pub(super) fn erase(
        &mut self,
        scope: &crate::erase::EraseScope,
    ) -> (Vec<ConversationKey>, u64, u64) {
        let (mut keys, mut runs, mut events) = (Vec::new(), 0, 0);
        self.runs.retain(|_, run| {
            if !scope.covers(&run.record.key) {
                return true;
            }
            keys.push(run.record.key.clone());
            runs += 1;
            events += run.events.len() as u64;
            false
        });
        self.lanes.retain(|key, _| !scope.covers(key));
        self.idempotency.retain(|(key, _), _| !scope.covers(key));
        (keys, runs, events)
    }

    pub(super) fn len(&self) -> usize {
        self.runs.len()
    }

    /// Queue `new` after applying its strategy; also returns the runs whose followers must
    /// be woken (those it cancelled, and for a steer the conversation's claimed run).
    fn submit(&mut self, new: NewRun, now: SystemTime) -> Result<(Submitted, Vec<RunId>)> {
        if let Some(idempotency_key) = &new.idempotency_key
            && let Some(run) = self
                .idempotency
                .get(&(new.key.clone(), idempotency_key.clone()))
        {
            let earlier = Submitted {
                run: run.clone(),
                created: false,
            };
            return Ok((earlier, Vec::new()));
        }
        let lane = self.lane_of(&new.key);
        let mut woken = plan_submit(new.multitask, &lane)?;
        let id = RunId::generate();
        let reason = interrupted_reason(new.multitask, &id);
        for cancelled in &woken {
            self.cancel(&new.key.org, cancelled, &reason, now);
        }
        if new.multitask == MultitaskStrategy::Steer
            && let Some(front) = lane.first()
            && front.status == RunStatus::Running
        {
            woken.push(front.run.clone());
        }
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
            head: None,
            committed: None,
            events: Vec::new(),
            event_seq: 0,
            cancel: None,
            steer: new.multitask == MultitaskStrategy::Steer,
        };
        self.runs.insert(id.clone(), run);
        let submitted = Submitted {
            run: id,
            created: true,
        };
        Ok((submitted, woken))
    }

    /// The conversation's unfinished runs, oldest first, as the multitask rules see them.
    fn lane_of(&self, key: &ConversationKey) -> Vec<Queued> {
        let Some(lane) = self.lanes.get(key) else {
            return Vec::new();
        };
        lane.iter()
            .filter_map(|id| self.runs.get(id))
            .map(|run| Queued {
                run: run.record.run.clone(),
                kind: run.record.kind,
                status: run.record.status,
                attempts: run.record.attempts,
                steer: run.steer,
                cancel_requested: run.cancel.is_some(),
            })
            .collect()
    }

    fn steerable(&mut self, owners: &LeaseTable, claim: &Claim) -> Result<Vec<Steered>> {
        self.held(owners, claim)?.check_not_cancelled()?;
        let offered = steerable(&claim.run, &self.lane_of(&claim.key));
        Ok(offered
            .into_iter()
            .filter_map(|id| self.runs.get(&id))
            .map(|run| Steered {
                run: run.record.run.clone(),
                payload: run.record.payload.clone(),
            })
            .collect())
    }

    fn front(&self, lane: &VecDeque<RunId>) -> Option<&Run> {
        lane.front().and_then(|id| self.runs.get(id))
    }

    /// Claim the oldest claimable run whose conversation has no live owner, taking the
    /// conversation's ownership (its next fence) in the same step.
    fn claim(
        &mut self,
        owners: &mut LeaseTable,
        sessions: &SessionTable,
        worker: &WorkerId,
        lease: Duration,
        now: SystemTime,
    ) -> Option<Claim> {
        // A run whose cancellation was asked for and whose claim then lapsed ends
        // cancelled: it is never re-delivered.
        let abandoned: Vec<(RunId, String)> = self
            .lanes
            .values()
            .filter_map(|lane| self.front(lane))
            .filter(|run| run.record.status == RunStatus::Running)
            .filter(|run| !matches!(run.state().due(now), Due::Later(_)))
            .filter_map(|run| Some((run.record.run.clone(), run.cancel.clone()?)))
            .collect();
        for (id, reason) in abandoned {
            self.end_cancelled(&id, &reason, now);
            self.reaped.push(id);
        }
        // First fail the runs whose last attempt's claim expired: their lanes move on.
        let exhausted: Vec<RunId> = self
            .lanes
            .values()
            .filter_map(|lane| self.front(lane))
            .filter(|run| run.state().due(now) == Due::Exhausted)
            .map(|run| run.record.run.clone())
            .collect();
        for id in exhausted {
            let Some(run) = self.runs.get_mut(&id) else {
                continue;
            };
            let record = &mut run.record;
            record.status = RunStatus::Failed;
            record.error = Some(exhausted_error(record.attempts, record.max_attempts));
            record.updated_at = now;
            let key = record.key.clone();
            self.finish(&key, &id);
            self.reaped.push(id);
        }
        let next = self
            .lanes
            .values()
            .filter_map(|lane| self.front(lane))
            .filter(|run| run.state().due(now) == Due::Ready)
            .filter(|run| !owners.is_owned(&run.record.key, now))
            .min_by_key(|run| run.seq)
            .map(|run| run.record.run.clone())?;
        let run = self.runs.get_mut(&next)?;
        let owner = owners.try_acquire(&run.record.key, lease, now)?;
        if run.record.status == RunStatus::Running {
            run.record.error = Some(redelivered_error(run.record.attempts));
        }
        run.record.status = RunStatus::Running;
        // Counted when the attempt starts, so a worker that dies mid-run still used it.
        run.record.attempts += 1;
        run.record.updated_at = now;
        run.head = sessions.head_version(&run.record.key);
        run.holder = Some(Holder {
            worker: worker.clone(),
            fence: owner.fence,
            expires_at: owner.expires_at,
        });
        run.claim_of()
    }

    /// The claimed run, if `claim` is its newest claim and its conversation's newest owner.
    fn held(&mut self, owners: &LeaseTable, claim: &Claim) -> Result<&mut Run> {
        let run = self.runs.get_mut(&claim.run).ok_or_else(|| {
            Error::not_found(format!("run {} does not exist (or was pruned)", claim.run))
        })?;
        run.check_claim(claim, owners.newest_fence(&claim.key))?;
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

    fn heartbeat(
        &mut self,
        owners: &mut LeaseTable,
        claim: &Claim,
        lease: Duration,
        now: SystemTime,
    ) -> Result<Claim> {
        let run = self.held(owners, claim)?;
        run.check_not_cancelled()?;
        let expires_at = now + lease;
        if let Some(holder) = run.holder.as_mut() {
            holder.expires_at = expires_at;
        }
        owners.extend(&claim.key, claim.fence, expires_at);
        run.claim_of()
            .ok_or_else(|| Error::fenced("the claim vanished"))
    }

    /// The end of a turn, one step under the backend's lock: the transcript (checked like a
    /// completed persist) and the run's completion, or neither.
    fn complete(
        &mut self,
        owners: &mut LeaseTable,
        sessions: &mut SessionTable,
        claim: &Claim,
        commit: Commit,
        now: SystemTime,
    ) -> Result<Option<Version>> {
        if let Some(run) = self.runs.get(&claim.run)
            && run.record.status == RunStatus::Completed
            && run
                .holder
                .as_ref()
                .is_some_and(|h| h.worker == claim.worker && h.fence == claim.fence)
        {
            return Ok(run.committed); // this claim's commit already landed: a retry
        }
        self.held(owners, claim)?.check_not_cancelled()?;
        check_steered(&claim.run, &self.lane_of(&claim.key), &commit.steered)?;
        let version = match commit.transcript {
            Some(transcript) => {
                let write = claim.completed_write(transcript, commit.expected, commit.base_len);
                let newest = owners.newest_fence(&claim.key);
                Some(sessions.persist(&claim.key, write, newest, now)?)
            }
            None => None,
        };
        let run = self.held(owners, claim)?;
        run.record.status = RunStatus::Completed;
        run.record.output = commit.output;
        run.record.updated_at = now;
        run.committed = version;
        let key = run.record.key.clone();
        owners.end(&key, claim.fence);
        self.finish(&key, &claim.run);
        let output = steered_output(&claim.run);
        for id in &commit.steered {
            if let Some(steered) = self.runs.get_mut(id) {
                steered.record.status = RunStatus::Completed;
                steered.record.output = Some(output.clone());
                steered.record.updated_at = now;
            }
            self.finish(&key, id);
        }
        Ok(version)
    }

    fn fail(
        &mut self,
        owners: &mut LeaseTable,
        claim: &Claim,
        failure: &Failure,
        now: SystemTime,
    ) -> Result<AfterFailure> {
        failure.validate()?;
        let run = self.held(owners, claim)?;
        let cancelled = run.cancel.clone();
        run.record.error = Some(error_text(cancelled.as_deref().unwrap_or(&failure.error)));
        run.record.updated_at = now;
        let after = run
            .state()
            .after_failure(failure, run.retry_delay, cancelled.is_some(), now);
        owners.end(&claim.key, claim.fence);
        match after {
            AfterFailure::Retry { at } => {
                run.record.status = RunStatus::Pending;
                run.not_before = at;
            }
            AfterFailure::Final(status) => {
                run.record.status = status;
                let key = run.record.key.clone();
                self.finish(&key, &claim.run);
            }
        }
        Ok(after)
    }

    /// End `id` as cancelled with `reason` (it was waiting, or its claim lapsed).
    fn end_cancelled(&mut self, id: &RunId, reason: &str, now: SystemTime) {
        if let Some(run) = self.runs.get_mut(id) {
            run.record.status = RunStatus::Cancelled;
            run.record.error = Some(error_text(reason));
            run.record.updated_at = now;
            let key = run.record.key.clone();
            self.finish(&key, id);
        }
    }

    fn cancel(
        &mut self,
        org: &OrgId,
        id: &RunId,
        reason: &str,
        now: SystemTime,
    ) -> Option<CancelOutcome> {
        let run = self
            .runs
            .get_mut(id)
            .filter(|run| run.record.key.org == *org)?;
        let live = run.holder.as_ref().is_some_and(|h| h.expires_at > now);
        let outcome = cancel_outcome(run.record.status, live);
        match outcome {
            CancelOutcome::Cancelled => self.end_cancelled(id, reason, now),
            CancelOutcome::Requested => run.cancel = Some(reason.to_owned()),
            _ => {}
        }
        Some(outcome)
    }

    fn release(&mut self, owners: &mut LeaseTable, claim: &Claim, now: SystemTime) -> Result<()> {
        let run = self.held(owners, claim)?;
        if let Some(reason) = run.cancel.clone() {
            owners.end(&claim.key, claim.fence);
            self.end_cancelled(&claim.run, &reason, now);
            return Ok(());
        }
        run.record.status = RunStatus::Pending;
        // The attempt did not happen as far as the limit is concerned.
        run.record.attempts = run.record.attempts.saturating_sub(1);
        run.record.updated_at = now;
        run.not_before = now;
        owners.end(&claim.key, claim.fence);
        Ok(())
    }

    fn status(&self, org: &OrgId, id: &RunId) -> Option<RunRecord> {
        let run = self.runs.get(id)?;
        (run.record.key.org == *org).then(|| run.record.clone())
    }

    fn runs(
        &self,
        org: &OrgId,
        filter: &RunFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Page<RunRecord> {
        let mut items: Vec<RunRecord> = self
            .runs
            .values()
            .map(|run| &run.record)
            .filter(|r| r.key.org == *org && filter.matches(r))
            .filter(|r| cursor.is_none_or(|after| r.run.as_str() > after))
            .cloned()
            .collect();
        items.sort_by(|a, b| a.run.as_str().cmp(b.run.as_str()));
        let next_cursor = (items.len() > limit).then(|| items[limit - 1].run.to_string());
        items.truncate(limit);
        Page { items, next_cursor }
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

    fn prune_runs(&mut self, prune: &RunPrune) -> u64 {
        let doomed: Vec<RunId> = self
            .runs
            .iter()
            .filter(|(_, run)| prune.takes(run.record.status, run.record.updated_at))
            .map(|(id, _)| id.clone())
            .take(prune.limit)
            .collect();
        if !prune.dry_run {
            for id in &doomed {
                self.runs.remove(id);
            }
        }
        doomed.len() as u64
    }

    /// How long until something may be claimable: zero when something is now, `None` when
    /// nothing is queued.
    /// A run whose conversation has a live owner (a lease) is due when the ownership ends,
    /// so a waiting worker does not spin on it.
    fn next_due(&self, owners: &LeaseTable, now: SystemTime) -> Option<Duration> {
        self.lanes
            .values()
            .filter_map(|lane| self.front(lane))
            .map(|run| {
                let due = match run.state().due(now) {
                    Due::Ready | Due::Exhausted => now,
                    Due::Later(at) => at,
                };
                let owned = owners.owned_until(&run.record.key, now);
                due.max(owned.unwrap_or(now))
                    .duration_since(now)
                    .unwrap_or_default()
            })
            .min()
    }
}

#[async_trait]
impl RunQueue for MemoryBackend {
    async fn submit(&self, run: NewRun) -> Result<Submitted> {
        run.validate()?;
        let (submitted, woken) = self.state()?.queue.submit(run, SystemTime::now())?;
        self.work.notify_waiters();
        for run in &woken {
            self.runs.signal(run);
        }
        Ok(submitted)
    }

    async fn claim(&self, worker: &WorkerId, lease: Duration) -> Result<Option<Claim>> {
        check_lease_duration(lease)?;
        let now = SystemTime::now();
        let mut state = self.state()?;
        let State {
            sessions,
            leases,
            queue,
        } = &mut *state;
        let claim = queue.claim(leases, sessions, worker, lease, now);
        for reaped in queue.reaped.drain(..) {
            self.runs.signal(&reaped);
        }
        if let Some(claim) = &claim {
            self.runs.signal(&claim.run);
        }
        Ok(claim)
    }

    async fn heartbeat(&self, claim: &Claim, lease: Duration) -> Result<Claim> {
        check_lease_duration(lease)?;
        let now = SystemTime::now();
        let mut state = self.state()?;
        let State { leases, queue, .. } = &mut *state;
        queue.heartbeat(leases, claim, lease, now)
    }

    async fn complete(&self, claim: &Claim, commit: Commit) -> Result<Option<Version>> {
        if let Some(len) = commit.transcript_len() {
            self.check_size(&claim.key, len)?;
        }
        let now = SystemTime::now();
        let steered = commit.steered.clone();
        let version = {
            let mut state = self.state()?;
            let State {
                sessions,
                leases,
                queue,
            } = &mut *state;
            queue.complete(leases, sessions, claim, commit, now)?
        };
        // The conversation's next run is claimable now.
        self.work.notify_waiters();
        self.runs.signal(&claim.run);
        for run in &steered {
            self.runs.signal(run);
        }
        Ok(version)
    }

    async fn fail(&self, claim: &Claim, failure: &Failure) -> Result<AfterFailure> {
        let now = SystemTime::now();
        let after = {
            let mut state = self.state()?;
            let State { leases, queue, .. } = &mut *state;
            queue.fail(leases, claim, failure, now)?
        };
        // Waiters recompute when the retry is due, or claim the conversation's next run.
        self.work.notify_waiters();
        self.runs.signal(&claim.run);
        Ok(after)
    }

    async fn cancel(
        &self,
        org: &OrgId,
        run: &RunId,
        reason: &str,
    ) -> Result<Option<CancelOutcome>> {
        let reason = &cancel_reason(reason);
        let outcome = self
            .state()?
            .queue
            .cancel(org, run, reason, SystemTime::now());
        if outcome.is_some() {
            self.work.notify_waiters();
            self.runs.signal(run);
        }
        Ok(outcome)
    }

    async fn steerable(&self, claim: &Claim) -> Result<Vec<Steered>> {
        let mut state = self.state()?;
        let State { leases, queue, .. } = &mut *state;
        queue.steerable(leases, claim)
    }

    async fn release(&self, claim: &Claim) -> Result<()> {
        let now = SystemTime::now();
        {
            let mut state = self.state()?;
            let State { leases, queue, .. } = &mut *state;
            queue.release(leases, claim, now)?;
        }
        self.work.notify_waiters();
        self.runs.signal(&claim.run);
        Ok(())
    }

    async fn status(&self, org: &OrgId, run: &RunId) -> Result<Option<RunRecord>> {
        Ok(self.state()?.queue.status(org, run))
    }

    async fn runs(
        &self,
        org: &OrgId,
        filter: &RunFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<RunRecord>> {
        check_page_limit(limit)?;
        Ok(self.state()?.queue.runs(org, filter, cursor, limit))
    }

    async fn depth(&self) -> Result<u64> {
        Ok(self.state()?.queue.depth())
    }

    async fn prune_runs_with(&self, prune: &RunPrune) -> Result<u64> {
        prune.validate()?;
        Ok(self.state()?.queue.prune_runs(prune))
    }

    async fn record_events(&self, claim: &Claim, events: &[String]) -> Result<u64> {
        crate::events::check_events(events)?;
        let last = self.state()?.queue.record_events(claim, events)?;
        if !events.is_empty() {
            self.runs.signal(&claim.run);
        }
        Ok(last)
    }

    async fn read_events(
        &self,
        org: &OrgId,
        run: &RunId,
        after: u64,
        limit: usize,
    ) -> Result<Option<EventPage>> {
        crate::events::check_read_limit(limit)?;
        Ok(self.state()?.queue.read_events(org, run, after, limit))
    }

    async fn prune_events_with(&self, prune: &EventPrune) -> Result<u64> {
        prune.validate()?;
        Ok(self.state()?.queue.prune_events(prune))
    }

    async fn wait_for_work(&self, max: Duration) {
        // Registered before looking, so a submit between the look and the wait still wakes us.
        let notified = self.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let due = match self.state() {
            Ok(state) => state.queue.next_due(&state.leases, SystemTime::now()),
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

    async fn wait_for_run(&self, _org: &OrgId, run: &RunId, since: Instant, max: Duration) {
        // Every change of this backend happens in this process, so signals see them all.
        self.runs.wait(run, since, max).await;
    }
}
