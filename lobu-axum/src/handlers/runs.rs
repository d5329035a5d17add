//! `GET /v1/runs/{run_id}` (`?wait=`), `GET /v1/runs/{run_id}/events` (resumable) and
//! `POST /v1/runs/{run_id}/cancel`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lobu_core::{CancelOutcome, ErrorKind};
use serde_json::{Value, json};

use crate::api::Api;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::RunPath;
use crate::run_params::{ResumeAfter, WaitParams};
use crate::sse;

/// `{"run_id", "status", "attempts", "error", "output"}`; another org's run is 404, like an
/// unknown one. With `?wait=N` the answer waits until the run ends or `N` seconds passed,
/// whichever comes first, on any replica: the wait follows the run's events (woken by the
/// backend), it does not poll the database.
pub(crate) async fn status<C: Caller>(
    State(api): State<Api>,
    caller: C,
    RunPath(run): RunPath,
    WaitParams { wait }: WaitParams,
) -> Result<Json<Value>, ApiError> {
    if let Some(wait) = wait.filter(|w| !w.is_zero()) {
        let ended = api.runtime.wait(caller.org(), &run);
        let closing = api.closing.cancelled();
        tokio::select! {
            result = tokio::time::timeout(wait, ended) => match result {
                Ok(Err(e)) if e.is(ErrorKind::NotFound) => return Err(not_found_as(e, &run)),
                // Ended, timed out, or the wait failed: the status read below answers.
                _ => {}
            },
            () = closing => {}
        }
    }
    let record = api
        .runtime
        .status(caller.org(), &run)
        .await
        .map_err(|e| not_found_as(e, &run))?;
    Ok(Json(json!({
        "run_id": record.run,
        "status": record.status.as_str(),
        "attempts": record.attempts,
        "error": record.error,
        "output": record.output,
    })))
}

/// The run's events as SSE, each with its `id:`, replayed from the start or from after the
/// id in `Last-Event-ID` (`?after=`), then live, from any replica. Accepts `?key=` as well
/// as the `Authorization` header, for browsers' `EventSource`.
pub(crate) async fn events<C: Caller>(
    State(api): State<Api>,
    caller: C,
    RunPath(run): RunPath,
    ResumeAfter(after): ResumeAfter,
) -> Result<impl IntoResponse, ApiError> {
    let slot = api.streams.take(caller.org())?;
    let events = api
        .runtime
        .subscribe_after(caller.org(), &run, after)
        .await
        .map_err(|e| not_found_as(e, &run))?;
    Ok(sse::event_stream(events, api.closing.clone(), slot))
}

/// `POST /v1/runs/{run_id}/cancel`: `200 {"run_id", "status": "cancelled"}` for a run that
/// had not started (it never will), `202 {"run_id", "status": "cancelling"}` for a running
/// one (its worker stops it: at once on this replica, at its next heartbeat on another;
/// follow the run for its end), `409 {"error", "status"}` for a run that had already ended, naming how.
pub(crate) async fn cancel<C: Caller>(
    State(api): State<Api>,
    caller: C,
    RunPath(run): RunPath,
) -> Result<Response, ApiError> {
    let outcome = api
        .runtime
        .cancel(caller.org(), &run)
        .await
        .map_err(|e| not_found_as(e, &run))?;
    let (code, status) = match outcome {
        CancelOutcome::Cancelled => (StatusCode::OK, "cancelled"),
        CancelOutcome::Requested => (StatusCode::ACCEPTED, "cancelling"),
        CancelOutcome::Finished(ended) => {
            let error = format!("run {run} already ended: it is {}", ended.as_str());
            let body = json!({ "error": error, "status": ended.as_str() });
            return Ok((StatusCode::CONFLICT, Json(body)).into_response());
        }
        _ => (StatusCode::ACCEPTED, "cancelling"),
    };
    Ok((code, Json(json!({ "run_id": run, "status": status }))).into_response())
}

/// The same answer for "no such run" and "another org's run", so ids cannot be probed.
fn not_found_as(error: lobu_core::Error, run: &lobu_core::RunId) -> ApiError {
    if error.is(ErrorKind::NotFound) {
        ApiError::not_found(format!("run {run} not found"))
    } else {
        error.into()
    }
}
