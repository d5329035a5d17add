//! The `openai` feature's agent against a local stand-in for an OpenAI-compatible endpoint.
#![cfg(feature = "openai")]

mod common;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::{Data, Host, Store, sse_events, test_config};
use example_axum_host::LlmConfig;
use reqwest::Method;
use serde_json::{Value, json};

/// What the stand-in received: the Authorization header and the request body.
type Seen = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// Answers `Echo: <last user text>` in three streamed pieces, or 500 for the text `boom`;
/// the text `slow` waits a second before answering.
async fn completions(
    State(seen): State<Seen>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    seen.lock().unwrap().push((auth, body.clone()));
    let last = body["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    if last == "boom" {
        return (StatusCode::INTERNAL_SERVER_ERROR, "model overloaded").into_response();
    }
    if last == "slow" {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    let pieces = ["Echo", ": ", &last];
    let mut stream = String::new();
    for piece in pieces {
        let chunk = json!({"choices": [{"index": 0, "delta": {"content": piece}}]});
        stream.push_str(&format!("data: {chunk}\n\n"));
    }
    let usage = json!({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3}});
    stream.push_str(&format!("data: {usage}\n\ndata: [DONE]\n\n"));
    ([("content-type", "text/event-stream")], stream).into_response()
}

async fn stand_in() -> (String, Seen) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(completions))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_compatible_endpoint_answers_with_the_whole_history() {
    let (base_url, seen) = stand_in().await;
    let data = Data::new(Store::File).await;
    let mut config = test_config(&data, None);
    config.llm = Some(LlmConfig {
        base_url,
        model: "stand-in-1".to_owned(),
        api_key: Some("sk-test".to_owned()),
        ca_pem: None,
    });
    config.settings.max_attempts = 1;
    let host = Host::start(config).await;
    let api = host.api();

    api.turn("chat", "c1", "first question").await;
    let path = format!("{}/messages", common::Api::conversation("chat", "c1"));
    let response = api
        .request(Method::POST, &path)
        .header("accept", "text/event-stream")
        .json(&json!({"text": "second question"}))
        .send()
        .await
        .unwrap();
    let events = sse_events(&response.text().await.unwrap());
    // The model's three deltas, in order (stored events may join pieces that came together).
    let streamed: String = events
        .iter()
        .filter(|(n, _)| n == "output")
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, "Echo: second question");
    assert_eq!(events.last().unwrap().0, "completed");

    assert_eq!(
        api.lines("chat", "c1").await,
        [
            "user: first question",
            "assistant: Echo: first question",
            "user: second question",
            "assistant: Echo: second question",
        ]
    );
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    let (auth, body) = &requests[1];
    assert_eq!(auth.as_deref(), Some("Bearer sk-test"));
    assert_eq!(body["model"], "stand-in-1");
    assert_eq!(body["stream"], true);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "Echo: first question"},
            {"role": "user", "content": "second question"},
        ])
    );
    let stats = api
        .get(&format!(
            "{}/session/stats",
            common::Api::conversation("chat", "c1")
        ))
        .await;
    assert_eq!(stats.json["currentModel"], "openai-compatible/stand-in-1");
    assert_eq!(stats.json["totalInputTokens"], 22);
    assert_eq!(stats.json["totalOutputTokens"], 6);

    // An endpoint error fails the turn and leaves the history as it was.
    let run = api.submit("chat", "c1", "boom").await;
    let failed = api.wait_run(&run).await;
    assert_eq!(failed["status"], "failed");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("500") && error.contains("model overloaded"),
        "{error}"
    );
    assert_eq!(api.lines("chat", "c1").await.len(), 4);
    host.stop().await;
    data.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_steered_into_a_running_turn_is_answered_by_a_second_model_call_in_it() {
    let (base_url, seen) = stand_in().await;
    let data = Data::new(Store::File).await;
    let mut config = test_config(&data, None);
    config.llm = Some(LlmConfig {
        base_url,
        model: "stand-in-1".to_owned(),
        api_key: None,
        ca_pem: None,
    });
    let host = Host::start(config).await;
    let api = host.api();

    let main = api.submit("chat", "steer", "slow").await;
    // The model takes a second over `slow`: the steered message waits behind the turn.
    let path = format!("{}/messages", common::Api::conversation("chat", "steer"));
    let steered = api
        .post_json(
            &path,
            &json!({"text": "and also this", "multitask_strategy": "steer"}),
        )
        .await;
    let steered = steered.json["run_id"].as_str().unwrap().to_owned();
    assert_eq!(api.wait_run(&main).await["status"], "completed");
    let taken = api.wait_run(&steered).await;
    assert_eq!(taken["status"], "completed", "{taken}");
    assert_eq!(taken["output"]["steered_into"], main.as_str(), "{taken}");
    assert_eq!(
        api.lines("chat", "steer").await,
        [
            "user: slow",
            "assistant: Echo: slow",
            "user: and also this",
            "assistant: Echo: and also this",
        ]
    );
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "one turn, two model calls");
    assert_eq!(
        requests[1].1["messages"],
        json!([
            {"role": "user", "content": "slow"},
            {"role": "assistant", "content": "Echo: slow"},
            {"role": "user", "content": "and also this"},
        ])
    );
    host.stop().await;
    data.cleanup().await;
}
