//! `GET /health/live` and `GET /health/ready` (no key needed).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use lobu_core::ConversationKey;
use serde_json::{Value, json};

use crate::api::Api;

/// How long readiness waits for the store before answering 503.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// The process is up and serving HTTP.
pub(crate) async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready only when the store answers (the run queue and the session store), and not while
/// shutting down, so a load balancer sends no new work to a draining replica.
pub(crate) async fn ready(State(api): State<Api>) -> (StatusCode, Json<Value>) {
    if api.draining.is_cancelled() {
        return unavailable("shutting down");
    }
    let backend = api.runtime.backend();
    let probe =
        ConversationKey::parse("lobu-health", "probe", "ready").expect("the probe key is valid");
    let checks = async {
        let depth = api.runtime.queue_depth().await?;
        backend.sessions.head(&probe).await?;
        Ok::<u64, lobu_core::Error>(depth)
    };
    match tokio::time::timeout(READY_TIMEOUT, checks).await {
        Ok(Ok(depth)) => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "queue_depth": depth })),
        ),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness check failed");
            unavailable(&format!("store unavailable: {}", error.message()))
        }
        Err(_) => unavailable(&format!("store did not answer within {READY_TIMEOUT:?}")),
    }
}

fn unavailable(error: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": "unavailable", "error": error })),
    )
}
