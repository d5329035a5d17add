//! The answer's event stream read the way the SSE format says, over https: data split over
//! several lines, CRLF line ends, comments and other fields, UTF-8 split across chunks,
//! `[DONE]` ending the answer; and streams that end wrong fail the turn.

mod common;

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use common::{TestPki, https_stand_in, lines, runtime, turn};
use lobu_core::{ConversationKey, RunStatus};
use lobu_openai::{OpenAiAgent, OpenAiConfig};

/// Sends `chunks` as the answer's body, each as its own write.
async fn raw(State(chunks): State<Vec<&'static [u8]>>) -> Response {
    let chunks = chunks
        .into_iter()
        .map(|c| Ok::<_, Infallible>(Bytes::from_static(c)));
    let body = Body::from_stream(futures::stream::iter(chunks));
    ([("content-type", "text/event-stream")], body).into_response()
}

/// A turn's outcome when the endpoint answers with `chunks`.
async fn answered_with(chunks: Vec<&'static [u8]>) -> (common::Outcome, Vec<String>) {
    let pki = TestPki::new("lobu test CA");
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(raw))
        .with_state(chunks);
    let base_url = https_stand_in(app, &pki).await;
    let config = OpenAiConfig::builder(base_url, "stand-in-1")
        .extra_root_pem(pki.ca_pem)
        .build()
        .unwrap();
    let runtime = runtime(OpenAiAgent::new(config).unwrap());
    let key = ConversationKey::parse("acme", "chat", "sse").unwrap();
    let outcome = turn(&runtime, &key, "hi").await;
    let lines = lines(&runtime, &key).await;
    runtime.shutdown().await;
    (outcome, lines)
}

#[tokio::test]
async fn multi_line_data_crlf_comments_and_split_utf8_are_read_as_the_format_says() {
    let (outcome, lines) = answered_with(vec![
        b": keep-alive comment\n\n",
        // One event's JSON over two `data:` lines (joined with a newline, JSON whitespace),
        // with an event name and an id beside it.
        b"event: message\nid: 1\ndata: {\"choices\": [{\"delta\":\ndata: {\"content\": \"Hel\"}}]}\n\n",
        // CRLF line ends, and a field without the space after the colon.
        b"data:{\"choices\": [{\"delta\": {\"content\": \"lo, \"}}]}\r\n\r\n",
        // "café" with the two bytes of its "é" in different chunks.
        b"data: {\"choices\": [{\"delta\": {\"content\": \"caf\xc3",
        b"\xa9\"}}]}\n",
        b"\n: another comment\r\n\r\n",
        b"data: {\"choices\": [], \"usage\": {\"prompt_tokens\": 5, \"completion_tokens\": 4}}\n\n",
        b"data: [DONE]\n\n",
        // Nothing after [DONE] is read.
        b"data: {\"choices\": [{\"delta\": {\"content\": \" ignored\"}}]}\n\n",
    ])
    .await;
    assert_eq!(
        outcome.record.status,
        RunStatus::Completed,
        "{:?}",
        outcome.record
    );
    assert_eq!(outcome.streamed, "Hello, café");
    assert_eq!(lines, ["user: hi", "assistant: Hello, café"]);
}

#[tokio::test]
async fn a_stream_that_ends_before_done_fails_the_turn_and_keeps_nothing() {
    let (outcome, lines) = answered_with(vec![
        b"data: {\"choices\": [{\"delta\": {\"content\": \"Hel\"}}]}\n\n",
    ])
    .await;
    assert_eq!(outcome.record.status, RunStatus::Failed);
    let error = outcome.record.error.unwrap_or_default();
    assert!(error.contains("closed the stream before [DONE]"), "{error}");
    assert!(lines.is_empty(), "{lines:?}");
}

#[tokio::test]
async fn an_error_event_fails_the_turn_with_the_endpoints_message() {
    let (outcome, lines) = answered_with(vec![
        b"data: {\"error\": {\"message\": \"context length exceeded\"}}\n\n",
    ])
    .await;
    assert_eq!(outcome.record.status, RunStatus::Failed);
    let error = outcome.record.error.unwrap_or_default();
    assert!(
        error.contains("reported an error") && error.contains("context length exceeded"),
        "{error}"
    );
    assert!(lines.is_empty(), "{lines:?}");
}

#[tokio::test]
async fn data_that_is_not_json_fails_the_turn() {
    let (outcome, _) = answered_with(vec![b"data: {not json\n\n", b"data: [DONE]\n\n"]).await;
    assert_eq!(outcome.record.status, RunStatus::Failed);
    let error = outcome.record.error.unwrap_or_default();
    assert!(error.contains("is not JSON"), "{error}");
}
