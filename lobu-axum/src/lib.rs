//! # lobu-axum: lobu's run and session API as an axum `Router`
//!
//! Serve a [`lobu_runtime::Runtime`] over HTTP without writing the glue: submit a message
//! (and stream its run's events as Server-Sent Events), follow, wait for and cancel runs,
//! page a conversation's messages, list conversations, reset, erase, and health probes.
//! Every error is `{"error": "..."}` with a status a client can branch on: 400 for a bad
//! id, body or parameter, 401 without credentials, 404 for what this caller cannot see,
//! 409 for a conflict (a `reject` strategy, a reset that ended badly), 413 for a body,
//! text or message payload over its limit, 415 for a body not declared JSON, 429 past an org's open-stream
//! bound, 503 when the store cannot answer, the server drains or a request times out.
//!
//! ```no_run
//! use std::sync::Arc;
//! use lobu_axum::{Api, ApiKeys};
//! # async fn demo(runtime: lobu_runtime::Runtime) -> std::io::Result<()> {
//! let keys = ApiKeys::parse("secret-key=acme").expect("a valid key list");
//! let app = Api::new(runtime).router(keys);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8787").await?;
//! // Like `axum::serve`, with a deadline for request heads (slow clients are cut off).
//! let timeout = lobu_axum::DEFAULT_HEADER_READ_TIMEOUT;
//! lobu_axum::serve(listener, app, timeout, std::future::pending()).await;
//! # Ok(())
//! # }
//! ```
//!
//! A host with its own state and authentication uses [`Api::routes`] instead: its state
//! yields the [`Api`] through [`FromRef`](axum::extract::FromRef), and its extractor yields
//! the org ([`Caller`]):
//!
//! ```
//! use axum::extract::{FromRef, FromRequestParts};
//! use axum::http::request::Parts;
//! use lobu_axum::{Api, ApiError, Caller};
//! use lobu_core::OrgId;
//!
//! #[derive(Clone)]
//! struct AppState { api: Api }
//!
//! impl FromRef<AppState> for Api {
//!     fn from_ref(state: &AppState) -> Api { state.api.clone() }
//! }
//!
//! /// The org from a header the host's gateway sets after its own authentication.
//! struct Tenant(OrgId);
//!
//! impl Caller for Tenant {
//!     fn org(&self) -> &OrgId { &self.0 }
//! }
//!
//! impl FromRequestParts<AppState> for Tenant {
//!     type Rejection = ApiError;
//!     async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
//!         let org = parts.headers.get("x-tenant").and_then(|v| v.to_str().ok());
//!         let org = org.and_then(|o| OrgId::new(o).ok()).ok_or_else(ApiError::unauthorized)?;
//!         Ok(Tenant(org))
//!     }
//! }
//!
//! fn app(api: Api) -> axum::Router {
//!     api.routes::<AppState, Tenant>()
//!         .merge(api.probes())
//!         .fallback(lobu_axum::not_found)
//!         .with_state(AppState { api })
//! }
//! ```
//!
//! The routes (the org is always the caller's):
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/agents/{agent}/conversations/{conversation}/messages` | `202 {"run_id","status"}`, or SSE with `Accept: text/event-stream` |
//! | `GET /v1/runs/{run_id}[?wait=N]` | `{"run_id","status","attempts","error","output"}` |
//! | `GET /v1/runs/{run_id}/events` | SSE, replayed from the start or after `Last-Event-ID` |
//! | `POST /v1/runs/{run_id}/cancel` | `200`/`202 {"run_id","status"}`, `409` once ended |
//! | `GET …/{conversation}/session/messages?cursor=&limit=` | `{"messages","nextCursor","hasMore","sessionId"}` |
//! | `GET …/{conversation}/session/stats` | message and token counts, current model |
//! | `DELETE …/{conversation}/session` | `{"deleted": n}` after the reset ran |
//! | `GET /v1/agents/{agent}/conversations?cursor=&limit=` | `{"conversations","nextCursor","hasMore"}` |
//! | `DELETE …/{conversation}`, `DELETE /v1/agents/{agent}/conversations`, `DELETE /v1/data` | what was erased |
//! | `GET /health/live`, `GET /health/ready` | `{"status"}`; ready is 503 when the store does not answer |
#![deny(missing_docs)]

mod api;
mod auth;
mod error;
mod handlers;
mod params;
mod router;
mod run_params;
mod serve;
mod sse;
mod streams;
mod timeout;

pub use api::{
    Api, DEFAULT_MAX_STREAMS_PER_ORG, DEFAULT_REQUEST_TIMEOUT, DEFAULT_RESET_TIMEOUT,
    MAX_REQUEST_TIMEOUT,
};
pub use auth::{ApiKeys, Caller, EventStreamRoute, KeyCaller, OPEN_ORG};
pub use error::ApiError;
pub use params::MAX_TEXT_BYTES;
pub use router::{MAX_BODY_BYTES, MAX_MESSAGE_BODY_BYTES, method_not_allowed, not_found};
pub use run_params::MAX_WAIT_SECS;
pub use serve::{DEFAULT_HEADER_READ_TIMEOUT, serve};
