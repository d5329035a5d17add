//! Run events across replicas and what storing them costs a turn. Group `events`:
//!
//! * `pg/cross_replica_first_output`: from the agent's first `output` on runtime A to its
//!   arrival at a subscriber on runtime B (same process, two runtimes, each with its own
//!   PostgreSQL pool and `LISTEN` connection, one database). Beside it `pg/raw_notify`: one
//!   `NOTIFY` from one connection to a `LISTEN`ing other, the floor of any cross-replica wake.
//! * `file/cross_process_first_output`: likewise on the file store, A and B being two store
//!   handles on one directory (each with its own signals and directory watch, as two
//!   processes have). Beside it `file/raw_floor`: append a line to a file and read it back.
//! * `pg/turn_events_stored` and `pg/turn_events_unstored`: a whole turn at a conversation
//!   length of 10 whose agent streams three pieces of output, with run events stored (the
//!   default) and not stored (`store_events(false)`): the ratio is what events cost a turn.
//!
//! Every iteration's latency is also kept, and p50 / p99 are printed at the end (criterion
//! reports means of batches, not percentiles of single deliveries).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use futures::StreamExt;
use lobu_benches::{
    append_turn, fresh_bench_database_with, fresh_key, seed_idle, transcript_with_turns,
};
use lobu_core::{Backend, BoxError, ConversationKey, RunStatus};
use lobu_runtime::{Agent, RunEvent, Runtime, Turn};

/// Streams three pieces of output, noting when the first left, then appends a turn.
#[derive(Debug, Default)]
struct Streaming {
    first_output: Mutex<Option<Instant>>,
}

#[async_trait::async_trait]
impl Agent for Streaming {
    async fn run_turn(&self, turn: &mut Turn) -> Result<(), BoxError> {
        *self.first_output.lock().unwrap() = Some(Instant::now());
        turn.output("Hello");
        turn.output(", ");
        turn.output("world");
        let n = turn.entries().len();
        append_turn(&mut turn.writer(), n);
        Ok(())
    }
}

fn runtime(
    backend: Backend,
    agent: &Arc<Streaming>,
    scratch: &std::path::Path,
    stored: bool,
) -> Runtime {
    Runtime::builder(backend, agent.clone())
        .concurrency(4)
        .scratch_root(scratch.to_path_buf())
        // The backstop read is far away: deliveries come from the backend's wake-ups.
        .status_poll_interval(Duration::from_secs(60))
        .store_events(stored)
        .build()
        .expect("runtime")
}

/// Submit on `gateway`, subscribe there, let `worker`'s agent stream: the time from the
/// agent's first output to the subscriber's `output` event.
async fn first_output(
    gateway: &Runtime,
    agent: &Streaming,
    samples: &Mutex<Vec<Duration>>,
) -> Duration {
    let key = fresh_key("events");
    let run = gateway
        .submit(key.clone(), "hello", None)
        .await
        .expect("submit")
        .run;
    let mut events = gateway.subscribe(&key.org, &run).await.expect("subscribe");
    let mut latency = None;
    while let Some(numbered) = events.next().await {
        if latency.is_none() && matches!(numbered.event, RunEvent::Output { .. }) {
            let sent = agent
                .first_output
                .lock()
                .unwrap()
                .take()
                .expect("the agent ran");
            latency = Some(sent.elapsed());
        }
        if numbered.event.is_terminal() {
            assert_eq!(numbered.event, RunEvent::Completed { output: None });
        }
    }
    let latency = latency.expect("an output arrived");
    samples.lock().unwrap().push(latency);
    latency
}

async fn timed_turns(runtime: &Runtime, backend: &Backend, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut key: Option<ConversationKey> = None;
    for i in 0..iters {
        if i % 10 == 0 {
            key = Some(seed_idle(backend, "evturn", transcript_with_turns(10)).await);
        }
        let key = key.as_ref().expect("seeded");
        let start = Instant::now();
        let run = runtime
            .submit(key.clone(), "hello", None)
            .await
            .expect("submit")
            .run;
        let record = runtime.wait(&key.org, &run).await.expect("wait");
        total += start.elapsed();
        assert_eq!(record.status, RunStatus::Completed);
    }
    total
}

