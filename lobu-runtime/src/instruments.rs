//! Metrics through the [`metrics`] facade: the host installs a recorder (e.g.
//! `metrics-exporter-prometheus`) and every runtime in the process reports to it; without
//! one, recording costs next to nothing. Every name starts with `lobu_`; times are in
//! seconds. Labels: `agent` always (a host has few agents), `org` only when
//! [`Settings::metrics_org_label`](crate::Settings::metrics_org_label) says so (orgs can be
//! unbounded), and on some metrics `kind` (`turn`, `reset`), `outcome` or `what`.
//!
//! The list of metrics is on [`describe_metrics`].

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use lobu_core::{ConversationKey, Error, OrgId, Result, RunKind, TerminalStatus};
use metrics::{Label, Unit};
use tokio::time::Instant;

use crate::config::Settings;

pub(crate) const RUNS_SUBMITTED: &str = "lobu_runs_submitted_total";
pub(crate) const QUEUE_WAIT: &str = "lobu_queue_wait_seconds";
pub(crate) const FIRST_OUTPUT: &str = "lobu_first_output_seconds";
pub(crate) const TURN_SECONDS: &str = "lobu_turn_seconds";
pub(crate) const TURNS: &str = "lobu_turns_total";
pub(crate) const HYDRATE_SECONDS: &str = "lobu_hydrate_seconds";
pub(crate) const PERSIST_SECONDS: &str = "lobu_persist_seconds";
pub(crate) const PERSIST_BYTES: &str = "lobu_persist_bytes_total";
pub(crate) const IN_FLIGHT: &str = "lobu_runs_in_flight";
pub(crate) const QUEUE_DEPTH: &str = "lobu_queue_depth";
pub(crate) const EVENTS_LOST: &str = "lobu_events_lost_total";
pub(crate) const RETENTION_PASSES: &str = "lobu_retention_passes_total";
pub(crate) const RETENTION_REMOVED: &str = "lobu_retention_removed_total";

/// Describe every metric (unit and help text) to the installed recorder. Building a
/// runtime calls it; call it again if the recorder is installed after the runtime is built.
/// Describing twice is harmless.
///
/// The metrics (times in seconds; `org?`: only with
/// [`Settings::metrics_org_label`](crate::Settings::metrics_org_label) on):
///
/// | name | type | labels | what |
/// | --- | --- | --- | --- |
/// | `lobu_runs_submitted_total` | counter | agent, org?, kind | runs accepted (a matched idempotency key is not counted) |
/// | `lobu_queue_wait_seconds` | histogram | agent, org?, kind | a run's submit to its first claim (wall clocks of the submitting and the claiming replica) |
/// | `lobu_first_output_seconds` | histogram | agent, org? | an attempt's claim to its first streamed output |
/// | `lobu_turn_seconds` | histogram | agent, org?, kind, outcome | an attempt's claim to its end being recorded |
/// | `lobu_turns_total` | counter | agent, org?, kind, outcome | attempts by how they ended |
/// | `lobu_hydrate_seconds` | histogram | agent, org? | reading a conversation's head (cache hits included) |
/// | `lobu_persist_seconds` | histogram | agent, org? | committing a turn's transcript with its run |
/// | `lobu_persist_bytes_total` | counter | agent, org? | transcript bytes turns added |
/// | `lobu_runs_in_flight` | gauge | | runs this process executes now |
/// | `lobu_queue_depth` | gauge | | runs pending on the queue, as last sampled |
/// | `lobu_events_lost_total` | counter | | run events the store failed to keep |
/// | `lobu_retention_passes_total` | counter | | retention passes this replica ran |
/// | `lobu_retention_removed_total` | counter | what | items retention removed (`events`, `runs`, `conversations`, `snapshots`) |
///
/// `kind` is `turn` or `reset`. `outcome` is `completed`, `failed`, `timeout`, `cancelled`
/// (the run ended so), `retried` (the attempt failed; the run will be tried again),
/// `released` (handed back without counting an attempt: shutdown, a claim about to lapse),
/// `taken_over` (a newer claim owns the conversation) or `lost` (the end could not be
/// recorded; the claim lapses and the run is re-delivered).
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(RUNS_SUBMITTED, Unit::Count, "Runs accepted onto the queue.");
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Time from a run's submit to its first claim (wall clocks of both replicas)."
    );
    describe_histogram!(
        FIRST_OUTPUT,
        Unit::Seconds,
        "Time from an attempt's claim to its first streamed output."
    );
    describe_histogram!(
        TURN_SECONDS,
        Unit::Seconds,
        "Time from an attempt's claim to its end being recorded, by outcome."
    );
    describe_counter!(TURNS, Unit::Count, "Attempts of runs, by outcome.");
    describe_histogram!(
        HYDRATE_SECONDS,
        Unit::Seconds,
        "Time reading a conversation's head transcript (cache hits included)."
    );
    describe_histogram!(
        PERSIST_SECONDS,
        Unit::Seconds,
        "Time committing a turn's transcript together with its run."
    );
    describe_counter!(PERSIST_BYTES, Unit::Bytes, "Transcript bytes turns added.");
    describe_gauge!(IN_FLIGHT, Unit::Count, "Runs this runtime executes now.");
    describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "Runs pending on the queue, as last sampled."
    );
    describe_counter!(
        EVENTS_LOST,
        Unit::Count,
        "Run events that could not be stored."
    );
    describe_counter!(
        RETENTION_PASSES,
        Unit::Count,
        "Retention passes this replica ran."
    );
    describe_counter!(
        RETENTION_REMOVED,
        Unit::Count,
        "Items retention removed, by what they were."
    );
}

