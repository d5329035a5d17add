//! The HTTP API: [`app`] builds the whole router over an [`AppState`]: lobu-axum's run and
//! session API with bearer keys, its probes, and the host's own parts (the chat page, CORS,
//! request spans).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::FromRef;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{Method, Request};
use lobu_axum::{Api, ApiKeys, KeyCaller};
use lobu_runtime::Runtime;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub(crate) api: Api,
    pub(crate) keys: Arc<ApiKeys>,
    /// Whether the API is served (off: a worker-only replica answers health probes only).
    pub(crate) intake: bool,
    /// Browser origins allowed to call the API (empty: CORS off, the default).
    pub(crate) cors_origins: Vec<HeaderValue>,
}

impl FromRef<AppState> for Api {
    fn from_ref(state: &AppState) -> Api {
        state.api.clone()
    }
}

impl FromRef<AppState> for Arc<ApiKeys> {
    fn from_ref(state: &AppState) -> Arc<ApiKeys> {
        state.keys.clone()
    }
}

impl AppState {
    /// State for a server on `runtime` accepting `keys`.
    pub fn new(runtime: Runtime, keys: ApiKeys) -> Self {
        AppState {
            api: Api::new(runtime),
            keys: Arc::new(keys),
            intake: true,
            cors_origins: Vec::new(),
        }
    }

    /// At most `per_org` event streams per org at once on this replica (past it: `429`).
    pub fn max_streams_per_org(mut self, per_org: usize) -> Self {
        self.api = self.api.max_streams_per_org(per_org);
        self
    }

    /// How long a non-streaming request may take before it is answered `503`.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.api = self.api.request_timeout(timeout);
        self
    }

    /// How long `DELETE …/session` waits for its reset before answering `503`.
    pub fn reset_timeout(mut self, timeout: Duration) -> Self {
        self.api = self.api.reset_timeout(timeout);
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
        self.api.runtime()
    }

    /// The API's state (drain and close signals).
    pub fn api(&self) -> &Api {
        &self.api
    }
}

/// The whole HTTP API over `state`: the `/v1` routes (bearer-key auth), health probes,
/// `/metrics` (Prometheus) and the chat page at `/`.
pub fn app(state: AppState) -> Router {
    // Probes and metrics are served by every replica, worker-only ones too, without a key:
    // scrapers and load balancers reach them on the internal network.
    let probes = state
        .api
        .probes::<AppState>()
        .route("/metrics", axum::routing::get(crate::metrics::render));
    if !state.intake {
        return finish(probes, state);
    }
    let api = state
        .api
        .routes::<AppState, KeyCaller>()
        .merge(probes)
        .merge(crate::page::routes());
    finish(api, state)
}

fn finish(routes: Router<AppState>, state: AppState) -> Router {
    let mut routes = routes.fallback(lobu_axum::not_found);
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
