//! Run events on PostgreSQL beyond the conformance clauses: pages bounded in bytes, appends
//! racing under one claim, the pooled connection's settings, retention in batches and with
//! the runs.

mod support;

use std::time::{Duration, SystemTime};

use lobu_core::events::{MAX_EVENTS_PER_READ, StoredEvent};
use lobu_core::{Claim, Commit, ErrorKind, NewRun, RunQueue, WorkerId};
use lobu_store_pg::PgStore;
use serde_json::json;
use sqlx::PgPool;
use support::{LONG, key, replica_pool};

async fn claimed(store: &PgStore, conversation: &str) -> Claim {
    let k = key("acme", "bot", conversation);
    store
        .submit(NewRun::turn(k, json!({"text": "hi"})))
        .await
        .expect("submit");
    store
        .claim(&WorkerId::generate(), LONG)
        .await
        .expect("claim")
        .expect("a claimable run")
}

async fn all_events(store: &PgStore, claim: &Claim) -> Vec<StoredEvent> {
    let page = store
        .read_events(&claim.key.org, &claim.run, 0, MAX_EVENTS_PER_READ)
        .await
        .expect("read events")
        .expect("the run");
    page.events
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("count")
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_page_of_large_events_stops_before_16_mib_and_the_next_read_continues(pool: PgPool) {
    let store = PgStore::new(pool);
    let claim = claimed(&store, "large").await;
    let big = |n: usize| format!(r#"{{"n":{n},"text":"{}"}}"#, "x".repeat(1_000_000));
    let events: Vec<String> = (1..=20).map(big).collect();
    assert_eq!(
        store.record_events(&claim, &events).await.expect("record"),
        20
    );
    let first = store
        .read_events(&claim.key.org, &claim.run, 0, MAX_EVENTS_PER_READ)
        .await
        .expect("read")
        .expect("the run");
    let taken = first.events.len();
    assert!(
        (1..20).contains(&taken),
        "a bounded page, not {taken} events"
    );
    let bytes: usize = first.events.iter().map(|e| e.data.len()).sum();
    assert!(bytes <= 16 * 1024 * 1024 + events[0].len(), "{bytes} bytes");
    assert_eq!(first.last_seq, 20, "the page says more are stored");
    assert!(!first.ends_the_run(0));
    let rest = store
        .read_events(
            &claim.key.org,
            &claim.run,
            taken as u64,
            MAX_EVENTS_PER_READ,
        )
        .await
        .expect("read")
        .expect("the run");
    let read: Vec<&str> = first
        .events
        .iter()
        .chain(&rest.events)
        .map(|e| e.data.as_str())
        .collect();
    assert_eq!(read, events.iter().map(String::as_str).collect::<Vec<_>>());
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn appends_racing_under_one_claim_each_store_whole_numbered_runs_or_conflict(pool: PgPool) {
    let store = PgStore::new(replica_pool(&pool, 8).await);
    let claim = claimed(&store, "racing").await;
    let appends = (0..8).map(|a| {
        let (store, claim) = (store.clone(), claim.clone());
        async move {
            let batch: Vec<String> = (0..3)
                .map(|i| format!(r#"{{"append":{a},"i":{i}}}"#))
                .collect();
            store.record_events(&claim, &batch).await
        }
    });
    let results = futures::future::join_all(appends).await;
    let mut stored = 0;
    for result in results {
        match result {
            Ok(last) => {
                stored += 3;
                assert_eq!(last % 3, 0, "an append's events are consecutive");
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
        }
    }
    assert!(stored > 0, "at least one append went through");
    let events = all_events(&store, &claim).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=stored).collect::<Vec<u64>>(),
        "no gap, no seq twice"
    );
    for batch in events.chunks(3) {
        let one: serde_json::Value = serde_json::from_str(&batch[0].data).expect("json");
        for (i, event) in batch.iter().enumerate() {
            let event: serde_json::Value = serde_json::from_str(&event.data).expect("json");
            assert_eq!((&event["append"], &event["i"]), (&one["append"], &json!(i)));
        }
    }
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn recording_events_leaves_the_pooled_connections_synchronous_commit_on(pool: PgPool) {
    // One connection: the append and the check below share it.
    let store = PgStore::new(replica_pool(&pool, 1).await);
    let claim = claimed(&store, "settings").await;
    let event = r#"{"type":"output"}"#.to_owned();
    store.record_events(&claim, &[event]).await.expect("record");
    let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(store.pool())
        .await
        .expect("show");
    assert_eq!(
        setting, "on",
        "the append's asynchronous commit was its own"
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn prune_events_of_more_runs_than_one_batch_counts_every_event_and_keeps_live_runs(
    pool: PgPool,
) {
    let store = PgStore::new(pool.clone());
    // 10,050 runs that finished two hours ago with two events each (written directly:
    // through the queue it would take minutes).
    sqlx::query(
        "INSERT INTO lobu.runs (id, org, agent, conversation, kind, status, payload, \
                                max_attempts, retry_delay_us, attempts, finished_at) \
         SELECT 'old-' || i, 'acme', 'bot', 'old-' || i, 'turn', 'completed', '{}', 3, 0, 1, \
                now() - interval '2 hours' \
           FROM generate_series(1, 10050) i",
    )
    .execute(&pool)
    .await
    .expect("old runs");
    sqlx::query(
        "INSERT INTO lobu.run_events (run_id, seq, attempt, data) \
         SELECT 'old-' || i, s, 1, '{}' FROM generate_series(1, 10050) i, generate_series(1, 2) s",
    )
    .execute(&pool)
    .await
    .expect("their events");
    let live = claimed(&store, "live").await;
    let events = vec![r#"{"n":1}"#.to_owned(), r#"{"n":2}"#.to_owned()];
    store.record_events(&live, &events).await.expect("record");

    let cutoff = SystemTime::now() - Duration::from_secs(3600);
    assert_eq!(store.prune_events(cutoff).await.expect("prune"), 2 * 10050);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM lobu.run_events").await,
        2
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM lobu.runs").await,
        10051,
        "runs stay"
    );
    assert_eq!(all_events(&store, &live).await.len(), 2);
    assert_eq!(store.prune_events(cutoff).await.expect("again"), 0);
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn prune_runs_takes_a_pruned_runs_events_with_it(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let done = claimed(&store, "done").await;
    let events = vec![r#"{"n":1}"#.to_owned(), r#"{"n":2}"#.to_owned()];
    store.record_events(&done, &events).await.expect("record");
    store
        .complete(&done, Commit::default())
        .await
        .expect("complete");
    let live = claimed(&store, "live").await;
    store.record_events(&live, &events).await.expect("record");

    let later = SystemTime::now() + Duration::from_secs(60);
    assert_eq!(store.prune_runs(later).await.expect("prune runs"), 1);
    let gone = store.read_events(&done.key.org, &done.run, 0, 10).await;
    assert!(gone.expect("read").is_none(), "the run is gone");
    let left = count(&pool, "SELECT count(*) FROM lobu.run_events").await;
    assert_eq!(left, 2, "only the live run's events are left");
    assert_eq!(all_events(&store, &live).await.len(), 2);
}
