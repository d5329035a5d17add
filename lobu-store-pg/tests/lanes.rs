//! Lanes (migration 20261204000000): every statement that adds or ends a run keeps its
//! conversation's lane exact, a claim walks lanes, not the backlog queued behind busy
//! conversations, and runs a schema 7 database left unfinished are claimed after the upgrade.

#[path = "support/lanes.rs"]
mod lanes;
mod support;

use std::time::Duration;

use bytes::Bytes;
use lanes::assert_lanes_exact;
use lobu_core::control::{Failure, Retry};
use lobu_core::{
    Claim, Commit, ConversationKey, EraseScope, MultitaskStrategy, NewRun, RunId, RunQueue,
    RunStatus, SessionStore, TerminalStatus, WorkerId,
};
use lobu_store_pg::PgStore;
use serde_json::json;
use sqlx::PgPool;
use support::{LONG, claim_before_v8, key, release_before, submit_before_v7};

async fn submit(store: &PgStore, key: &ConversationKey, strategy: MultitaskStrategy) -> RunId {
    let run = NewRun::turn(key.clone(), json!({})).multitask(strategy);
    store.submit(run).await.expect("submit").run
}

async fn claim(store: &PgStore) -> Claim {
    let claimed = store
        .claim(&WorkerId::generate(), LONG)
        .await
        .expect("claim");
    claimed.expect("a claimable run")
}

async fn status(store: &PgStore, key: &ConversationKey, run: &RunId) -> RunStatus {
    let record = store.status(&key.org, run).await.expect("status");
    record.expect("the run").status
}

/// The claim's lease and its conversation's ownership lapse now, as if its worker died.
async fn lapse(pool: &PgPool, claim: &Claim) {
    sqlx::query(
        "WITH r AS (UPDATE lobu.runs SET claim_expires_at = now() - interval '1 second' \
                     WHERE id = $1) \
         UPDATE lobu.conversations SET lease_expires_at = now() - interval '1 second' \
          WHERE conversation = $2",
    )
    .bind(claim.run.as_str())
    .bind(claim.key.conversation.as_str())
    .execute(pool)
    .await
    .expect("lapse the claim");
}

