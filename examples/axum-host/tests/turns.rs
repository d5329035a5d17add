//! Turns over HTTP on both stores: accept, complete, idempotency, SSE, replay, failures,
//! graceful shutdown.

mod common;

use std::time::Duration;

use common::{Api, Data, Host, Store, TestHost, segment, sse_events, test_config};
use reqwest::{Method, StatusCode};
use serde_json::json;

on_both_stores!(
    a_message_is_accepted_then_answered_with_its_turn_number,
    the_same_idempotency_key_returns_the_same_run,
    an_event_stream_post_streams_the_turn_until_it_ends,
    run_events_replay_from_the_start,
    a_failed_turn_leaves_no_trace_in_the_next_turn,
    a_tool_call_and_its_result_are_kept,
    shutdown_lets_a_running_turn_finish,
    shutdown_past_the_grace_hands_the_turn_to_the_next_server,
);

async fn a_message_is_accepted_then_answered_with_its_turn_number(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    let reply = api.say("demo", "c1", "hello there").await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(reply.json["status"], "pending");
    let run = reply.json["run_id"].as_str().unwrap().to_owned();
    assert_eq!(reply.headers["location"], format!("/v1/runs/{run}"));

    let done = api.wait_run(&run).await;
    assert_eq!(
        done,
        json!({"run_id": run, "status": "completed", "attempts": 1, "error": null, "output": null})
    );
    api.turn("demo", "c1", "and again").await;
    assert_eq!(
        api.lines("demo", "c1").await,
        [
            "user: hello there",
            "assistant: You said: hello there (turn 1)",
            "user: and again",
            "assistant: You said: and again (turn 2)",
        ]
    );
    t.finish().await;
}

async fn the_same_idempotency_key_returns_the_same_run(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    let path = format!("{}/messages", Api::conversation("demo", "retry"));
    let body = json!({"text": "only once", "idempotency_key": "client-42"});
    let first = api.post_json(&path, &body).await;
    let again = api.post_json(&path, &body).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(first.json["run_id"], again.json["run_id"]);
    let run = first.json["run_id"].as_str().unwrap();
    api.wait_run(run).await;

    // After completion the key still names the same run, and reports its status.
    let late = api.post_json(&path, &body).await;
    assert_eq!(late.json, json!({"run_id": run, "status": "completed"}));
    let other = api
        .post_json(
            &path,
            &json!({"text": "only once", "idempotency_key": "client-43"}),
        )
        .await;
    assert_ne!(other.json["run_id"], first.json["run_id"]);
    api.wait_run(other.json["run_id"].as_str().unwrap()).await;
    assert_eq!(
        api.lines("demo", "retry").await,
        [
            "user: only once",
            "assistant: You said: only once (turn 1)",
            "user: only once",
            "assistant: You said: only once (turn 2)",
        ]
    );
    t.finish().await;
}

