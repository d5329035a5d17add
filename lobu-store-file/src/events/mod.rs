//! Run events for [`FileStore`](crate::FileStore): one append-only log per run,
//! `<root>/events/<run>` (the run id encoded as every name in the store is), in the format of
//! [`log`].
//!
//! **Recording** checks the claim and appends under the lock of the run's conversation, the
//! lock every change of a run's record (claim, heartbeat, complete, fail, release, cancel,
//! the reaper, `prune_runs`) already holds, in this or any other process: the run record read
//! under it is the run's current one, and the run cannot be claimed anew or end between the
//! check and the append. The lock is held for the check and one `write` only, never across a
//! sync.
//! The newest claim's fence is the record's `holder`, which the run keeps after that claim's
//! `fail` or `release` (so that claim may still say it will retry) and which only a newer
//! claim replaces.
//!
//! **Durability**: an append is one `write` of the whole batch to a file opened with
//! `O_APPEND`, never synced. Events are not the transcript: a process that dies leaves them
//! in the page cache, so only a power loss (or an OS crash) can lose them, and then only the
//! newest ones (a torn append is ignored whole, see [`log`]); their seqs may then be used
//! again by the run's next attempt. The log's directory entry is not synced either.
//!
//! **Reading** takes no lock: the run record first, then the log. Events are appended before
//! the run can end, so a terminal record read first means the log read after it is whole
//! (or trimmed whole of its first events by a bounded prune, see [`mod@prune`]).
//!
//! Cost per call (syncs and locks):
//!
//! * `record_events`: 0 syncs, 1 lock (the conversation's); reads the run record, and the log only
//!   past what this process last saw of it (nothing, when it made the last append itself);
//!   one `write`. An empty append reads and writes nothing but the record.
//! * `read_events`: 0 syncs, 0 locks; the record, then the log from the start, or from
//!   where this process last saw it end when the caller has seen that far (then also the
//!   log's first bytes, which tell whether a prune trimmed it since).
//! * `prune_events_with`: 0 locks and syncs for a dry run; see [`mod@prune`] for the others.

mod log;
mod prune;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use lobu_core::events::{EventPage, check_may_record};
use lobu_core::{Claim, Error, Fence, OrgId, Result, RunId};

use self::log::{Scan, Tail, encode_append, first_seq, scan};
pub(crate) use self::prune::prune;
use crate::atomic::remove_file;
use crate::error::{FileStoreError, io_at};
use crate::queue::files::Queue;
use crate::state::Conversation;
use crate::store::Inner;

/// How many runs' log tails a store remembers before it forgets them all.
const REMEMBERED_TAILS: usize = 4096;

/// What this process last saw of some runs' logs (a whole prefix each): appends and reads
/// resume there instead of reading the log from its start. Every append grows a log and
/// only a torn tail past a whole prefix is ever cut, so a remembered prefix stays true until
/// the log is removed with its run's events, or trimmed by a bounded prune (which readers
/// tell by the log's first seq: see [`read`]).
pub(crate) type Tails = HashMap<RunId, Tail>;

/// Append `events` (already checked) under `claim`; the run's newest seq afterwards.
pub(crate) fn record(inner: &Inner, claim: &Claim, events: &[String]) -> Result<u64> {
    let queue = Queue::new(inner);
    let _lock = Conversation::new(inner, &claim.key).lock_if_present()?;
    let file = queue
        .load_run(&claim.run)?
        .filter(|file| file.key().org == claim.key.org)
        .ok_or_else(|| Error::not_found(format!("run {} does not exist", claim.run)))?;
    if *file.key() != claim.key {
        return Err(Error::fenced(format!(
            "run {} belongs to {}, not {}",
            claim.run,
            file.key(),
            claim.key
        )));
    }
    let newest = file.holder.as_ref().map(|holder| Fence(holder.fence));
    check_may_record(claim, file.record.status, newest)?;
    let path = inner.layout.event_log(&claim.run);
    if events.is_empty() {
        return Ok(match open_log(&path)? {
            Some(log) => whole_prefix(inner, &claim.run, &log, &path)?.seq,
            None => 0,
        });
    }
    let log = open_for_append(&path)?;
    let tail = whole_prefix(inner, &claim.run, &log, &path)?;
    if log.metadata().map_err(io_at("inspect", &path))?.len() > tail.len {
        log.set_len(tail.len)
            .map_err(io_at("cut the torn tail of", &path))?;
    }
    let bytes = encode_append(tail.seq, claim.attempt, events).map_err(|source| {
        FileStoreError::Corrupt {
            path: path.clone(),
            detail: "the events do not encode".to_owned(),
            source: Some(source),
        }
    })?;
    if let Err(e) = (&log).write_all(&bytes) {
        // Part of it may be there: a torn tail, which the next appender cuts off.
        forget(inner, &claim.run);
        return Err(io_at("append to", &path)(e).into());
    }
    let appended = tail.appended(bytes.len() as u64, events.len() as u64);
    remember(inner, &claim.run, appended);
    Ok(appended.seq)
}

