//! `claim` and the changes a claim holder makes: heartbeat, complete, fail, release
//! (`cancel` is in [`super::cancel`], steering's part of a commit in [`super::steering`]).
//!
//! A claim is its conversation's ownership (contract v2): claiming draws the conversation's
//! next fence from `state.json` (the counter leases use) and writes the claim there as the
//! conversation's lease, so `try_acquire` finds the conversation busy and `persist` and
//! `clear` accept the claim's fence.
//!
//! Locks (see [`super::files`]): `claim` holds the queue lock throughout and only *tries*
//! each candidate's conversation lock, skipping a conversation someone holds; the claim
//! holder's calls take the conversation's lock alone, and the queue lock only for a moment
//! to move or remove the run's marker, after their syncs. So a commit's syncs hold up its own
//! conversation only, and nothing waits for a lock while holding the queue lock: no
//! deadlock.
//!
//! Syncs per call on the hot path, with syncing on (a change of a state or run record is
//! one line appended to its record file, synced with `fdatasync` or, when a power loss may
//! undo it, not at all: see [`crate::record_file`]; each durable marker rename or removal
//! syncs its directory):
//!
//! * `claim`: none (neither record's line, nor the marker's move, is synced: no owner
//!   outlives a power loss); a conversation's first claim also syncs the directories it
//!   creates and its new state record and its name (a record file is made or replaced
//!   durably: see [`Disk::write_record`](crate::atomic::Disk::write_record)).
//! * `heartbeat`: none.
//! * `complete` with a transcript: 4 when it extends the head (the transcript file and
//!   `history.jsonl` 1 each, `state.json`'s line committing the head and ending the
//!   ownership together 1, the run record's line 1; the marker's removal is not synced); a
//!   rewrite adds the staged file's 2 and its rename's 1. Without a transcript: 2 (the run
//!   record, `state.json`). Taking steered runs adds 1 + 2 per run (see
//!   [`super::steering`]); taking none adds nothing.
//! * `fail` and `release`: 3 (the run record, its marker, `state.json`).
//!
//! A record file past its size limit is replaced whole instead, which syncs the new file
//! and its directory.
//!
//! A claimed run whose cancellation was requested and whose claim then lapses ends
//! `cancelled` when the next claim finds it, instead of being re-delivered.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use lobu_core::run_state::error_text;
use lobu_core::{
    AfterFailure, Claim, Commit, Error, ErrorKind, Failure, Fence, Result, RunId, RunStatus,
    TerminalStatus, Version, WorkerId,
};

use super::candidate::{Candidate, lock_for_claim, orphan};
use super::files::Queue;
use super::markers::{self, Marker};
use super::runs::RunFile;
use super::steering;
use crate::atomic::{Durability, FileLock};
use crate::clock;
use crate::persist;
use crate::records;
use crate::state::{Conversation, LeaseRecord, State};
use crate::store::Inner;

/// What one claim candidate came to.
pub(super) enum Outcome {
    /// Claimed: the answer.
    Claimed(Claim),
    /// Its lane has nothing to offer this call (the run waits out a retry).
    LaneWaits,
    /// Its conversation is owned (by a lease, or busy under its lock) until then (ms), or
    /// its front is a submit still writing: nothing to offer before.
    LaneOwned(u64),
    /// The run finished (completed or failed for good): the lane's next run may be claimable.
    LaneMovesOn,
}

/// How long a lane whose conversation's lock was busy is left alone by `wait_for_work`
/// (ms): whoever holds it wakes this process's waiters when done, if it is this process.
const BUSY_MS: u64 = 20;

