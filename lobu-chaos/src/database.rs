//! The fresh PostgreSQL database of one chaos run, created on the server at `DATABASE_URL`
//! and dropped at the end.

use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};

/// The server used when `DATABASE_URL` is not set.
pub(crate) const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for this run.
#[derive(Debug)]
pub(crate) struct ChaosDb {
    pub(crate) name: String,
    /// Its URL, straight to the server.
    pub(crate) url: String,
    admin_url: String,
}

impl ChaosDb {
    pub(crate) async fn create(seed: u64) -> Result<ChaosDb, String> {
        let admin_url = std::env::var("DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        let name = format!("lobu_chaos_{seed}_{}", std::process::id());
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .map_err(|e| format!("PostgreSQL is unreachable at DATABASE_URL ({e})"))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        conn.close().await.ok();
        Ok(ChaosDb {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        })
    }

    /// A small read-only pool on the database (for the checks; never through the proxy).
    pub(crate) async fn pool(&self) -> Result<PgPool, String> {
        PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await
            .map_err(|e| format!("connecting to {}: {e}", self.name))
    }

    pub(crate) async fn drop_database(self) -> Result<(), String> {
        let mut conn = PgConnection::connect(&self.admin_url)
            .await
            .map_err(|e| format!("connecting to drop {}: {e}", self.name))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("DROP DATABASE {}: {e}", self.name))?;
        conn.close().await.ok();
        Ok(())
    }
}

/// `url` with its database (the path) replaced by `name`, its query kept.
pub(crate) fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// `url` pointed at `127.0.0.1:port` instead of its host (the fault proxy), without TLS so
/// the proxy can follow the protocol.
pub(crate) fn via_proxy(url: &str, port: u16) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let user = authority
        .rsplit_once('@')
        .map_or(String::new(), |(user, _)| format!("{user}@"));
    let separator = if tail.contains('?') { '&' } else { '?' };
    format!(
        "{}{user}127.0.0.1:{port}{tail}{separator}sslmode=disable",
        &url[..scheme_end]
    )
}

/// The `host:port` a URL points at (default port 5432).
pub(crate) fn server_address(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[scheme_end..];
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_swapped_and_the_query_kept() {
        assert_eq!(
            with_database("postgres://u@h:1/postgres?x=1", "db"),
            "postgres://u@h:1/db?x=1"
        );
        assert_eq!(with_database("postgres://u@h", "db"), "postgres://u@h/db");
    }

    #[test]
    fn the_proxy_url_keeps_the_user_and_database_and_turns_tls_off() {
        assert_eq!(
            via_proxy("postgres://postgres@127.0.0.1:5432/chaos", 7000),
            "postgres://postgres@127.0.0.1:7000/chaos?sslmode=disable"
        );
        assert_eq!(server_address("postgres://p:w@db:6543/x"), "db:6543");
        assert_eq!(server_address("postgres://p@db/x"), "db:5432");
    }
}
