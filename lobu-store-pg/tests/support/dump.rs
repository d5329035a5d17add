//! Every row of the store's tables, for comparing the database before and after a call.
//!
//! Shared (by `#[path]`) with the example host's tests, which compare the same rows around
//! HTTP requests.

use async_trait::async_trait;
use lobu_core::testkit::hostile::{StoreBytes, StoreDump};
use sqlx::PgPool;

/// The rows of every table in the store's schema (the migrations' bookkeeping aside), each
/// as its JSON text and keyed by `table: row`, so the whole dump is ordered deterministically
/// and a changed row shows as one removed and one added.
#[derive(Debug, Clone)]
pub(crate) struct PgRows {
    pub(crate) pool: PgPool,
    pub(crate) schema: String,
}

impl PgRows {
    /// The rows of the default schema, `lobu`.
    pub(crate) fn new(pool: PgPool) -> Self {
        PgRows {
            pool,
            schema: "lobu".to_owned(),
        }
    }
}

#[async_trait]
impl StoreDump for PgRows {
    async fn dump(&self) -> StoreBytes {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = $1 AND table_type = 'BASE TABLE' \
               AND table_name NOT LIKE '\\_sqlx%' ORDER BY 1",
        )
        .bind(&self.schema)
        .fetch_all(&self.pool)
        .await
        .expect("list the store's tables");
        assert!(!tables.is_empty(), "no tables in schema {}", self.schema);
        let mut rows = StoreBytes::new();
        for table in tables {
            let sql = format!(
                "SELECT to_jsonb(t)::text FROM \"{}\".\"{table}\" t",
                self.schema
            );
            let found: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_all(&self.pool)
                .await
                .unwrap_or_else(|e| panic!("reading {table}: {e}"));
            for row in found {
                rows.insert(format!("{table}: {row}"), Vec::new());
            }
        }
        rows
    }
}
