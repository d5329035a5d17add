//! Bad input to transcripts, leases, listings and `open` gets a typed error and changes
//! nothing: after each refused call, every file under the root is byte for byte what it was.

mod common;

use std::time::Duration;

use bytes::Bytes;
use lobu_core::{
    ConversationKey, ConversationLocks, ErrorKind, Fence, Lease, MAX_LEASE, Persist, RunId,
    SessionStore, Version,
};
use lobu_store_file::{FileStore, MAX_TRANSCRIPT_BYTES_LIMIT};

use common::{Fixture, LONG, tree, write};

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

    // A zombie: its lease was released and taken again, so its fence is stale.
    ConversationLocks::release(&fx.store, &fx.lease)
        .await
        .unwrap();
    let newer = fx.store.try_acquire(&fx.key, LONG).await.unwrap().unwrap();
    assert!(newer.fence > fx.lease.fence);
    let before = tree(fx.dir.path());
    let stale = [
        write(&other, &longer, Some(fx.head), fx.lease.fence),
        write(&fx.run, &fx.bytes, None, fx.lease.fence),
    ];
    for persist in stale {
        let result = fx.store.persist(&fx.key, persist).await;
        fx.refused(&before, ErrorKind::Fenced, "a stale fence", result)
            .await;
    }
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

#[tokio::test]
async fn a_transcript_limit_of_zero_or_over_the_maximum_is_invalid_input() {
    let fx = Fixture::new().await;
    let before = tree(fx.dir.path());
    for max in [0, MAX_TRANSCRIPT_BYTES_LIMIT + 1, usize::MAX] {
        let result = fx.store.clone().with_max_transcript_bytes(max);
        let what = format!("a limit of {max} bytes");
        let limit = result.map(|store| store.max_transcript_bytes());
        fx.refused(&before, ErrorKind::InvalidInput, &what, limit)
            .await;
    }
    assert_eq!(
        fx.store.max_transcript_bytes(),
        1024,
        "the limit is unchanged"
    );
    let largest = fx
        .store
        .clone()
        .with_max_transcript_bytes(MAX_TRANSCRIPT_BYTES_LIMIT)
        .unwrap();
    assert_eq!(largest.max_transcript_bytes(), MAX_TRANSCRIPT_BYTES_LIMIT);
}