/// Claim the oldest claimable front of any lane. Only markers are listed; a record is opened
/// for the chosen candidate only (and for stale candidates, which are corrected on the way).
///
/// Holds the queue lock throughout, so the markers listed stay exact; syncs nothing on its
/// way to a claim (a crashed run's repair, rare, may).
pub(crate) fn claim(inner: &Inner, worker: &WorkerId, lease: Duration) -> Result<Option<Claim>> {
    let queue = Queue::locked(inner)?;
    let now = SystemTime::now();
    let now_ms = clock::millis(now);
    if let Ok(mut owned) = inner.owned_lanes.lock() {
        owned.retain(|_, until| *until > now_ms);
    }
    // Lanes that turned out to have nothing to offer this call.
    let mut waiting: HashSet<String> = HashSet::new();
    loop {
        // From this process's copy of the markers, exact under the queue lock, and kept so
        // by every change made on the way (a run that moved on has its marker removed, and
        // its lane's next run is the front then).
        let next = markers::fronts(queue.index().current(&queue)?)
            .filter(|m| m.due_ms <= now_ms && !waiting.contains(&m.lane))
            .min_by(|a, b| (a.seq, &a.run).cmp(&(b.seq, &b.run)))
            .cloned();
        let Some(marker) = next else {
            return Ok(None);
        };
        let outcome = match queue.load_run(&marker.run)? {
            None => orphan(&queue, &marker, now_ms)?,
            Some(file) => {
                let key = file.key().clone();
                let conversation = Conversation::new(inner, &key);
                match lock_for_claim(&conversation) {
                    Ok(Some(_lock)) => {
                        let candidate = Candidate {
                            queue: &queue,
                            conversation: &conversation,
                            marker: &marker,
                            now,
                        };
                        candidate.take(worker, lease)?
                    }
                    Ok(None) => Outcome::LaneOwned(now_ms + BUSY_MS),
                    Err(e) if is_transient(&e) => return Err(e),
                    Err(e) => damaged(&queue, file, marker.clone(), &e, now)?,
                }
            }
        };
        note_owned(inner, &marker.lane, &outcome);
        match outcome {
            Outcome::Claimed(claim) => return Ok(Some(claim)),
            Outcome::LaneWaits | Outcome::LaneOwned(_) => {
                waiting.insert(marker.lane);
            }
            // Its marker is gone from the copy with the file (or the lane waits, if the
            // copy was dropped and the marker is somehow still there).
            Outcome::LaneMovesOn => {
                if queue.index().still_has(&marker) {
                    waiting.insert(marker.lane);
                }
            }
        }
    }
}

/// Keep the hint `wait_for_work` reads up to date: which lanes a lease owns, until when.
fn note_owned(inner: &Inner, lane: &str, outcome: &Outcome) {
    let Ok(mut owned) = inner.owned_lanes.lock() else {
        return;
    };
    match outcome {
        Outcome::LaneOwned(until) => {
            owned.insert(lane.to_owned(), *until);
        }
        _ => {
            owned.remove(lane);
        }
    }
}

/// Load a conversation for a claim, under its lock (a fresh state if it has none), and for
/// a re-delivery, the version its run's transcript was committed at, if it was.
pub(super) fn open_for_claim(
    conversation: &Conversation<'_>,
    redelivered: Option<&RunId>,
) -> Result<(State, Option<u64>)> {
    let mut state = conversation
        .load()?
        .unwrap_or_else(|| State::fresh(conversation.key));
    if conversation.needs_repair(&state) {
        conversation.repair(&mut state)?;
    }
    let committed = match redelivered {
        Some(run) => committed_version(conversation, &state, run)?,
        None => None,
    };
    Ok((state, committed))
}

/// The version at which `run`'s transcript became the head, if it ever did: the head itself,
/// or a completed snapshot of the run in the history (a later lease may have moved the head
/// on since).
fn committed_version(
    conversation: &Conversation<'_>,
    state: &State,
    run: &RunId,
) -> Result<Option<u64>> {
    if let Some(head) = state.head.as_ref().filter(|h| h.run == *run) {
        return Ok(Some(head.version));
    }
    let completed = records::completed_of_run(conversation, state, run)?;
    Ok(completed.last().map(|r| r.version))
}

/// Errors worth retrying as they are (a full disk, a busy file), rather than charging them
/// to the run whose conversation could not be opened.
pub(super) fn is_transient(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Busy)
}

/// The run's conversation could not be opened (its state does not decode, or the store may
/// not read it): count the attempt as failed, so the run retries later or fails for good,
/// and let the other lanes be claimed meanwhile.
pub(super) fn damaged(
    queue: &Queue<'_>,
    mut file: RunFile,
    marker: Marker,
    e: &Error,
    now: SystemTime,
) -> Result<Outcome> {
    tracing::warn!(run = %file.record.run, conversation = %file.key(), error = %e,
        "could not open the run's conversation; the attempt fails");
    let retry_delay = file.retry_delay();
    let failure = Failure::new(
        TerminalStatus::Failed,
        format!("the conversation's state could not be opened: {e}"),
    );
    let record = &mut file.record;
    record.attempts += 1;
    record.updated_at = now;
    record.error = Some(error_text(&failure.error));
    let outcome = match file
        .state()
        .after_failure(&failure, retry_delay, false, now)
    {
        AfterFailure::Retry { at } => {
            file.record.status = RunStatus::Pending;
            file.not_before = at;
            Outcome::LaneWaits
        }
        AfterFailure::Final(status) => {
            file.record.status = status;
            Outcome::LaneMovesOn
        }
        // An outcome added to lobu-core after this store. An error here would fail every
        // claim while the run stays first in its lane, so the run fails for good instead:
        // it never runs again, and its record says why.
        _ => {
            file.record.status = RunStatus::Failed;
            Outcome::LaneMovesOn
        }
    };
    queue.commit(&mut file, Some(marker))?;
    Ok(outcome)
}

