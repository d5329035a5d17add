//! Queue changes stopped between their two writes (marker and record), or right after a
//! submit reserved its idempotency key: no run is lost, none runs twice, and the index
//! corrects itself.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use lobu_core::{
    Claim, Commit, ConversationKey, ConversationLocks, Failure, IdempotencyKey, NewRun, RunQueue,
    RunStatus, SessionStore, TerminalStatus, WorkerId,
};
use serde_json::json;

use crate::store::{FileStore, Step};

const LONG: Duration = Duration::from_secs(600);
const SHORT: Duration = Duration::from_millis(300);
const PAST_SHORT: Duration = Duration::from_millis(800);

async fn open(dir: &Path) -> FileStore {
    FileStore::open(dir).await.unwrap()
}

async fn crashing(dir: &Path, step: Step) -> FileStore {
    open(dir).await.crashing_at(step)
}

fn key(id: &str) -> ConversationKey {
    ConversationKey::parse("acme", "bot", id).unwrap()
}

fn with_key(conversation: &ConversationKey, idem: &str) -> NewRun {
    NewRun {
        idempotency_key: Some(IdempotencyKey::new(idem).unwrap()),
        ..NewRun::turn(conversation.clone(), json!({"text": "hi"}))
    }
}

fn markers(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("queue/active")).map_or(0, Iterator::count)
}

fn simulated<T: std::fmt::Debug>(result: lobu_core::Result<T>) {
    let error = result.expect_err("the simulated crash");
    assert!(error.message().starts_with("simulated crash"), "{error}");
}

#[tokio::test]
async fn a_submit_that_crashed_after_reserving_its_key_is_finished_by_the_retry() {
    let dir = tempfile::tempdir().unwrap();
    let c = key("c1");
    simulated(
        crashing(dir.path(), Step::IdempotencyReserved)
            .await
            .submit(with_key(&c, "k"))
            .await,
    );
    let store = open(dir.path()).await;
    let retried = store.submit(with_key(&c, "k")).await.unwrap();
    assert!(retried.created, "the crashed submit stored no run");
    let again = store.submit(with_key(&c, "k")).await.unwrap();
    assert_eq!((again.run, again.created), (retried.run.clone(), false));
    let worker = WorkerId::generate();
    let claim = store.claim(&worker, LONG).await.unwrap().expect("the run");
    assert_eq!(claim.run, retried.run);
    store.complete(&claim, Commit::output(None)).await.unwrap();
    assert!(
        store.claim(&worker, LONG).await.unwrap().is_none(),
        "exactly one run"
    );
}

#[tokio::test]
async fn a_submit_that_crashed_between_marker_and_record_leaves_nothing_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = crashing(dir.path(), Step::QueueHalfway).await;
    simulated(crashed.submit(NewRun::turn(key("c1"), json!({}))).await);
    simulated(crashed.submit(with_key(&key("c2"), "k")).await);
    assert_eq!(markers(dir.path()), 2, "two markers without records");
    let worker = WorkerId::generate();
    let soon = open(dir.path()).await;
    assert!(soon.claim(&worker, LONG).await.unwrap().is_none());
    assert_eq!(
        markers(dir.path()),
        2,
        "young, they may be submits writing their records: kept"
    );
    let store = open(dir.path()).await.orphan_markers_at_once();
    assert!(store.claim(&worker, LONG).await.unwrap().is_none());
    assert_eq!(markers(dir.path()), 0, "claim removed both");
    // The client retrying with its key gets its run stored now, once.
    let retried = store.submit(with_key(&key("c2"), "k")).await.unwrap();
    assert!(retried.created);
    let claim = store
        .claim(&worker, LONG)
        .await
        .unwrap()
        .expect("the retried run");
    assert_eq!((claim.run, claim.attempt), (retried.run, 1));
    assert!(store.claim(&worker, LONG).await.unwrap().is_none());
}

