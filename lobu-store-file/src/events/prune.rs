//! `prune_events_with`: removing finished runs' events, at most a limit per call.
//!
//! A log goes whole while all its events fit in what is left of the limit. The log that does
//! not fit loses only its first events (so at most one log per call is trimmed: it uses up
//! the limit): the rest of its whole prefix is copied to a staging file beside it, synced and
//! renamed over it, as the store writes every other file, so a crash leaves the old log or
//! the trimmed one, never a mix. The kept events keep their seqs; readers number from the
//! log's first line (see [`super::log`]) and tell a trimmed log from one they remember by
//! its first seq. Removing only whole logs would overshoot the limit, or, for a log longer
//! than the limit, never make progress; cutting in place would change bytes under readers.
//!
//! Every change is made under the lock of the run's conversation, taken per log, with the
//! run's record read again under it: `record_events`, `prune_runs` and `erase` change logs
//! under that lock too, so none interleaves with a trim, and a trim never brings back a log
//! that another call removed. A log whose run is gone (nobody can append to it) is changed
//! under the queue lock instead, so two prunes never trim it at once. A finished run records
//! nothing more, so its log only ever shrinks. A dry run takes no lock and changes nothing.
//!
//! Cost: 1 lock per log changed; 0 syncs for a log removed whole (as before: a power loss
//! may bring it back, and the next prune removes it again); 2 syncs for the trimmed log (the
//! staging file, then its directory).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use lobu_core::retention::EventPrune;
use lobu_core::{Result, RunId};

use super::log::{Tail, scan};
use super::{count, forget, open_log, unlink};
use crate::error::io_at;
use crate::layout;
use crate::queue::files::Queue;
use crate::state::Conversation;
use crate::store::Inner;

/// Remove (or, for a dry run, count) at most `prune.limit` events of the runs `prune` takes;
/// how many.
pub(crate) fn prune(inner: &Inner, prune: &EventPrune) -> Result<u64> {
    let queue = Queue::new(inner);
    let dir = inner.layout.events();
    let limit = u64::try_from(prune.limit).unwrap_or(u64::MAX);
    let mut left = limit;
    for (text, path) in layout::leaves(&dir).map_err(io_at("list", &dir))? {
        if left == 0 {
            break;
        }
        let Ok(run) = RunId::new(&text) else {
            continue;
        };
        if !goes(&queue, &run, prune)? {
            continue;
        }
        let taken = if prune.dry_run {
            match open_log(&path)? {
                Some(log) => count(&log, &path)?.min(left),
                None => 0,
            }
        } else {
            let key = queue.load_run(&run)?.map(|file| file.key().clone());
            let (_conversation_lock, _queue_lock) = match &key {
                Some(key) => (Conversation::new(inner, key).lock_if_present()?, None),
                None => (None, Some(Queue::locked(inner)?)),
            };
            // The run cannot change its mind (it is finished), but another call may have
            // pruned it meanwhile.
            if !goes(&queue, &run, prune)? {
                continue;
            }
            take(inner, &run, &path, left)?
        };
        left -= taken;
    }
    Ok(limit - left)
}

/// Whether `run`'s events go, by [`EventPrune::takes`] of its record. A log whose run no
/// longer exists goes too: nothing can read it.
fn goes(queue: &Queue<'_>, run: &RunId, prune: &EventPrune) -> Result<bool> {
    Ok(match queue.load_run(run)? {
        Some(file) => prune.takes(file.record.status, file.record.updated_at),
        None => true,
    })
}

/// Remove `run`'s first events, at most `left` (its whole log when it holds no more);
/// how many. Under the run's conversation's lock (the queue lock for a run that is gone).
fn take(inner: &Inner, run: &RunId, path: &Path, left: u64) -> Result<u64> {
    let Some(log) = open_log(path)? else {
        return Ok(0);
    };
    let whole = scan(&log, Tail::default(), u64::MAX, 0).map_err(io_at("read", path))?;
    let held = whole.tail.events();
    if held <= left {
        return Ok(if unlink(inner, run, path)? { held } else { 0 });
    }
    // Keep the events after the first `left`, up to the end of the whole prefix (a torn
    // tail of a finished run is garbage).
    let keep_after = whole.tail.first + left - 1;
    let from = scan(&log, Tail::default(), keep_after, 0).map_err(io_at("read", path))?;
    let Some(cut) = from.after_at else {
        return Ok(0); // cannot be: more than `left` events are whole
    };
    trim(inner, &log, path, cut, whole.tail.len)?;
    forget(inner, run);
    Ok(left)
}

/// Replace the log at `path` with its bytes `cut..end`.
fn trim(inner: &Inner, mut log: &File, path: &Path, cut: u64, end: u64) -> Result<()> {
    log.seek(SeekFrom::Start(cut))
        .map_err(io_at("seek in", path))?;
    let mut kept = log.take(end - cut);
    inner
        .disk
        .replace_from(&staging_of(path), path, &mut kept)?;
    Ok(())
}

/// Where a trim of the log at `path` stages its new log: a hidden name beside it (which
/// [`layout::leaves`] skips), the same for every trim of the log, so whoever removes the log
/// (under the lock every trim of it takes) removes a crashed trim's leftover with it.
pub(super) fn staging_of(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("log");
    path.with_file_name(format!(".{name}.trim.tmp"))
}
