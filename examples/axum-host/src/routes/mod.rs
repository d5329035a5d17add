//! The HTTP API: [`app`] builds the whole router over an [`AppState`].

mod conversations;
mod erase;
mod health;
mod messages;
mod params;
mod run_params;
mod runs;
mod session;

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, Uri};
use axum::response::Html;
use axum::routing::{get, post};
use lobu_runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::auth::ApiKeys;
use crate::error::ApiError;

/// The largest request body: a message of [`params::MAX_TEXT_BYTES`] plus JSON overhead.
/// A larger body is refused with 413 as soon as the limit is passed: it is never read to
/// the end, whatever its declared length.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub(crate) runtime: Runtime,
    pub(crate) keys: Arc<ApiKeys>,
    /// Cancelled when shutdown begins: readiness turns 503.
    pub(crate) draining: CancellationToken,
    /// Cancelled when the worker has stopped: event streams end and waits give up, so the
    /// HTTP server can finish (clients reconnect to another replica and replay).
    pub(crate) closing: CancellationToken,
    /// Whether the API is served (off: a worker-only replica answers health probes only).
    pub(crate) intake: bool,
}

impl AppState {
    /// State for a server on `runtime` accepting `keys`.
    pub fn new(runtime: Runtime, keys: ApiKeys) -> Self {
        AppState {
            runtime,
            keys: Arc::new(keys),
            draining: CancellationToken::new(),
            closing: CancellationToken::new(),
            intake: true,
        }
    }

    /// The same state for a worker-only replica: [`app`] serves the health probes only.
    pub fn without_intake(mut self) -> Self {
        self.intake = false;
        self
    }

    /// The runtime the handlers speak to.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Mark the server as shutting down: `/health/ready` answers 503 from now on.
    pub fn begin_drain(&self) {
        self.draining.cancel();
    }

    /// End every open event stream and pending wait (call after the worker stopped).
    pub fn close_streams(&self) {
        self.draining.cancel();
        self.closing.cancel();
    }
}

/// The whole HTTP API over `state`: the `/v1` routes (bearer-key auth), health probes and the
/// chat page at `/`.
pub fn app(state: AppState) -> Router {
    let probes = Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready));
    if !state.intake {
        return finish(probes, state);
    }
    let conversation = "/v1/agents/{agent}/conversations/{conversation}";
    let api = probes
        .route("/", get(page))
        .route(
            &format!("{conversation}/messages"),
            post(messages::post_message),
        )
        .route(
            &format!("{conversation}/session/messages"),
            get(session::messages),
        )
        .route(
            &format!("{conversation}/session/stats"),
            get(session::stats),
        )
        .route(
            &format!("{conversation}/session"),
            axum::routing::delete(session::reset),
        )
        .route(conversation, axum::routing::delete(erase::conversation))
        .route(
            "/v1/agents/{agent}/conversations",
            get(conversations::list).delete(erase::agent),
        )
        .route("/v1/data", axum::routing::delete(erase::org))
        .route("/v1/runs/{run_id}", get(runs::status))
        .route("/v1/runs/{run_id}/events", get(runs::events))
        .route("/v1/runs/{run_id}/cancel", post(runs::cancel));
    finish(api, state)
}

fn finish(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn page() -> Html<&'static str> {
    Html(include_str!("../page.html"))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}
