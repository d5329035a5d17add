//! The whole lobu conformance suite on [`FileStore`], each clause on a store of its own in a
//! fresh temporary directory: once with syncing on, as in production, and once with it off
//! (the same logic without the durability calls, so a failure points at one or the other).

use lobu_core::testkit::TestBackend;
use lobu_store_file::FileStore;

async fn store_in_temporary_directory(fsync: bool) -> TestBackend {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = FileStore::open(dir.path()).await.expect("open the store");
    TestBackend::new(store.with_fsync(fsync).into_backend()).with_guard(dir)
}

lobu_core::conformance_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    || store_in_temporary_directory(true)
);

mod without_fsync {
    lobu_core::conformance_tests!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        || super::store_in_temporary_directory(false)
    );
}
