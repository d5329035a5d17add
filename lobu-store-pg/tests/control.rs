//! Run control on PostgreSQL beyond the conformance clauses: a cancellation seen across
//! replicas, the commit paths refusing a cancelled claim, the schema upgrade that brought
//! cancellation, and failures checked before any statement.

mod support;

use std::time::Duration;

use bytes::Bytes;
use lobu_core::{
    AfterFailure, CancelOutcome, Claim, Commit, ErrorKind, Failure, NewRun, Retry, RunQueue,
    RunStatus, SessionStore, TerminalStatus, WorkerId,
};
use lobu_store_pg::PgStore;
use serde_json::json;
use sqlx::PgPool;
use support::{
    LONG, assert_kind, claim_before_v8, key, release_before, replica_pool, submit_before_v7,
};

async fn claim_next(store: &PgStore) -> Claim {
    let worker = WorkerId::generate();
    let claim = store.claim(&worker, LONG).await.expect("claim");
    claim.expect("a claimable run")
}

async fn claim_expires_at(pool: &PgPool, claim: &Claim) -> time::OffsetDateTime {
    sqlx::query_scalar("SELECT claim_expires_at FROM lobu.runs WHERE id = $1")
        .bind(claim.run.as_str())
        .fetch_one(pool)
        .await
        .expect("read the claim's expiry")
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_cancel_through_one_replica_is_told_at_the_heartbeat_through_another(pool: PgPool) {
    let worker_side = PgStore::new(pool.clone());
    let api_side = PgStore::new(replica_pool(&pool, 2).await);
    let k = key("acme", "bot", "cancel-across");
    let run = worker_side.submit(NewRun::turn(k.clone(), json!({"text": "hi"})));
    let run = run.await.expect("submit").run;
    let claim = claim_next(&worker_side).await;
    let before = claim_expires_at(&pool, &claim).await;

    let outcome = api_side.cancel(&k.org, &run, "the user left").await;
    assert_eq!(outcome.expect("cancel"), Some(CancelOutcome::Requested));
    let told = worker_side.heartbeat(&claim, LONG * 2).await;
    assert!(
        matches!(&told, Err(e) if e.kind() == ErrorKind::Cancelled
            && e.to_string().contains("the user left")),
        "{told:?}"
    );
    assert_eq!(
        claim_expires_at(&pool, &claim).await,
        before,
        "a cancelled claim is not extended"
    );
    // Without a transcript the commit is refused too, and the run is still the claim's.
    assert_kind(
        worker_side.complete(&claim, Commit::default()).await,
        ErrorKind::Cancelled,
        "complete without a transcript",
    );
    let record = api_side.status(&k.org, &run).await.expect("status");
    assert_eq!(record.expect("the run").status, RunStatus::Running);
    // The holder's failure, retried or not, ends it cancelled with the reason.
    let failure = Failure::new(TerminalStatus::Failed, "interrupted")
        .retry(Retry::After(Duration::from_secs(1)));
    let after = worker_side.fail(&claim, &failure).await.expect("fail");
    assert_eq!(after, AfterFailure::Final(RunStatus::Cancelled));
    let record = api_side.status(&k.org, &run).await.expect("status");
    let record = record.expect("the run");
    assert_eq!(
        (record.status, record.error.as_deref()),
        (RunStatus::Cancelled, Some("the user left"))
    );
    let other_org = key("globex", "bot", "cancel-across").org;
    assert_eq!(
        api_side
            .cancel(&other_org, &run, "x")
            .await
            .expect("cancel"),
        None
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn an_append_commit_of_a_cancelled_claim_is_refused_and_writes_nothing(pool: PgPool) {
    let store = PgStore::new(pool);
    let k = key("acme", "bot", "cancel-append");
    let first: &[u8] = b"{\"type\":\"session\"}\n{\"n\":1}\n";
    for n in 0..2 {
        let submitted = store.submit(NewRun::turn(k.clone(), json!({ "n": n })));
        submitted.await.expect("submit");
    }
    let c1 = claim_next(&store).await;
    let commit = Commit::transcript(Bytes::from_static(first), None);
    let v1 = store.complete(&c1, commit).await.expect("complete");
    let c2 = claim_next(&store).await;
    assert_eq!(c2.head, v1);
    let cancel = store.cancel(&k.org, &c2.run, "stop").await.expect("cancel");
    assert_eq!(cancel, Some(CancelOutcome::Requested));
    // The one-statement append (commit_fast.sql) and the general path both refuse.
    let append = Commit::append(Bytes::from_static(b"{\"n\":2}\n"), v1, first.len());
    assert_kind(
        store.complete(&c2, append).await,
        ErrorKind::Cancelled,
        "an append",
    );
    let head = store.hydrate(&k).await.expect("hydrate").expect("a head");
    assert_eq!((Some(head.version), &head.transcript[..]), (v1, first));
    store.release(&c2).await.expect("release");
    let record = store.status(&k.org, &c2.run).await.expect("status");
    let record = record.expect("the run");
    assert_eq!(
        (record.status, record.error.as_deref(), record.attempts),
        (RunStatus::Cancelled, Some("stop"), 1)
    );
}

#[sqlx::test(migrations = false)]
async fn a_schema_5_database_upgrades_to_6_and_cancels_its_runs(pool: PgPool) {
    let v5 = release_before(20261202000000, 5);
    v5.run(&pool).await.expect("schema version 5");
    let store = PgStore::new(pool.clone());
    // As version 5 left them: one run claimed, one waiting.
    let mut runs = Vec::new();
    for conversation in ["v5-claimed", "v5-pending"] {
        let k = key("acme", "bot", conversation);
        runs.push(submit_before_v7(&pool, &k, json!({})).await);
    }
    let claim = claim_before_v8(&pool, &WorkerId::generate(), LONG).await;
    let claim = claim.expect("the first run");
    assert_eq!(claim.run, runs[0]);

    store.migrate().await.expect("upgrade");
    let org = claim.key.org.clone();
    let requested = store.cancel(&org, &runs[0], "").await.expect("cancel");
    assert_eq!(requested, Some(CancelOutcome::Requested));
    assert_kind(
        store.heartbeat(&claim, LONG).await,
        ErrorKind::Cancelled,
        "heartbeat",
    );
    let ended = store.cancel(&org, &runs[1], "").await.expect("cancel");
    assert_eq!(ended, Some(CancelOutcome::Cancelled));
    let record = store.status(&org, &runs[1]).await.expect("status");
    let record = record.expect("the run");
    assert_eq!(
        (record.status, record.error.as_deref()),
        (RunStatus::Cancelled, Some("cancelled"))
    );
    let again = store.cancel(&org, &runs[1], "").await.expect("cancel");
    assert_eq!(again, Some(CancelOutcome::Finished(RunStatus::Cancelled)));
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_bad_failure_is_a_typed_error_and_runs_no_statement(pool: PgPool) {
    let replica = replica_pool(&pool, 1).await;
    let store = PgStore::new(replica.clone());
    let k = key("acme", "bot", "bad-failure");
    let submitted = store.submit(NewRun::turn(k.clone(), json!({})));
    let run = submitted.await.expect("submit").run;
    let claim = claim_next(&store).await;
    // No connection left: any statement would fail as a database error.
    replica.close().await;
    let completed = Failure::new(TerminalStatus::Completed, "done?");
    assert_kind(
        store.fail(&claim, &completed).await,
        ErrorKind::InvalidInput,
        "a completed failure",
    );
    let late = Failure::new(TerminalStatus::Failed, "later")
        .retry(Retry::After(Duration::from_secs(25 * 3600)));
    assert_kind(
        store.fail(&claim, &late).await,
        ErrorKind::InvalidInput,
        "a delay past a day",
    );
    let good = Failure::new(TerminalStatus::Failed, "flaky");
    let sent = store.fail(&claim, &good).await;
    assert!(
        matches!(&sent, Err(e) if e.kind() != ErrorKind::InvalidInput),
        "a valid failure reaches the database: {sent:?}"
    );
    let record = PgStore::new(pool)
        .status(&k.org, &run)
        .await
        .expect("status");
    assert_eq!(record.expect("the run").status, RunStatus::Running);
}