/// Which orgs label the runtime's metrics with `org`: orgs can be many (one per customer),
/// and every label value is a time series in the host's metrics system. In a config file:
/// `"off"`, `"every"`, or `{ only = ["acme", "globex"] }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OrgLabel {
    /// No `org` label (the default).
    #[default]
    Off,
    /// Every org is its own label value: only for hosts with few orgs.
    Every,
    /// These orgs are their own label value; every other org is `_other`. At most
    /// [`MAX_LABELLED_ORGS`], at least one.
    Only(BTreeSet<OrgId>),
}

/// The most orgs [`OrgLabel::Only`] may list.
pub const MAX_LABELLED_ORGS: usize = 1000;

/// The `org` label value of orgs [`OrgLabel::Only`] does not list.
const OTHER_ORG: &str = "_other";

impl OrgLabel {
    /// `InvalidInput` (naming `metrics_org_label`) for an empty or oversized list.
    pub(crate) fn validate(&self) -> Result<()> {
        if let OrgLabel::Only(orgs) = self
            && (orgs.is_empty() || orgs.len() > MAX_LABELLED_ORGS)
        {
            return Err(Error::invalid(format!(
                "metrics_org_label must list between 1 and {MAX_LABELLED_ORGS} orgs, got {}",
                orgs.len()
            )));
        }
        Ok(())
    }

    fn value(&self, org: &OrgId) -> Option<String> {
        match self {
            OrgLabel::Off => None,
            OrgLabel::Every => Some(org.as_str().to_owned()),
            OrgLabel::Only(orgs) if orgs.contains(org) => Some(org.as_str().to_owned()),
            OrgLabel::Only(_) => Some(OTHER_ORG.to_owned()),
        }
    }
}

/// The labels every per-conversation metric has: `agent`, and `org` if the settings say.
pub(crate) fn labels(settings: &Settings, key: &ConversationKey) -> Vec<Label> {
    let mut labels = vec![Label::new("agent", key.agent.as_str().to_owned())];
    if let Some(org) = settings.metrics_org_label.value(&key.org) {
        labels.push(Label::new("org", org));
    }
    labels
}

fn with(labels: &[Label], more: &[(&'static str, &'static str)]) -> Vec<Label> {
    let mut all = labels.to_vec();
    all.extend(more.iter().map(|(k, v)| Label::new(*k, *v)));
    all
}

/// How an attempt ended, for `lobu_turns_total` and `lobu_turn_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TurnOutcome {
    Ended(TerminalStatus),
    Retried,
    Released,
    TakenOver,
    Lost,
}

impl TurnOutcome {
    fn as_str(self) -> &'static str {
        match self {
            TurnOutcome::Ended(status) => status.as_str(),
            TurnOutcome::Retried => "retried",
            TurnOutcome::Released => "released",
            TurnOutcome::TakenOver => "taken_over",
            TurnOutcome::Lost => "lost",
        }
    }
}

