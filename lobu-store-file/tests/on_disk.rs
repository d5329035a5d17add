//! What a person finds on disk, and what only the file store promises: appends that write
//! only the new bytes, readable JSON everywhere, long ids nested under their org, in-process
//! wake-ups, and a queue index that keeps first-in-first-out order at scale.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lobu_core::{
    Commit, ConversationKey, ConversationLocks, ErrorKind, Lease, NewRun, Persist, RunId, RunQueue,
    SessionStore, TerminalStatus, Version, WorkerId,
};
use lobu_store_file::FileStore;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(600);
const HEADER: &str = "{\"type\":\"session\",\"version\":3,\"id\":\"s\"}\n";

fn exchange(n: usize) -> String {
    format!(
        "{{\"type\":\"message\",\"message\":{{\"role\":\"user\",\"content\":\"question {n} — ✓\"}}}}\n\
         {{\"type\":\"message\",\"message\":{{\"role\":\"assistant\",\"content\":\"answer {n}\"}}}}\n"
    )
}

async fn turn(store: &FileStore, lease: &Lease, text: &str, expected: Option<Version>) -> Version {
    let write = Persist {
        run: RunId::generate(),
        status: TerminalStatus::Completed,
        transcript: Bytes::from(text.to_owned()),
        expected,
        fence: lease.fence,
        base_len: None,
    };
    store.persist(&lease.key, write).await.unwrap()
}

fn json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[cfg(unix)]
#[tokio::test]
async fn an_extending_turn_appends_only_its_new_bytes_and_a_rewrite_replaces_the_file() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let key = ConversationKey::parse("acme", "bot", "telegram:42").unwrap();
    let lease = store.try_acquire(&key, LONG).await.unwrap().unwrap();
    let mut text = format!("{HEADER}{}", exchange(0));
    let mut version = turn(&store, &lease, &text, None).await;
    let session = store.transcript_path(&key).unwrap().unwrap();
    let inode = std::fs::metadata(&session).unwrap().ino();
    for n in 1..5 {
        text.push_str(&exchange(n));
        version = turn(&store, &lease, &text, Some(version)).await;
        assert_eq!(store.transcript_path(&key).unwrap().unwrap(), session);
        let meta = std::fs::metadata(&session).unwrap();
        assert_eq!(meta.ino(), inode, "turn {n} appended to the same file");
        assert_eq!(std::fs::read_to_string(&session).unwrap(), text);
    }
    // A turn that left the transcript as it was appends nothing.
    version = turn(&store, &lease, &text, Some(version)).await;
    assert_eq!(std::fs::metadata(&session).unwrap().ino(), inode);
    let head = store.hydrate(&key).await.unwrap().unwrap();
    assert_eq!(
        (head.version, &head.transcript[..]),
        (version, text.as_bytes())
    );
    let compacted = format!("{HEADER}{{\"type\":\"compaction\",\"summary\":\"five questions\"}}\n");
    turn(&store, &lease, &compacted, Some(version)).await;
    let rewritten = store.transcript_path(&key).unwrap().unwrap();
    assert_ne!(rewritten, session, "a rewrite is a new file");
    assert!(!session.exists(), "and the old one is removed");
    assert_eq!(std::fs::read_to_string(&rewritten).unwrap(), compacted);
}

