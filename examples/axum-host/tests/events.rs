//! Run events over HTTP: every SSE event has an id, a stream resumes after any id
//! (`Last-Event-ID` or `?after=`), `?wait=` answers when the run ends, and a gateway-only
//! server streams runs that a worker-only server executes.

mod common;

use std::time::{Duration, Instant};

use common::{Api, Data, Host, Store, TestHost, segment, sse_events_with_ids, test_config};
use reqwest::{Method, StatusCode};
use serde_json::Value;

on_both_stores!(
    every_event_has_an_id_and_a_resumed_stream_sends_exactly_the_rest,
    bad_resume_points_and_waits_are_400s,
    a_status_with_wait_answers_when_the_run_ends,
    a_gateway_only_server_streams_a_run_a_worker_only_server_executes,
);

async fn stream(api: &Api, run: &str, resume: Option<(&str, &str)>) -> Vec<(u64, String, Value)> {
    let mut path = format!("/v1/runs/{}/events", segment(run));
    let mut request = api.request(Method::GET, &path);
    if let Some(("query", after)) = resume {
        path.push_str(&format!("?after={after}"));
        request = api.request(Method::GET, &path);
    } else if let Some((header, value)) = resume {
        request = request.header(header, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    sse_events_with_ids(&response.text().await.unwrap())
}

async fn every_event_has_an_id_and_a_resumed_stream_sends_exactly_the_rest(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    let run = api.submit("demo", "resume", "say a few words please").await;
    api.wait_run(&run).await;
    let all = stream(&api, &run, None).await;
    let ids: Vec<u64> = all.iter().map(|(id, ..)| *id).collect();
    assert_eq!(ids, (0..all.len() as u64).collect::<Vec<_>>(), "{all:?}");
    assert_eq!(all[0].1, "accepted");
    assert_eq!(all.last().unwrap().1, "completed");
    for (id, name, data) in &all {
        assert_eq!(
            (&data["seq"], &data["type"]),
            (&Value::from(*id), &Value::from(name.as_str()))
        );
    }
    for cut in 0..all.len() {
        let text = cut.to_string();
        let by_header = stream(&api, &run, Some(("last-event-id", &text))).await;
        assert_eq!(by_header, all[cut + 1..], "Last-Event-ID: {cut}");
        let by_query = stream(&api, &run, Some(("query", &text))).await;
        assert_eq!(by_query, all[cut + 1..], "?after={cut}");
    }
    // An empty Last-Event-ID means none (the SSE spec): the whole stream.
    assert_eq!(stream(&api, &run, Some(("last-event-id", ""))).await, all);
    t.finish().await;
}

async fn bad_resume_points_and_waits_are_400s(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    let run = api.submit("demo", "bad", "hello").await;
    let events = format!("/v1/runs/{}/events", segment(&run));
    for bad in ["abc", "-1", "1.5", "99999999999999999999999"] {
        let reply = api
            .send(
                api.request(Method::GET, &events)
                    .header("last-event-id", bad),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "Last-Event-ID {bad}: {reply:?}"
        );
        let reply = api.get(&format!("{events}?after={bad}")).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "?after={bad}: {reply:?}"
        );
    }
    let status = format!("/v1/runs/{}", segment(&run));
    for bad in ["abc", "-1", "61", "1e3"] {
        let reply = api.get(&format!("{status}?wait={bad}")).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "?wait={bad}: {reply:?}"
        );
        assert!(reply.error().contains("wait"), "{reply:?}");
    }
    let unknown = api.get("/v1/runs/no-such-run?wait=1").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    api.wait_run(&run).await;
    t.finish().await;
}

async fn a_status_with_wait_answers_when_the_run_ends(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    let run = api.submit("demo", "wait", "/sleep 700").await;
    let started = Instant::now();
    let reply = api
        .get(&format!("/v1/runs/{}?wait=30", segment(&run)))
        .await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json["status"], "completed", "{reply:?}");
    assert!(
        took >= Duration::from_millis(500),
        "answered before the run ended: {took:?}"
    );
    assert!(
        took < Duration::from_secs(25),
        "waited out the whole wait: {took:?}"
    );

    // A run that does not end within the wait: the answer comes after the wait, unfinished.
    let slow = api.submit("demo", "wait", "/sleep 5000").await;
    let started = Instant::now();
    let reply = api
        .get(&format!("/v1/runs/{}?wait=1", segment(&slow)))
        .await;
    assert!(
        matches!(reply.json["status"].as_str(), Some("pending" | "running")),
        "{reply:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    api.wait_run(&slow).await;
    t.finish().await;
}

async fn a_gateway_only_server_streams_a_run_a_worker_only_server_executes(store: Store) {
    let data = Data::new(store).await;
    let mut gateway_config = test_config(&data, None);
    gateway_config.workers = false;
    // A minute between backstop reads: the stream must come from the store's wake-ups.
    gateway_config.settings.status_poll_interval = Duration::from_secs(60);
    let mut worker_config = test_config(&data, None);
    worker_config.intake = false;
    let gateway = Host::start(gateway_config).await;
    let api = gateway.api();
    let run = api.submit("demo", "split", "/sleep 300").await;
    let events = tokio::spawn({
        let api = api.clone();
        let run = run.clone();
        async move { stream(&api, &run, None).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = api.get(&format!("/v1/runs/{}", segment(&run))).await;
    assert_eq!(
        reply.json["status"], "pending",
        "the gateway runs no turn: {reply:?}"
    );

    let worker = Host::start(worker_config).await;
    let on_worker = worker
        .api()
        .get(&format!("/v1/runs/{}", segment(&run)))
        .await;
    assert_eq!(
        on_worker.status,
        StatusCode::NOT_FOUND,
        "a worker-only server has no API"
    );
    let live = worker.api().get("/health/live").await;
    assert_eq!(live.status, StatusCode::OK);
    let seen = tokio::time::timeout(Duration::from_secs(30), events)
        .await
        .expect("the gateway's stream ends with the run")
        .unwrap();
    let names: Vec<&str> = seen.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"accepted"));
    assert!(
        names.contains(&"started") && names.contains(&"output"),
        "{names:?}"
    );
    assert_eq!(names.last(), Some(&"completed"), "{names:?}");
    worker.stop().await;
    gateway.stop().await;
    data.cleanup().await;
}
