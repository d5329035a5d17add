//! [`PgStoreConfig`]: the schema, limits and timings of a [`PgStore`](crate::PgStore).

use std::time::Duration;

use lobu_core::DEFAULT_MAX_TRANSCRIPT_BYTES;
use sqlx::postgres::PgConnectOptions;

use crate::error::PgStoreError;

/// The default schema.
pub const DEFAULT_SCHEMA: &str = "lobu";

/// The largest transcript a store can be configured to accept. PostgreSQL caps one `bytea`
/// value at 1 GiB; a quarter of that keeps hydrate's aggregate and the client's copy sane.
pub const MAX_TRANSCRIPT_BYTES_LIMIT: usize = 256 * 1024 * 1024;

/// The longest schema name (NOTIFY channels add `_runs` and must fit in 63 bytes).
const MAX_SCHEMA_BYTES: usize = 48;

/// Settings of a [`PgStore`](crate::PgStore); every field has a sensible default.
///
/// ```
/// use std::time::Duration;
/// use lobu_store_pg::PgStoreConfig;
///
/// let config = PgStoreConfig::default()
///     .schema("agents_eu")
///     .max_transcript_bytes(16 * 1024 * 1024)
///     .poll_interval(Duration::from_millis(500));
/// assert_eq!(config.schema_name(), "agents_eu");
/// ```
///
/// It also deserializes from a host's configuration (every field optional, durations in human
/// form, `direct_url` a PostgreSQL URL; checked by [`PgStore::with_config`](crate::PgStore::with_config)):
///
/// ```
/// let config: lobu_store_pg::PgStoreConfig = serde_json::from_str(
///     r#"{ "schema": "agents_eu", "poll_interval": "500ms", "direct_url": "postgres://db:5432/app" }"#,
/// ).unwrap();
/// assert_eq!(config.schema_name(), "agents_eu");
/// ```
#[derive(Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PgStoreConfig {
    pub(crate) schema: String,
    pub(crate) max_transcript_bytes: usize,
    pub(crate) max_chain_deltas: u32,
    #[serde(with = "humantime_serde")]
    pub(crate) poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub(crate) migrate_lock_timeout: Duration,
    #[serde(rename = "direct_url", deserialize_with = "connect_options")]
    pub(crate) direct: Option<PgConnectOptions>,
}

/// A PostgreSQL URL, parsed as sqlx parses it.
fn connect_options<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<PgConnectOptions>, D::Error> {
    use serde::Deserialize;
    let url = Option::<String>::deserialize(deserializer)?;
    let bad = || serde::de::Error::custom("direct_url is not a PostgreSQL URL");
    url.map(|url| {
        // sqlx parses any scheme; a mysql:// URL here is a mistake to say at once.
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad());
        }
        // sqlx's message may quote the URL, password included: name the field only.
        url.parse::<PgConnectOptions>().map_err(|_| bad())
    })
    .transpose()
}

impl std::fmt::Debug for PgStoreConfig {
    // sqlx's connect options print their password: show where the direct connection goes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let direct = self.direct.as_ref().map(|o| {
            format!(
                "{}:{}/{}",
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or("")
            )
        });
        f.debug_struct("PgStoreConfig")
            .field("schema", &self.schema)
            .field("max_transcript_bytes", &self.max_transcript_bytes)
            .field("max_chain_deltas", &self.max_chain_deltas)
            .field("poll_interval", &self.poll_interval)
            .field("migrate_lock_timeout", &self.migrate_lock_timeout)
            .field("direct", &direct)
            .finish()
    }
}

impl Default for PgStoreConfig {
    fn default() -> Self {
        PgStoreConfig {
            schema: DEFAULT_SCHEMA.to_owned(),
            max_transcript_bytes: DEFAULT_MAX_TRANSCRIPT_BYTES,
            max_chain_deltas: 32,
            poll_interval: Duration::from_secs(1),
            migrate_lock_timeout: Duration::from_secs(60),
            direct: None,
        }
    }
}

impl PgStoreConfig {
    /// The schema holding lobu's tables and its migration tracking table (default `lobu`):
    /// 1 to 48 characters of `[a-z0-9_]`, starting with a letter or `_`, not `public` and not
    /// `pg_*` (checked by [`PgStore::with_config`](crate::PgStore::with_config)).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The transcript size limit `persist` enforces (default 8 MiB, at most 256 MiB).
    pub fn max_transcript_bytes(mut self, bytes: usize) -> Self {
        self.max_transcript_bytes = bytes;
        self
    }

    /// How many deltas may follow a whole copy before persist writes a new whole copy
    /// (default 32, `1..=1000`), unless the deltas are still under an eighth of the copy's
    /// size (a long conversation re-bases only when that is worth its cost). A new whole copy
    /// is also written when the deltas would outgrow the copy they extend.
    pub fn max_chain_deltas(mut self, deltas: u32) -> Self {
        self.max_chain_deltas = deltas;
        self
    }

    /// The longest [`wait_for_work`](lobu_core::RunQueue::wait_for_work) sleeps without a
    /// notification (default 1 s, `10ms..=1h`): the polling fallback that delivers work when
    /// `LISTEN` is unavailable (a transaction-mode pooler) or a notification was missed.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How long [`migrate`](crate::PgStore::migrate) waits for the migration lock or for a
    /// table lock before failing with `Busy` (default 60 s, `1ms..=1h`).
    pub fn migrate_lock_timeout(mut self, timeout: Duration) -> Self {
        self.migrate_lock_timeout = timeout;
        self
    }

