//! Hostile input against the file store: each refused call is a typed error and every file
//! under the store's directory (names and contents, recursively) is what it was; hostile
//! bytes are kept exactly; confusable ids never share a file.

use lobu_core::Backend;
use lobu_core::testkit::Capabilities;
use lobu_core::testkit::hostile::{self, FilesUnder};
use lobu_store_file::FileStore;

async fn store() -> (tempfile::TempDir, Backend, FilesUnder) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = FileStore::open(dir.path()).await.expect("open the store");
    // The whole temporary directory: a write that escaped the store's root would show too.
    let dump = FilesUnder(dir.path().to_owned());
    (dir, store.into_backend(), dump)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_transcripts_are_refused_whole_or_kept_byte_for_byte() {
    let (_dir, backend, dump) = store().await;
    hostile::hostile_transcripts_are_refused_whole_or_kept_byte_for_byte(
        &backend,
        &dump,
        &Capabilities::default(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_future_and_foreign_versions_and_fences_change_nothing() {
    let (_dir, backend, dump) = store().await;
    hostile::stale_future_and_foreign_versions_and_fences_change_nothing(&backend, &dump).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confusable_ids_are_distinct_conversations_that_share_nothing() {
    let (_dir, backend, dump) = store().await;
    hostile::confusable_ids_are_distinct_conversations_that_share_nothing(&backend, &dump).await;
}
