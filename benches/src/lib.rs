//! Shared fixtures for lobu's criterion benches (`cargo bench -p lobu-benches`).
//!
//! Every bench measures lobu next to the physical limit of the same work in the same run (a
//! raw `SELECT` of the same bytes, a raw file read or append), so a ratio can be quoted.
//! PostgreSQL benches use a dedicated database, `lobu_bench`, created afresh on the server
//! named by `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`); they fail
//! loudly when no server answers.

use std::time::Duration;

use bytes::Bytes;
use lobu_core::transcript::{AssistantMessage, ContentBlock, TranscriptWriter, Usage};
use lobu_core::{Backend, ConversationKey, Fence, Persist, RunId, TerminalStatus, Version};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

/// The server the PostgreSQL benches use.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, empty `lobu_bench` database and a pool of 8 connections on it.
pub async fn fresh_bench_database() -> PgPool {
    fresh_bench_database_with(8).await
}

/// A fresh, empty `lobu_bench` database and a pool of `max_connections` on it.
pub async fn fresh_bench_database_with(max_connections: u32) -> PgPool {
    let admin_url = database_url();
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("PostgreSQL must be reachable at DATABASE_URL for the benches");
    sqlx::query("DROP DATABASE IF EXISTS lobu_bench WITH (FORCE)")
        .execute(&mut admin)
        .await
        .expect("drop lobu_bench");
    sqlx::query("CREATE DATABASE lobu_bench")
        .execute(&mut admin)
        .await
        .expect("create lobu_bench");
    admin.close().await.ok();
    let options: sqlx::postgres::PgConnectOptions = admin_url.parse().expect("DATABASE_URL");
    let options = options.database("lobu_bench").disable_statement_logging();
    // No ping before every acquire (sqlx's default): a broken connection fails its query
    // anyway, and the ping would add a round trip to every statement of a turn.
    PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .expect("connect to lobu_bench")
}

/// Both stores, ready for a bench: a file store in a temporary directory and a migrated
/// PostgreSQL store in a fresh `lobu_bench` database, with raw tables for the baselines
/// (`bench_raw(id int, bytes bytea)` with the store's lz4 column compression,
/// `bench_raw_append(id bigserial, bytes bytea)` and `bench_raw_runs(id bigserial, status text)`).
#[derive(Debug)]
pub struct BenchStores {
    /// Holds the file store's root (and room for raw files) for the bench's lifetime.
    pub dir: tempfile::TempDir,
    /// The file store.
    pub file: Backend,
    /// The PostgreSQL store.
    pub pg: Backend,
    /// A pool on `lobu_bench`, for the raw baselines.
    pub pool: PgPool,
}

/// Open both stores (see [`BenchStores`]).
pub async fn bench_stores() -> BenchStores {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = lobu_store_file::FileStore::open(dir.path().join("store"))
        .await
        .expect("open file store")
        .into_backend();
    let pool = fresh_bench_database().await;
    let pg_store = lobu_store_pg::PgStore::new(pool.clone());
    pg_store.migrate().await.expect("migrate");
    for statement in [
        "CREATE TABLE bench_raw (id int PRIMARY KEY, bytes bytea NOT NULL)",
        "ALTER TABLE bench_raw ALTER COLUMN bytes SET COMPRESSION lz4",
        "CREATE TABLE bench_raw_append (id bigserial PRIMARY KEY, bytes bytea NOT NULL)",
        "CREATE TABLE bench_raw_runs (id bigserial PRIMARY KEY, status text NOT NULL)",
    ] {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .expect("raw table");
    }
    BenchStores {
        dir,
        file,
        pg: pg_store.into_backend(),
        pool,
    }
}

/// One realistic turn: a user message and an assistant answer with usage.
pub fn append_turn(writer: &mut TranscriptWriter, turn: usize) {
    writer
        .user_text(&format!(
            "Turn {turn}: could you summarise what we discussed so far, briefly?"
        ))
        .expect("user entry");
    let mut reply = AssistantMessage::new(
        "anthropic",
        "claude-sonnet-4-5",
        vec![ContentBlock::text(format!(
            "Here is the summary for turn {turn}: we covered the deployment plan, the \
             rollback steps and who is on call. Nothing is blocked. ✓"
        ))],
    );
    reply.usage = Usage::tokens(1200 + turn as u64, 80);
    writer.assistant(&reply).expect("assistant entry");
}

