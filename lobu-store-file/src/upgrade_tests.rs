//! A root written by the previous version (contract v1: per-run claim tokens, claims that
//! never touched `state.json`) opens without a migration step: its transcripts hydrate and
//! export, its queued runs are claimed with conversation fences, and they complete; its
//! records, written before steering, read as runs submitted without it.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use lobu_core::control::CancelOutcome;
use lobu_core::export::{Exported, Imported};
use lobu_core::multitask::steered_output;
use lobu_core::{
    Commit, ConversationKey, ConversationLocks, Fence, MultitaskStrategy, NewRun, RunId, RunQueue,
    RunStatus, SessionStore, Version, WorkerId,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;

use crate::clock;
use crate::queue::markers::{Marker, lane_of};
use crate::store::FileStore;

const LONG: Duration = Duration::from_secs(600);
const TRANSCRIPT: &str = "{\"type\":\"session\",\"id\":\"s1\"}\n";
const WRITTEN: &str = "2026-01-01T00:00:00Z";
const CLAIM_EXPIRED: &str = "2026-01-01T00:10:00Z";
const OLD_RUN: &str = "0190f0a0-0000-7000-8000-000000000001";
const RUNNING: &str = "0190f0a0-0000-7000-8000-000000000002";
const PENDING: &str = "0190f0a0-0000-7000-8000-000000000003";

fn key(id: &str) -> ConversationKey {
    ConversationKey::parse("acme", "bot", id).unwrap()
}

fn put(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn millis(text: &str) -> u64 {
    let t = time::OffsetDateTime::parse(text, &Rfc3339);
    clock::millis(t.unwrap().into())
}

/// A run record exactly as the previous version wrote it (`last_token`, `holder.token`).
fn old_run(seq: u64, run: &str, conversation: &str, running: bool) -> serde_json::Value {
    let key = key(conversation);
    let lane = lane_of(&key);
    let id = RunId::new(run).unwrap();
    let (due, holder, status, attempts) = if running {
        let holder = json!({"worker": "worker-old", "token": 1, "expires_at": CLAIM_EXPIRED});
        (millis(CLAIM_EXPIRED), holder, "running", 1)
    } else {
        (millis(WRITTEN), serde_json::Value::Null, "pending", 0)
    };
    let marker = Marker::new(seq, &lane, due, !running, &id);
    json!({
        "format": 1,
        "seq": seq,
        "lane": lane,
        "marker": marker.name,
        "retry_delay_ns": 2_000_000_000u64,
        "not_before": WRITTEN,
        "last_token": attempts,
        "holder": holder,
        "idempotency_key": null,
        "record": {
            "run": run,
            "key": {"org": "acme", "agent": "bot", "conversation": conversation},
            "kind": "turn",
            "status": status,
            "attempts": attempts,
            "max_attempts": 3,
            "error": null,
            "output": null,
            "payload": {"text": "hi"},
            "created_at": WRITTEN,
            "updated_at": WRITTEN,
        },
    })
}

/// The previous version's files: `c1` with a head (and a lapsed lease of fence 3) and a
/// running run whose claim expired; `c2` with nothing but a pending run.
fn write_previous_version(root: &Path) {
    put(
        &root.join("lobu-store.json"),
        br#"{"format":1,"store":"lobu-store-file"}"#,
    );
    let dir = root.join("orgs/acme/bot/c1");
    let sha256: String = Sha256::digest(TRANSCRIPT.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let history = format!(
        "{{\"version\":1,\"run\":\"{OLD_RUN}\",\"status\":\"completed\",\"bytes\":{},\
         \"sha256\":\"{sha256}\",\"written_at\":\"{WRITTEN}\"}}\n",
        TRANSCRIPT.len()
    );
    let state = json!({
        "format": 1,
        "key": {"org": "acme", "agent": "bot", "conversation": "c1"},
        "last_version": 1,
        "last_fence": 3,
        "lease": {"fence": 3, "expires_at": WRITTEN},
        "cleared_through": 0,
        "head": {
            "version": 1,
            "run": OLD_RUN,
            "bytes": TRANSCRIPT.len(),
            "sha256": sha256,
            "turns": 1,
            "title": null,
            "written_at": WRITTEN,
            "history_bytes": history.len(),
            "staged": false,
        },
    });
    put(&dir.join("session.jsonl"), TRANSCRIPT.as_bytes());
    put(&dir.join("history.jsonl"), history.as_bytes());
    put(&dir.join("state.json"), state.to_string().as_bytes());
    put(&dir.join("lock"), b"");
    let queue = root.join("queue");
    put(&queue.join("lock"), b"");
    for (seq, run, conversation, running) in [(1, RUNNING, "c1", true), (2, PENDING, "c2", false)] {
        let record = old_run(seq, run, conversation, running);
        let marker = record["marker"].as_str().unwrap();
        put(&queue.join("active").join(marker), b"");
        put(&queue.join("runs").join(run), record.to_string().as_bytes());
    }
}

#[tokio::test]
async fn a_directory_written_by_the_previous_version_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    write_previous_version(dir.path());
    let store = FileStore::open(dir.path()).await.unwrap();
    let (c1, c2) = (key("c1"), key("c2"));
    let head = store.hydrate(&c1).await.unwrap().expect("the old head");
    assert_eq!(
        (head.version, &head.transcript[..]),
        (Version(1), TRANSCRIPT.as_bytes())
    );
    let running = RunId::new(RUNNING).unwrap();
    let record = store.status(&c1.org, &running).await.unwrap().unwrap();
    assert_eq!((record.status, record.attempts), (RunStatus::Running, 1));
    assert_eq!(store.depth().await.unwrap(), 1);

    let worker = WorkerId::generate();
    let claim = store.claim(&worker, LONG);
    let claim = claim.await.unwrap().expect("the expired claim's run");
    assert_eq!((claim.run.as_str(), claim.attempt), (RUNNING, 2));
    assert_eq!(claim.fence, Fence(4), "after the old leases' fences");
    assert_eq!(claim.head, Some(Version(1)));
    // An append over a head written before hash states: read once, then it keeps one.
    let new = "{\"type\":\"message\"}\n";
    let next = format!("{TRANSCRIPT}{new}");
    let commit = Commit::append(
        Bytes::from_static(new.as_bytes()),
        claim.head,
        TRANSCRIPT.len(),
    );
    assert_eq!(
        store.complete(&claim, commit).await.unwrap(),
        Some(Version(2))
    );
    let head = store.hydrate(&c1).await.unwrap().expect("the new head");
    assert_eq!(&head.transcript[..], next.as_bytes());
    assert_eq!(
        files_named(dir.path(), "state.json")
            .iter()
            .filter(|text| text.contains("\"sha256_state\""))
            .count(),
        1,
        "the appended head carries its hash state"
    );

    let claim = store.claim(&worker, LONG);
    let claim = claim.await.unwrap().expect("the pending run");
    assert_eq!((claim.run.as_str(), claim.attempt), (PENDING, 1));
    assert_eq!((claim.fence, claim.head), (Fence(1), None));
    let output = Commit::output(Some(json!({"ok": true})));
    assert_eq!(store.complete(&claim, output).await.unwrap(), None);
    assert!(store.claim(&worker, LONG).await.unwrap().is_none());

    for (conversation, run) in [(&c1, RUNNING), (&c2, PENDING)] {
        let run = RunId::new(run).unwrap();
        let record = store
            .status(&conversation.org, &run)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.status, RunStatus::Completed, "{run}");
    }
    let head = store.hydrate(&c1).await.unwrap().unwrap();
    assert_eq!(
        (head.version, &head.transcript[..]),
        (Version(2), next.as_bytes())
    );
    let lease = store.try_acquire(&c1, LONG).await;
    assert_eq!(lease.unwrap().expect("free").fence, Fence(5));

    // The root says format 2 now, and every record changed since is a record file.
    let marker = std::fs::read(dir.path().join("lobu-store.json")).unwrap();
    let marker: serde_json::Value = serde_json::from_slice(&marker).unwrap();
    assert_eq!(marker["format"], 2);
    let queue = dir.path().join("queue/runs");
    let state = dir.path().join("orgs/acme/bot/c1/state.json");
    for path in [state, queue.join(RUNNING), queue.join(PENDING)] {
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes.starts_with(crate::record_file::HEADER),
            "{}",
            path.display()
        );
    }
}

