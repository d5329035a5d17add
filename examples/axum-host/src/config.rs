//! [`Config`]: everything the host reads from its environment, checked before it starts.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::HeaderValue;
use lobu_runtime::Settings;
use lobu_store_pg::PgStoreConfig;

use lobu_axum::ApiKeys;

use crate::config_file::{ConfigFile, StoreKeys, builtin};
pub use crate::config_parse::redact_url;
use crate::config_parse::{
    check_api_timeout, check_header_read_timeout, check_streams, cors_origins, idle_windows,
    llm_config, millis, number, secs, secs_or_never, store_choice, switch,
};
use crate::error::Error;

/// Where the server listens without `LOBU_ADDR`.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8787";
/// Where the file store keeps its files without `LOBU_DATA_DIR`.
pub const DEFAULT_DATA_DIR: &str = "./lobu-data";
pub use lobu_axum::DEFAULT_HEADER_READ_TIMEOUT;
const HEADER_READ_TIMEOUT_VAR: &str = "LOBU_HEADER_READ_TIMEOUT_SECS";
const STREAMS_VAR: &str = "LOBU_MAX_STREAMS_PER_ORG";
const REQUEST_TIMEOUT_VAR: &str = "LOBU_REQUEST_TIMEOUT_SECS";
const RESET_TIMEOUT_VAR: &str = "LOBU_RESET_TIMEOUT_SECS";

/// The longest header-read timeout `LOBU_HEADER_READ_TIMEOUT_SECS` accepts (ten minutes).
pub const MAX_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(600);

/// Which store holds transcripts, leases and runs.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// Plain files under a directory (one machine, any number of processes on it).
    File {
        /// The store's root directory.
        dir: PathBuf,
    },
    /// Snapshot mode on PostgreSQL (any number of replicas sharing one database).
    Snapshot {
        /// The connection URL (it may hold a password: shown redacted).
        database_url: String,
    },
}

impl fmt::Debug for StoreChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreChoice::File { dir } => write!(f, "file store at {}", dir.display()),
            StoreChoice::Snapshot { database_url } => {
                write!(f, "snapshot mode on {}", redact_url(database_url))
            }
        }
    }
}

/// The whole configuration of the host.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// `LOBU_ADDR`: the listening address (port 0 picks a free port).
    pub addr: SocketAddr,
    /// `LOBU_SESSION_STORE`, `DATABASE_URL`, `LOBU_DATA_DIR`: the store.
    pub store: StoreChoice,
    /// `LOBU_API_KEYS`: accepted keys and their orgs, or open.
    pub api_keys: ApiKeys,
    /// The runtime's settings: `LOBU_CONCURRENCY`, `LOBU_MAX_ATTEMPTS`,
    /// `LOBU_RETRY_DELAY_MS`, `LOBU_TURN_TIMEOUT_SECS`, `LOBU_SHUTDOWN_GRACE_SECS`,
    /// `LOBU_CLAIM_TTL_MS` (the heartbeat renews a claim three times per claim period).
    pub settings: Settings,
    /// `LOBU_DEMO_WORD_DELAY_MS`: the pause between streamed words of the demo agent.
    pub demo_word_delay: Duration,
    /// `LOBU_PG_MAX_CONNECTIONS`: the PostgreSQL pool size (snapshot mode).
    pub pg_max_connections: u32,
    /// The PostgreSQL store's own settings (the config file's `[pg]` table): schema, limits,
    /// timings, a direct URL for session-bound connections.
    pub pg: PgStoreConfig,
    /// `LOBU_HEADER_READ_TIMEOUT_SECS`: how long a connection may take to send a request's
    /// headers, counted from when the server starts reading them (also the longest an idle
    /// kept-alive connection stays open). A client that trickles its headers (slowloris) is
    /// disconnected when it runs out, so it cannot hold a task forever. `1..=600` s,
    /// default [`DEFAULT_HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// `LOBU_LLM_BASE_URL`, `LOBU_LLM_MODEL`, `LOBU_LLM_API_KEY`, `LOBU_LLM_CA_FILE`: the
    /// OpenAI-compatible endpoint to use instead of the demo agent (feature `openai`).
    pub llm: Option<LlmConfig>,
    /// `LOBU_WORKERS` (`1` or `0`, default `1`): whether this replica runs turns. `0` makes
    /// a gateway: it takes messages and streams any run, others execute them.
    pub workers: bool,
    /// `LOBU_INTAKE` (`1` or `0`, default `1`): whether this replica serves the API. `0`
    /// makes a worker: it answers the health probes only and runs turns.
    pub intake: bool,
    /// `LOBU_MAX_STREAMS_PER_ORG` (default 100, `1..=100000`): event streams one org may
    /// hold open on this replica; past it a new stream is `429`.
    pub max_streams_per_org: usize,
    /// `LOBU_REQUEST_TIMEOUT_SECS` (default 30, `1..=3600`): how long a non-streaming request
    /// may take before it is answered `503` (`?wait=N` adds `N`).
    pub request_timeout: Duration,
    /// `LOBU_RESET_TIMEOUT_SECS` (default 120, `1..=3600`): how long `DELETE …/session`
    /// waits for its reset before answering `503` (the reset still runs).
    pub reset_timeout: Duration,
    /// `LOBU_CORS_ORIGINS`: comma-separated browser origins (`https://app.example.com`)
    /// allowed to call the API; unset, the default, leaves CORS off.
    pub cors_origins: Vec<HeaderValue>,
}

