//! The optional TOML configuration file (`--config FILE` or `LOBU_CONFIG`): the settings the
//! environment has, in human form (`"30s"`, `"7days"`), plus every runtime setting
//! (`[runtime]`) and the PostgreSQL store's (`[pg]`). The environment overrides the file; the
//! file overrides the built-in defaults. Unknown keys are refused.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lobu_axum::{
    ApiKeys, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_STREAMS_PER_ORG, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RESET_TIMEOUT,
};
use lobu_runtime::Settings;
use lobu_store_pg::PgStoreConfig;
use serde::{Deserialize, Serialize};

use crate::config::{Config, DEFAULT_ADDR, DEFAULT_DATA_DIR, StoreChoice};
use crate::config_parse::{
    check_api_timeout, check_header_read_timeout, check_streams, cors_origins, llm_config,
};

/// The file's keys; each is optional.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ConfigFile {
    addr: Option<SocketAddr>,
    /// `file` or `snapshot`.
    session_store: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    /// `["key=org", …]`.
    api_keys: Option<Vec<String>>,
    workers: Option<bool>,
    intake: Option<bool>,
    max_streams_per_org: Option<usize>,
    cors_origins: Option<Vec<String>>,
    #[serde(with = "humantime_serde")]
    header_read_timeout: Option<Duration>,
    #[serde(with = "humantime_serde")]
    request_timeout: Option<Duration>,
    #[serde(with = "humantime_serde")]
    reset_timeout: Option<Duration>,
    #[serde(with = "humantime_serde")]
    demo_word_delay: Option<Duration>,
    pg_max_connections: Option<u32>,
    /// lobu's runtime settings: any of [`Settings`]' fields, over the host's defaults.
    runtime: Option<toml::Table>,
    #[serde(skip_serializing)]
    pg: Option<PgStoreConfig>,
    llm: Option<LlmFile>,
}

/// `[llm]`: an OpenAI-compatible endpoint.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LlmFile {
    base_url: String,
    model: Option<String>,
    api_key: Option<String>,
    /// Extra root certificates (PEM) to trust for an https endpoint.
    ca_file: Option<PathBuf>,
}

/// The store keys of a file, each overridden by its variable before the store is chosen.
#[derive(Debug, Default)]
pub(crate) struct StoreKeys {
    pub(crate) session_store: Option<String>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) database_url: Option<String>,
}

impl ConfigFile {
    /// Parse a file's text.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// `base` with this file's values, checked as the environment's are, and its store keys.
    pub(crate) fn over(self, mut base: Config) -> Result<(Config, StoreKeys), String> {
        let message = |e: crate::Error| e.to_string();
        base.addr = self.addr.unwrap_or(base.addr);
        if let Some(keys) = self.api_keys {
            base.api_keys =
                ApiKeys::parse(&keys.join(",")).map_err(|why| format!("api_keys: {why}"))?;
        }
        base.workers = self.workers.unwrap_or(base.workers);
        base.intake = self.intake.unwrap_or(base.intake);
        if let Some(streams) = self.max_streams_per_org {
            base.max_streams_per_org =
                check_streams(streams, "max_streams_per_org").map_err(message)?;
        }
        if let Some(origins) = self.cors_origins {
            base.cors_origins = cors_origins(origins.iter().map(String::as_str), "cors_origins")
                .map_err(message)?;
        }
        if let Some(timeout) = self.header_read_timeout {
            base.header_read_timeout =
                check_header_read_timeout(timeout, "header_read_timeout").map_err(message)?;
        }
        if let Some(timeout) = self.request_timeout {
            base.request_timeout =
                check_api_timeout(timeout, "request_timeout").map_err(message)?;
        }
        if let Some(timeout) = self.reset_timeout {
            base.reset_timeout = check_api_timeout(timeout, "reset_timeout").map_err(message)?;
        }
        base.demo_word_delay = self.demo_word_delay.unwrap_or(base.demo_word_delay);
        base.pg_max_connections = self.pg_max_connections.unwrap_or(base.pg_max_connections);
        if let Some(table) = self.runtime {
            base.settings = settings_over(&base.settings, table)?;
        }
        if let Some(pg) = self.pg {
            base.pg = pg;
        }
        if let Some(llm) = self.llm {
            base.llm = Some(
                llm_config(&llm.base_url, llm.model, llm.api_key, llm.ca_file)
                    .map_err(|e| format!("[llm] {}", message(e)))?,
            );
        }
        let store = StoreKeys {
            session_store: self.session_store,
            data_dir: self.data_dir,
            database_url: self.database_url,
        };
        Ok((base, store))
    }
}

