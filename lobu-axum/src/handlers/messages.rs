//! `POST /v1/agents/{agent}/conversations/{conversation}/messages`: accept a user message.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use lobu_core::{IdempotencyKey, MultitaskStrategy, RunStatus, TraceParent};
use lobu_runtime::SubmitOptions;
use serde::Deserialize;

use crate::api::Api;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{ConversationPath, MAX_TEXT_BYTES};
use crate::sse;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMessage {
    /// The message text; optional when the message carries images.
    #[serde(default)]
    text: Option<String>,
    /// `[{"data": <base64>, "mimeType": "image/png|jpeg|gif|webp"}]`, checked by
    /// [`UserInput`](lobu_core::transcript::UserInput) (at most 16).
    #[serde(default)]
    images: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    idempotency_key: Option<String>,
    /// `enqueue` (default), `reject`, `interrupt`, `rollback` or `steer`.
    #[serde(default)]
    multitask_strategy: Option<String>,
}

/// The body is `{"text"}`, `{"images"}` or both (images as in lobu's `image` content
/// block: base64 `data` and a `mimeType` of PNG, JPEG, GIF or WebP, at most 16; the body
/// may then be up to [`MAX_MESSAGE_BODY_BYTES`](crate::MAX_MESSAGE_BODY_BYTES)).
/// `202 {"run_id", "status"}` once the run is durable; with `Accept: text/event-stream`,
/// `200` and the run's events as SSE until it ends. A repeated idempotency key answers with
/// the first run (and its current status) and queues nothing.
///
/// A `traceparent` header (W3C Trace Context) follows the run through the queue to the
/// turn's span on whichever replica runs it.
///
/// `multitask_strategy` says what to do while the conversation has an unfinished run
/// (`enqueue`, `reject`, `interrupt`, `rollback`, `steer`; see
/// [`MultitaskStrategy`]); `reject` then answers `409 {"error"}` naming that run, and an
/// unknown strategy is `400`.
pub(crate) async fn post_message<C: Caller>(
    State(api): State<Api>,
    caller: C,
    path: ConversationPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = path.key(caller.org())?;
    check_content_type(&headers)?;
    // Over the body limit is 413 (read no further than the limit); anything else is 400.
    let body =
        body.map_err(|e| ApiError::new(e.status(), format!("bad body: {}", e.body_text())))?;
    let message = parse_body(&body)?;
    let idempotency_key = message
        .idempotency_key
        .map(|k| IdempotencyKey::new(k).map_err(|e| ApiError::bad_request(e.message().to_owned())))
        .transpose()?;
    let strategy = message
        .multitask_strategy
        .as_deref()
        .map(|s| MultitaskStrategy::parse(s).map_err(|e| ApiError::bad_request(e.message())))
        .transpose()?
        .unwrap_or_default();

    // A stream's slot is taken before the run is submitted: a refused stream must not leave
    // a run the client was told failed.
    let slot = sse::wants_event_stream(&headers)
        .then(|| api.streams.take(caller.org()))
        .transpose()?;
    let options = SubmitOptions::new()
        .idempotency_key(idempotency_key)
        .multitask(strategy)
        .trace_parent(trace_parent(&headers));
    let mut payload = serde_json::Map::new();
    if let Some(text) = message.text {
        payload.insert("text".to_owned(), text.into());
    }
    if let Some(images) = message.images {
        payload.insert("images".to_owned(), images.into());
    }
    // A bad image is the runtime's InvalidInput (400), checked before anything is queued.
    let submitted = api
        .runtime
        .submit_with(key.clone(), serde_json::Value::Object(payload), options)
        .await?;
    let location = HeaderValue::from_str(&format!("/v1/runs/{}", submitted.run)).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "run id is not a header value",
        )
    })?;

    if let Some(slot) = slot {
        let events = api.runtime.subscribe(&key.org, &submitted.run).await?;
        let mut response = sse::event_stream(events, api.closing.clone(), slot).into_response();
        response.headers_mut().insert(header::LOCATION, location);
        return Ok(response);
    }

    let status = if submitted.created {
        RunStatus::Pending
    } else {
        api.runtime.status(&key.org, &submitted.run).await?.status
    };
    let body = Json(serde_json::json!({
        "run_id": submitted.run,
        "status": status.as_str(),
    }));
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], body).into_response())
}

