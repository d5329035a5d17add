//! Hostile input against PostgreSQL: each refused call is a typed error and every row of
//! the store's tables is what it was; hostile bytes are kept exactly; confusable ids never
//! share a row. Each test on a fresh database.

#[path = "support/dump.rs"]
mod dump;

use dump::PgRows;
use lobu_core::testkit::Capabilities;
use lobu_core::testkit::hostile;
use lobu_store_pg::PgStore;
use sqlx::PgPool;

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn hostile_transcripts_are_refused_whole_or_kept_byte_for_byte(pool: PgPool) {
    let backend = PgStore::new(pool.clone()).into_backend();
    hostile::hostile_transcripts_are_refused_whole_or_kept_byte_for_byte(
        &backend,
        &PgRows::new(pool),
        &Capabilities::default(),
    )
    .await;
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn stale_future_and_foreign_versions_and_fences_change_nothing(pool: PgPool) {
    let backend = PgStore::new(pool.clone()).into_backend();
    hostile::stale_future_and_foreign_versions_and_fences_change_nothing(
        &backend,
        &PgRows::new(pool),
    )
    .await;
}

#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
async fn confusable_ids_are_distinct_conversations_that_share_nothing(pool: PgPool) {
    let backend = PgStore::new(pool.clone()).into_backend();
    hostile::confusable_ids_are_distinct_conversations_that_share_nothing(
        &backend,
        &PgRows::new(pool),
    )
    .await;
}