fn percentiles(name: &str, samples: &Mutex<Vec<Duration>>) {
    let mut samples = samples.lock().unwrap().clone();
    if samples.is_empty() {
        return;
    }
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    eprintln!(
        "events/{name}: {} deliveries, p50 {:?}, p99 {:?}",
        samples.len(),
        at(0.50),
        at(0.99)
    );
}

fn events(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (pool, pg_a, pg_b, file_a, file_b) = rt.block_on(async {
        let pool = fresh_bench_database_with(8).await;
        let a = lobu_store_pg::PgStore::new(pool.clone());
        a.migrate().await.expect("migrate");
        let other_pool = lobu_benches::connect_bench_database(8).await;
        let b = lobu_store_pg::PgStore::new(other_pool);
        let root = dir.path().join("store");
        let open = || async {
            lobu_store_file::FileStore::open(&root)
                .await
                .expect("open file store")
                .into_backend()
        };
        let (file_a, file_b) = (open().await, open().await);
        (pool, a.into_backend(), b.into_backend(), file_a, file_b)
    });

    let agent = Arc::new(Streaming::default());
    let mut group = c.benchmark_group("events");
    group.measurement_time(Duration::from_secs(8));

    for (name, worker_backend, gateway_backend) in [
        ("pg/cross_replica_first_output", pg_a.clone(), pg_b.clone()),
        (
            "file/cross_process_first_output",
            file_a.clone(),
            file_b.clone(),
        ),
    ] {
        let worker = runtime(worker_backend, &agent, &dir.path().join("scratch-w"), true);
        let gateway = runtime(gateway_backend, &agent, &dir.path().join("scratch-g"), true);
        let loop_handle = rt.spawn({
            let worker = worker.clone();
            async move { worker.run().await }
        });
        let samples = Mutex::new(Vec::new());
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (gateway, agent, samples) = (&gateway, &agent, &samples);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += first_output(gateway, agent, samples).await;
                    }
                    total
                }
            })
        });
        percentiles(name, &samples);
        rt.block_on(worker.shutdown());
        rt.block_on(loop_handle)
            .expect("join")
            .expect("worker loop");
    }

    // The floor of a cross-replica wake-up: NOTIFY on one connection, received on another.
    let listener = rt.block_on(async {
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
            .await
            .expect("listen");
        listener.listen("bench_floor").await.expect("LISTEN");
        listener
    });
    let listener = tokio::sync::Mutex::new(listener);
    group.bench_function(BenchmarkId::new("pg", "raw_notify"), |b| {
        b.to_async(&rt).iter(|| async {
            let mut listener = listener.lock().await;
            sqlx::query("SELECT pg_notify('bench_floor', 'x')")
                .execute(&pool)
                .await
                .expect("notify");
            listener.recv().await.expect("notification");
        })
    });

    // The listener's connection goes back to its pool inside the runtime.
    rt.block_on(async move { drop(listener) });

    let raw = Arc::new(dir.path().join("raw-events.log"));
    std::fs::write(&*raw, b"").expect("raw file");
    group.bench_function(BenchmarkId::new("file", "raw_floor"), |b| {
        b.to_async(&rt).iter(|| {
            let raw = raw.clone();
            async move {
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    let mut log = std::fs::OpenOptions::new().append(true).open(&*raw)?;
                    log.write_all(b"{\"seq\":1,\"attempt\":1,\"data\":\"{}\"}\n")?;
                    let bytes = std::fs::read(&*raw)?;
                    assert!(!bytes.is_empty());
                    log.set_len(0)
                })
                .await
                .expect("join")
                .expect("raw append and read");
            }
        })
    });

    for (id, stored) in [
        ("turn_events_stored", true),
        ("turn_events_unstored", false),
    ] {
        let runtime = runtime(pg_a.clone(), &agent, &dir.path().join("scratch-t"), stored);
        let loop_handle = rt.spawn({
            let runtime = runtime.clone();
            async move { runtime.run().await }
        });
        group.bench_function(BenchmarkId::new("pg", id), |b| {
            b.to_async(&rt)
                .iter_custom(|iters| timed_turns(&runtime, &pg_a, iters))
        });
        rt.block_on(runtime.shutdown());
        rt.block_on(loop_handle)
            .expect("join")
            .expect("worker loop");
    }
    group.finish();
}

criterion_group!(benches, events);
criterion_main!(benches);
