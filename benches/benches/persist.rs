//! Persist: commit one more turn to a conversation of N turns, next to the raw write of the
//! same new bytes.
//!
//! `file/persist` vs `file/raw_append` (append the turn's new bytes to a file and
//! `fdatasync`) and `pg/persist` vs `pg/raw_insert` (one autocommitted `INSERT` of the same
//! new bytes). lobu persists a turn in proportion to the turn, not to the transcript, so the
//! cost should barely move from 100 to 1000 turns. Every 64 appends the conversation is
//! re-seeded outside the timed section, so chains and re-bases are measured as they occur.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lobu_benches::{
    BenchStores, SeededConversation, bench_stores, extend_by_one_turn, persist_next, seed,
    transcript_with_turns,
};
use lobu_core::Backend;

const TURNS: [usize; 2] = [100, 1000];
const APPENDS_PER_SEED: usize = 64;

/// `base`, then `base` extended by 1, 2, … turns.
fn chain(base: &Bytes, turns: usize) -> Vec<Bytes> {
    let mut out = vec![base.clone()];
    for i in 0..APPENDS_PER_SEED {
        let next = extend_by_one_turn(out.last().expect("base"), turns + i);
        out.push(next);
    }
    out
}

async fn timed_persists(backend: &Backend, chain: &[Bytes], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut conv: Option<SeededConversation> = None;
    let mut step = 0;
    for _ in 0..iters {
        if conv.is_none() || step == APPENDS_PER_SEED {
            conv = Some(seed(backend, "persist", chain[0].clone()).await);
            step = 0;
        }
        let c = conv.as_mut().expect("seeded");
        let next = chain[step + 1].clone();
        let start = Instant::now();
        persist_next(backend, c, next).await;
        total += start.elapsed();
        step += 1;
    }
    total
}

fn persist(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let BenchStores {
        dir,
        file,
        pg,
        pool,
    } = rt.block_on(bench_stores());

    let mut group = c.benchmark_group("persist");
    group.measurement_time(Duration::from_secs(8));
    for turns in TURNS {
        let base = transcript_with_turns(turns);
        let chain = chain(&base, turns);
        let delta: Bytes = chain[1].slice(base.len()..);
        group.throughput(Throughput::Elements(1));

        group.bench_function(BenchmarkId::new("file/persist", turns), |b| {
            b.to_async(&rt)
                .iter_custom(|iters| timed_persists(&file, &chain, iters))
        });

        let raw_path = dir.path().join(format!("raw-append-{turns}.jsonl"));
        std::fs::write(&raw_path, &base).expect("raw file");
        let raw_file = std::sync::Arc::new(std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&raw_path)
                .expect("open raw"),
        ));
        group.bench_function(BenchmarkId::new("file/raw_append", turns), |b| {
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

        group.bench_function(BenchmarkId::new("pg/persist", turns), |b| {
            b.to_async(&rt)
                .iter_custom(|iters| timed_persists(&pg, &chain, iters))
        });

        group.bench_function(BenchmarkId::new("pg/raw_insert", turns), |b| {
            b.to_async(&rt).iter(|| async {
                sqlx::query("INSERT INTO bench_raw_append (bytes) VALUES ($1)")
                    .bind(delta.as_ref())
                    .execute(&pool)
                    .await
                    .expect("raw insert");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, persist);
criterion_main!(benches);
