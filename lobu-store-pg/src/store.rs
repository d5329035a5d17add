//! [`PgStore`]: one value implementing all three lobu-core traits on one pool.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};
use time::OffsetDateTime;

use crate::commit_fast::HeadStates;
use crate::config::PgStoreConfig;
use crate::erase::EraseSql;
use crate::error::PgStoreError;
use crate::events::EventSql;
use crate::locks::LockSql;
use crate::multitask::MultitaskSql;
use crate::portable::PortableSql;
use crate::prune::PruneSql;
use crate::queue::{QueueSql, Reaper};
use crate::retention::RetentionSql;
use crate::runs::RunsSql;
use crate::sessions::SessionSql;
use crate::wakeup::Wakeup;

/// lobu's PostgreSQL backend: [`SessionStore`](lobu_core::SessionStore),
/// [`ConversationLocks`](lobu_core::ConversationLocks) and [`RunQueue`](lobu_core::RunQueue)
/// on one [`PgPool`]. Cheap to clone (clones share the pool and the wake-up listener).
///
/// Build it with [`PgStore::new`] (schema `lobu`) or [`PgStore::with_config`], run
/// [`PgStore::migrate`] once per process at start-up, and hand it to the runtime with
/// [`lobu_core::Backend::from_shared`].
#[derive(Debug, Clone)]
pub struct PgStore {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    pub(crate) config: PgStoreConfig,
    pub(crate) sessions: SessionSql,
    pub(crate) erase: EraseSql,
    pub(crate) locks: LockSql,
    pub(crate) prune: PruneSql,
    pub(crate) queue: QueueSql,
    pub(crate) retention: RetentionSql,
    pub(crate) multitask: MultitaskSql,
    pub(crate) events: EventSql,
    pub(crate) portable: PortableSql,
    pub(crate) runs: RunsSql,
    pub(crate) reaper: Reaper,
    pub(crate) wakeup: Wakeup,
    pub(crate) head_states: HeadStates,
}

impl PgStore {
    /// A store on `pool` with the default configuration (schema `lobu`).
    pub fn new(pool: PgPool) -> Self {
        Self::build(pool, PgStoreConfig::default())
    }

    /// A store on `pool` with `config`; an invalid configuration (a schema name that is not
    /// a plain lower-case identifier, a limit out of range) is `InvalidInput`.
    pub fn with_config(pool: PgPool, config: PgStoreConfig) -> lobu_core::Result<Self> {
        config.validate()?;
        Ok(Self::build(pool, config))
    }

    fn build(pool: PgPool, config: PgStoreConfig) -> Self {
        let schema = config.schema.as_str();
        PgStore {
            inner: Arc::new(Inner {
                sessions: SessionSql::new(schema),
                erase: EraseSql::new(schema),
                locks: LockSql::new(schema),
                prune: PruneSql::new(schema),
                queue: QueueSql::new(schema),
                retention: RetentionSql::new(schema),
                multitask: MultitaskSql::new(schema),
                events: EventSql::new(schema),
                portable: PortableSql::new(schema),
                runs: RunsSql::new(schema),
                reaper: Reaper::new(),
                wakeup: Wakeup::new(format!("{schema}_runs")),
                head_states: HeadStates::default(),
                pool,
                config,
            }),
        }
    }

    /// Bundle this store as the three trait objects a runtime takes (one value behind all
    /// three, so the fences the locks issue are the ones persist checks).
    pub fn into_backend(self) -> lobu_core::Backend {
        lobu_core::Backend::from_shared(Arc::new(self))
    }

    /// The pool the store runs on.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The store's configuration.
    pub fn config(&self) -> &PgStoreConfig {
        &self.inner.config
    }

    /// Options for the session-bound connections (migrations, `LISTEN`).
    pub(crate) fn direct_options(&self) -> PgConnectOptions {
        match &self.inner.config.direct {
            Some(options) => options.clone(),
            None => (*self.inner.pool.connect_options()).clone(),
        }
    }
}

/// A statement for `schema`: templates name lobu's objects `{s}.table`. The schema was
/// validated as a plain identifier, so splicing it cannot inject anything. `{lane_left}`
/// becomes sql/lane_left.sql, the lane update of every statement that ends runs (they name
/// those runs `ended_runs`), filled in here so no such statement can be built without it.
pub(crate) fn sql(template: &str, schema: &str) -> SqlStr {
    let text = template
        .replace("{lane_left}", include_str!("sql/lane_left.sql").trim_end())
        .replace("{s}", schema);
    AssertSqlSafe(Arc::<str>::from(text)).into_sql_str()
}

/// A duration as whole microseconds for `n * interval '1 microsecond'` (callers pass
/// durations already checked against lobu's 24 h limits, so this never saturates in practice).
pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

pub(crate) fn system_time(t: OffsetDateTime) -> SystemTime {
    SystemTime::from(t)
}

/// A caller's instant for PostgreSQL, clamped to years 1..=9999 (`time`'s own conversion
/// panics outside its range, and no cutoff outside it can mean anything different).
pub(crate) fn offset_date_time(t: SystemTime) -> OffsetDateTime {
    const MIN: OffsetDateTime = time::macros::datetime!(0001-01-01 0:00 UTC);
    const MAX: OffsetDateTime = time::macros::datetime!(9999-12-31 23:59:59 UTC);
    let shifted = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => time::Duration::try_from(after)
            .ok()
            .and_then(|d| OffsetDateTime::UNIX_EPOCH.checked_add(d)),
        Err(before) => time::Duration::try_from(before.duration())
            .ok()
            .and_then(|d| OffsetDateTime::UNIX_EPOCH.checked_sub(d)),
    };
    shifted.map_or(if t < SystemTime::UNIX_EPOCH { MIN } else { MAX }, |at| {
        at.clamp(MIN, MAX)
    })
}

/// Map a driver error into lobu's error with what the store was doing.
pub(crate) fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> lobu_core::Error {
    move |source| PgStoreError::Database { op, source }.into()
}
