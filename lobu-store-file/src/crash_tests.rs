//! Crashes at every step of every multi-step write, and files torn or left behind by
//! crashes: the last committed head stays readable, nothing torn is ever returned, and the
//! next write succeeds and leaves exactly its transcript on disk.
//!
//! A simulated crash stops a write at a [`Step`] and leaves the files exactly as they are;
//! a fresh [`FileStore`] on the same root then plays the restarted process.

use std::fs;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use lobu_core::{
    ConversationKey, ConversationLocks, EraseScope, ErrorKind, IdempotencyKey, Lease, NewRun,
    Persist, RunId, RunQueue, SessionStore, TerminalStatus, Version,
};

use crate::store::{FileStore, Step};

const BASE: &str = concat!(
    "{\"type\":\"session\",\"version\":3,\"id\":\"s1\"}\n",
    "{\"type\":\"message\",\"message\":{\"role\":\"user\",\"content\":\"hi ✓\"}}\n",
);
const TURN: &str =
    "{\"type\":\"message\",\"message\":{\"role\":\"assistant\",\"content\":\"hello 👋\"}}\n";
const COMPACTED: &str = concat!(
    "{\"type\":\"session\",\"version\":3,\"id\":\"s1\"}\n",
    "{\"type\":\"compaction\",\"summary\":\"they said hi\"}\n",
);

struct Fixture {
    dir: tempfile::TempDir,
    key: ConversationKey,
    lease: Lease,
    base: Version,
}