#[tokio::test]
async fn every_file_a_person_reads_is_json() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let key = ConversationKey::parse("acme", "support-bot", "slack:T1/C2").unwrap();
    let lease = store.try_acquire(&key, LONG).await.unwrap().unwrap();
    let first = format!("{HEADER}{}", exchange(0));
    let v1 = turn(&store, &lease, &first, None).await;
    let second = format!("{first}{}", exchange(1));
    let v2 = turn(&store, &lease, &second, Some(v1)).await;
    let failed = Persist {
        run: RunId::generate(),
        status: TerminalStatus::Timeout,
        transcript: Bytes::from(format!("{second}{{\"type\":\"message\"}}\n")),
        expected: Some(v2),
        fence: lease.fence,
        base_len: None,
    };
    let v3 = store.persist(&key, failed).await.unwrap();

    let conversation = store.conversation_dir(&key);
    assert!(conversation.starts_with(store.root().join("orgs/acme/support-bot")));
    let transcript = store.transcript_path(&key).unwrap().unwrap();
    assert_eq!(transcript.parent(), Some(conversation.as_path()));
    assert_eq!(json_lines(&transcript).len(), 5);
    let state: Value = serde_json::from_slice(
        &lobu_store_file::read_record(conversation.join("state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["key"]["conversation"], "slack:T1/C2");
    assert_eq!(state["head"]["version"], v2.0);
    assert_eq!(state["head"]["bytes"], second.len());
    assert_eq!(state["head"]["title"], "question 0 — ✓");
    assert_eq!(state["last_version"], v3.0);
    assert_eq!(state["lease"]["fence"], lease.fence.0);
    let history = json_lines(&conversation.join("history.jsonl"));
    let versions: Vec<&Value> = history.iter().map(|r| &r["version"]).collect();
    assert_eq!(versions, [&json!(v1.0), &json!(v2.0)]);
    let forensic = conversation.join("forensic");
    let name = format!("{:020}.timeout", v3.0);
    assert_eq!(json_lines(&forensic.join(format!("{name}.jsonl"))).len(), 6);
    let record: Value =
        serde_json::from_slice(&std::fs::read(forensic.join(format!("{name}.json"))).unwrap())
            .unwrap();
    assert_eq!(record["status"], "timeout");
}

#[tokio::test]
async fn a_512_byte_conversation_id_nests_under_its_org_in_short_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let id = "会".repeat(170) + "xy"; // 512 bytes, 1532 once encoded
    let key = ConversationKey::parse("tenant/one", "bot", &id).unwrap();
    let lease = store.try_acquire(&key, LONG).await.unwrap().unwrap();
    let text = format!("{HEADER}{}", exchange(0));
    let version = turn(&store, &lease, &text, None).await;
    let conversation = store.conversation_dir(&key);
    let below = conversation
        .strip_prefix(store.root().join("orgs"))
        .unwrap();
    let parts: Vec<String> = below
        .iter()
        .map(|p| p.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(parts[0], "tenant%2Fone", "the org is the first level");
    assert!(parts.iter().all(|p| p.len() <= 255), "{parts:?}");
    assert!(parts.len() > 3, "the id continues over several levels");
    let page = store.list(&key.org, &key.agent, None, 10).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].conversation.as_str(), id);
    assert_eq!(page.items[0].version, version);
}

#[tokio::test]
async fn a_damaged_conversation_does_not_hide_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    for id in ["a", "b", "c"] {
        let key = ConversationKey::parse("acme", "bot", id).unwrap();
        let lease = store.try_acquire(&key, LONG).await.unwrap().unwrap();
        turn(&store, &lease, &format!("{HEADER}{}", exchange(0)), None).await;
        // Owned conversations are never pruned.
        ConversationLocks::release(&store, &lease).await.unwrap();
    }
    let broken = ConversationKey::parse("acme", "bot", "b").unwrap();
    std::fs::write(
        store.conversation_dir(&broken).join("state.json"),
        b"{\"torn",
    )
    .unwrap();
    assert_eq!(
        store.hydrate(&broken).await.unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    let page = store
        .list(&broken.org, &broken.agent, None, 10)
        .await
        .unwrap();
    let ids: Vec<&str> = page.items.iter().map(|s| s.conversation.as_str()).collect();
    assert_eq!(ids, ["a", "c"]);
    let report = store.prune(std::time::SystemTime::now()).await.unwrap();
    assert_eq!(report.conversations, 2, "the two readable ones were idle");
}

#[tokio::test]
async fn a_configured_size_limit_is_the_one_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path())
        .await
        .unwrap()
        .with_max_transcript_bytes(64)
        .unwrap();
    assert_eq!(store.max_transcript_bytes(), 64);
    let backend = lobu_core::testkit::TestBackend::new(store.into_backend());
    lobu_core::testkit::a_transcript_over_the_size_limit_is_too_large_and_stores_nothing(&backend)
        .await;
}

