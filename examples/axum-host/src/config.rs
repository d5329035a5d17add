//! [`Config`]: everything the host reads from its environment, checked before it starts.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::HeaderValue;
use lobu_core::AgentId;
use lobu_runtime::Settings;

use crate::auth::ApiKeys;
use crate::error::Error;
use crate::routes::DEFAULT_MAX_STREAMS_PER_ORG;

/// Where the server listens without `LOBU_ADDR`.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8787";
/// Where the file store keeps its files without `LOBU_DATA_DIR`.
pub const DEFAULT_DATA_DIR: &str = "./lobu-data";
/// How long a client may take to send a request's headers without
/// `LOBU_HEADER_READ_TIMEOUT_SECS` (hyper's own default, which `axum::serve` never applied).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
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
    /// Read the configuration from the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The default configuration (what no environment gives), for embedding and tests.
    pub fn defaults() -> Self {
        Self::from_lookup(|_| None).expect("the defaults are valid")
    }

    /// Read the configuration through `lookup` (a variable's value, if set). Empty values
    /// count as unset, except `LOBU_API_KEYS`: an empty key list is an error rather than an
    /// open server.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let addr_text = var("LOBU_ADDR").unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let addr = addr_text.parse::<SocketAddr>().map_err(|_| {
            Error::Config(format!(
                "LOBU_ADDR must be an IP address and port such as {DEFAULT_ADDR}, got {addr_text:?}"
            ))
        })?;
        let store = store_choice(
            var("LOBU_SESSION_STORE").as_deref(),
            var("DATABASE_URL"),
            || PathBuf::from(var("LOBU_DATA_DIR").unwrap_or_else(|| DEFAULT_DATA_DIR.to_owned())),
        )?;
        let api_keys = match lookup("LOBU_API_KEYS") {
            None => ApiKeys::Open,
            Some(spec) => ApiKeys::parse(&spec).map_err(Error::Config)?,
        };

        let mut settings = Settings::default();
        settings.concurrency = number(&var, "LOBU_CONCURRENCY", 8)?;
        settings.max_attempts = number(&var, "LOBU_MAX_ATTEMPTS", 3)?;
        settings.retry_delay = Duration::from_millis(number(&var, "LOBU_RETRY_DELAY_MS", 2000)?);
        settings.turn_timeout = Duration::from_secs(number(&var, "LOBU_TURN_TIMEOUT_SECS", 300)?);
        // A crashed replica's turns come back after its claims lapse; a short claim (the
        // chaos harness uses one) brings them back sooner. Renewed three times per claim.
        settings.claim_ttl = Duration::from_millis(number(&var, "LOBU_CLAIM_TTL_MS", 30_000)?);
        settings.heartbeat_interval = (settings.claim_ttl / 3).min(settings.heartbeat_interval);
        // Kubernetes waits 30 s after SIGTERM before SIGKILL: finish inside that.
        settings.shutdown_grace =
            Duration::from_secs(number(&var, "LOBU_SHUTDOWN_GRACE_SECS", 25)?);
        let days = |d: u64| d * 24 * 3600;
        settings.run_retention =
            Duration::from_secs(number(&var, "LOBU_RUN_RETENTION_SECS", days(7))?);
        // 0 (the default): failed runs are kept as long as the others.
        let failed = number(&var, "LOBU_FAILED_RUN_RETENTION_SECS", 0)?;
        settings.failed_run_retention = (failed > 0).then(|| Duration::from_secs(failed));
        // 0 (the default): idle conversations are kept forever.
        let idle = number(&var, "LOBU_IDLE_RETENTION_SECS", 0)?;
        settings.idle_retention = (idle > 0).then(|| Duration::from_secs(idle));
        if let Some(text) = var("LOBU_IDLE_RETENTION_BY_AGENT") {
            settings.idle_retention_by_agent = idle_windows(&text)?;
        }
        settings.forensic_retention =
            Duration::from_secs(number(&var, "LOBU_FORENSIC_RETENTION_SECS", days(7))?);
        settings.retention_batch = number(&var, "LOBU_RETENTION_BATCH", 10_000)?;
        settings
            .validate()
            .map_err(|e| Error::Config(format!("runtime settings: {}", e.message())))?;

        let llm = match var("LOBU_LLM_BASE_URL") {
            None => None,
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
            demo_word_delay: Duration::from_millis(number(&var, "LOBU_DEMO_WORD_DELAY_MS", 30)?),
            pg_max_connections: number(&var, "LOBU_PG_MAX_CONNECTIONS", 10)?,
            header_read_timeout: header_read_timeout(&var)?,
            llm,
            workers: switch(&var, "LOBU_WORKERS")?,
            intake: switch(&var, "LOBU_INTAKE")?,
            max_streams_per_org: max_streams_per_org(&var)?,
            cors_origins: var("LOBU_CORS_ORIGINS")
                .map(|text| cors_origins(&text))
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

fn max_streams_per_org(var: &impl Fn(&str) -> Option<String>) -> Result<usize, Error> {
    let streams = number(var, "LOBU_MAX_STREAMS_PER_ORG", DEFAULT_MAX_STREAMS_PER_ORG)?;
    if !(1..=100_000).contains(&streams) {
        return Err(Error::Config(format!(
            "LOBU_MAX_STREAMS_PER_ORG must be between 1 and 100000, got {streams}"
        )));
    }
    Ok(streams)
}

/// `LOBU_CORS_ORIGINS`: each an origin (`scheme://host[:port]`, no path), comma-separated.
fn cors_origins(text: &str) -> Result<Vec<HeaderValue>, Error> {
    let bad = |why: String| Error::Config(format!("LOBU_CORS_ORIGINS: {why}"));
    let mut origins = Vec::new();
    for origin in text.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let url = url::Url::parse(origin).map_err(|_| bad(format!("{origin:?} is not a URL")))?;
        let exact = url.origin().ascii_serialization();
        if !url.origin().is_tuple() || exact != origin {
            return Err(bad(format!(
                "{origin:?} is not an origin like https://app.example.com (no path, no slash)"
            )));
        }
        origins.push(HeaderValue::from_str(origin).map_err(|_| bad(format!("{origin:?}")))?);
    }
    Ok(origins)
}

