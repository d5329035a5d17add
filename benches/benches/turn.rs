//! A whole turn through the runtime, at a conversation length of 10 and 100 turns: submit,
//! claim (the conversation's ownership and its head version), hydrate (a cache hit in the
//! steady state), a trivial agent, one commit of transcript and run, and the caller seeing
//! the terminal status. Ids: `turn/pg/10`, `turn/pg/100`, `turn/file/10`, `turn/file/100`.
//!
//! Beside it, in the same run, the least durable work any turn needs (`turn/pg/raw_floor`:
//! one autocommitted `INSERT` of the run, one `SELECT` of the transcript, one transaction
//! that inserts the turn's bytes and updates the run; `turn/file/raw_floor`: one appended
//! and `fdatasync`ed run record, a read of the transcript, one appended and `fdatasync`ed
//! turn). The ratio is the price of the queue, ownership, fencing and events.
//!
//! The measured turns really run at their length: conversations are seeded one turn short,
//! warmed by one untimed turn (so the worker's cache holds the head, as it does between a
//! user's messages), then extended by measured turns until they are 10% longer (at least
//! one turn), when a fresh conversation takes over.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lobu_benches::{BenchStores, bench_stores, seed_idle, start_runtime, transcript_with_turns};
use lobu_core::{Backend, ConversationKey, RunStatus};
use lobu_runtime::Runtime;

async fn one_turn(runtime: &Runtime, key: &ConversationKey) {
    let submitted = runtime
        .submit(key.clone(), "hello", None)
        .await
        .expect("submit");
    let record = runtime.wait(&key.org, &submitted.run).await.expect("wait");
    assert_eq!(record.status, RunStatus::Completed);
}

/// A conversation the measured turns extend, and how long it is.
struct Extending {
    key: ConversationKey,
    turns: usize,
}

impl Extending {
    /// Seeded with `length - 1` turns, then one untimed turn through the runtime.
    async fn start(runtime: &Runtime, backend: &Backend, length: usize) -> Self {
        let key = seed_idle(backend, "turn", transcript_with_turns(length - 1)).await;
        one_turn(runtime, &key).await;
        Extending { key, turns: length }
    }
}

async fn timed_turns(runtime: &Runtime, backend: &Backend, length: usize, iters: u64) -> Duration {
    let most = length + (length / 10).max(1);
    let mut conversation = Extending::start(runtime, backend, length).await;
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        if conversation.turns >= most {
            conversation = Extending::start(runtime, backend, length).await;
        }
        let start = Instant::now();
        one_turn(runtime, &conversation.key).await;
        total += start.elapsed();
        conversation.turns += 1;
    }
    total
}

fn turn(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let BenchStores {
        dir,
        file,
        pg,
        pool,
    } = rt.block_on(bench_stores());

    let file_runtime = start_runtime(&rt, file.clone(), &dir.path().join("scratch-file"), 4);
    let pg_runtime = start_runtime(&rt, pg.clone(), &dir.path().join("scratch-pg"), 4);

    let mut group = c.benchmark_group("turn");
    group.measurement_time(Duration::from_secs(10));
    for length in [10, 100] {
        group.bench_function(BenchmarkId::new("pg", length), |b| {
            b.to_async(&rt)
                .iter_custom(|iters| timed_turns(&pg_runtime, &pg, length, iters))
        });
        group.bench_function(BenchmarkId::new("file", length), |b| {
            b.to_async(&rt)
                .iter_custom(|iters| timed_turns(&file_runtime, &file, length, iters))
        });
    }

    // The raw floors work on a 100-turn transcript and one turn's bytes.
    let transcript = transcript_with_turns(100);
    let delta = transcript_with_turns(101).slice(transcript.len()..);

    rt.block_on(
        sqlx::query("INSERT INTO bench_raw (id, bytes) VALUES (1, $1)")
            .bind(transcript.as_ref())
            .execute(&pool),
    )
    .expect("raw seed");
    group.bench_function(BenchmarkId::new("pg", "raw_floor"), |b| {
        b.to_async(&rt).iter(|| async {
            let run: i64 = sqlx::query_scalar(
                "INSERT INTO bench_raw_runs (status) VALUES ('pending') RETURNING id",
            )
            .fetch_one(&pool)
            .await
            .expect("raw run");
            let bytes: Vec<u8> = sqlx::query_scalar("SELECT bytes FROM bench_raw WHERE id = 1")
                .fetch_one(&pool)
                .await
                .expect("raw select");
            assert!(!bytes.is_empty());
            let mut tx = pool.begin().await.expect("begin");
            sqlx::query("INSERT INTO bench_raw_append (bytes) VALUES ($1)")
                .bind(delta.as_ref())
                .execute(&mut *tx)
                .await
                .expect("raw insert");
            sqlx::query("UPDATE bench_raw_runs SET status = 'completed' WHERE id = $1")
                .bind(run)
                .execute(&mut *tx)
                .await
                .expect("raw update");
            tx.commit().await.expect("commit");
        })
    });

    let raw_path = Arc::new(dir.path().join("raw-turn.jsonl"));
    let runs_path = Arc::new(dir.path().join("raw-runs.jsonl"));
    std::fs::write(&*raw_path, &transcript).expect("raw file");
    std::fs::write(&*runs_path, b"").expect("raw runs file");
    group.bench_function(BenchmarkId::new("file", "raw_floor"), |b| {
        b.to_async(&rt).iter(|| {
            let (path, runs) = (raw_path.clone(), runs_path.clone());
            let delta = delta.clone();
            async move {
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    let mut log = std::fs::OpenOptions::new().append(true).open(&*runs)?;
                    log.write_all(b"{\"run\":\"r\",\"status\":\"pending\"}\n")?;
                    log.sync_data()?;
                    let bytes = std::fs::read(&*path)?;
                    assert!(!bytes.is_empty());
                    let mut f = std::fs::OpenOptions::new().append(true).open(&*path)?;
                    f.write_all(&delta)?;
                    f.sync_data()?;
                    // Keep both files the same size from one iteration to the next.
                    f.set_len(bytes.len() as u64)?;
                    log.set_len(0)
                })
                .await
                .expect("join")
                .expect("raw turn");
            }
        })
    });
    group.finish();

    rt.block_on(async {
        file_runtime.shutdown().await;
        pg_runtime.shutdown().await;
    });
}

criterion_group!(benches, turn);
criterion_main!(benches);