#[tokio::test]
async fn a_claim_that_crashed_halfway_is_redelivered_after_its_lease() {
    // Long enough that the look right after the crash surely comes before it expires.
    const CRASHED: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let run = store
        .submit(NewRun::turn(key("c1"), json!({})))
        .await
        .unwrap()
        .run;
    let worker = WorkerId::generate();
    simulated(
        crashing(dir.path(), Step::QueueHalfway)
            .await
            .claim(&worker, CRASHED)
            .await,
    );
    // The record holds the crashed claim; its marker still says pending, until corrected.
    assert!(
        store.claim(&worker, LONG).await.unwrap().is_none(),
        "the claim is live"
    );
    assert_eq!(
        store.depth().await.unwrap(),
        0,
        "the marker was corrected to running"
    );
    tokio::time::sleep(CRASHED + PAST_SHORT).await;
    let claim = store
        .claim(&worker, LONG)
        .await
        .unwrap()
        .expect("re-delivered");
    assert_eq!((claim.run, claim.attempt), (run, 2));
}

#[tokio::test]
async fn a_release_that_crashed_halfway_can_be_retried() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let run = store
        .submit(NewRun::turn(key("c1"), json!({})))
        .await
        .unwrap()
        .run;
    let worker = WorkerId::generate();
    let claim = store.claim(&worker, LONG).await.unwrap().unwrap();
    let crashed = crashing(dir.path(), Step::QueueHalfway).await;
    simulated(RunQueue::release(&crashed, &claim).await);
    // The marker already says pending; the record still holds the claim.
    assert!(store.claim(&worker, LONG).await.unwrap().is_none());
    RunQueue::release(&store, &claim)
        .await
        .expect("the claim is still the newest");
    let again = store
        .claim(&worker, LONG)
        .await
        .unwrap()
        .expect("handed back");
    assert_eq!((again.run, again.attempt), (run, 1));
    assert!(again.fence > claim.fence);
}

#[tokio::test]
async fn a_complete_that_crashed_halfway_holds_its_lane_no_longer_than_the_claim() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let c = key("c1");
    let first = store
        .submit(NewRun::turn(c.clone(), json!({})))
        .await
        .unwrap()
        .run;
    let second = store
        .submit(NewRun::turn(c.clone(), json!({})))
        .await
        .unwrap()
        .run;
    let worker = WorkerId::generate();
    let claim = store.claim(&worker, SHORT).await.unwrap().unwrap();
    assert_eq!(claim.run, first);
    simulated(
        crashing(dir.path(), Step::QueueHalfway)
            .await
            .complete(&claim, Commit::output(None))
            .await,
    );
    let record = store.status(&c.org, &first).await.unwrap().unwrap();
    assert_eq!(
        record.status,
        RunStatus::Completed,
        "the record is committed"
    );
    tokio::time::sleep(PAST_SHORT).await;
    let next = store
        .claim(&worker, LONG)
        .await
        .unwrap()
        .expect("the lane moved on");
    assert_eq!((next.run, next.attempt), (second, 1));
    assert_eq!(markers(dir.path()), 1, "the finished run's marker is gone");
}

#[tokio::test]
async fn a_failure_that_crashed_halfway_did_not_happen_and_can_be_retried() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let c = key("c1");
    let run = store.submit(NewRun {
        retry_delay: SHORT,
        ..NewRun::turn(c.clone(), json!({}))
    });
    let run = run.await.unwrap().run;
    let worker = WorkerId::generate();
    let claim = store.claim(&worker, LONG).await.unwrap().unwrap();
    let crashed = crashing(dir.path(), Step::QueueHalfway).await;
    simulated(
        crashed
            .fail(&claim, &Failure::new(TerminalStatus::Failed, "boom"))
            .await,
    );
    // The retry is due sooner than the claim's expiry, so only the marker moved: the record
    // still holds the live claim, and nothing is claimable even once the delay has passed.
    tokio::time::sleep(PAST_SHORT).await;
    assert!(
        store.claim(&worker, LONG).await.unwrap().is_none(),
        "still claimed"
    );
    let record = store.status(&c.org, &run).await.unwrap().unwrap();
    assert_eq!((record.status, record.error), (RunStatus::Running, None));
    store
        .fail(&claim, &Failure::new(TerminalStatus::Failed, "boom"))
        .await
        .expect("the claim is intact");
    tokio::time::sleep(PAST_SHORT).await;
    let retry = store
        .claim(&worker, LONG)
        .await
        .unwrap()
        .expect("the retry");
    assert_eq!((retry.run, retry.attempt), (run, 2));
}

