//! Group `persist_turn`: persist one more turn onto a conversation N turns long, in the
//! store's steady state, next to the raw write of the same new bytes. N (the parameter) is
//! 10, 100, 1,000 and 10,000 turns of [`TurnLog`] (about 800 bytes a turn: 8.0 MB at
//! 10,000); throughput is one turn, so criterion's elements per second are turns per second.
//!
//! * `persist_turn/pg/N`: one `SessionStore::persist` on PostgreSQL, under the lease the
//!   conversation was written with, of one turn appended to the head (`expected` = the head's
//!   version; an append, `Persist::base_len`, as the runtime's commit sends it: the new bytes
//!   only). Every measured conversation was written as a
//!   runtime writes one, each turn persisted the same way from the first turn on, so the
//!   measured write finds the whole copy, delta chain and run records the store left, and
//!   re-bases happen when the store's own rule makes them.
//! * `persist_turn/raw_pg_insert/N`: one autocommitted `INSERT` of the turn's new bytes into
//!   a `bytea` table: the least a durable write of them costs.
//! * `persist_turn/file/N`: the same persist on the file store.
//! * `persist_turn/raw_file_append_fdatasync/N`: append the turn's new bytes to a file holding the
//!   N-turn transcript and `fdatasync` it.
//!
//! The measured turns extend the same conversation: turns N + 1 to N + W, W = N / 10 and at
//! least 10 (so `pg/10` measures turns 11 to 20, `pg/10000` turns 10,001 to at most 11,000).
//! Then the next conversation, grown from its first turn to N outside the measurement (four
//! at a time, concurrently, below 10,000), takes over. Growing one of 10,000 turns takes
//! about 10 s (PostgreSQL) and 85 s (files, whose format 1 still reads its history on each
//! persist) on this 2-core machine; W = 1,000 is more turns than criterion measures there
//! with its default times (warm-up included), so it happens once per store. Conversations
//! are grown only for the benches criterion runs; the bench prints how long growing took
//! and the PostgreSQL head's layout at N.
//!
//! Targets (issue 8): the cost does not grow with the history: `persist_turn/pg/10000` ≤ 1.5×
//! `persist_turn/pg/10` and ≤ 2× `persist_turn/raw_pg_insert/10000`.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use lobu_benches::{
    BenchStores, GrownConversation, LONG_CONVERSATION_BYTES, TurnLog, bench_stores_with, pg_chain,
};
use lobu_core::Backend;
use sqlx::PgPool;
use tokio::sync::Mutex;

const TURNS: [usize; 4] = [10, 100, 1000, 10_000];

/// How many turns are measured on one conversation of `turns` turns before the next takes
/// over: a tenth of its length, at least 10.
fn window(turns: usize) -> usize {
    (turns / 10).max(10)
}

/// How many conversations of `turns` turns are grown at once (concurrently, outside the
/// measurement) when none has room left.
fn batch(turns: usize) -> usize {
    if turns >= 10_000 { 1 } else { 4 }
}

/// Conversations of one store grown to `turns` turns, each measured for its window.
struct Supply {
    /// `pg` or `file`, for messages.
    label: &'static str,
    backend: Backend,
    /// For PostgreSQL: a pool to read the first grown head's layout with.
    pool: Option<PgPool>,
    log: Arc<TurnLog>,
    turns: usize,
    /// Conversations with room left; the last one is being measured.
    ready: Vec<GrownConversation>,
    /// Time spent growing conversations, outside the measurement.
    growing: Duration,
}

impl Supply {
    fn new(
        label: &'static str,
        backend: &Backend,
        pool: Option<&PgPool>,
        log: &Arc<TurnLog>,
        turns: usize,
    ) -> Self {
        Supply {
            label,
            backend: backend.clone(),
            pool: pool.cloned(),
            log: log.clone(),
            turns,
            ready: Vec::new(),
            growing: Duration::ZERO,
        }
    }

    /// Make sure the last ready conversation has room for one more measured turn.
    async fn ensure_room(&mut self) {
        let end = self.turns + window(self.turns);
        while self.ready.last().is_some_and(|c| c.turns >= end) {
            self.ready.pop();
        }
        if self.ready.is_empty() {
            let started = Instant::now();
            let (backend, log, turns) = (&self.backend, &*self.log, self.turns);
            self.ready = futures::future::join_all((0..batch(turns)).map(|_| async move {
                let mut conversation = GrownConversation::start(backend, "persist").await;
                conversation.grow_to(backend, log, turns).await;
                conversation
            }))
            .await;
            if self.growing.is_zero() {
                self.say_first_grown(started.elapsed()).await;
            }
            self.growing += started.elapsed();
        }
    }

