//! Bad input gets a typed error and changes nothing: after each refused call, every file
//! under the root is byte for byte what it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use lobu_core::{
    Claim, ConversationKey, ConversationLocks, ErrorKind, Fence, IdempotencyKey, Lease,
    MAX_ATTEMPTS, MAX_LEASE, MAX_PAYLOAD_BYTES, MAX_RETRY_DELAY, NewRun, Persist, RunId, RunQueue,
    SessionStore, TerminalStatus, Version, WorkerId,
};
use lobu_store_file::FileStore;
use serde_json::json;

type Tree = BTreeMap<PathBuf, Vec<u8>>;

/// Every file under `root` with its bytes.
fn tree(root: &Path) -> Tree {
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

struct Fixture {
    dir: tempfile::TempDir,
    store: FileStore,
    key: ConversationKey,
    lease: Lease,
    head: Version,
    run: RunId,
    bytes: Bytes,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path())
            .await
            .unwrap()
            .with_max_transcript_bytes(1024);
        let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
        let lease = store
            .try_acquire(&key, Duration::from_secs(600))
            .await
            .unwrap()
            .unwrap();
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
    async fn refused<T: std::fmt::Debug>(
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

fn write(run: &RunId, bytes: &Bytes, expected: Option<Version>, fence: Fence) -> Persist {
    Persist {
        run: run.clone(),
        status: TerminalStatus::Completed,
        transcript: bytes.clone(),
        expected,
        fence,
    }
}

#[tokio::test]
async fn refused_persists_change_no_file() {
    let fx = Fixture::new().await;
    let before = tree(fx.dir.path());
    let other = RunId::generate();
    let longer = Bytes::from(format!("{}{{\"type\":\"message\"}}\n", "x".repeat(10)));
    let cases: Vec<(Persist, ErrorKind, &str)> = vec![
        (
            write(
                &other,
                &Bytes::from(vec![b'x'; 1025]),
                Some(fx.head),
                fx.lease.fence,
            ),
            ErrorKind::TooLarge,
            "one byte over the limit",
        ),
        (
            write(&other, &longer, Some(fx.head), Fence(fx.lease.fence.0 + 1)),
            ErrorKind::Fenced,
            "a fence never issued",
        ),
        (
            write(&other, &longer, Some(fx.head), Fence(0)),
            ErrorKind::Fenced,
            "fence zero",
        ),
        (
            write(&other, &longer, None, fx.lease.fence),
            ErrorKind::Conflict,
            "expected no head",
        ),
        (
            write(
                &other,
                &longer,
                Some(Version(fx.head.0 + 7)),
                fx.lease.fence,
            ),
            ErrorKind::Conflict,
            "a version never issued",
        ),
        (
            write(&fx.run, &longer, None, fx.lease.fence),
            ErrorKind::Conflict,
            "divergent bytes for a completed run",
        ),
    ];
    for (persist, kind, what) in cases {
        let result = fx.store.persist(&fx.key, persist).await;
        fx.refused(&before, kind, what, result).await;
    }
    // A conversation nobody leased: refused without creating its directory.
    let stranger = ConversationKey::parse("acme", "bot", "never-leased").unwrap();
    let persist = write(&other, &fx.bytes, None, fx.lease.fence);
    let result = fx.store.persist(&stranger, persist).await;
    fx.refused(
        &before,
        ErrorKind::Fenced,
        "a conversation never leased",
        result,
    )
    .await;
    let other_org = ConversationKey::parse("other", "bot", "c1").unwrap();
    let persist = write(&other, &fx.bytes, None, fx.lease.fence);
    let result = fx.store.persist(&other_org, persist).await;
    fx.refused(
        &before,
        ErrorKind::Fenced,
        "our fence in another org",
        result,
    )
    .await;
}

#[tokio::test]
async fn refused_lease_calls_and_listings_change_no_file() {
    let fx = Fixture::new().await;
    let before = tree(fx.dir.path());
    let fresh = ConversationKey::parse("acme", "bot", "fresh").unwrap();
    for ttl in [Duration::ZERO, MAX_LEASE + Duration::from_millis(1)] {
        let result = fx.store.try_acquire(&fresh, ttl).await;
        fx.refused(
            &before,
            ErrorKind::InvalidInput,
            "acquire with a bad ttl",
            result,
        )
        .await;
        let result = fx.store.renew(&fx.lease, ttl).await;
        fx.refused(
            &before,
            ErrorKind::InvalidInput,
            "renew with a bad ttl",
            result,
        )
        .await;
    }
    let forged = Lease {
        fence: Fence(fx.lease.fence.0 + 1),
        ..fx.lease.clone()
    };
    let result = fx.store.renew(&forged, Duration::from_secs(1)).await;
    fx.refused(&before, ErrorKind::Fenced, "renew a forged lease", result)
        .await;
    let never = Lease {
        key: fresh.clone(),
        ..fx.lease.clone()
    };
    let result = fx.store.renew(&never, Duration::from_secs(1)).await;
    fx.refused(
        &before,
        ErrorKind::Fenced,
        "renew a lease never issued",
        result,
    )
    .await;
    for limit in [0, 201] {
        let result = fx.store.list(&fx.key.org, &fx.key.agent, None, limit).await;
        fx.refused(
            &before,
            ErrorKind::InvalidInput,
            "list with a bad limit",
            result,
        )
        .await;
    }
    // Releasing what is not held is fine, and changes nothing either.
    ConversationLocks::release(&fx.store, &forged)
        .await
        .unwrap();
    ConversationLocks::release(&fx.store, &never).await.unwrap();
    assert!(before == tree(fx.dir.path()));
}

#[tokio::test]
async fn refused_queue_calls_change_no_file() {
    let fx = Fixture::new().await;
    let worker = WorkerId::generate();
    let queued = fx
        .store
        .submit(NewRun::turn(fx.key.clone(), json!({"n": 1})))
        .await
        .unwrap();
    let claim = fx
        .store
        .claim(&worker, Duration::from_secs(600))
        .await
        .unwrap()
        .expect("a claim");
    assert_eq!(claim.run, queued.run);
    let before = tree(fx.dir.path());

    let idem = IdempotencyKey::new("retry-1").unwrap();
    let base = || NewRun {
        idempotency_key: Some(idem.clone()),
        ..NewRun::turn(fx.key.clone(), json!({"n": 2}))
    };
    let big = json!({"message": "x".repeat(MAX_PAYLOAD_BYTES)});
    let submissions = [
        (
            NewRun {
                max_attempts: 0,
                ..base()
            },
            ErrorKind::InvalidInput,
        ),
        (
            NewRun {
                max_attempts: MAX_ATTEMPTS + 1,
                ..base()
            },
            ErrorKind::InvalidInput,
        ),
        (
            NewRun {
                retry_delay: MAX_RETRY_DELAY + Duration::from_secs(1),
                ..base()
            },
            ErrorKind::InvalidInput,
        ),
        (
            NewRun {
                payload: json!(["not", "an", "object"]),
                ..base()
            },
            ErrorKind::InvalidInput,
        ),
        (
            NewRun {
                payload: big,
                ..base()
            },
            ErrorKind::TooLarge,
        ),
    ];
    for (run, kind) in submissions {
        let result = fx.store.submit(run).await;
        fx.refused(&before, kind, "a bad submission", result).await;
    }
    for lease in [Duration::ZERO, MAX_LEASE + Duration::from_millis(1)] {
        let result = fx.store.claim(&worker, lease).await;
        fx.refused(
            &before,
            ErrorKind::InvalidInput,
            "claim with a bad lease",
            result,
        )
        .await;
        let result = fx.store.heartbeat(&claim, lease).await;
        fx.refused(
            &before,
            ErrorKind::InvalidInput,
            "heartbeat with a bad lease",
            result,
        )
        .await;
    }
    let result = fx.store.fail(&claim, TerminalStatus::Completed, "no").await;
    fx.refused(
        &before,
        ErrorKind::InvalidInput,
        "fail as completed",
        result,
    )
    .await;
    let stale = [
        Claim {
            token: claim.token + 1,
            ..claim.clone()
        },
        Claim {
            worker: WorkerId::generate(),
            ..claim.clone()
        },
    ];
    for stale in &stale {
        let result = fx.store.heartbeat(stale, Duration::from_secs(1)).await;
        fx.refused(
            &before,
            ErrorKind::Fenced,
            "heartbeat a forged claim",
            result,
        )
        .await;
        let result = fx.store.complete(stale, None).await;
        fx.refused(
            &before,
            ErrorKind::Fenced,
            "complete a forged claim",
            result,
        )
        .await;
        let result = fx.store.fail(stale, TerminalStatus::Failed, "x").await;
        fx.refused(&before, ErrorKind::Fenced, "fail a forged claim", result)
            .await;
        let result = RunQueue::release(&fx.store, stale).await;
        fx.refused(&before, ErrorKind::Fenced, "release a forged claim", result)
            .await;
    }
    let unknown = Claim {
        run: RunId::generate(),
        ..claim.clone()
    };
    let result = fx.store.complete(&unknown, None).await;
    fx.refused(
        &before,
        ErrorKind::NotFound,
        "complete an unknown run",
        result,
    )
    .await;
    fx.store
        .complete(&claim, None)
        .await
        .expect("the real claim still works");
}

#[tokio::test]
async fn opening_a_root_of_another_format_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    FileStore::open(dir.path()).await.unwrap();
    let marker = dir.path().join("lobu-store.json");
    std::fs::write(&marker, br#"{"format": 99, "store": "lobu-store-file"}"#).unwrap();
    let err = FileStore::open(dir.path()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    let source = std::error::Error::source(&err).expect("the source is kept");
    assert!(source.is::<lobu_store_file::FileStoreError>());

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = FileStore::open(&file).await.unwrap_err();
    let io = std::error::Error::source(&err)
        .and_then(std::error::Error::source)
        .and_then(|e| e.downcast_ref::<std::io::Error>());
    assert!(io.is_some(), "the io error is kept: {err}");
}
