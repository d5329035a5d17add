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
