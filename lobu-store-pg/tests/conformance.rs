//! The lobu conformance suite (`lobu_core::testkit`) against a real PostgreSQL: one test per
//! clause, each on a fresh database migrated with [`lobu_store_pg::MIGRATOR`].
//!
//! Needs `DATABASE_URL`, e.g. `postgres://postgres@127.0.0.1:5432/postgres`; without a
//! reachable server every test fails (none is skipped).

use lobu_store_pg::PgStore;
use sqlx::PgPool;

lobu_core::conformance_tests!(
    #[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]
    |pool: PgPool| async move { PgStore::new(pool).into_backend() }
);
