//! Contract v2 on files: a claim is its conversation's ownership, written in the
//! conversation's `state.json` as its lease; `clear` is fenced; prune leaves owned
//! conversations alone; a conversation whose state cannot be opened fails its own runs and
//! nobody else's.

mod common;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use lobu_core::{
    Commit, ConversationKey, ConversationLocks, ErrorKind, NewRun, RunId, RunQueue, RunStatus,
    SessionStore, WorkerId,
};
use lobu_store_file::FileStore;
use serde_json::{Value, json};

use common::{Fixture, LONG, tree, write};

fn key(id: &str) -> ConversationKey {
    ConversationKey::parse("acme", "bot", id).unwrap()
}

fn state_of(store: &FileStore, key: &ConversationKey) -> Value {
    let path = store.conversation_dir(key).join("state.json");
    serde_json::from_slice(&lobu_store_file::read_record(path).unwrap()).unwrap()
}

#[tokio::test]
async fn claim_takes_the_conversation_so_try_acquire_finds_it_busy() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let c = key("c1");
    store
        .submit(NewRun::turn(c.clone(), json!({})))
        .await
        .unwrap();
    let claim = store
        .claim(&WorkerId::generate(), LONG)
        .await
        .unwrap()
        .expect("the run");
    assert_eq!(claim.head, None, "a new conversation has no head");
    let state = state_of(&store, &c);
    assert_eq!(state["last_fence"], json!(claim.fence.0));
    assert_eq!(state["lease"]["fence"], json!(claim.fence.0), "{state}");
    assert!(
        store.try_acquire(&c, LONG).await.unwrap().is_none(),
        "the claim owns the conversation"
    );
    let version = store
        .complete(&claim, Commit::transcript(Bytes::from("hi\n"), None))
        .await
        .unwrap()
        .expect("a transcript was committed");
    assert_eq!(
        state_of(&store, &c)["lease"],
        Value::Null,
        "ownership ended"
    );
    let lease = store
        .try_acquire(&c, LONG)
        .await
        .unwrap()
        .expect("free once completed");
    assert!(lease.fence > claim.fence, "one fence sequence for both");
    assert_eq!(store.head(&c).await.unwrap(), Some(version));
}

#[tokio::test]
async fn a_live_lease_keeps_the_conversations_runs_unclaimed_until_it_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let (busy, free) = (key("busy"), key("free"));
    let lease = store.try_acquire(&busy, LONG).await.unwrap().unwrap();
    let waiting = store.submit(NewRun::turn(busy.clone(), json!({}))).await;
    let waiting = waiting.unwrap().run;
    let other = store.submit(NewRun::turn(free, json!({}))).await;
    let worker = WorkerId::generate();
    let claim = store.claim(&worker, LONG).await.unwrap().expect("a run");
    assert_eq!(claim.run, other.unwrap().run, "the leased lane is skipped");
    assert!(store.claim(&worker, LONG).await.unwrap().is_none());
    ConversationLocks::release(&store, &lease).await.unwrap();
    let claim = store.claim(&worker, LONG).await.unwrap().expect("released");
    assert_eq!((claim.run, claim.attempt), (waiting, 1));
    assert!(claim.fence > lease.fence);
}

#[tokio::test]
async fn a_clear_with_a_stale_fence_is_fenced_and_removes_nothing() {
    let fx = Fixture::new().await;
    ConversationLocks::release(&fx.store, &fx.lease)
        .await
        .unwrap();
    let newer = fx.store.try_acquire(&fx.key, LONG).await.unwrap().unwrap();
    let before = tree(fx.dir.path());
    let stale = fx.store.clear(&fx.key, fx.lease.fence).await;
    fx.refused(
        &before,
        ErrorKind::Fenced,
        "clear with a stale fence",
        stale,
    )
    .await;
    let never = lobu_core::Fence(newer.fence.0 + 1);
    let unissued = fx.store.clear(&fx.key, never).await;
    fx.refused(
        &before,
        ErrorKind::Fenced,
        "clear with a fence never issued",
        unissued,
    )
    .await;
    let unknown = fx.store.clear(&key("never-leased"), newer.fence).await;
    fx.refused(
        &before,
        ErrorKind::Fenced,
        "clear a conversation never owned",
        unknown,
    )
    .await;
    assert_eq!(fx.store.clear(&fx.key, newer.fence).await.unwrap(), 1);
    assert_eq!(
        fx.store.clear(&fx.key, newer.fence).await.unwrap(),
        0,
        "idempotent"
    );
    assert_eq!(fx.store.hydrate(&fx.key).await.unwrap(), None);
}

