//! Run control over HTTP: the cancel route and `multitask_strategy`.

mod common;

use std::time::Duration;

use common::{Store, TestHost, segment};
use reqwest::StatusCode;
use serde_json::json;

on_both_stores!(
    a_running_turn_is_cancelled_over_http_and_a_finished_one_is_a_409,
    each_multitask_strategy_does_what_it_says_over_http,
);

/// Post `text` with `strategy`; returns the reply.
async fn say_with(
    api: &common::Api,
    conversation: &str,
    text: &str,
    strategy: &str,
) -> common::Reply {
    let path = format!(
        "{}/messages",
        common::Api::conversation("demo", conversation)
    );
    let body = json!({ "text": text, "multitask_strategy": strategy });
    api.post_json(&path, &body).await
}

/// Wait until the run is `running`.
async fn running(api: &common::Api, run: &str) {
    let status = format!("/v1/runs/{}", segment(run));
    while api.get(&status).await.json["status"] != "running" {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn run_of(reply: &common::Reply) -> String {
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    reply.json["run_id"].as_str().expect("run_id").to_owned()
}

async fn each_multitask_strategy_does_what_it_says_over_http(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    let unknown = say_with(&api, "mt", "hi", "shove").await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{unknown:?}");
    assert!(unknown.error().contains("unknown multitask strategy"));

    // reject: 409 naming the running run, nothing queued.
    let slow = api.submit("demo", "mt", "/sleep 20000").await;
    running(&api, &slow).await;
    let rejected = say_with(&api, "mt", "not now", "reject").await;
    assert_eq!(rejected.status, StatusCode::CONFLICT, "{rejected:?}");
    assert!(rejected.error().contains(&slow), "{rejected:?}");

    // steer: the demo agent takes it between /sleep steps, in the same turn.
    let steered = run_of(&say_with(&api, "mt", "also this", "steer").await);
    // interrupt: the sleeping turn (which took the steer) is cancelled, the new one runs.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let instead = run_of(&say_with(&api, "mt", "instead", "interrupt").await);
    let stopped = api
        .get(&format!("/v1/runs/{}?wait=30", segment(&slow)))
        .await;
    assert_eq!(stopped.json["status"], "cancelled", "{stopped:?}");
    assert!(stopped.json["error"].as_str().unwrap().contains(&instead));
    assert_eq!(api.wait_run(&instead).await["status"], "completed");
    // The cancelled turn's commit never landed, so the steered message it took runs on its own.
    assert_eq!(api.wait_run(&steered).await["status"], "completed");
    let lines = api.lines("demo", "mt").await;
    assert!(
        lines.iter().all(|l| !l.contains("/sleep 20000")),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.contains("not now")), "{lines:?}");
    assert_eq!(
        lines.iter().filter(|l| *l == "user: also this").count(),
        1,
        "{lines:?}"
    );

    // steer into a turn that completes: one turn answers both.
    let main = api.submit("demo", "mt2", "/sleep 1500").await;
    running(&api, &main).await;
    let taken = run_of(&say_with(&api, "mt2", "and this", "steer").await);
    assert_eq!(api.wait_run(&main).await["status"], "completed");
    let done = api.wait_run(&taken).await;
    assert_eq!(done["output"]["steered_into"], main.as_str(), "{done}");
    let lines = api.lines("demo", "mt2").await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[1], "user: and this");
    assert!(lines[2].contains("Then you said: and this."), "{lines:?}");

    // rollback: the running turn and the queued one are cancelled.
    let slow = api.submit("demo", "mt3", "/sleep 20000").await;
    running(&api, &slow).await;
    let queued = api.submit("demo", "mt3", "queued").await;
    let over = run_of(&say_with(&api, "mt3", "start over", "rollback").await);
    assert_eq!(api.wait_run(&over).await["status"], "completed");
    for gone in [&slow, &queued] {
        assert_eq!(api.wait_run(gone).await["status"], "cancelled");
    }
    let lines = api.lines("demo", "mt3").await;
    assert_eq!(lines[0], "user: start over", "{lines:?}");
    t.finish().await;
}

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
