//! The whole lobu conformance suite on [`FileStore`], each clause on a store of its own in a
//! fresh temporary directory, with syncing on as in production.

use lobu_core::testkit::TestBackend;
use lobu_store_file::FileStore;

lobu_core::conformance_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    || async {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = FileStore::open(dir.path()).await.expect("open the store");
        TestBackend::new(store.into_backend()).with_guard(dir)
    }
);
