//! # example-axum-host: a real HTTP host embedding lobu
//!
//! An [axum] server that accepts chat messages over HTTP, runs each conversation's turns
//! through lobu's runtime (one at a time per conversation, across any number of replicas)
//! and keeps every transcript durable: on plain files with no setup, or on PostgreSQL in
//! snapshot mode when `DATABASE_URL` is set. The binary (`cargo run -p example-axum-host`)
//! reads its [`Config`] from the environment; this library exposes the same parts so a
//! program or a test can embed them:
//!
//! * [`Config`]: the environment, checked strictly before anything starts;
//! * [`app`]: the router over an [`AppState`] (the runtime and the accepted keys);
//! * [`Server`] / [`serve`]: open the store, build the runtime, listen, serve, and shut down
//!   gracefully (stop accepting, drain turns within the grace period, end event streams);
//! * [`DemoAgent`]: the offline, deterministic agent the server runs without a model.
//!
//! The HTTP API (every error is `{"error": "..."}`; a client mistake is 400, a body or text
//! over its limit 413, a message body not declared `application/json` 415):
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/agents/{agent}/conversations/{conversation}/messages` | `202 {"run_id","status"}`, or SSE with `Accept: text/event-stream` |
//! | `GET /v1/runs/{run_id}` | `{"run_id","status","attempts","error"}` |
//! | `GET /v1/runs/{run_id}/events` | SSE, replayed from the start (`?key=` accepted here) |
//! | `GET /v1/agents/{agent}/conversations/{conversation}/session/messages?cursor=&limit=` | `{"messages","nextCursor","hasMore","sessionId"}` |
//! | `GET /v1/agents/{agent}/conversations/{conversation}/session/stats` | lobu's stats |
//! | `DELETE /v1/agents/{agent}/conversations/{conversation}/session` | `{"deleted": n}` after the reset ran |
//! | `GET /v1/agents/{agent}/conversations?cursor=&limit=` | `{"conversations","nextCursor","hasMore"}` |
//! | `GET /health/live`, `GET /health/ready` | `{"status"}`; ready is 503 when the store does not answer |
//!
//! ```no_run
//! use example_axum_host::{Config, Server, shutdown_signal};
//!
//! # async fn demo() -> Result<(), example_axum_host::Error> {
//! let config = Config::from_env()?;
//! let server = Server::bind(config).await?;
//! println!("listening on http://{}", server.local_addr());
//! server.run(shutdown_signal()).await
//! # }
//! ```
#![deny(missing_docs)]

mod auth;
mod config;
mod demo_agent;
mod error;
mod listen;
mod routes;
mod server;
mod sse;

pub use auth::{ApiKeys, Caller, OPEN_ORG, StreamCaller};
pub use config::{
    Config, DEFAULT_ADDR, DEFAULT_DATA_DIR, DEFAULT_HEADER_READ_TIMEOUT, LlmConfig,
    MAX_HEADER_READ_TIMEOUT, StoreChoice, redact_url,
};
pub use demo_agent::{DEMO_MODEL, DEMO_PROVIDER, DemoAgent, MAX_SLEEP_MS};
pub use error::{ApiError, Error};
/// The `openai` feature's agent, from the `lobu-openai` crate.
#[cfg(feature = "openai")]
pub use lobu_openai::OpenAiAgent;
pub use routes::{AppState, DEFAULT_MAX_STREAMS_PER_ORG, app};
pub use server::{Server, serve, shutdown_signal};
