//! Run events on disk: one log per run under `events/`, torn tails, stores written before
//! events existed, refused appends, pruning, and wake-ups between stores on one root.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::{LONG, tree};
use lobu_core::{
    Claim, Commit, ConversationKey, ErrorKind, Fence, NewRun, RunId, RunQueue, RunStatus, WorkerId,
};
use lobu_store_file::FileStore;
use serde_json::{Value, json};

fn key(conversation: &str) -> ConversationKey {
    ConversationKey::parse("acme", "bot", conversation).unwrap()
}

fn event(n: u64) -> String {
    format!(r#"{{"type":"output","n":{n},"text":"\"quoted\"\n é"}}"#)
}

fn log_path(root: &Path, run: &RunId) -> PathBuf {
    // Generated run ids are UUIDs: their encoding is themselves.
    root.join("events").join(run.as_str())
}

/// A store on `root` with one claimed run of `conversation`.
async fn claimed(root: &Path, conversation: &str) -> (FileStore, Claim) {
    let store = FileStore::open(root).await.unwrap();
    store
        .submit(NewRun::turn(key(conversation), json!({})))
        .await
        .unwrap();
    let claim = store.claim(&WorkerId::generate(), LONG).await.unwrap();
    (store, claim.expect("the run"))
}

async fn seqs(store: &FileStore, claim: &Claim) -> (Vec<(u64, u32, String)>, u64) {
    let page = store
        .read_events(&claim.key.org, &claim.run, 0, 100)
        .await
        .unwrap()
        .expect("the run");
    let events = page.events.into_iter().map(|e| (e.seq, e.attempt, e.data));
    (events.collect(), page.last_seq)
}

#[tokio::test]
async fn events_are_one_json_line_each_in_one_log_per_run() {
    let dir = tempfile::tempdir().unwrap();
    let (store, claim) = claimed(dir.path(), "c1").await;
    let recorded = [event(1), event(2)];
    assert_eq!(store.record_events(&claim, &recorded).await.unwrap(), 2);
    let text = std::fs::read_to_string(log_path(dir.path(), &claim.run)).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(text.ends_with('\n'));
    assert_eq!(lines.len(), 2);
    for (n, line) in (1..).zip(&lines) {
        assert_eq!(line["seq"], n);
        assert_eq!(line["attempt"], 1);
        assert_eq!(line["last"], 2, "the append's last seq");
        assert_eq!(
            line["data"].as_str(),
            Some(event(n).as_str()),
            "byte for byte"
        );
    }
}

#[tokio::test]
async fn a_torn_tail_is_ignored_by_reads_and_the_next_append_continues_the_numbering() {
    let dir = tempfile::tempdir().unwrap();
    let (a, claim) = claimed(dir.path(), "c1").await;
    a.record_events(&claim, &[event(1), event(2)])
        .await
        .unwrap();
    let path = log_path(dir.path(), &claim.run);
    let whole = std::fs::read(&path).unwrap();
    let tear = |bytes: &[u8]| {
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        log.write_all(bytes).unwrap();
    };
    // A process died mid-append: one whole line of a two-event append, then half a line.
    tear(br#"{"seq":3,"attempt":1,"last":4,"data":"{}"}"#);
    tear(b"\n{\"seq\":4,\"att");
    assert_eq!(seqs(&a, &claim).await.1, 2, "the torn append is not there");
    assert_eq!(a.record_events(&claim, &[event(3)]).await.unwrap(), 3);
    let (events, last) = seqs(&a, &claim).await;
    assert_eq!(last, 3);
    assert_eq!(events[2], (3, 1, event(3)));
    assert!(
        std::fs::read(&path).unwrap().starts_with(&whole),
        "the cut removed only the torn tail"
    );

    // Again, appended by a store that never saw the log (it reads it from the start).
    tear(b"{\"seq\":4");
    let b = FileStore::open(dir.path()).await.unwrap();
    assert_eq!(b.record_events(&claim, &[event(4)]).await.unwrap(), 4);
    let (events, last) = seqs(&a, &claim).await;
    assert_eq!((events.len(), last), (4, 4));
    assert_eq!(events[3], (4, 1, event(4)));
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 4, "no torn bytes are left: {text}");
}

#[tokio::test]
async fn a_root_written_before_events_existed_opens_and_records_events() {
    let dir = tempfile::tempdir().unwrap();
    let (store, claim) = claimed(dir.path(), "c1").await;
    drop(store);
    // The root as an earlier version left it: no events directory.
    std::fs::remove_dir_all(dir.path().join("events")).unwrap();
    let reopened = FileStore::open(dir.path()).await.unwrap();
    assert!(dir.path().join("events").is_dir(), "open creates it");
    assert_eq!(seqs(&reopened, &claim).await, (Vec::new(), 0));
    assert_eq!(reopened.record_events(&claim, &[]).await.unwrap(), 0);
    assert_eq!(
        reopened.record_events(&claim, &[event(1)]).await.unwrap(),
        1
    );
    reopened.complete(&claim, Commit::default()).await.unwrap();
    let page = reopened
        .read_events(&claim.key.org, &claim.run, 0, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.record.status, RunStatus::Completed);
    assert!(page.ends_the_run(0));
}

#[tokio::test]
async fn refused_appends_are_typed_errors_and_change_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let (store, claim) = claimed(dir.path(), "c1").await;
    store.record_events(&claim, &[event(1)]).await.unwrap();
    let before = tree(dir.path());
    let other_org = Claim {
        key: ConversationKey::parse("globex", "bot", "c1").unwrap(),
        ..claim.clone()
    };
    let other_conversation = Claim {
        key: key("c2"),
        ..claim.clone()
    };
    let forged = Claim {
        fence: Fence(claim.fence.0 + 1),
        ..claim.clone()
    };
    let nowhere = |run: &str| Claim {
        run: RunId::new(run).unwrap(),
        ..claim.clone()
    };
    let cases = [
        (other_org, vec![event(2)], ErrorKind::NotFound),
        (nowhere("../../escape"), vec![event(2)], ErrorKind::NotFound),
        (
            nowhere(RunId::generate().as_str()),
            vec![],
            ErrorKind::NotFound,
        ),
        (other_conversation, vec![event(2)], ErrorKind::Fenced),
        (forged, vec![event(2)], ErrorKind::Fenced),
        (
            claim.clone(),
            vec![event(2), "[]".to_owned()],
            ErrorKind::InvalidInput,
        ),
    ];
    for (claim, events, kind) in cases {
        let refused = store.record_events(&claim, &events).await;
        assert_eq!(refused.unwrap_err().kind(), kind, "{:?}", claim.run);
    }
    let read = store.read_events(&claim.key.org, &claim.run, 0, 0).await;
    assert_eq!(read.unwrap_err().kind(), ErrorKind::InvalidInput);
    assert!(before == tree(dir.path()), "a refused call changed files");
    assert_eq!(seqs(&store, &claim).await.1, 1);
}

