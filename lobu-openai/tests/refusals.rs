//! Answers retrying cannot change (4xx, but 408 and 429) fail the run at once; a rate limit
//! is retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use lobu_core::memory::MemoryBackend;
use lobu_core::{ConversationKey, RunStatus};
use lobu_openai::{OpenAiAgent, OpenAiConfig};
use lobu_runtime::Runtime;
use serde_json::Value;

/// `bad key` is 401, `slow down` 429; every call is counted.
async fn refuse(
    State(calls): State<Arc<AtomicUsize>>,
    Json(body): Json<Value>,
) -> (StatusCode, &'static str) {
    calls.fetch_add(1, Ordering::SeqCst);
    let last = body["messages"].as_array().unwrap().last().unwrap()["content"].clone();
    match last.as_str() {
        Some("bad key") => (StatusCode::UNAUTHORIZED, "invalid api key"),
        _ => (StatusCode::TOO_MANY_REQUESTS, "rate limited"),
    }
}

#[tokio::test]
async fn a_refused_request_fails_the_run_at_once_and_a_rate_limit_is_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(refuse))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let config = OpenAiConfig::builder(format!("http://{addr}/v1"), "m")
        .build()
        .unwrap();
    let agent = OpenAiAgent::new(config).unwrap();
    let runtime = Runtime::builder(MemoryBackend::new().into_backend(), agent)
        .max_attempts(3)
        .retry_delay(Duration::from_millis(10))
        .build()
        .unwrap();
    tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.run().await }
    });
    let key = ConversationKey::parse("acme", "chat", "c1").unwrap();

    let refused = runtime
        .submit_and_wait(key.clone(), "bad key")
        .await
        .unwrap();
    assert_eq!((refused.status, refused.attempts), (RunStatus::Failed, 1));
    assert!(
        refused.error.as_deref().unwrap().contains("401"),
        "{refused:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "a 401 is not asked again");

    let limited = runtime.submit_and_wait(key, "slow down").await.unwrap();
    assert_eq!((limited.status, limited.attempts), (RunStatus::Failed, 3));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "a 429 is asked again on each attempt"
    );
    runtime.shutdown().await;
}
