//! A fresh PostgreSQL database per test, dropped afterwards.
//!
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) names the server;
//! an unreachable server fails the test loudly.

use std::time::Duration;

use lobu_core::Backend;
use lobu_store_pg::PgStore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::{Semaphore, SemaphorePermit};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// PostgreSQL tests at once in this process: each uses up to a few pools, and the server
/// (shared with other test binaries) allows 100 connections.
static SLOTS: Semaphore = Semaphore::const_new(3);

/// Connections per pool: a runtime's worker concurrency plus heartbeats and reads.
const POOL_SIZE: u32 = 6;

#[derive(Debug)]
pub struct PgDatabase {
    admin: PgConnectOptions,
    options: PgConnectOptions,
    name: String,
    _slot: SemaphorePermit<'static>,
}

fn admin_options() -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    url.parse()
        .unwrap_or_else(|e| panic!("DATABASE_URL {url:?} is not a PostgreSQL URL: {e}"))
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        let slot = SLOTS.acquire().await.expect("semaphore");
        let admin = admin_options();
        let mut conn = PgConnection::connect_with(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is required for these tests and is unreachable (DATABASE_URL): {e}"
                )
            });
        let name = format!("lobu_runtime_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let options = admin.clone().database(&name);
        PgDatabase {
            admin,
            options,
            name,
            _slot: slot,
        }
    }

    /// A new store (own pool) on the database, migrated.
    pub async fn backend(&self) -> Backend {
        connect(self.options.clone()).await
    }

    /// The database's name (a child process opens it with [`backend_named`]).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A store on the test database `name` of the `DATABASE_URL` server.
pub async fn backend_named(name: &str) -> Backend {
    connect(admin_options().database(name)).await
}

async fn connect(options: PgConnectOptions) -> Backend {
    let pool = PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(options.disable_statement_logging())
        .await
        .expect("connect to the test database");
    let store = PgStore::new(pool);
    store.migrate().await.expect("migrate");
    store.into_backend()
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime; clean up on a thread with its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect_with(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = cleanup.join();
    }
}
