//! [`Settings`]: every knob of the runtime, with defaults and validation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::instruments::OrgLabel;
use lobu_core::{
    AgentId, DEFAULT_MAX_TRANSCRIPT_BYTES, Error, MAX_ATTEMPTS, MAX_RETRY_DELAY, Result,
    check_lease_duration,
};

/// The most turns one runtime runs at once.
pub const MAX_CONCURRENCY: usize = 1024;

/// The longest any duration setting but a retention window (see [`MAX_RETENTION`]) may be
/// (30 days): longer is a mistake, and the
/// runtime adds these durations to clock readings, which must not overflow.
pub const MAX_SETTING_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The runtime's settings. Build them with [`RuntimeBuilder`](crate::RuntimeBuilder); every
/// field has a default and [`Settings::validate`] checks them all.
///
/// They deserialize from a host's own configuration (TOML, YAML, JSON, env through a config
/// crate): field names as here, durations in human form (`"30s"`, `"5m"`, `"7days"`), a
/// per-agent idle window `"never"` to keep that agent's conversations, and every field
/// optional (its default). Unknown fields are refused. Validate after loading:
///
/// ```
/// let settings: lobu_runtime::Settings = serde_json::from_str(
///     r#"{ "concurrency": 16, "turn_timeout": "2m", "idle_retention_by_agent": { "bot": "never" } }"#,
/// ).unwrap();
/// settings.validate().unwrap();
/// assert_eq!(settings.turn_timeout, std::time::Duration::from_secs(120));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Settings {
    /// How many runs the worker executes at once (`1..=1024`). Default 4.
    pub concurrency: usize,
    /// How long one attempt of a turn may run before it is recorded as `timeout`. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub turn_timeout: Duration,
    /// How long a run claim (the conversation's ownership for the turn) lasts without a
    /// heartbeat. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub claim_ttl: Duration,
    /// How often a running turn renews its claim; at most half of `claim_ttl`. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How many times a submitted run may be attempted (`1..=100`). Default 3.
    pub max_attempts: u32,
    /// The first retry's delay after a failed attempt: later ones double it (with jitter) up
    /// to `max_retry_delay` (at most 24 h). Default 2 s.
    #[serde(with = "humantime_serde")]
    pub retry_delay: Duration,
    /// The longest delay between attempts (at least `retry_delay`, at most 24 h). Default 60 s.
    #[serde(with = "humantime_serde")]
    pub max_retry_delay: Duration,
    /// How long [`Runtime::shutdown`](crate::Runtime::shutdown) lets in-flight turns finish. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// The largest transcript a turn may persist; a larger one fails the run with `TooLarge`
    /// (nothing is truncated). The store's own limit applies as well. Default 8 MiB.
    pub max_transcript_bytes: usize,
    /// Where per-run scratch directories are created. Default `<temp dir>/lobu-scratch`.
    pub scratch_root: PathBuf,
    /// The longest the worker sleeps between claim attempts when the queue is idle (a backend
    /// with a wake-up channel answers sooner). Default 500 ms.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often a followed run's events are read even without a wake-up from the backend (a
    /// backstop: PostgreSQL's `NOTIFY` and the file store's directory watch wake readers at
    /// once). One read per followed run per replica, however many subscribers. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub status_poll_interval: Duration,
    /// How long the stored events of a finished run stay available for replay; the worker
    /// loop removes older ones. Default 24 h.
    #[serde(with = "humantime_serde")]
    pub event_retention: Duration,
    /// How long finished runs (completed, failed, timed out, cancelled) stay on the queue,
    /// with their idempotency keys and events; older ones are removed by the retention pass.
    /// Transcripts never depend on it. Default 7 days.
    #[serde(with = "humantime_serde")]
    pub run_retention: Duration,
    /// How long failed, timed-out and cancelled runs (the dead letters) stay on the queue;
    /// `None`: as long as [`run_retention`](Self::run_retention). Never shorter than it.
    /// Default `None`.
    #[serde(with = "humantime_serde")]
    pub failed_run_retention: Option<Duration>,
    /// Remove whole conversations whose transcript was last written longer ago than this
    /// (and no one owns); `None` keeps them forever. Agents in
    /// [`idle_retention_by_agent`](Self::idle_retention_by_agent) have their own window.
    /// Default `None`.
    #[serde(with = "humantime_serde")]
    pub idle_retention: Option<Duration>,
    /// Per-agent idle windows, in every org (short for automated sessions, longer for
    /// people): `Some(window)`, or `None` to keep that agent's conversations forever
    /// whatever [`idle_retention`](Self::idle_retention) says. Default empty.
    #[serde(with = "crate::config_serde::idle_windows")]
    pub idle_retention_by_agent: BTreeMap<AgentId, Option<Duration>>,
    /// How long forensic copies of failed attempts (kept for debugging, never hydrated) are
    /// kept. Default 7 days.
    #[serde(with = "humantime_serde")]
    pub forensic_retention: Duration,
    /// The most items one step of a retention pass removes (events, runs, conversations,
    /// forensic copies); a pass that reaches it goes on with another round, at most ten per
    /// pass. Default 10,000.
    pub retention_batch: usize,
    /// Whether run events are stored, so that every replica (and a restarted one) can stream
    /// them. Off, they reach only this process's subscribers, live. Default on.
    pub store_events: bool,
    /// How many bytes of events an attempt stores as they come; past it output is still
    /// streamed, stored coalesced (one batch a second). Default 1 MiB.
    pub max_event_bytes: usize,
    /// How many bytes of transcripts the in-process cache keeps. Default 64 MiB; 0 disables it.
    pub cache_bytes: usize,
    /// Which orgs label the runtime's metrics with `org` (see [`OrgLabel`]; every label
    /// value is a time series, and orgs can be unbounded). Default [`OrgLabel::Off`].
    pub metrics_org_label: OrgLabel,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            concurrency: 4,
            turn_timeout: Duration::from_secs(5 * 60),
            claim_ttl: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            max_attempts: 3,
            retry_delay: Duration::from_secs(2),
            max_retry_delay: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            max_transcript_bytes: DEFAULT_MAX_TRANSCRIPT_BYTES,
            scratch_root: std::env::temp_dir().join("lobu-scratch"),
            poll_interval: Duration::from_millis(500),
            status_poll_interval: Duration::from_secs(5),
            event_retention: Duration::from_secs(24 * 3600),
            run_retention: Duration::from_secs(7 * 24 * 3600),
            failed_run_retention: None,
            idle_retention: None,
            idle_retention_by_agent: BTreeMap::new(),
            forensic_retention: Duration::from_secs(7 * 24 * 3600),
            retention_batch: 10_000,
            store_events: true,
            max_event_bytes: 1024 * 1024,
            cache_bytes: 64 * 1024 * 1024,
            metrics_org_label: OrgLabel::Off,
        }
    }
}

