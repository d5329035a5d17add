//! Hostile input against the memory backend: each refused call is a typed error and what
//! the API reads back (heads, listings, runs) is unchanged; hostile bytes are kept exactly.

use lobu_core::memory::MemoryBackend;
use lobu_core::testkit::Capabilities;
use lobu_core::testkit::hostile::{self, ApiOnly};

#[tokio::test]
async fn hostile_transcripts_are_refused_whole_or_kept_byte_for_byte() {
    let backend = MemoryBackend::new().into_backend();
    hostile::hostile_transcripts_are_refused_whole_or_kept_byte_for_byte(
        &backend,
        &ApiOnly,
        &Capabilities::default(),
    )
    .await;
}

#[tokio::test]
async fn stale_future_and_foreign_versions_and_fences_change_nothing() {
    let backend = MemoryBackend::new().into_backend();
    hostile::stale_future_and_foreign_versions_and_fences_change_nothing(&backend, &ApiOnly).await;
}

#[tokio::test]
async fn confusable_ids_are_distinct_conversations_that_share_nothing() {
    let backend = MemoryBackend::new().into_backend();
    hostile::confusable_ids_are_distinct_conversations_that_share_nothing(&backend, &ApiOnly).await;
}
