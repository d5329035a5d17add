//! A timeline of whole turns on PostgreSQL: every statement sqlx sends and every runtime log
//! line, with microsecond timestamps, for `TURNS` turns after a warm-up. A diagnostic, not a
//! bench: `cargo run --release -p lobu-benches --example turn_profile 2> timeline.log`.

use std::time::Instant;

use lobu_benches::{database_url, seed_idle, start_runtime, transcript_with_turns};
use lobu_core::RunStatus;
use sqlx::ConnectOptions;
use sqlx::postgres::PgPoolOptions;

/// Untimed turns first; `TURN_PROFILE_WARM` sets how many (default 50), for a profiler.
fn warm_turns() -> usize {
    std::env::var("TURN_PROFILE_WARM")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50)
}
const TURNS: usize = 3;

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (runtime, key) = rt.block_on(async {
        let _ = lobu_benches::fresh_bench_database().await;
        let options: sqlx::postgres::PgConnectOptions = database_url().parse().expect("url");
        let options = options
            .database("lobu_bench")
            .log_statements(log::LevelFilter::Debug);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .expect("connect");
        let store = lobu_store_pg::PgStore::new(pool);
        store.migrate().await.expect("migrate");
        let backend = store.into_backend();
        let key = seed_idle(&backend, "profile", transcript_with_turns(99)).await;
        (backend, key)
    });
    let runtime = start_runtime(&rt, runtime, &dir.path().join("scratch"), 4);
    rt.block_on(async {
        let warm_n = warm_turns();
        let mut warm = std::time::Duration::ZERO;
        let mut each = Vec::with_capacity(warm_n);
        for _ in 0..warm_n {
            let took = one_turn(&runtime, &key).await;
            warm += took;
            each.push(took);
        }
        let slow: Vec<(usize, std::time::Duration)> = each
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, d)| *d > std::time::Duration::from_millis(20))
            .collect();
        each.sort();
        if !each.is_empty() {
            let at = |q: f64| each[((each.len() - 1) as f64 * q) as usize];
            eprintln!(
                "warm: p50 {:?} p90 {:?} p99 {:?} max {:?}; over 20 ms: {slow:?}",
                at(0.5),
                at(0.9),
                at(0.99),
                at(1.0)
            );
        }
        eprintln!(
            "warm: {warm_n} turns, mean {:?}",
            warm / warm_n.max(1) as u32
        );
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter("debug,hyper=off,h2=off")
            .init();
        for _ in 0..TURNS {
            tracing::info!("---- turn begins");
            let took = one_turn(&runtime, &key).await;
            tracing::info!(elapsed = ?took, "---- turn ends");
        }
    });
}

/// Submit one turn and wait for it; how long that took.
async fn one_turn(
    runtime: &lobu_runtime::Runtime,
    key: &lobu_core::ConversationKey,
) -> std::time::Duration {
    let start = Instant::now();
    let run = runtime
        .submit(key.clone(), "hello", None)
        .await
        .expect("submit");
    let record = runtime.wait(&key.org, &run.run).await.expect("wait");
    assert_eq!(record.status, RunStatus::Completed);
    start.elapsed()
}
