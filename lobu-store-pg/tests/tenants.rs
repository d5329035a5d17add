//! Tenant isolation: two orgs with the same agent and conversation ids share nothing, in
//! transcripts, listings, resets, leases, fences, queue lanes and run lookups (lobu G8: its
//! reset purge joined through `agents` and could delete another org's rows).

mod support;

use bytes::Bytes;
use lobu_core::{
    Commit, ConversationLocks, ErrorKind, NewRun, RunId, RunQueue, SessionStore, TerminalStatus,
    WorkerId,
};
use lobu_store_pg::PgStore;
use serde_json::json;
use sqlx::PgPool;
use support::{LONG, assert_kind, key, lease, turn, write};

async fn rows_of(pool: &PgPool, org: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM lobu.snapshots WHERE org = $1), \
                (SELECT count(*) FROM lobu.runs WHERE org = $1)",
    )
    .bind(org)
    .fetch_one(pool)
    .await
    .expect("count rows")
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn two_orgs_with_the_same_agent_and_conversation_ids_share_nothing(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let a = key("org-a", "support-bot", "telegram:42");
    let b = key("org-b", "support-bot", "telegram:42");

    // Leases: one org holding the conversation does not make the other busy, and a fence of
    // one org is not a fence of the other.
    let (lease_a, lease_b) = (lease(&store, &a).await, lease(&store, &b).await);
    let bytes_a = Bytes::from_static(b"{\"org\":\"a\"}\n");
    let bytes_b = Bytes::from_static(b"{\"org\":\"b\"}\n");
    let va = turn(&store, &lease_a, None, &bytes_a).await;
    let vb = turn(&store, &lease_b, None, &bytes_b).await;
    let cross = write(
        &lease_a,
        &RunId::generate(),
        TerminalStatus::Completed,
        &bytes_a,
        Some(vb),
    );
    assert_kind(
        store.persist(&b, cross).await,
        ErrorKind::Fenced,
        "org a's fence on org b",
    );

    // Transcripts and listings.
    let head_a = store.hydrate(&a).await.expect("hydrate").expect("head");
    let head_b = store.hydrate(&b).await.expect("hydrate").expect("head");
    assert_eq!((head_a.version, head_a.transcript), (va, bytes_a.clone()));
    assert_eq!((head_b.version, head_b.transcript), (vb, bytes_b.clone()));
    let listed = store.list(&a.org, &a.agent, None, 10).await.expect("list");
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].version, va);

    // Queue: each org's lane is its own, so both first runs are claimable at once, and a run
    // is only found by its own org. A live lease makes its conversation unclaimable: give
    // both up first.
    ConversationLocks::release(&store, &lease_a)
        .await
        .expect("release");
    ConversationLocks::release(&store, &lease_b)
        .await
        .expect("release");
    let run_a = store
        .submit(NewRun::turn(a.clone(), json!({"org": "a"})))
        .await
        .expect("submit");
    let run_b = store
        .submit(NewRun::turn(b.clone(), json!({"org": "b"})))
        .await
        .expect("submit");
    let worker = WorkerId::generate();
    let first = store
        .claim(&worker, LONG)
        .await
        .expect("claim")
        .expect("a run");
    let second = store
        .claim(&worker, LONG)
        .await
        .expect("claim")
        .expect("the other org's run");
    assert_ne!(first.key.org, second.key.org);
    assert!(
        store
            .status(&b.org, &run_a.run)
            .await
            .expect("status")
            .is_none()
    );
    assert!(
        store
            .status(&a.org, &run_b.run)
            .await
            .expect("status")
            .is_none()
    );
    assert!(
        store
            .status(&a.org, &run_a.run)
            .await
            .expect("status")
            .is_some()
    );
    // A claim of org a presented as org b's is not the newest claim of anything there.
    let mut forged = first.clone();
    forged.key = if first.key == a { b.clone() } else { a.clone() };
    assert_kind(
        store.complete(&forged, Commit::output(None)).await,
        ErrorKind::NotFound,
        "a forged org",
    );
    let (claim_a, claim_b) = if first.key == a {
        (first, second)
    } else {
        (second, first)
    };
    assert_ne!(claim_a.fence, lease_a.fence, "a claim draws a new fence");
    store
        .complete(&claim_a, Commit::output(None))
        .await
        .expect("complete");

    // Reset of org a leaves org b's rows alone (lobu G8); org b's fence is no fence of a's.
    assert_kind(
        store.clear(&a, claim_b.fence).await,
        ErrorKind::Fenced,
        "org b's fence on org a",
    );
    assert_eq!(rows_of(&pool, "org-a").await, (1, 1));
    assert_eq!(store.clear(&a, claim_a.fence).await.expect("clear"), 1);
    assert_eq!(rows_of(&pool, "org-a").await, (0, 1));
    assert_eq!(rows_of(&pool, "org-b").await, (1, 1));
    let still = store
        .hydrate(&b)
        .await
        .expect("hydrate")
        .expect("org b keeps its head");
    assert_eq!(still.transcript, bytes_b);

    // Org a's claim ended with its commit; org b's claim still owns org b's conversation.
    assert!(
        store
            .try_acquire(&a, LONG)
            .await
            .expect("acquire")
            .is_some()
    );
    assert!(
        store
            .try_acquire(&b, LONG)
            .await
            .expect("acquire")
            .is_none()
    );
    store
        .complete(&claim_b, Commit::output(None))
        .await
        .expect("complete");
}
