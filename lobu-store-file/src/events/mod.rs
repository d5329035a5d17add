//! Run events for [`FileStore`](crate::FileStore): one append-only log per run,
//! `<root>/events/<run>` (the run id encoded as every name in the store is), in the format of
//! [`log`].
//!
//! **Recording** checks the claim and appends under the queue lock, the lock every change of
//! a run's status or claim (submit, claim, heartbeat, complete, fail, release, the reaper,
//! `prune_runs`) already holds, in this or any other process: the run record read under it
//! is the run's current one, and the run cannot be claimed anew or end between the check and
//! the append. The lock is held for the check and one `write` only, never across a sync.
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
//! the run can end, so a terminal record read first means the log read after it is whole.
//!
//! Cost per call (syncs and locks):
//!
//! * `record_events`: 0 syncs, 1 lock (the queue's); reads the run record, and the log only
//!   past what this process last saw of it (nothing, when it made the last append itself);
//!   one `write`. An empty append reads and writes nothing but the record.
//! * `read_events`: 0 syncs, 0 locks; the record, then the log from the start, or from
//!   where this process last saw it end when the caller has seen that far.
//! * `prune_events`: 0 syncs, 0 locks; lists the logs and reads each one's run record.

mod log;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::SystemTime;

use lobu_core::events::{EventPage, check_may_record};
use lobu_core::{Claim, Error, Fence, OrgId, Result, RunId};

use self::log::{Scan, Tail, encode_append, scan};
use crate::error::{FileStoreError, io_at};
use crate::layout;
use crate::queue::files::Queue;
use crate::store::Inner;

/// How many runs' log tails a store remembers before it forgets them all.
const REMEMBERED_TAILS: usize = 4096;

/// What this process last saw of some runs' logs (a whole prefix each): appends and reads
/// resume there instead of reading the log from its start. Every append grows a log and
/// only a torn tail past a whole prefix is ever cut, so a remembered prefix stays true until
/// the log is removed with its run's events.
pub(crate) type Tails = HashMap<RunId, Tail>;

/// Append `events` (already checked) under `claim`; the run's newest seq afterwards.
pub(crate) fn record(inner: &Inner, claim: &Claim, events: &[String]) -> Result<u64> {
    let queue = Queue::new(inner);
    let _lock = queue.lock()?;
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
    let appended = Tail {
        len: tail.len + bytes.len() as u64,
        seq: tail.seq + events.len() as u64,
    };
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
    let Scan { tail, events } = match open_log(&path)? {
        Some(log) => {
            let size = log.metadata().map_err(io_at("inspect", &path))?.len();
            let from = remembered(inner, run)
                .filter(|seen| seen.len <= size && seen.seq <= after)
                .unwrap_or_default();
            let found = scan(&log, from, after, limit).map_err(io_at("read", &path))?;
            remember(inner, run, found.tail);
            found
        }
        None => {
            forget(inner, run);
            Scan {
                tail: Tail::default(),
                events: Vec::new(),
            }
        }
    };
    Ok(Some(EventPage {
        record: record.record,
        events,
        last_seq: tail.seq,
    }))
}

/// Remove the logs of runs that finished before `before` (and of runs that no longer
/// exist); how many events they held.
pub(crate) fn prune(inner: &Inner, before: SystemTime) -> Result<u64> {
    let queue = Queue::new(inner);
    let dir = inner.layout.events();
    let mut removed = 0;
    for (text, path) in layout::leaves(&dir).map_err(io_at("list", &dir))? {
        let Ok(run) = RunId::new(&text) else {
            continue;
        };
        // A finished run's log never grows again: nobody may record events of it.
        let done = match queue.load_run(&run)? {
            Some(file) => file.record.status.is_terminal() && file.record.updated_at < before,
            None => true,
        };
        if done {
            removed += remove_counted(inner, &run, &path)?;
        }
    }
    Ok(removed)
}

/// Remove `run`'s log, if it has one (`prune_runs`, under the queue lock, before the record).
pub(crate) fn remove(inner: &Inner, run: &RunId) -> Result<()> {
    forget(inner, run);
    Ok(crate::atomic::remove_file(&inner.layout.event_log(run))?)
}

/// Remove `run`'s log, if it has one (erasure, under the queue lock, before the record);
/// how many events it held.
pub(crate) fn erase(inner: &Inner, run: &RunId) -> Result<u64> {
    remove_counted(inner, run, &inner.layout.event_log(run))
}

/// Remove one log; the events it held, or 0 when another pruner removed it first.
fn remove_counted(inner: &Inner, run: &RunId, path: &Path) -> Result<u64> {
    let held = match open_log(path)? {
        Some(log) => {
            scan(&log, Tail::default(), u64::MAX, 0)
                .map_err(io_at("read", path))?
                .tail
                .seq
        }
        None => return Ok(0),
    };
    forget(inner, run);
    match fs::remove_file(path) {
        Ok(()) => Ok(held),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
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
    if tail.len >= known.len {
        *known = tail;
    }
}

fn forget(inner: &Inner, run: &RunId) {
    tails(inner).remove(run);
}
