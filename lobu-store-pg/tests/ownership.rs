//! Contract v2 on PostgreSQL: a claim is its conversation's ownership (one fence sequence and
//! one lease with `try_acquire`), `complete` commits the transcript and the run together, and
//! clear and prune respect the owner.

mod support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use lobu_core::{
    Claim, Commit, ConversationKey, ConversationLocks, ErrorKind, Failure, Fence, NewRun, Persist,
    PruneReport, RunId, RunQueue, RunStatus, SessionStore, TerminalStatus, Version, WorkerId,
};
use lobu_store_pg::PgStore;
use serde_json::json;
use sqlx::PgPool;
use support::{LONG, assert_kind, key, lease, turn};

const SHORT: Duration = Duration::from_millis(200);
const PAST_SHORT: Duration = Duration::from_millis(600);

async fn submit(store: &PgStore, k: &ConversationKey) -> RunId {
    store
        .submit(NewRun::turn(k.clone(), json!({})))
        .await
        .expect("submit")
        .run
}

async fn claim(store: &PgStore, lease: Duration) -> Claim {
    store
        .claim(&WorkerId::generate(), lease)
        .await
        .expect("claim")
        .expect("a claimable run")
}

async fn nothing_claimable(store: &PgStore, why: &str) {
    let found = store
        .claim(&WorkerId::generate(), LONG)
        .await
        .expect("claim");
    assert!(found.is_none(), "{why}: claimed {found:?}");
}

async fn status(store: &PgStore, k: &ConversationKey, run: &RunId) -> lobu_core::RunRecord {
    store
        .status(&k.org, run)
        .await
        .expect("status")
        .expect("the run")
}

async fn snapshot_rows(pool: &PgPool, k: &ConversationKey) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM lobu.snapshots WHERE org = $1 AND agent = $2 AND conversation = $3",
    )
    .bind(k.org.as_str())
    .bind(k.agent.as_str())
    .bind(k.conversation.as_str())
    .fetch_one(pool)
    .await
    .expect("count snapshots")
}

