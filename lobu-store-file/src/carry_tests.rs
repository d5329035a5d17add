//! Commits whose bytes only their state record lines hold durably (see [`crate::carry`]):
//! after a restart of the machine that lost every byte not synced, hydrate, the history and
//! the next write see every acknowledged turn, and nothing a rewrite or a reset retired is
//! ever written back.
//!
//! A power loss is played by cutting `session.jsonl` and `history.jsonl` back to what the
//! record file's first line says is durable, and filling the rest with zeros (the size may
//! survive where the data does not), then opening the store as a new boot would.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use lobu_core::{
    ConversationKey, ConversationLocks, Lease, Persist, RunId, SessionStore, TerminalStatus,
    Version,
};

use crate::record_file;
use crate::state::State;
use crate::store::FileStore;

const LONG: Duration = Duration::from_secs(600);

fn line(i: usize) -> String {
    format!(
        "{{\"type\":\"message\",\"n\":{i},\"text\":\"turn {i} ✓ {}\"}}\n",
        "x".repeat(i % 7)
    )
}

struct Fixture {
    dir: tempfile::TempDir,
    store: FileStore,
    key: ConversationKey,
    lease: Lease,
    head: Option<Version>,
    transcript: String,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).await.unwrap();
        let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
        let lease = store.try_acquire(&key, LONG).await.unwrap().unwrap();
        Fixture {
            dir,
            store,
            key,
            lease,
            head: None,
            transcript: String::new(),
        }
    }

    fn conversation(&self) -> PathBuf {
        self.store.conversation_dir(&self.key)
    }

    /// Persist `transcript` whole as the next head.
    async fn persist(&mut self, transcript: String) {
        let write = Persist {
            run: RunId::generate(),
            status: TerminalStatus::Completed,
            transcript: Bytes::from(transcript.clone()),
            expected: self.head,
            fence: self.lease.fence,
            base_len: None,
        };
        self.head = Some(self.store.persist(&self.key, write).await.unwrap());
        self.transcript = transcript;
    }

    async fn append_turns(&mut self, turns: std::ops::Range<usize>) {
        for i in turns {
            let next = format!("{}{}", self.transcript, line(i));
            self.persist(next).await;
        }
    }

    /// Lose every unsynced byte, then open the store as the next boot's process would.
    async fn power_loss(&mut self) {
        lose_unsynced(&self.conversation());
        self.store = FileStore::open(self.dir.path()).await.unwrap().rebooted();
    }

    async fn assert_head(&self) {
        let head = self.store.hydrate(&self.key).await.unwrap().unwrap();
        assert_eq!(Some(head.version), self.head);
        assert_eq!(
            std::str::from_utf8(&head.transcript).unwrap(),
            self.transcript
        );
    }
}

/// Cut both files to the lengths the record file's first line makes durable and refill the
/// rest with zeros.
fn lose_unsynced(conversation: &Path) {
    let bytes = fs::read(conversation.join("state.json")).unwrap();
    let first = record_file::records(&bytes)[0];
    let state: State = serde_json::from_slice(first).unwrap();
    // The newest line names the transcript file (every line of one record file names the same).
    let newest: State =
        serde_json::from_slice(record_file::records(&bytes).last().unwrap()).unwrap();
    let transcript = newest.head.and_then(|h| h.file).unwrap_or_default();
    let (session, history) = state.head.map_or((0, 0), |h| (h.bytes, h.history_bytes));
    for (name, durable) in [(transcript.as_str(), session), ("history.jsonl", history)] {
        let path = conversation.join(name);
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(durable.min(meta.len())).unwrap();
        file.set_len(meta.len()).unwrap();
    }
}

fn carried_lines(conversation: &Path) -> usize {
    let bytes = fs::read(conversation.join("state.json")).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    text.lines().filter(|l| l.contains("\"carried\":")).count()
}

#[tokio::test]
async fn every_acknowledged_turn_survives_a_power_loss_that_drops_the_unsynced_bytes() {
    let mut fx = Fixture::new().await;
    fx.append_turns(0..6).await;
    assert_eq!(
        carried_lines(&fx.conversation()),
        6,
        "each append is carried"
    );
    let history = fs::read(fx.conversation().join("history.jsonl")).unwrap();

    fx.power_loss().await;
    fx.assert_head().await;
    assert_eq!(
        fs::read(fx.conversation().join("history.jsonl")).unwrap(),
        history,
        "the history is written back too"
    );
    assert_eq!(
        carried_lines(&fx.conversation()),
        0,
        "the repair replaced the record file"
    );
    fx.append_turns(6..8).await;
    fx.assert_head().await;
    assert_eq!(
        fs::read_to_string(fx.store.transcript_path(&fx.key).unwrap().unwrap()).unwrap(),
        fx.transcript
    );
}

#[tokio::test]
async fn a_state_record_replaced_for_its_size_loses_nothing_it_carried() {
    let mut fx = Fixture::new().await;
    // Enough bytes carried that the record file is replaced on the way, more than once.
    fx.append_turns(0..150).await;
    let state = fs::read(fx.conversation().join("state.json")).unwrap();
    assert!(carried_lines(&fx.conversation()) < 150, "it was replaced");
    assert!(state.len() <= record_file::COMPACT_AT);
    fx.power_loss().await;
    fx.assert_head().await;
}

#[tokio::test]
async fn a_rewrite_retires_what_earlier_lines_carried() {
    let mut fx = Fixture::new().await;
    fx.append_turns(0..4).await;
    // Does not extend the head (a compaction of the transcript): written whole.
    fx.persist(format!("{{\"type\":\"compaction\"}}\n{}", line(9)))
        .await;
    assert_eq!(carried_lines(&fx.conversation()), 0);
    fx.append_turns(10..12).await;
    fx.power_loss().await;
    fx.assert_head().await;
}

#[tokio::test]
async fn a_reset_retires_what_earlier_lines_carried() {
    let mut fx = Fixture::new().await;
    fx.append_turns(0..4).await;
    fx.store.clear(&fx.key, fx.lease.fence).await.unwrap();
    fx.head = None;
    fx.transcript.clear();
    fx.append_turns(20..21).await;
    fx.power_loss().await;
    fx.assert_head().await;
    let history = fs::read_to_string(fx.conversation().join("history.jsonl")).unwrap();
    assert_eq!(history.lines().count(), 1, "{history}");
}

#[tokio::test]
async fn a_restart_without_a_power_loss_writes_back_the_same_bytes() {
    let mut fx = Fixture::new().await;
    fx.append_turns(0..3).await;
    fx.store = FileStore::open(fx.dir.path()).await.unwrap().rebooted();
    fx.assert_head().await;
    fx.append_turns(3..4).await;
    fx.assert_head().await;
}
