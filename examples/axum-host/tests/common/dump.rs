//! The store's bytes behind a test server: every file under its temporary directory, or
//! every row of the store's tables (the same dump as lobu-store-pg's hostile tests).

use lobu_core::testkit::hostile::{FilesUnder, StoreBytes, StoreDump};
use sqlx::postgres::PgPoolOptions;

use super::{Data, TestHost};

#[path = "../../../../lobu-store-pg/tests/support/dump.rs"]
mod pg_rows;

/// Everything the store behind `data` keeps, now. For files, the whole temporary directory
/// (the data directory is inside it), so a write that escaped the data directory shows too.
pub async fn store_bytes(data: &Data) -> StoreBytes {
    match data {
        Data::File(dir) => FilesUnder(dir.path().to_owned()).dump().await,
        Data::Pg(db) => {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(&db.url)
                .await
                .expect("connect to the test database");
            let rows = pg_rows::PgRows::new(pool.clone()).dump().await;
            pool.close().await;
            rows
        }
    }
}

/// The store's bytes once the server is idle: it answers, and two dumps a worker poll
/// interval apart agree. (A worker's first claim creates the file queue's lock file; after
/// that an idle server writes nothing.)
pub async fn settled_store_bytes(t: &TestHost) -> StoreBytes {
    let ready = t.api().get("/health/ready").await;
    assert_eq!(ready.status, reqwest::StatusCode::OK, "{ready:?}");
    // The test configuration keeps the runtime's default poll interval.
    let interval = lobu_runtime::Settings::default().poll_interval;
    let mut last = store_bytes(&t.data).await;
    for _ in 0..20 {
        tokio::time::sleep(interval).await;
        let now = store_bytes(&t.data).await;
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the store kept changing while the server was idle");
}

/// The part of `bytes` that belongs to `org`: its files (`lobu-data/orgs/<org>/…`) or the
/// rows naming it.
pub fn of_org(bytes: &StoreBytes, org: &str) -> StoreBytes {
    let dir = format!("lobu-data/orgs/{org}/");
    let column = format!("\"org\": \"{org}\"");
    bytes
        .iter()
        .filter(|(name, _)| name.starts_with(&dir) || name.contains(&column))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}