/// A `0`/`1` switch, on when unset.
fn switch(var: &impl Fn(&str) -> Option<String>, name: &str) -> Result<bool, Error> {
    match var(name).as_deref().map(str::trim) {
        None | Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(other) => Err(Error::Config(format!(
            "{name} must be 0 or 1, got {other:?}"
        ))),
    }
}

/// Snapshot is the default wherever a database is configured (lobu PR #871); `file` is the
/// opt-out. Values are case-sensitive: lobu read `FILE` as snapshot, we refuse it.
fn store_choice(
    mode: Option<&str>,
    database_url: Option<String>,
    data_dir: impl FnOnce() -> PathBuf,
) -> Result<StoreChoice, Error> {
    match (mode, database_url) {
        (None | Some("snapshot"), Some(database_url)) => Ok(StoreChoice::Snapshot { database_url }),
        (Some("snapshot"), None) => Err(Error::Config(
            "LOBU_SESSION_STORE=snapshot needs DATABASE_URL (a PostgreSQL URL); \
             use LOBU_SESSION_STORE=file, or leave both unset, for the file store"
                .to_owned(),
        )),
        (None | Some("file"), _) => Ok(StoreChoice::File { dir: data_dir() }),
        (Some(other), _) => Err(Error::Config(format!(
            "LOBU_SESSION_STORE must be `snapshot` or `file`, got {other:?}"
        ))),
    }
}

fn llm_config(
    base_url: &str,
    model: Option<String>,
    api_key: Option<String>,
    ca_file: Option<PathBuf>,
) -> Result<LlmConfig, Error> {
    // The agent's client speaks http and https (rustls); say so now rather than on every turn.
    if !base_url.starts_with("http://") && !base_url.starts_with("https://") {
        return Err(Error::Config(format!(
            "LOBU_LLM_BASE_URL must be an http:// or https:// URL, got {:?}",
            redact_url(base_url)
        )));
    }
    let model = model.ok_or_else(|| {
        Error::Config("LOBU_LLM_BASE_URL is set, so LOBU_LLM_MODEL must name the model".to_owned())
    })?;
    let ca_pem = ca_file
        .map(|path| {
            std::fs::read_to_string(&path).map_err(|e| {
                Error::Config(format!(
                    "LOBU_LLM_CA_FILE: cannot read {}: {e}",
                    path.display()
                ))
            })
        })
        .transpose()?;
    Ok(LlmConfig {
        base_url: base_url.trim_end_matches('/').to_owned(),
        model,
        api_key,
        ca_pem,
    })
}

fn header_read_timeout(var: &impl Fn(&str) -> Option<String>) -> Result<Duration, Error> {
    const NAME: &str = "LOBU_HEADER_READ_TIMEOUT_SECS";
    let secs: u64 = number(var, NAME, DEFAULT_HEADER_READ_TIMEOUT.as_secs())?;
    let timeout = Duration::from_secs(secs);
    if timeout.is_zero() || timeout > MAX_HEADER_READ_TIMEOUT {
        return Err(Error::Config(format!(
            "{NAME} must be from 1 to {} seconds, got {secs}",
            MAX_HEADER_READ_TIMEOUT.as_secs()
        )));
    }
    Ok(timeout)
}

fn number<T: std::str::FromStr>(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
) -> Result<T, Error> {
    match var(name) {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| Error::Config(format!("{name} must be a whole number, got {text:?}"))),
    }
}

/// `LOBU_IDLE_RETENTION_BY_AGENT`: `agent=seconds` or `agent=never`, comma-separated.
fn idle_windows(text: &str) -> Result<BTreeMap<AgentId, Option<Duration>>, Error> {
    let bad = |why: String| Error::Config(format!("LOBU_IDLE_RETENTION_BY_AGENT: {why}"));
    let mut windows = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (agent, window) = item
            .split_once('=')
            .ok_or_else(|| bad(format!("{item:?} is not agent=seconds or agent=never")))?;
        let agent = AgentId::new(agent.trim()).map_err(|e| bad(e.message().to_owned()))?;
        let window = match window.trim() {
            "never" => None,
            secs => Some(Duration::from_secs(secs.parse().map_err(|_| {
                bad(format!(
                    "{secs:?} is not a whole number of seconds or never"
                ))
            })?)),
        };
        windows.insert(agent, window);
    }
    Ok(windows)
}

/// Query parameters whose values are secrets (libpq's, and API keys and tokens).
const SECRET_PARAMETERS: [&str; 7] = [
    "password",
    "sslpassword",
    "key",
    "api_key",
    "apikey",
    "token",
    "access_token",
];

/// A URL with its password, and the values of query parameters that carry secrets
/// (`?password=`, `?sslpassword=`, `?key=`, tokens), replaced by `***`: safe to log. Text
/// that is not a URL shows its scheme only.
pub fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        return match text.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://<not a URL>"),
            None => "<not a URL>".to_owned(),
        };
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRET_PARAMETERS.contains(&k.to_ascii_lowercase().as_str());
                let v = if secret { "***".into() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
