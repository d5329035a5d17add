//! Retention in batches: a prune of many conversations counts every one it removed, and never
//! waits for (nor makes anyone wait for) a conversation being written at that moment.

mod support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use lobu_core::{ConversationLocks, PruneReport, SessionStore};
use lobu_store_pg::PgStore;
use sqlx::PgPool;
use support::{key, lease, turn};

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM lobu.{table}"
    )))
    .fetch_one(pool)
    .await
    .expect("count")
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_prune_of_more_rows_than_one_batch_removes_and_counts_every_one(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    // 1200 conversations idle for two hours, each with its head and one failed copy (rows
    // written directly: building them through persist would take minutes on a loaded box).
    sqlx::query(
        "INSERT INTO lobu.conversations (org, agent, conversation, fence, lease_expires_at, \
                                         head_seq, head_run, head_bytes, head_digest, base_seq, \
                                         base_bytes, turns, updated_at) \
         SELECT 'acme', 'bot', 'idle-' || i, nextval('lobu.fences'), \
                now() - interval '2 hours', 10 * i, 'run-' || i, 3, '\\x00'::bytea, 10 * i, 3, 1, \
                now() - interval '2 hours' \
           FROM generate_series(1, 1200) i",
    )
    .execute(&pool)
    .await
    .expect("idle conversations");
    sqlx::query(
        "INSERT INTO lobu.snapshots (org, agent, conversation, seq, run, status, base_seq, \
                                     start_offset, bytes, byte_size, digest, created_at) \
         SELECT 'acme', 'bot', 'idle-' || i, 10 * i + f, 'run-' || i, \
                CASE f WHEN 0 THEN 'completed' ELSE 'failed' END, 10 * i + f, 0, 'abc'::bytea, \
                3, '\\x00'::bytea, now() - interval '2 hours' \
           FROM generate_series(1, 1200) i, generate_series(0, 1) f",
    )
    .execute(&pool)
    .await
    .expect("their snapshots");
    // A conversation written just now, with 700 failed copies from two hours ago.
    let k = key("acme", "bot", "fresh");
    let held = lease(&store, &k).await;
    turn(&store, &held, None, &Bytes::from_static(b"{}\n")).await;
    sqlx::query(
        "INSERT INTO lobu.snapshots (org, agent, conversation, seq, run, status, base_seq, \
                                     start_offset, bytes, byte_size, digest, created_at) \
         SELECT 'acme', 'bot', 'fresh', 100000 + i, 'failed-' || i, 'failed', 100000 + i, 0, \
                'abc'::bytea, 3, '\\x00'::bytea, now() - interval '2 hours' \
           FROM generate_series(1, 700) i",
    )
    .execute(&pool)
    .await
    .expect("old forensic copies");

    let cutoff = SystemTime::now() - Duration::from_secs(3600);
    let report = store.prune(cutoff).await.expect("prune");
    assert_eq!(
        report,
        PruneReport {
            conversations: 1200,
            snapshots: 2 * 1200 + 700,
        }
    );
    // What is left: the fresh conversation (its row and its head); the pruned rows' spent
    // leases went too.
    assert_eq!(count(&pool, "conversations").await, 1);
    assert_eq!(count(&pool, "snapshots").await, 1);
    assert!(store.hydrate(&k).await.expect("hydrate").is_some());
    assert_eq!(
        store.prune(cutoff).await.expect("prune again"),
        PruneReport::default()
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_prune_passes_over_a_conversation_being_written_and_a_later_prune_takes_it(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let bytes = Bytes::from_static(b"{}\n");
    for name in ["free", "busy"] {
        let k = key("acme", "bot", name);
        let held = lease(&store, &k).await;
        turn(&store, &held, None, &bytes).await;
        // A live owner is never pruned: these conversations are only idle once given up.
        ConversationLocks::release(&store, &held)
            .await
            .expect("release");
    }
    // A write in flight on "busy" holds its row, as persist does.
    let mut writer = pool.begin().await.expect("begin");
    sqlx::query(
        "SELECT 1 FROM lobu.conversations \
         WHERE org = 'acme' AND agent = 'bot' AND conversation = 'busy' FOR UPDATE",
    )
    .execute(&mut *writer)
    .await
    .expect("hold the row");

    let everything = SystemTime::now() + Duration::from_secs(3600);
    let first = tokio::time::timeout(Duration::from_secs(30), store.prune(everything))
        .await
        .expect("prune did not wait for the row being written")
        .expect("prune");
    assert_eq!(
        first,
        PruneReport {
            conversations: 1,
            snapshots: 1
        }
    );
    assert!(
        store
            .hydrate(&key("acme", "bot", "busy"))
            .await
            .expect("hydrate")
            .is_some()
    );
    writer.commit().await.expect("commit");

    let second = store.prune(everything).await.expect("prune again");
    assert_eq!(
        second,
        PruneReport {
            conversations: 1,
            snapshots: 1
        }
    );
    assert_eq!(
        store
            .hydrate(&key("acme", "bot", "busy"))
            .await
            .expect("hydrate"),
        None
    );
}
