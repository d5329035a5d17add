//! `GET /metrics`: the runtime's metrics in Prometheus' format, without a key.

mod common;

use common::{Data, Host, Store, test_config};
use reqwest::StatusCode;

#[tokio::test]
async fn metrics_after_a_turn_show_its_histograms_and_outcome_without_a_key() {
    let data = Data::new(Store::File).await;
    let host = Host::start(test_config(&data, Some("key-a=acme"))).await;
    let api = host.api_with_key("key-a");
    api.turn("metrics-bot", "c1", "hello").await;

    let response = host
        .api()
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    for expected in [
        "# TYPE lobu_turn_seconds histogram",
        "lobu_turn_seconds_bucket{agent=\"metrics-bot\"",
        "lobu_queue_wait_seconds_bucket",
        "lobu_first_output_seconds_bucket",
        "outcome=\"completed\"",
        "# HELP lobu_persist_seconds",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    // No org label unless the settings turn it on.
    assert!(!text.contains("org=\"acme\""), "{text}");
    host.stop().await;
    data.cleanup().await;
}