    async fn say_first_grown(&self, took: Duration) {
        let layout = match (&self.pool, self.ready.last()) {
            (Some(pool), Some(conversation)) => {
                pg_chain(pool, &conversation.key).await.map_or_else(
                    || "; their layout is unknown".to_owned(),
                    |chain| format!("; PostgreSQL holds each as {chain}"),
                )
            }
            _ => String::new(),
        };
        eprintln!(
            "persist_turn/{}/{}: grew {} conversation(s) of {} turns ({} bytes) in {took:.1?}{layout}",
            self.label,
            self.turns,
            self.ready.len(),
            self.turns,
            self.log.prefix(self.turns).len(),
        );
    }

    /// Persist `iters` turns, each onto a conversation with room, and return the time the
    /// persists took (growing conversations is not counted).
    async fn timed(&mut self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            self.ensure_room().await;
            let conversation = self.ready.last_mut().expect("a conversation with room");
            let start = Instant::now();
            conversation.persist_next(&self.backend, &self.log).await;
            total += start.elapsed();
        }
        total
    }
}

/// Criterion's routine. Growing is mostly done before it (in the bench's closure, which
/// criterion calls before each batch of iterations and only for the benches it runs), so
/// criterion's warm-up, which times the routine's wall clock, does not mistake growing for
/// persisting; a conversation that runs out of room during a batch is replaced inside it.
async fn timed_persists(supply: &Mutex<Supply>, iters: u64) -> Duration {
    supply.lock().await.timed(iters).await
}

fn persist_turn(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let BenchStores {
        dir,
        file,
        pg,
        pool,
    } = rt.block_on(bench_stores_with(LONG_CONVERSATION_BYTES));
    let last = TURNS[TURNS.len() - 1];
    let log = Arc::new(TurnLog::new(last + window(last)));

    let mut group = c.benchmark_group("persist_turn");
    // A persist takes milliseconds and each measured one uses up room in a conversation:
    // 10 samples of equal size keep the count near measurement time / cost of one.
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(1));
    for turns in TURNS {
        let pg_supply = Mutex::new(Supply::new("pg", &pg, Some(&pool), &log, turns));
        let file_supply = Mutex::new(Supply::new("file", &file, None, &log, turns));
        // The new bytes of the first measured turn, for the raw writes.
        let delta = log.turn(turns + 1);

        group.bench_function(BenchmarkId::new("pg", turns), |b| {
            rt.block_on(async { pg_supply.lock().await.ensure_room().await });
            b.to_async(&rt)
                .iter_custom(|iters| timed_persists(&pg_supply, iters))
        });

        group.bench_function(BenchmarkId::new("raw_pg_insert", turns), |b| {
            b.to_async(&rt).iter(|| async {
                sqlx::query("INSERT INTO bench_raw_append (bytes) VALUES ($1)")
                    .bind(delta.as_ref())
                    .execute(&pool)
                    .await
                    .expect("raw insert");
            })
        });

        group.bench_function(BenchmarkId::new("file", turns), |b| {
            rt.block_on(async { file_supply.lock().await.ensure_room().await });
            b.to_async(&rt)
                .iter_custom(|iters| timed_persists(&file_supply, iters))
        });

        let raw_path = dir.path().join(format!("raw-append-{turns}.jsonl"));
        std::fs::write(&raw_path, log.prefix(turns)).expect("raw file");
        let raw_file = Arc::new(std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&raw_path)
                .expect("open raw"),
        ));
        group.bench_function(BenchmarkId::new("raw_file_append_fdatasync", turns), |b| {
            b.to_async(&rt).iter(|| {
                let file = raw_file.clone();
                let delta = delta.clone();
                async move {
                    tokio::task::spawn_blocking(move || {
                        let mut f = file.lock().expect("raw file lock");
                        f.write_all(&delta)?;
                        f.sync_data()
                    })
                    .await
                    .expect("join")
                    .expect("append");
                }
            })
        });

        for supply in [pg_supply, file_supply] {
            let supply = supply.into_inner();
            if !supply.growing.is_zero() {
                eprintln!(
                    "persist_turn/{}/{turns}: growing conversations took {:.1?} in all, outside \
                     the measurement",
                    supply.label, supply.growing
                );
            }
        }
    }
    group.finish();
}

criterion_group!(benches, persist_turn);
criterion_main!(benches);