/// The request's W3C `traceparent`, carried with the run to the replica that runs it (its
/// turn's span records the trace). A malformed one is ignored, as the W3C spec asks of a
/// receiver: the message is still taken.
fn trace_parent(headers: &HeaderMap) -> Option<TraceParent> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    match TraceParent::parse(value) {
        Ok(parent) => Some(parent),
        Err(error) => {
            tracing::debug!(%error, "ignoring a malformed traceparent header");
            None
        }
    }
}

/// `415` unless the body is declared JSON: `application/json` or `application/<x>+json`,
/// parameters (`charset`) allowed, case-insensitive. Reading any body as JSON whatever it
/// claims would let a cross-site HTML form (`text/plain`, urlencoded, multipart: no CORS
/// preflight) post messages to an open server.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    let media = declared
        .and_then(|value| value.split(';').next())
        .map(|media| media.trim().to_ascii_lowercase());
    let json = media.as_deref().is_some_and(|media| {
        media == "application/json"
            || media
                .strip_prefix("application/")
                .is_some_and(|subtype| subtype.len() > "+json".len() && subtype.ends_with("+json"))
    });
    if json {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "expected `Content-Type: application/json`, got {}",
            declared.map_or_else(|| "none".to_owned(), |value| format!("{value:?}"))
        ),
    ))
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
    let Some(text) = &message.text else {
        if message.images.as_ref().is_none_or(Vec::is_empty) {
            return Err(ApiError::bad_request("a message needs text or images"));
        }
        return Ok(message);
    };
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("text must not be empty"));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "text is {} bytes; the limit is {MAX_TEXT_BYTES}",
                text.len()
            ),
        ));
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
        assert_eq!(refused("{}"), "a message needs text or images");
        assert_eq!(
            refused("{\"images\": []}"),
            "a message needs text or images"
        );
        assert!(refused("{\"images\": {}}").contains("invalid type"));
        let image = r#"{"images": [{"data": "iVBORw0KGgo=", "mimeType": "image/png"}]}"#;
        assert!(
            parse_body(image.as_bytes()).is_ok(),
            "an image alone is a message"
        );
        assert!(refused("{\"text\": 5}").contains("invalid type"));
        assert!(refused("{\"text\": \"hi\", \"idempotencyKey\": \"k\"}").contains("unknown field"));
        assert!(refused("{\"text\": \"hi\", \"multitask_strategy\": 1}").contains("invalid type"));
    }

    fn content_type(value: Option<&str>) -> Result<(), ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        }
        check_content_type(&headers)
    }

    #[test]
    fn only_json_content_types_are_read() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
        ] {
            assert!(content_type(Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
            Some("application/+json"),
            Some("text/json"),
            Some(""),
        ] {
            let error = content_type(bad).unwrap_err();
            assert_eq!(
                error.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{bad:?}"
            );
            assert!(
                error
                    .message()
                    .starts_with("expected `Content-Type: application/json`")
            );
        }
    }

    #[test]
    fn text_must_be_non_blank_and_bounded() {
        assert_eq!(refused("{\"text\": \"  \\n \"}"), "text must not be empty");
        let long = format!("{{\"text\": \"{}\"}}", "x".repeat(MAX_TEXT_BYTES + 1));
        assert!(refused(&long).contains("the limit is 65536"));
        let status = parse_body(long.as_bytes()).unwrap_err().status();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let ok = format!("{{\"text\": \"{}\"}}", "x".repeat(MAX_TEXT_BYTES));
        assert!(parse_body(ok.as_bytes()).is_ok());
    }
}
