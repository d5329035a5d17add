//! Cancellation on files: the request is in the run record, so every handle on the root
//! (another process's included) sees it; a cancelled holder that dies is not re-delivered.

use std::time::Duration;

use lobu_core::control::{CancelOutcome, Failure};
use lobu_core::{
    AfterFailure, Commit, ConversationKey, ErrorKind, NewRun, RunQueue, RunStatus, SessionStore,
    TerminalStatus, WorkerId,
};
use lobu_store_file::FileStore;
use serde_json::json;

const LONG: Duration = Duration::from_secs(600);

fn key(id: &str) -> ConversationKey {
    ConversationKey::parse("acme", "bot", id).unwrap()
}

#[tokio::test]
async fn a_cancel_through_one_handle_is_seen_by_a_heartbeat_through_another() {
    let dir = tempfile::tempdir().unwrap();
    let worker_side = FileStore::open(dir.path()).await.unwrap();
    let api_side = FileStore::open(dir.path()).await.unwrap();
    let c = key("c1");
    let run = worker_side
        .submit(NewRun::turn(c.clone(), json!({})))
        .await
        .unwrap()
        .run;
    let claim = worker_side
        .claim(&WorkerId::generate(), LONG)
        .await
        .unwrap()
        .expect("the run");
    let outcome = api_side.cancel(&c.org, &run, "stop it").await.unwrap();
    assert_eq!(outcome, Some(CancelOutcome::Requested));

    let refused = worker_side.heartbeat(&claim, LONG).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Cancelled);
    assert!(refused.message().contains("stop it"), "{refused}");
    let commit = Commit::transcript(
        bytes::Bytes::from_static(b"{\"type\":\"session\"}\n"),
        claim.head,
    );
    let refused = worker_side.complete(&claim, commit).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Cancelled);
    assert!(worker_side.hydrate(&c).await.unwrap().is_none(), "no head");

    let retry = Failure::new(TerminalStatus::Failed, "interrupted");
    let after = worker_side.fail(&claim, &retry).await.unwrap();
    assert_eq!(after, AfterFailure::Final(RunStatus::Cancelled));
    let ended = api_side.status(&c.org, &run).await.unwrap().unwrap();
    assert_eq!(
        (ended.status, ended.error.as_deref()),
        (RunStatus::Cancelled, Some("stop it"))
    );
}

#[tokio::test]
async fn a_cancelled_claim_whose_worker_died_ends_cancelled_instead_of_running_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let c = key("c1");
    let run = store
        .submit(NewRun::turn(c.clone(), json!({})))
        .await
        .unwrap()
        .run;
    let short = Duration::from_millis(300);
    store
        .claim(&WorkerId::generate(), short)
        .await
        .unwrap()
        .expect("the run");
    let outcome = store.cancel(&c.org, &run, "stop").await.unwrap();
    assert_eq!(outcome, Some(CancelOutcome::Requested));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let next = store.claim(&WorkerId::generate(), LONG).await.unwrap();
    assert!(next.is_none(), "re-delivered: {next:?}");
    let ended = store.status(&c.org, &run).await.unwrap().unwrap();
    assert_eq!(
        (ended.status, ended.attempts, ended.error.as_deref()),
        (RunStatus::Cancelled, 1, Some("stop"))
    );
    assert_eq!(store.depth().await.unwrap(), 0);
}

#[tokio::test]
async fn cancelling_a_run_whose_claim_lapsed_ends_the_lapsed_lease_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let c = key("c1");
    let run = store
        .submit(NewRun::turn(c.clone(), json!({})))
        .await
        .unwrap()
        .run;
    let claim = store
        .claim(&WorkerId::generate(), Duration::from_millis(300))
        .await
        .unwrap()
        .expect("the run");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let outcome = store.cancel(&c.org, &run, "").await.unwrap();
    assert_eq!(outcome, Some(CancelOutcome::Cancelled));
    let ended = store.status(&c.org, &run).await.unwrap().unwrap();
    assert_eq!(
        (ended.status, ended.error.as_deref()),
        (RunStatus::Cancelled, Some("cancelled"))
    );
    let path = store.conversation_dir(&c).join("state.json");
    let state: serde_json::Value =
        serde_json::from_slice(&lobu_store_file::read_record(path).unwrap()).unwrap();
    assert_eq!(state["lease"], serde_json::Value::Null, "{state}");
    assert_eq!(state["last_fence"], json!(claim.fence.0));
    let refused = store.heartbeat(&claim, LONG).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Fenced);
}