pub(crate) fn run_submitted(labels: &[Label], kind: RunKind) {
    metrics::counter!(RUNS_SUBMITTED, with(labels, &[("kind", kind.as_str())])).increment(1);
}

/// Record the wait of a first attempt from its submit (a retry's wait is its backoff). A
/// clock that ran backwards across replicas records nothing.
pub(crate) fn queue_wait(labels: &[Label], kind: RunKind, attempt: u32, since: SystemTime) {
    if attempt != 1 {
        return;
    }
    if let Ok(waited) = SystemTime::now().duration_since(since) {
        let labels = with(labels, &[("kind", kind.as_str())]);
        metrics::histogram!(QUEUE_WAIT, labels).record(waited.as_secs_f64());
    }
}

pub(crate) fn turn_ended(labels: &[Label], kind: RunKind, outcome: TurnOutcome, took: Duration) {
    let labels = with(
        labels,
        &[("kind", kind.as_str()), ("outcome", outcome.as_str())],
    );
    metrics::counter!(TURNS, labels.iter()).increment(1);
    metrics::histogram!(TURN_SECONDS, labels).record(took.as_secs_f64());
}

pub(crate) fn hydrated(labels: &[Label], took: Duration) {
    metrics::histogram!(HYDRATE_SECONDS, labels.iter()).record(took.as_secs_f64());
}

pub(crate) fn persisted(labels: &[Label], took: Duration) {
    metrics::histogram!(PERSIST_SECONDS, labels.iter()).record(took.as_secs_f64());
}

pub(crate) fn persisted_bytes(labels: &[Label], bytes: u64) {
    metrics::counter!(PERSIST_BYTES, labels.iter()).increment(bytes);
}

pub(crate) fn in_flight(delta: f64) {
    metrics::gauge!(IN_FLIGHT).increment(delta);
}

pub(crate) fn queue_depth(depth: u64) {
    metrics::gauge!(QUEUE_DEPTH).set(depth as f64);
}

pub(crate) fn events_lost(count: u64) {
    metrics::counter!(EVENTS_LOST).increment(count);
}

pub(crate) fn retention_pass(removed: &[(&'static str, u64)]) {
    metrics::counter!(RETENTION_PASSES).increment(1);
    for (what, count) in removed {
        metrics::counter!(RETENTION_REMOVED, "what" => *what).increment(*count);
    }
}

/// `lobu_first_output_seconds` of one attempt: recorded at its first streamed output.
#[derive(Debug)]
pub(crate) struct FirstOutput {
    claimed_at: Instant,
    labels: Vec<Label>,
    seen: AtomicBool,
}

impl FirstOutput {
    pub(crate) fn new(claimed_at: Instant, labels: Vec<Label>) -> Self {
        FirstOutput {
            claimed_at,
            labels,
            seen: AtomicBool::new(false),
        }
    }

    /// An output was streamed: the first one is recorded.
    pub(crate) fn output(&self) {
        if !self.seen.swap(true, Ordering::Relaxed) {
            let took = self.claimed_at.elapsed().as_secs_f64();
            metrics::histogram!(FIRST_OUTPUT, self.labels.iter()).record(took);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_org_label_follows_the_setting_and_lists_are_bounded() {
        let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
        let names = |settings: &Settings| -> Vec<(String, String)> {
            labels(settings, &key)
                .iter()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect()
        };
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let mut settings = Settings::default();
        assert_eq!(names(&settings), [pair("agent", "bot")]);
        settings.metrics_org_label = OrgLabel::Every;
        assert_eq!(
            names(&settings),
            [pair("agent", "bot"), pair("org", "acme")]
        );
        let other = OrgId::new("other").unwrap();
        settings.metrics_org_label = OrgLabel::Only(BTreeSet::from([other]));
        assert_eq!(
            names(&settings),
            [pair("agent", "bot"), pair("org", "_other")]
        );
        let empty = OrgLabel::Only(BTreeSet::new());
        assert!(empty.validate().is_err());
        let many = (0..=MAX_LABELLED_ORGS).map(|i| OrgId::new(format!("o{i}")).unwrap());
        assert!(OrgLabel::Only(many.collect()).validate().is_err());
    }
}