fn positive(name: &str, value: Duration) -> Result<()> {
    if value.is_zero() {
        return Err(Error::invalid(format!("{name} must be more than zero")));
    }
    at_most_max(name, value)
}

fn at_most_max(name: &str, value: Duration) -> Result<()> {
    if value > MAX_SETTING_DURATION {
        return Err(Error::invalid(format!(
            "{name} must be at most {MAX_SETTING_DURATION:?}, got {value:?}"
        )));
    }
    Ok(())
}

/// The longest a retention window may be (ten years): past it is a mistake, and the pass
/// subtracts windows from the clock.
pub const MAX_RETENTION: Duration = Duration::from_secs(3650 * 24 * 3600);

/// A retention window: more than zero and at most [`MAX_RETENTION`] (not the 30 days of
/// other durations: conversations are commonly kept for months).
fn retention(name: &str, value: Duration) -> Result<()> {
    if value.is_zero() {
        return Err(Error::invalid(format!("{name} must be more than zero")));
    }
    if value > MAX_RETENTION {
        return Err(Error::invalid(format!(
            "{name} must be at most {MAX_RETENTION:?} (ten years), got {value:?}"
        )));
    }
    Ok(())
}

impl Settings {
    /// Check every setting; a bad one is `InvalidInput` naming it.
    pub fn validate(&self) -> Result<()> {
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return Err(Error::invalid(format!(
                "concurrency must be between 1 and {MAX_CONCURRENCY}, got {}",
                self.concurrency
            )));
        }
        positive("turn_timeout", self.turn_timeout)?;
        check_lease_duration(self.claim_ttl)
            .map_err(|e| Error::invalid(format!("claim_ttl: {}", e.message())))?;
        positive("heartbeat_interval", self.heartbeat_interval)?;
        // Two renewals must fit in a claim, so one slow or lost renewal does not lose it.
        if self
            .heartbeat_interval
            .checked_mul(2)
            .is_none_or(|twice| twice > self.claim_ttl)
        {
            return Err(Error::invalid(format!(
                "heartbeat_interval ({:?}) must be at most half of claim_ttl ({:?})",
                self.heartbeat_interval, self.claim_ttl
            )));
        }
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS {
            return Err(Error::invalid(format!(
                "max_attempts must be between 1 and {MAX_ATTEMPTS}, got {}",
                self.max_attempts
            )));
        }
        if self.retry_delay > MAX_RETRY_DELAY {
            return Err(Error::invalid("retry_delay must be at most 24h"));
        }
        if self.max_retry_delay > MAX_RETRY_DELAY || self.max_retry_delay < self.retry_delay {
            return Err(Error::invalid(
                "max_retry_delay must be at least retry_delay and at most 24h",
            ));
        }
        if self.max_transcript_bytes == 0 {
            return Err(Error::invalid(
                "max_transcript_bytes must be more than zero",
            ));
        }
        if self.scratch_root.as_os_str().is_empty() {
            return Err(Error::invalid("scratch_root must not be empty"));
        }
        positive("poll_interval", self.poll_interval)?;
        positive("status_poll_interval", self.status_poll_interval)?;
        at_most_max("shutdown_grace", self.shutdown_grace)?;
        at_most_max("event_retention", self.event_retention)?;
        retention("run_retention", self.run_retention)?;
        if let Some(failed) = self.failed_run_retention
            && failed < self.run_retention
        {
            return Err(Error::invalid(
                "failed_run_retention must be at least run_retention (failed runs are kept at least as long)",
            ));
        }
        let idle_windows = self.idle_retention_by_agent.values().flatten();
        for idle in self.idle_retention.iter().chain(idle_windows) {
            retention("idle_retention", *idle)?;
        }
        retention("forensic_retention", self.forensic_retention)?;
        if let Some(failed) = self.failed_run_retention {
            retention("failed_run_retention", failed)?;
        }
        if self.retention_batch == 0 {
            return Err(Error::invalid("retention_batch must be more than zero"));
        }
        self.metrics_org_label.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lobu_core::ErrorKind;