#[tokio::test]
async fn a_run_record_written_before_cancellation_reads_and_cancels() {
    let dir = tempfile::tempdir().unwrap();
    write_previous_version(dir.path());
    let store = FileStore::open(dir.path()).await.unwrap();
    let (c1, c2) = (key("c1"), key("c2"));
    let pending = RunId::new(PENDING).unwrap();
    let record = store.status(&c2.org, &pending).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Pending);
    let outcome = store.cancel(&c2.org, &pending, "no longer needed").await;
    assert_eq!(outcome.unwrap(), Some(CancelOutcome::Cancelled));
    let record = store.status(&c2.org, &pending).await.unwrap().unwrap();
    assert_eq!(
        (record.status, record.error.as_deref()),
        (RunStatus::Cancelled, Some("no longer needed"))
    );
    // The old running run's claim expired long ago: cancelled at once too.
    let running = RunId::new(RUNNING).unwrap();
    let outcome = store.cancel(&c1.org, &running, "abandoned").await;
    assert_eq!(outcome.unwrap(), Some(CancelOutcome::Cancelled));
    assert!(
        store
            .claim(&WorkerId::generate(), LONG)
            .await
            .unwrap()
            .is_none()
    );
    let records = files_named(&dir.path().join("queue/runs"), PENDING);
    assert_eq!(records.len(), 1);
    assert!(
        !records[0].contains("cancel_requested"),
        "no request, no field: {}",
        records[0]
    );
}

