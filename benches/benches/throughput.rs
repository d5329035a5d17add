//! Turns per second with 16 workers over 64 conversations: `throughput/pg`,
//! `throughput/file`, `throughput/pg_two_runtimes` (two runtimes of 16 workers each in one
//! process on one database, as two replicas would be), and
//! `throughput/file_four_processes` (four processes of 4 workers each on one data
//! directory, this bench's own binary started again as a worker process; this process only
//! submits and follows). One criterion iteration is one turn: `iter_custom` submits `iters`
//! turns round-robin over 64 fresh conversations at once and returns the time until the last
//! one completed, so 1e9 / the median in ns is turns per second.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use futures::future::join_all;
use lobu_benches::{fresh_bench_database_with, fresh_key, start_runtime};
use lobu_core::{ConversationKey, RunStatus};
use lobu_runtime::Runtime;

const WORKERS: usize = 16;
const CONVERSATIONS: usize = 64;
/// Set (to the store's root) in the worker processes of `file_four_processes`.
const WORKER_PROCESS: &str = "LOBU_BENCH_WORKER_PROCESS_ROOT";
const PROCESSES: usize = 4;

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
    rt.block_on(file_runtime.shutdown());

    // Its own store: the in-process runtime's runs are not left for the worker processes.
    let root = dir.path().join("store-processes");
    let gateway = rt.block_on(async {
        let store = lobu_store_file::FileStore::open(&root)
            .await
            .expect("open file store");
        // A gateway only: `run` is never called, so this process claims nothing.
        let agent = std::sync::Arc::new(lobu_benches::AppendTurn);
        lobu_runtime::Runtime::builder(store.into_backend(), agent)
            .build()
            .expect("gateway")
    });
    let children: Vec<Child> = (0..PROCESSES).map(|_| worker_process(&root)).collect();
    group.bench_function("file_four_processes", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| burst(std::slice::from_ref(&gateway), iters))
    });
    group.finish();
    for mut child in children {
        // Closing its stdin tells it to stop.
        drop(child.stdin.take());
        let status = child.wait().expect("worker process");
        assert!(status.success(), "a worker process failed: {status}");
    }
}

/// Start this binary again as a worker process on the store at `root`.
fn worker_process(root: &Path) -> Child {
    Command::new(std::env::current_exe().expect("this binary"))
        .env(WORKER_PROCESS, root)
        .stdin(Stdio::piped())
        .spawn()
        .expect("start a worker process")
}

/// A worker process: `WORKERS / PROCESSES` workers on the store at `root` until its stdin
/// closes.
fn run_worker_process(root: &str) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let backend = rt.block_on(async {
        lobu_store_file::FileStore::open(root)
            .await
            .expect("open file store")
            .into_backend()
    });
    let scratch = Path::new(root).join(format!("scratch-{}", std::process::id()));
    let runtime = start_runtime(&rt, backend, &scratch, WORKERS / PROCESSES);
    // Blocks until the bench closes the pipe (or dies).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    rt.block_on(runtime.shutdown());
}

criterion_group!(benches, throughput);

fn main() {
    if let Ok(root) = std::env::var(WORKER_PROCESS) {
        run_worker_process(&root);
        return;
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
