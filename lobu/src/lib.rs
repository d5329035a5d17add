//! # lobu: AI-agent conversations that survive restarts, crashes and many replicas
//!
//! One dependency for an embed: the runtime (gateway and worker loop), the contract's types,
//! and the stores behind features: `file` (default: one machine, any number of processes)
//! and `pg` (a fleet sharing one PostgreSQL database; `pg-rustls` adds TLS to it for
//! `sslmode=require`/`verify-full` URLs). Feature `openai` adds [`openai`]: an agent for
//! OpenAI-compatible endpoints over HTTPS; feature `axum` adds [`http`]: the HTTP API as an
//! axum router. TLS is rustls throughout, never the system's OpenSSL. The crates behind it
//! ([`lobu_core`], [`lobu_runtime`], `lobu_store_file`, `lobu_store_pg`, `lobu_openai`,
//! `lobu_axum`) stay available under [`crates`] for what this facade does not name.
//!
//! ```no_run
//! use std::sync::Arc;
//! use lobu::{Agent, BoxError, ConversationKey, FileStore, Runtime, Turn};
//!
//! struct Echo;
//!
//! #[lobu::async_trait]
//! impl Agent for Echo {
//!     async fn run_turn(&self, turn: &mut Turn) -> Result<(), BoxError> {
//!         // The runtime has appended the user's message; entries added with
//!         // `turn.writer()` become the next head when this returns `Ok`.
//!         turn.output(format!("You said: {}", turn.text()));
//!         Ok(())
//!     }
//! }
//!
//! # async fn demo() -> lobu::Result<()> {
//! let backend = FileStore::open("./lobu-data").await?.into_backend();
//! let runtime = Runtime::builder(backend, Echo).build()?;
//! tokio::spawn({ let r = runtime.clone(); async move { r.run().await } });
//!
//! let key = ConversationKey::parse("acme", "support-bot", "telegram:42")?;
//! let run = runtime.submit(key.clone(), "hello", None).await?; // durable when it returns
//! println!("{:?}", runtime.wait(&key.org, &run.run).await?.status);
//! runtime.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! With `pg`: `PgStore::new(pool)`, `store.migrate().await?`, `store.into_backend()`, the
//! rest unchanged (the README's "Moving from one machine to a fleet" moves the data).
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The attribute an [`Agent`] implementation needs (`#[lobu::async_trait]`).
pub use async_trait::async_trait;
/// Cancels a running turn ([`Turn::cancelled`] hands one to the agent).
pub use tokio_util::sync::CancellationToken;

pub use lobu_core::{
    AgentId, Backend, BoxError, ConversationId, ConversationKey, ConversationSummary, EraseScope,
    ErasureReport, Error, ErrorKind, MultitaskStrategy, OrgId, Page, Result, RunFilter, RunId,
    RunKind, RunRecord, RunStatus, TraceParent, Version, transcript,
};
pub use lobu_runtime::{
    Agent, Metrics, NumberedEvent, OrgLabel, RetentionPolicy, RetentionReport, RunEvent, RunEvents,
    Runtime, RuntimeBuilder, Settings, SubmitOptions, Turn, describe_metrics,
};

#[cfg(feature = "file")]
pub use lobu_store_file::FileStore;
#[cfg(feature = "pg")]
pub use lobu_store_pg::{PgStore, PgStoreConfig};
/// The connection pool [`PgStore::new`] takes.
#[cfg(feature = "pg")]
pub use sqlx::PgPool;

/// The run and session API as an axum `Router`: [`Api::router`](lobu_axum::Api::router)
/// with bearer keys, or [`Api::routes`](lobu_axum::Api::routes) with a host's own state and
/// auth (feature `axum`).
#[cfg(feature = "axum")]
pub mod http {
    /// The axum version the routes are built with.
    pub use axum;
    pub use lobu_axum::*;
}

/// An agent for OpenAI-compatible chat completions endpoints over HTTPS (feature `openai`):
/// the `lobu-openai` crate.
#[cfg(feature = "openai")]
pub use lobu_openai as openai;

/// The crates behind this facade, whole.
pub mod crates {
    #[cfg(feature = "axum")]
    pub use lobu_axum;
    pub use lobu_core;
    #[cfg(feature = "openai")]
    pub use lobu_openai;
    pub use lobu_runtime;
    #[cfg(feature = "file")]
    pub use lobu_store_file;
    #[cfg(feature = "pg")]
    pub use lobu_store_pg;
}

/// The README's Rust examples, compiled as doc tests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
