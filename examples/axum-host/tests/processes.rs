//! The real binary as separate processes: several replicas on one PostgreSQL database,
//! SIGTERM, and start-up errors.

mod common;

use std::time::Duration;

use common::replica::{KEYS, Replica, borrowed, run_to_exit, store_vars};
use common::{PATIENCE, Store};

on_both_stores!(
    two_processes_on_one_store_serve_one_conversation_in_order,
    sigterm_lets_the_running_turn_finish_and_exits_cleanly,
);

async fn two_processes_on_one_store_serve_one_conversation_in_order(store: Store) {
    let dir = tempfile::tempdir().unwrap();
    let (mut vars, db) = store_vars(store, dir.path()).await;
    vars.push(("LOBU_API_KEYS", KEYS.to_owned()));
    vars.push(("LOBU_DEMO_WORD_DELAY_MS", "1".to_owned()));
    let vars = borrowed(&vars);
    let (a, b) = tokio::join!(
        Replica::start(&vars, dir.path()),
        Replica::start(&vars, dir.path())
    );
    let apis = [a.api(Some("alpha-key-0001")), b.api(Some("alpha-key-0001"))];

    // Submitted one after another, alternating replicas: they run in submission order.
    let mut runs = Vec::new();
    for i in 1..=8 {
        let api = &apis[i % 2];
        runs.push(
            api.submit("support", "shared:1", &format!("message {i}"))
                .await,
        );
    }
    // Submitted at once from both replicas: each runs exactly once, one at a time.
    let concurrent = futures::future::join_all((9..=14).map(|i| {
        let api = apis[i % 2].clone();
        async move {
            api.submit("support", "shared:1", &format!("message {i}"))
                .await
        }
    }))
    .await;
    runs.extend(concurrent);
    for (i, run) in runs.iter().enumerate() {
        let done = apis[i % 2].wait_run(run).await;
        assert_eq!(done["status"], "completed", "{done}");
    }

    let lines = apis[0].lines("support", "shared:1").await;
    assert_eq!(
        lines,
        apis[1].lines("support", "shared:1").await,
        "both replicas read the same"
    );
    assert_eq!(lines.len(), 28, "{lines:#?}");
    let mut seen = Vec::new();
    for (turn, pair) in lines.chunks(2).enumerate() {
        let text = pair[0]
            .strip_prefix("user: ")
            .expect("a user message first");
        assert_eq!(
            pair[1],
            format!("assistant: You said: {text} (turn {})", turn + 1)
        );
        seen.push(text.to_owned());
    }
    let sequential: Vec<String> = (1..=8).map(|i| format!("message {i}")).collect();
    assert_eq!(seen[..8], sequential[..], "sequential submits ran in order");
    seen.sort_unstable();
    let mut expected: Vec<String> = (1..=14).map(|i| format!("message {i}")).collect();
    expected.sort_unstable();
    assert_eq!(seen, expected, "every turn exactly once");

    for replica in [a, b] {
        let (status, log) = replica.terminate().await;
        assert!(status.success(), "{status}: {log}");
    }
    if let Some(db) = db {
        db.drop().await;
    }
}

async fn sigterm_lets_the_running_turn_finish_and_exits_cleanly(store: Store) {
    let dir = tempfile::tempdir().unwrap();
    let (vars, db) = store_vars(store, dir.path()).await;
    let vars = borrowed(&vars);
    let replica = Replica::start(&vars, dir.path()).await;
    let api = replica.api(None);
    let run = api.submit("demo", "slow", "/sleep 1500").await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while api.get(&format!("/v1/runs/{run}")).await.json["status"] != "running" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, log) = replica.terminate().await;
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("SIGTERM received"), "{log}");

    let replica = Replica::start(&vars, dir.path()).await;
    let done = replica.api(None).wait_run(&run).await;
    assert_eq!(
        done["status"], "completed",
        "finished inside the grace period: {done}"
    );
    assert_eq!(done["attempts"], 1);
    replica.terminate().await;
    if let Some(db) = db {
        db.drop().await;
    }
}