    fn refused(change: impl FnOnce(&mut Settings), name: &str) {
        let mut s = Settings::default();
        change(&mut s);
        let e = s.validate().expect_err(name);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{name}");
        assert!(e.message().contains(name), "{name}: {}", e.message());
    }

    #[test]
    fn absurd_durations_are_invalid_input_not_a_panic() {
        refused(
            |s| s.heartbeat_interval = Duration::MAX,
            "heartbeat_interval",
        );
        refused(|s| s.claim_ttl = Duration::MAX, "claim_ttl");
        refused(|s| s.turn_timeout = Duration::MAX, "turn_timeout");
        refused(|s| s.retry_delay = Duration::MAX, "retry_delay");
        refused(|s| s.shutdown_grace = Duration::MAX, "shutdown_grace");
        refused(|s| s.poll_interval = Duration::MAX, "poll_interval");
        refused(
            |s| s.status_poll_interval = Duration::MAX,
            "status_poll_interval",
        );
        refused(|s| s.event_retention = Duration::MAX, "event_retention");
        refused(|s| s.run_retention = Duration::MAX, "run_retention");
        refused(|s| s.idle_retention = Some(Duration::MAX), "idle_retention");
        refused(
            |s| s.failed_run_retention = Some(Duration::MAX),
            "failed_run_retention",
        );
        refused(
            |s| s.forensic_retention = Duration::MAX,
            "forensic_retention",
        );
        let bot = AgentId::new("bot").unwrap();
        refused(
            |s| {
                s.idle_retention_by_agent
                    .insert(bot.clone(), Some(Duration::MAX));
            },
            "idle_retention",
        );
        let longest = Settings {
            turn_timeout: MAX_SETTING_DURATION,
            shutdown_grace: MAX_SETTING_DURATION,
            event_retention: MAX_SETTING_DURATION,
            ..Settings::default()
        };
        longest.validate().unwrap();
    }

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn retention_windows_are_checked_and_failed_runs_kept_at_least_as_long() {
        let week = Duration::from_secs(7 * 24 * 3600);
        refused(
            |s| s.failed_run_retention = Some(week / 2),
            "failed_run_retention",
        );
        refused(
            |s| s.forensic_retention = Duration::ZERO,
            "forensic_retention",
        );
        refused(|s| s.retention_batch = 0, "retention_batch");
        refused(
            |s| s.metrics_org_label = OrgLabel::Only(Default::default()),
            "metrics_org_label",
        );
        let bot = AgentId::new("bot").unwrap();
        refused(
            |s| {
                s.idle_retention_by_agent
                    .insert(bot.clone(), Some(Duration::ZERO));
            },
            "idle_retention",
        );
        let mut tiered = Settings {
            failed_run_retention: Some(week * 4),
            idle_retention: Some(MAX_RETENTION),
            ..Settings::default()
        };
        tiered.idle_retention_by_agent.insert(bot, None);
        tiered.validate().unwrap();
    }

    #[test]
    fn each_bad_setting_is_invalid_input_naming_it() {
        refused(|s| s.concurrency = 0, "concurrency");
        refused(|s| s.concurrency = MAX_CONCURRENCY + 1, "concurrency");
        refused(|s| s.turn_timeout = Duration::ZERO, "turn_timeout");
        refused(
            |s| s.claim_ttl = Duration::from_secs(25 * 3600),
            "claim_ttl",
        );
        refused(
            |s| s.heartbeat_interval = Duration::ZERO,
            "heartbeat_interval",
        );
        refused(
            |s| s.heartbeat_interval = Duration::from_secs(16),
            "heartbeat_interval",
        );
        refused(|s| s.max_attempts = 0, "max_attempts");
        refused(|s| s.max_attempts = MAX_ATTEMPTS + 1, "max_attempts");
        refused(|s| s.retry_delay = MAX_RETRY_DELAY * 2, "retry_delay");
        refused(|s| s.max_transcript_bytes = 0, "max_transcript_bytes");
        refused(|s| s.scratch_root = PathBuf::new(), "scratch_root");
        refused(|s| s.poll_interval = Duration::ZERO, "poll_interval");
        refused(
            |s| s.status_poll_interval = Duration::ZERO,
            "status_poll_interval",
        );
        refused(|s| s.run_retention = Duration::ZERO, "run_retention");
        refused(
            |s| s.idle_retention = Some(Duration::ZERO),
            "idle_retention",
        );
    }
}
