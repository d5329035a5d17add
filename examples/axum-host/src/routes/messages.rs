//! `POST /v1/agents/{agent}/conversations/{conversation}/messages`: accept a user message.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use lobu_core::{IdempotencyKey, RunStatus};
use serde::Deserialize;

use super::AppState;
use super::params::{ConversationPath, MAX_TEXT_BYTES};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::sse;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMessage {
    text: String,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// `202 {"run_id", "status"}` once the run is durable; with `Accept: text/event-stream`,
/// `200` and the run's events as SSE until it ends. A repeated idempotency key answers with
/// the first run (and its current status) and queues nothing.
pub(crate) async fn post_message(
    State(state): State<AppState>,
    caller: Caller,
    path: ConversationPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = path.key(&caller.org)?;
    let body = body.map_err(|e| ApiError::bad_request(format!("bad body: {}", e.body_text())))?;
    let message = parse_body(&body)?;
    let idempotency_key = message
        .idempotency_key
        .map(|k| IdempotencyKey::new(k).map_err(|e| ApiError::bad_request(e.message().to_owned())))
        .transpose()?;

    let submitted = state
        .runtime
        .submit(key.clone(), message.text, idempotency_key)
        .await?;
    let location = HeaderValue::from_str(&format!("/v1/runs/{}", submitted.run)).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "run id is not a header value",
        )
    })?;

    if sse::wants_event_stream(&headers) {
        let events = state.runtime.subscribe(&key.org, &submitted.run).await?;
        let mut response = sse::event_stream(events, state.closing.clone()).into_response();
        response.headers_mut().insert(header::LOCATION, location);
        return Ok(response);
    }

    let status = if submitted.created {
        RunStatus::Pending
    } else {
        state.runtime.status(&key.org, &submitted.run).await?.status
    };
    let body = Json(serde_json::json!({
        "run_id": submitted.run,
        "status": status.as_str(),
    }));
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], body).into_response())
}

fn parse_body(body: &[u8]) -> Result<NewMessage, ApiError> {
    // serde would also read a struct from a JSON array (`["hi"]`); only an object is a message.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::bad_request(
            "bad JSON body: expected an object like {\"text\": \"...\"}",
        ));
    }
    let message: NewMessage = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))?;
    if message.text.trim().is_empty() {
        return Err(ApiError::bad_request("text must not be empty"));
    }
    if message.text.len() > MAX_TEXT_BYTES {
        return Err(ApiError::bad_request(format!(
            "text is {} bytes; the limit is {MAX_TEXT_BYTES}",
            message.text.len()
        )));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> String {
        parse_body(body.as_bytes())
            .unwrap_err()
            .message()
            .to_owned()
    }

    #[test]
    fn bodies_must_be_a_json_object_with_text() {
        assert!(refused("").starts_with("bad JSON body"));
        assert!(refused("{\"text\": ").starts_with("bad JSON body"));
        assert!(refused("[]").starts_with("bad JSON body"));
        assert!(refused("{}").contains("missing field `text`"));
        assert!(refused("{\"text\": 5}").contains("invalid type"));
        assert!(refused("{\"text\": \"hi\", \"idempotencyKey\": \"k\"}").contains("unknown field"));
    }

    #[test]
    fn text_must_be_non_blank_and_bounded() {
        assert_eq!(refused("{\"text\": \"  \\n \"}"), "text must not be empty");
        let long = format!("{{\"text\": \"{}\"}}", "x".repeat(MAX_TEXT_BYTES + 1));
        assert!(refused(&long).contains("the limit is 65536"));
        let ok = format!("{{\"text\": \"{}\"}}", "x".repeat(MAX_TEXT_BYTES));
        assert!(parse_body(ok.as_bytes()).is_ok());
    }
}
