//! `lobu migrate` from files to PostgreSQL: killed half-way and run again, it ends with every
//! conversation byte-identical, none twice, and the host serves them.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{conversation, database_url, file_store, file_url, fill, key, lobu};
use example_axum_host::{Config, Server, StoreChoice};
use lobu_core::export::Exported;
use serde_json::{Value, json};
use sqlx::PgPool;

const CONVERSATIONS: usize = 1500;

async fn count_heads(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM lobu.conversations WHERE head_seq IS NOT NULL")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

#[sqlx::test(migrations = false)]
async fn a_migration_killed_half_way_and_run_again_copies_everything_once(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let source = file_store(dir.path()).await;
    let conversations: Vec<Exported> = (0..CONVERSATIONS)
        .map(|i| {
            conversation(
                key("default", "bot", &format!("c{i:04}")),
                1 + i as u64,
                1 + i % 3,
            )
        })
        .collect();
    fill(&source, &conversations).await;
    let database = pool
        .connect_options()
        .get_database()
        .expect("a test database")
        .to_owned();
    let (from, to) = (file_url(dir.path()), database_url(&database));

    let mut child = Command::new(env!("CARGO_BIN_EXE_lobu"))
        .args([
            "migrate", "--from", &from, "--to", &to, "--jobs", "1", "--quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("lobu migrate starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_heads(&pool).await < 200 {
        assert!(Instant::now() < deadline, "the migration made no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the migration ended before the kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let at_kill = count_heads(&pool).await;
    assert!(
        (200..CONVERSATIONS as i64).contains(&at_kill),
        "killed half-way: {at_kill} of {CONVERSATIONS}"
    );

    let rerun = lobu(&["migrate", "--from", &from, "--to", &to, "--quiet"]);
    let report = String::from_utf8_lossy(&rerun.stderr);
    assert!(rerun.status.success(), "{report}");
    assert!(
        report.contains(&format!(
            "{CONVERSATIONS} conversations copied and verified"
        )),
        "{report}"
    );
    let written = CONVERSATIONS as i64 - at_kill;
    let split = format!("({written} written now, {at_kill} already there)");
    assert!(report.contains(&split), "{report}");
    assert_eq!(count_heads(&pool).await, CONVERSATIONS as i64, "none twice");
    let target = lobu_store_pg::PgStore::new(pool.clone()).into_backend();
    for c in &conversations {
        let copied = target
            .sessions
            .export(&c.key)
            .await
            .unwrap()
            .expect("copied");
        assert_eq!(copied.to_document(), c.to_document(), "{}", c.key);
    }
    let snapshots: i64 = sqlx::query_scalar("SELECT count(*) FROM lobu.snapshots")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        snapshots, CONVERSATIONS as i64,
        "one snapshot per conversation"
    );

    // The host, started on the target, serves a migrated conversation and goes on with it.
    let mut config = Config::defaults();
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.store = StoreChoice::Snapshot {
        database_url: to.clone(),
    };
    config.demo_word_delay = Duration::from_millis(1);
    let server = Server::bind(config).await.expect("the host starts");
    let base = format!(
        "http://{}/v1/agents/bot/conversations/c0007",
        server.local_addr()
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let host = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let history: Value = client
        .get(format!("{base}/session/messages?limit=200"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let messages = history["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 4, "two turns of c0007: {history}");
    let accepted: Value = client
        .post(format!("{base}/messages"))
        .json(&json!({"text": "and one more"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = accepted["run_id"].as_str().expect("a run id").to_owned();
    let root = base.split("/v1/").next().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: Value = client
            .get(format!("{root}/v1/runs/{run}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["status"] == "completed" {
            break;
        }
        assert!(
            status["status"] == "pending" || status["status"] == "running",
            "{status}"
        );
        assert!(Instant::now() < deadline, "the turn never ended: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = target
        .sessions
        .hydrate(&key("default", "bot", "c0007"))
        .await
        .unwrap()
        .unwrap();
    assert!(after.transcript.starts_with(&conversations[7].transcript));
    assert!(after.version > conversations[7].version);
    let _ = stop.send(());
    host.await.unwrap().unwrap();
}
