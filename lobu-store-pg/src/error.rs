//! [`PgStoreError`]: what went wrong in PostgreSQL, and the [`ErrorKind`] callers branch on.

use lobu_core::ErrorKind;
use sqlx::migrate::MigrateError;

/// An error of this crate. It converts into [`lobu_core::Error`] with a kind chosen from the
/// database's SQLSTATE or the driver's error, and is kept as that error's source (so callers
/// can downcast to it, and from it to the [`sqlx::Error`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgStoreError {
    /// A statement or connection failed while doing `op`.
    #[error("{op}: {source}")]
    Database {
        /// What the store was doing, e.g. `"persist: lock conversation"`.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Running the embedded migrations failed.
    #[error("migrating schema {schema:?}: {source}")]
    Migrate {
        /// The schema being migrated.
        schema: String,
        /// sqlx's migration error.
        #[source]
        source: MigrateError,
    },
    /// A [`PgStoreConfig`](crate::PgStoreConfig) value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Rows read back contradict each other (a broken delta chain, an impossible value).
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// A value read back no longer parses as what was written (an id, a run kind or
    /// status): it was validated on the way in, so storage changed behind the store's back.
    #[error("stored {what} no longer parses: {source}")]
    Unparsable {
        /// What the value is, e.g. `"run id"`.
        what: &'static str,
        /// Why it does not parse.
        #[source]
        source: lobu_core::Error,
    },
}

impl PgStoreError {
    /// The kind a caller should branch on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PgStoreError::Database { source, .. } => sqlx_kind(source),
            PgStoreError::Migrate { source, .. } => match source {
                MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => sqlx_kind(e),
                _ => ErrorKind::Other,
            },
            PgStoreError::InvalidConfig(_) => ErrorKind::InvalidInput,
            PgStoreError::Corrupt(_) | PgStoreError::Unparsable { .. } => ErrorKind::Corrupt,
        }
    }

    /// The SQLSTATE of the database error behind this one, if any.
    pub fn sqlstate(&self) -> Option<String> {
        let source = match self {
            PgStoreError::Database { source, .. } => source,
            PgStoreError::Migrate {
                source: MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _),
                ..
            } => e,
            _ => return None,
        };
        source
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned())
    }
}

impl From<PgStoreError> for lobu_core::Error {
    fn from(e: PgStoreError) -> Self {
        let mut message = e.to_string();
        if matches!(e.sqlstate().as_deref(), Some("42P01" | "3F000")) {
            message.push_str(" (has PgStore::migrate() run against this database and schema?)");
        }
        lobu_core::Error::new(e.kind(), message).with_source(e)
    }
}

/// A value read back from a row, parsed again: if it no longer parses, storage is broken
/// (`Corrupt`), not the caller's input; the parse error is kept as the source.
pub(crate) fn stored<T>(what: &'static str, parsed: lobu_core::Result<T>) -> lobu_core::Result<T> {
    parsed.map_err(|source| PgStoreError::Unparsable { what, source }.into())
}

/// The kind of a driver error: lost connections and exhausted pools are `Unavailable` (retry
/// later), unique violations `Conflict`, lock timeouts `Busy`, undecodable rows `Corrupt`.
fn sqlx_kind(e: &sqlx::Error) -> ErrorKind {
    use sqlx::Error as E;
    match e {
        E::Io(_)
        | E::Tls(_)
        | E::Protocol(_)
        | E::PoolTimedOut
        | E::PoolClosed
        | E::WorkerCrashed
        | E::BeginFailed => ErrorKind::Unavailable,
        E::Database(db) => db
            .code()
            .map_or(ErrorKind::Other, |code| sqlstate_kind(&code)),
        E::RowNotFound => ErrorKind::NotFound,
        E::ColumnDecode { .. }
        | E::Decode(_)
        | E::ColumnNotFound(_)
        | E::ColumnIndexOutOfBounds { .. }
        | E::TypeNotFound { .. } => ErrorKind::Corrupt,
        E::Encode(_) | E::InvalidArgument(_) => ErrorKind::InvalidInput,
        E::Migrate(m) => match &**m {
            MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => sqlx_kind(e),
            _ => ErrorKind::Other,
        },
        _ => ErrorKind::Other,
    }
}

