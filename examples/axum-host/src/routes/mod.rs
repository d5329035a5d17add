//! The HTTP API: [`app`] builds the whole router over an [`AppState`].

mod conversations;
mod erase;
mod health;
mod messages;
mod params;
mod run_params;
mod runs;
mod session;
pub(crate) mod streams;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{Method, Request, StatusCode, Uri};
use axum::routing::{get, post};
use lobu_runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::auth::ApiKeys;
use crate::error::ApiError;
use streams::StreamSlots;

/// How many event streams one org may hold open on a replica by default.
pub const DEFAULT_MAX_STREAMS_PER_ORG: usize = 100;

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
    /// The event streams each org holds open on this replica.
    pub(crate) streams: Arc<StreamSlots>,
    /// Browser origins allowed to call the API (empty: CORS off, the default).
    pub(crate) cors_origins: Vec<HeaderValue>,
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
            streams: StreamSlots::new(DEFAULT_MAX_STREAMS_PER_ORG),
            cors_origins: Vec::new(),
        }
    }

    /// At most `per_org` event streams per org at once on this replica (past it: `429`).
    pub fn max_streams_per_org(mut self, per_org: usize) -> Self {
        self.streams = StreamSlots::new(per_org);
        self
    }

    /// Let browsers on these origins call the API (CORS); none, the default, turns it off.
    pub fn cors_origins(mut self, origins: Vec<HeaderValue>) -> Self {
        self.cors_origins = origins;
        self
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
        .merge(crate::page::routes())
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
    let mut routes = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES));
    if !state.cors_origins.is_empty() {
        routes = routes.layer(cors(&state.cors_origins));
    }
    routes
        // The span names the method and path only: the query may carry `?key=` (the event
        // stream's browser key) and headers carry bearer keys, neither of which is logged.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<Body>| {
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
        }))
        .with_state(state)
}

/// CORS for `origins`: the API's methods and the headers its clients send.
fn cors(origins: &[HeaderValue]) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([header::LOCATION])
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
