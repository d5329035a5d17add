//! The agent over https against a local stand-in whose certificate a test CA signed.

mod common;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use common::{TestPki, https_stand_in, lines, runtime, turn};
use lobu_core::{ConversationKey, ErrorKind, RunStatus};
use lobu_openai::{OpenAiAgent, OpenAiConfig, OpenAiError};
use serde_json::{Value, json};

/// What the stand-in received: the Authorization header and the request body.
type Seen = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// Answers `Echo: <last user text>` in three streamed pieces, then the usage and `[DONE]`.
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
    let mut stream = String::new();
    for piece in ["Echo", ": ", &last] {
        let chunk = json!({"choices": [{"index": 0, "delta": {"content": piece}}]});
        stream.push_str(&format!("data: {chunk}\n\n"));
    }
    let usage = json!({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3}});
    stream.push_str(&format!("data: {usage}\n\ndata: [DONE]\n\n"));
    ([("content-type", "text/event-stream")], stream).into_response()
}

async fn echo_over_https(pki: &TestPki) -> (String, Seen) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(completions))
        .with_state(seen.clone());
    (https_stand_in(app, pki).await, seen)
}

fn key() -> ConversationKey {
    ConversationKey::parse("acme", "chat", "c1").unwrap()
}

#[tokio::test]
async fn an_agent_trusting_the_test_ca_streams_turns_over_https() {
    let pki = TestPki::new("lobu test CA");
    let (base_url, seen) = echo_over_https(&pki).await;
    let config = OpenAiConfig::builder(&base_url, "stand-in-1")
        .api_key("sk-test")
        .extra_root_pem(pki.ca_pem.as_bytes())
        .build()
        .unwrap();
    let runtime = runtime(OpenAiAgent::new(config).unwrap());
    let key = key();

    let first = turn(&runtime, &key, "first question").await;
    assert_eq!(
        first.record.status,
        RunStatus::Completed,
        "{:?}",
        first.record
    );
    assert_eq!(first.streamed, "Echo: first question");
    let second = turn(&runtime, &key, "second question").await;
    assert_eq!(
        second.record.status,
        RunStatus::Completed,
        "{:?}",
        second.record
    );
    assert_eq!(second.streamed, "Echo: second question");

    assert_eq!(
        lines(&runtime, &key).await,
        [
            "user: first question",
            "assistant: Echo: first question",
            "user: second question",
            "assistant: Echo: second question",
        ]
    );
    let stats = runtime.stats(&key).await.unwrap();
    let stats = serde_json::to_value(&stats).unwrap();
    assert_eq!(stats["currentModel"], "openai-compatible/stand-in-1");
    assert_eq!(stats["totalInputTokens"], 22);
    assert_eq!(stats["totalOutputTokens"], 6);

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
    runtime.shutdown().await;
}

#[tokio::test]
async fn an_agent_without_the_test_ca_fails_the_turn_naming_the_certificate_problem() {
    let pki = TestPki::new("lobu test CA");
    let (base_url, seen) = echo_over_https(&pki).await;
    let other = TestPki::new("another CA");
    for config in [
        OpenAiConfig::builder(&base_url, "stand-in-1").build(),
        OpenAiConfig::builder(&base_url, "stand-in-1")
            .extra_root_pem(other.ca_pem.as_bytes())
            .build(),
    ] {
        let runtime = runtime(OpenAiAgent::new(config.unwrap()).unwrap());
        let key = key();
        let outcome = turn(&runtime, &key, "hello").await;
        assert_eq!(outcome.record.status, RunStatus::Failed);
        let error = outcome.record.error.unwrap_or_default();
        assert!(
            error.contains("sending the request to the model endpoint")
                && error.contains("invalid peer certificate")
                && error.contains("UnknownIssuer"),
            "{error}"
        );
        assert_eq!(outcome.streamed, "");
        assert!(lines(&runtime, &key).await.is_empty());
        runtime.shutdown().await;
    }
    assert!(seen.lock().unwrap().is_empty(), "no request got through");
}

#[test]
fn a_config_with_a_bad_base_url_model_or_root_is_refused() {
    let refused = |builder: lobu_openai::OpenAiConfigBuilder| builder.build().unwrap_err();
    let cases = [
        refused(OpenAiConfig::builder("not a url", "m")),
        refused(OpenAiConfig::builder("ftp://models.example/v1", "m")),
        refused(OpenAiConfig::builder("https://models.example/v1", " ")),
        refused(OpenAiConfig::builder("https://models.example/v1", "m").extra_root_pem("no pem")),
        refused(
            OpenAiConfig::builder("https://models.example/v1", "m")
                .extra_root_pem("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"),
        ),
    ];
    assert!(
        matches!(cases[0], OpenAiError::BaseUrl(_)),
        "{:?}",
        cases[0]
    );
    assert!(
        matches!(&cases[1], OpenAiError::BaseUrlScheme { scheme } if scheme == "ftp"),
        "{:?}",
        cases[1]
    );
    assert!(
        matches!(cases[2], OpenAiError::EmptyModel),
        "{:?}",
        cases[2]
    );
    assert!(
        matches!(cases[3], OpenAiError::NoRootCertificate),
        "{:?}",
        cases[3]
    );
    assert!(
        matches!(cases[4], OpenAiError::RootPem(_)),
        "{:?}",
        cases[4]
    );
    for error in cases {
        let core = lobu_core::Error::from(error);
        assert!(core.is(ErrorKind::InvalidInput), "{core}");
        assert!(
            std::error::Error::source(&core).is_some(),
            "the source is kept"
        );
    }
}

#[test]
fn a_config_keeps_its_key_out_of_debug_and_trims_the_base() {
    let config = OpenAiConfig::builder("https://models.example/v1/", "m")
        .api_key("sk-secret")
        .build()
        .unwrap();
    assert_eq!(config.base_url(), "https://models.example/v1");
    assert!(config.has_api_key());
    assert!(!format!("{config:?}").contains("sk-secret"));
}
