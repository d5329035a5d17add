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
//! * [`app`]: the router over an [`AppState`] (lobu-axum's API, the accepted keys, the page);
//! * [`Server`] / [`serve`]: open the store, build the runtime, listen, serve, and shut down
//!   gracefully (stop accepting, drain turns within the grace period, end event streams);
//! * [`DemoAgent`]: the offline, deterministic agent the server runs without a model.
//!
//! The HTTP API is [lobu-axum](lobu_axum)'s (its docs list the routes), authenticated by
//! bearer keys (`LOBU_API_KEYS`), plus the chat page at `/`.
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

mod config;
mod config_file;
mod config_parse;
mod demo_agent;
mod error;
mod help;
mod metrics;
mod page;
mod routes;
mod server;

pub use config::{
    Config, DEFAULT_ADDR, DEFAULT_DATA_DIR, DEFAULT_HEADER_READ_TIMEOUT, LlmConfig,
    MAX_HEADER_READ_TIMEOUT, StoreChoice, redact_url,
};
pub use config_file::default_config_file;
pub use demo_agent::{DEMO_MODEL, DEMO_PROVIDER, DemoAgent, MAX_SLEEP_MS};
pub use error::Error;
pub use help::settings_help;
pub use lobu_axum::{ApiError, ApiKeys, DEFAULT_MAX_STREAMS_PER_ORG, OPEN_ORG};
/// The `openai` feature's agent, from the `lobu-openai` crate.
#[cfg(feature = "openai")]
pub use lobu_openai::OpenAiAgent;
pub use routes::{AppState, app};
pub use server::{Server, serve, shutdown_signal};
