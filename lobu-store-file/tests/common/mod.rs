//! What the bad-input tests share: a snapshot of every file under a root, and a store with
//! one leased conversation and one completed turn.
#![allow(dead_code, unreachable_pub)] // each test file uses its own part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use lobu_core::{
    ConversationKey, ConversationLocks, ErrorKind, Fence, Lease, Persist, RunId, SessionStore,
    TerminalStatus, Version,
};
use lobu_store_file::FileStore;

pub const LONG: Duration = Duration::from_secs(600);

pub type Tree = BTreeMap<PathBuf, Vec<u8>>;

/// Every file under `root` with its bytes.
pub fn tree(root: &Path) -> Tree {
    fn walk(dir: &Path, root: &Path, out: &mut Tree) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path.strip_prefix(root).unwrap().to_owned(), bytes);
            }
        }
    }
    let mut out = Tree::new();
    walk(root, root, &mut out);
    out
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: FileStore,
    pub key: ConversationKey,
    pub lease: Lease,
    pub head: Version,
    pub run: RunId,
    pub bytes: Bytes,
}

impl Fixture {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path())
            .await
            .unwrap()
            .with_max_transcript_bytes(1024)
            .unwrap();
        let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
        let lease = store.try_acquire(&key, LONG).await.unwrap().unwrap();
        let run = RunId::generate();
        let bytes = Bytes::from_static(b"{\"type\":\"session\"}\n");
        let head = store
            .persist(&key, write(&run, &bytes, None, lease.fence))
            .await
            .unwrap();
        Fixture {
            dir,
            store,
            key,
            lease,
            head,
            run,
            bytes,
        }
    }

    /// Assert `result` is an error of `kind` and that no file changed.
    pub async fn refused<T: std::fmt::Debug>(
        &self,
        before: &Tree,
        kind: ErrorKind,
        what: &str,
        result: lobu_core::Result<T>,
    ) {
        match result {
            Ok(value) => panic!("{what}: expected {kind}, got Ok({value:?})"),
            Err(e) => assert_eq!(e.kind(), kind, "{what}: {e}"),
        }
        assert!(*before == tree(self.dir.path()), "{what} changed files");
    }
}

pub fn write(run: &RunId, bytes: &Bytes, expected: Option<Version>, fence: Fence) -> Persist {
    Persist {
        run: run.clone(),
        status: TerminalStatus::Completed,
        transcript: bytes.clone(),
        expected,
        fence,
        base_len: None,
    }
}
