//! `claim` and the changes a claim holder makes: heartbeat, complete, fail, release.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use lobu_core::{AfterFailure, Claim, Error, Result, RunStatus, TerminalStatus, WorkerId};

use super::files::Queue;
use super::markers::{self, Marker};
use super::runs::{Front, Holder, RunFile};
use crate::clock;
use crate::store::Inner;

/// The most bytes of a failure message kept in a run record (as in lobu-store-pg): one
/// runaway message must not bloat every later read of the record.
pub(crate) const MAX_ERROR_BYTES: usize = 16 * 1024;

/// `error` as stored: cut to [`MAX_ERROR_BYTES`] at a char boundary, with `…` marking the cut
/// (the rule lobu-store-pg applies, so both stores report the same text).
fn error_text(error: &str) -> String {
    let mut text = error.to_owned();
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

/// Claim the oldest claimable front of any lane. Only markers are listed; a record is opened
/// for the chosen candidate only (and for stale candidates, which are corrected on the way).
pub(crate) fn claim(inner: &Inner, worker: &WorkerId, lease: Duration) -> Result<Option<Claim>> {
    let queue = Queue::new(inner);
    let _lock = queue.lock()?;
    let now = SystemTime::now();
    let now_ms = clock::millis(now);
    let mut lanes = markers::lanes(queue.markers()?);
    // Lanes whose front turned out not to be due: they have nothing to offer this call.
    let mut waiting: HashSet<String> = HashSet::new();
    loop {
        let next = markers::fronts(&lanes)
            .filter(|m| m.due_ms <= now_ms && !waiting.contains(&m.lane))
            .min_by(|a, b| (a.seq, &a.run).cmp(&(b.seq, &b.run)))
            .cloned();
        let Some(marker) = next else {
            return Ok(None);
        };
        let file = match queue.load_run(&marker.run)? {
            Some(file) if file.seq == marker.seq && !file.record.status.is_terminal() => file,
            // A crashed submit's marker, or a finished run's marker left by a crash.
            _ => {
                queue.remove_marker(&marker)?;
                forget(&mut lanes, &marker);
                continue;
            }
        };
        match file.front(now) {
            Front::Ready => return start_attempt(&queue, file, marker, worker, lease, now),
            Front::Exhausted => {
                expire(&queue, file, marker.clone(), now)?;
                forget(&mut lanes, &marker);
            }
            Front::Later => {
                if let Some(wanted) = file.wanted_marker() {
                    queue.move_marker(&marker, &wanted)?;
                }
                waiting.insert(marker.lane);
            }
        }
    }
}

fn forget(lanes: &mut markers::Lanes, marker: &Marker) {
    if let Some(lane) = lanes.get_mut(&marker.lane) {
        lane.remove(&(marker.seq, marker.run.clone()));
        if lane.is_empty() {
            lanes.remove(&marker.lane);
        }
    }
}

fn start_attempt(
    queue: &Queue<'_>,
    mut file: RunFile,
    marker: Marker,
    worker: &WorkerId,
    lease: Duration,
    now: SystemTime,
) -> Result<Option<Claim>> {
    let record = &mut file.record;
    if record.status == RunStatus::Running {
        record.error = Some(format!(
            "the claim of attempt {} expired (its worker stopped heartbeating); re-delivered",
            record.attempts
        ));
    }
    record.status = RunStatus::Running;
    // Counted when the attempt starts, so a worker that dies mid-run still used it.
    record.attempts += 1;
    record.updated_at = now;
    file.last_token += 1;
    file.holder = Some(Holder {
        worker: worker.clone(),
        token: file.last_token,
        expires_at: now + lease,
    });
    queue.commit(&mut file, Some(marker))?;
    file.claim_of().map(Some)
}

/// The claim of the run's last attempt expired: the run fails and its lane moves on.
fn expire(queue: &Queue<'_>, mut file: RunFile, marker: Marker, now: SystemTime) -> Result<()> {
    let record = &mut file.record;
    record.status = RunStatus::Failed;
    record.error = Some(format!(
        "the claim of attempt {} of {} expired (its worker stopped heartbeating)",
        record.attempts, record.max_attempts
    ));
    record.updated_at = now;
    queue.commit(&mut file, Some(marker))
}

/// The claimed run, if `claim` is its newest claim.
fn held(queue: &Queue<'_>, claim: &Claim) -> Result<RunFile> {
    let file = queue.load_run(&claim.run)?.ok_or_else(|| {
        Error::not_found(format!("run {} does not exist (or was pruned)", claim.run))
    })?;
    file.check_claim(claim)?;
    Ok(file)
}

/// Apply `change` to the run `claim` holds and commit it; `change` runs before anything is
/// written, so an error from it changes nothing.
fn change<T>(
    inner: &Inner,
    claim: &Claim,
    change: impl FnOnce(&mut RunFile, SystemTime) -> Result<T>,
) -> Result<T> {
    let queue = Queue::new(inner);
    let _lock = queue.lock()?;
    let mut file = held(&queue, claim)?;
    let now = SystemTime::now();
    let out = change(&mut file, now)?;
    let marker = queue.find_marker(&file)?;
    queue.commit(&mut file, marker)?;
    Ok(out)
}

pub(crate) fn heartbeat(inner: &Inner, claim: &Claim, lease: Duration) -> Result<Claim> {
    let queue = Queue::new(inner);
    let _lock = queue.lock()?;
    let mut file = held(&queue, claim)?;
    if let Some(holder) = file.holder.as_mut() {
        holder.expires_at = SystemTime::now() + lease;
    }
    // Only the record: the marker's older instant stays a valid lower bound.
    queue.save_run(&file)?;
    file.claim_of()
}

pub(crate) fn complete(
    inner: &Inner,
    claim: &Claim,
    output: Option<serde_json::Value>,
) -> Result<()> {
    change(inner, claim, |file, now| {
        file.record.status = RunStatus::Completed;
        file.record.output = output;
        file.record.updated_at = now;
        Ok(())
    })
}

pub(crate) fn fail(
    inner: &Inner,
    claim: &Claim,
    status: TerminalStatus,
    error: &str,
) -> Result<AfterFailure> {
    change(inner, claim, |file, now| {
        let retry_delay = file.retry_delay();
        let record = &mut file.record;
        record.error = Some(error_text(error));
        record.updated_at = now;
        if record.attempts < record.max_attempts {
            let at = now + retry_delay;
            record.status = RunStatus::Pending;
            file.not_before = at;
            return Ok(AfterFailure::Retry { at });
        }
        record.status = RunStatus::from(status);
        Ok(AfterFailure::Final(record.status))
    })
}

pub(crate) fn release(inner: &Inner, claim: &Claim) -> Result<()> {
    change(inner, claim, |file, now| {
        let record = &mut file.record;
        record.status = RunStatus::Pending;
        // The attempt did not happen as far as the limit is concerned.
        record.attempts = record.attempts.saturating_sub(1);
        record.updated_at = now;
        file.not_before = now;
        Ok(())
    })
}
