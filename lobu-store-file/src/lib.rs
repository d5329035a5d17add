//! # lobu-store-file: lobu on one machine
//!
//! One [`FileStore`] implements all three lobu-core traits in plain files under one root
//! directory: [`SessionStore`](lobu_core::SessionStore) (transcripts),
//! [`ConversationLocks`](lobu_core::ConversationLocks) (leases with fencing) and
//! [`RunQueue`](lobu_core::RunQueue) (the durable run queue). Any number of tasks and
//! processes on the machine may share one root: every change is a short read-modify-write
//! under an OS file lock, and nothing is held between calls.
//!
//! ```no_run
//! use std::time::Duration;
//! use lobu_store_file::FileStore;
//!
//! # async fn demo() -> lobu_core::Result<()> {
//! let store = FileStore::open("/var/lib/my-agent/lobu")   // created if missing
//!     .await?
//!     .with_max_transcript_bytes(4 << 20)?                 // default 8 MiB
//!     .with_poll_interval(Duration::from_millis(100));     // how often idle workers look
//! let backend = store.into_backend();                      // hand this to lobu-runtime
//! # let _ = backend;
//! # Ok(()) }
//! ```
//!
//! ## On disk
//!
//! ```text
//! <root>/lobu-store.json                       format marker
//! <root>/orgs/<org>/<agent>/<conversation>/    one directory per conversation
//!     session.<version>-<stamp>.jsonl
//!                      the transcript, byte for byte (`jq . session.*.jsonl` reads it),
//!                      named by the version that started the file; format 1 called it
//!                      `session.jsonl` ([`FileStore::transcript_path`] names it)
//!     state.json       commit record: head version, run, committed length, SHA-256, turns,
//!                      title; counters that survive a reset (versions, fences); the owner
//!                      (a lease or a run's claim). A record file: one JSON record per
//!                      line with its CRC-32C, the last whole line current
//!                      ([`read_record`] reads it)
//!     history.jsonl    one record per completed snapshot (run, version, length, SHA-256)
//!     forensic/        failed, timed-out and cancelled transcripts with their records
//!     lock             the OS lock file
//! <root>/queue/        runs/<run> (one record file per run), active/ (the claim index),
//!                      idempotency/…, lock
//! <root>/events/<run>  the run's events, one JSON line each (`{"seq","attempt","last","data"}`)
//! ```
//!
//! Ids are percent-encoded (`[A-Za-z0-9_-]` kept, every other byte `%XX`), so the mapping
//! is reversible and two ids never share a path (`a:b` is `a%3Ab`, `a_b` stays `a_b`,
//! `x/../y` is one harmless name). Names longer than 200 bytes (a 512-byte conversation id
//! can encode to 1536) continue in sub-directories of exactly 200 bytes plus a `+`. The org
//! is always the first level below `orgs/`, so tenants never share a conversation directory.
//! [`FileStore::conversation_dir`] names a conversation's directory. A reset (`clear`) removes
//! the transcript, history and forensic copies but keeps `state.json`, so versions and fences
//! are never handed out twice. [`prune_with`](lobu_core::SessionStore::prune_with) visits the
//! conversations of the agents it covers, each under its lock: an idle one without a live
//! owner is reset as by `clear`, old forensic copies are removed, up to its limit of each; a
//! dry run takes shared locks only and writes nothing.
//!
//! ## Crash safety
//!
//! `state.json` is the single commit point of a conversation. It is a record file (format
//! 2): a change appends one line holding the whole new record and its CRC-32C, and syncs it
//! with `fdatasync` when the change must last; a line torn by a crash is skipped by readers
//! and cut by the next writer, and a file past 64 KiB is replaced whole by its newest record
//! (a staging file created with `create_new`, synced, renamed over it, the directory
//! synced, also for a change that need not last: lines synced into the new file later last
//! only if its name does). Run records are record files too. Format 1 replaced both whole on every change:
//! each change cost a new inode and a directory sync. A turn that extends the transcript
//! appends only its new bytes to its transcript file and its record to `history.jsonl`, past
//! their committed lengths, and commits the new lengths with one `state.json` line that also
//! carries those bytes: one sync for the three. A power loss may drop the two files' unsynced
//! bytes, so a state that carries bytes names the boot it was written in, and a conversation
//! last written in an earlier boot is repaired (the carried bytes written back, both files
//! synced) before anything reads them; where the boot cannot be told (other systems than
//! Linux) both files are synced before the commit instead. A turn that rewrites the
//! transcript (a compaction) writes a new file, synced, and commits its name; the old file is
//! removed after. Committed bytes never change in place, so hydrate takes no lock: it reads
//! the state record and exactly the committed length of the file it names (and the state
//! again if that file was replaced meanwhile). A crash at any byte leaves the last committed
//! transcript readable, and the next writer cuts off or removes whatever an interrupted
//! write left behind.
//!
//! What only a live process needs is written but not synced: a claim's ownership and run
//! record and a heartbeat (lines appended without `fdatasync`), and the removal of a
//! finished run's marker (its directory is not synced). No owner outlives a power loss, so a claim undone by one
//! comes back as before it or as a lapsed claim, and a finished run's marker that comes back
//! is removed by the claim that finds it. Everything a caller is told is done (a submit, a
//! commit, a failure, a release, a reset) is synced before the call returns.
//!
//! ## Leases and the queue
//!
//! A lease is data in `state.json` (the newest fence and an expiry), changed under the
//! conversation's OS lock; `persist` and `clear` check the fence under that same lock. A
//! claimed run owns its conversation the same way (contract v2): `claim` draws the
//! conversation's next fence and writes the claim as its lease, so a conversation has one
//! owner at a time, lease or claim, and `complete` commits the run's transcript and ends the
//! ownership in one `state.json` line. A run is one record file; an empty marker file per
//! unfinished run, named by sequence number, conversation lane and due time, lets `claim`
//! choose without opening every record. A run's record changes under its conversation's
//! lock, as the conversation's state does; the store-wide queue lock guards only the
//! markers' names, for a listing or a rename, never across a sync on a turn's path. So
//! commits of different conversations sync at the same time, in one process or several. A
//! conversation's lock comes before the queue lock; `claim`, which holds the queue lock
//! throughout, only tries a conversation's lock and passes over one that someone holds.
//! [`wait_for_work`](lobu_core::RunQueue::wait_for_work) is woken by submits in this
//! process and otherwise polls (see [`FileStore::with_poll_interval`]).
//! [`wait_for_run`](lobu_core::RunQueue::wait_for_run) is woken by this process's changes
//! of the run at once, and by other processes' through a file watcher (inotify on Linux),
//! started when a follower first waits; where none can be started it looks at the run's
//! files every 10 ms.
//! [`prune_runs_with`](lobu_core::RunQueue::prune_runs_with) (which the provided
//! [`prune_runs`](lobu_core::RunQueue::prune_runs) calls) removes finished runs together with
//! their idempotency keys and event logs, as lobu-store-pg does: a retry with the key of a
//! pruned run creates a new run. [`erase`](lobu_core::SessionStore::erase) removes, one
//! conversation at a time under its lock, its idempotency entries, markers, event logs and
//! run records, then its directory; then the directories that leaves empty, in an order that
//! a second erasure finishes after a crash at any point.
//!
//! A submit's [`MultitaskStrategy`](lobu_core::MultitaskStrategy) is applied under the
//! conversation's lock: `reject`, `interrupt` and `rollback` read the conversation's unfinished runs
//! (its lane's markers and their records) and cancel as `cancel` does; `enqueue` and `steer`
//! read no record. A commit that takes steered runs first notes them in its run's record,
//! so that a crash after its commit point is finished by whatever looks at the run next,
//! with the steered runs completed too, and a crash before it leaves them waiting.
//!
//! ## Moving conversations
//!
//! [`export`](lobu_core::SessionStore::export) reads a head as `hydrate` does, with its run
//! and write time. [`import`](lobu_core::SessionStore::import) writes a conversation's first
//! head the way `persist` does (transcript and history line synced, then one `state.json`
//! commit that also moves the version counter), so a crash leaves no head or the whole one.
//! [`scan`](lobu_core::SessionStore::scan) walks `orgs/` sorting each level by the decoded
//! ids; a conversation whose state record does not decode is scanned all the same (its
//! export is then `Corrupt`), so a store-wide copy cannot silently leave it behind.
//! [`runs`](lobu_core::RunQueue::runs) reads run records in id order until its page is
//! full; one that does not decode is skipped with a warning (its `status` is `Corrupt`).
//!
//! ## Run events
//!
//! [`record_events`](lobu_core::RunQueue::record_events) appends a run's events to its log
//! with one `write`, checking the claim under the conversation's lock (the lock every claim,
//! completion, failure and release of a run takes), so a claim that lost the run, or a run
//! that ended,
//! stores nothing. Appends are **not synced**: events survive a process crash (they are in
//! the page cache) but a power loss may lose the newest ones, and the next attempt may then
//! number its events with their seqs again. A torn append is ignored by readers and cut off
//! by the next appender. Readers take no lock: they read the run's record, then its log.
//! [`prune_events_with`](lobu_core::RunQueue::prune_events_with) removes finished runs' logs
//! whole while they fit in its limit; the one log that does not fit is rewritten without its
//! first events (a synced copy renamed over it, under the run's conversation's lock), so the
//! kept events
//! keep their seqs and a reader resumes correctly. A dry run of any prune changes nothing.
//!
//! ## Errors
//!
//! Failures are [`lobu_core::Error`]s whose source is a [`FileStoreError`] (which keeps the
//! [`std::io::Error`]): a missing file is `NotFound`, a full disk `Unavailable`, a record
//! that does not decode or a transcript shorter than its commit record says `Corrupt`.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod atomic;
mod carry;
mod clock;
mod erase;
mod error;
mod events;
mod history_index;
mod layout;
mod locks;
mod persist;
mod portable;
mod queue;
mod record_file;
mod records;
mod retention;
mod sessions;
mod state;
mod store;
mod watch;

#[cfg(test)]
mod carry_tests;
#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod import_crash_tests;
#[cfg(test)]
mod upgrade_tests;

pub use error::FileStoreError;
pub use record_file::read_record;
pub use store::{DEFAULT_POLL_INTERVAL, FORMAT, FileStore, MAX_TRANSCRIPT_BYTES_LIMIT};
