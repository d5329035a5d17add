//! The run queue against PostgreSQL: many concurrent claimers on many replicas, NOTIFY
//! wake-ups and the polling fallback, JSONB payloads, idempotency races across replicas.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lobu_core::{Commit, ConversationKey, IdempotencyKey, NewRun, RunId, RunQueue, WorkerId};
use lobu_store_pg::{PgStore, PgStoreConfig};
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use support::{key, replica_pool};

const CONVERSATIONS: usize = 6;
const RUNS_EACH: usize = 8;

/// Claimed runs by conversation, shared by every claimer, plus the completion order.
#[derive(Default)]
struct Ledger {
    active: HashMap<ConversationKey, RunId>,
    completed: HashMap<ConversationKey, Vec<RunId>>,
}

/// One replica with `claimers` concurrent claim loops; stops once `total` runs completed.
fn replica(options: PgConnectOptions, ledger: Arc<Mutex<Ledger>>, claimers: usize, total: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let pool = PgPoolOptions::new()
            .max_connections(3)
            .connect_with(options)
            .await
            .expect("pool");
        let store = PgStore::new(pool);
        let loops = (0..claimers).map(|_| {
            let (store, ledger) = (store.clone(), ledger.clone());
            async move {
                let worker = WorkerId::generate();
                let done = |l: &Ledger| l.completed.values().map(Vec::len).sum::<usize>() >= total;
                while !done(&ledger.lock().expect("ledger")) {
                    let claim = store
                        .claim(&worker, Duration::from_secs(60))
                        .await
                        .expect("claim");
                    let Some(claim) = claim else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    {
                        let mut l = ledger.lock().expect("ledger");
                        if let Some(other) = l.active.insert(claim.key.clone(), claim.run.clone()) {
                            panic!("{:?}: {} claimed while {other} was", claim.key, claim.run);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await; // the "turn"
                    {
                        let mut l = ledger.lock().expect("ledger");
                        l.active.remove(&claim.key);
                        l.completed
                            .entry(claim.key.clone())
                            .or_default()
                            .push(claim.run.clone());
                    }
                    store
                        .complete(&claim, Commit::output(None))
                        .await
                        .expect("complete");
                }
            }
        });
        futures::future::join_all(loops).await;
    });
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn many_claimers_on_many_replicas_never_hold_two_runs_of_one_conversation(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let mut submitted: HashMap<ConversationKey, Vec<RunId>> = HashMap::new();
    for n in 0..RUNS_EACH {
        for c in 0..CONVERSATIONS {
            let k = key("acme", "bot", &format!("conversation-{c}"));
            let run = store
                .submit(NewRun::turn(k.clone(), json!({"n": n})))
                .await
                .expect("submit");
            submitted.entry(k).or_default().push(run.run);
        }
    }
    let options: PgConnectOptions = (*pool.connect_options()).clone();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let total = CONVERSATIONS * RUNS_EACH;
    let replicas: Vec<_> = (0..3)
        .map(|_| {
            let (options, ledger) = (options.clone(), ledger.clone());
            std::thread::spawn(move || replica(options, ledger, 3, total))
        })
        .collect();
    for replica in replicas {
        replica
            .join()
            .expect("no replica saw two claims of one conversation");
    }
    let completed = std::mem::take(&mut ledger.lock().expect("ledger").completed);
    assert_eq!(
        completed, submitted,
        "every run once, in submit order per conversation"
    );
    assert_eq!(store.depth().await.expect("depth"), 0);
    let unfinished: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM lobu.runs WHERE status <> 'completed' OR attempts <> 1",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(unfinished, 0, "each run completed on its first attempt");
}

async fn listening(pool: &PgPool) -> bool {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN %'",
    )
    .fetch_one(pool)
    .await
    .expect("pg_stat_activity");
    n > 0
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_notification_wakes_a_waiter_long_before_its_poll_interval(pool: PgPool) {
    let hour = Duration::from_secs(3600);
    let config = PgStoreConfig::default().poll_interval(hour);
    let waiter = PgStore::with_config(pool.clone(), config).expect("config");
    let submitter = PgStore::new(replica_pool(&pool, 1).await);
    // The first wait starts the listener; wait until it is subscribed.
    waiter.wait_for_work(Duration::from_millis(10)).await;
    for _ in 0..400 {
        if listening(&pool).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(listening(&pool).await, "the wake-up listener subscribed");
    let waiting = tokio::spawn({
        let waiter = waiter.clone();
        async move { waiter.wait_for_work(hour).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let k = key("acme", "bot", "wake-me");
    submitter
        .submit(NewRun::turn(k, json!({})))
        .await
        .expect("submit");
    tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the NOTIFY woke the waiter (its poll interval is an hour)")
        .expect("waiter task");
    // The listener ends with the store: its connection does not outlive it.
    drop(waiter);
    for _ in 0..1200 {
        if !listening(&pool).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the LISTEN connection outlived its store");
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn the_polling_fallback_delivers_when_notifications_never_arrive(pool: PgPool) {
    // LISTEN goes to a port where nothing answers, as behind a transaction-mode pooler.
    let nowhere = (*pool.connect_options()).clone().port(1);
    let config = PgStoreConfig::default()
        .poll_interval(Duration::from_millis(50))
        .direct_connect_options(nowhere);
    let worker_store = PgStore::with_config(pool.clone(), config).expect("config");
    let submitter = PgStore::new(replica_pool(&pool, 1).await);
    let worker = WorkerId::generate();
    let k = key("acme", "bot", "polled");
    let deliver = async {
        loop {
            if let Some(claim) = worker_store
                .claim(&worker, support::LONG)
                .await
                .expect("claim")
            {
                return claim;
            }
            // A caller asking to wait an hour still polls every 50 ms.
            worker_store.wait_for_work(Duration::from_secs(3600)).await;
        }
    };
    let submit = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        submitter
            .submit(NewRun::turn(k.clone(), json!({"m": 1})))
            .await
            .expect("submit")
    };
    let (claim, submitted) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(deliver, submit)
    })
    .await
    .expect("polling found the run without any notification");
    assert_eq!(claim.run, submitted.run);
    assert!(
        !listening(&pool).await,
        "no LISTEN connection was ever made"
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn payloads_are_stored_as_jsonb_objects_and_come_back_unchanged(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let k = key("acme", "bot", "payloads");
    let payload = json!({"message": "héllo 👋", "n": 1.5, "nested": {"list": [1, null, "x"]}});
    let run = store
        .submit(NewRun::turn(k.clone(), payload.clone()))
        .await
        .expect("submit");
    let (kind, stored): (String, serde_json::Value) =
        sqlx::query_as("SELECT jsonb_typeof(payload), payload FROM lobu.runs WHERE id = $1")
            .bind(run.run.as_str())
            .fetch_one(&pool)
            .await
            .expect("row");
    assert_eq!(
        (kind.as_str(), &stored),
        ("object", &payload),
        "lobu R4: an object, not a string"
    );
    let record = store
        .status(&k.org, &run.run)
        .await
        .expect("status")
        .expect("found");
    assert_eq!(record.payload, payload);
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn racing_submits_with_one_idempotency_key_on_two_replicas_make_one_run(pool: PgPool) {
    let a = PgStore::new(pool.clone());
    let b = PgStore::new(replica_pool(&pool, 3).await);
    for round in 0..10 {
        let k = key("acme", "bot", &format!("idem-{round}"));
        let with_key = |n: u32| {
            let mut run = NewRun::turn(k.clone(), json!({"n": n}));
            run.idempotency_key = Some(IdempotencyKey::new("client-retry-1").expect("key"));
            run
        };
        let (x, y, z) = tokio::join!(
            a.submit(with_key(1)),
            b.submit(with_key(2)),
            b.submit(with_key(3))
        );
        let all = [x.expect("a"), y.expect("b"), z.expect("b again")];
        assert!(
            all.iter().all(|s| s.run == all[0].run),
            "round {round}: {all:?}"
        );
        assert_eq!(
            all.iter().filter(|s| s.created).count(),
            1,
            "round {round}: one created"
        );
    }
    // The same key in another conversation is another run.
    let other = key("acme", "bot", "idem-other");
    let mut run = NewRun::turn(other, json!({}));
    run.idempotency_key = Some(IdempotencyKey::new("client-retry-1").expect("key"));
    assert!(a.submit(run).await.expect("submit").created);
    assert_eq!(a.depth().await.expect("depth"), 11);
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn the_database_itself_refuses_a_second_claimed_run_of_a_conversation(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let k = key("acme", "bot", "one-at-a-time");
    store
        .submit(NewRun::turn(k.clone(), json!({"n": 1})))
        .await
        .expect("submit");
    let second = store
        .submit(NewRun::turn(k.clone(), json!({"n": 2})))
        .await
        .expect("submit");
    let claim = store
        .claim(&WorkerId::generate(), support::LONG)
        .await
        .expect("claim");
    assert!(claim.is_some());
    // Bypass the claim statement: the unique index still says no.
    let forced = sqlx::query(
        "UPDATE lobu.runs SET status = 'running', claimed_by = 'rogue', \
                claim_expires_at = now() + interval '1 minute' WHERE id = $1",
    )
    .bind(second.run.as_str())
    .execute(&pool)
    .await
    .expect_err("a second running run of one conversation");
    let code = forced.as_database_error().and_then(|e| e.code());
    assert_eq!(code.as_deref(), Some("23505"), "{forced}");
}
