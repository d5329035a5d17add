//! lobu's own transcript cases against PostgreSQL: byte-exact large round trips, failed runs
//! never hydrated, the duplicate-persist race, reset purges, deltas and re-bases, rewrites.

mod support;

use bytes::Bytes;
use lobu_core::{ErrorKind, RunId, SessionStore, TerminalStatus, Version};
use lobu_store_pg::{PgStore, PgStoreConfig};
use sqlx::PgPool;
use support::{assert_kind, exchange, key, lease, replica_pool, turn, write, writer};

/// Snapshot rows of one conversation: (seq, run, status, base_seq, has bytes, stored bytes).
async fn rows(
    pool: &PgPool,
    k: &lobu_core::ConversationKey,
) -> Vec<(i64, String, String, i64, bool, i64)> {
    sqlx::query_as(
        "SELECT seq, run, status, base_seq, bytes IS NOT NULL, coalesce(octet_length(bytes), 0)::bigint \
         FROM lobu.snapshots WHERE org = $1 AND agent = $2 AND conversation = $3 ORDER BY seq",
    )
    .bind(k.org.as_str())
    .bind(k.agent.as_str())
    .bind(k.conversation.as_str())
    .fetch_all(pool)
    .await
    .expect("snapshot rows")
}

async fn hydrated(store: &PgStore, k: &lobu_core::ConversationKey) -> (Version, Bytes) {
    let head = store.hydrate(k).await.expect("hydrate").expect("a head");
    (head.version, head.transcript)
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_600_kb_multibyte_transcript_round_trips_byte_exact(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let k = key("acme", "bot", "telegram:6570514069");
    let lease = lease(&store, &k).await;
    let mut w = writer();
    let mut n = 0;
    while w.len() < 600 * 1024 {
        exchange(&mut w, n);
        n += 1;
    }
    let big = w.bytes();
    assert!(big.len() >= 600 * 1024 && std::str::from_utf8(&big).is_ok());
    assert!(big.iter().any(|b| *b >= 0x80), "multi-byte UTF-8 inside");
    let v1 = turn(&store, &lease, None, &big).await;
    let (version, back) = hydrated(&store, &k).await;
    assert_eq!(version, v1);
    assert!(
        back == big,
        "600 KB whole copy differs after the round trip"
    );
    // lobu's own check: the same lines, including the trailing newline.
    let lines = |b: &[u8]| {
        b.split(|c| *c == b'\n')
            .map(<[u8]>::to_vec)
            .collect::<Vec<_>>()
    };
    assert_eq!(lines(&back), lines(&big));
    assert_eq!(back.last(), Some(&b'\n'));

    // One more turn is stored as a delta of a few kB, and still hydrates exactly.
    exchange(&mut w, n);
    let bigger = w.bytes();
    let v2 = turn(&store, &lease, Some(v1), &bigger).await;
    let (version, back) = hydrated(&store, &k).await;
    assert_eq!(version, v2);
    assert!(
        back == bigger,
        "600 KB + delta differs after the round trip"
    );
    let stored = rows(&pool, &k).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(
        stored[1].3, stored[0].0,
        "the second turn chains to the first"
    );
    assert_eq!(
        stored[1].5 as usize,
        bigger.len() - big.len(),
        "only new bytes stored"
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_failed_run_is_never_hydrated(pool: PgPool) {
    let store = PgStore::new(pool);
    let k = key("acme", "bot", "failing");
    let lease = lease(&store, &k).await;
    let mut w = writer();
    exchange(&mut w, 1);
    let good = w.bytes();
    let v1 = turn(&store, &lease, None, &good).await;
    exchange(&mut w, 2);
    let poisoned = w.bytes();
    for status in [
        TerminalStatus::Failed,
        TerminalStatus::Timeout,
        TerminalStatus::Cancelled,
    ] {
        let run = RunId::generate();
        let bad = write(&lease, &run, status, &poisoned, Some(v1));
        store
            .persist(&k, bad)
            .await
            .expect("a forensic copy is stored");
        assert_eq!(
            hydrated(&store, &k).await,
            (v1, good.clone()),
            "after {status:?}"
        );
        assert_eq!(store.head(&k).await.expect("head"), Some(v1));
    }
    let listed = store.list(&k.org, &k.agent, None, 10).await.expect("list");
    assert_eq!((listed.items[0].version, listed.items[0].turns), (v1, 1));
    // The next turn starts from the last completed transcript, not the poisoned one.
    exchange(&mut w, 3);
    let v2 = turn(&store, &lease, Some(v1), &w.bytes()).await;
    assert!(v2 > v1);
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn the_duplicate_persist_race_stores_each_run_once(pool: PgPool) {
    // Two replicas POST the same run's snapshot at once (lobu: a turn's `finally` racing a
    // SIGTERM `stop()`): both succeed with the same version, one row per run.
    let a = PgStore::new(pool.clone());
    let b = PgStore::new(replica_pool(&pool, 3).await);
    let k = key("acme", "bot", "racing");
    let lease = lease(&a, &k).await;
    let mut w = writer();
    let mut expected = None;
    for n in 0..20 {
        exchange(&mut w, n);
        let bytes = w.bytes();
        let run = RunId::generate();
        let same = write(&lease, &run, TerminalStatus::Completed, &bytes, expected);
        let (x, y, z) = tokio::join!(
            a.persist(&k, same.clone()),
            b.persist(&k, same.clone()),
            a.persist(&k, same.clone())
        );
        let (x, y, z) = (x.expect("a"), y.expect("b"), z.expect("a again"));
        assert!(x == y && y == z, "turn {n}: {x} {y} {z}");
        expected = Some(x);
    }
    let stored = rows(&pool, &k).await;
    assert_eq!(stored.len(), 20, "one row per run");
    assert_eq!(
        hydrated(&b, &k).await,
        (expected.expect("a head"), w.bytes())
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn reset_purges_three_rows_spares_a_sibling_and_then_returns_zero(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let k = key("acme", "bot", "to-reset");
    let sibling = key("acme", "bot", "to-keep");
    let (lease, sibling_lease) = (lease(&store, &k).await, lease(&store, &sibling).await);
    let mut w = writer();
    exchange(&mut w, 1);
    let v1 = turn(&store, &lease, None, &w.bytes()).await;
    exchange(&mut w, 2);
    let v2 = turn(&store, &lease, Some(v1), &w.bytes()).await;
    exchange(&mut w, 3);
    let failed = write(
        &lease,
        &RunId::generate(),
        TerminalStatus::Failed,
        &w.bytes(),
        Some(v2),
    );
    store.persist(&k, failed).await.expect("forensic copy");
    let kept = turn(&store, &sibling_lease, None, &w.bytes()).await;
    assert_eq!(rows(&pool, &k).await.len(), 3);

    assert_kind(
        store.clear(&k, sibling_lease.fence).await,
        ErrorKind::Fenced,
        "another conversation's fence",
    );
    assert_eq!(
        rows(&pool, &k).await.len(),
        3,
        "a fenced clear removes nothing"
    );
    assert_eq!(store.clear(&k, lease.fence).await.expect("clear"), 3);
    assert!(
        rows(&pool, &k).await.is_empty(),
        "every row of the conversation is gone"
    );
    assert_eq!(store.hydrate(&k).await.expect("hydrate"), None);
    assert_eq!(store.clear(&k, lease.fence).await.expect("clear again"), 0);
    assert_eq!(hydrated(&store, &sibling).await, (kept, w.bytes()));
    assert_eq!(rows(&pool, &sibling).await.len(), 1);
    // The lease survives a reset, and the next write is a fresh start with a newer version.
    let fresh = Bytes::from_static(b"{\"type\":\"session\",\"version\":3}\n");
    let v3 = turn(&store, &lease, None, &fresh).await;
    assert!(v3 > v2);
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn appends_chain_until_the_limit_then_the_server_builds_the_whole_copy(pool: PgPool) {
    let config = PgStoreConfig::default().max_chain_deltas(4);
    let store = PgStore::with_config(pool.clone(), config).expect("config");
    let k = key("acme", "bot", "appended");
    let lease = lease(&store, &k).await;
    let mut w = writer();
    for n in 0..30 {
        exchange(&mut w, n);
    }
    let mut head = (turn(&store, &lease, None, &w.bytes()).await, w.bytes());
    for n in 30..42 {
        exchange(&mut w, n);
        let whole = w.bytes();
        let mut next = write(
            &lease,
            &RunId::generate(),
            TerminalStatus::Completed,
            &whole.slice(head.1.len()..),
            Some(head.0),
        );
        next.base_len = Some(head.1.len());
        let version = store.persist(&k, next).await.expect("append");
        head = (version, whole);
        assert_eq!(hydrated(&store, &k).await, head.clone(), "turn {n}");
    }
    let stored = rows(&pool, &k).await;
    let bases: Vec<usize> = (0..stored.len())
        .filter(|&i| stored[i].3 == stored[i].0)
        .collect();
    assert_eq!(bases, [0, 5, 10], "a whole copy after every 4 deltas");
    let live = stored.iter().filter(|r| r.4).count();
    assert_eq!(live, 3, "only the head's chain keeps bytes");
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn deltas_chain_until_the_limit_then_a_whole_copy_restarts_the_chain(pool: PgPool) {
    let config = PgStoreConfig::default().max_chain_deltas(4);
    let store = PgStore::with_config(pool.clone(), config).expect("config");
    let k = key("acme", "bot", "chained");
    let lease = lease(&store, &k).await;
    let mut w = writer();
    // A long first turn, so the byte rule leaves the count rule in charge.
    for n in 0..30 {
        exchange(&mut w, n);
    }
    let mut expected = Some(turn(&store, &lease, None, &w.bytes()).await);
    let mut history = Vec::new();
    for n in 30..42 {
        exchange(&mut w, n);
        let run = RunId::generate();
        let next = write(
            &lease,
            &run,
            TerminalStatus::Completed,
            &w.bytes(),
            expected,
        );
        let version = store.persist(&k, next).await.expect("persist");
        history.push((run, w.bytes(), version));
        expected = Some(version);
        assert_eq!(hydrated(&store, &k).await, (version, w.bytes()), "turn {n}");
    }
    let stored = rows(&pool, &k).await;
    let bases: Vec<usize> = (0..stored.len())
        .filter(|&i| stored[i].3 == stored[i].0)
        .collect();
    assert_eq!(bases, [0, 5, 10], "a whole copy after every 4 deltas");
    let live: Vec<bool> = stored.iter().map(|r| r.4).collect();
    assert_eq!(
        live.iter().filter(|l| **l).count(),
        3,
        "only the head's chain keeps bytes"
    );
    assert!(
        live[10] && live[11] && live[12],
        "the chain of the last whole copy"
    );
    // A late retry of a superseded run is still recognised from its record (size, digest),
    // though its bytes are gone; other bytes for that run conflict.
    let (old_run, old_bytes, old_version) = &history[0];
    let retry = write(&lease, old_run, TerminalStatus::Completed, old_bytes, None);
    assert_eq!(
        store.persist(&k, retry).await.expect("a late retry"),
        *old_version
    );
    let divergent = write(
        &lease,
        old_run,
        TerminalStatus::Completed,
        &w.bytes(),
        expected,
    );
    assert_kind(
        store.persist(&k, divergent).await,
        ErrorKind::Conflict,
        "old run, other bytes",
    );
    assert_eq!(rows(&pool, &k).await.len(), 13, "neither wrote a row");
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_rewritten_history_is_stored_whole_and_renames_the_conversation(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let k = key("acme", "bot", "compacted");
    let lease = lease(&store, &k).await;
    let mut w = writer();
    let mut expected = None;
    for n in 0..5 {
        exchange(&mut w, n);
        expected = Some(turn(&store, &lease, expected, &w.bytes()).await);
    }
    let title = |bytes: &[u8]| lobu_core::transcript::title(bytes);
    let listed = store.list(&k.org, &k.agent, None, 1).await.expect("list");
    assert_eq!(listed.items[0].title, title(&w.bytes()));
    // Compaction: a new history that does not extend the old one.
    let mut compacted = writer();
    compacted
        .user_text("Summary so far: the deploy was rolled back.")
        .expect("user");
    let v = turn(&store, &lease, expected, &compacted.bytes()).await;
    assert_eq!(hydrated(&store, &k).await, (v, compacted.bytes()));
    let stored = rows(&pool, &k).await;
    let last = stored.last().expect("rows");
    assert_eq!(last.3, last.0, "a rewrite is a whole copy");
    assert!(
        stored[..stored.len() - 1].iter().all(|r| !r.4),
        "old bytes dropped"
    );
    let listed = store.list(&k.org, &k.agent, None, 1).await.expect("list");
    assert_eq!(listed.items[0].title, title(&compacted.bytes()));
    assert_eq!(listed.items[0].turns, 6);
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_broken_chain_is_corrupt_never_a_wrong_transcript(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let k = key("acme", "bot", "broken");
    let lease = lease(&store, &k).await;
    let mut w = writer();
    exchange(&mut w, 1);
    let v1 = turn(&store, &lease, None, &w.bytes()).await;
    exchange(&mut w, 2);
    let v2 = turn(&store, &lease, Some(v1), &w.bytes()).await;
    exchange(&mut w, 3);
    turn(&store, &lease, Some(v2), &w.bytes()).await;
    sqlx::query("DELETE FROM lobu.snapshots WHERE seq = $1")
        .bind(i64::try_from(v2.0).expect("seq"))
        .execute(&pool)
        .await
        .expect("break the chain");
    assert_kind(
        store.hydrate(&k).await,
        ErrorKind::Corrupt,
        "a delta is missing",
    );
}