/// `settings` with the keys of `table` replaced: a key the file leaves out keeps the host's
/// default, not the library's.
fn settings_over(settings: &Settings, table: toml::Table) -> Result<Settings, String> {
    let mut merged = toml::Table::try_from(settings).map_err(|e| e.to_string())?;
    merged.extend(table);
    let settings: Settings = merged
        .try_into()
        .map_err(|e: toml::de::Error| format!("[runtime] {}", e.message()))?;
    settings
        .validate()
        .map_err(|e| format!("[runtime] {}", e.message()))?;
    Ok(settings)
}

/// The host's built-in defaults: what no file and no environment give.
pub(crate) fn builtin() -> Config {
    let mut settings = Settings::default();
    settings.concurrency = 8;
    // Kubernetes waits 30 s after SIGTERM before SIGKILL: finish inside that.
    settings.shutdown_grace = Duration::from_secs(25);
    Config {
        addr: DEFAULT_ADDR.parse().expect("the default address parses"),
        store: StoreChoice::File {
            dir: PathBuf::from(DEFAULT_DATA_DIR),
        },
        api_keys: ApiKeys::Open,
        settings,
        demo_word_delay: Duration::from_millis(30),
        pg_max_connections: 10,
        pg: PgStoreConfig::default(),
        header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
        llm: None,
        workers: true,
        intake: true,
        max_streams_per_org: DEFAULT_MAX_STREAMS_PER_ORG,
        request_timeout: DEFAULT_REQUEST_TIMEOUT,
        reset_timeout: DEFAULT_RESET_TIMEOUT,
        cors_origins: Vec::new(),
    }
}

/// A config file holding every key with its built-in default (for `--help`); the keys with
/// no default (`database_url`, `api_keys`, `[llm]`, `[pg]`) are commented.
pub fn default_config_file() -> String {
    let config = builtin();
    let file = ConfigFile {
        addr: Some(config.addr),
        session_store: Some("file".to_owned()),
        data_dir: Some(PathBuf::from(DEFAULT_DATA_DIR)),
        workers: Some(config.workers),
        intake: Some(config.intake),
        max_streams_per_org: Some(config.max_streams_per_org),
        cors_origins: Some(Vec::new()),
        header_read_timeout: Some(config.header_read_timeout),
        request_timeout: Some(config.request_timeout),
        reset_timeout: Some(config.reset_timeout),
        demo_word_delay: Some(config.demo_word_delay),
        pg_max_connections: Some(config.pg_max_connections),
        runtime: toml::Table::try_from(&config.settings).ok(),
        ..ConfigFile::default()
    };
    let body = toml::to_string(&file).unwrap_or_default();
    format!(
        "# database_url = \"postgres://user@host/db\"   (snapshot mode)\n\
         # api_keys = [\"key=org\"]\n{body}\n\
         # [runtime] also: failed_run_retention (unset: as long as run_retention),\n\
         #           idle_retention (unset: keep idle conversations for ever)\n\
         # [pg]  schema = \"lobu\", max_transcript_bytes, max_chain_deltas, poll_interval = \"1s\",\n\
         #       migrate_lock_timeout = \"60s\", direct_url = \"postgres://…\"\n\
         # [llm] base_url = \"https://…/v1\", model = \"…\", api_key = \"…\", ca_file = \"ca.pem\"\n"
    )
}
