//! An import stopped at any step of its write: a restarted store finds no head or the whole
//! imported head, never part of it, and importing again finishes (or finds it done), leaving
//! exactly the imported transcript on disk and later versions above it.

use std::fs;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use lobu_core::export::{Exported, Imported};
use lobu_core::{
    ConversationKey, ConversationLocks, Persist, RunId, SessionStore, TerminalStatus, Version,
};

use crate::store::{FileStore, Step};

const LONG: Duration = Duration::from_secs(600);
const TRANSCRIPT: &str = concat!(
    "{\"type\":\"session\",\"version\":3,\"id\":\"s1\"}\n",
    "{\"type\":\"message\",\"message\":{\"role\":\"user\",\"content\":\"moved ✓\"}}\n",
);
const STEPS: [Step; 3] = [
    Step::TranscriptWritten,
    Step::HistoryWritten,
    Step::Committed,
];

fn exported(key: &ConversationKey, version: u64) -> Exported {
    Exported::new(
        key.clone(),
        Version(version),
        RunId::generate(),
        UNIX_EPOCH + Duration::from_nanos(1_764_524_930_123_456_789),
        Bytes::from_static(TRANSCRIPT.as_bytes()),
    )
}

fn persist(run: RunId, text: &str, expected: Option<Version>, fence: lobu_core::Fence) -> Persist {
    Persist {
        run,
        status: TerminalStatus::Completed,
        transcript: Bytes::from(text.to_owned()),
        expected,
        fence,
        base_len: None,
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

/// Crash an import at `step` into a conversation never seen (`cleared`: false, written at
/// the exported version) or one cleared here (a fresh version), restart, import again.
async fn crash_then_import_again(step: Step, cleared: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).await.unwrap();
    let key = ConversationKey::parse("acme:eu", "bot", "telegram:42").unwrap();
    let (doc, expected) = if cleared {
        let lease = store.try_acquire(&key, LONG).await.unwrap().unwrap();
        let write = persist(RunId::generate(), "{\"old\":1}\n", None, lease.fence);
        let old = store.persist(&key, write).await.unwrap();
        store.clear(&key, lease.fence).await.unwrap();
        store.release(&lease).await.unwrap();
        (exported(&key, old.0), Version(old.0 + 1))
    } else {
        (exported(&key, 7), Version(7))
    };
    let crashing = FileStore::open(dir.path()).await.unwrap().crashing_at(step);
    let crashed = crashing.import(&doc).await;
    assert!(
        matches!(&crashed, Err(e) if e.message().starts_with("simulated crash")),
        "{step:?}: {crashed:?}"
    );

    let store = FileStore::open(dir.path()).await.unwrap();
    let whole = Exported {
        version: expected,
        ..doc.clone()
    };
    let committed = step == Step::Committed;
    let found = store.export(&key).await.unwrap();
    assert_eq!(
        found,
        committed.then(|| whole.clone()),
        "{step:?} {cleared}"
    );
    assert_eq!(
        store.head(&key).await.unwrap(),
        committed.then_some(expected)
    );

    let again = store.import(&doc).await.unwrap();
    let want = if committed {
        Imported::Unchanged(expected)
    } else {
        Imported::Written(expected)
    };
    assert_eq!(again, want, "{step:?} {cleared}");
    let store = FileStore::open(dir.path()).await.unwrap();
    assert_eq!(store.export(&key).await.unwrap(), Some(whole));
    let conversation = store.conversation_dir(&key);
    let transcript = store.transcript_path(&key).unwrap().unwrap();
    assert_eq!(fs::read_to_string(&transcript).unwrap(), TRANSCRIPT);
    let transcript = transcript.file_name().unwrap().to_str().unwrap();
    let history = fs::read_to_string(conversation.join("history.jsonl")).unwrap();
    assert_eq!(history.lines().count(), 1, "{step:?}: {history}");
    assert_eq!(
        names(&conversation),
        ["history.jsonl", "lock", transcript, "state.json"],
        "{step:?}: nothing left behind"
    );

    let lease = store.try_acquire(&key, LONG).await.unwrap().unwrap();
    let next = format!("{TRANSCRIPT}{{\"type\":\"message\"}}\n");
    let write = persist(RunId::generate(), &next, Some(expected), lease.fence);
    let version = store.persist(&key, write).await.unwrap();
    assert!(version > expected, "{step:?}: {version} after {expected}");
}

#[tokio::test]
async fn a_crash_at_any_step_of_an_import_leaves_no_head_or_the_whole_one_and_importing_again_finishes()
 {
    for step in STEPS {
        for cleared in [false, true] {
            crash_then_import_again(step, cleared).await;
        }
    }
}