fn bytes(n: u32) -> Bytes {
    let mut text = String::new();
    for i in 1..=n {
        text.push_str(&format!("{{\"n\":{i}}}\n"));
    }
    Bytes::from(text)
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn claim_takes_the_conversation_so_try_acquire_finds_it_busy(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let k = key("acme", "bot", "claimed");
    let before = lease(&store, &k).await;
    ConversationLocks::release(&store, &before)
        .await
        .expect("release");
    submit(&store, &k).await;
    let c = claim(&store, LONG).await;
    assert!(c.fence > before.fence, "the claim draws the next fence");
    assert!(
        store
            .try_acquire(&k, LONG)
            .await
            .expect("acquire")
            .is_none(),
        "a live claim is a live owner"
    );
    // One heartbeat renews the claim and the ownership together.
    let renewed = store.heartbeat(&c, LONG).await.expect("heartbeat");
    let (same, run_expiry): (bool, time::OffsetDateTime) = sqlx::query_as(
        "SELECT r.claim_expires_at = c.lease_expires_at, r.claim_expires_at FROM lobu.runs r \
           JOIN lobu.conversations c USING (org, agent, conversation) WHERE r.id = $1",
    )
    .bind(c.run.as_str())
    .fetch_one(&pool)
    .await
    .expect("expiries");
    assert!(same, "the claim and the ownership expire together");
    assert_eq!(renewed.expires_at, SystemTime::from(run_expiry));
    // Handing the run back ends the ownership: the next lease outranks the claim.
    RunQueue::release(&store, &c)
        .await
        .expect("release the claim");
    let after = lease(&store, &k).await;
    assert!(after.fence > c.fence);
    assert_kind(
        store.heartbeat(&c, LONG).await,
        ErrorKind::Fenced,
        "a claim outranked by a lease",
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_live_lease_makes_its_conversation_unclaimable(pool: PgPool) {
    let store = PgStore::new(pool);
    let (leased, free) = (key("acme", "bot", "leased"), key("acme", "bot", "free"));
    let held = lease(&store, &leased).await;
    let leased_run = submit(&store, &leased).await;
    let free_run = submit(&store, &free).await;
    let first = claim(&store, LONG).await;
    assert_eq!(
        first.run, free_run,
        "the leased conversation is passed over"
    );
    nothing_claimable(&store, "the only other run's conversation is leased").await;
    ConversationLocks::release(&store, &held)
        .await
        .expect("release");
    let second = claim(&store, LONG).await;
    assert_eq!(second.run, leased_run);
    assert!(second.fence > held.fence);
    // The lease holder's fence no longer writes: the claim owns the conversation now.
    let write = Persist {
        run: RunId::generate(),
        status: TerminalStatus::Completed,
        transcript: bytes(1),
        expected: None,
        fence: held.fence,
        base_len: None,
    };
    assert_kind(
        store.persist(&leased, write).await,
        ErrorKind::Fenced,
        "the old lease",
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_clear_with_a_stale_fence_is_fenced_and_removes_nothing(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let k = key("acme", "bot", "cleared");
    let held = lease(&store, &k).await;
    turn(&store, &held, None, &bytes(1)).await;
    ConversationLocks::release(&store, &held)
        .await
        .expect("release");
    submit(&store, &k).await;
    let c = claim(&store, LONG).await;
    for (fence, why) in [
        (held.fence, "the lease before the claim"),
        (Fence(c.fence.0 + 1), "a fence never issued"),
        (Fence(u64::MAX), "a fence that does not fit"),
    ] {
        assert_kind(store.clear(&k, fence).await, ErrorKind::Fenced, why);
        assert_eq!(snapshot_rows(&pool, &k).await, 1, "{why}: nothing removed");
    }
    assert_kind(
        store
            .clear(&key("acme", "bot", "never-owned"), c.fence)
            .await,
        ErrorKind::Fenced,
        "a conversation that never had an owner",
    );
    assert_eq!(store.clear(&k, c.fence).await.expect("clear"), 1);
    assert_eq!(store.clear(&k, c.fence).await.expect("clear again"), 0);
    assert_eq!(store.hydrate(&k).await.expect("hydrate"), None);
    // A reset run's commit writes no transcript.
    assert_eq!(
        store
            .complete(&c, Commit::output(Some(json!({"deleted": 1}))))
            .await
            .expect("complete"),
        None
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn complete_writes_the_transcript_and_completes_the_run_in_one_transaction(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let k = key("acme", "bot", "committed");
    let run = submit(&store, &k).await;
    let c = claim(&store, LONG).await;
    assert_eq!(c.head, None);

    // A commit that fails a check changes nothing: the run stays claimed, the head stays.
    let stale = Commit::transcript(bytes(1), Some(Version(999_999)));
    assert_kind(
        store.complete(&c, stale).await,
        ErrorKind::Conflict,
        "a stale expected version",
    );
    let too_large = Commit::transcript(
        Bytes::from(vec![b'x'; store.max_transcript_bytes() + 1]),
        None,
    );
    assert_kind(
        store.complete(&c, too_large).await,
        ErrorKind::TooLarge,
        "an oversized transcript",
    );
    assert_eq!(status(&store, &k, &run).await.status, RunStatus::Running);
    assert_eq!(store.head(&k).await.expect("head"), None);
    assert_eq!(snapshot_rows(&pool, &k).await, 0);
    assert!(
        store
            .try_acquire(&k, LONG)
            .await
            .expect("acquire")
            .is_none(),
        "the claim still owns the conversation"
    );

    // The commit that passes lands the head and the completion together.
    let commit = Commit {
        output: Some(json!({"turn": 1})),
        ..Commit::transcript(bytes(1), None)
    };
    let v1 = store
        .complete(&c, commit)
        .await
        .expect("complete")
        .expect("a version");
    let record = status(&store, &k, &run).await;
    assert_eq!(record.status, RunStatus::Completed);
    assert_eq!(record.output, Some(json!({"turn": 1})));
    let head = store.hydrate(&k).await.expect("hydrate").expect("head");
    assert_eq!(
        (head.version, head.run, head.transcript),
        (v1, run, bytes(1))
    );
    // The ownership ended with the commit, and the next turn starts from the new head.
    let next = submit(&store, &k).await;
    let c2 = claim(&store, LONG).await;
    assert_eq!((&c2.run, c2.head), (&next, Some(v1)));
    let v2 = store
        .complete(&c2, Commit::transcript(bytes(2), c2.head))
        .await
        .expect("complete")
        .expect("a version");
    assert!(v2 > v1);
    assert_eq!(
        store
            .hydrate(&k)
            .await
            .expect("hydrate")
            .expect("head")
            .transcript,
        bytes(2)
    );
    assert!(
        store
            .try_acquire(&k, LONG)
            .await
            .expect("acquire")
            .is_some()
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_retried_commit_after_success_returns_the_same_version(pool: PgPool) {
    let store = PgStore::new(pool);
    let k = key("acme", "bot", "retried");
    let run = submit(&store, &k).await;
    let c = claim(&store, LONG).await;
    let commit = Commit::transcript(bytes(1), None);
    let first = store.complete(&c, commit.clone()).await.expect("complete");
    assert!(first.is_some());
    let again = store.complete(&c, commit).await.expect("the retry");
    assert_eq!(again, first);
    assert_eq!(status(&store, &k, &run).await.attempts, 1);
    // Also for a commit without a transcript.
    submit(&store, &k).await;
    let c2 = claim(&store, LONG).await;
    assert_eq!(
        store
            .complete(&c2, Commit::output(None))
            .await
            .expect("complete"),
        None
    );
    assert_eq!(
        store
            .complete(&c2, Commit::output(None))
            .await
            .expect("the retry"),
        None
    );
    // A standalone persist of the same bytes before complete is committed at its version.
    submit(&store, &k).await;
    let c3 = claim(&store, LONG).await;
    let persisted = store
        .persist(
            &k,
            Persist {
                run: c3.run.clone(),
                status: TerminalStatus::Completed,
                transcript: bytes(2),
                expected: c3.head,
                fence: c3.fence,
                base_len: None,
            },
        )
        .await
        .expect("persist");
    assert_eq!(
        store
            .complete(&c3, Commit::transcript(bytes(2), c3.head))
            .await
            .expect("complete"),
        Some(persisted)
    );
    // Another worker's claim of a completed run is not a retry.
    let other = Claim {
        worker: WorkerId::generate(),
        ..c3
    };
    assert_kind(
        store.complete(&other, Commit::output(None)).await,
        ErrorKind::Fenced,
        "another worker",
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn a_newer_claim_fences_the_older_claims_persist_and_complete(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let k = key("acme", "bot", "taken-over");
    let run = submit(&store, &k).await;
    let old = claim(&store, SHORT).await;
    tokio::time::sleep(PAST_SHORT).await;
    let new = claim(&store, LONG).await;
    assert_eq!((&new.run, new.attempt), (&run, 2), "re-delivered");
    assert!(new.fence > old.fence);

    let write = Persist {
        run: run.clone(),
        status: TerminalStatus::Completed,
        transcript: bytes(1),
        expected: None,
        fence: old.fence,
        base_len: None,
    };
    assert_kind(store.persist(&k, write).await, ErrorKind::Fenced, "persist");
    assert_kind(
        store
            .complete(&old, Commit::transcript(bytes(1), None))
            .await,
        ErrorKind::Fenced,
        "complete with a transcript",
    );
    assert_kind(
        store.complete(&old, Commit::output(None)).await,
        ErrorKind::Fenced,
        "complete",
    );
    assert_kind(
        store.heartbeat(&old, LONG).await,
        ErrorKind::Fenced,
        "heartbeat",
    );
    assert_kind(
        store
            .fail(&old, &Failure::new(TerminalStatus::Failed, "late"))
            .await,
        ErrorKind::Fenced,
        "fail",
    );
    assert_kind(
        RunQueue::release(&store, &old).await,
        ErrorKind::Fenced,
        "release",
    );
    assert_kind(store.clear(&k, old.fence).await, ErrorKind::Fenced, "clear");
    assert_eq!(
        snapshot_rows(&pool, &k).await,
        0,
        "the old claim wrote nothing"
    );
    assert_eq!(status(&store, &k, &run).await.status, RunStatus::Running);

    let v = store
        .complete(&new, Commit::transcript(bytes(1), None))
        .await
        .expect("the newest claim commits");
    assert_eq!(store.head(&k).await.expect("head"), v);
    // A lease taken while the claim is live does not exist; one taken after outranks it.
    let after = lease(&store, &k).await;
    assert!(after.fence > new.fence);
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn prune_skips_a_conversation_whose_run_is_claimed(pool: PgPool) {
    let store = PgStore::new(pool.clone());
    let k = key("acme", "bot", "owned");
    let held = lease(&store, &k).await;
    let v = turn(&store, &held, None, &bytes(1)).await;
    ConversationLocks::release(&store, &held)
        .await
        .expect("release");
    submit(&store, &k).await;
    claim(&store, SHORT).await;
    let everything = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(
        store.prune(everything).await.expect("prune"),
        PruneReport::default(),
        "a live claim"
    );
    // Still running after its claim lapsed: its worker may yet be alive, and the run is
    // re-delivered or reaped before its conversation can go.
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(
        store.prune(everything).await.expect("prune"),
        PruneReport::default(),
        "a running run with a lapsed claim"
    );
    assert_eq!(store.head(&k).await.expect("head"), Some(v));
    let c = claim(&store, LONG).await;
    assert_eq!(c.head, Some(v));
    store
        .complete(&c, Commit::output(None))
        .await
        .expect("complete");
    assert_eq!(
        store.prune(everything).await.expect("prune"),
        PruneReport {
            conversations: 1,
            snapshots: 1
        },
        "owned by nobody"
    );
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn the_reaper_completes_a_lapsed_run_whose_transcript_is_the_head(pool: PgPool) {
    let store = PgStore::new(pool);
    let k = key("acme", "bot", "persisted-then-died");
    let run = submit(&store, &k).await;
    let c = claim(&store, SHORT).await;
    // The worker persisted on its own, then died before completing.
    let v = store
        .persist(
            &k,
            Persist {
                run: run.clone(),
                status: TerminalStatus::Completed,
                transcript: bytes(1),
                expected: None,
                fence: c.fence,
                base_len: None,
            },
        )
        .await
        .expect("persist");
    tokio::time::sleep(PAST_SHORT).await;
    let next = submit(&store, &k).await;
    let c2 = claim(&store, LONG).await;
    assert_eq!(
        (&c2.run, c2.head),
        (&next, Some(v)),
        "not re-delivered: completed"
    );
    let record = status(&store, &k, &run).await;
    assert_eq!((record.status, record.attempts), (RunStatus::Completed, 1));
    // The dead worker's retried commit is still answered with its version.
    assert_eq!(
        store
            .complete(&c, Commit::transcript(bytes(1), None))
            .await
            .expect("a late retry of the dead worker's commit"),
        Some(v)
    );
}