#[tokio::test]
async fn a_claim_clears_with_its_own_fence() {
    let fx = Fixture::new().await;
    ConversationLocks::release(&fx.store, &fx.lease)
        .await
        .unwrap();
    fx.store
        .submit(NewRun::reset(fx.key.clone()))
        .await
        .unwrap();
    let claim = fx
        .store
        .claim(&WorkerId::generate(), LONG)
        .await
        .unwrap()
        .expect("the reset");
    assert_eq!(claim.head, Some(fx.head), "the head at claim time");
    let stale = fx.store.clear(&fx.key, fx.lease.fence).await;
    assert_eq!(stale.unwrap_err().kind(), ErrorKind::Fenced);
    assert_eq!(fx.store.clear(&fx.key, claim.fence).await.unwrap(), 1);
    let output = json!({"deleted": 1});
    let done = fx
        .store
        .complete(&claim, Commit::output(Some(output.clone())));
    assert_eq!(done.await.unwrap(), None);
    let record = fx.store.status(&fx.key.org, &claim.run).await.unwrap();
    assert_eq!(record.unwrap().output, Some(output));
}

#[tokio::test]
async fn prune_skips_a_conversation_whose_run_is_claimed() {
    let fx = Fixture::new().await;
    ConversationLocks::release(&fx.store, &fx.lease)
        .await
        .unwrap();
    fx.store
        .submit(NewRun::turn(fx.key.clone(), json!({})))
        .await
        .unwrap();
    let claim = fx
        .store
        .claim(&WorkerId::generate(), LONG)
        .await
        .unwrap()
        .expect("the run");
    let everything = SystemTime::now() + Duration::from_secs(60);
    let report = fx.store.prune(everything).await.unwrap();
    assert_eq!(report.conversations, 0, "the claimed conversation is kept");
    let head = fx.store.hydrate(&fx.key).await.unwrap().expect("kept");
    assert_eq!(head.version, fx.head);
    fx.store
        .complete(&claim, Commit::output(None))
        .await
        .unwrap();
    let report = fx.store.prune(everything).await.unwrap();
    assert_eq!(report.conversations, 1, "idle and unowned now");
    assert_eq!(fx.store.hydrate(&fx.key).await.unwrap(), None);
}

#[tokio::test]
async fn prune_skips_a_conversation_with_a_live_lease() {
    let fx = Fixture::new().await;
    let everything = SystemTime::now() + Duration::from_secs(60);
    assert_eq!(fx.store.prune(everything).await.unwrap().conversations, 0);
    ConversationLocks::release(&fx.store, &fx.lease)
        .await
        .unwrap();
    assert_eq!(fx.store.prune(everything).await.unwrap().conversations, 1);
}