/// An OpenAI-compatible chat completions endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct LlmConfig {
    /// The API base, `http://` or `https://`, e.g. `http://127.0.0.1:11434/v1` or
    /// `https://api.openai.com/v1` (requests go to `<base>/chat/completions`).
    pub base_url: String,
    /// The model name sent with each request.
    pub model: String,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// PEM root CA certificates trusted besides the system's (`LOBU_LLM_CA_FILE`, read when
    /// the configuration is): for an endpoint behind a private CA.
    pub ca_pem: Option<String>,
}

impl fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &redact_url(&self.base_url))
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(|pem| pem.len()))
            .finish()
    }
}

impl Config {
    /// Read the configuration from the TOML file named by `LOBU_CONFIG` (if set), then the
    /// process environment, which overrides the file.
    pub fn from_env() -> Result<Self, Error> {
        Self::load(None, |name| std::env::var(name).ok())
    }

    /// The default configuration (what no file and no environment give), for embedding and
    /// tests.
    pub fn defaults() -> Self {
        Self::from_lookup(|_| None).expect("the defaults are valid")
    }

    /// Read `file` (or the file `LOBU_CONFIG` names, when `file` is `None`), then the
    /// variables `lookup` gives, which override it. A file that cannot be read, is not TOML,
    /// names an unknown key or holds a bad value is an error naming the file and the key.
    pub fn load(
        file: Option<&Path>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let named = lookup("LOBU_CONFIG").filter(|v| !v.trim().is_empty());
        let path = file.map(Path::to_path_buf).or(named.map(PathBuf::from));
        let Some(path) = path else {
            return Self::from_lookup(lookup);
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::Config(format!(
                "cannot read the config file {}: {e}",
                path.display()
            ))
        })?;
        let file = ConfigFile::parse(&text)
            .map_err(|why| Error::Config(format!("config file {}: {why}", path.display())))?;
        let (base, store) = file
            .over(builtin())
            .map_err(|why| Error::Config(format!("config file {}: {why}", path.display())))?;
        Self::layered(base, store, lookup)
    }

    /// Read the configuration through `lookup` (a variable's value, if set), over the
    /// built-in defaults. Empty values count as unset, except `LOBU_API_KEYS`: an empty key
    /// list is an error rather than an open server.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        Self::layered(builtin(), StoreKeys::default(), lookup)
    }

    /// The environment over `base` (the built-in defaults, or those and a file); `store`
    /// holds the file's store keys, each overridden by its variable.
    fn layered(
        base: Config,
        store: StoreKeys,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let addr = match var("LOBU_ADDR") {
            None => base.addr,
            Some(text) => text.parse::<SocketAddr>().map_err(|_| {
                Error::Config(format!(
                    "LOBU_ADDR must be an IP address and port such as {DEFAULT_ADDR}, got {text:?}"
                ))
            })?,
        };
        let mode = var("LOBU_SESSION_STORE").or(store.session_store);
        let data_dir = var("LOBU_DATA_DIR").map(PathBuf::from).or(store.data_dir);
        let store = store_choice(
            mode.as_deref(),
            var("DATABASE_URL").or(store.database_url),
            || data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        )?;
        let api_keys = match lookup("LOBU_API_KEYS") {
            None => base.api_keys,
            Some(spec) if spec.trim().is_empty() => {
                return Err(Error::Config(
                    "LOBU_API_KEYS is set but empty; unset it to run without keys".to_owned(),
                ));
            }
            Some(spec) => ApiKeys::parse(&spec)
                .map_err(|why| Error::Config(format!("LOBU_API_KEYS {why}")))?,
        };

        let mut settings = base.settings;
        settings.concurrency = number(&var, "LOBU_CONCURRENCY", settings.concurrency)?;
        settings.max_attempts = number(&var, "LOBU_MAX_ATTEMPTS", settings.max_attempts)?;
        settings.retry_delay = millis(&var, "LOBU_RETRY_DELAY_MS", settings.retry_delay)?;
        settings.turn_timeout = secs(&var, "LOBU_TURN_TIMEOUT_SECS", settings.turn_timeout)?;
        // A crashed replica's turns come back after its claims lapse; a short claim (the
        // chaos harness uses one) brings them back sooner. Renewed three times per claim.
        if var("LOBU_CLAIM_TTL_MS").is_some() {
            settings.claim_ttl = millis(&var, "LOBU_CLAIM_TTL_MS", settings.claim_ttl)?;
            settings.heartbeat_interval = (settings.claim_ttl / 3).min(settings.heartbeat_interval);
        }
        settings.shutdown_grace = secs(&var, "LOBU_SHUTDOWN_GRACE_SECS", settings.shutdown_grace)?;
        settings.run_retention = secs(&var, "LOBU_RUN_RETENTION_SECS", settings.run_retention)?;
        // 0: failed runs are kept as long as the others.
        settings.failed_run_retention = secs_or_never(
            &var,
            "LOBU_FAILED_RUN_RETENTION_SECS",
            settings.failed_run_retention,
        )?;
        // 0: idle conversations are kept forever.
        settings.idle_retention =
            secs_or_never(&var, "LOBU_IDLE_RETENTION_SECS", settings.idle_retention)?;
        if let Some(text) = var("LOBU_IDLE_RETENTION_BY_AGENT") {
            settings.idle_retention_by_agent = idle_windows(&text)?;
        }
        settings.forensic_retention = secs(
            &var,
            "LOBU_FORENSIC_RETENTION_SECS",
            settings.forensic_retention,
        )?;
        settings.retention_batch = number(&var, "LOBU_RETENTION_BATCH", settings.retention_batch)?;
        settings
            .validate()
            .map_err(|e| Error::Config(format!("runtime settings: {}", e.message())))?;

        let llm = match var("LOBU_LLM_BASE_URL") {
            None => base.llm,
            Some(base_url) => Some(llm_config(
                &base_url,
                var("LOBU_LLM_MODEL"),
                var("LOBU_LLM_API_KEY"),
                var("LOBU_LLM_CA_FILE").map(PathBuf::from),
            )?),
        };
        Ok(Config {
            addr,
            store,
            api_keys,
            settings,
            demo_word_delay: millis(&var, "LOBU_DEMO_WORD_DELAY_MS", base.demo_word_delay)?,
            pg_max_connections: number(&var, "LOBU_PG_MAX_CONNECTIONS", base.pg_max_connections)?,
            pg: base.pg,
            header_read_timeout: check_header_read_timeout(
                secs(&var, HEADER_READ_TIMEOUT_VAR, base.header_read_timeout)?,
                HEADER_READ_TIMEOUT_VAR,
            )?,
            llm,
            workers: switch(&var, "LOBU_WORKERS", base.workers)?,
            intake: switch(&var, "LOBU_INTAKE", base.intake)?,
            max_streams_per_org: check_streams(
                number(&var, STREAMS_VAR, base.max_streams_per_org)?,
                STREAMS_VAR,
            )?,
            request_timeout: check_api_timeout(
                secs(&var, REQUEST_TIMEOUT_VAR, base.request_timeout)?,
                REQUEST_TIMEOUT_VAR,
            )?,
            reset_timeout: check_api_timeout(
                secs(&var, RESET_TIMEOUT_VAR, base.reset_timeout)?,
                RESET_TIMEOUT_VAR,
            )?,
            cors_origins: match var("LOBU_CORS_ORIGINS") {
                None => base.cors_origins,
                Some(text) => cors_origins(text.split(','), "LOBU_CORS_ORIGINS")?,
            },
        })
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