#[tokio::test]
async fn a_released_claim_records_until_a_newer_claim_takes_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (store, first) = claimed(dir.path(), "c1").await;
    store.release(&first).await.unwrap();
    assert_eq!(store.record_events(&first, &[event(1)]).await.unwrap(), 1);
    let second = store.claim(&WorkerId::generate(), LONG).await.unwrap();
    let second = second.expect("the released run");
    let stale = store.record_events(&first, &[event(2)]).await;
    assert_eq!(stale.unwrap_err().kind(), ErrorKind::Fenced);
    assert_eq!(store.record_events(&second, &[event(2)]).await.unwrap(), 2);
    let (events, _) = seqs(&store, &second).await;
    let attempts: Vec<(u64, u32)> = events.iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(
        attempts,
        vec![(1, 1), (2, 1)],
        "a release does not count an attempt"
    );
}

#[tokio::test]
async fn pruning_removes_event_logs_of_finished_runs_only() {
    let dir = tempfile::tempdir().unwrap();
    let (store, done) = claimed(dir.path(), "done").await;
    store
        .record_events(&done, &[event(1), event(2)])
        .await
        .unwrap();
    store.complete(&done, Commit::default()).await.unwrap();
    let open = {
        store
            .submit(NewRun::turn(key("open"), json!({})))
            .await
            .unwrap();
        let claim = store.claim(&WorkerId::generate(), LONG).await.unwrap();
        claim.expect("the open run")
    };
    store.record_events(&open, &[event(1)]).await.unwrap();
    let later = SystemTime::now() + Duration::from_secs(1);
    assert_eq!(store.prune_events(later).await.unwrap(), 2);
    assert!(!log_path(dir.path(), &done.run).exists());
    assert!(
        log_path(dir.path(), &open.run).exists(),
        "an unfinished run's log stays"
    );
    assert_eq!(store.prune_events(later).await.unwrap(), 0, "nothing twice");
    let status = store.status(&done.key.org, &done.run).await.unwrap();
    assert_eq!(
        status.unwrap().status,
        RunStatus::Completed,
        "the record stays"
    );

    store.complete(&open, Commit::default()).await.unwrap();
    assert_eq!(store.prune_runs(later).await.unwrap(), 2);
    assert!(
        !log_path(dir.path(), &open.run).exists(),
        "prune_runs takes the log"
    );
    let events = std::fs::read_dir(dir.path().join("events")).unwrap();
    assert_eq!(events.count(), 0);
}