impl Fixture {
    /// A store with one conversation whose head is `BASE`.
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).await.unwrap();
        let key = ConversationKey::parse("acme:eu", "bot", "telegram:42").unwrap();
        let lease = store
            .try_acquire(&key, Duration::from_secs(600))
            .await
            .unwrap()
            .unwrap();
        let base = store
            .persist(&key, completed(&RunId::generate(), BASE, None, &lease))
            .await
            .unwrap();
        Fixture {
            dir,
            key,
            lease,
            base,
        }
    }

    /// The store after a restart.
    async fn reopen(&self) -> FileStore {
        FileStore::open(self.dir.path()).await.unwrap()
    }

    fn file(&self, name: &str) -> std::path::PathBuf {
        crate::layout::Layout::new(self.dir.path().to_owned())
            .conversation_dir(&self.key)
            .join(name)
    }

    /// The transcript file the stored head names.
    async fn transcript(&self) -> std::path::PathBuf {
        let store = self.reopen().await;
        store.transcript_path(&self.key).unwrap().expect("a head")
    }

    async fn assert_head(&self, version: Version, transcript: &str) {
        let store = self.reopen().await;
        let head = store.hydrate(&self.key).await.unwrap().unwrap();
        assert_eq!(head.version, version);
        assert_eq!(
            std::str::from_utf8(&head.transcript).unwrap(),
            transcript,
            "hydrated transcript"
        );
        assert_eq!(store.head(&self.key).await.unwrap(), Some(version));
    }

    /// After the next write: the head's transcript file is exactly the head and nothing
    /// else is left.
    async fn assert_clean(&self, transcript: &str) {
        let path = self.transcript().await;
        assert_eq!(fs::read_to_string(&path).unwrap(), transcript);
        let file = path.file_name().unwrap().to_str().unwrap();
        let names = names(&self.file(""));
        let expected = ["history.jsonl", "lock", file, "state.json"];
        let unexpected: Vec<_> = names
            .iter()
            .filter(|n| !expected.contains(&n.as_str()))
            .collect();
        assert!(unexpected.is_empty(), "left behind: {unexpected:?}");
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn completed(run: &RunId, text: &str, expected: Option<Version>, lease: &Lease) -> Persist {
    Persist {
        run: run.clone(),
        status: TerminalStatus::Completed,
        transcript: Bytes::from(text.to_owned()),
        expected,
        fence: lease.fence,
        base_len: None,
    }
}

fn is_simulated(result: lobu_core::Result<Version>) -> bool {
    matches!(result, Err(e) if e.message().starts_with("simulated crash"))
}

/// Crash a completed write of `next` at `step`, restart, check the head, retry the same
/// write, then write one more turn on top.
async fn crash_then_recover(next: &str, step: Step) {
    let fx = Fixture::new().await;
    let crashing = fx.reopen().await.crashing_at(step);
    let run = RunId::generate();
    let write = completed(&run, next, Some(fx.base), &fx.lease);
    assert!(
        is_simulated(crashing.persist(&fx.key, write.clone()).await),
        "{step:?}"
    );

    let committed = step == Step::Committed;
    if committed {
        fx.assert_head(Version(fx.base.0 + 1), next).await;
    } else {
        fx.assert_head(fx.base, BASE).await;
    }
    // The runtime retries the run: a retry of a committed write, a new write otherwise.
    let store = fx.reopen().await;
    let version = store.persist(&fx.key, write).await.unwrap();
    assert!(version > fx.base, "{step:?}: {version}");
    fx.assert_head(version, next).await;
    fx.assert_clean(next).await;

    let last = format!("{next}{TURN}");
    let write = completed(&RunId::generate(), &last, Some(version), &fx.lease);
    let newest = store.persist(&fx.key, write).await.unwrap();
    fx.assert_head(newest, &last).await;
    fx.assert_clean(&last).await;
    // base, the crashed-or-retried turn, the last one: three completed snapshots.
    assert_eq!(
        store.clear(&fx.key, fx.lease.fence).await.unwrap(),
        3,
        "{step:?}"
    );
}

#[tokio::test]
async fn a_crash_at_any_step_of_an_append_keeps_the_last_head() {
    let next = format!("{BASE}{TURN}");
    for step in [
        Step::TranscriptWritten,
        Step::HistoryWritten,
        Step::Committed,
    ] {
        crash_then_recover(&next, step).await;
    }
}

#[tokio::test]
async fn a_crash_at_any_step_of_a_rewrite_keeps_the_last_head() {
    for step in [
        Step::TranscriptWritten,
        Step::HistoryWritten,
        Step::Committed,
    ] {
        crash_then_recover(COMPACTED, step).await;
    }
}

#[tokio::test]
async fn a_rewrite_committed_but_whose_old_file_was_not_removed_reads_the_new_one() {
    let fx = Fixture::new().await;
    let old = fx.transcript().await;
    let crashing = fx.reopen().await.crashing_at(Step::Committed);
    let write = completed(&RunId::generate(), COMPACTED, Some(fx.base), &fx.lease);
    assert!(is_simulated(crashing.persist(&fx.key, write).await));
    // The old file still holds the old transcript; the committed one is in a file of its own.
    assert_eq!(fs::read_to_string(&old).unwrap(), BASE);
    assert_ne!(fx.transcript().await, old);
    let head = Version(fx.base.0 + 1);
    fx.assert_head(head, COMPACTED).await;
    // The next writer removes the old file.
    let next = format!("{COMPACTED}{TURN}");
    let store = fx.reopen().await;
    let write = completed(&RunId::generate(), &next, Some(head), &fx.lease);
    let version = store.persist(&fx.key, write).await.unwrap();
    fx.assert_head(version, &next).await;
    fx.assert_clean(&next).await;
}

#[tokio::test]
async fn a_half_appended_tail_is_never_read_and_is_cut_by_the_next_write() {
    let fx = Fixture::new().await;
    for path in [fx.transcript().await, fx.file("history.jsonl")] {
        let mut file = fs::OpenOptions::new().append(true).open(path).unwrap();
        std::io::Write::write_all(&mut file, b"{\"type\":\"message\",\"mess").unwrap();
    }
    fx.assert_head(fx.base, BASE).await;
    let next = format!("{BASE}{TURN}");
    let store = fx.reopen().await;
    let write = completed(&RunId::generate(), &next, Some(fx.base), &fx.lease);
    let version = store.persist(&fx.key, write).await.unwrap();
    fx.assert_head(version, &next).await;
    fx.assert_clean(&next).await;
    let history = fs::read_to_string(fx.file("history.jsonl")).unwrap();
    for line in history.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("every history line is whole");
    }
    assert_eq!(history.lines().count(), 2);
}

#[tokio::test]
async fn torn_staging_files_are_ignored_and_removed() {
    let fx = Fixture::new().await;
    let state = fs::read(fx.file("state.json")).unwrap();
    // A state record cut off mid-write, and a rewrite staged halfway, never committed.
    fs::write(fx.file(".state.json.0123.tmp"), &state[..state.len() / 2]).unwrap();
    fs::write(fx.file("session.v99.jsonl"), &COMPACTED[..20]).unwrap();
    fs::write(fx.file(".session.v98.jsonl.4567.tmp"), &COMPACTED[..7]).unwrap();
    fx.assert_head(fx.base, BASE).await;
    let store = fx.reopen().await;
    let write = completed(&RunId::generate(), COMPACTED, Some(fx.base), &fx.lease);
    let version = store.persist(&fx.key, write).await.unwrap();
    fx.assert_head(version, COMPACTED).await;
    fx.assert_clean(COMPACTED).await;
}