    /// Where to open the two session-bound connections lobu needs: the one `migrate` runs on
    /// (it holds sqlx's session advisory lock) and the `LISTEN` connection of the wake-up.
    /// Set this to a direct PostgreSQL address when the pool goes through a transaction-mode
    /// pooler; by default both use the pool's own connect options.
    pub fn direct_connect_options(mut self, options: PgConnectOptions) -> Self {
        self.direct = Some(options);
        self
    }

    /// The configured schema name.
    pub fn schema_name(&self) -> &str {
        &self.schema
    }

    pub(crate) fn validate(&self) -> Result<(), PgStoreError> {
        check_schema(&self.schema)?;
        if self.max_transcript_bytes == 0 || self.max_transcript_bytes > MAX_TRANSCRIPT_BYTES_LIMIT
        {
            return Err(PgStoreError::InvalidConfig(format!(
                "max_transcript_bytes must be between 1 and {MAX_TRANSCRIPT_BYTES_LIMIT}, got {}",
                self.max_transcript_bytes
            )));
        }
        if !(1..=1000).contains(&self.max_chain_deltas) {
            return Err(PgStoreError::InvalidConfig(format!(
                "max_chain_deltas must be between 1 and 1000, got {}",
                self.max_chain_deltas
            )));
        }
        let hour = Duration::from_secs(3600);
        if self.poll_interval < Duration::from_millis(10) || self.poll_interval > hour {
            return Err(PgStoreError::InvalidConfig(format!(
                "poll_interval must be between 10ms and 1h, got {:?}",
                self.poll_interval
            )));
        }
        if self.migrate_lock_timeout < Duration::from_millis(1) || self.migrate_lock_timeout > hour
        {
            return Err(PgStoreError::InvalidConfig(format!(
                "migrate_lock_timeout must be between 1ms and 1h, got {:?}",
                self.migrate_lock_timeout
            )));
        }
        Ok(())
    }
}

/// Schema names are spliced into SQL text (identifiers cannot be bind parameters), so only a
/// plain lower-case identifier that needs no quoting is accepted.
fn check_schema(schema: &str) -> Result<(), PgStoreError> {
    let bad = |why: &str| {
        Err(PgStoreError::InvalidConfig(format!(
            "schema {schema:?} {why}"
        )))
    };
    let Some(first) = schema.bytes().next() else {
        return bad("must not be empty");
    };
    if schema.len() > MAX_SCHEMA_BYTES {
        return bad("is longer than 48 bytes");
    }
    if !(first.is_ascii_lowercase() || first == b'_') {
        return bad("must start with a lower-case letter or `_`");
    }
    if !schema
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return bad("may only contain [a-z0-9_]");
    }
    if schema == "public" || schema.starts_with("pg_") || schema == "information_schema" {
        return bad("is reserved: lobu needs a schema of its own");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        PgStoreConfig::default().validate().unwrap();
    }

    #[test]
    fn schema_names_that_would_need_quoting_are_refused() {
        for bad in [
            "",
            "Lobu",
            "1lobu",
            "lo bu",
            "lo-bu",
            "lo\"bu",
            "lobu;drop",
            "public",
            "pg_lobu",
            "información",
        ] {
            let err = PgStoreConfig::default().schema(bad).validate().unwrap_err();
            assert!(matches!(err, PgStoreError::InvalidConfig(_)), "{bad:?}");
        }
        assert!(
            PgStoreConfig::default()
                .schema("x".repeat(49))
                .validate()
                .is_err()
        );
        for good in ["lobu", "_lobu", "tenant_2", &"x".repeat(48)] {
            PgStoreConfig::default().schema(good).validate().unwrap();
        }
    }

    #[test]
    fn out_of_range_limits_are_refused() {
        let base = PgStoreConfig::default;
        assert!(base().max_transcript_bytes(0).validate().is_err());
        assert!(
            base()
                .max_transcript_bytes(MAX_TRANSCRIPT_BYTES_LIMIT + 1)
                .validate()
                .is_err()
        );
        assert!(base().max_chain_deltas(0).validate().is_err());
        assert!(base().max_chain_deltas(1001).validate().is_err());
        assert!(
            base()
                .poll_interval(Duration::from_millis(1))
                .validate()
                .is_err()
        );
        assert!(
            base()
                .migrate_lock_timeout(Duration::ZERO)
                .validate()
                .is_err()
        );
        base()
            .max_transcript_bytes(MAX_TRANSCRIPT_BYTES_LIMIT)
            .max_chain_deltas(1000)
            .validate()
            .unwrap();
    }

    #[test]
    fn deserialized_configs_take_defaults_and_refuse_unknown_fields_and_bad_urls() {
        let config: PgStoreConfig =
            serde_json::from_str(r#"{ "migrate_lock_timeout": "2s" }"#).unwrap();
        assert_eq!(config.migrate_lock_timeout, Duration::from_secs(2));
        assert_eq!(config.schema, DEFAULT_SCHEMA);
        assert!(config.direct.is_none());
        let error = serde_json::from_str::<PgStoreConfig>(r#"{ "shema": "x" }"#).unwrap_err();
        assert!(
            error.to_string().contains("unknown field `shema`"),
            "{error}"
        );
        let error =
            serde_json::from_str::<PgStoreConfig>(r#"{ "direct_url": "mysql://u:hunter2@h/db" }"#)
                .unwrap_err()
                .to_string();
        assert!(
            error.contains("direct_url is not a PostgreSQL URL"),
            "{error}"
        );
        assert!(!error.contains("hunter2"), "{error}");
        let config: PgStoreConfig =
            serde_json::from_str(r#"{ "direct_url": "postgres://u:hunter2@db:5433/app" }"#)
                .unwrap();
        let shown = format!("{config:?}");
        assert!(
            shown.contains("db:5433/app") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