/// Complete a run whose transcript was committed (at `version`) but whose record was not,
/// with the steered runs its commit took.
pub(super) fn complete_recovered(
    queue: &Queue<'_>,
    mut file: RunFile,
    marker: Option<Marker>,
    version: u64,
    now: SystemTime,
) -> Result<()> {
    tracing::info!(run = %file.record.run, version,
        "the run's transcript is committed; completing it instead of re-delivering it");
    file.record.status = RunStatus::Completed;
    file.record.updated_at = now;
    file.committed = Some(version);
    steering::commit_completed(queue, &mut file, marker, now)
}

/// The version at which `file`'s run's transcript was committed, if it was, read under the
/// conversation's lock, which the caller holds. A conversation that cannot be read says
/// nothing: logged, `None`.
pub(super) fn committed_locked(conversation: &Conversation<'_>, file: &RunFile) -> Option<u64> {
    let committed = (|| {
        let Some(mut state) = conversation.load()? else {
            return Ok(None);
        };
        if conversation.needs_repair(&state) {
            conversation.repair(&mut state)?;
        }
        committed_version(conversation, &state, &file.record.run)
    })();
    committed.unwrap_or_else(|e| {
        tracing::warn!(conversation = %file.key(), error = %e, "could not read the conversation");
        None
    })
}

/// A claimed run with its conversation, locked (the conversation's lock, which guards its
/// runs' records) for one change.
pub(super) struct Held<'a> {
    pub(super) queue: Queue<'a>,
    conversation: Conversation<'a>,
    /// `None`: the conversation has no state (nothing was ever claimed or leased).
    state: Option<State>,
    pub(super) file: RunFile,
    _conversation_lock: Option<FileLock>,
}

impl<'a> Held<'a> {
    /// Lock and load `claim`'s conversation and run (nothing checked yet).
    fn open(inner: &'a Inner, claim: &'a Claim) -> Result<Self> {
        let queue = Queue::new(inner);
        let conversation = Conversation::new(inner, &claim.key);
        let lock = conversation.lock_if_present()?;
        let state = match lock {
            Some(_) => conversation.load()?,
            None => None,
        };
        let file = queue.load_run(&claim.run)?.ok_or_else(|| {
            Error::not_found(format!("run {} does not exist (or was pruned)", claim.run))
        })?;
        Ok(Held {
            queue,
            conversation,
            state,
            file,
            _conversation_lock: lock,
        })
    }

    /// `Fenced` unless `claim` is the run's newest claim and its conversation's newest owner.
    fn check(&self, claim: &Claim) -> Result<()> {
        if *self.file.key() != claim.key {
            return Err(Error::fenced(format!(
                "run {} belongs to {}, not {}",
                claim.run,
                self.file.key(),
                claim.key
            )));
        }
        let newest = self
            .state
            .as_ref()
            .filter(|s| s.last_fence > 0)
            .map(|s| Fence(s.last_fence));
        self.file.check_claim(claim, newest)
    }

    /// Write the run record (and its marker).
    fn commit_run(&mut self) -> Result<()> {
        let marker = self.queue.find_marker(&self.file)?;
        self.queue.commit(&mut self.file, marker)
    }

    /// End the conversation's ownership by `claim` (its lease), if it still holds it.
    fn end_ownership(&mut self, claim: &Claim) -> Result<()> {
        if let Some(state) = self.state.as_mut()
            && state
                .lease
                .as_ref()
                .is_some_and(|l| l.fence == claim.fence.0)
        {
            state.lease = None;
            self.conversation.save(state)?;
        }
        Ok(())
    }
}

/// Held, checked, and the conversation's state: a checked claim always has one.
pub(super) fn checked<'a>(inner: &'a Inner, claim: &'a Claim) -> Result<Held<'a>> {
    let held = Held::open(inner, claim)?;
    held.check(claim)?;
    Ok(held)
}

