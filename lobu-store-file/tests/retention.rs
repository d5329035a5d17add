//! Retention leaves nothing behind that grows without bound: pruned runs take their
//! idempotency keys with them.

use std::path::Path;
use std::time::{Duration, SystemTime};

use lobu_core::{Commit, ConversationKey, IdempotencyKey, NewRun, RunQueue, WorkerId};
use lobu_store_file::FileStore;
use serde_json::json;

const LONG: Duration = Duration::from_secs(600);

fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap().path())
        .map(|p| if p.is_dir() { files_under(&p) } else { 1 })
        .sum()
}

#[tokio::test]
async fn pruning_a_run_removes_its_idempotency_key_and_a_retry_then_creates_a_new_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
    let keyed = |idem: &str| NewRun {
        idempotency_key: Some(IdempotencyKey::new(idem).unwrap()),
        ..NewRun::turn(key.clone(), json!({}))
    };
    let first = store.submit(keyed("k")).await.unwrap();
    let worker = WorkerId::generate();
    let claim = store.claim(&worker, LONG).await.unwrap().expect("the run");
    store.complete(&claim, Commit::output(None)).await.unwrap();
    // A run still queued keeps its key through the prune.
    let waiting = store.submit(keyed("waiting")).await.unwrap();
    let index = dir.path().join("queue/idempotency");
    assert_eq!(files_under(&index), 2);

    let cutoff = SystemTime::now() + Duration::from_secs(1);
    assert_eq!(store.prune_runs(cutoff).await.unwrap(), 1);
    assert_eq!(files_under(&index), 1, "only the waiting run's key is left");
    let again = store.submit(keyed("waiting")).await.unwrap();
    assert_eq!((again.run, again.created), (waiting.run, false));

    let retried = store.submit(keyed("k")).await.unwrap();
    assert!(retried.created, "a retry after run retention is a new run");
    assert_ne!(retried.run, first.run);
}

#[tokio::test]
async fn a_store_that_never_queued_a_run_prunes_nothing_without_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let later = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(store.prune_runs(later).await.unwrap(), 0);
    assert_eq!(store.prune_events(later).await.unwrap(), 0);
    let report = lobu_core::SessionStore::prune(&store, later).await.unwrap();
    assert_eq!(report, lobu_core::PruneReport::default());
}
