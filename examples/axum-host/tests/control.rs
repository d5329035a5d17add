//! Run control over HTTP: the cancel route.

mod common;

use std::time::Duration;

use common::{Store, TestHost, segment};
use reqwest::StatusCode;
use serde_json::json;

on_both_stores!(a_running_turn_is_cancelled_over_http_and_a_finished_one_is_a_409);

async fn a_running_turn_is_cancelled_over_http_and_a_finished_one_is_a_409(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    let done = api.submit("demo", "cancel", "hello").await;
    api.wait_run(&done).await;
    let running = api.submit("demo", "cancel", "/sleep 20000").await;
    let status = format!("/v1/runs/{}", segment(&running));
    loop {
        if api.get(&status).await.json["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancel = |run: &str| format!("/v1/runs/{}/cancel", segment(run));
    let reply = api.post_json(&cancel(&running), &json!({})).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    assert_eq!(reply.json["status"], "cancelling");
    let ended = api.get(&format!("{status}?wait=30")).await;
    assert_eq!(ended.json["status"], "cancelled", "{ended:?}");

    let finished = api.post_json(&cancel(&done), &json!({})).await;
    assert_eq!(finished.status, StatusCode::CONFLICT, "{finished:?}");
    assert_eq!(finished.json["status"], "completed");
    assert!(finished.error().contains("already ended"), "{finished:?}");
    let unknown = api.post_json(&cancel("no-such-run"), &json!({})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let pending_first = api.submit("demo", "queue", "/sleep 3000").await;
    let pending = api.submit("demo", "queue", "never").await;
    let reply = api.post_json(&cancel(&pending), &json!({})).await;
    assert_eq!(
        (reply.status, &reply.json["status"]),
        (StatusCode::OK, &json!("cancelled"))
    );
    api.post_json(&cancel(&pending_first), &json!({})).await;
    let lines = api.lines("demo", "queue").await;
    assert!(lines.iter().all(|l| !l.contains("never")), "{lines:?}");
    t.finish().await;
}
