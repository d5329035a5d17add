//! Bounded event retention on disk: a log longer than what is left of the limit loses only
//! its first events (rewritten whole, so readers of this and other stores on the root read
//! the rest with their seqs), and a crashed trim's staging file never outlives its log.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use lobu_core::retention::EventPrune;
use lobu_core::{Claim, Commit, ConversationKey, NewRun, RunId, RunQueue, WorkerId};
use lobu_store_file::FileStore;
use serde_json::json;

const LONG: Duration = Duration::from_secs(600);

fn log_path(root: &Path, run: &RunId) -> PathBuf {
    // Generated run ids are UUIDs: their encoding is themselves.
    root.join("events").join(run.as_str())
}

/// Where a trim of `run`'s log stages the new log.
fn staging_path(root: &Path, run: &RunId) -> PathBuf {
    root.join("events").join(format!(".{run}.trim.tmp"))
}

fn events(from: u64, count: u64, padding: usize) -> Vec<String> {
    let pad = "x".repeat(padding);
    (from..from + count)
        .map(|n| format!(r#"{{"n":{n},"pad":"{pad}"}}"#))
        .collect()
}

async fn claimed(store: &FileStore) -> Claim {
    let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
    store.submit(NewRun::turn(key, json!({}))).await.unwrap();
    let claim = store.claim(&WorkerId::generate(), LONG).await.unwrap();
    claim.expect("the run")
}

/// The seqs `store` reads after `after`, and the page's `last_seq`.
async fn read(store: &FileStore, claim: &Claim, after: u64) -> (Vec<u64>, u64) {
    let page = store
        .read_events(&claim.key.org, &claim.run, after, 100)
        .await
        .unwrap()
        .expect("the run");
    let seqs = page.events.iter().map(|e| e.seq).collect();
    (seqs, page.last_seq)
}

fn bounded(limit: usize, dry_run: bool) -> EventPrune {
    let later = SystemTime::now() + Duration::from_secs(60);
    EventPrune {
        limit,
        dry_run,
        ..EventPrune::everything_before(later)
    }
}

#[tokio::test]
async fn a_log_longer_than_the_limit_loses_its_first_events_and_keeps_their_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let claim = claimed(&store).await;
    store.record_events(&claim, &events(1, 2, 0)).await.unwrap();
    // Another store on the root reads the first append while the run goes on, and so
    // remembers where that append ended.
    let other = FileStore::open(dir.path()).await.unwrap();
    assert_eq!(read(&other, &claim, 0).await, (vec![1, 2], 2));
    // Longer events: the trimmed log is longer than the prefix the other store remembers.
    let append = events(3, 3, 200);
    store.record_events(&claim, &append).await.unwrap();
    store.complete(&claim, Commit::default()).await.unwrap();

    assert_eq!(store.prune_events_with(&bounded(3, true)).await.unwrap(), 3);
    assert_eq!(read(&store, &claim, 0).await, (vec![1, 2, 3, 4, 5], 5));
    assert_eq!(
        store.prune_events_with(&bounded(3, false)).await.unwrap(),
        3
    );
    // Cut inside the second append: its last two lines are the log now.
    let log = std::fs::read_to_string(log_path(dir.path(), &claim.run)).unwrap();
    assert_eq!(log.lines().count(), 2);
    assert!(log.starts_with("{\"seq\":4,"), "{log}");
    assert_eq!(read(&store, &claim, 0).await, (vec![4, 5], 5));
    assert_eq!(read(&store, &claim, 4).await, (vec![5], 5));
    assert_eq!(
        read(&other, &claim, 2).await,
        (vec![4, 5], 5),
        "a prefix remembered of the old log is not taken for one of the trimmed log"
    );
    let page = store
        .read_events(&claim.key.org, &claim.run, 0, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        page.events[0].data, append[1],
        "events come back byte for byte"
    );
    assert!(page.ends_the_run(0));

    assert_eq!(store.prune_events_with(&bounded(3, true)).await.unwrap(), 2);
    assert_eq!(
        store.prune_events_with(&bounded(3, false)).await.unwrap(),
        2
    );
    assert!(!log_path(dir.path(), &claim.run).exists());
    assert_eq!(read(&other, &claim, 2).await, (vec![], 0));
    assert_eq!(
        store.prune_events_with(&bounded(3, false)).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn a_crashed_trims_staging_file_is_replaced_by_the_next_trim_and_removed_with_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let claim = claimed(&store).await;
    store.record_events(&claim, &events(1, 4, 0)).await.unwrap();
    store.complete(&claim, Commit::default()).await.unwrap();
    let staging = staging_path(dir.path(), &claim.run);
    // What a trim that died before its rename leaves: a copy that nothing reads.
    std::fs::write(&staging, b"{\"seq\":2,\"attempt\":1,\"last\":2,\"da").unwrap();
    assert_eq!(read(&store, &claim, 0).await.0, vec![1, 2, 3, 4]);

    assert_eq!(
        store.prune_events_with(&bounded(1, false)).await.unwrap(),
        1
    );
    assert!(!staging.exists(), "renamed into place");
    assert_eq!(read(&store, &claim, 0).await, (vec![2, 3, 4], 4));

    std::fs::write(&staging, b"left by a crash").unwrap();
    let later = SystemTime::now() + Duration::from_secs(60);
    assert_eq!(store.prune_runs(later).await.unwrap(), 1);
    let left: Vec<_> = std::fs::read_dir(dir.path().join("events"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