#[tokio::test]
async fn wait_for_work_wakes_when_this_process_submits() {
    let dir = tempfile::tempdir().unwrap();
    // Polling once an hour: only the in-process wake-up can end the wait in time.
    let store = Arc::new(
        FileStore::open(dir.path())
            .await
            .unwrap()
            .with_poll_interval(Duration::from_secs(3600)),
    );
    let waiter = tokio::spawn({
        let store = store.clone();
        async move { store.wait_for_work(Duration::from_secs(3600)).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
    store.submit(NewRun::turn(key, json!({}))).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), waiter)
        .await
        .expect("woken well before the hour")
        .unwrap();
    // And with a run claimable, it does not wait at all.
    tokio::time::timeout(
        Duration::from_secs(60),
        store.wait_for_work(Duration::from_secs(3600)),
    )
    .await
    .expect("claimable work is reported at once");
}

#[tokio::test]
async fn hundreds_of_queued_runs_are_claimed_in_submission_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap().with_fsync(false);
    let conversations: Vec<ConversationKey> = (0..100)
        .map(|n| ConversationKey::parse("acme", "bot", &format!("c{n}")).unwrap())
        .collect();
    let mut submitted = Vec::new();
    for round in 0..4 {
        for key in &conversations {
            let run = store.submit(NewRun::turn(key.clone(), json!({ "round": round })));
            submitted.push(run.await.unwrap().run);
        }
    }
    assert_eq!(store.depth().await.unwrap(), 400);
    let worker = WorkerId::generate();
    let mut claimed = Vec::new();
    while let Some(claim) = store.claim(&worker, LONG).await.unwrap() {
        // Each conversation's next run becomes its lane's front once this one completes.
        store.complete(&claim, Commit::output(None)).await.unwrap();
        claimed.push(claim.run);
    }
    assert_eq!(claimed, submitted);
    assert_eq!(store.depth().await.unwrap(), 0);
    let active = dir.path().join("queue/active");
    assert_eq!(
        std::fs::read_dir(active).unwrap().count(),
        0,
        "no marker is left"
    );
}

/// Readers take no lock, so this is the race they must survive: a reader reads the state
/// record, then a rewrite or a reset (and the next turn) replaces the transcript file it
/// names before it opens it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hydrates_during_appends_rewrites_and_resets_only_ever_see_committed_transcripts() {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path()).await.unwrap());
    let key = ConversationKey::parse("acme", "bot", "telegram:42").unwrap();
    let lease = store.try_acquire(&key, LONG).await.unwrap().unwrap();
    let committed: Arc<Mutex<HashMap<Version, String>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, key, done) = (store.clone(), key.clone(), done.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    if let Some(head) = store.hydrate(&key).await.unwrap() {
                        let text = String::from_utf8(head.transcript.to_vec()).unwrap();
                        seen.push((head.version, text));
                    }
                }
                seen
            })
        })
        .collect();
    let (mut text, mut head) = (String::new(), None);
    for i in 0..300 {
        if i % 7 == 6 {
            store.clear(&key, lease.fence).await.unwrap();
            (text, head) = (String::new(), None);
            continue;
        }
        text = if i % 5 == 4 {
            format!("{HEADER}{{\"type\":\"compaction\",\"summary\":\"up to {i}\"}}\n")
        } else {
            format!(
                "{}{}",
                if text.is_empty() { HEADER } else { &text },
                exchange(i)
            )
        };
        let version = turn(&store, &lease, &text, head).await;
        committed.lock().unwrap().insert(version, text.clone());
        head = Some(version);
    }
    done.store(true, Ordering::Relaxed);
    let committed = committed.lock().unwrap().clone();
    let mut reads = 0;
    for reader in readers {
        for (version, text) in reader.await.unwrap() {
            assert_eq!(committed.get(&version), Some(&text), "read at {version}");
            reads += 1;
        }
    }
    assert!(reads > 0, "the readers read something");
}
