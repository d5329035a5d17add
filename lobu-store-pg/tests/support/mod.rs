//! Helpers shared by the PostgreSQL tests: keys, leases, realistic transcripts, second pools.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use lobu_core::transcript::{AssistantMessage, ContentBlock, TranscriptWriter, Usage};
use lobu_core::{
    ConversationKey, ConversationLocks, ErrorKind, Lease, Persist, RunId, SessionStore,
    TerminalStatus, Version,
};
use lobu_store_pg::{MIGRATOR, PgStore};
use sqlx::PgPool;
use sqlx::migrate::{Migration, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Leases tests hold for their whole length.
pub(crate) const LONG: Duration = Duration::from_secs(120);

pub(crate) fn key(org: &str, agent: &str, conversation: &str) -> ConversationKey {
    ConversationKey::parse(org, agent, conversation).expect("valid key")
}

pub(crate) async fn lease(store: &PgStore, key: &ConversationKey) -> Lease {
    store
        .try_acquire(key, LONG)
        .await
        .expect("try_acquire")
        .expect("the conversation is free")
}

pub(crate) fn write(
    lease: &Lease,
    run: &RunId,
    status: TerminalStatus,
    bytes: &Bytes,
    expected: Option<Version>,
) -> Persist {
    Persist {
        run: run.clone(),
        status,
        transcript: bytes.clone(),
        expected,
        fence: lease.fence,
        base_len: None,
    }
}

/// Persist `bytes` as a completed turn of a fresh run on top of `expected`.
pub(crate) async fn turn(
    store: &PgStore,
    lease: &Lease,
    expected: Option<Version>,
    bytes: &Bytes,
) -> Version {
    let run = RunId::generate();
    let write = write(lease, &run, TerminalStatus::Completed, bytes, expected);
    store.persist(&lease.key, write).await.expect("persist")
}

pub(crate) fn assert_kind<T: std::fmt::Debug>(
    result: lobu_core::Result<T>,
    kind: ErrorKind,
    what: &str,
) {
    match result {
        Err(e) => assert_eq!(e.kind(), kind, "{what}: {e}"),
        Ok(v) => panic!("{what}: expected {kind}, got Ok({v:?})"),
    }
}

/// Deterministic text in a few scripts, `words` words long.
pub(crate) fn prose(seed: u64, words: usize) -> String {
    const VOCABULARY: &[&str] = &[
        "the",
        "agent",
        "checks",
        "logs",
        "and",
        "replies",
        "with",
        "a",
        "plan",
        "deploy",
        "rollback",
        "database",
        "replica",
        "lease",
        "token",
        "naïve",
        "café",
        "résumé",
        "données",
        "日本語",
        "テキスト",
        "😀",
        "✓",
        "über",
        "Grüße",
        "ÆØÅ",
        "λόγος",
        "мир",
    ];
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = String::new();
    for i in 0..words {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        let word = VOCABULARY[(state >> 33) as usize % VOCABULARY.len()];
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
        if (state >> 20).is_multiple_of(11) {
            out.push_str(&format!(" #{}", state % 100_000));
        }
    }
    out
}

/// A transcript writer with a header and a model, ready for turns.
pub(crate) fn writer() -> TranscriptWriter {
    let mut writer = TranscriptWriter::new("/work/conversation");
    writer
        .model_change("anthropic", "claude-sonnet-4-5")
        .expect("model change");
    writer
}

/// Append one realistic exchange: a user message and an assistant reply with usage.
pub(crate) fn exchange(writer: &mut TranscriptWriter, n: u64) {
    let question = prose(n * 2, 25 + (n as usize * 7) % 40);
    writer.user_text(&question).expect("user text");
    let answer = prose(n * 2 + 1, 120 + (n as usize * 37) % 200);
    let mut reply = AssistantMessage::new(
        "anthropic",
        "claude-sonnet-4-5",
        vec![ContentBlock::text(answer)],
    );
    reply.usage = Usage::tokens(1_000 + n * 350, 80 + n % 300);
    writer.assistant(&reply).expect("assistant");
}

/// A second, independent pool on the same test database: another replica.
pub(crate) async fn replica_pool(pool: &PgPool, connections: u32) -> PgPool {
    let options: PgConnectOptions = (*pool.connect_options()).clone();
    PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(options)
        .await
        .expect("a second pool")
}

/// The schema as it stood before migration `version` (`count` migrations), in `lobu`.
pub(crate) fn release_before(version: i64, count: usize) -> Migrator {
    let old: Vec<Migration> = MIGRATOR
        .iter()
        .filter(|m| m.version < version)
        .cloned()
        .collect();
    assert_eq!(old.len(), count, "the schema before {version}");
    let mut migrator = Migrator::with_migrations(old);
    migrator.dangerous_set_table_name("lobu._sqlx_migrations");
    migrator.create_schema("lobu");
    migrator
}

/// A turn (`NewRun::turn`'s 3 attempts and 2 s delay) submitted as schema versions 1 to 6
/// did: their submit's insert, which knew no `steer` column. For data written before an
/// upgrade (this release's submit needs version 7, and a store migrates before it serves).
pub(crate) async fn submit_before_v7(
    pool: &PgPool,
    key: &ConversationKey,
    payload: serde_json::Value,
) -> RunId {
    let id = RunId::generate();
    sqlx::query(
        "INSERT INTO lobu.runs \
             (id, org, agent, conversation, kind, payload, max_attempts, retry_delay_us) \
         VALUES ($1, $2, $3, $4, 'turn', $5, 3, 2000000)",
    )
    .bind(id.as_str())
    .bind(key.org.as_str())
    .bind(key.agent.as_str())
    .bind(key.conversation.as_str())
    .bind(sqlx::types::Json(payload))
    .execute(pool)
    .await
    .expect("a submit as versions 1 to 6 made it");
    id
}

/// A claim by `worker` as schema versions 3 to 7 made it (their claim statement, which knew
/// no lanes), for runs claimed before an upgrade: this release's claim needs version 8, and
/// a store migrates before it serves. `None`: nothing was claimable.
pub(crate) async fn claim_before_v8(
    pool: &PgPool,
    worker: &lobu_core::WorkerId,
    lease: Duration,
) -> Option<lobu_core::Claim> {
    type Row = (
        String,
        String,
        String,
        String,
        String,
        sqlx::types::Json<serde_json::Value>,
    );
    type Rest = (i32, i32, i64, time::OffsetDateTime, Option<i64>);
    let row: Option<(Row, Rest)> = sqlx::query(include_str!("claim_before_v8.sql"))
        .bind(worker.as_str())
        .bind(i64::try_from(lease.as_micros()).expect("a short lease"))
        .try_map(|row: sqlx::postgres::PgRow| {
            use sqlx::Row as _;
            let text = |name: &str| row.try_get::<String, _>(name);
            Ok((
                (
                    text("id")?,
                    text("org")?,
                    text("agent")?,
                    text("conversation")?,
                    text("kind")?,
                    row.try_get("payload")?,
                ),
                (
                    row.try_get("attempts")?,
                    row.try_get("max_attempts")?,
                    row.try_get("fence")?,
                    row.try_get("claim_expires_at")?,
                    row.try_get("head_seq")?,
                ),
            ))
        })
        .fetch_optional(pool)
        .await
        .expect("a claim as versions 3 to 7 made it");
    let ((id, org, agent, conversation, kind, payload), rest) = row?;
    let (attempts, max_attempts, fence, expires_at, head) = rest;
    let count = |n: i32| u32::try_from(n).expect("a count");
    Some(lobu_core::Claim {
        run: RunId::new(id).expect("a run id"),
        key: key(&org, &agent, &conversation),
        kind: lobu_core::RunKind::parse(&kind).expect("a run kind"),
        payload: payload.0,
        attempt: count(attempts),
        max_attempts: count(max_attempts),
        worker: worker.clone(),
        fence: lobu_core::Fence(u64::try_from(fence).expect("a fence")),
        head: head.map(|seq| Version(u64::try_from(seq).expect("a version"))),
        expires_at: expires_at.into(),
    })
}
