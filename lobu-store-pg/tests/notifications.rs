//! Followers of a run on one replica are woken by another replica's writes (the run's id is
//! the NOTIFY payload), not by the next status poll, and not by other runs' changes. A run's
//! events wake its followers and nobody waiting for work.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use lobu_core::{Claim, Commit, Failure, NewRun, RunQueue, TerminalStatus, WorkerId};
use lobu_store_pg::{PgStore, PgStoreConfig};
use serde_json::json;
use sqlx::PgPool;
use support::{LONG, key};
use tokio::task::JoinHandle;

/// Two replicas of one database: `here` follows, `there` executes.
async fn replicas(pool: PgPool) -> (Arc<PgStore>, PgStore) {
    let here = Arc::new(PgStore::new(pool.clone()));
    // Returns once the LISTEN connection is up (it wakes waiters when it connects).
    here.wait_for_work(Duration::from_secs(10)).await;
    (here, PgStore::new(pool))
}

async fn claimed(there: &PgStore, conversation: &str) -> Claim {
    let k = key("acme", "bot", conversation);
    let mut run = NewRun::turn(k, json!({"text": "hi"}));
    run.max_attempts = 2;
    there.submit(run).await.expect("submit");
    there
        .claim(&WorkerId::generate(), LONG)
        .await
        .expect("claim")
        .expect("a claimable run")
}

fn follow(here: &Arc<PgStore>, claim: &Claim) -> JoinHandle<()> {
    let since = Instant::now();
    let (here, org, run) = (here.clone(), claim.key.org.clone(), claim.run.clone());
    tokio::spawn(async move {
        here.wait_for_run(&org, &run, since, Duration::from_secs(600))
            .await;
    })
}

async fn assert_still_waiting(follower: &JoinHandle<()>, why: &str) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!follower.is_finished(), "woken before {why}");
}

async fn assert_woken(follower: JoinHandle<()>, by: &str) {
    let woken = tokio::time::timeout(Duration::from_secs(10), follower).await;
    assert!(woken.is_ok(), "not woken within 10 s of {by}");
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_follower_on_another_replica_wakes_when_the_run_completes(pool: PgPool) {
    let (here, there) = replicas(pool).await;
    let claim = claimed(&there, "completes").await;
    let follower = follow(&here, &claim);
    assert_still_waiting(&follower, "the run changed").await;
    let other = claimed(&there, "another").await;
    there
        .complete(&other, Commit::default())
        .await
        .expect("complete another run");
    assert_still_waiting(&follower, "its own run changed (another run completed)").await;
    there
        .complete(&claim, Commit::default())
        .await
        .expect("complete");
    assert_woken(follower, "the run completing").await;
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_follower_on_another_replica_wakes_when_an_attempt_fails(pool: PgPool) {
    let (here, there) = replicas(pool).await;
    let claim = claimed(&there, "fails").await;
    let follower = follow(&here, &claim);
    assert_still_waiting(&follower, "the run changed").await;
    there
        .fail(&claim, &Failure::new(TerminalStatus::Failed, "boom"))
        .await
        .expect("fail");
    assert_woken(follower, "the attempt failing").await;
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn events_recorded_on_one_replica_wake_the_runs_followers_on_another_and_no_idle_worker(
    pool: PgPool,
) {
    // `here` polls for work only every 60 s, so a wait for work that ends sooner was woken.
    let config = PgStoreConfig::default().poll_interval(Duration::from_secs(60));
    let here = Arc::new(PgStore::with_config(pool.clone(), config).expect("config"));
    // Returns once the LISTEN connection is up (it wakes waiters when it connects).
    here.wait_for_work(Duration::from_secs(10)).await;
    let there = PgStore::new(pool);
    let claim = claimed(&there, "streams").await;
    // The submit's own notification (new work) reaches `here` first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = {
        let here = here.clone();
        tokio::spawn(async move { here.wait_for_work(Duration::from_secs(600)).await })
    };
    for n in 0..3 {
        let follower = follow(&here, &claim);
        let started = Instant::now();
        let event = format!(r#"{{"type":"output","n":{n}}}"#);
        there
            .record_events(&claim, &[event])
            .await
            .expect("record events");
        assert_woken(follower, "events of the run").await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "woken by the notification, not a poll ({:?})",
            started.elapsed()
        );
    }
    assert_still_waiting(
        &idle,
        "anything became claimable (only events were recorded)",
    )
    .await;
    idle.abort();
}
