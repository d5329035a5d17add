//! Another org's run ids and conversations over HTTP: runs answer exactly as unknown ones
//! (404, the same message, nothing of the owner in it), the same conversation path shows the
//! caller's own (empty) conversation, and nothing the other org does changes a byte of the
//! owner's files or rows. Limits and cursors out of range change nothing either.

mod common;

use common::dump::{of_org, settled_store_bytes, store_bytes};
use common::{Api, Store, TestHost, segment};
use lobu_core::testkit::hostile::assert_unchanged;
use reqwest::StatusCode;
use serde_json::json;

const KEYS: &str = "alpha-key-0001=acme,beta-key-0002=globex";

async fn another_orgs_runs_and_conversations_are_404_or_empty_and_untouched(store: Store) {
    let t = TestHost::start_with_keys(store, Some(KEYS)).await;
    let alpha = t.api_with_key("alpha-key-0001");
    let beta = t.api_with_key("beta-key-0002");
    let body = json!({"text": "alpha's secret", "idempotency_key": "alpha-key-1"});
    let path = format!("{}/messages", Api::conversation("support", "telegram:7"));
    let submitted = alpha.post_json(&path, &body).await;
    let run = submitted.json["run_id"].as_str().unwrap().to_owned();
    assert_eq!(alpha.wait_run(&run).await["status"], "completed");
    let before = of_org(&settled_store_bytes(&t).await, "acme");
    assert!(!before.is_empty(), "alpha's data is in the dump");

    let unknown = "01900000-0000-7000-8000-000000000000";
    for (path, unknown_path) in [
        (format!("/v1/runs/{run}"), format!("/v1/runs/{unknown}")),
        (
            format!("/v1/runs/{run}/events"),
            format!("/v1/runs/{unknown}/events"),
        ),
        (
            format!("/v1/runs/{run}/events?key=beta-key-0002"),
            format!("/v1/runs/{unknown}/events?key=beta-key-0002"),
        ),
    ] {
        let theirs = beta.get(&path).await;
        let none = beta.get(&unknown_path).await;
        assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            theirs.error().replace(&run, "<id>"),
            none.error().replace(unknown, "<id>"),
            "another org's run reads exactly like an unknown one"
        );
        assert!(!theirs.error().contains("acme"), "{}", theirs.error());
    }
    // The same conversation path is beta's own, empty conversation.
    let conversation = Api::conversation("support", "telegram:7");
    let messages = beta.get(&format!("{conversation}/session/messages")).await;
    assert_eq!(messages.status, StatusCode::OK);
    assert_eq!(messages.json["messages"], json!([]));
    assert_eq!(messages.json["sessionId"], "none");
    let stats = beta.get(&format!("{conversation}/session/stats")).await;
    assert_eq!(stats.json["messageCount"], 0);
    let listed = beta.get("/v1/agents/support/conversations").await;
    assert_eq!(listed.json["conversations"], json!([]));
    // Beta resets it, writes to it, reuses alpha's idempotency key: alpha is untouched.
    assert_eq!(
        beta.delete(&format!("{conversation}/session")).await.json,
        json!({"deleted": 0})
    );
    let theirs = beta.post_json(&path, &body).await;
    assert_eq!(theirs.status, StatusCode::ACCEPTED);
    let their_run = theirs.json["run_id"].as_str().unwrap().to_owned();
    assert_ne!(their_run, run, "an idempotency key is scoped to its org");
    beta.wait_run(&their_run).await;
    assert_eq!(
        beta.delete(&format!("{conversation}/session")).await.status,
        StatusCode::OK
    );
    let after = store_bytes(&t.data).await;
    assert!(
        !of_org(&after, "globex").is_empty(),
        "beta's writes are in the dump"
    );
    assert_unchanged(&before, &of_org(&after, "acme"), "another org's requests");
    assert_eq!(alpha.lines("support", "telegram:7").await.len(), 2);
    t.finish().await;
}

async fn limits_and_cursors_out_of_range_are_400_and_change_nothing(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    api.turn("demo", "c1", "one").await;
    let before = settled_store_bytes(&t).await;
    let messages = format!("{}/session/messages", Api::conversation("demo", "c1"));
    let long_cursor = segment(&"c".repeat(513));
    let queries = [
        "limit=0",
        "limit=201",
        "limit=-1",
        "limit=18446744073709551616",
        "limit=99999999999999999999999999",
        "limit=1e2",
        "limit=0x10",
        "limit=5.0",
        "limit=%00",
        "limit=%FF",
        "limit=1&limit=2",
        "cursor=a%00b",
        "cursor=a%0Ab",
        "cursor=%FF",
        &format!("cursor={long_cursor}"),
    ];
    for base in [messages.as_str(), "/v1/agents/demo/conversations"] {
        for query in queries {
            let reply = api.get(&format!("{base}?{query}")).await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{base}?{query}: {reply:?}"
            );
            assert!(!reply.error().is_empty());
        }
    }
    assert_unchanged(&before, &store_bytes(&t.data).await, "limits out of range");
    t.finish().await;
}

on_both_stores!(
    another_orgs_runs_and_conversations_are_404_or_empty_and_untouched,
    limits_and_cursors_out_of_range_are_400_and_change_nothing,
);