#[tokio::test]
async fn misconfiguration_exits_with_status_2_and_says_why() {
    for (vars, expected) in [
        (
            vec![("LOBU_SESSION_STORE", "snapshot")],
            "LOBU_SESSION_STORE=snapshot needs DATABASE_URL",
        ),
        (
            vec![("LOBU_SESSION_STORE", "FILE")],
            "must be `snapshot` or `file`",
        ),
        (
            vec![("LOBU_API_KEYS", "k1=acme,")],
            "LOBU_API_KEYS entry 2 is empty",
        ),
        (
            vec![("LOBU_API_KEYS", "")],
            "LOBU_API_KEYS is set but empty",
        ),
        (vec![("LOBU_ADDR", "nowhere")], "LOBU_ADDR must be"),
    ] {
        let (status, stderr) = run_to_exit(&vars).await;
        assert_eq!(status.code(), Some(2), "{vars:?}: {stderr}");
        assert!(stderr.contains(expected), "{vars:?}: {stderr}");
    }
}

#[tokio::test]
async fn an_unreachable_database_exits_with_status_1() {
    let (status, stderr) = run_to_exit(&[(
        "DATABASE_URL",
        "postgres://postgres:hunter2@127.0.0.1:1/nothing",
    )])
    .await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("connecting to postgres://postgres:***@127.0.0.1:1/nothing"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hunter2"),
        "the password never reaches the logs: {stderr}"
    );
}

#[tokio::test]
async fn with_no_store_settings_the_binary_keeps_files_in_lobu_data() {
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::start(&[], dir.path()).await;
    let api = replica.api(None);
    api.turn("demo", "c1", "where am I stored?").await;
    let (status, log) = replica.terminate().await;
    assert!(status.success(), "{log}");
    assert!(log.contains("file store"), "{log}");
    assert!(log.contains("OPEN"), "the open mode is announced: {log}");
    let stored = std::fs::read_dir(dir.path().join("lobu-data"))
        .expect("./lobu-data was created")
        .count();
    assert!(stored > 0);
}

/// With every log on (`RUST_LOG=trace`), no bearer key, query key or database password
/// reaches the logs: not on a request that works, not on one refused.
#[tokio::test]
async fn secrets_never_reach_the_logs_even_at_trace() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::pg::TestDb::create().await;
    let with_password =
        db.url
            .replacen("postgres://postgres@", "postgres://postgres:hunter2pw@", 1);
    assert_ne!(
        with_password, db.url,
        "the test database URL names the postgres user"
    );
    let vars = [
        ("DATABASE_URL", with_password.as_str()),
        ("LOBU_API_KEYS", "sk-live-SECRET123=acme"),
        ("RUST_LOG", "trace"),
        ("LOBU_DEMO_WORD_DELAY_MS", "0"),
    ];
    let replica = Replica::start(&vars, dir.path()).await;
    let api = replica.api(Some("sk-live-SECRET123"));
    let run = api.submit("demo", "c1", "hello").await;
    api.wait_run(&run).await;
    let keyless = replica.api(None);
    let streamed = keyless
        .get(&format!(
            "/v1/runs/{run}/events?key=sk-live-SECRET123&after=0"
        ))
        .await;
    assert_eq!(streamed.status, reqwest::StatusCode::OK);
    let wrong = replica
        .api(Some("sk-live-WRONG456"))
        .get("/v1/agents/demo/conversations")
        .await;
    assert_eq!(wrong.status, reqwest::StatusCode::UNAUTHORIZED);
    let (status, log) = replica.terminate().await;
    assert!(status.success(), "{status}");
    assert!(
        log.contains("TRACE") || log.contains("trace"),
        "trace logging was on"
    );
    for secret in ["SECRET123", "hunter2pw", "WRONG456"] {
        assert!(!log.contains(secret), "{secret} reached the logs");
    }
    db.drop().await;
}
