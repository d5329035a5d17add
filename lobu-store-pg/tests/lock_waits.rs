//! Calls that wait for a row another transaction holds (a prune, a large persist): the lease,
//! fence or claim they return is judged from when they got the row, not from when they asked.

mod support;

use std::time::{Duration, SystemTime};

use lobu_core::{ConversationLocks, NewRun, RunQueue, WorkerId};
use lobu_store_pg::PgStore;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use support::{LONG, key, lease, replica_pool};
use time::OffsetDateTime;

/// Long enough that a lease measured from the statement's start would visibly fall short.
const TTL: Duration = Duration::from_secs(2);

/// Wait (generously) until some backend of this database waits on a lock.
async fn until_a_call_waits_for_a_lock(pool: &PgPool) {
    for _ in 0..2400 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .expect("pg_stat_activity");
        if waiting > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the call never waited for the held row");
}

/// The database clock now, as the holder is about to commit.
async fn clock(conn: &mut PgConnection) -> SystemTime {
    let now: OffsetDateTime = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(conn)
        .await
        .expect("clock_timestamp");
    SystemTime::from(now)
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn an_acquire_that_waited_for_the_row_gets_a_full_lease_and_a_newer_fence(pool: PgPool) {
    let store = PgStore::new(replica_pool(&pool, 2).await);
    let k = key("acme", "bot", "waited");
    let first = lease(&store, &k).await;
    ConversationLocks::release(&store, &first)
        .await
        .expect("release");

    let mut holder = pool.begin().await.expect("begin");
    sqlx::query(
        "SELECT 1 FROM lobu.conversations \
         WHERE org = 'acme' AND agent = 'bot' AND conversation = 'waited' FOR UPDATE",
    )
    .execute(&mut *holder)
    .await
    .expect("hold the row");
    let acquiring = tokio::spawn({
        let (store, k) = (store.clone(), k.clone());
        async move { store.try_acquire(&k, TTL).await }
    });
    until_a_call_waits_for_a_lock(&pool).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // While the acquire waits, the holder commits a newer fence (as a takeover that got the
    // row first would), leaving the lease lapsed.
    let committed: i64 = sqlx::query_scalar(
        "UPDATE lobu.conversations SET fence = nextval('lobu.fences') \
         WHERE org = 'acme' AND agent = 'bot' AND conversation = 'waited' RETURNING fence",
    )
    .fetch_one(&mut *holder)
    .await
    .expect("a newer fence");
    let released_at = clock(&mut holder).await;
    holder.commit().await.expect("commit");

    let acquired = acquiring
        .await
        .expect("task")
        .expect("try_acquire")
        .expect("the lapsed lease is taken over");
    assert!(
        acquired.fence.0 > u64::try_from(committed).expect("fence"),
        "{} is not above the fence {committed} committed while it waited",
        acquired.fence
    );
    assert!(
        acquired.expires_at >= released_at + TTL,
        "the lease lapses at {:?}, less than {TTL:?} after the row was free at {released_at:?}",
        acquired.expires_at
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_renew_that_waited_for_the_row_lasts_its_full_duration(pool: PgPool) {
    let store = PgStore::new(replica_pool(&pool, 2).await);
    let k = key("acme", "bot", "renewed");
    let held = lease(&store, &k).await;

    let mut holder = pool.begin().await.expect("begin");
    sqlx::query(
        "SELECT 1 FROM lobu.conversations \
         WHERE org = 'acme' AND agent = 'bot' AND conversation = 'renewed' FOR UPDATE",
    )
    .execute(&mut *holder)
    .await
    .expect("hold the row");
    let renewing = tokio::spawn({
        let (store, held) = (store.clone(), held.clone());
        async move { store.renew(&held, TTL).await }
    });
    until_a_call_waits_for_a_lock(&pool).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released_at = clock(&mut holder).await;
    holder.commit().await.expect("commit");

    let renewed = renewing.await.expect("task").expect("renew");
    assert!(
        renewed.expires_at >= released_at + TTL,
        "the lease lapses at {:?}, less than {TTL:?} after the row was free at {released_at:?}",
        renewed.expires_at
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_heartbeat_that_waited_for_the_run_lasts_its_full_duration(pool: PgPool) {
    let store = PgStore::new(replica_pool(&pool, 2).await);
    let submitted = store
        .submit(NewRun::turn(key("acme", "bot", "beating"), json!({})))
        .await
        .expect("submit");
    let claim = store
        .claim(&WorkerId::generate(), LONG)
        .await
        .expect("claim")
        .expect("the run");

    let mut holder = pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM lobu.runs WHERE id = $1 FOR UPDATE")
        .bind(submitted.run.as_str())
        .execute(&mut *holder)
        .await
        .expect("hold the run");
    let beating = tokio::spawn({
        let (store, claim) = (store.clone(), claim.clone());
        async move { store.heartbeat(&claim, TTL).await }
    });
    until_a_call_waits_for_a_lock(&pool).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released_at = clock(&mut holder).await;
    holder.commit().await.expect("commit");

    let beaten = beating.await.expect("task").expect("heartbeat");
    assert!(
        beaten.expires_at >= released_at + TTL,
        "the claim lapses at {:?}, less than {TTL:?} after the run was free at {released_at:?}",
        beaten.expires_at
    );
}
