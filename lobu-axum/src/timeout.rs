//! Per-route request timeouts: a non-streaming request that takes too long is answered
//! `503 {"error"}` (an API answer like any other), and its handler is dropped.

use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The response of `next` if it comes within `limit`, else `503`. Only the wait for the
/// response head is bounded: a streamed body (SSE) is not.
pub(crate) async fn bounded(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::unavailable(format!(
            "the request did not finish within {limit:?}; try again (a message resent with \
             its idempotency_key is not queued twice)"
        ))
        .into_response(),
    }
}
