//! What a turn syncs: only what must survive a power loss (see
//! [`Durability`](crate::atomic::Durability)). Counted on the calling thread, so the store's
//! functions are called directly, not through the blocking pool.

use std::time::Duration;

use bytes::Bytes;
use lobu_core::{Commit, ConversationKey, NewRun, Version, WorkerId};
use serde_json::json;

use super::{claim, intake};
use crate::atomic::counted;
use crate::store::FileStore;

const LEASE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "current_thread")]
async fn a_turn_syncs_its_submit_and_its_commit_and_nothing_for_its_claim_or_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let inner = &*store.inner;
    let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
    let worker = WorkerId::new("w1").unwrap();
    let mut head: Option<Version> = None;
    let mut base = 0;
    let mut syncs = Vec::new();
    // The first turn creates the conversation's directories; the second is the steady state.
    for text in ["first", "second"] {
        let run = NewRun::turn(key.clone(), json!({ "text": text }));
        counted::take();
        intake::submit(inner, run).unwrap();
        let submitted = counted::take();
        let claimed = claim::claim(inner, &worker, LEASE).unwrap().unwrap();
        let claimed_syncs = counted::take();
        let claimed = claim::heartbeat(inner, &claimed, LEASE).unwrap();
        let heartbeat = counted::take();
        // Each turn appends its line after the head's bytes, as the runtime's commit does.
        let line = format!("{{\"text\":\"{text}\"}}\n");
        let commit = Commit::append(Bytes::from(line.clone()), head, base);
        base += line.len();
        head = claim::complete(inner, &claimed, commit).unwrap();
        syncs.push((submitted, claimed_syncs, heartbeat, counted::take()));
    }
    let (submitted, claimed, heartbeat, completed) = syncs[1];
    // (files, directories) synced.
    assert_eq!(
        claimed,
        (0, 0),
        "a claim appends to the state and run records without syncing"
    );
    assert_eq!(heartbeat, (0, 0), "so does a heartbeat");
    assert_eq!(
        completed,
        (2, 0),
        "a commit syncs the state record's line, which carries the transcript's and the \
         history's new bytes, and the run record's line, and no directory"
    );
    assert_eq!(
        submitted,
        (1, 2),
        "a submit syncs its new record, its directory and its marker's"
    );
    assert!(head.is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn no_queue_change_syncs_while_holding_the_queue_lock() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let inner = &*store.inner;
    let worker = WorkerId::new("w1").unwrap();
    counted::take_under_queue_lock();
    // A new conversation's first submit (with a key: its entry), claim, heartbeat, commit.
    let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
    let mut run = NewRun::turn(key.clone(), json!({ "text": "one" }));
    run.idempotency_key = Some(lobu_core::IdempotencyKey::new("k1").unwrap());
    intake::submit(inner, run).unwrap();
    let claimed = claim::claim(inner, &worker, LEASE).unwrap().unwrap();
    let claimed = claim::heartbeat(inner, &claimed, LEASE).unwrap();
    let commit = Commit::append(Bytes::from_static(b"{\"text\":\"one\"}\n"), None, 0);
    claim::complete(inner, &claimed, commit).unwrap();
    // A failure that retries, a release, a cancel.
    let mut run = NewRun::turn(key.clone(), json!({ "text": "two" }));
    run.retry_delay = Duration::ZERO;
    let second = intake::submit(inner, run).unwrap().0.run;
    let claimed = claim::claim(inner, &worker, LEASE).unwrap().unwrap();
    let failure = lobu_core::Failure::new(lobu_core::TerminalStatus::Failed, "try again");
    claim::fail(inner, &claimed, &failure).unwrap();
    let claimed = claim::claim(inner, &worker, LEASE).unwrap().unwrap();
    claim::release(inner, &claimed).unwrap();
    super::cancel::cancel(inner, &key.org, &second, "stop").unwrap();
    assert_eq!(
        counted::take_under_queue_lock(),
        0,
        "the queue lock is held for markers' names only, never across a sync"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_claim_skips_a_conversation_whose_lock_is_held_and_takes_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let inner = &*store.inner;
    let worker = WorkerId::new("w1").unwrap();
    let busy = ConversationKey::parse("acme", "bot", "busy").unwrap();
    let free = ConversationKey::parse("acme", "bot", "free").unwrap();
    let first = intake::submit(inner, NewRun::turn(busy.clone(), json!({}))).unwrap();
    let second = intake::submit(inner, NewRun::turn(free.clone(), json!({}))).unwrap();
    // Someone (a commit, say, in this or another process) holds the older run's
    // conversation: the claim neither waits for it nor takes its run.
    let held = crate::state::Conversation::new(inner, &busy)
        .lock()
        .unwrap();
    let claimed = claim::claim(inner, &worker, LEASE).unwrap().unwrap();
    assert_eq!(claimed.run, second.0.run);
    assert!(claim::claim(inner, &worker, LEASE).unwrap().is_none());
    drop(held);
    let claimed = claim::claim(inner, &worker, LEASE).unwrap().unwrap();
    assert_eq!(claimed.run, first.0.run);
}

#[cfg(unix)]
#[tokio::test(flavor = "current_thread")]
async fn a_run_makes_one_inode_its_marker_names_too_and_finishing_it_frees_none() {
    use std::os::unix::fs::MetadataExt;

    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let inner = &*store.inner;
    let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
    let run = intake::submit(inner, NewRun::turn(key, json!({})))
        .unwrap()
        .0
        .run;
    let queue = super::files::Queue::new(inner);
    let record = std::fs::metadata(queue.run_path(&run)).unwrap();
    let markers = queue.markers().unwrap();
    let marker = std::fs::metadata(queue.active_dir().join(&markers[0].name)).unwrap();
    assert_eq!((marker.ino(), marker.nlink()), (record.ino(), 2));
    let claimed = claim::claim(inner, &WorkerId::new("w1").unwrap(), LEASE)
        .unwrap()
        .unwrap();
    claim::complete(inner, &claimed, Commit::output(None)).unwrap();
    assert!(queue.markers().unwrap().is_empty());
    let record = std::fs::metadata(queue.run_path(&run)).unwrap();
    assert_eq!(record.nlink(), 1, "the marker's removal freed no inode");
}