#[tokio::test]
async fn a_crash_after_reserving_a_forensic_version_never_reuses_it() {
    let fx = Fixture::new().await;
    let crashing = fx.reopen().await.crashing_at(Step::VersionReserved);
    let failed = Persist {
        status: TerminalStatus::Failed,
        ..completed(&RunId::generate(), COMPACTED, None, &fx.lease)
    };
    assert!(is_simulated(
        crashing.persist(&fx.key, failed.clone()).await
    ));
    let store = fx.reopen().await;
    let version = store.persist(&fx.key, failed).await.unwrap();
    assert_eq!(
        version,
        Version(fx.base.0 + 2),
        "the reserved version is skipped"
    );
    fx.assert_head(fx.base, BASE).await;
    assert_eq!(
        store.clear(&fx.key, fx.lease.fence).await.unwrap(),
        2,
        "the head and one failed snapshot"
    );
}

#[tokio::test]
async fn a_clear_that_crashed_before_removing_files_still_forgets_everything() {
    let fx = Fixture::new().await;
    let store = fx.reopen().await;
    let failed = Persist {
        status: TerminalStatus::Timeout,
        ..completed(&RunId::generate(), COMPACTED, None, &fx.lease)
    };
    store.persist(&fx.key, failed).await.unwrap();
    let crashing = fx.reopen().await.crashing_at(Step::Cleared);
    let crashed = crashing.clear(&fx.key, fx.lease.fence).await;
    assert!(matches!(crashed, Err(e) if e.message().starts_with("simulated crash")));
    let files = names(&fx.file(""));
    assert!(
        files.iter().any(|n| n.starts_with("session.")),
        "the files are still there: {files:?}"
    );
    assert_eq!(store.hydrate(&fx.key).await.unwrap(), None);
    assert_eq!(
        store.clear(&fx.key, fx.lease.fence).await.unwrap(),
        0,
        "nothing left to count"
    );
    let write = completed(&RunId::generate(), COMPACTED, None, &fx.lease);
    let version = store.persist(&fx.key, write).await.unwrap();
    assert!(version > Version(fx.base.0 + 1), "versions are not reused");
    fx.assert_head(version, COMPACTED).await;
    fx.assert_clean(COMPACTED).await;
    assert_eq!(store.clear(&fx.key, fx.lease.fence).await.unwrap(), 1);
}

#[tokio::test]
async fn a_transcript_that_lost_committed_bytes_is_corrupt_not_torn() {
    let fx = Fixture::new().await;
    let path = fx.transcript().await;
    fs::write(&path, &BASE.as_bytes()[..BASE.len() - 5]).unwrap();
    let store = fx.reopen().await;
    let err = store.hydrate(&fx.key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    let next = format!("{BASE}{TURN}");
    let write = completed(&RunId::generate(), &next, Some(fx.base), &fx.lease);
    let err = store.persist(&fx.key, write).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Corrupt,
        "no zeros appended into the gap"
    );
    assert_eq!(fs::read(&path).unwrap(), &BASE.as_bytes()[..BASE.len() - 5]);
    fs::write(fx.file("state.json"), b"{\"format\":1,").unwrap();
    let err = store.head(&fx.key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
}

#[tokio::test]
async fn an_erasure_stopped_at_any_step_leaves_a_working_store_and_finishes_when_run_again() {
    for step in [Step::ErasureIndexed, Step::ErasureRunsGone, Step::Cleared] {
        let fx = Fixture::new().await;
        let mut run = NewRun::turn(fx.key.clone(), serde_json::json!({}));
        run.idempotency_key = Some(IdempotencyKey::new("k").unwrap());
        let store = fx.reopen().await;
        let waiting = store.submit(run).await.unwrap().run;
        let scope = EraseScope::Org(fx.key.org.clone());
        let crashing = fx.reopen().await.crashing_at(step);
        assert!(crashing.erase(&scope).await.is_err(), "{step:?}");

        let store = fx.reopen().await;
        // Whatever is left reads as it was or as cleared, never as damaged.
        store.hydrate(&fx.key).await.unwrap();
        store.erase(&scope).await.unwrap();
        assert!(store.hydrate(&fx.key).await.unwrap().is_none(), "{step:?}");
        let org = &fx.key.org;
        assert!(store.status(org, &waiting).await.unwrap().is_none());
        let mut pending = vec![fx.dir.path().to_owned()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let mut text = path.display().to_string();
                if path.is_dir() {
                    pending.push(path.clone());
                } else {
                    text.push_str(&String::from_utf8_lossy(&fs::read(&path).unwrap()));
                }
                assert!(!text.contains("telegram"), "{step:?}: {text}");
                assert!(!text.contains(waiting.as_str()), "{step:?}: {text}");
            }
        }
    }
}
