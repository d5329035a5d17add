//! # lobu-runtime: the gateway and worker loop, in your process
//!
//! A host application embeds lobu's lifecycle here: it submits user messages, a worker loop
//! runs each conversation's turns one at a time (across any number of replicas), and every
//! completed transcript is durable in the store the host chose. The runtime only speaks to
//! the [`lobu_core`] traits, so the same code runs on files or PostgreSQL.
//!
//! Claiming a run makes the worker the conversation's owner for that run (its claim carries
//! the conversation's fence). For each claimed run the worker:
//!
//! 1. hydrates the last completed transcript, skipping the read when its cache holds the
//!    head version the claim reported;
//! 2. creates a fresh scratch directory and calls your [`Agent`] under the turn timeout,
//!    renewing the claim every heartbeat (if it was taken over, or is about to lapse
//!    unrenewed by this machine's monotonic clock, the turn is cancelled);
//! 3. on success commits the transcript and the run's completion as one step, fenced by the
//!    claim; on failure, timeout or cancellation nothing reaches the head and the run is
//!    retried until its attempts are used up, then fails visibly (an error retrying cannot
//!    fix, such as a damaged record, counts an attempt too);
//! 4. removes the scratch directory, in the background (one the agent never asked for and
//!    left empty is kept for a later attempt instead).
//!
//! A reset is a run on the same queue, so it waits for the conversation's earlier runs; it
//! clears the store under its claim's fence (a late clear is refused) and the cache, and
//! writes nothing. Graceful shutdown stops claiming, lets in-flight turns finish within a
//! grace period, then cancels them and hands their runs back. A crashed replica's claims
//! expire and another replica re-runs the turn from the last completed transcript; a turn
//! already committed is completed, never run twice.
//!
//! ## Observability
//!
//! Metrics go through the [`metrics`](https://docs.rs/metrics) facade to whatever recorder
//! the host installed (see [`describe_metrics`] for every name, label and unit); the
//! [`Metrics`] snapshot is kept as well. Spans carry `org`, `agent`, `conversation` and
//! OpenTelemetry's `gen_ai.*` fields; a request's W3C trace context given to
//! [`SubmitOptions::trace_parent`] travels with the run (in the reserved payload key
//! [`TRACE_PAYLOAD_KEY`](lobu_core::TRACE_PAYLOAD_KEY), never shown to the agent) to the
//! replica that runs it, whose `lobu.run` span records `trace_id` and `parent_span_id`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use lobu_core::{Backend, BoxError, ConversationKey, memory::MemoryBackend};
//! use lobu_runtime::{Agent, Runtime, Turn};
//! use futures::StreamExt;
//!
//! struct Echo;
//!
//! #[async_trait::async_trait]
//! impl Agent for Echo {
//!     async fn run_turn(&self, turn: &mut Turn) -> Result<(), BoxError> {
//!         // The runtime has appended the user's message; add the answer's entries with
//!         // `turn.writer()`, which become the next head when this returns `Ok`.
//!         turn.output(format!("You said: {}", turn.text()));
//!         Ok(())
//!     }
//! }
//!
//! # async fn demo() -> lobu_core::Result<()> {
//! let backend = Backend::from_shared(Arc::new(MemoryBackend::new()));
//! let runtime = Runtime::builder(backend, Echo).concurrency(8).build()?;
//! let worker = tokio::spawn({
//!     let runtime = runtime.clone();
//!     async move { runtime.run().await }
//! });
//!
//! let key = ConversationKey::parse("acme", "support-bot", "telegram:42")?;
//! let submitted = runtime.submit(key.clone(), "hello", None).await?;
//! let mut events = runtime.subscribe(&key.org, &submitted.run).await?;
//! while let Some(numbered) = events.next().await {
//!     let event = &numbered.event;
//!     println!("{} {}: {}", numbered.seq, event.name(), serde_json::to_string(event)?);
//! }
//! let page = runtime.messages(&key, None, Some(50)).await?;
//! println!("{} messages", page.messages.len());
//!
//! runtime.shutdown().await;
//! worker.await.expect("worker task")?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod agent;
mod cache;
mod config;
mod config_serde;
mod events;
mod execute;
mod gateway;
mod heartbeat;
mod hub;
mod hydrate;
mod instruments;
mod local_turns;
mod metrics;
mod recorder;
mod report;
mod retention;
mod runtime;
mod scratch;
mod scratch_pool;
mod spans;
mod steer;
mod submit_options;
mod subscription;
mod turn;
mod worker;

pub use agent::{Agent, EntryWriter, OutputSink, Permanent, Turn};
pub use config::{MAX_CONCURRENCY, MAX_RETENTION, MAX_SETTING_DURATION, Settings};
pub use events::{NumberedEvent, RunEvent};
pub use instruments::{MAX_LABELLED_ORGS, OrgLabel, describe_metrics};
pub use metrics::Metrics;
pub use retention::{RETENTION_KEY, RetentionPolicy, RetentionReport, retention_pass};
pub use runtime::{Runtime, RuntimeBuilder};
pub use submit_options::SubmitOptions;
pub use subscription::RunEvents;
