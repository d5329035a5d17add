//! Double texting and steering on PostgreSQL beyond the conformance clauses: the upgrade that
//! brought them, the steer wake-up across replicas, submits racing under the conversation's
//! lock, the bound on what one turn is offered, and a rollback racing a commit that took
//! steered runs.

mod support;

use std::time::{Duration, Instant};

use lobu_core::multitask::{MAX_STEERED, steered_output};
use lobu_core::{
    Claim, Commit, ConversationKey, ErrorKind, IdempotencyKey, MultitaskStrategy, NewRun, RunId,
    RunQueue, RunStatus, WorkerId,
};
use lobu_store_pg::PgStore;
use serde_json::json;
use sqlx::PgPool;
use support::{
    LONG, assert_kind, claim_before_v8, key, release_before, replica_pool, submit_before_v7,
};

fn turn(key: &ConversationKey, n: usize, strategy: MultitaskStrategy) -> NewRun {
    NewRun::turn(key.clone(), json!({ "n": n })).multitask(strategy)
}

async fn submit(store: &PgStore, run: NewRun) -> RunId {
    store.submit(run).await.expect("submit").run
}

async fn claim_next(store: &PgStore) -> Claim {
    let claim = store.claim(&WorkerId::generate(), LONG).await;
    claim.expect("claim").expect("a claimable run")
}

async fn status(store: &PgStore, key: &ConversationKey, run: &RunId) -> lobu_core::RunRecord {
    let record = store.status(&key.org, run).await.expect("status");
    record.expect("the run")
}

