//! # lobu-core: the contract
//!
//! lobu keeps AI-agent conversations durable and safe across restarts, crashes and many
//! replicas. This crate is the contract every other lobu crate speaks:
//!
//! * **Ids** ([`OrgId`], [`AgentId`], [`ConversationId`], [`ConversationKey`], [`RunId`]):
//!   validated once at the edge; a bad id is an [`ErrorKind::InvalidInput`] error, never a
//!   panic and never a path.
//! * **Transcripts** ([`transcript`]): the lobu/pi JSON Lines session format; entries,
//!   display messages with cursor paging, stats, a title, and a writer for agents.
//! * **Three traits**, each with its contract in its docs:
//!   [`SessionStore`] (hydrate / persist / clear with versions and fencing),
//!   [`ConversationLocks`] (leases with fencing tokens, for hosts writing on their own),
//!   [`RunQueue`] (durable, per-conversation FIFO run queue with idempotent submit, retries
//!   and claims; a claim is its conversation's ownership, with the conversation's fence, and
//!   [`RunQueue::complete`] commits a turn's transcript and the run's completion together).
//! * **[`control`]**: failures that retry or end the run, backoff, cancellation.
//! * **[`events`]**: a run's stored events, recorded under its claim and replayed anywhere.
//! * **[`run_state`]** and **[`persist_plan`]**: the run state machine and the persist
//!   decision, which every backend applies the same way.
//! * **[`Error`]** with an [`ErrorKind`] callers branch on; sources are kept.
//! * **[`TraceParent`]** and **[`RunTrace`]**: the W3C trace context a run carries from its
//!   submit to whichever replica claims it, under the reserved payload key
//!   [`TRACE_PAYLOAD_KEY`].
//! * **[`memory`]**: an in-memory backend, the reference implementation and a fast test double.
//! * **`testkit`** (feature `testkit`): the conformance suite every backend runs.
//!
//! ```no_run
//! use lobu_core::{ConversationKey, Backend, memory::MemoryBackend};
//! # async fn demo() -> lobu_core::Result<()> {
//! let backend = Backend::from_shared(std::sync::Arc::new(MemoryBackend::new()));
//! let key = ConversationKey::parse("acme", "support-bot", "telegram:42")?;
//! if let Some(head) = backend.sessions.hydrate(&key).await? {
//!     println!("{} bytes at {}", head.transcript.len(), head.version);
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
pub mod control;
mod erase;
mod error;
pub mod events;
pub mod export;
mod id;
mod lock;
pub mod multitask;
pub mod persist_plan;
mod queue;
pub mod retention;
pub mod run_state;
mod session;
mod signals;
#[doc(hidden)]
pub mod time_serde;
mod trace;

pub mod memory;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod transcript;

pub use backend::Backend;
pub use control::{CancelOutcome, Failure, Retry};
pub use erase::{EraseScope, ErasureReport};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use id::{
    AgentId, ConversationId, ConversationKey, IdempotencyKey, MAX_AGENT_ID_BYTES,
    MAX_CONVERSATION_ID_BYTES, MAX_ID_BYTES, OrgId, RunId, WorkerId,
};
pub use lock::{ConversationLocks, Fence, Lease, MAX_LEASE, check_lease_duration};
pub use multitask::MultitaskStrategy;
pub use queue::{
    AfterFailure, Claim, Commit, MAX_ATTEMPTS, MAX_PAYLOAD_BYTES, MAX_RETRY_DELAY, NewRun,
    RunFilter, RunKind, RunQueue, RunRecord, RunStatus, Steered, Submitted, check_failure_status,
};
pub use session::{
    ConversationSummary, DEFAULT_MAX_TRANSCRIPT_BYTES, MAX_PAGE_LIMIT, Page, Persist, PruneReport,
    ScanPosition, SessionStore, Snapshot, TerminalStatus, Version, check_page_limit,
    parse_scan_cursor, scan_cursor, scan_cursor_at_org,
};
pub use signals::RunSignals;
pub use trace::{RunTrace, TRACE_PAYLOAD_KEY, TraceParent};
