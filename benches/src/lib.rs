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

/// Another pool of `max_connections` on the existing `lobu_bench` database (a second
/// replica's connections).
pub async fn connect_bench_database(max_connections: u32) -> PgPool {
    let options: sqlx::postgres::PgConnectOptions = database_url().parse().expect("DATABASE_URL");
    let options = options.database("lobu_bench").disable_statement_logging();
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

/// Open both stores (see [`BenchStores`]) with the default transcript size limit.
pub async fn bench_stores() -> BenchStores {
    bench_stores_with(lobu_core::DEFAULT_MAX_TRANSCRIPT_BYTES).await
}

/// The size limit of the stores that hold the long conversations of the hydrate and persist
/// benches: 16 MiB. A [`TurnLog`] turn is about 800 bytes, so 10,000 turns are 8.0 MB, just
/// under the default 8 MiB, and the measured turns past them need room.
pub const LONG_CONVERSATION_BYTES: usize = 16 * 1024 * 1024;

/// Open both stores (see [`BenchStores`]) with `max_transcript_bytes` as their size limit.
pub async fn bench_stores_with(max_transcript_bytes: usize) -> BenchStores {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = lobu_store_file::FileStore::open(dir.path().join("store"))
        .await
        .expect("open file store")
        .with_max_transcript_bytes(max_transcript_bytes)
        .expect("file store size limit")
        .into_backend();
    let pool = fresh_bench_database().await;
    let config = lobu_store_pg::PgStoreConfig::default().max_transcript_bytes(max_transcript_bytes);
    let pg_store =
        lobu_store_pg::PgStore::with_config(pool.clone(), config).expect("PostgreSQL store config");
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

/// A fresh conversation key for `label`.
pub fn fresh_key(label: &str) -> ConversationKey {
    ConversationKey::parse(
        "bench-org",
        "bench-agent",
        &format!("{label}-{}", uuid::Uuid::new_v4()),
    )
    .expect("valid key")
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
        base_len: None,
    };
    backend
        .sessions
        .persist(&key, write)
        .await
        .expect("seed persist");
    backend.locks.release(&lease).await.expect("release");
    key
}

/// A transcript written one turn at a time, and where each turn ends. `prefix(n)` is the
/// transcript after `n` turns: byte for byte what a writer continuing `prefix(n - 1)` writes
/// for turn `n` (the writer only appends), handed out without copying. Turn 0 is the header
/// and the model change a new conversation starts with.
#[derive(Debug, Clone)]
pub struct TurnLog {
    bytes: Bytes,
    /// `ends[n]`: the length of the transcript after `n` turns.
    ends: Vec<usize>,
}

impl TurnLog {
    /// A log of `turns` turns of [`append_turn`].
    pub fn new(turns: usize) -> Self {
        let mut writer = TranscriptWriter::new("/bench");
        writer
            .model_change("anthropic", "claude-sonnet-4-5")
            .expect("model change");
        let mut ends = Vec::with_capacity(turns + 1);
        ends.push(writer.len());
        for turn in 0..turns {
            append_turn(&mut writer, turn);
            ends.push(writer.len());
        }
        TurnLog {
            bytes: writer.into_bytes(),
            ends,
        }
    }

    /// How many turns the log holds.
    pub fn turns(&self) -> usize {
        self.ends.len() - 1
    }

    /// The transcript after `turns` turns.
    pub fn prefix(&self, turns: usize) -> Bytes {
        self.bytes.slice(..self.ends[turns])
    }

    /// The bytes turn `turn` (counted from 1) appends to `prefix(turn - 1)`.
    pub fn turn(&self, turn: usize) -> Bytes {
        self.bytes.slice(self.ends[turn - 1]..self.ends[turn])
    }
}

/// A conversation written the way a runtime writes one: under one lease, each turn persisted
/// through [`SessionStore::persist`](lobu_core::SessionStore::persist) as an append of its
/// new bytes to the previous transcript, from the first turn on. Whatever layout the store keeps
/// (a whole copy and its chain of deltas, an appended file and its history) is the one it
/// reaches by itself, not a fresh whole copy.
#[derive(Debug)]
pub struct GrownConversation {
    /// The conversation.
    pub key: ConversationKey,
    /// The lease's fence.
    pub fence: Fence,
    /// The head version (`None` before the first turn).
    pub version: Option<Version>,
    /// How many turns of the [`TurnLog`] the head holds.
    pub turns: usize,
}

impl GrownConversation {
    /// A fresh conversation of `label`, its lease held for an hour, nothing written yet.
    pub async fn start(backend: &Backend, label: &str) -> Self {
        let key = fresh_key(label);
        let lease = backend
            .locks
            .try_acquire(&key, Duration::from_secs(3600))
            .await
            .expect("acquire")
            .expect("fresh conversation is free");
        GrownConversation {
            key,
            fence: lease.fence,
            version: None,
            turns: 0,
        }
    }

    /// Persist the next turn of `log` as a writer that only appended does: its new bytes
    /// after the whole head (an append, [`Persist::base_len`]), so `prefix(turns + 1)`
    /// becomes the head.
    pub async fn persist_next(&mut self, backend: &Backend, log: &TurnLog) {
        let base = match self.version {
            Some(_) => log.prefix(self.turns).len(),
            None => 0,
        };
        let write = Persist {
            run: RunId::generate(),
            status: TerminalStatus::Completed,
            transcript: log.prefix(self.turns + 1).slice(base..),
            expected: self.version,
            fence: self.fence,
            base_len: Some(base),
        };
        let version = backend
            .sessions
            .persist(&self.key, write)
            .await
            .expect("persist the next turn");
        self.version = Some(version);
        self.turns += 1;
    }

    /// Persist turn after turn until the head holds `turns` turns.
    pub async fn grow_to(&mut self, backend: &Backend, log: &TurnLog, turns: usize) {
        while self.turns < turns {
            self.persist_next(backend, log).await;
        }
    }
}

/// How the PostgreSQL store holds a conversation's head: the whole copy's size, and the
/// count and size of the deltas after it, read from the store's own tables (default schema
/// `lobu`) for a bench to say what it measured. `None` if they are not as expected.
pub async fn pg_chain(pool: &PgPool, key: &ConversationKey) -> Option<PgChain> {
    sqlx::query_as::<_, (i64, i32, i64)>(
        "SELECT base_bytes, chain_deltas, chain_bytes FROM lobu.conversations \
         WHERE org = $1 AND agent = $2 AND conversation = $3",
    )
    .bind(key.org.as_str())
    .bind(key.agent.as_str())
    .bind(key.conversation.as_str())
    .fetch_optional(pool)
    .await
    .ok()
    .flatten()
    .map(|(base_bytes, deltas, delta_bytes)| PgChain {
        base_bytes,
        deltas,
        delta_bytes,
    })
}

/// A head's layout in the PostgreSQL store; see [`pg_chain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgChain {
    /// The size of the head's whole copy.
    pub base_bytes: i64,
    /// How many deltas follow it.
    pub deltas: i32,
    /// Their total size.
    pub delta_bytes: i64,
}

impl std::fmt::Display for PgChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a whole copy of {} bytes and {} deltas of {} bytes",
            self.base_bytes, self.deltas, self.delta_bytes
        )
    }
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
