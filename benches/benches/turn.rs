//! A whole turn through the runtime: submit, claim, lease, hydrate (or cache hit), run a
//! trivial agent, persist, complete, and the caller seeing the terminal event.
//!
//! Next to it, the physical limit of a turn's storage work in the same run: read the
//! transcript and append the turn's bytes durably (`file/raw_read_append`: `std::fs::read`
//! then append + `fdatasync`; `pg/raw_select_insert`: one `SELECT` of the transcript, one
//! autocommitted `INSERT` of the turn's bytes). The difference is the price of the queue,
//! the lease, fencing and the events. Each conversation runs 32 turns, then a new one starts.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lobu_benches::{BenchStores, append_turn, bench_stores, fresh_key, transcript_with_turns};
use lobu_core::{Backend, BoxError, ConversationKey, RunStatus};
use lobu_runtime::{Agent, Runtime, Turn};

const TURNS_PER_CONVERSATION: u64 = 32;

/// Appends one realistic turn; the cheapest honest agent.
struct AppendTurn;

#[async_trait::async_trait]
impl Agent for AppendTurn {
    async fn run_turn(&self, turn: &mut Turn) -> Result<(), BoxError> {
        let n = turn.entries().len();
        append_turn(&mut turn.writer(), n);
        Ok(())
    }
}

fn start_runtime(
    rt: &tokio::runtime::Runtime,
    backend: Backend,
    scratch: &std::path::Path,
) -> Runtime {
    let runtime = Runtime::builder(backend, Arc::new(AppendTurn))
        .concurrency(4)
        .scratch_root(scratch.to_path_buf())
        .build()
        .expect("runtime");
    let worker = runtime.clone();
    rt.spawn(async move { worker.run().await });
    runtime
}

async fn timed_turns(runtime: &Runtime, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut key: Option<ConversationKey> = None;
    for i in 0..iters {
        if i % TURNS_PER_CONVERSATION == 0 {
            key = Some(fresh_key("turn"));
        }
        let key = key.clone().expect("key");
        let start = Instant::now();
        let submitted = runtime
            .submit(key.clone(), "hello", None)
            .await
            .expect("submit");
        let record = runtime.wait(&key.org, &submitted.run).await.expect("wait");
        total += start.elapsed();
        assert_eq!(record.status, RunStatus::Completed);
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

    let file_runtime = start_runtime(&rt, file, &dir.path().join("scratch-file"));
    let pg_runtime = start_runtime(&rt, pg, &dir.path().join("scratch-pg"));

    // A mid-sized transcript (16 turns) and one turn's bytes for the raw baselines.
    let transcript = transcript_with_turns(16);
    let delta = transcript_with_turns(17).slice(transcript.len()..);

    let mut group = c.benchmark_group("turn");
    group.measurement_time(Duration::from_secs(10));
    group.bench_function(BenchmarkId::new("file/runtime", "append"), |b| {
        b.to_async(&rt)
            .iter_custom(|iters| timed_turns(&file_runtime, iters))
    });

    let raw_path = Arc::new(dir.path().join("raw-turn.jsonl"));
    std::fs::write(&*raw_path, &transcript).expect("raw file");
    group.bench_function(BenchmarkId::new("file/raw_read_append", "append"), |b| {
        b.to_async(&rt).iter(|| {
            let path = raw_path.clone();
            let delta = delta.clone();
            async move {
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    let bytes = std::fs::read(&*path)?;
                    assert!(!bytes.is_empty());
                    let mut f = std::fs::OpenOptions::new().append(true).open(&*path)?;
                    f.write_all(&delta)?;
                    f.sync_data()?;
                    // Keep the file the same size from one iteration to the next.
                    f.set_len(bytes.len() as u64)
                })
                .await
                .expect("join")
                .expect("raw turn");
            }
        })
    });

    group.bench_function(BenchmarkId::new("pg/runtime", "append"), |b| {
        b.to_async(&rt)
            .iter_custom(|iters| timed_turns(&pg_runtime, iters))
    });

    rt.block_on(
        sqlx::query("INSERT INTO bench_raw (id, bytes) VALUES (1, $1)")
            .bind(transcript.as_ref())
            .execute(&pool),
    )
    .expect("raw seed");
    group.bench_function(BenchmarkId::new("pg/raw_select_insert", "append"), |b| {
        b.to_async(&rt).iter(|| async {
            let bytes: Vec<u8> = sqlx::query_scalar("SELECT bytes FROM bench_raw WHERE id = 1")
                .fetch_one(&pool)
                .await
                .expect("raw select");
            assert!(!bytes.is_empty());
            sqlx::query("INSERT INTO bench_raw_append (bytes) VALUES ($1)")
                .bind(delta.as_ref())
                .execute(&pool)
                .await
                .expect("raw insert");
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
