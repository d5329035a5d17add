//! Messages with images over HTTP: an image alone is a message, a bad image is `400` and
//! queues nothing, and a message may be larger than the other routes' bodies.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use lobu_axum::{Api, ApiKeys, MAX_MESSAGE_BODY_BYTES};
use lobu_core::memory::MemoryBackend;
use lobu_core::transcript::ContentBlock;
use lobu_core::{BoxError, MAX_PAYLOAD_BYTES, RunFilter, RunId};
use lobu_runtime::{Agent, RunEvent, Runtime, Turn};
use serde_json::{Value, json};

/// Answers with what the user sent: its text (or `-`) and how many images.
struct Describe;

#[async_trait::async_trait]
impl Agent for Describe {
    async fn run_turn(&self, turn: &mut Turn) -> Result<(), BoxError> {
        let input = turn.user_input();
        let images = input
            .content()
            .iter()
            .filter(|block| matches!(block, ContentBlock::Image { .. }))
            .count();
        turn.output(format!("{} + {images} images", input.text().unwrap_or("-")));
        Ok(())
    }
}

async fn serve() -> (SocketAddr, Runtime) {
    let runtime = Runtime::builder(MemoryBackend::new().into_backend(), Arc::new(Describe))
        .build()
        .unwrap();
    tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.run().await }
    });
    let keys = ApiKeys::parse("acme-key=acme").unwrap();
    let app = Api::new(runtime.clone()).router(keys);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, runtime)
}

async fn post(addr: SocketAddr, body: &Value) -> (u16, Value) {
    let url = format!("http://{addr}/v1/agents/bot/conversations/c1/messages");
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth("acme-key")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn png(bytes: usize) -> Value {
    json!({ "data": "A".repeat(bytes), "mimeType": "image/png" })
}

/// The agent's answer to `run`, and the conversation's transcript after it.
async fn answer(runtime: &Runtime, run: &Value) -> (String, String) {
    let org = "acme".parse().unwrap();
    let run = RunId::new(run.as_str().unwrap()).unwrap();
    let mut events = runtime.subscribe(&org, &run).await.unwrap();
    let mut said = String::new();
    while let Some(numbered) = events.next().await {
        if let RunEvent::Output { text, .. } = &numbered.event {
            said.push_str(text);
        }
    }
    let key = lobu_core::ConversationKey::parse("acme", "bot", "c1").unwrap();
    let snapshot = runtime
        .backend()
        .sessions
        .hydrate(&key)
        .await
        .unwrap()
        .unwrap();
    (
        said,
        String::from_utf8(snapshot.transcript.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn an_image_alone_is_a_message_and_reaches_the_agent_and_the_transcript() {
    let (addr, runtime) = serve().await;
    let (status, body) = post(addr, &json!({ "images": [png(8)] })).await;
    assert_eq!(status, 202, "{body}");
    let (said, transcript) = answer(&runtime, &body["run_id"]).await;
    assert_eq!(said, "- + 1 images");
    assert!(
        transcript.contains(r#""type":"image","data":"AAAAAAAA""#),
        "{transcript}"
    );

    let both = json!({ "text": "look", "images": [png(8), png(12)] });
    let (status, body) = post(addr, &both).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(answer(&runtime, &body["run_id"]).await.0, "look + 2 images");
}

#[tokio::test]
async fn a_bad_image_is_400_and_queues_nothing() {
    let (addr, runtime) = serve().await;
    let bad = [
        json!({ "images": [{ "data": "AAAA", "mimeType": "text/html" }] }),
        json!({ "images": [{ "data": "not base64!", "mimeType": "image/png" }] }),
        json!({ "images": [{ "mimeType": "image/png" }] }),
        json!({ "images": vec![png(4); 17] }),
        json!({ "images": [] }),
        json!({ "text": " ", "images": [png(4)] }),
    ];
    for body in bad {
        let (status, answer) = post(addr, &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    let org = "acme".parse().unwrap();
    let queue = &runtime.backend().queue;
    let runs = queue
        .runs(&org, &RunFilter::default(), None, 10)
        .await
        .unwrap();
    assert!(runs.items.is_empty(), "{:?}", runs.items);
}

#[tokio::test]
async fn a_message_may_carry_images_up_to_the_payload_limit_and_no_more() {
    let (addr, runtime) = serve().await;
    // Over the other routes' body limit, under the payload limit.
    let (status, body) = post(addr, &json!({ "images": [png(900 * 1024)] })).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(answer(&runtime, &body["run_id"]).await.0, "- + 1 images");
    // Under the body limit and over the payload limit; then over both.
    for size in [MAX_PAYLOAD_BYTES, MAX_MESSAGE_BODY_BYTES] {
        let (status, body) = post(addr, &json!({ "images": [png(size)] })).await;
        assert_eq!(status, 413, "{size}: {body}");
    }
}