#[tokio::test]
async fn a_run_record_written_before_steering_reads_and_takes_steered_messages() {
    let dir = tempfile::tempdir().unwrap();
    write_previous_version(dir.path());
    let store = FileStore::open(dir.path()).await.unwrap();
    let c2 = key("c2");
    let steer = NewRun::turn(c2.clone(), json!({"text": "also"}));
    let steer = store
        .submit(steer.multitask(MultitaskStrategy::Steer))
        .await;
    let steer = steer.unwrap().run;
    // A rejected submit reads the old record as the conversation's unfinished run.
    let rejected = NewRun::turn(c2.clone(), json!({})).multitask(MultitaskStrategy::Reject);
    let err = store.submit(rejected).await.unwrap_err();
    assert!(err.message().contains(PENDING), "{err}");
    let worker = WorkerId::generate();
    let first = store.claim(&worker, LONG).await.unwrap().expect("c1's run");
    assert_eq!(first.run.as_str(), RUNNING);
    assert_eq!(store.steerable(&first).await.unwrap(), []);
    store.complete(&first, Commit::default()).await.unwrap();
    let old = store.claim(&worker, LONG).await.unwrap().expect("c2's run");
    assert_eq!(old.run.as_str(), PENDING);
    let offered = store.steerable(&old).await.unwrap();
    assert_eq!(offered.len(), 1);
    assert_eq!(
        (&offered[0].run, &offered[0].payload),
        (&steer, &json!({"text": "also"}))
    );
    let mut commit = Commit::transcript(Bytes::from_static(TRANSCRIPT.as_bytes()), None);
    commit.steered = vec![steer.clone()];
    assert_eq!(
        store.complete(&old, commit).await.unwrap(),
        Some(Version(1))
    );
    let taken = store.status(&c2.org, &steer).await.unwrap().unwrap();
    assert_eq!(taken.status, RunStatus::Completed);
    assert_eq!(taken.output, Some(steered_output(&old.run)));
    assert!(store.claim(&worker, LONG).await.unwrap().is_none());
}