/// A turn's commit stopped right after `state.json` committed its transcript, before the
/// run record: the transcript is the head, the record still says running.
async fn crashed_after_the_transcript(dir: &Path, max_attempts: u32) -> (FileStore, Claim) {
    let store = open(dir).await;
    store
        .submit(NewRun {
            max_attempts,
            ..NewRun::turn(key("c1"), json!({}))
        })
        .await
        .unwrap();
    let claim = store
        .claim(&WorkerId::generate(), SHORT)
        .await
        .unwrap()
        .unwrap();
    let commit = Commit::transcript(Bytes::from_static(b"turn\n"), None);
    simulated(
        crashing(dir, Step::Committed)
            .await
            .complete(&claim, commit)
            .await,
    );
    let record = store.status(&claim.key.org, &claim.run).await.unwrap();
    assert_eq!(record.unwrap().status, RunStatus::Running);
    let head = store.hydrate(&claim.key).await.unwrap().unwrap();
    assert_eq!(head.run, claim.run, "the transcript is the head");
    (store, claim)
}

#[tokio::test]
async fn a_run_whose_transcript_is_the_head_is_completed_not_failed_by_the_reaper() {
    let dir = tempfile::tempdir().unwrap();
    let (store, claim) = crashed_after_the_transcript(dir.path(), 1).await;
    let next = store.submit(NewRun::turn(key("c1"), json!({}))).await;
    tokio::time::sleep(PAST_SHORT).await;
    let worker = WorkerId::generate();
    let claimed = store
        .claim(&worker, LONG)
        .await
        .unwrap()
        .expect("the next run");
    assert_eq!(claimed.run, next.unwrap().run, "the lane moved on");
    let record = store.status(&claim.key.org, &claim.run).await.unwrap();
    let record = record.unwrap();
    assert_eq!((record.status, record.error), (RunStatus::Completed, None));
    assert_eq!(claimed.head.map(|v| v.0), Some(1), "the recovered head");
    // The lost answer, asked again: the same version.
    let again = store
        .complete(
            &claim,
            Commit::transcript(Bytes::from_static(b"turn\n"), None),
        )
        .await;
    assert_eq!(again.unwrap(), claimed.head);
}

#[tokio::test]
async fn a_run_whose_transcript_is_the_head_is_completed_not_redelivered() {
    let dir = tempfile::tempdir().unwrap();
    let (store, claim) = crashed_after_the_transcript(dir.path(), 3).await;
    tokio::time::sleep(PAST_SHORT).await;
    let worker = WorkerId::generate();
    assert!(
        store.claim(&worker, LONG).await.unwrap().is_none(),
        "nothing to re-deliver"
    );
    let record = store.status(&claim.key.org, &claim.run).await.unwrap();
    assert_eq!(record.unwrap().status, RunStatus::Completed);
    let lease = store.try_acquire(&claim.key, LONG).await.unwrap();
    assert!(lease.is_some(), "the conversation is free");
}

#[tokio::test]
async fn a_complete_retried_after_a_crash_between_transcript_and_record_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, claim) = crashed_after_the_transcript(dir.path(), 3).await;
    let commit = Commit::transcript(Bytes::from_static(b"turn\n"), None);
    let version = store.complete(&claim, commit).await.unwrap();
    assert_eq!(
        version.map(|v| v.0),
        Some(1),
        "the stored write, not a new one"
    );
    let record = store.status(&claim.key.org, &claim.run).await.unwrap();
    assert_eq!(record.unwrap().status, RunStatus::Completed);
    let head = store.hydrate(&claim.key).await.unwrap().unwrap();
    assert_eq!(&head.transcript[..], b"turn\n");
}

