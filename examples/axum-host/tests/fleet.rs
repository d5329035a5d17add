//! A fleet of real processes split by role: a gateway (`LOBU_WORKERS=0`) streams what
//! worker processes (`LOBU_INTAKE=0`) execute, across a SIGKILL and a restart of everyone.

mod common;

use std::time::Duration;

use common::replica::{KEYS, Replica, borrowed, store_vars};
use common::{Store, segment, sse_events_with_ids};
use reqwest::{Method, StatusCode};
use serde_json::Value;

on_both_stores!(
    a_run_retried_after_a_sigkill_streams_both_attempts_and_replays_after_restarts,
    a_steered_message_taken_before_a_sigkill_is_answered_once_by_the_retry,
);

const KEY: &str = "alpha-key-0001";

type Vars = Vec<(&'static str, String)>;

/// The environment of a gateway and of a worker on one store: keys, a 2 s claim (a killed
/// worker's run comes back quickly) and quick retries.
async fn fleet_vars(
    store: Store,
    dir: &std::path::Path,
) -> (Vars, Vars, Option<common::pg::TestDb>) {
    let (mut vars, db) = store_vars(store, dir).await;
    vars.push(("LOBU_API_KEYS", KEYS.to_owned()));
    vars.push(("LOBU_CLAIM_TTL_MS", "2000".to_owned()));
    vars.push(("LOBU_RETRY_DELAY_MS", "50".to_owned()));
    let mut gateway_vars = vars.clone();
    gateway_vars.push(("LOBU_WORKERS", "0".to_owned()));
    vars.push(("LOBU_INTAKE", "0".to_owned()));
    (gateway_vars, vars, db)
}

async fn a_run_retried_after_a_sigkill_streams_both_attempts_and_replays_after_restarts(
    store: Store,
) {
    let dir = tempfile::tempdir().unwrap();
    let (gateway_vars, worker_vars, db) = fleet_vars(store, dir.path()).await;
    let (gateway_vars, worker_vars) = (borrowed(&gateway_vars), borrowed(&worker_vars));

    let gateway = Replica::start(&gateway_vars, dir.path()).await;
    let first_worker = Replica::start(&worker_vars, dir.path()).await;
    let api = gateway.api(Some(KEY));
    let run = api.submit("support", "fleet:1", "/sleep 3000").await;
    let events_path = format!("/v1/runs/{}/events", segment(&run));
    let stream = tokio::spawn({
        let api = api.clone();
        let path = events_path.clone();
        async move {
            let response = api.request(Method::GET, &path).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            sse_events_with_ids(&response.text().await.unwrap())
        }
    });
    // Killed once its turn has streamed something.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = api.get(&format!("/v1/runs/{}", segment(&run))).await;
        if status.json["status"] == "running" {
            tokio::time::sleep(Duration::from_millis(600)).await;
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the turn never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first_worker.kill().await;
    let second_worker = Replica::start(&worker_vars, dir.path()).await;
    let seen = tokio::time::timeout(Duration::from_secs(60), stream)
        .await
        .expect("the stream ends with the run")
        .unwrap();

    let ids: Vec<u64> = seen.iter().map(|(id, ..)| *id).collect();
    assert_eq!(ids, (0..seen.len() as u64).collect::<Vec<_>>(), "{seen:?}");
    let started: Vec<&Value> = seen
        .iter()
        .filter(|(_, name, _)| name == "started")
        .map(|(_, _, data)| &data["attempt"])
        .collect();
    assert_eq!(started, [&Value::from(1), &Value::from(2)], "{seen:?}");
    let first_output = seen.iter().find(|(_, name, _)| name == "output").unwrap();
    assert_eq!(
        first_output.2["attempt"], 1,
        "attempt 1 streamed before the kill"
    );
    let (_, last, data) = seen.last().unwrap();
    assert_eq!(
        (last.as_str(), &data["attempt"]),
        ("completed", &Value::from(2))
    );

    // Every process restarts: a fresh gateway replays the finished run, the same events.
    gateway.terminate().await;
    second_worker.terminate().await;
    let restarted = Replica::start(&gateway_vars, dir.path()).await;
    let api = restarted.api(Some(KEY));
    let response = api.request(Method::GET, &events_path).send().await.unwrap();
    let replay = sse_events_with_ids(&response.text().await.unwrap());
    assert_eq!(
        replay, seen,
        "the replay after restarts is what was seen live"
    );
    restarted.terminate().await;
    if let Some(db) = db {
        db.drop().await;
    }
}

/// The worker takes a steered message into its turn, then dies before the commit: the
/// retry on another worker is offered the message again, and it appears once, answered once.
async fn a_steered_message_taken_before_a_sigkill_is_answered_once_by_the_retry(store: Store) {
    let dir = tempfile::tempdir().unwrap();
    let (gateway_vars, worker_vars, db) = fleet_vars(store, dir.path()).await;
    let (gateway_vars, worker_vars) = (borrowed(&gateway_vars), borrowed(&worker_vars));

    let gateway = Replica::start(&gateway_vars, dir.path()).await;
    let first_worker = Replica::start(&worker_vars, dir.path()).await;
    let api = gateway.api(Some(KEY));
    let run = api.submit("support", "steer:1", "/sleep 3000").await;
    let stream = tokio::spawn({
        let api = api.clone();
        let path = format!("/v1/runs/{}/events", segment(&run));
        async move {
            let response = api.request(Method::GET, &path).send().await.unwrap();
            sse_events_with_ids(&response.text().await.unwrap())
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while api.get(&format!("/v1/runs/{}", segment(&run))).await.json["status"] != "running" {
        assert!(tokio::time::Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let path = format!(
        "{}/messages",
        common::Api::conversation("support", "steer:1")
    );
    let body = serde_json::json!({ "text": "extra", "multitask_strategy": "steer" });
    let reply = api.post_json(&path, &body).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    let steered = reply.json["run_id"].as_str().unwrap().to_owned();
    // The demo agent takes it at its next 250 ms step; then the worker dies.
    tokio::time::sleep(Duration::from_millis(800)).await;
    first_worker.kill().await;
    let second_worker = Replica::start(&worker_vars, dir.path()).await;
    let seen = tokio::time::timeout(Duration::from_secs(60), stream)
        .await
        .expect("the stream ends with the run")
        .unwrap();
    let taken: Vec<&Value> = seen
        .iter()
        .filter(|(_, name, _)| name == "steered")
        .map(|(_, _, data)| &data["attempt"])
        .collect();
    assert_eq!(taken, [&Value::from(1), &Value::from(2)], "{seen:?}");
    let (_, last, _) = seen.last().unwrap();
    assert_eq!(last, "completed", "{seen:?}");
    let done = api.wait_run(&steered).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["output"]["steered_into"], run.as_str(), "{done}");
    let lines = api.lines("support", "steer:1").await;
    assert_eq!(
        lines.iter().filter(|l| *l == "user: extra").count(),
        1,
        "{lines:?}"
    );
    let answers: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("assistant:"))
        .collect();
    assert_eq!(answers.len(), 1, "{lines:?}");
    assert!(answers[0].contains("Then you said: extra."), "{lines:?}");
    gateway.terminate().await;
    second_worker.terminate().await;
    if let Some(db) = db {
        db.drop().await;
    }
}
