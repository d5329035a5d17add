//! Group `hydrate`: read a conversation's head as the store keeps it after N turns, next to
//! the raw read of the same bytes. N (the parameter) is 10, 100, 1,000 and 10,000 turns of
//! [`TurnLog`] (about 800 bytes a turn: 8.0 MB at 10,000); throughput is the transcript's
//! bytes.
//!
//! * `hydrate/pg/N`: `SessionStore::hydrate` on PostgreSQL of a conversation in the store's
//!   steady state: it was written as a runtime writes one, each turn persisted under one
//!   lease as the previous transcript extended by one turn, from the first turn on, so the
//!   head is whatever whole copy and chain of deltas the store left (the bench prints the
//!   layout it read at each N), not one fresh whole copy.
//! * `hydrate/raw_pg_select/N`: one `SELECT` of the same bytes from a one-column `bytea`
//!   table with the store's lz4 column compression: the least a read of them costs.
//! * `hydrate/file/N`: `SessionStore::hydrate` on the file store of a conversation written
//!   the same way.
//! * `hydrate/raw_file_read/N`: one `std::fs::read` of a file holding the same bytes, through
//!   `spawn_blocking` as any async caller must.
//! * `hydrate/raw_file_read_appended/N`: the same read of a file that was written as any
//!   append-only store writes one, a turn at a time. Linux caches a file written in one call
//!   in large pages (folios) and one grown by small appends in 4 KiB pages, which take
//!   longer to copy out (about 1.3x at 8 MB on this machine): this is the least a read of a
//!   transcript that grew turn by turn costs while it is cached.
//!
//! One conversation per store is grown, outside the measurements, and read at each N as it
//! passes it (only for the benches criterion runs). With this store, growing one to 10,000
//! turns takes about 45 s (PostgreSQL) and 60 s (files) on a quiet 2-core machine: each
//! persist hashes the whole transcript. The bench prints how long, and the PostgreSQL head's
//! layout at each N.
//!
//! Target (issue 8): `hydrate/pg/N` within 1.25× of `hydrate/raw_pg_select/N`.

use std::sync::Arc;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lobu_benches::{
    BenchStores, GrownConversation, LONG_CONVERSATION_BYTES, TurnLog, bench_stores_with, pg_chain,
};
use lobu_core::Backend;
use sqlx::PgPool;

const TURNS: [usize; 4] = [10, 100, 1000, 10_000];

fn hydrate(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let BenchStores {
        dir,
        file,
        pg,
        pool,
    } = rt.block_on(bench_stores_with(LONG_CONVERSATION_BYTES));
    let log = TurnLog::new(TURNS[TURNS.len() - 1]);
    let mut pg_conv = rt.block_on(GrownConversation::start(&pg, "hydrate"));
    let mut file_conv = rt.block_on(GrownConversation::start(&file, "hydrate"));

    let mut group = c.benchmark_group("hydrate");
    // 10 samples, not 100: a read of 10,000 turns takes tens of milliseconds.
    group.sample_size(10);
    for turns in TURNS {
        let transcript = log.prefix(turns);
        group.throughput(Throughput::Bytes(transcript.len() as u64));

        group.bench_function(BenchmarkId::new("pg", turns), |b| {
            rt.block_on(grow(&pg, &mut pg_conv, &log, turns, Some(&pool)));
            let key = &pg_conv.key;
            b.to_async(&rt).iter(|| async {
                let head = pg.sessions.hydrate(key).await.expect("hydrate");
                assert_eq!(head.expect("head").transcript.len(), transcript.len());
            })
        });

        rt.block_on(
            sqlx::query("INSERT INTO bench_raw (id, bytes) VALUES ($1, $2)")
                .bind(i32::try_from(turns).expect("turns fit an int"))
                .bind(transcript.as_ref())
                .execute(&pool),
        )
        .expect("raw insert");
        group.bench_function(BenchmarkId::new("raw_pg_select", turns), |b| {
            b.to_async(&rt).iter(|| async {
                let bytes: Vec<u8> =
                    sqlx::query_scalar("SELECT bytes FROM bench_raw WHERE id = $1")
                        .bind(i32::try_from(turns).expect("turns fit an int"))
                        .fetch_one(&pool)
                        .await
                        .expect("raw select");
                assert_eq!(bytes.len(), transcript.len());
            })
        });

        group.bench_function(BenchmarkId::new("file", turns), |b| {
            rt.block_on(grow(&file, &mut file_conv, &log, turns, None));
            let key = &file_conv.key;
            b.to_async(&rt).iter(|| async {
                let head = file.sessions.hydrate(key).await.expect("hydrate");
                assert_eq!(head.expect("head").transcript.len(), transcript.len());
            })
        });

        let raw_path = Arc::new(dir.path().join(format!("raw-{turns}.jsonl")));
        std::fs::write(&*raw_path, &transcript).expect("raw file");
        let len = transcript.len();
        let appended_path = Arc::new(dir.path().join(format!("raw-appended-{turns}.jsonl")));
        append_turn_by_turn(&appended_path, &log, turns);
        for (id, path) in [
            ("raw_file_read", raw_path),
            ("raw_file_read_appended", appended_path),
        ] {
            group.bench_function(BenchmarkId::new(id, turns), |b| {
                b.to_async(&rt).iter(|| {
                    let path = path.clone();
                    async move {
                        let bytes = tokio::task::spawn_blocking(move || std::fs::read(&*path))
                            .await
                            .expect("join")
                            .expect("read");
                        assert_eq!(bytes.len(), len);
                    }
                })
            });
        }
    }
    group.finish();
}

/// Write the first `turns` turns of `log` to `path` (after the transcript's start) one turn
/// at a time, each appended by its own `write`.
fn append_turn_by_turn(path: &std::path::Path, log: &TurnLog, turns: usize) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("raw appended file");
    file.write_all(&log.prefix(0))
        .expect("the transcript's start");
    for turn in 1..=turns {
        file.write_all(&log.turn(turn)).expect("append a turn");
    }
}

/// Grow `conversation` to `turns` turns (criterion calls a bench's closure once per batch
/// of iterations, and only for the benches it runs: after the first call this does
/// nothing). Says how long it took and, on PostgreSQL (`pool`), what the head looks like.
async fn grow(
    backend: &Backend,
    conversation: &mut GrownConversation,
    log: &TurnLog,
    turns: usize,
    pool: Option<&PgPool>,
) {
    if conversation.turns >= turns {
        return;
    }
    let (from, started) = (conversation.turns, Instant::now());
    conversation.grow_to(backend, log, turns).await;
    let layout = match pool {
        Some(pool) => pg_chain(pool, &conversation.key).await.map_or_else(
            || "; its layout is unknown".to_owned(),
            |chain| format!("; PostgreSQL holds it as {chain}"),
        ),
        None => String::new(),
    };
    eprintln!(
        "hydrate: grew a conversation from {from} to {turns} turns ({} bytes) in {:.1?}{layout}",
        log.prefix(turns).len(),
        started.elapsed()
    );
}

criterion_group!(benches, hydrate);
criterion_main!(benches);
