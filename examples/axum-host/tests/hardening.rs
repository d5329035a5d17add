//! HTTP hardening: a bound on one org's open event streams, CORS off unless configured.

mod common;

use std::time::Duration;

use common::{Api, Data, Host, PATIENCE, Store, test_config};
use reqwest::StatusCode;
use reqwest::header::{ACCESS_CONTROL_ALLOW_ORIGIN, ORIGIN};

on_both_stores!(
    an_orgs_streams_past_the_bound_are_429_and_a_closed_one_frees_its_slot,
    cors_is_off_by_default_and_answers_only_the_configured_origins,
);

async fn an_orgs_streams_past_the_bound_are_429_and_a_closed_one_frees_its_slot(store: Store) {
    let data = Data::new(store).await;
    let mut config = test_config(&data, Some("key-a=acme,key-b=globex"));
    config.max_streams_per_org = 2;
    let host = Host::start(config).await;
    let (acme, globex) = (host.api_with_key("key-a"), host.api_with_key("key-b"));
    let run = acme.submit("demo", "slow", "/sleep 5000").await;
    let open = |api: &Api| {
        let request = api
            .request(reqwest::Method::GET, &format!("/v1/runs/{run}/events"))
            .header("accept", "text/event-stream");
        async move { request.send().await.expect("a stream request") }
    };
    let first = open(&acme).await;
    let second = open(&acme).await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let refused = open(&acme).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("2 event streams"),
        "{body}"
    );
    // A message that asks for a stream is refused before it is submitted.
    let posted = acme
        .send(
            acme.request(
                reqwest::Method::POST,
                &format!("{}/messages", Api::conversation("demo", "other")),
            )
            .header("accept", "text/event-stream")
            .json(&serde_json::json!({"text": "hi"})),
        )
        .await;
    assert_eq!(posted.status, StatusCode::TOO_MANY_REQUESTS, "{posted:?}");
    assert!(
        acme.history("demo", "other").await.is_empty(),
        "nothing was submitted"
    );
    // Another org has its own bound.
    assert_eq!(
        open(&globex).await.status(),
        StatusCode::NOT_FOUND,
        "not globex's run"
    );
    drop(first);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let again = open(&acme).await;
        if again.status() == StatusCode::OK {
            break;
        }
        assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream's slot never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(second);
    host.stop().await;
    data.cleanup().await;
}

async fn cors_is_off_by_default_and_answers_only_the_configured_origins(store: Store) {
    let data = Data::new(store).await;
    let preflight = |api: &Api, origin: &str| {
        let request = api
            .request(
                reqwest::Method::OPTIONS,
                &format!("{}/messages", Api::conversation("demo", "c1")),
            )
            .header(ORIGIN, origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            );
        async move { request.send().await.expect("a preflight") }
    };
    let host = Host::start(test_config(&data, None)).await;
    let off = preflight(&host.api(), "https://app.example.com").await;
    assert!(
        off.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
        "off by default"
    );
    host.stop().await;

    let mut config = test_config(&data, None);
    config.cors_origins = vec!["https://app.example.com".parse().unwrap()];
    let host = Host::start(config).await;
    let allowed = preflight(&host.api(), "https://app.example.com").await;
    assert!(allowed.status().is_success(), "{allowed:?}");
    assert_eq!(
        allowed.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(),
        "https://app.example.com"
    );
    let other = preflight(&host.api(), "https://evil.example.com").await;
    assert!(
        other.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
        "{other:?}"
    );
    let reply = host.api().say("demo", "c1", "hello").await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    host.stop().await;
    data.cleanup().await;
}
