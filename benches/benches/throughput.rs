//! Turns per second with 16 workers over 64 conversations: `throughput/pg`,
//! `throughput/file`, and `throughput/pg_two_runtimes` (two runtimes of 16 workers each in
//! one process on one database, as two replicas would be). One criterion iteration is one
//! turn: `iter_custom` submits `iters` turns round-robin over 64 fresh conversations at once
//! and returns the time until the last one completed, so 1e9 / the median in ns is turns per
//! second.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures::future::join_all;
use lobu_benches::{fresh_bench_database_with, fresh_key, start_runtime};
use lobu_core::{ConversationKey, RunStatus};
use lobu_runtime::Runtime;

const WORKERS: usize = 16;
const CONVERSATIONS: usize = 64;

/// Submit `iters` turns over fresh conversations through `gateways` (round-robin) and wait
/// for all of them; the elapsed time.
async fn burst(gateways: &[Runtime], iters: u64) -> Duration {
    let keys: Vec<ConversationKey> = (0..CONVERSATIONS).map(|_| fresh_key("tput")).collect();
    let start = Instant::now();
    let turns = (0..iters as usize).map(|i| {
        let gateway = gateways[i % gateways.len()].clone();
        let key = keys[i % CONVERSATIONS].clone();
        async move {
            let submitted = gateway
                .submit(key.clone(), "hello", None)
                .await
                .expect("submit");
            let record = gateway.wait(&key.org, &submitted.run).await.expect("wait");
            assert_eq!(record.status, RunStatus::Completed);
        }
    });
    join_all(turns).await;
    start.elapsed()
}

fn throughput(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, pg) = rt.block_on(async {
        let file = lobu_store_file::FileStore::open(dir.path().join("store"))
            .await
            .expect("open file store")
            .into_backend();
        // Room for both runtimes' workers, their claim loops and the gateways.
        let pool = fresh_bench_database_with(40).await;
        let store = lobu_store_pg::PgStore::new(pool);
        store.migrate().await.expect("migrate");
        (file, store.into_backend())
    });

    let mut group = c.benchmark_group("throughput");
    group.measurement_time(Duration::from_secs(10));
    group.sample_size(10);

    let pg_one = start_runtime(&rt, pg.clone(), &dir.path().join("scratch-pg"), WORKERS);
    group.bench_function("pg", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| burst(std::slice::from_ref(&pg_one), iters))
    });
    let pg_two = start_runtime(&rt, pg, &dir.path().join("scratch-pg-2"), WORKERS);
    let both = [pg_one.clone(), pg_two.clone()];
    group.bench_function("pg_two_runtimes", |b| {
        b.to_async(&rt).iter_custom(|iters| burst(&both, iters))
    });
    rt.block_on(async {
        pg_one.shutdown().await;
        pg_two.shutdown().await;
    });

    let file_runtime = start_runtime(&rt, file, &dir.path().join("scratch-file"), WORKERS);
    group.bench_function("file", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| burst(std::slice::from_ref(&file_runtime), iters))
    });
    group.finish();
    rt.block_on(file_runtime.shutdown());
}

criterion_group!(benches, throughput);
criterion_main!(benches);
