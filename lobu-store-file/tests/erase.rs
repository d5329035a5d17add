//! Erasure on disk: after erasing an org, no file under the root holds any of its ids or
//! bytes, in its name or its contents, and every other file is exactly as it was.

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{LONG, Tree, tree};
use lobu_core::{
    Commit, ConversationKey, ConversationLocks, EraseScope, ErasureReport, IdempotencyKey, NewRun,
    Persist, RunId, RunQueue, SessionStore, TerminalStatus, WorkerId,
};
use lobu_store_file::FileStore;
use serde_json::json;

/// In every id and every byte the erased org stores (only `[A-Za-z0-9_-]`, so file names
/// spell it as it is).
const MARK: &str = "ZqxErasedMark";

fn key(org: &str, conversation: &str) -> ConversationKey {
    ConversationKey::parse(org, "bot", conversation).unwrap()
}

/// A turn whose payload holds `text`.
fn turn(key: &ConversationKey, idempotency: Option<&str>, text: &str) -> NewRun {
    let mut run = NewRun::turn(key.clone(), json!({ "text": text }));
    run.idempotency_key = idempotency.map(|k| IdempotencyKey::new(k).unwrap());
    run
}

fn transcript(text: &str) -> Bytes {
    Bytes::from(format!("{{\"type\":\"message\",\"text\":\"{text}\"}}\n"))
}

/// Submit a run of `key`, claim it (the only claimable run) and record two events, all
/// holding `text`.
async fn claimed(
    store: &FileStore,
    key: &ConversationKey,
    idem: Option<&str>,
    text: &str,
) -> lobu_core::Claim {
    let submitted = store.submit(turn(key, idem, text)).await.unwrap();
    let claim = store.claim(&WorkerId::generate(), LONG).await.unwrap();
    let claim = claim.expect("the run");
    assert_eq!(claim.run, submitted.run, "the only claimable run");
    let event = format!(r#"{{"type":"output","text":"{text}"}}"#);
    store
        .record_events(&claim, &[event.clone(), event])
        .await
        .unwrap();
    claim
}

/// Every path under `root`, directories included.
fn paths(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path.clone());
            }
            found.push(path.strip_prefix(root).unwrap().to_owned());
        }
    }
    found
}

fn mentions(haystack: &[u8], needles: &[String]) -> bool {
    needles
        .iter()
        .any(|n| haystack.windows(n.len()).any(|w| w == n.as_bytes()))
}

#[tokio::test]
async fn an_erased_org_leaves_no_file_holding_its_ids_or_bytes_and_others_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let org = format!("org-{MARK}");
    // Long enough to be split into continuation directories.
    let long = key(&org, &format!("{MARK}-{}", "x".repeat(300)));
    let running = key(&org, &format!("running-{MARK}"));
    let leased = key(&org, &format!("leased-{MARK}"));
    let other = key("globex", "c1");

    // The other org first: its pending run must not be what the erased org's claims take.
    let claim = claimed(&store, &other, Some("same-key"), "kept").await;
    let commit = Commit::transcript(transcript("kept"), None);
    let kept_head = store.complete(&claim, commit).await.unwrap();

    let mut erased_runs = Vec::new();
    let claim = claimed(&store, &long, Some(&format!("idem-{MARK}")), MARK).await;
    erased_runs.push(claim.run.clone());
    let commit = Commit::transcript(transcript(MARK), None);
    let head = store.complete(&claim, commit).await.unwrap();
    let lease = store.try_acquire(&long, LONG).await.unwrap().unwrap();
    let failed = Persist {
        run: RunId::generate(),
        status: TerminalStatus::Failed,
        transcript: transcript(&format!("failed {MARK}")),
        expected: head,
        fence: lease.fence,
        base_len: None,
    };
    store.persist(&long, failed).await.unwrap();
    ConversationLocks::release(&store, &lease).await.unwrap();
    let claim = claimed(&store, &running, None, MARK).await;
    erased_runs.push(claim.run);
    erased_runs.push(store.submit(turn(&long, None, MARK)).await.unwrap().run);
    store.try_acquire(&leased, LONG).await.unwrap().unwrap();
    let kept_run = store.submit(turn(&other, None, "kept")).await.unwrap().run;
    store.try_acquire(&key("globex", "c2"), LONG).await.unwrap();

    let before = tree(dir.path());
    let mut needles: Vec<String> = erased_runs.iter().map(|r| r.as_str().to_owned()).collect();
    needles.push(MARK.to_owned());
    let report = store
        .erase(&EraseScope::Org(long.org.clone()))
        .await
        .unwrap();
    let expected = ErasureReport {
        conversations: 3,
        snapshots: 2,
        runs: 3,
        events: 4,
    };
    assert_eq!(report, expected);

    for path in paths(dir.path()) {
        let name = path.to_string_lossy();
        assert!(!mentions(name.as_bytes(), &needles), "{name}");
        if dir.path().join(&path).is_file() {
            let bytes = std::fs::read(dir.path().join(&path)).unwrap();
            assert!(
                !mentions(&bytes, &needles),
                "{name} holds an erased id or byte"
            );
        }
    }
    let untouched: Tree = before
        .into_iter()
        .filter(|(path, bytes)| {
            !mentions(path.to_string_lossy().as_bytes(), &needles) && !mentions(bytes, &needles)
        })
        .collect();
    // `queue/seq` holds counters (no id, no byte of anyone's), which every change of a
    // marker moves on.
    let counters = std::path::Path::new("queue/seq");
    let mut after = tree(dir.path());
    let mut untouched = untouched;
    for tree in [&mut after, &mut untouched] {
        tree.remove(counters);
    }
    assert_eq!(after, untouched, "every other file as it was");

    // A store opened anew finds none of it, and all of the other org.
    let reopened = FileStore::open(dir.path()).await.unwrap();
    for key in [&long, &running, &leased] {
        assert!(reopened.hydrate(key).await.unwrap().is_none());
    }
    for run in &erased_runs {
        assert!(reopened.status(&long.org, run).await.unwrap().is_none());
    }
    let hydrated = reopened.hydrate(&other).await.unwrap().expect("kept");
    assert_eq!(Some(hydrated.version), kept_head);
    assert!(
        reopened
            .status(&other.org, &kept_run)
            .await
            .unwrap()
            .is_some()
    );
    let again = reopened.erase(&EraseScope::Org(long.org.clone())).await;
    assert_eq!(again.unwrap(), ErasureReport::default());
}

#[tokio::test]
async fn an_erased_conversation_takes_its_emptied_parents_and_leaves_its_siblings() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let alone = key("solo", &format!("{MARK}-{}", "y".repeat(300)));
    let kept = key("acme", "kept");
    let gone = key("acme", MARK);
    for key in [&alone, &kept, &gone] {
        store.try_acquire(key, LONG).await.unwrap().unwrap();
    }
    for key in [&alone, &gone] {
        let report = store.erase(&EraseScope::Conversation(key.clone())).await;
        assert_eq!(report.unwrap().conversations, 1);
    }
    let orgs: Vec<PathBuf> = paths(&dir.path().join("orgs"));
    let expected = ["acme", "acme/bot", "acme/bot/kept", "acme/bot/kept/lock"];
    let mut found: Vec<String> = orgs
        .iter()
        .filter(|p| !p.ends_with("state.json"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(
        found, expected,
        "no directory of the erased org or conversation"
    );
}
