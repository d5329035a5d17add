//! The whole conformance suite on [`MemoryBackend`], plus what only the memory backend
//! promises.

use std::sync::Arc;
use std::time::Duration;

use lobu_core::memory::MemoryBackend;
use lobu_core::{ConversationKey, ErrorKind, NewRun, RunQueue, SessionStore, WorkerId};

lobu_core::conformance_tests!(
    #[tokio::test]
    || async { MemoryBackend::new() }
);

#[tokio::test]
async fn a_configured_size_limit_is_the_one_enforced() {
    let backend = MemoryBackend::new().with_max_transcript_bytes(16);
    assert_eq!(backend.max_transcript_bytes(), 16);
    let default = MemoryBackend::new();
    assert_eq!(
        default.max_transcript_bytes(),
        lobu_core::DEFAULT_MAX_TRANSCRIPT_BYTES
    );
    let suite = lobu_core::testkit::TestBackend::from(backend);
    lobu_core::testkit::a_transcript_over_the_size_limit_is_too_large_and_stores_nothing(&suite)
        .await;
}

#[tokio::test]
async fn wait_for_work_wakes_when_a_run_is_submitted() {
    let backend = Arc::new(MemoryBackend::new());
    let waiter = tokio::spawn({
        let backend = backend.clone();
        async move { backend.wait_for_work(Duration::from_secs(3600)).await }
    });
    // Let the waiter register before submitting; a submit it misses would be found anyway,
    // since the waiter looks for claimable work first.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
    backend
        .submit(NewRun::turn(key, serde_json::json!({})))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), waiter)
        .await
        .expect("the waiter woke well before its hour")
        .unwrap();
}

#[tokio::test]
async fn wait_for_work_returns_at_once_while_a_run_is_claimable() {
    let backend = MemoryBackend::new();
    let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
    backend
        .submit(NewRun::turn(key, serde_json::json!({})))
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        backend.wait_for_work(Duration::from_secs(3600)),
    )
    .await
    .expect("claimable work is reported without waiting");
}

#[tokio::test]
async fn claiming_an_empty_queue_finds_nothing_and_still_checks_the_lease() {
    let backend = MemoryBackend::new();
    let worker = WorkerId::generate();
    let none = backend
        .claim(&worker, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(none.is_none());
    let bad = backend.claim(&worker, Duration::ZERO).await.unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::InvalidInput);
}

/// The form `#[sqlx::test]` needs: a setup taking the test function's arguments. Stamped
/// with a plain attribute here, so this only proves that the expansion compiles.
mod setup_with_arguments {
    use lobu_core::memory::MemoryBackend;
    use lobu_core::testkit::{Capabilities, TestBackend};

    lobu_core::conformance_tests!(
        #[allow(dead_code)]
        |limit: usize, settle: std::time::Duration| async move {
            let backend = MemoryBackend::new().with_max_transcript_bytes(limit);
            TestBackend::new(backend.into_backend())
                .with_capabilities(Capabilities::default().settle(settle))
                .with_guard(String::from("kept alive"))
        }
    );
}
