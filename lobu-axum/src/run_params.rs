//! Query and header parameters of the run routes: `?wait=` of the status route, and where a
//! resumed event stream starts (`Last-Event-ID` or `?after=`). Every mistake is a 400.

use std::time::Duration;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::Deserialize;

use crate::error::ApiError;

/// The longest `?wait=` of `GET /v1/runs/{id}`, in seconds: past it a client should stream.
pub const MAX_WAIT_SECS: u64 = 60;

/// `?wait=N` (seconds, `0..=60`): answer when the run ends or `N` seconds passed.
#[derive(Debug)]
pub(crate) struct WaitParams {
    pub(crate) wait: Option<Duration>,
}

#[derive(Deserialize)]
struct RawWait {
    wait: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for WaitParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Query(raw) = Query::<RawWait>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
        let wait = match raw.wait.as_deref().filter(|w| !w.is_empty()) {
            None => None,
            Some(text) => match text.parse::<u64>() {
                Ok(secs) if secs <= MAX_WAIT_SECS => Some(Duration::from_secs(secs)),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "wait must be a whole number of seconds from 0 to {MAX_WAIT_SECS}, got {text:?}"
                    )));
                }
            },
        };
        Ok(WaitParams { wait })
    }
}

/// Where an event stream resumes: after the event whose id the client saw last, from the
/// `Last-Event-ID` header (what a browser's `EventSource` sends when it reconnects) or
/// `?after=` (the header wins). `None`: from the start.
#[derive(Debug)]
pub(crate) struct ResumeAfter(pub(crate) Option<u64>);

#[derive(Deserialize)]
struct RawAfter {
    after: Option<String>,
}

fn seq(text: &str, name: &str) -> Result<u64, ApiError> {
    text.trim().parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "{name} must be an event id (a whole number), got {text:?}"
        ))
    })
}

impl<S: Send + Sync> FromRequestParts<S> for ResumeAfter {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        if let Some(value) = parts.headers.get("last-event-id") {
            let text = value
                .to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID must be ASCII"))?;
            // The SSE spec lets a client send an empty id to mean "none".
            if !text.trim().is_empty() {
                return Ok(ResumeAfter(Some(seq(text, "Last-Event-ID")?)));
            }
        }
        let Query(raw) = Query::<RawAfter>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
        match raw.after.as_deref().filter(|a| !a.is_empty()) {
            None => Ok(ResumeAfter(None)),
            Some(text) => Ok(ResumeAfter(Some(seq(text, "after")?))),
        }
    }
}