async fn an_event_stream_post_streams_the_turn_until_it_ends(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    let path = format!("{}/messages", Api::conversation("demo", "live"));
    let response = api
        .request(Method::POST, &path)
        .header("accept", "text/event-stream")
        .json(&json!({"text": "/sleep 300"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    // The body ends by itself once the run has ended.
    let events = sse_events(&response.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"accepted"), "{names:?}");
    assert_eq!(names.get(1), Some(&"started"), "{names:?}");
    assert_eq!(names.last(), Some(&"completed"), "{names:?}");
    let output: String = events
        .iter()
        .filter(|(n, _)| n == "output")
        .map(|(_, d)| d["text"].as_str().unwrap())
        .collect();
    assert!(
        output.starts_with("[slept 250 of 300 ms]\n[slept 300 of 300 ms]\n"),
        "{output}"
    );
    assert!(
        output.ends_with("You said: /sleep 300 (turn 1)"),
        "{output}"
    );
    let entries = events.iter().filter(|(n, _)| n == "entry").count();
    assert_eq!(entries, 3, "model change, user and assistant entries");
    for (name, data) in &events {
        assert_eq!(&data["type"], name);
    }
    t.finish().await;
}

async fn run_events_replay_from_the_start(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    let run = api.submit("demo", "replay", "tell me twice").await;
    api.wait_run(&run).await;
    for _ in 0..2 {
        let response = api
            .request(Method::GET, &format!("/v1/runs/{}/events", segment(&run)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let events = sse_events(&response.text().await.unwrap());
        assert_eq!(events[0].0, "accepted");
        assert_eq!(events[0].1["run"], run.as_str());
        assert_eq!(events.last().unwrap().0, "completed");
        let words: String = events
            .iter()
            .filter(|(n, _)| n == "output")
            .map(|(_, d)| d["text"].as_str().unwrap())
            .collect();
        assert_eq!(words, "You said: tell me twice (turn 1)");
    }
    t.finish().await;
}

async fn a_failed_turn_leaves_no_trace_in_the_next_turn(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    api.turn("demo", "f", "one").await;
    let run = api.submit("demo", "f", "/fail").await;
    let failed = api.wait_run(&run).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["attempts"], 3, "every attempt was tried: {failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("/fail"),
        "{failed}"
    );
    api.turn("demo", "f", "two").await;
    assert_eq!(
        api.lines("demo", "f").await,
        [
            "user: one",
            "assistant: You said: one (turn 1)",
            "user: two",
            "assistant: You said: two (turn 2)",
        ]
    );
    t.finish().await;
}

async fn a_tool_call_and_its_result_are_kept(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    api.turn("demo", "tools", "/tool").await;
    let history = api.history("demo", "tools").await;
    let kinds: Vec<String> = history
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["type"].as_str().unwrap(),
                m["role"].as_str().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "model_change/-",
            "message/user",
            "message/assistant",
            "message/toolResult",
            "message/assistant"
        ]
    );
    let call = &history[2]["content"][1];
    assert_eq!(call["type"], "toolCall");
    assert_eq!(call["name"], "conversation_stats");
    assert_eq!(history[3]["isVerbose"], true);
    assert_eq!(
        history[3]["content"][0]["text"]
            .as_str()
            .unwrap()
            .split(';')
            .next(),
        Some("1 user messages")
    );
    assert_eq!(
        common::text_of(&history[4]["content"]),
        "You said: /tool (turn 1)"
    );
    t.finish().await;
}

async fn shutdown_lets_a_running_turn_finish(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    let run = api.submit("demo", "slow", "/sleep 1500").await;
    wait_until_running(&api, &run).await;
    let data = t.data;
    t.host.stop().await;

    // The turn finished inside the grace period: a new server finds it completed.
    let host = Host::start(test_config(&data, None)).await;
    let api = host.api();
    let done = api.wait_run(&run).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["attempts"], 1);
    host.stop().await;
    data.cleanup().await;
}

async fn shutdown_past_the_grace_hands_the_turn_to_the_next_server(store: Store) {
    let data = Data::new(store).await;
    let mut config = test_config(&data, None);
    config.settings.shutdown_grace = Duration::from_millis(300);
    let host = Host::start(config).await;
    let api = host.api();
    api.turn("demo", "long", "first").await;
    let run = api.submit("demo", "long", "/sleep 4000").await;
    wait_until_running(&api, &run).await;
    host.stop().await;

    // Cancelled after the grace period and handed back, uncounted: the next server runs it
    // again from the last completed transcript.
    let host = Host::start(test_config(&data, None)).await;
    let api = host.api();
    let done = api.wait_run(&run).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        api.lines("demo", "long").await,
        [
            "user: first",
            "assistant: You said: first (turn 1)",
            "user: /sleep 4000",
            "assistant: You said: /sleep 4000 (turn 2)",
        ]
    );
    host.stop().await;
    data.cleanup().await;
}

async fn wait_until_running(api: &Api, run: &str) {
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        let reply = api.get(&format!("/v1/runs/{}", segment(run))).await;
        if reply.json["status"] == "running" {
            return;
        }
        assert_eq!(reply.json["status"], "pending", "{reply:?}");
        assert!(tokio::time::Instant::now() < deadline, "run never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
