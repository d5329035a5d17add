//! # lobu-store-pg: lobu for many replicas
//!
//! One [`PgStore`] implements all three lobu-core traits on a PostgreSQL database (14 or
//! newer), so any number of replicas share nothing but that database:
//! [`SessionStore`](lobu_core::SessionStore) (transcripts),
//! [`ConversationLocks`](lobu_core::ConversationLocks) (leases with fencing) and
//! [`RunQueue`](lobu_core::RunQueue) (the durable run queue).
//!
//! ```no_run
//! use std::time::Duration;
//! use lobu_store_pg::{PgStore, PgStoreConfig};
//! use sqlx::postgres::PgPoolOptions;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = PgPoolOptions::new()
//!     .max_connections(20)
//!     // sqlx pings every connection it hands out by default: a round trip before each
//!     // call. A dead connection fails the call as `Unavailable` instead; callers retry.
//!     .test_before_acquire(false)
//!     .connect("postgres://app@db.internal/app")
//!     .await?;
//! let config = PgStoreConfig::default()          // schema `lobu`, 8 MiB transcripts
//!     .poll_interval(Duration::from_millis(500));
//! let store = PgStore::with_config(pool, config)?;
//! store.migrate().await?;                         // in every replica, at start-up
//! let backend = store.into_backend();             // hand this to lobu-runtime
//! # let _ = backend;
//! # Ok(()) }
//! ```
//!
//! ## TLS
//!
//! Feature `rustls` turns on sqlx's rustls TLS (ring, the system's roots; never the system's
//! OpenSSL), so `sslmode=require`, `verify-ca` and `verify-full` URLs connect, with
//! `sslrootcert=<ca.pem>` for a private CA. Without it a URL that requires TLS fails to
//! connect. A server whose certificate does not verify is `Unavailable`, the certificate
//! problem in the error's sources.
//!
//! ## Schema and migrations
//!
//! Everything lives in one schema of lobu's own (default `lobu`, see
//! [`PgStoreConfig::schema`]), migrations included: they are embedded ([`MIGRATOR`]) and
//! tracked in `<schema>._sqlx_migrations`, never in the host application's
//! `_sqlx_migrations`. [`PgStore::migrate`] is safe to call from every replica at once (they
//! take turns on sqlx's advisory lock, bounded by
//! [`migrate_lock_timeout`](PgStoreConfig::migrate_lock_timeout)).
//!
//! ## Transcripts: deltas, re-bases, one read
//!
//! Each persisted snapshot is a row keyed by org, agent, conversation and run, with its
//! terminal status, size, SHA-256 and creation time; its version comes from a sequence, and
//! hydrate picks the head by version, never by run id. A completed turn that extends the head
//! stores only the new bytes; after [`max_chain_deltas`](PgStoreConfig::max_chain_deltas)
//! deltas, or when the deltas would outgrow the whole copy they extend, the turn is stored
//! whole again (a re-base) and the older rows drop their bytes. Hydrate is one query that
//! concatenates the head's whole copy and its deltas. Bytes are stored as `bytea` with lz4
//! compression (see the migration for the measurements behind that choice): any bytes
//! round-trip exactly. Snapshots have no foreign key to runs, so run retention never removes a
//! transcript.
//!
//! ## Leases, fences and the queue
//!
//! A lease is a row: an expiry and a fence drawn from a sequence. `persist` and `clear` lock
//! the conversation's row and check the fence in the same transaction as the write, so a
//! writer whose lease was taken over is refused (`Fenced`). A run's claim is its
//! conversation's ownership (lobu-core contract v2): the claim statement picks the run with
//! `FOR UPDATE SKIP LOCKED` (first in first out per conversation, never two at once per
//! conversation, never a conversation with a live lease) and takes the conversation as
//! `try_acquire` does, in one statement, so the claim carries the conversation's fence and
//! head version. It walks lanes, one row per conversation with unfinished runs (kept exact by
//! every statement that adds or ends a run), oldest first: a claim costs the conversations
//! it passes over (owned ones, ones waiting out a retry), never the runs queued behind them.
//! Heartbeat, complete, fail and release check the run and the conversation's fence.
//! `complete` is one transaction: the transcript becomes the head (checked as a
//! completed persist) and the run completes, or neither. Claims that lapsed on their last
//! attempt are failed by a reaper that runs at most once a second per store (and when a
//! claim finds nothing); a lapsed run whose transcript is the head is completed instead.
//! Writers send `NOTIFY`; [`wait_for_work`](lobu_core::RunQueue::wait_for_work) listens on
//! one connection per store and otherwise sleeps at most
//! [`poll_interval`](PgStoreConfig::poll_interval), so work is found even when notifications
//! never arrive.
//!
//! Double texting and steering ([`MultitaskStrategy`](lobu_core::MultitaskStrategy)): an
//! `enqueue` or `steer` submit stays one statement (a steer run is flagged, and wakes the
//! followers of the conversation's claimed run); `reject`, `interrupt` and `rollback` read and
//! lock the conversation's unfinished runs under its submit lock, let lobu-core plan, cancel
//! as `cancel` does and queue, in one transaction. A turn's
//! [`steerable`](lobu_core::RunQueue::steerable) look is one statement that takes nothing; a
//! commit that took steered runs checks them under its locks and completes them with it.
//!
//! Run events ([`record_events`](lobu_core::RunQueue::record_events)) are rows of
//! `run_events`, numbered per run by one statement that checks the claim (the run's newest,
//! run unfinished) under the run's row lock and commits asynchronously: a finished run's
//! events are made durable by its synchronous `complete`. Their `NOTIFY` (`events:<run>`)
//! wakes that run's followers only; [`read_events`](lobu_core::RunQueue::read_events) reads
//! the record and a page of events in one statement, so at one moment.
//!
//! Moving conversations ([`scan`](lobu_core::SessionStore::scan),
//! [`export`](lobu_core::SessionStore::export), [`import`](lobu_core::SessionStore::import),
//! [`runs`](lobu_core::RunQueue::runs)): a scan and a run listing are one statement each,
//! paged by key and run id from the primary keys; an export is hydrate's read plus the head's
//! write time. An import locks the conversation's row as persist does (creating it, without
//! a lease or fence, when there is none), lets lobu-core's `plan_import` decide, and writes
//! the head as one whole copy with the exported run and write time; a version it keeps moves
//! the `versions` sequence up to it, so later versions are above it.
//!
//! Retention: every call removes what lobu-core's rule ([`lobu_core::retention`]) takes,
//! the rule written once per kind as SQL the removing statements and the counting one share,
//! at most its limit per call, in batches of one short statement each (a held row lock waits
//! for one batch at most); with `dry_run`, one statement counts by the same rule and nothing
//! changes. [`prune_with`](lobu_core::SessionStore::prune_with) works on conversations (never
//! on run history), oldest head first, never touches a conversation with a live owner or a
//! running run, removes old forensic copies by their own window, and also drops the rows of
//! leases that lapsed before its idle cutoff on conversations with nothing stored;
//! [`prune_runs_with`](lobu_core::RunQueue::prune_runs_with) drops finished runs (failed ones by
//! their own window), and with them their idempotency keys (client retries come within
//! minutes; keeping every key forever would grow without bound) and their events;
//! [`prune_events_with`](lobu_core::RunQueue::prune_events_with) drops only the events, sooner,
//! oldest first (a run cut short by the limit keeps its newest events, under their seqs).
//!
//! ## Behind a transaction-mode pooler (PgBouncer, Supavisor, RDS Proxy)
//!
//! Nothing is held between calls: no connection per conversation, no session advisory lock,
//! no session settings; every call is one statement or one transaction. Two things need a
//! session and therefore a direct connection, which
//! [`direct_connect_options`](PgStoreConfig::direct_connect_options) provides: `migrate`, and
//! the `LISTEN` of the wake-up (without it, polling still delivers). If the pooler cannot
//! keep prepared statements across transactions, build the pool with
//! `PgConnectOptions::statement_cache_capacity(0)`.
//!
//! ## Errors
//!
//! Failures are [`lobu_core::Error`]s whose kind comes from the database: a lost connection,
//! a closed or exhausted pool is `Unavailable`, a unique violation or serialisation failure
//! `Conflict`, a lock timeout `Busy`, rows that contradict each other or values that no longer
//! parse `Corrupt`, a broken CHECK of the store's own schema `Other` (a bug, never the
//! caller's input). The source is a [`PgStoreError`] (which keeps the [`sqlx::Error`], or the
//! parse error).
//!
//! ## Testing
//!
//! The crate's tests use `#[sqlx::test]` (a fresh database per test) and need
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres` or similar; without a reachable
//! server they fail, they are never skipped.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod commit_fast;
mod config;
mod delta;
mod erase;
mod error;
mod events;
mod head;
mod locks;
mod migrate;
mod multitask;
mod persist;
mod persist_fast;
mod portable;
mod prune;
mod queue;
mod retention;
mod runs;
mod sessions;
mod store;
mod tx;
mod wakeup;

pub use config::{DEFAULT_SCHEMA, MAX_TRANSCRIPT_BYTES_LIMIT, PgStoreConfig};
pub use error::PgStoreError;
pub use migrate::MIGRATOR;
pub use store::PgStore;