#[tokio::test]
async fn a_head_written_by_the_previous_version_exports_exactly_and_imports_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    write_previous_version(dir.path());
    let store = FileStore::open(dir.path()).await.unwrap();
    let c1 = key("c1");
    let written = time::OffsetDateTime::parse(WRITTEN, &Rfc3339).unwrap();
    let expected = Exported::new(
        c1.clone(),
        Version(1),
        RunId::new(OLD_RUN).unwrap(),
        written.into(),
        TRANSCRIPT.as_bytes(),
    );
    assert_eq!(store.export(&c1).await.unwrap(), Some(expected.clone()));
    assert_eq!(store.export(&key("c2")).await.unwrap(), None, "no head");
    let page = store.scan(None, 10).await.unwrap();
    assert_eq!((page.items, page.next_cursor), (vec![c1.clone()], None));
    // Compared by the SHA-256 its commit record keeps (written without a hash state).
    assert_eq!(
        store.import(&expected).await.unwrap(),
        Imported::Unchanged(Version(1))
    );
    let other = tempfile::tempdir().unwrap();
    let copy = FileStore::open(other.path()).await.unwrap();
    assert_eq!(
        copy.import(&expected).await.unwrap(),
        Imported::Written(Version(1))
    );
    let back = copy.export(&c1).await.unwrap().unwrap();
    assert_eq!(back.to_document(), expected.to_document());
}

/// The contents of every file called `name` under `dir`.
fn files_named(dir: &Path, name: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_named(&path, name));
        } else if path.file_name().is_some_and(|n| n == name) {
            found.push(std::fs::read_to_string(&path).unwrap());
        }
    }
    found
}

/// Hydrate `key` while this test holds the conversation's exclusive lock: only a reader
/// that takes no lock returns.
async fn hydrate_while_locked(store: &FileStore, key: &ConversationKey) -> Vec<u8> {
    let lock = store.conversation_dir(key).join("lock");
    let _held = crate::atomic::FileLock::exclusive(&lock).unwrap();
    let read = tokio::time::timeout(Duration::from_secs(30), store.hydrate(key));
    let head = read.await.expect("a hydrate that takes no lock").unwrap();
    head.expect("a head").transcript.to_vec()
}

#[tokio::test]
async fn a_head_of_format_1_gets_a_file_of_its_own_at_its_next_write_then_reads_without_a_lock() {
    let dir = tempfile::tempdir().unwrap();
    write_previous_version(dir.path());
    let conversation = dir.path().join("orgs/acme/bot/c1");
    // A rewrite of format 1 committed but not yet renamed over session.jsonl.
    let state = conversation.join("state.json");
    let text = std::fs::read_to_string(&state).unwrap();
    put(
        &state,
        text.replace("\"staged\":false", "\"staged\":true")
            .as_bytes(),
    );
    put(&conversation.join("session.jsonl"), b"{\"older\":true}\n");
    put(
        &conversation.join("session.v1.jsonl"),
        TRANSCRIPT.as_bytes(),
    );
    let store = FileStore::open(dir.path()).await.unwrap();
    let c1 = key("c1");
    let head = store.hydrate(&c1).await.unwrap().expect("the old head");
    assert_eq!(
        &head.transcript[..],
        TRANSCRIPT.as_bytes(),
        "from the staged file"
    );

    let lease = store.try_acquire(&c1, LONG).await.unwrap().unwrap();
    let mut transcript = TRANSCRIPT.to_owned();
    let mut version = Version(1);
    let mut files = Vec::new();
    for turn in 0..2 {
        transcript.push_str(&format!("{{\"turn\":{turn}}}\n"));
        let write = lobu_core::Persist {
            run: RunId::generate(),
            status: lobu_core::TerminalStatus::Completed,
            transcript: Bytes::from(transcript.clone()),
            expected: Some(version),
            fence: lease.fence,
            base_len: None,
        };
        version = store.persist(&c1, write).await.unwrap();
        assert_eq!(
            hydrate_while_locked(&store, &c1).await,
            transcript.as_bytes()
        );
        files.push(store.transcript_path(&c1).unwrap().unwrap());
    }
    assert_eq!(
        files[0], files[1],
        "appended to the file the first write named"
    );
    let name = files[0].file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("session.1-"), "{name}");
    for gone in ["session.jsonl", "session.v1.jsonl"] {
        assert!(!conversation.join(gone).exists(), "{gone} removed");
    }
}