async fn depth_is_pending(store: &PgStore, pool: &PgPool, when: &str) {
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM lobu.runs WHERE status = 'pending'")
            .fetch_one(pool)
            .await
            .expect("count pending");
    let depth = store.depth().await.expect("depth");
    assert_eq!(
        i64::try_from(depth).ok(),
        Some(pending),
        "depth after {when}"
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn lanes_stay_exact_through_every_transition_of_a_run(pool: PgPool) {
    use MultitaskStrategy::{Enqueue, Interrupt, Rollback, Steer};
    let store = PgStore::new(pool.clone());
    let (a, b) = (key("acme", "bot", "lane-a"), key("acme", "bot", "lane-b"));
    let check = |when: &'static str| {
        let (store, pool) = (store.clone(), pool.clone());
        async move {
            assert_lanes_exact(&pool, when).await;
            depth_is_pending(&store, &pool, when).await;
        }
    };
    for _ in 0..3 {
        submit(&store, &a, Enqueue).await;
    }
    submit(&store, &b, Enqueue).await;
    check("submits").await;
    // Complete without a transcript, then with one (the general path, then the fast one).
    let c = claim(&store).await;
    check("a claim").await;
    store
        .complete(&c, Commit::default())
        .await
        .expect("complete");
    check("a complete").await;
    let c = claim(&store).await;
    let first = Bytes::from_static(b"{\"n\":1}\n");
    let v = store
        .complete(&c, Commit::transcript(first.clone(), None))
        .await;
    let v = v.expect("complete with a transcript");
    check("a complete with a transcript").await;
    let c = claim(&store).await;
    let append = Commit::append(Bytes::from_static(b"{\"n\":2}\n"), v, first.len());
    store.complete(&c, append).await.expect("append");
    check("a complete on the fast path").await;
    // A retried failure stays in its lane; a final one leaves it; so does a cancelled release.
    let c = claim(&store).await;
    let retry = Failure::new(TerminalStatus::Failed, "flaky").retry(Retry::After(Duration::ZERO));
    store.fail(&c, &retry).await.expect("fail with a retry");
    check("a failure with a retry").await;
    let c = claim(&store).await;
    store.release(&c).await.expect("release");
    check("a release").await;
    let c = claim(&store).await;
    let never = Failure::new(TerminalStatus::Failed, "broken").retry(Retry::Never);
    store.fail(&c, &never).await.expect("final failure");
    check("a final failure").await;
    // Cancel a waiting run, then a claimed one (requested, ended by its release).
    let waiting = submit(&store, &a, Enqueue).await;
    let claimed = submit(&store, &b, Enqueue).await;
    let cancelled = store.cancel(&a.org, &waiting, "no").await.expect("cancel");
    assert!(cancelled.is_some());
    check("a cancelled waiting run").await;
    let c = claim(&store).await;
    assert_eq!(c.run, claimed);
    store
        .cancel(&b.org, &claimed, "stop")
        .await
        .expect("cancel");
    check("a requested cancellation").await;
    store.release(&c).await.expect("release a cancelled claim");
    assert_eq!(status(&store, &b, &claimed).await, RunStatus::Cancelled);
    check("the release of a cancelled claim").await;
    // A lapsed claim cancelled; a lapsed last attempt reaped.
    submit(&store, &a, Enqueue).await;
    let c = claim(&store).await;
    lapse(&pool, &c).await;
    store.cancel(&a.org, &c.run, "gone").await.expect("cancel");
    check("a cancelled lapsed claim").await;
    let once = NewRun {
        max_attempts: 1,
        ..NewRun::turn(b.clone(), json!({}))
    };
    let doomed = store.submit(once).await.expect("submit").run;
    submit(&store, &b, Enqueue).await;
    let c = claim(&store).await;
    assert_eq!(c.run, doomed);
    lapse(&pool, &c).await;
    // A claim that finds nothing runs the reaper (at most every 100 ms), which fails the
    // lapsed last attempt, and claims again.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let next = claim(&store).await;
    assert_eq!(status(&store, &b, &doomed).await, RunStatus::Failed);
    check("a reaped run").await;
    // Steering, interrupt and rollback.
    submit(&store, &b, Steer).await;
    check("a steer submit").await;
    let offered = store.steerable(&next).await.expect("steerable");
    let steered = offered.into_iter().map(|s| s.run).collect::<Vec<_>>();
    assert_eq!(steered.len(), 1);
    let commit = Commit {
        steered,
        ..Commit::default()
    };
    store.complete(&next, commit).await.expect("commit steered");
    check("a commit with a steered run").await;
    submit(&store, &a, Enqueue).await;
    let c = claim(&store).await;
    submit(&store, &a, Enqueue).await;
    submit(&store, &a, Interrupt).await;
    check("an interrupt").await;
    store
        .fail(&c, &never)
        .await
        .expect("the interrupted claim fails");
    submit(&store, &a, Rollback).await;
    check("a rollback").await;
    // Erasure of a conversation, of an agent, of an org.
    let other = key("acme", "other", "lane-c");
    submit(&store, &other, Enqueue).await;
    store
        .erase(&EraseScope::Conversation(a.clone()))
        .await
        .expect("erase");
    check("a conversation's erasure").await;
    submit(&store, &b, Enqueue).await;
    let erase_agent = EraseScope::Agent(b.org.clone(), b.agent.clone());
    store.erase(&erase_agent).await.expect("erase");
    check("an agent's erasure").await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM lobu.lanes WHERE agent = 'bot'")
        .fetch_one(&pool)
        .await
        .expect("lanes left");
    assert_eq!(left, 0, "an erasure leaves no lane, so no id, behind");
    submit(&store, &a, Enqueue).await;
    check("a submit after an erasure").await;
    store
        .erase(&EraseScope::Org(a.org.clone()))
        .await
        .expect("erase");
    check("an org's erasure").await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM lobu.lanes")
        .fetch_one(&pool)
        .await
        .expect("lanes");
    assert_eq!(rows, 0);
}

/// Rows the nodes of an `EXPLAIN (ANALYZE, FORMAT JSON)` plan read from `relation`: what
/// each scan returned plus what its filter removed, over all its loops.
pub(crate) fn rows_read(plan: &serde_json::Value, relation: &str) -> f64 {
    let mut total = 0.0;
    if plan.get("Relation Name").and_then(|r| r.as_str()) == Some(relation) {
        let get = |field: &str| plan.get(field).and_then(|v| v.as_f64()).unwrap_or(0.0);
        let per_loop = get("Actual Rows")
            + get("Rows Removed by Filter")
            + get("Rows Removed by Index Recheck");
        total += per_loop * get("Actual Loops");
    }
    if let Some(children) = plan.get("Plans").and_then(|p| p.as_array()) {
        total += children.iter().map(|c| rows_read(c, relation)).sum::<f64>();
    }
    total
}

/// Rows of `runs` the claim statement reads, claiming for real: `EXPLAIN ANALYZE` of
/// src/sql/claim.sql in a transaction rolled back afterwards.
async fn claim_reads(pool: &PgPool, statement: &str) -> f64 {
    let mut tx = pool.begin().await.expect("begin");
    let explain = format!("EXPLAIN (ANALYZE, FORMAT JSON) {statement}");
    let plan: serde_json::Value = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
        .bind("explaining")
        .bind(60_000_000_i64)
        .fetch_one(&mut *tx)
        .await
        .expect("explain the claim");
    tx.rollback().await.expect("rollback");
    let plan = &plan[0]["Plan"];
    rows_read(plan, "runs")
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_claim_behind_a_large_backlog_finds_the_one_claimable_run_and_reads_few_runs(
    pool: PgPool,
) {
    let store = PgStore::new(pool.clone());
    let busy: Vec<ConversationKey> = (0..10)
        .map(|n| key("acme", "bot", &format!("busy-{n}")))
        .collect();
    let mut claims = Vec::new();
    for k in &busy {
        submit(&store, k, MultitaskStrategy::Enqueue).await;
        claims.push(claim(&store).await);
    }
    // 2,000 runs queued behind the 10 owned conversations, then one idle conversation's.
    let queue = busy.iter().map(|k| async {
        for _ in 0..200 {
            submit(&store, k, MultitaskStrategy::Enqueue).await;
        }
    });
    futures::future::join_all(queue).await;
    let idle = key("acme", "bot", "idle");
    let wanted = submit(&store, &idle, MultitaskStrategy::Enqueue).await;
    sqlx::query("ANALYZE lobu.runs")
        .execute(&pool)
        .await
        .expect("analyze");
    sqlx::query("ANALYZE lobu.lanes")
        .execute(&pool)
        .await
        .expect("analyze");

    let claim_sql = include_str!("../src/sql/claim.sql").replace("{s}", "lobu");
    let read = claim_reads(&pool, &claim_sql).await;
    // Per lane passed over: its head (the index probe) and that run by its key.
    assert!(read <= 40.0, "the claim read {read} rows of runs");
    // The same data with the claim statement before lanes: it read the backlog.
    let old = include_str!("support/claim_before_v8.sql");
    let read_before = claim_reads(&pool, old).await;
    assert!(read_before >= 2_000.0, "the old claim read {read_before}");

    let c = claim(&store).await;
    assert_eq!(c.run, wanted);
    assert_lanes_exact(&pool, "the backlog's claim").await;
    let none = store
        .claim(&WorkerId::generate(), LONG)
        .await
        .expect("claim");
    assert!(none.is_none(), "every other conversation is owned");
    // Their owners finish: each conversation's next run follows, oldest first.
    for owned in &claims {
        store
            .complete(owned, Commit::default())
            .await
            .expect("complete");
    }
    let oldest: String = sqlx::query_scalar(
        "SELECT id FROM lobu.runs WHERE status = 'pending' ORDER BY seq LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("the oldest waiting run");
    let next = claim(&store).await;
    assert_eq!(
        next.run.as_str(),
        oldest,
        "lanes are taken oldest head first"
    );
}

/// Make the run look as versions 1 to 7 left it after `sql` (`$1` the run's id).
async fn as_before(pool: &PgPool, sql: &str, run: &RunId) {
    let statement = sqlx::AssertSqlSafe(sql.to_owned());
    sqlx::query(statement)
        .bind(run.as_str())
        .execute(pool)
        .await
        .expect(sql);
}

#[sqlx::test(migrations = false)]
async fn runs_left_unfinished_by_schema_7_are_claimed_in_order_after_the_upgrade(pool: PgPool) {
    release_before(20261204000000, 7)
        .run(&pool)
        .await
        .expect("schema version 7");
    let names = ["v7-busy", "v7-retry", "v7-lapsed", "v7-waiting"];
    let keys: Vec<ConversationKey> = names.iter().map(|n| key("acme", "bot", n)).collect();
    let mut submitted: Vec<Vec<RunId>> = vec![Vec::new(); keys.len()];
    for _ in 0..3 {
        for (k, runs) in keys.iter().zip(&mut submitted) {
            runs.push(submit_before_v7(&pool, k, json!({})).await);
        }
    }
    // Version 7 claimed the first three heads: one is still held, one failed and waits out
    // its retry delay, one's worker died (its claim lapsed with attempts left).
    let worker = WorkerId::generate();
    let mut old = Vec::new();
    for _ in 0..3 {
        old.push(
            claim_before_v8(&pool, &worker, LONG)
                .await
                .expect("a claim"),
        );
    }
    let ends_ownership = "WITH r AS (SELECT org, agent, conversation FROM lobu.runs WHERE id = $1) \
         UPDATE lobu.conversations c SET lease_expires_at = now() - interval '1 second' \
           FROM r WHERE (c.org, c.agent, c.conversation) = (r.org, r.agent, r.conversation)";
    as_before(
        &pool,
        "UPDATE lobu.runs SET status = 'pending', claimed_by = NULL, claim_expires_at = NULL, \
                run_at = now() + interval '1 second', error = 'flaky' WHERE id = $1",
        &submitted[1][0],
    )
    .await;
    as_before(&pool, ends_ownership, &submitted[1][0]).await;
    as_before(
        &pool,
        "UPDATE lobu.runs SET claim_expires_at = now() - interval '1 second' WHERE id = $1",
        &submitted[2][0],
    )
    .await;
    as_before(&pool, ends_ownership, &submitted[2][0]).await;

    let store = PgStore::new(pool.clone());
    store.migrate().await.expect("upgrade");
    assert_lanes_exact(&pool, "the upgrade").await;
    // The lapsed claim is re-delivered, then the waiting head runs; the held conversation
    // and the one waiting out its retry offer nothing.
    let redelivered = claim(&store).await;
    assert_eq!(
        (&redelivered.run, redelivered.attempt),
        (&submitted[2][0], 2)
    );
    let waiting = claim(&store).await;
    assert_eq!(waiting.run, submitted[3][0]);
    let none = store.claim(&worker, LONG).await.expect("claim");
    assert!(none.is_none(), "{none:?}");
    let mut claimed: Vec<Vec<RunId>> = vec![vec![submitted[0][0].clone()], vec![], vec![], vec![]];
    claimed[2].push(redelivered.run.clone());
    claimed[3].push(waiting.run.clone());
    for c in [&old[0], &redelivered, &waiting] {
        store
            .complete(c, Commit::default())
            .await
            .expect("complete");
    }
    // The rest drain, each conversation in its order, the retried run once it is due.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while claimed.iter().map(Vec::len).sum::<usize>() < 12 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck at {claimed:?}"
        );
        let Some(c) = store.claim(&worker, LONG).await.expect("claim") else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let at = names.iter().position(|n| *n == c.key.conversation.as_str());
        claimed[at.expect("one of ours")].push(c.run.clone());
        store
            .complete(&c, Commit::default())
            .await
            .expect("complete");
    }
    assert_eq!(claimed, submitted, "every conversation in its order");
    for (k, runs) in keys.iter().zip(&submitted) {
        for run in runs {
            assert_eq!(status(&store, k, run).await, RunStatus::Completed);
        }
    }
    assert_lanes_exact(&pool, "the drain").await;
}