#[tokio::test]
async fn a_cancel_that_crashed_before_removing_the_marker_still_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let c = key("c1");
    let first = store.submit(NewRun::turn(c.clone(), json!({})));
    let first = first.await.unwrap().run;
    let second = store.submit(NewRun::turn(c.clone(), json!({})));
    let second = second.await.unwrap().run;
    let crashed = crashing(dir.path(), Step::QueueHalfway).await;
    simulated(crashed.cancel(&c.org, &first, "stop").await);
    // The record is written first: the run is cancelled, its marker is left behind.
    let record = store.status(&c.org, &first).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Cancelled);
    assert_eq!(markers(dir.path()), 2);
    let claim = store
        .claim(&WorkerId::generate(), LONG)
        .await
        .unwrap()
        .expect("the conversation's next run");
    assert_eq!(claim.run, second, "the cancelled run never runs");
    assert_eq!(markers(dir.path()), 1, "the stale marker was removed");
}

/// Cut the last line of a record file, leaving half of it behind torn, as a power loss may
/// when the append was not synced.
fn lose_last_line(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let kept = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    std::fs::write(path, &bytes[..kept + (bytes.len() - kept) / 2]).unwrap();
}

#[tokio::test]
async fn a_claim_undone_by_a_power_loss_comes_back_as_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let c = key("c1");
    let worker = WorkerId::generate();
    // A first turn: the conversation's state record exists before the claim (a first claim
    // creates it whole, by a rename, which a power loss keeps or undoes whole).
    store
        .submit(NewRun::turn(c.clone(), json!({})))
        .await
        .unwrap();
    let first = store.claim(&worker, LONG).await.unwrap().unwrap();
    let commit = Commit::append(Bytes::from_static(b"{\"a\":1}\n"), None, 0);
    let head = store.complete(&first, commit).await.unwrap();
    let run = store
        .submit(NewRun::turn(c.clone(), json!({})))
        .await
        .unwrap()
        .run;
    let lost = store.claim(&worker, SHORT).await.unwrap().unwrap();
    let run_path = super::files::Queue::new(&store.inner).run_path(&run);
    drop(store);
    // Neither of the claim's appends was synced: both may be lost.
    lose_last_line(&dir.path().join("orgs/acme/bot/c1/state.json"));
    lose_last_line(&run_path);

    let store = open(dir.path()).await;
    let record = store.status(&c.org, &run).await.unwrap().unwrap();
    assert_eq!((record.status, record.attempts), (RunStatus::Pending, 0));
    // Its marker may still say the claim's expiry: the run waits that out, no longer.
    tokio::time::sleep(PAST_SHORT).await;
    let again = store
        .claim(&worker, LONG)
        .await
        .unwrap()
        .expect("claimable");
    assert_eq!((again.run.clone(), again.attempt), (run.clone(), 1));
    // Nothing the lost claim wrote outlived it (a write under a fence syncs the state
    // record, the claim's line with it), so no write can carry its fence.
    assert_eq!(again.fence, lost.fence);
    let commit = Commit::append(Bytes::from_static(b"{\"b\":2}\n"), head, 8);
    store.complete(&again, commit).await.unwrap();
    let record = store.status(&c.org, &run).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Completed);
}

#[tokio::test]
async fn a_young_marker_without_its_record_holds_back_only_its_own_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = crashing(dir.path(), Step::QueueHalfway).await;
    simulated(crashed.submit(NewRun::turn(key("c1"), json!({}))).await);
    let store = open(dir.path()).await;
    let later = store
        .submit(NewRun::turn(key("c1"), json!({})))
        .await
        .unwrap();
    let other = store
        .submit(NewRun::turn(key("c2"), json!({})))
        .await
        .unwrap();
    let worker = WorkerId::generate();
    let claim = store.claim(&worker, LONG).await.unwrap().expect("c2's run");
    assert_eq!(claim.run, other.run);
    assert!(
        store.claim(&worker, LONG).await.unwrap().is_none(),
        "c1's run waits behind the marker, which may be a submit still writing"
    );
    // Once the marker is old enough to be a crashed submit's, it goes and c1 moves on.
    let store = store.orphan_markers_at_once();
    let claim = store.claim(&worker, LONG).await.unwrap().expect("c1's run");
    assert_eq!(claim.run, later.run);
}