/// The run (of `org`) and at most `limit` of its events after `after`.
pub(crate) fn read(
    inner: &Inner,
    org: &OrgId,
    run: &RunId,
    after: u64,
    limit: usize,
) -> Result<Option<EventPage>> {
    // The record first: if it is terminal, every event was appended before it was written.
    let record = Queue::new(inner).load_run(run)?;
    let Some(record) = record.filter(|file| file.key().org == *org) else {
        return Ok(None);
    };
    let path = inner.layout.event_log(run);
    let Scan { tail, events, .. } = match open_log(&path)? {
        Some(log) => {
            let size = log.metadata().map_err(io_at("inspect", &path))?.len();
            let from = match remembered(inner, run) {
                Some(seen) if seen.len <= size && seen.seq <= after => {
                    still_holds(&log, seen, &path)?.then_some(seen)
                }
                _ => None,
            };
            let from = from.unwrap_or_default();
            let found = scan(&log, from, after, limit).map_err(io_at("read", &path))?;
            remember(inner, run, found.tail);
            found
        }
        None => {
            forget(inner, run);
            Scan {
                tail: Tail::default(),
                events: Vec::new(),
                after_at: None,
            }
        }
    };
    Ok(Some(EventPage {
        record: record.record,
        events,
        last_seq: tail.seq,
    }))
}

/// Whether `seen`, a prefix this process remembers of `run`'s log, is one of `log` as it is
/// now. Only a run's finished log changes other than by appends: a bounded prune (this
/// process's forgets what it trims, another's cannot) may have rewritten it without its
/// first events, and then its first seq is another.
fn still_holds(log: &File, seen: Tail, path: &Path) -> Result<bool> {
    if seen.len == 0 {
        return Ok(true);
    }
    let first = first_seq(log).map_err(io_at("read", path))?;
    Ok(first == Some(seen.first))
}

/// Remove `run`'s log, if it has one (`prune_runs`, under the conversation's lock, before
/// the record).
pub(crate) fn remove(inner: &Inner, run: &RunId) -> Result<()> {
    unlink(inner, run, &inner.layout.event_log(run))?;
    Ok(())
}

/// Remove `run`'s log, if it has one (erasure, under the conversation's lock, before the
/// record);
/// how many events it held.
pub(crate) fn erase(inner: &Inner, run: &RunId) -> Result<u64> {
    let path = inner.layout.event_log(run);
    let held = match open_log(&path)? {
        Some(log) => count(&log, &path)?,
        None => 0,
    };
    Ok(if unlink(inner, run, &path)? { held } else { 0 })
}

/// How many events a log holds.
fn count(log: &File, path: &Path) -> Result<u64> {
    let found = scan(log, Tail::default(), u64::MAX, 0).map_err(io_at("read", path))?;
    Ok(found.tail.events())
}

/// Remove a log, and what a trim that crashed left beside it (first: it is found by the
/// log's name only); whether the log was there.
fn unlink(inner: &Inner, run: &RunId, path: &Path) -> Result<bool> {
    forget(inner, run);
    remove_file(&prune::staging_of(path))?;
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_at("remove", path)(e).into()),
    }
}

/// The log's whole prefix, read past what this process last saw of it.
fn whole_prefix(inner: &Inner, run: &RunId, log: &File, path: &Path) -> Result<Tail> {
    let size = log.metadata().map_err(io_at("inspect", path))?.len();
    let seen = remembered(inner, run)
        .filter(|seen| seen.len <= size)
        .unwrap_or_default();
    if seen.len == size {
        return Ok(seen);
    }
    let found = scan(log, seen, u64::MAX, 0).map_err(io_at("read", path))?;
    remember(inner, run, found.tail);
    Ok(found.tail)
}

fn open_log(path: &Path) -> Result<Option<File>> {
    match File::open(path) {
        Ok(log) => Ok(Some(log)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at("open", path)(e).into()),
    }
}

/// Open (creating it, and its directories for a store written before events existed) a log
/// for appending; reads see the whole file.
fn open_for_append(path: &Path) -> Result<File> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(io_at("create directory", dir))?;
            }
            Ok(open().map_err(io_at("create", path))?)
        }
        opened => Ok(opened.map_err(io_at("open", path))?),
    }
}

fn tails(inner: &Inner) -> std::sync::MutexGuard<'_, Tails> {
    // Every update is one insert or removal: a poisoned map is still consistent.
    inner.event_tails.lock().unwrap_or_else(|p| p.into_inner())
}

fn remembered(inner: &Inner, run: &RunId) -> Option<Tail> {
    tails(inner).get(run).copied()
}

fn remember(inner: &Inner, run: &RunId, tail: Tail) {
    let mut tails = tails(inner);
    if tails.len() >= REMEMBERED_TAILS && !tails.contains_key(run) {
        tails.clear();
    }
    let known = tails.entry(run.clone()).or_default();
    // Another first seq: the log was trimmed, and what was known of the old one is void.
    if tail.len >= known.len || tail.first != known.first {
        *known = tail;
    }
}

fn forget(inner: &Inner, run: &RunId) {
    tails(inner).remove(run);
}
