//! The embed API as a host uses it: the runtime records the user's message, payloads of the
//! host's own types, image-only turns, output while a writer is open, `impl Agent` builders.

use std::time::Duration;

use lobu_core::memory::MemoryBackend;
use lobu_core::transcript::{AssistantMessage, ContentBlock, parse};
use lobu_core::{Backend, BoxError, ConversationKey, RunStatus};
use lobu_runtime::{Agent, RunEvent, Runtime, Turn};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A host's own payload type.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Order {
    text: String,
    order_id: u64,
}

/// Answers with one assistant entry, streaming while its writer is open; `Order` payloads
/// are read as the host's type.
struct Clerk;

#[async_trait::async_trait]
impl Agent for Clerk {
    async fn run_turn(&self, turn: &mut Turn) -> Result<(), BoxError> {
        let answer = match turn.payload().get("order_id") {
            Some(_) => format!("order {} noted", turn.payload_as::<Order>()?.order_id),
            None => format!("{} block(s) seen", turn.user_input().content().len()),
        };
        let mut writer = turn.writer();
        writer.output(&answer);
        let reply = AssistantMessage::new("test", "clerk", vec![ContentBlock::text(&answer)]);
        writer.assistant(&reply)?;
        Ok(())
    }
}

/// Writes the user's message its own way.
struct OwnWay;

#[async_trait::async_trait]
impl Agent for OwnWay {
    fn appends_user_message(&self) -> bool {
        true
    }

    async fn run_turn(&self, turn: &mut Turn) -> Result<(), BoxError> {
        let text = format!("[quoted] {}", turn.text());
        turn.writer().user_text(&text)?;
        Ok(())
    }
}

fn start(backend: Backend, agent: impl Agent) -> Runtime {
    let runtime = Runtime::builder(backend, agent)
        .retry_delay(Duration::from_millis(10))
        .build()
        .unwrap();
    tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.run().await }
    });
    runtime
}

/// The conversation's messages as (role, content) pairs.
async fn messages(backend: &Backend, key: &ConversationKey) -> Vec<(String, Value)> {
    let snapshot = backend.sessions.hydrate(key).await.unwrap().unwrap();
    parse(&snapshot.transcript)
        .entries()
        .iter()
        .filter_map(|entry| entry.message())
        .map(|m| (m.role().unwrap().to_owned(), m.content().cloned().unwrap()))
        .collect()
}

#[tokio::test]
async fn the_runtime_records_the_users_message_before_the_agent_answers() {
    let backend = MemoryBackend::new().into_backend();
    let runtime = start(backend.clone(), Clerk);
    let key = ConversationKey::parse("acme", "clerk", "c1").unwrap();
    let record = runtime.submit_and_wait(key.clone(), "hello").await.unwrap();
    assert_eq!(record.status, RunStatus::Completed);
    let messages = messages(&backend, &key).await;
    assert_eq!(
        messages[0],
        ("user".into(), json!([{"type": "text", "text": "hello"}]))
    );
    assert_eq!(messages[1].0, "assistant");
    assert_eq!(messages.len(), 2, "{messages:?}");
    runtime.shutdown().await;
}

#[tokio::test]
async fn an_agent_that_appends_the_users_message_itself_gets_it_once() {
    let backend = MemoryBackend::new().into_backend();
    let runtime = start(backend.clone(), std::sync::Arc::new(OwnWay));
    let key = ConversationKey::parse("acme", "own", "c1").unwrap();
    runtime.submit_and_wait(key.clone(), "hi").await.unwrap();
    let messages = messages(&backend, &key).await;
    assert_eq!(
        messages,
        [(
            "user".into(),
            json!([{"type": "text", "text": "[quoted] hi"}])
        )]
    );
    runtime.shutdown().await;
}

#[tokio::test]
async fn a_payload_of_the_hosts_type_reads_back_and_one_that_does_not_fit_fails_at_once() {
    let backend = MemoryBackend::new().into_backend();
    let runtime = start(backend.clone(), Clerk);
    let key = ConversationKey::parse("acme", "clerk", "orders").unwrap();
    let order = Order {
        text: "ship it".into(),
        order_id: 42,
    };
    let run = runtime
        .submit_payload(key.clone(), &order, None)
        .await
        .unwrap();
    let record = runtime.wait(&key.org, &run.run).await.unwrap();
    assert_eq!(record.status, RunStatus::Completed);
    let events = runtime.subscribe(&key.org, &run.run).await.unwrap();
    let events: Vec<_> = futures::StreamExt::collect(events).await;
    assert!(events.iter().any(|e| matches!(&e.event,
        RunEvent::Output { text, .. } if text == "order 42 noted")));

    // An order id that is not a number does not fit `Order`: no retry can fix it.
    let bad = json!({"text": "ship it", "order_id": "forty-two"});
    let run = runtime
        .submit_payload(key.clone(), bad, None)
        .await
        .unwrap();
    let record = runtime.wait(&key.org, &run.run).await.unwrap();
    assert_eq!((record.status, record.attempts), (RunStatus::Failed, 1));
    assert!(record.error.unwrap().contains("does not fit"));
    runtime.shutdown().await;
}

#[tokio::test]
async fn an_image_only_message_is_recorded_as_an_image_and_bad_payloads_queue_nothing() {
    let backend = MemoryBackend::new().into_backend();
    let runtime = start(backend.clone(), Clerk);
    let key = ConversationKey::parse("acme", "clerk", "photos").unwrap();
    let image = json!({"data": "iVBORw0KGgo=", "mimeType": "image/png"});
    let payload = json!({ "images": [image] });
    let run = runtime
        .submit_payload(key.clone(), payload, None)
        .await
        .unwrap();
    runtime.wait(&key.org, &run.run).await.unwrap();
    let messages = messages(&backend, &key).await;
    assert_eq!(
        messages[0],
        (
            "user".into(),
            json!([{"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"}])
        )
    );

    for bad in [
        json!({}),
        json!({"text": "  "}),
        json!({"images": [{"data": "AAAA", "mimeType": "text/html"}]}),
        json!(["not", "an", "object"]),
    ] {
        let error = runtime
            .submit_payload(key.clone(), &bad, None)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), lobu_core::ErrorKind::InvalidInput, "{bad}");
    }
    let queued = backend
        .queue
        .runs(&key.org, &Default::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(queued.items.len(), 1, "only the image turn was queued");
    runtime.shutdown().await;
}
