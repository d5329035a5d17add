//! Stores named by URL: `file:DIR` or `postgres://…`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use lobu_core::{Backend, Error, Result};
use lobu_store_file::FileStore;
use lobu_store_pg::PgStore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// A store's URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreUrl {
    /// A file store's directory.
    File(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl FromStr for StoreUrl {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        if let Some(path) = text.strip_prefix("file:") {
            // `file:///abs` and `file:/abs` name the same directory; `file:./rel` is relative.
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(Error::invalid(
                    "a file store URL needs a directory: file:DIR",
                ));
            }
            return Ok(StoreUrl::File(PathBuf::from(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(text.to_owned()));
        }
        Err(Error::invalid(format!(
            "{} is not a store URL: use file:DIR or postgres://user@host/db",
            shown_text(text)
        )))
    }
}

/// An open store and a name for it that is safe to print (never a password).
#[derive(Debug, Clone)]
pub struct Store {
    /// Its traits.
    pub backend: Backend,
    /// `file:/abs/dir` or `postgres://host:port/db`.
    pub name: String,
}

/// Whether a command may create the store it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// It must exist already (a typo must not read as an empty store).
    Existing,
    /// It may be created (the target of an import or a migration).
    CreateIfMissing,
}

/// Open the store `url` names. A PostgreSQL pool holds up to `connections` connections.
pub async fn open(url: &str, access: Access, connections: u32) -> Result<Store> {
    match url.parse::<StoreUrl>()? {
        StoreUrl::File(dir) => {
            if access == Access::Existing && !dir.join("lobu-store.json").exists() {
                return Err(Error::not_found(format!(
                    "no lobu file store at {}",
                    dir.display()
                )));
            }
            let store = FileStore::open(&dir).await?;
            let name = format!("file:{}", store.root().display());
            Ok(Store {
                backend: store.into_backend(),
                name,
            })
        }
        StoreUrl::Postgres(url) => {
            let options = PgConnectOptions::from_str(&url)
                .map_err(|e| Error::invalid("the PostgreSQL URL does not parse").with_source(e))?;
            let name = format!(
                "postgres://{}:{}/{}",
                options.get_host(),
                options.get_port(),
                options.get_database().unwrap_or("")
            );
            let pool = PgPoolOptions::new()
                .max_connections(connections.max(1))
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(|e| {
                    Error::unavailable(format!("cannot connect to {name}")).with_source(e)
                })?;
            let store = PgStore::new(pool);
            store.migrate().await?;
            Ok(Store {
                backend: store.into_backend(),
                name,
            })
        }
    }
}

/// What of a rejected URL an error shows: its scheme only when it has one (the rest may
/// hold a password), else the text before any `@`.
fn shown_text(text: &str) -> String {
    match text.split_once("://") {
        Some((scheme, _)) => format!("{scheme}://…"),
        None => text.split('@').next().unwrap_or(text).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lobu_core::ErrorKind;

    #[test]
    fn file_and_postgres_urls_parse_and_others_are_invalid_input() {
        let file = |p: &str| StoreUrl::File(PathBuf::from(p));
        assert_eq!(
            "file:./lobu-data".parse::<StoreUrl>().unwrap(),
            file("./lobu-data")
        );
        assert_eq!(
            "file:///var/lobu".parse::<StoreUrl>().unwrap(),
            file("/var/lobu")
        );
        assert_eq!(
            "file:/var/lobu".parse::<StoreUrl>().unwrap(),
            file("/var/lobu")
        );
        let pg = "postgres://u@h:5432/db";
        assert_eq!(
            pg.parse::<StoreUrl>().unwrap(),
            StoreUrl::Postgres(pg.into())
        );
        for bad in ["", "file:", "./lobu-data", "mysql://x", "postgres:/x"] {
            let err = bad.parse::<StoreUrl>().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn a_bad_url_with_a_password_is_not_printed_whole() {
        let err = "mysql://user:hunter2@host/db"
            .parse::<StoreUrl>()
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
