//! Hydrate: read a conversation's head, next to the raw read of the same bytes.
//!
//! `file/hydrate` vs `file/raw_read` (one `std::fs::read` of a file holding the same bytes,
//! through `spawn_blocking` as any async caller must) and `pg/hydrate` vs `pg/raw_select`
//! (one `SELECT` of the same bytes from a one-column lz4 `bytea` table, the store's own
//! column setting). The ratio of each pair is lobu's overhead over the physical limit.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lobu_benches::{BenchStores, bench_stores, seed, transcript_with_turns};

const TURNS: [usize; 3] = [10, 100, 1000];

fn hydrate(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let BenchStores {
        dir,
        file,
        pg,
        pool,
    } = rt.block_on(bench_stores());

    let mut group = c.benchmark_group("hydrate");
    for turns in TURNS {
        let transcript = transcript_with_turns(turns);
        group.throughput(Throughput::Bytes(transcript.len() as u64));

        let file_conv = rt.block_on(seed(&file, "hydrate", transcript.clone()));
        group.bench_function(BenchmarkId::new("file/hydrate", turns), |b| {
            b.to_async(&rt).iter(|| async {
                let head = file
                    .sessions
                    .hydrate(&file_conv.key)
                    .await
                    .expect("hydrate");
                assert_eq!(head.expect("head").transcript.len(), transcript.len());
            })
        });

        let raw_path = Arc::new(dir.path().join(format!("raw-{turns}.jsonl")));
        std::fs::write(&*raw_path, &transcript).expect("raw file");
        group.bench_function(BenchmarkId::new("file/raw_read", turns), |b| {
            b.to_async(&rt).iter(|| {
                let path = raw_path.clone();
                async move {
                    let bytes = tokio::task::spawn_blocking(move || std::fs::read(&*path))
                        .await
                        .expect("join")
                        .expect("read");
                    assert!(!bytes.is_empty());
                }
            })
        });

        let pg_conv = rt.block_on(seed(&pg, "hydrate", transcript.clone()));
        group.bench_function(BenchmarkId::new("pg/hydrate", turns), |b| {
            b.to_async(&rt).iter(|| async {
                let head = pg.sessions.hydrate(&pg_conv.key).await.expect("hydrate");
                assert_eq!(head.expect("head").transcript.len(), transcript.len());
            })
        });

        rt.block_on(
            sqlx::query("INSERT INTO bench_raw (id, bytes) VALUES ($1, $2)")
                .bind(turns as i32)
                .bind(transcript.as_ref())
                .execute(&pool),
        )
        .expect("raw insert");
        group.bench_function(BenchmarkId::new("pg/raw_select", turns), |b| {
            b.to_async(&rt).iter(|| async {
                let bytes: Vec<u8> =
                    sqlx::query_scalar("SELECT bytes FROM bench_raw WHERE id = $1")
                        .bind(turns as i32)
                        .fetch_one(&pool)
                        .await
                        .expect("raw select");
                assert_eq!(bytes.len(), transcript.len());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hydrate);
criterion_main!(benches);