#[tokio::test]
async fn a_damaged_state_fails_the_run_after_its_attempts_and_the_next_run_proceeds() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let (damaged, healthy) = (key("damaged"), key("healthy"));
    let lease = store.try_acquire(&damaged, LONG).await.unwrap().unwrap();
    let bytes = Bytes::from("kept\n");
    let head = store
        .persist(
            &damaged,
            write(&RunId::generate(), &bytes, None, lease.fence),
        )
        .await
        .unwrap();
    ConversationLocks::release(&store, &lease).await.unwrap();
    let state = store.conversation_dir(&damaged).join("state.json");
    let good = std::fs::read(&state).unwrap();
    std::fs::write(&state, b"{\"torn").unwrap();

    let doomed = store.submit(NewRun {
        max_attempts: 2,
        retry_delay: Duration::ZERO,
        ..NewRun::turn(damaged.clone(), json!({}))
    });
    let doomed = doomed.await.unwrap().run;
    let next = store.submit(NewRun::turn(healthy.clone(), json!({})));
    let next = next.await.unwrap().run;
    let worker = WorkerId::generate();
    let claim = store
        .claim(&worker, LONG)
        .await
        .expect("a damaged conversation does not fail the claim")
        .expect("the healthy conversation's run");
    assert_eq!(claim.run, next);
    let record = store.status(&damaged.org, &doomed).await.unwrap().unwrap();
    assert_eq!((record.status, record.attempts), (RunStatus::Pending, 1));
    assert!(
        record
            .error
            .as_deref()
            .unwrap()
            .contains("could not be opened"),
        "{record:?}"
    );
    assert!(store.claim(&worker, LONG).await.unwrap().is_none());
    let record = store.status(&damaged.org, &doomed).await.unwrap().unwrap();
    assert_eq!((record.status, record.attempts), (RunStatus::Failed, 2));
    assert!(record.error.unwrap().contains("corrupt"));
    store.complete(&claim, Commit::output(None)).await.unwrap();

    // Repaired, the conversation's next run is claimed, with its head and a newer fence.
    std::fs::write(&state, good).unwrap();
    let after = store.submit(NewRun::turn(damaged.clone(), json!({})));
    let after = after.await.unwrap().run;
    let claim = store.claim(&worker, LONG).await.unwrap().expect("repaired");
    assert_eq!((claim.run, claim.attempt), (after, 1));
    assert_eq!(claim.head, Some(head));
    assert!(claim.fence > lease.fence);
}

#[tokio::test]
async fn a_retried_complete_after_success_returns_the_same_version_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let c = key("c1");
    store
        .submit(NewRun::turn(c.clone(), json!({})))
        .await
        .unwrap();
    let claim = store
        .claim(&WorkerId::generate(), LONG)
        .await
        .unwrap()
        .unwrap();
    let commit = Commit::transcript(Bytes::from("one\n"), None);
    let version = store.complete(&claim, commit.clone()).await.unwrap();
    assert!(version.is_some());
    let before = tree(dir.path());
    assert_eq!(store.complete(&claim, commit).await.unwrap(), version);
    assert!(before == tree(dir.path()), "the retry changed files");
    let heartbeat = store.heartbeat(&claim, LONG).await;
    assert_eq!(heartbeat.unwrap_err().kind(), ErrorKind::Fenced);
}

#[tokio::test]
async fn heartbeat_extends_the_claim_and_the_conversations_lease_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let c = key("c1");
    store
        .submit(NewRun::turn(c.clone(), json!({})))
        .await
        .unwrap();
    let claim = store
        .claim(&WorkerId::generate(), Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    let renewed = store.heartbeat(&claim, LONG).await.unwrap();
    assert_eq!((renewed.fence, renewed.attempt), (claim.fence, 1));
    assert!(renewed.expires_at > claim.expires_at);
    let lease = state_of(&store, &c)["lease"].clone();
    assert_eq!(lease["fence"], json!(claim.fence.0));
    let text = lease["expires_at"].as_str().unwrap();
    let expires =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!(SystemTime::from(expires), renewed.expires_at);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        store.try_acquire(&c, LONG).await.unwrap().is_none(),
        "still owned after the first lease would have lapsed"
    );
}

#[tokio::test]
async fn wait_for_work_does_not_report_a_leased_conversations_run_as_claimable() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path())
        .await
        .unwrap()
        .with_poll_interval(Duration::from_secs(3600));
    let c = key("c1");
    let lease = store.try_acquire(&c, LONG).await.unwrap().unwrap();
    store
        .submit(NewRun::turn(c.clone(), json!({})))
        .await
        .unwrap();
    let worker = WorkerId::generate();
    assert!(store.claim(&worker, LONG).await.unwrap().is_none());
    let waited = tokio::time::timeout(
        Duration::from_millis(300),
        store.wait_for_work(Duration::from_secs(3600)),
    );
    assert!(waited.await.is_err(), "no spin while the lease is held");
    let waiter = tokio::spawn({
        let store = store.clone();
        async move { store.wait_for_work(Duration::from_secs(3600)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    ConversationLocks::release(&store, &lease).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), waiter)
        .await
        .expect("the release wakes the waiter")
        .unwrap();
    assert!(store.claim(&worker, LONG).await.unwrap().is_some());
}
