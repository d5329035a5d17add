//! Steering on files: what a running turn is offered ([`steerable`]), and a commit that
//! takes steered runs ([`prepare`], [`commit_completed`]), made all or nothing across a crash.
//!
//! Such a commit changes several records, so it cannot be one write. It is one step this
//! way: first the run's record notes the runs it takes (`steering`); then the commit point,
//! the same as any turn's (its transcript's `state.json` line; without a transcript, its
//! completed record); then the steered runs complete, and the run's marker goes last. A crash
//! before the commit point leaves only the note, which the run's next commit or claim
//! replaces. A crash after it is finished by whatever looks at the run next: a retry of the
//! commit, the claim that finds its transcript committed (re-delivery or expiry) or finds its
//! marker left behind, or a cancel of the run or of a run it took ([`settle`]).
//!
//! Syncs of a complete taking N steered runs, on top of the complete's own (4 with an
//! appended transcript): the note 1, each steered run 2 (record 1, marker 1). Taking none
//! costs nothing here; [`steerable`] syncs nothing.

use std::time::SystemTime;

use lobu_core::multitask::{self, MAX_STEERED, Queued, check_steered, steered_output};
use lobu_core::{Claim, Result, RunId, RunStatus, Steered};

use super::claim::{Held, checked, committed_locked, complete_recovered};
use super::files::Queue;
use super::lane::of_lane;
use super::markers::Marker;
use super::runs::RunFile;
use crate::atomic::Durability;
use crate::state::Conversation;
use crate::store::{Inner, Step};

/// A lane long enough for the offer: the claimed run and what may be taken behind it.
const OFFER_LANE: usize = MAX_STEERED + 1;

/// The steered runs the claim's turn may take now, with their payloads, oldest first. Under
/// the conversation's lock (so the offer is one consistent look), but it only reads.
pub(crate) fn steerable(inner: &Inner, claim: &Claim) -> Result<Vec<Steered>> {
    let held = checked(inner, claim)?;
    held.file.check_not_cancelled()?;
    let lane = held.queue.lane(&claim.key, OFFER_LANE)?;
    let offered = multitask::steerable(&claim.run, &rows(&lane));
    Ok(lane
        .into_iter()
        .filter(|file| offered.contains(&file.record.run))
        .map(|file| Steered {
            run: file.record.run,
            payload: file.record.payload,
        })
        .collect())
}

fn rows(lane: &[RunFile]) -> Vec<Queued> {
    lane.iter().map(RunFile::queued).collect()
}

/// Check what a commit took (`Conflict`: nothing changes) and note it in the run's record
/// before anything lands. A commit taking nothing, over a record noting nothing, reads and
/// writes nothing here.
pub(super) fn prepare(held: &mut Held<'_>, claim: &Claim, steered: &[RunId]) -> Result<()> {
    if steered.is_empty() && held.file.steering.is_empty() {
        return Ok(());
    }
    if !steered.is_empty() {
        // Also a retry whose transcript landed before a crash: nothing changes the runs
        // behind a running turn meanwhile but a cancel, which finishes the landed commit
        // first (see `settle`), so its runs are still offered.
        let lane = held.queue.lane(&claim.key, OFFER_LANE)?;
        check_steered(&claim.run, &rows(&lane), steered)?;
    }
    if held.file.steering != steered {
        // An earlier attempt's note is replaced even by an empty one: recovery must never
        // complete runs this commit did not take.
        held.file.steering = steered.to_vec();
        held.queue.save_run(&held.file)?;
    }
    Ok(())
}

/// Write `file`, just completed, with the steered runs its commit took: its record, the
/// steered runs, then its marker (whose presence sends the next claim back to finish them).
/// With none taken, the ordinary record-and-marker commit.
pub(super) fn commit_completed(
    queue: &Queue<'_>,
    file: &mut RunFile,
    marker: Option<Marker>,
    now: SystemTime,
) -> Result<()> {
    if file.steering.is_empty() {
        // The record is synced; the marker's removal is not: a finished run's marker that
        // a power loss brings back is removed by the first claim that finds it.
        return queue.commit_with(file, marker, Durability::Durable, Durability::Recoverable);
    }
    file.marker = None;
    queue.save_run(file)?;
    queue.inner.reached(Step::SteeredPending)?;
    finish(queue, file, now)?;
    match marker {
        Some(marker) => queue.remove_marker(&marker),
        None => Ok(()),
    }
}

/// Complete the steered runs that `into`'s landed commit took and that are still unfinished
/// (a crash may have stopped after some). Nothing for a run that did not complete.
pub(super) fn finish(queue: &Queue<'_>, into: &RunFile, now: SystemTime) -> Result<()> {
    if into.record.status != RunStatus::Completed {
        return Ok(());
    }
    let output = steered_output(&into.record.run);
    for run in &into.steering {
        let Some(mut file) = queue.load_run(run)? else {
            continue;
        };
        // Finished already, or cancelled by a path that could not tell the commit landed.
        if file.record.status.is_terminal() || file.key() != into.key() {
            continue;
        }
        let record = &mut file.record;
        record.status = RunStatus::Completed;
        record.output = Some(output.clone());
        record.updated_at = now;
        let marker = queue.find_marker(&file)?;
        queue.commit(&mut file, marker)?;
    }
    Ok(())
}

/// [`finish`], and the completed run's own marker if a crash left it: a retried commit's
/// answer. Nothing at all when the run took no steered runs.
pub(super) fn finish_landed(queue: &Queue<'_>, into: &RunFile, now: SystemTime) -> Result<()> {
    if into.steering.is_empty() {
        return Ok(());
    }
    finish(queue, into, now)?;
    match queue.find_marker(into)? {
        Some(marker) => queue.remove_marker(&marker),
        None => Ok(()),
    }
}

/// Before a cancel changes `file`: finish a commit taking steered runs that landed before a
/// crash stopped it, `file`'s own or that of the turn that took `file`, so the cancel sees
/// what the commit did. Whether it finished one (then `file` must be read again). Under the
/// lock of `file`'s conversation, `conversation`.
pub(super) fn settle(
    queue: &Queue<'_>,
    conversation: &Conversation<'_>,
    file: &RunFile,
    now: SystemTime,
) -> Result<bool> {
    let owner = if !file.steering.is_empty() {
        Some(file.clone())
    } else if file.steer && file.record.status == RunStatus::Pending {
        taken_by(queue, file)?
    } else {
        None
    };
    let Some(owner) = owner else {
        return Ok(false);
    };
    match owner.record.status {
        RunStatus::Completed => finish_landed(queue, &owner, now).map(|()| true),
        RunStatus::Running => match committed_locked(conversation, &owner) {
            Some(version) => {
                let marker = queue.find_marker(&owner)?;
                complete_recovered(queue, owner, marker, version, now).map(|()| true)
            }
            None => Ok(false),
        },
        _ => Ok(false),
    }
}

/// The run ahead of `file` in its lane whose commit noted `file` among the runs it takes.
fn taken_by(queue: &Queue<'_>, file: &RunFile) -> Result<Option<RunFile>> {
    let markers = queue.markers()?;
    for marker in of_lane(&markers, &file.lane) {
        if marker.seq >= file.seq {
            break;
        }
        if let Some(ahead) = queue.load_run(&marker.run)?
            && ahead.steering.contains(&file.record.run)
        {
            return Ok(Some(ahead));
        }
    }
    Ok(None)
}