/// <https://www.postgresql.org/docs/current/errcodes-appendix.html>
fn sqlstate_kind(code: &str) -> ErrorKind {
    match code {
        // unique_violation, exclusion_violation, foreign_key_violation
        "23505" | "23P01" | "23503" => ErrorKind::Conflict,
        // serialization_failure, deadlock_detected: re-read and decide again
        "40001" | "40P01" => ErrorKind::Conflict,
        // lock_not_available (lock_timeout, NOWAIT)
        "55P03" => ErrorKind::Busy,
        // query_canceled (statement_timeout), admin/crash shutdown, cannot_connect_now,
        // read_only_sql_transaction (a failover left us on a standby), database_dropped and
        // invalid_catalog_name (the database is gone or not there yet: an outage to the
        // caller, not a bug in its request)
        "57014" | "57P01" | "57P02" | "57P03" | "57P04" | "25006" | "3D000" => {
            ErrorKind::Unavailable
        }
        // program_limit_exceeded and friends: a value too large for PostgreSQL
        "54000" | "54001" => ErrorKind::TooLarge,
        _ => match &code[..2.min(code.len())] {
            // connection_exception, insufficient_resources (too many connections, disk full)
            "08" | "53" => ErrorKind::Unavailable,
            // data_exception (e.g. `\u0000` in JSON): a value the caller passed
            "22" => ErrorKind::InvalidInput,
            // the other integrity violations (check_violation, not_null_violation) come from
            // our own schema's invariants: callers' input is checked before any write, so
            // one of these is a bug in this store, not a mistake of the caller
            "23" => ErrorKind::Other,
            _ => ErrorKind::Other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn sqlstates_map_to_the_kinds_callers_branch_on() {
        assert_eq!(sqlstate_kind("23505"), ErrorKind::Conflict);
        assert_eq!(sqlstate_kind("3D000"), ErrorKind::Unavailable);
        assert_eq!(sqlstate_kind("57P04"), ErrorKind::Unavailable);
        assert_eq!(sqlstate_kind("40001"), ErrorKind::Conflict);
        assert_eq!(sqlstate_kind("55P03"), ErrorKind::Busy);
        assert_eq!(sqlstate_kind("57P01"), ErrorKind::Unavailable);
        assert_eq!(sqlstate_kind("08006"), ErrorKind::Unavailable);
        assert_eq!(sqlstate_kind("53300"), ErrorKind::Unavailable);
        assert_eq!(sqlstate_kind("22P05"), ErrorKind::InvalidInput);
        assert_eq!(sqlstate_kind("22023"), ErrorKind::InvalidInput);
        assert_eq!(sqlstate_kind("23514"), ErrorKind::Other);
        assert_eq!(sqlstate_kind("23502"), ErrorKind::Other);
        assert_eq!(sqlstate_kind("54000"), ErrorKind::TooLarge);
        assert_eq!(sqlstate_kind("42601"), ErrorKind::Other);
        assert_eq!(sqlstate_kind(""), ErrorKind::Other);
    }

    #[test]
    fn driver_errors_keep_their_source_through_lobu_error() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let e: lobu_core::Error = PgStoreError::Database {
            op: "hydrate",
            source: sqlx::Error::Io(io),
        }
        .into();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        let ours = e.source().unwrap().downcast_ref::<PgStoreError>().unwrap();
        let PgStoreError::Database { op, source } = ours else {
            panic!("not a database error: {ours:?}");
        };
        assert_eq!(*op, "hydrate");
        assert!(matches!(source, sqlx::Error::Io(_)));
        assert_eq!(
            lobu_core::Error::from(PgStoreError::Database {
                op: "claim",
                source: sqlx::Error::PoolTimedOut
            })
            .kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            lobu_core::Error::from(PgStoreError::Corrupt("gap".into())).kind(),
            ErrorKind::Corrupt
        );
    }
}
