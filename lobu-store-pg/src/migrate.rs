//! Embedded migrations in lobu's own schema, safe when many replicas start at once.

use std::sync::LazyLock;

use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection};

use crate::config::DEFAULT_SCHEMA;
use crate::error::PgStoreError;
use crate::store::PgStore;

/// The embedded migrations for the default schema `lobu`, tracked in
/// `lobu._sqlx_migrations` (never the host application's `_sqlx_migrations`).
///
/// Pass it to `#[sqlx::test(migrator = "lobu_store_pg::MIGRATOR")]` for a fresh, migrated
/// database per test. Applications call [`PgStore::migrate`] instead, which also serves
/// configured schemas and bounds the wait for the migration lock.
///
/// Built with sqlx's public `Migrator` API on first use (a `static` initialiser cannot call
/// it); it dereferences to a [`Migrator`].
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| migrator_for(DEFAULT_SCHEMA));

impl PgStore {
    /// Create or upgrade lobu's tables in the configured schema. Call it at start-up in every
    /// replica: sqlx serialises concurrent runs with an advisory lock, so one replica applies
    /// the migrations and the others wait and find nothing left to do.
    ///
    /// It runs on a connection of its own, opened from
    /// [`PgStoreConfig::direct_connect_options`](crate::PgStoreConfig::direct_connect_options)
    /// (or the pool's options) and closed afterwards, because the lock is session-level and
    /// must not travel back into the pool or through a transaction-mode pooler. Waits for that
    /// lock, or for table locks held by long transactions, end after
    /// [`migrate_lock_timeout`](crate::PgStoreConfig::migrate_lock_timeout) with `Busy`.
    pub async fn migrate(&self) -> lobu_core::Result<()> {
        let schema = self.inner.config.schema.as_str();
        let wrap = |source| PgStoreError::Migrate {
            schema: schema.to_owned(),
            source,
        };
        let mut conn = PgConnection::connect_with(&self.direct_options())
            .await
            .map_err(|e| wrap(e.into()))?;
        let lock_timeout = format!("{}ms", self.inner.config.migrate_lock_timeout.as_millis());
        // Session settings are fine here: this connection is private and closed below.
        // `lobu.schema` tells the migration files which schema to create their objects in.
        let settings = sqlx::query(
            "SELECT set_config('lock_timeout', $1, false), set_config('lobu.schema', $2, false)",
        )
        .bind(lock_timeout)
        .bind(schema)
        .execute(&mut conn)
        .await;
        let result = match settings {
            Ok(_) if schema == DEFAULT_SCHEMA => MIGRATOR.run(&mut conn).await,
            Ok(_) => migrator_for(schema).run(&mut conn).await,
            Err(e) => Err(e.into()),
        };
        // Closing also drops the advisory lock if a failed run returned while holding it.
        if let Err(e) = conn.close().await {
            tracing::debug!(error = %e, "closing the migration connection failed");
        }
        result.map_err(wrap)?;
        Ok(())
    }
}

/// The embedded migrations, tracked in `<schema>._sqlx_migrations`. The files themselves
/// create their objects in the schema named by the `lobu.schema` setting (default `lobu`).
fn migrator_for(schema: &str) -> Migrator {
    let embedded = sqlx::migrate!("./migrations");
    let mut migrator = Migrator::with_migrations(embedded.iter().cloned().collect());
    migrator.dangerous_set_table_name(format!("{schema}._sqlx_migrations"));
    migrator.create_schema(schema.to_owned());
    migrator
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::borrow::Cow;

    #[test]
    fn the_static_migrator_tracks_itself_in_the_lobu_schema() {
        assert_eq!(MIGRATOR.table_name, "lobu._sqlx_migrations");
        assert_eq!(&*MIGRATOR.create_schemas, &[Cow::Borrowed("lobu")]);
        assert!(MIGRATOR.iter().count() >= 1);
        assert!(MIGRATOR.locking, "replicas must serialise on sqlx's lock");
    }

    #[test]
    fn a_configured_schema_gets_its_own_tracking_table_and_the_same_migrations() {
        let m = migrator_for("tenant_eu");
        assert_eq!(m.table_name, "tenant_eu._sqlx_migrations");
        assert_eq!(&*m.create_schemas, &[Cow::Borrowed("tenant_eu")]);
        let ours: Vec<_> = m.iter().map(|x| (x.version, x.checksum.clone())).collect();
        let theirs: Vec<_> = MIGRATOR
            .iter()
            .map(|x| (x.version, x.checksum.clone()))
            .collect();
        assert_eq!(ours, theirs);
    }
}
