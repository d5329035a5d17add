//! `GET /v1/runs/{run_id}` and `GET /v1/runs/{run_id}/events`.

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use lobu_core::ErrorKind;
use serde_json::{Value, json};

use super::AppState;
use super::params::RunPath;
use crate::auth::{Caller, StreamCaller};
use crate::error::ApiError;
use crate::sse;

/// `{"run_id", "status", "attempts", "error"}`; another org's run is 404, like an unknown one.
pub(crate) async fn status(
    State(state): State<AppState>,
    caller: Caller,
    RunPath(run): RunPath,
) -> Result<Json<Value>, ApiError> {
    let record = state
        .runtime
        .status(&caller.org, &run)
        .await
        .map_err(|e| not_found_as(e, &run))?;
    Ok(Json(json!({
        "run_id": record.run,
        "status": record.status.as_str(),
        "attempts": record.attempts,
        "error": record.error,
    })))
}

/// The run's events as SSE, replayed from the start. Accepts `?key=` as well as the
/// `Authorization` header, for browsers' `EventSource`.
pub(crate) async fn events(
    State(state): State<AppState>,
    caller: StreamCaller,
    RunPath(run): RunPath,
) -> Result<impl IntoResponse, ApiError> {
    let events = state
        .runtime
        .subscribe(&caller.org, &run)
        .await
        .map_err(|e| not_found_as(e, &run))?;
    Ok(sse::event_stream(events, state.closing.clone()))
}

/// The same answer for "no such run" and "another org's run", so ids cannot be probed.
fn not_found_as(error: lobu_core::Error, run: &lobu_core::RunId) -> ApiError {
    if error.is(ErrorKind::NotFound) {
        ApiError::not_found(format!("run {run} not found"))
    } else {
        error.into()
    }
}