/// A transcript of `turns` turns.
pub fn transcript_with_turns(turns: usize) -> Bytes {
    let mut writer = TranscriptWriter::new("/bench");
    writer
        .model_change("anthropic", "claude-sonnet-4-5")
        .expect("model change");
    for turn in 0..turns {
        append_turn(&mut writer, turn);
    }
    writer.into_bytes()
}

/// `base` extended by one more turn.
pub fn extend_by_one_turn(base: &Bytes, turn: usize) -> Bytes {
    let mut writer = TranscriptWriter::open(base.to_vec(), "/bench");
    append_turn(&mut writer, turn);
    writer.into_bytes()
}

/// A fresh conversation key for `label`.
pub fn fresh_key(label: &str) -> ConversationKey {
    ConversationKey::parse(
        "bench-org",
        "bench-agent",
        &format!("{label}-{}", uuid::Uuid::new_v4()),
    )
    .expect("valid key")
}

/// A conversation whose head is `transcript`, with the lease held: what a worker has in hand
/// just before persisting its next turn.
#[derive(Debug)]
pub struct SeededConversation {
    /// The conversation.
    pub key: ConversationKey,
    /// The lease's fence.
    pub fence: Fence,
    /// The head version.
    pub version: Version,
    /// The head transcript.
    pub transcript: Bytes,
}

/// Persist `transcript` as the head of a fresh conversation and keep its lease.
pub async fn seed(backend: &Backend, label: &str, transcript: Bytes) -> SeededConversation {
    let key = fresh_key(label);
    let lease = backend
        .locks
        .try_acquire(&key, Duration::from_secs(3600))
        .await
        .expect("acquire")
        .expect("fresh conversation is free");
    let version = backend
        .sessions
        .persist(
            &key,
            Persist {
                run: RunId::generate(),
                status: TerminalStatus::Completed,
                transcript: transcript.clone(),
                expected: None,
                fence: lease.fence,
            },
        )
        .await
        .expect("seed persist");
    SeededConversation {
        key,
        fence: lease.fence,
        version,
        transcript,
    }
}

/// A fresh conversation whose head is `transcript` and that nobody owns (the lease taken to
/// write it is released), ready for a runtime to run its next turn.
pub async fn seed_idle(backend: &Backend, label: &str, transcript: Bytes) -> ConversationKey {
    let key = fresh_key(label);
    let lease = backend
        .locks
        .try_acquire(&key, Duration::from_secs(60))
        .await
        .expect("acquire")
        .expect("fresh conversation is free");
    let write = Persist {
        run: RunId::generate(),
        status: TerminalStatus::Completed,
        transcript,
        expected: None,
        fence: lease.fence,
    };
    backend
        .sessions
        .persist(&key, write)
        .await
        .expect("seed persist");
    backend.locks.release(&lease).await.expect("release");
    key
}

/// Persist the next turn of `conversation` and advance it.
pub async fn persist_next(backend: &Backend, conversation: &mut SeededConversation, next: Bytes) {
    conversation.version = backend
        .sessions
        .persist(
            &conversation.key,
            Persist {
                run: RunId::generate(),
                status: TerminalStatus::Completed,
                transcript: next.clone(),
                expected: Some(conversation.version),
                fence: conversation.fence,
            },
        )
        .await
        .expect("persist next turn");
    conversation.transcript = next;
}

/// Appends one realistic turn; the cheapest honest agent.
#[derive(Debug)]
pub struct AppendTurn;

#[async_trait::async_trait]
impl lobu_runtime::Agent for AppendTurn {
    async fn run_turn(&self, turn: &mut lobu_runtime::Turn) -> Result<(), lobu_core::BoxError> {
        let n = turn.entries().len();
        append_turn(&mut turn.writer(), n);
        Ok(())
    }
}

/// A runtime of `workers` running [`AppendTurn`] on `backend`, its worker loop spawned on `rt`.
pub fn start_runtime(
    rt: &tokio::runtime::Runtime,
    backend: Backend,
    scratch: &std::path::Path,
    workers: usize,
) -> lobu_runtime::Runtime {
    let runtime = lobu_runtime::Runtime::builder(backend, std::sync::Arc::new(AppendTurn))
        .concurrency(workers)
        .scratch_root(scratch.to_path_buf())
        .build()
        .expect("runtime");
    let worker = runtime.clone();
    rt.spawn(async move { worker.run().await });
    runtime
}