/// Wait on `follower` for `claim`'s run (after a first wait that starts its watcher), do
/// `change` 100 ms into the wait, and return how long after the change the wait ended.
async fn woken_after(follower: &FileStore, claim: &Claim, change: impl AsyncFnOnce()) -> Duration {
    let (org, run) = (claim.key.org.clone(), claim.run.clone());
    follower
        .wait_for_run(&org, &run, Instant::now(), Duration::from_millis(10))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let since = Instant::now();
    let waiter = tokio::spawn({
        let follower = follower.clone();
        async move {
            follower
                .wait_for_run(&org, &run, since, Duration::from_secs(60))
                .await;
            Instant::now()
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "the wait ended before any change");
    let changed = Instant::now();
    change().await;
    let woke = waiter.await.unwrap();
    woke.saturating_duration_since(changed)
}

#[tokio::test]
async fn events_recorded_through_one_store_wake_a_follower_on_another_store_of_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let (a, claim) = claimed(dir.path(), "c1").await;
    let b = FileStore::open(dir.path()).await.unwrap();
    let late = woken_after(&b, &claim, async || {
        a.record_events(&claim, &[event(1)]).await.unwrap();
    })
    .await;
    assert!(late < Duration::from_millis(500), "woken {late:?} after");
    assert_eq!(seqs(&b, &claim).await.1, 1);
}

#[tokio::test]
async fn a_run_completed_through_one_store_wakes_a_follower_on_another_store_of_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let (a, claim) = claimed(dir.path(), "c1").await;
    let b = FileStore::open(dir.path()).await.unwrap();
    let late = woken_after(&b, &claim, async || {
        a.complete(&claim, Commit::default()).await.unwrap();
    })
    .await;
    assert!(late < Duration::from_millis(500), "woken {late:?} after");
}

#[tokio::test]
async fn a_change_before_another_stores_first_wait_ends_that_wait_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (a, claim) = claimed(dir.path(), "c1").await;
    let b = FileStore::open(dir.path()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let since = Instant::now();
    a.record_events(&claim, &[event(1)]).await.unwrap();
    let started = Instant::now();
    b.wait_for_run(&claim.key.org, &claim.run, since, Duration::from_secs(60))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the change was missed"
    );
}
