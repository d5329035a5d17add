//! One candidate of a claim: a marker whose record is missing (a submit still writing, or
//! a crashed one) or whose conversation's lock the claim holds, and what the claim does
//! with it (see [`super::claim`]).

use std::time::{Duration, SystemTime};

use lobu_core::run_state::{Due, exhausted_error, redelivered_error};
use lobu_core::{Result, RunStatus, WorkerId};

use super::claim::{
    Outcome, committed_locked, complete_recovered, damaged, is_transient, open_for_claim,
};
use super::files::Queue;
use super::markers::Marker;
use super::runs::{Holder, RunFile};
use super::steering;
use crate::atomic::{Durability, FileLock};
use crate::clock;
use crate::state::{Conversation, LeaseRecord};

/// A marker without a record: a submit writing its record now (it syncs its marker first),
/// or one that crashed before it did. Removed once older than any submit takes (after a
/// power loss it may come back: it is removed again); until then its lane waits.
pub(super) fn orphan(queue: &Queue<'_>, marker: &Marker, now_ms: u64) -> Result<Outcome> {
    let age = u64::try_from(queue.inner.orphan_marker_age.as_millis()).unwrap_or(u64::MAX);
    let until = marker.due_ms.saturating_add(age);
    if until > now_ms {
        return Ok(Outcome::LaneOwned(until));
    }
    queue.remove_marker_with(marker, Durability::Recoverable)?;
    Ok(Outcome::LaneMovesOn)
}

/// The conversation's lock for a claim if nobody holds it (creating its directory if a
/// submit of an earlier version did not).
pub(super) fn lock_for_claim(conversation: &Conversation<'_>) -> Result<Option<FileLock>> {
    conversation.create()?;
    conversation.try_lock()
}

/// A candidate marker whose conversation's lock the claim holds.
pub(super) struct Candidate<'q, 'a> {
    pub(super) queue: &'q Queue<'a>,
    pub(super) conversation: &'q Conversation<'a>,
    pub(super) marker: &'q Marker,
    pub(super) now: SystemTime,
}

impl Candidate<'_, '_> {
    /// Claim the marker's run, or correct what a crash left: its record is read again, now
    /// that its conversation's lock is held (its holder may have changed it since).
    pub(super) fn take(&self, worker: &WorkerId, lease: Duration) -> Result<Outcome> {
        let (queue, marker, now) = (self.queue, self.marker, self.now);
        let file = match queue.load_run(&marker.run)? {
            Some(file) if file.seq == marker.seq && !file.record.status.is_terminal() => file,
            // A finished run's marker left by a crash, or a pruned run's.
            stale => {
                if let Some(file) = stale.filter(|f| f.seq == marker.seq) {
                    // Its commit may have stopped before the steered runs it took.
                    steering::finish(queue, &file, now)?;
                }
                // Recoverable: a power loss that brings it back sends a claim here again.
                queue.remove_marker_with(marker, Durability::Recoverable)?;
                return Ok(Outcome::LaneMovesOn);
            }
        };
        match file.state().due(now) {
            Due::Ready => self.start_attempt(file, worker, lease),
            Due::Exhausted => self.expire(file),
            Due::Later(_) => {
                if let Some(wanted) = file.wanted_marker() {
                    // Later, so the marker stays a lower bound even if this move is lost.
                    queue.move_marker_with(marker, &wanted, Durability::Recoverable)?;
                }
                Ok(Outcome::LaneWaits)
            }
        }
    }

    /// Take the conversation for `file`'s run and start its next attempt, unless the
    /// conversation is owned (the lane waits), its state cannot be opened (the attempt
    /// fails), or the run's transcript is already committed (the run completes).
    fn start_attempt(
        &self,
        mut file: RunFile,
        worker: &WorkerId,
        lease: Duration,
    ) -> Result<Outcome> {
        let (queue, conversation, now) = (self.queue, self.conversation, self.now);
        let marker = self.marker.clone();
        let redelivery = file.record.status == RunStatus::Running;
        let opened = open_for_claim(conversation, redelivery.then_some(&file.record.run));
        let (mut state, committed) = match opened {
            Ok(opened) => opened,
            Err(e) if is_transient(&e) => return Err(e),
            Err(e) => return damaged(queue, file, marker, &e, now),
        };
        if state.lease.as_ref().is_some_and(|l| l.expires_at > now) {
            // A lease (or a claim whose run record a crash left behind) owns the conversation.
            let until = state
                .lease
                .as_ref()
                .map_or(0, |l| clock::millis(l.expires_at));
            return Ok(Outcome::LaneOwned(until));
        }
        if let Some(version) = committed {
            // A commit that stopped between the transcript and the run record: finish it.
            complete_recovered(queue, file, Some(marker), version, now)?;
            return Ok(Outcome::LaneMovesOn);
        }
        if let Some(reason) = file.cancel_requested.clone() {
            // Its holder stopped after a cancellation was requested: it ends, never re-runs.
            file.end_cancelled(&reason, now);
            queue.commit(&mut file, Some(marker))?;
            return Ok(Outcome::LaneMovesOn);
        }
        state.last_fence += 1;
        let fence = state.last_fence;
        let expires_at = now + lease;
        state.lease = Some(LeaseRecord { fence, expires_at });
        // The ownership first: a crash before the run record leaves a lease that lapses on
        // its own, never a claim the conversation does not know about. Neither is synced to
        // the device (Recoverable): no owner outlives a power loss, and what the claim wrote
        // then comes back as before the claim or as a lapsed claim; every later change that
        // must last (a commit, a failure, a release) is synced and carries the fence.
        conversation.save_with(&state, Durability::Recoverable)?;
        let record = &mut file.record;
        if redelivery {
            record.error = Some(redelivered_error(record.attempts));
        }
        record.status = RunStatus::Running;
        // Counted when the attempt starts, so a worker that dies mid-run still used it.
        record.attempts += 1;
        record.updated_at = now;
        // What an earlier attempt meant to take (its commit never landed) is not this one's.
        file.steering.clear();
        file.holder = Some(Holder {
            worker: worker.clone(),
            fence,
            expires_at,
        });
        file.head = state.head.as_ref().map(|h| h.version);
        let lazily = Durability::Recoverable;
        queue.commit_with(&mut file, Some(marker), lazily, lazily)?;
        file.claim_of().map(Outcome::Claimed)
    }

    /// The claim of the run's last attempt expired: the run fails (or ends `cancelled` if a
    /// cancellation was requested) and its lane moves on, unless its transcript was
    /// committed, in which case it completes.
    fn expire(&self, mut file: RunFile) -> Result<Outcome> {
        let (queue, now) = (self.queue, self.now);
        let marker = self.marker.clone();
        if let Some(version) = committed_locked(self.conversation, &file) {
            complete_recovered(queue, file, Some(marker), version, now)?;
            return Ok(Outcome::LaneMovesOn);
        }
        if let Some(reason) = file.cancel_requested.clone() {
            file.end_cancelled(&reason, now);
        } else {
            let record = &mut file.record;
            record.status = RunStatus::Failed;
            record.error = Some(exhausted_error(record.attempts, record.max_attempts));
            record.updated_at = now;
        }
        queue.commit(&mut file, Some(marker))?;
        Ok(Outcome::LaneMovesOn)
    }
}