pub(crate) fn heartbeat(inner: &Inner, claim: &Claim, lease: Duration) -> Result<Claim> {
    let mut held = checked(inner, claim)?;
    // A requested cancellation: the claim is not extended, its holder stops.
    held.file.check_not_cancelled()?;
    let expires_at = SystemTime::now() + lease;
    if let Some(state) = held.state.as_mut() {
        state.lease = Some(LeaseRecord {
            fence: claim.fence.0,
            expires_at,
        });
        // Not synced, as the claim's own writes (see `start_attempt`).
        held.conversation
            .save_with(state, Durability::Recoverable)?;
    }
    if let Some(holder) = held.file.holder.as_mut() {
        holder.expires_at = expires_at;
    }
    // Only the record: the marker's older instant stays a valid lower bound.
    held.queue
        .save_run_with(&held.file, Durability::Recoverable)?;
    held.file.claim_of()
}

pub(crate) fn complete(inner: &Inner, claim: &Claim, commit: Commit) -> Result<Option<Version>> {
    if let Some(len) = commit.transcript_len() {
        persist::check_size(inner, &claim.key, len)?;
    }
    let mut held = Held::open(inner, claim)?;
    if held.file.record.status == RunStatus::Completed
        && *held.file.key() == claim.key
        && held.file.held_by(claim)
    {
        // This claim's commit already landed (its answer was lost): the same answer again,
        // once the steered runs it took are complete (a crash may have stopped before them).
        steering::finish_landed(&held.queue, &held.file, SystemTime::now())?;
        return Ok(held.file.committed.map(Version));
    }
    held.check(claim)?;
    // Before the transcript: a cancelled run's commit writes nothing.
    held.file.check_not_cancelled()?;
    steering::prepare(&mut held, claim, &commit.steered)?;
    let now = SystemTime::now();
    let version = match commit.transcript {
        Some(transcript) => {
            let state = held
                .state
                .as_mut()
                .ok_or_else(|| persist::never_leased(&claim.key))?;
            let owned = state
                .lease
                .as_ref()
                .is_some_and(|l| l.fence == claim.fence.0);
            // Ends the ownership in the same commit as the head. A crash before the run
            // record below is recovered by the next claim, which finds the run's transcript
            // committed and completes the run.
            state.lease = None;
            let write = claim.completed_write(transcript, commit.expected, commit.base_len);
            let (version, saved) = persist::persist_locked(&held.conversation, state, write)?;
            if owned && !saved {
                // A retry of a stored write commits nothing itself.
                held.conversation.save(state)?;
            }
            Some(version)
        }
        None => None,
    };
    let record = &mut held.file.record;
    record.status = RunStatus::Completed;
    record.output = commit.output;
    record.updated_at = now;
    held.file.committed = version.map(|v| v.0);
    let marker = held.queue.find_marker(&held.file)?;
    steering::commit_completed(&held.queue, &mut held.file, marker, now)?;
    held.end_ownership(claim)?;
    Ok(version)
}

pub(crate) fn fail(inner: &Inner, claim: &Claim, failure: &Failure) -> Result<AfterFailure> {
    let mut held = checked(inner, claim)?;
    let now = SystemTime::now();
    let file = &mut held.file;
    let cancelled = file.cancel_requested.clone();
    let after = file
        .state()
        .after_failure(failure, file.retry_delay(), cancelled.is_some(), now);
    let error = cancelled.as_deref().unwrap_or(&failure.error);
    file.record.error = Some(error_text(error));
    file.record.updated_at = now;
    match after {
        AfterFailure::Retry { at } => {
            file.record.status = RunStatus::Pending;
            file.not_before = at;
        }
        AfterFailure::Final(status) => file.record.status = status,
        // An outcome added to lobu-core after this store: nothing is written, so the claim
        // lapses and the claim rules re-deliver the run or end it.
        other => {
            return Err(Error::new(
                ErrorKind::Other,
                format!("this version of lobu-store-file cannot record {other:?}"),
            ));
        }
    }
    held.commit_run()?;
    held.end_ownership(claim)?;
    Ok(after)
}

pub(crate) fn release(inner: &Inner, claim: &Claim) -> Result<()> {
    let mut held = checked(inner, claim)?;
    let now = SystemTime::now();
    let file = &mut held.file;
    if let Some(reason) = file.cancel_requested.clone() {
        // Handed back after a cancellation was requested: it ends instead of running again.
        file.end_cancelled(&reason, now);
        held.commit_run()?;
        return held.end_ownership(claim);
    }
    file.record.status = RunStatus::Pending;
    // The attempt did not happen as far as the limit is concerned.
    file.record.attempts = file.record.attempts.saturating_sub(1);
    file.record.updated_at = now;
    file.not_before = now;
    held.commit_run()?;
    held.end_ownership(claim)
}
