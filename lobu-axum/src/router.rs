//! The routes: [`Api::routes`] for a host's own state and auth, [`Api::router`] ready-made.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::extract::{DefaultBodyLimit, FromRef, FromRequestParts};
use axum::http::{StatusCode, Uri};
use axum::middleware::{Next, from_fn};
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Extension, Router};

use crate::api::Api;
use crate::auth::{ApiKeys, Caller, EventStreamRoute, KeyCaller};
use crate::error::ApiError;
use crate::handlers::{conversations, erase, health, messages, runs, session};
use crate::run_params::MAX_WAIT_SECS;
use crate::timeout::bounded;

/// The largest request body: a message of [`MAX_TEXT_BYTES`](crate::MAX_TEXT_BYTES) plus
/// JSON overhead. A larger body is refused with 413 as soon as the limit is passed: it is
/// never read to the end, whatever its declared length.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The largest body of a posted message, which may carry images (base64): a run's payload
/// limit ([`MAX_PAYLOAD_BYTES`](lobu_core::MAX_PAYLOAD_BYTES), 1 MiB; a bigger payload is
/// `413` too) and room for the other fields.
pub const MAX_MESSAGE_BODY_BYTES: usize = lobu_core::MAX_PAYLOAD_BYTES + 64 * 1024;

impl Api {
    /// The run and session API (`/v1/…`) for a host's state `S` (which yields this [`Api`]
    /// through [`FromRef`]) and its authentication `C` (an extractor that yields the org,
    /// see [`Caller`]). Bodies over [`MAX_BODY_BYTES`] (a message: over
    /// [`MAX_MESSAGE_BODY_BYTES`]) are `413`; non-streaming routes are
    /// bounded by the [request timeout](Api::request_timeout); a method a route does not
    /// serve is `405 {"error"}`. Add [`probes`](Api::probes), a fallback
    /// ([`not_found`]) and the host's own layers (tracing, CORS) around it.
    pub fn routes<S, C>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
        Api: FromRef<S>,
        C: Caller + FromRequestParts<S> + Send + 'static,
    {
        let request = self.request_timeout;
        // `?wait=N` waits up to N seconds before it starts its answer.
        let status = request + Duration::from_secs(MAX_WAIT_SECS);
        let conversation = "/v1/agents/{agent}/conversations/{conversation}";
        Router::new()
            // Inside the router-wide limit below, so this one applies to this route.
            .route(
                &format!("{conversation}/messages"),
                within(request, post(messages::post_message::<C>))
                    .layer(DefaultBodyLimit::max(MAX_MESSAGE_BODY_BYTES)),
            )
            .route(
                &format!("{conversation}/session/messages"),
                within(request, get(session::messages::<C>)),
            )
            .route(
                &format!("{conversation}/session/stats"),
                within(request, get(session::stats::<C>)),
            )
            // Bounded by the reset timeout inside: a timed-out reset still runs and says so.
            .route(
                &format!("{conversation}/session"),
                delete(session::reset::<C>),
            )
            .route(
                conversation,
                within(request, delete(erase::conversation::<C>)),
            )
            .route(
                "/v1/agents/{agent}/conversations",
                within(
                    request,
                    get(conversations::list::<C>).delete(erase::agent::<C>),
                ),
            )
            .route("/v1/data", within(request, delete(erase::org::<C>)))
            .route("/v1/runs/{run_id}", within(status, get(runs::status::<C>)))
            .route(
                "/v1/runs/{run_id}/events",
                get(runs::events::<C>).route_layer(Extension(EventStreamRoute)),
            )
            .route(
                "/v1/runs/{run_id}/cancel",
                within(request, post(runs::cancel::<C>)),
            )
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
    }

    /// `GET /health/live` (the process serves HTTP) and `GET /health/ready` (the store
    /// answers and the server is not draining; else 503). No credentials needed.
    pub fn probes<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
        Api: FromRef<S>,
    {
        Router::new()
            .route("/health/live", get(health::live))
            .route("/health/ready", get(health::ready))
    }

    /// The whole API, ready to serve: [`routes`](Api::routes) authenticated by bearer
    /// `keys` ([`KeyCaller`]), the [`probes`](Api::probes), and `404 {"error"}` for any other
    /// path.
    pub fn router(self, keys: ApiKeys) -> Router {
        let routes = self.routes::<KeyedState, KeyCaller>();
        let probes = self.probes::<KeyedState>();
        routes
            .merge(probes)
            .fallback(not_found)
            .with_state(KeyedState {
                api: self,
                keys: Arc::new(keys),
            })
    }
}

/// `404 {"error"}` naming the path: a fallback for a host's router.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

/// `405 {"error"}`: the route exists, the method does not.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

/// `route`, answered `503` when it takes longer than `limit`.
fn within<S>(limit: Duration, route: MethodRouter<S>) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    route.route_layer(from_fn(move |request: Request, next: Next| {
        bounded(limit, request, next)
    }))
}

/// The state of [`Api::router`].
#[derive(Debug, Clone)]
struct KeyedState {
    api: Api,
    keys: Arc<ApiKeys>,
}

impl FromRef<KeyedState> for Api {
    fn from_ref(state: &KeyedState) -> Api {
        state.api.clone()
    }
}

impl FromRef<KeyedState> for Arc<ApiKeys> {
    fn from_ref(state: &KeyedState) -> Arc<ApiKeys> {
        state.keys.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn status_of(route: MethodRouter, path: &str) -> (u16, String) {
        let app = Router::new().route("/slow", route);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    #[tokio::test]
    async fn a_request_past_its_route_timeout_is_a_503_with_an_error_body() {
        let slow = get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        });
        let (status, body) = status_of(within(Duration::from_millis(100), slow), "/slow").await;
        assert_eq!(status, 503);
        assert!(body.contains("did not finish within 100ms"), "{body}");

        let quick = get(|| async { "on time" });
        let answer = status_of(within(Duration::from_secs(5), quick), "/slow").await;
        assert_eq!(answer, (200, "on time".to_owned()));
    }
}