#[sqlx::test(migrations = false)]
async fn runs_written_by_schema_6_upgrade_and_take_part_in_steering_and_rollback(pool: PgPool) {
    release_before(20261203000000, 6)
        .run(&pool)
        .await
        .expect("schema version 6");
    let store = PgStore::new(pool.clone());
    // As version 6 left them: a conversation with a claimed run and one waiting behind it,
    // and another with a waiting run (claimed by version 6's claim statement).
    let talk = key("acme", "bot", "v6-talk");
    let first = submit_before_v7(&pool, &talk, json!({"text": "first"})).await;
    let second = submit_before_v7(&pool, &talk, json!({"text": "second"})).await;
    let quiet = key("acme", "bot", "v6-quiet");
    let waiting = submit_before_v7(&pool, &quiet, json!({"text": "waiting"})).await;
    let claim = claim_before_v8(&pool, &WorkerId::generate(), LONG).await;
    let claim = claim.expect("the first run");
    assert_eq!(claim.run, first);

    store.migrate().await.expect("upgrade");
    let steers: Vec<bool> = sqlx::query_scalar("SELECT steer FROM lobu.runs ORDER BY seq")
        .fetch_all(&pool)
        .await
        .expect("steer flags");
    assert_eq!(steers, [false; 3], "runs from before were never steer runs");
    // The old waiting run is an ordinary turn: it ends the offer, so a steer run submitted
    // now waits behind it rather than jumping the queue.
    let steer = submit(&store, turn(&talk, 3, MultitaskStrategy::Steer)).await;
    assert_eq!(store.steerable(&claim).await.expect("steerable"), []);
    store
        .complete(&claim, Commit::default())
        .await
        .expect("complete");
    let next = claim_next(&store).await;
    assert_eq!(next.run, second, "the old run runs in its place");
    let offered = store.steerable(&next).await.expect("steerable");
    assert_eq!(offered.len(), 1);
    assert_eq!(
        (&offered[0].run, &offered[0].payload),
        (&steer, &json!({"n": 3}))
    );
    let commit = Commit {
        steered: vec![steer.clone()],
        ..Commit::default()
    };
    store.complete(&next, commit).await.expect("commit");
    let taken = status(&store, &talk, &steer).await;
    assert_eq!((taken.status, taken.attempts), (RunStatus::Completed, 0));
    assert_eq!(taken.output, Some(steered_output(&second)));
    // A rollback cancels the old waiting run of the other conversation, then runs.
    let new = submit(&store, turn(&quiet, 4, MultitaskStrategy::Rollback)).await;
    let rolled = status(&store, &quiet, &waiting).await;
    assert_eq!(rolled.status, RunStatus::Cancelled);
    assert_eq!(rolled.error, Some(format!("rolled back by run {new}")));
    let last = claim_next(&store).await;
    assert_eq!(last.run, new);
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_steer_submit_wakes_the_running_runs_followers_on_another_replica(pool: PgPool) {
    let here = PgStore::new(pool.clone());
    let there = PgStore::new(replica_pool(&pool, 2).await);
    let k = key("acme", "bot", "steer-wakes");
    submit(&here, turn(&k, 0, MultitaskStrategy::Enqueue)).await;
    let claim = claim_next(&here).await;
    let org = k.org.clone();
    // The first wait starts the replica's listener, whose connecting wakes everyone once.
    let settle = Duration::from_millis(300);
    there
        .wait_for_run(&org, &claim.run, Instant::now(), settle)
        .await;
    let follow = |max: Duration| {
        let (there, org, run) = (there.clone(), org.clone(), claim.run.clone());
        let since = Instant::now();
        tokio::spawn(async move {
            there.wait_for_run(&org, &run, since, max).await;
            since.elapsed()
        })
    };
    let quiet = Duration::from_millis(500);
    let waiter = follow(quiet);
    submit(&here, turn(&k, 1, MultitaskStrategy::Enqueue)).await;
    let waited = waiter.await.expect("follower");
    assert!(waited >= quiet, "an ordinary submit wakes no follower");
    let waiter = follow(Duration::from_secs(30));
    submit(&here, turn(&k, 2, MultitaskStrategy::Steer)).await;
    let waited = waiter.await.expect("follower");
    assert!(
        waited < Duration::from_secs(10),
        "a steer submit woke the follower on the other replica ({waited:?})"
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn rejects_racing_on_an_idle_conversation_queue_exactly_one_run(pool: PgPool) {
    let store = PgStore::new(pool);
    let k = key("acme", "bot", "racing-rejects");
    let submits = (0..8).map(|n| {
        let (store, run) = (store.clone(), turn(&k, n, MultitaskStrategy::Reject));
        tokio::spawn(async move { store.submit(run).await })
    });
    let mut queued = 0;
    for submitted in futures::future::join_all(submits).await {
        match submitted.expect("task") {
            Ok(_) => queued += 1,
            Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
        }
    }
    assert_eq!(
        queued, 1,
        "the submit lock lets one reject see an idle conversation"
    );
    assert_eq!(store.depth().await.expect("depth"), 1);
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_matched_idempotency_key_returns_the_earlier_run_even_while_a_reject_would_refuse(
    pool: PgPool,
) {
    let store = PgStore::new(pool);
    let k = key("acme", "bot", "keyed-reject");
    let mut keyed = turn(&k, 0, MultitaskStrategy::Enqueue);
    keyed.idempotency_key = Some(IdempotencyKey::new("once").expect("key"));
    let earlier = submit(&store, keyed.clone()).await;
    let claim = claim_next(&store).await;
    for strategy in [MultitaskStrategy::Reject, MultitaskStrategy::Rollback] {
        let again = store.submit(keyed.clone().multitask(strategy)).await;
        let again = again.expect("a retried submit");
        assert_eq!((&again.run, again.created), (&earlier, false));
    }
    assert!(
        store.heartbeat(&claim, LONG).await.is_ok(),
        "nothing was cancelled"
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_claim_being_cancelled_or_of_no_run_may_not_look_at_the_offer(pool: PgPool) {
    let store = PgStore::new(pool);
    let k = key("acme", "bot", "look-refused");
    submit(&store, turn(&k, 0, MultitaskStrategy::Enqueue)).await;
    let claim = claim_next(&store).await;
    submit(&store, turn(&k, 1, MultitaskStrategy::Steer)).await;
    assert_eq!(store.steerable(&claim).await.expect("steerable").len(), 1);
    let nobody = Claim {
        run: RunId::generate(),
        ..claim.clone()
    };
    assert_kind(
        store.steerable(&nobody).await,
        ErrorKind::NotFound,
        "a claim of no run",
    );
    store
        .cancel(&k.org, &claim.run, "stop")
        .await
        .expect("cancel");
    assert_kind(
        store.steerable(&claim).await,
        ErrorKind::Cancelled,
        "a claim being cancelled",
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_turn_is_offered_at_most_max_steered_messages_and_cannot_take_more(pool: PgPool) {
    let store = PgStore::new(pool);
    let k = key("acme", "bot", "many-steers");
    submit(&store, turn(&k, 0, MultitaskStrategy::Enqueue)).await;
    let claim = claim_next(&store).await;
    let mut steers = Vec::new();
    for n in 1..=MAX_STEERED + 2 {
        steers.push(submit(&store, turn(&k, n, MultitaskStrategy::Steer)).await);
    }
    let offered = store.steerable(&claim).await.expect("steerable");
    let runs: Vec<RunId> = offered.iter().map(|s| s.run.clone()).collect();
    assert_eq!(runs, steers[..MAX_STEERED]);
    assert_eq!(
        offered[MAX_STEERED - 1].payload,
        json!({ "n": MAX_STEERED })
    );
    let too_many = Commit {
        steered: steers[..=MAX_STEERED].to_vec(),
        ..Commit::default()
    };
    assert_kind(
        store.complete(&claim, too_many).await,
        ErrorKind::Conflict,
        "a commit taking more than was offered",
    );
    let commit = Commit {
        steered: runs,
        ..Commit::default()
    };
    store.complete(&claim, commit).await.expect("commit");
    let next = claim_next(&store).await;
    assert_eq!(
        next.run, steers[MAX_STEERED],
        "the rest run as their own turns"
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_rollback_racing_a_commit_that_took_steered_runs_leaves_one_whole_outcome(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let other = PgStore::new(replica_pool(&pool, 4).await);
    for round in 0..12 {
        let k = key("acme", "bot", &format!("race-{round}"));
        submit(&store, turn(&k, 0, MultitaskStrategy::Enqueue)).await;
        let claim = claim_next(&store).await;
        let steer = submit(&store, turn(&k, 1, MultitaskStrategy::Steer)).await;
        let commit = Commit {
            steered: vec![steer.clone()],
            ..Commit::default()
        };
        let (committed, rolled_back) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(
                store.complete(&claim, commit),
                other.submit(turn(&k, 2, MultitaskStrategy::Rollback)),
            )
        })
        .await
        .expect("neither waits on the other for ever");
        let new = rolled_back.expect("the rollback queues either way").run;
        let (turn_run, taken) = (
            status(&store, &k, &claim.run).await,
            status(&store, &k, &steer).await,
        );
        match committed {
            // The commit went first: the turn and the message it took completed together.
            Ok(_) => {
                assert_eq!(turn_run.status, RunStatus::Completed, "round {round}");
                assert_eq!(taken.status, RunStatus::Completed, "round {round}");
            }
            // The rollback went first: it asked the turn to stop and cancelled the message.
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Cancelled, "round {round}: {e}");
                assert_eq!(taken.status, RunStatus::Cancelled, "round {round}");
                store.release(&claim).await.expect("release");
            }
        }
        let next = claim_next(&store).await;
        assert_eq!(next.run, new, "round {round}: the rollback's run is next");
        store
            .complete(&next, Commit::default())
            .await
            .expect("complete");
    }
}

/// A refused `reject` (and a submit answered from its idempotency key) ends its transaction
/// before it returns: the conversation's run is claimable at once, every time (a dropped
/// transaction would keep the lane's row locks until its connection is next used, and a
/// claim's `SKIP LOCKED` would skip the run).
#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_refused_reject_leaves_the_waiting_run_claimable_at_once(pool: PgPool) {
    let store = PgStore::new(pool);
    for n in 0..100 {
        let k = key("acme", "bot", &format!("c{n}"));
        let first = submit(&store, turn(&k, 0, MultitaskStrategy::Enqueue)).await;
        let refused = store.submit(turn(&k, 1, MultitaskStrategy::Reject)).await;
        assert_kind(refused, ErrorKind::Conflict, "reject while a run waits");
        let claim = claim_next(&store).await;
        assert_eq!(claim.run, first, "{n}: claimable right after the refusal");
        store
            .complete(&claim, Commit::default())
            .await
            .expect("complete");
        let mut keyed = turn(&k, 2, MultitaskStrategy::Reject);
        keyed.idempotency_key = Some(IdempotencyKey::new(format!("k{n}")).unwrap());
        let created = store
            .submit(keyed.clone())
            .await
            .expect("reject when idle")
            .run;
        assert_eq!(
            store.submit(keyed).await.expect("the key again").run,
            created
        );
        let claim = claim_next(&store).await;
        assert_eq!(
            claim.run, created,
            "{n}: claimable right after the keyed answer"
        );
        store
            .complete(&claim, Commit::default())
            .await
            .expect("complete");
    }
}
