//! Submitting runs (with the idempotency index and the multitask strategies), looking them
//! up, counting and pruning them.

use std::time::{Duration, SystemTime};

use lobu_core::control::cancel_reason;
use lobu_core::multitask::{interrupted_reason, plan_submit};
use lobu_core::retention::RunPrune;
use lobu_core::{
    ConversationKey, MultitaskStrategy, NewRun, OrgId, Result, RunId, RunRecord, Submitted,
};
use serde::{Deserialize, Serialize};

use super::cancel::cancel_locked;
use super::files::Queue;
use super::lane::of_lane;
use super::markers::{self, Marker, lane_of};
use super::runs::RunFile;
use crate::atomic::read_optional;
use crate::clock;
use crate::error::{io_at, undecodable};
use crate::layout;
use crate::state::{Conversation, State};
use crate::store::{Inner, Step};

/// `idempotency/<org>/<agent>/<conversation>/<key>`: the run a key was first used for.
/// `prune_runs` removes the entry with its run, so a retry after run retention creates a
/// new run (as in lobu-store-pg; client retries come within minutes).
#[derive(Debug, Serialize, Deserialize)]
struct IdempotencyEntry {
    run: RunId,
    /// Written `true` by earlier versions, which kept the entry of a pruned run; such an
    /// entry keeps answering with that run.
    #[serde(default)]
    pruned: bool,
}

/// Make `new` durable, after applying its multitask strategy. Written in this order, each
/// step synced: the idempotency entry (so a retry after a crash finds the run id it was
/// given), the strategy's cancellations, the marker, the record. A crash leaves at worst an
/// entry or a marker without a record, which a retry completes (entry) or `claim` removes
/// (marker); a record is never without its marker. Also returns the runs whose followers
/// should be woken (those cancelled; for a steer, the conversation's running run).
///
/// Under the conversation's lock when it reads or changes what that lock guards (an
/// idempotency entry, the lane for `reject`, `interrupt` and `rollback`, a new
/// conversation's state record); a plain enqueue takes only the queue lock, twice, briefly
/// (see [`Queue::enqueue`]).
///
/// Syncs: 3 (marker 1, record 2), none under the queue lock, plus 2 for a new idempotency
/// entry, each cancellation's (see [`super::cancel`]), and a new conversation's state record
/// and directories; `enqueue` and `steer` read no records, the others their lane's.
pub(crate) fn submit(inner: &Inner, new: NewRun) -> Result<(Submitted, Vec<RunId>)> {
    let queue = Queue::new(inner);
    let conversation = Conversation::new(inner, &new.key);
    let strategy = new.multitask;
    let created = conversation.exists();
    let _lock = if new.idempotency_key.is_some() || strategy.looks_at_the_lane() || !created {
        Some(conversation.create_and_lock()?)
    } else {
        None
    };
    if !conversation.exists() {
        // Made here rather than by the first claim, which holds the queue lock and so must
        // not sync.
        conversation.save(&State::fresh(&new.key))?;
    }
    let now = SystemTime::now();
    let mut reserved = None;
    let mut entry_path = None;
    if let Some(idem) = &new.idempotency_key {
        let path = queue.idempotency_path(&new.key, idem);
        if let Some(bytes) = read_optional(&path)? {
            let entry: IdempotencyEntry =
                serde_json::from_slice(&bytes).map_err(undecodable(&path))?;
            if entry.pruned || queue.load_run(&entry.run)?.is_some() {
                let earlier = Submitted {
                    run: entry.run,
                    created: false,
                };
                return Ok((earlier, Vec::new()));
            }
            // The first submit crashed before storing its run: store it now, same id.
            reserved = Some(entry.run);
        } else {
            entry_path = Some(path);
        }
    }
    let run = reserved.unwrap_or_else(RunId::generate);
    // Read without the queue lock: only this conversation's markers matter, and they do not
    // move while its lock is held.
    let lane = match strategy {
        // Whether the conversation has an unfinished run at all: its oldest says.
        MultitaskStrategy::Reject => queue.lane(&new.key, 1)?,
        _ if strategy.looks_at_the_lane() => queue.lane(&new.key, usize::MAX)?,
        _ => Vec::new(),
    };
    let rows: Vec<_> = lane.iter().map(RunFile::queued).collect();
    // A rejected submit writes nothing, not even its idempotency entry.
    let cancelled = plan_submit(strategy, &rows)?;
    if let Some(path) = entry_path {
        let entry = IdempotencyEntry {
            run: run.clone(),
            pruned: false,
        };
        queue.write_json(&path, &entry)?;
        inner.reached(Step::IdempotencyReserved)?;
    }
    let reason = cancel_reason(&interrupted_reason(strategy, &run));
    let mut woken = Vec::new();
    for id in cancelled {
        if cancel_locked(&queue, &conversation, &new.key.org, &id, &reason, now)?.is_some() {
            woken.push(id);
        }
    }
    let running = match strategy {
        MultitaskStrategy::Steer => running_front(&queue.markers()?, &new.key),
        _ => None,
    };
    queue.enqueue(&run, |seq| RunFile::new(seq, run.clone(), new, now))?;
    if let Some(front) = running {
        touch_record(&queue, &front);
        woken.push(front);
    }
    Ok((Submitted { run, created: true }, woken))
}

