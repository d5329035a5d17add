//! Retention leaves nothing behind that grows without bound (pruned runs take their
//! idempotency keys with them), a dry run changes no file, and bounded calls go on where
//! the last one stopped.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::{LONG, write};
use lobu_core::retention::{EventPrune, IdlePrune, RunPrune};
use lobu_core::{
    Commit, ConversationKey, ConversationLocks, IdempotencyKey, NewRun, Persist, PruneReport,
    RunId, RunQueue, SessionStore, TerminalStatus, WorkerId,
};
use lobu_store_file::FileStore;
use serde_json::json;

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

/// Every file and directory under `dir`, with the bytes and modification time of each file
/// and the modification time of each directory (which moves when an entry comes or goes).
fn entries(dir: &Path, out: &mut BTreeMap<PathBuf, (Option<Vec<u8>>, SystemTime)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::metadata(&path).unwrap();
        let modified = meta.modified().unwrap();
        if meta.is_dir() {
            out.insert(path.clone(), (None, modified));
            entries(&path, out);
        } else {
            out.insert(
                path.clone(),
                (Some(std::fs::read(&path).unwrap()), modified),
            );
        }
    }
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Option<Vec<u8>>, SystemTime)> {
    let mut out = BTreeMap::new();
    entries(root, &mut out);
    out
}

/// A conversation with one completed turn, and a forensic copy when `forensic`, left idle
/// (its lease released).
async fn idle_conversation(store: &FileStore, key: &ConversationKey, forensic: bool) {
    let lease = store.try_acquire(key, LONG).await.unwrap().expect("free");
    let bytes = Bytes::from_static(b"{\"type\":\"session\"}\n");
    store
        .persist(key, write(&RunId::generate(), &bytes, None, lease.fence))
        .await
        .unwrap();
    if forensic {
        let failed = Persist {
            status: TerminalStatus::Failed,
            ..write(&RunId::generate(), &bytes, None, lease.fence)
        };
        store.persist(key, failed).await.unwrap();
    }
    ConversationLocks::release(store, &lease).await.unwrap();
}

/// A completed run of `key`, submitted with an idempotency key, with `events` events.
async fn finished_run(store: &FileStore, key: &ConversationKey, events: usize) -> RunId {
    let run = NewRun {
        idempotency_key: Some(IdempotencyKey::new("once").unwrap()),
        ..NewRun::turn(key.clone(), json!({}))
    };
    store.submit(run).await.unwrap();
    let claim = store.claim(&WorkerId::generate(), LONG).await.unwrap();
    let claim = claim.expect("the run");
    let batch: Vec<String> = (0..events).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    store.record_events(&claim, &batch).await.unwrap();
    store.complete(&claim, Commit::default()).await.unwrap();
    claim.run
}

#[tokio::test]
async fn a_dry_run_of_each_prune_touches_no_file_and_counts_what_the_real_one_removes() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let idle = ConversationKey::parse("acme", "bot", "idle").unwrap();
    let leased = ConversationKey::parse("acme", "bot", "leased").unwrap();
    idle_conversation(&store, &idle, true).await;
    idle_conversation(&store, &leased, true).await;
    // Owned: kept whole, but its forensic copy is old.
    store
        .try_acquire(&leased, LONG)
        .await
        .unwrap()
        .expect("free");
    let run = finished_run(&store, &idle, 3).await;
    let cutoff = SystemTime::now() + Duration::from_secs(60);
    let sessions = IdlePrune {
        dry_run: true,
        ..IdlePrune::everything_before(cutoff)
    };
    let runs = RunPrune {
        dry_run: true,
        ..RunPrune::everything_before(cutoff)
    };
    let events = EventPrune {
        dry_run: true,
        ..EventPrune::everything_before(cutoff)
    };

    let before = snapshot(dir.path());
    let counted = store.prune_with(&sessions).await.unwrap();
    let counted_events = store.prune_events_with(&events).await.unwrap();
    let counted_runs = store.prune_runs_with(&runs).await.unwrap();
    assert!(before == snapshot(dir.path()), "a dry run changed files");
    let expected = PruneReport {
        conversations: 1,
        snapshots: 3,
    };
    assert_eq!(
        counted, expected,
        "one conversation of two, and a forensic copy"
    );
    assert_eq!((counted_events, counted_runs), (3, 1));

    let real = |p: IdlePrune| IdlePrune {
        dry_run: false,
        ..p
    };
    assert_eq!(store.prune_with(&real(sessions)).await.unwrap(), expected);
    let events = EventPrune {
        dry_run: false,
        ..events
    };
    assert_eq!(store.prune_events_with(&events).await.unwrap(), 3);
    let runs = RunPrune {
        dry_run: false,
        ..runs
    };
    assert_eq!(store.prune_runs_with(&runs).await.unwrap(), 1);
    assert_eq!(store.status(&idle.org, &run).await.unwrap(), None);
    assert!(before != snapshot(dir.path()));
}

#[tokio::test]
async fn a_bounded_prune_of_many_conversations_takes_its_limit_per_call() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap().with_fsync(false);
    let mut keys = Vec::new();
    for agent in ["bot", "helper"] {
        for n in 0..12 {
            let key = ConversationKey::parse("acme", agent, &format!("c{n}")).unwrap();
            idle_conversation(&store, &key, n % 3 == 0).await;
            keys.push(key);
        }
    }
    let cutoff = SystemTime::now() + Duration::from_secs(60);
    let bounded = IdlePrune {
        limit: 10,
        ..IdlePrune::everything_before(cutoff)
    };
    let dry = IdlePrune {
        dry_run: true,
        ..bounded.clone()
    };
    assert_eq!(store.prune_with(&dry).await.unwrap().conversations, 10);
    let mut with_head = keys.len();
    let mut removed = Vec::new();
    let mut snapshots = 0;
    for _ in 0..4 {
        let report = store.prune_with(&bounded).await.unwrap();
        removed.push(report.conversations);
        snapshots += report.snapshots;
        with_head -= report.conversations as usize;
        let mut left = 0;
        for key in &keys {
            left += usize::from(store.head(key).await.unwrap().is_some());
        }
        assert_eq!(left, with_head, "after {removed:?}");
    }
    assert_eq!(removed, [10, 10, 4, 0]);
    // 24 heads and the forensic copies of c0, c3, c6 and c9 of both agents.
    assert_eq!(
        snapshots,
        24 + 8,
        "each conversation counts all its snapshots"
    );
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
