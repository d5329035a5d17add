//! Reading and checking single settings: numbers, durations, switches, the store choice,
//! origins, idle windows, and redacting URLs for logs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use axum::http::HeaderValue;
use lobu_axum::MAX_REQUEST_TIMEOUT;
use lobu_core::AgentId;

use crate::config::{LlmConfig, MAX_HEADER_READ_TIMEOUT, StoreChoice};
use crate::error::Error;

/// An org's open-stream bound, `1..=100000`.
pub(crate) fn check_streams(streams: usize, name: &str) -> Result<usize, Error> {
    if !(1..=100_000).contains(&streams) {
        return Err(Error::Config(format!(
            "{name} must be between 1 and 100000, got {streams}"
        )));
    }
    Ok(streams)
}

/// Browser origins, each `scheme://host[:port]` (no path); blank ones are skipped.
pub(crate) fn cors_origins<'a>(
    items: impl IntoIterator<Item = &'a str>,
    name: &str,
) -> Result<Vec<HeaderValue>, Error> {
    let bad = |why: String| Error::Config(format!("{name}: {why}"));
    let mut origins = Vec::new();
    for origin in items.into_iter().map(str::trim).filter(|o| !o.is_empty()) {
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

/// A `0`/`1` switch, `current` when unset.
pub(crate) fn switch(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    current: bool,
) -> Result<bool, Error> {
    match var(name).as_deref().map(str::trim) {
        None => Ok(current),
        Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(other) => Err(Error::Config(format!(
            "{name} must be 0 or 1, got {other:?}"
        ))),
    }
}

/// Snapshot is the default wherever a database is configured (lobu PR #871); `file` is the
/// opt-out. Values are case-sensitive: lobu read `FILE` as snapshot, we refuse it.
pub(crate) fn store_choice(
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

pub(crate) fn llm_config(
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

/// A header-read timeout, `1..=600` s.
pub(crate) fn check_header_read_timeout(timeout: Duration, name: &str) -> Result<Duration, Error> {
    check_within(timeout, MAX_HEADER_READ_TIMEOUT, name)
}

/// A request timeout, `1..=3600` s.
pub(crate) fn check_api_timeout(timeout: Duration, name: &str) -> Result<Duration, Error> {
    check_within(timeout, MAX_REQUEST_TIMEOUT, name)
}

fn check_within(timeout: Duration, max: Duration, name: &str) -> Result<Duration, Error> {
    if timeout < Duration::from_secs(1) || timeout > max {
        return Err(Error::Config(format!(
            "{name} must be from 1 to {} seconds, got {}",
            max.as_secs(),
            humantime::format_duration(timeout)
        )));
    }
    Ok(timeout)
}

/// A whole number of seconds, `current` when unset.
pub(crate) fn secs(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    current: Duration,
) -> Result<Duration, Error> {
    Ok(match var(name) {
        None => current,
        Some(_) => Duration::from_secs(number(var, name, 0)?),
    })
}

/// A whole number of milliseconds, `current` when unset.
pub(crate) fn millis(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    current: Duration,
) -> Result<Duration, Error> {
    Ok(match var(name) {
        None => current,
        Some(_) => Duration::from_millis(number(var, name, 0)?),
    })
}

/// A whole number of seconds where `0` means "never", `current` when unset.
pub(crate) fn secs_or_never(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    current: Option<Duration>,
) -> Result<Option<Duration>, Error> {
    Ok(match var(name) {
        None => current,
        Some(_) => Some(Duration::from_secs(number(var, name, 0)?)).filter(|d| !d.is_zero()),
    })
}

pub(crate) fn number<T: std::str::FromStr>(
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
pub(crate) fn idle_windows(text: &str) -> Result<BTreeMap<AgentId, Option<Duration>>, Error> {
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