/// The conversation's oldest unfinished run if its marker says it is running (a hint: the
/// marker may be a crash's leftover).
fn running_front(markers: &[Marker], key: &ConversationKey) -> Option<RunId> {
    let front = of_lane(markers, &lane_of(key)).into_iter().next()?;
    (!front.pending).then(|| front.run.clone())
}

/// Bump the modification time of `run`'s record, which other processes' watchers (and
/// pollers) take for a change of the run: a steer submit's wake-up for the running turn's
/// followers elsewhere. A hint, not synced; a failure is only logged.
fn touch_record(queue: &Queue<'_>, run: &RunId) {
    let path = queue.run_path(run);
    let touched = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|file| file.set_modified(SystemTime::now()));
    if let Err(e) = touched {
        tracing::debug!(run = %run, error = %e, "could not touch the running run's record");
    }
}

pub(crate) fn status(inner: &Inner, org: &OrgId, run: &RunId) -> Result<Option<RunRecord>> {
    // Records are replaced atomically: no lock needed to read one whole.
    let file = Queue::new(inner).load_run(run)?;
    Ok(file.filter(|f| f.key().org == *org).map(|f| f.record))
}

pub(crate) fn depth(inner: &Inner) -> Result<u64> {
    let markers = Queue::new(inner).markers()?;
    Ok(markers.iter().filter(|m| m.pending).count() as u64)
}

/// Remove (or, for a dry run, count) at most `prune.limit` runs that `prune` takes, with
/// their idempotency entries and events. Each run under its conversation's lock; a dry run
/// changes nothing, so it takes none (each record reads consistently).
///
/// Syncs: per run, 1 for an idempotency entry's directory; then 1 for the records'
/// directory (none for a dry run).
pub(crate) fn prune_runs(inner: &Inner, prune: &RunPrune) -> Result<u64> {
    let queue = Queue::new(inner);
    let dir = queue.runs_dir();
    let mut removed = 0;
    for (text, path) in layout::leaves(&dir).map_err(io_at("list", &dir))? {
        if removed == prune.limit {
            break;
        }
        if RunId::new(&text).is_err() {
            continue;
        }
        let Some(file) = queue.load_run_at(&path)? else {
            continue;
        };
        if !prune.takes(file.record.status, file.record.updated_at) {
            continue;
        }
        let conversation = Conversation::new(inner, file.key());
        let _lock = if prune.dry_run {
            None
        } else {
            conversation.lock_if_present()?
        };
        // Read again under the lock: another prune may have removed it meanwhile.
        let Some(file) = queue.load_run_at(&path)? else {
            continue;
        };
        let record = &file.record;
        if !prune.takes(record.status, record.updated_at) {
            continue;
        }
        removed += 1;
        if prune.dry_run {
            continue;
        }
        if let Some(idem) = &file.idempotency_key {
            // The entry goes before the record, so a retried submit is never mistaken for
            // the crashed first submit of a run that no longer exists (which would store a
            // new run under the pruned run's id). A crash in between leaves the record for
            // the next prune.
            queue.remove_idempotency(&record.key, idem)?;
        }
        // The events go before the record: a crash in between leaves the record for the
        // next prune. (The log's removal is not synced: after a power loss it may come back
        // without its run, and `prune_events` removes it.)
        crate::events::remove(inner, &record.run)?;
        queue.remove_run(&record.run)?;
    }
    // Nothing removed: no sync (and a store that never queued a run has no directory).
    if !prune.dry_run && removed > 0 {
        inner.disk.sync_dir(&dir)?;
    }
    Ok(removed as u64)
}

/// How long until a run may be claimable (zero: now), from the markers alone; `None` when
/// nothing is queued. Markers are lower bounds, so this may be early, never late.
pub(crate) fn next_due(inner: &Inner) -> Result<Option<Duration>> {
    let lanes = markers::lanes(Queue::new(inner).markers()?);
    let now = clock::millis(SystemTime::now());
    // A lane a claim found owned by a lease is due when the lease lapses (or when this
    // process releases it, which wakes the waiters): without that, a leased lane's due run
    // would make every worker poll without pause.
    let owned = inner
        .owned_lanes
        .lock()
        .map(|o| o.clone())
        .unwrap_or_default();
    let due = markers::fronts(&lanes)
        .map(|m| {
            owned
                .get(&m.lane)
                .map_or(m.due_ms, |until| m.due_ms.max(*until))
        })
        .min();
    Ok(due.map(|at| Duration::from_millis(at.saturating_sub(now))))
}
