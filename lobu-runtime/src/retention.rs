//! Retention that runs by itself: the worker loop starts a pass on a timer, and one replica
//! at a time across the fleet runs it (the pass holds a lease on [`RETENTION_KEY`] in the
//! backend). A pass removes stored events of runs finished longer than
//! [`Settings::event_retention`](crate::Settings::event_retention) ago, finished runs older
//! than [`Settings::run_retention`](crate::Settings::run_retention) (with their events and
//! idempotency keys), and, with [`Settings::idle_retention`](crate::Settings::idle_retention),
//! idle conversations and old forensic copies. Transcripts never depend on run retention.
//!
//! Each step is one backend call bounded by the claim period; passes are idempotent deletes,
//! so a pass cut short is finished by the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use lobu_core::{Backend, ConversationKey, Result};

use crate::execute::within;
use crate::metrics::{add, bump};
use crate::runtime::Shared;

/// The longest pause between two passes (a shorter retention prunes more often).
const PRUNE_AT_LEAST_EVERY: Duration = Duration::from_secs(10 * 60);

/// The conversation whose lease a retention pass holds, so that one replica of a fleet runs
/// it at a time. Org `_lobu` is reserved for the runtime's own leases.
pub const RETENTION_KEY: (&str, &str, &str) = ("_lobu", "_lobu", "retention");

/// How often the worker loop starts a pass: a quarter of the shortest retention, between a
/// second and ten minutes.
pub(crate) fn prune_every(shared: &Shared) -> Duration {
    let settings = &shared.settings;
    let shortest = [Some(settings.event_retention), Some(settings.run_retention)]
        .into_iter()
        .chain([settings.idle_retention])
        .flatten()
        .min()
        .unwrap_or(PRUNE_AT_LEAST_EVERY);
    (shortest / 4).clamp(Duration::from_secs(1), PRUNE_AT_LEAST_EVERY)
}

/// Start one pass in the background unless this replica's last one is still running (a pass
/// never holds up claiming).
pub(crate) fn start_pass(shared: &Arc<Shared>, running: &Arc<AtomicBool>) {
    if running.swap(true, Ordering::AcqRel) {
        return;
    }
    let (shared, running) = (shared.clone(), running.clone());
    tokio::spawn(async move {
        if let Err(error) = leased_pass(&shared).await {
            tracing::warn!(%error, "retention pass failed; the next pass retries");
        }
        running.store(false, Ordering::Release);
    });
}

/// Run a pass for this replica's worker loop, with its settings, metrics and logs.
async fn leased_pass(shared: &Shared) -> Result<()> {
    let settings = &shared.settings;
    let policy = RetentionPolicy {
        events: settings.event_retention,
        runs: settings.run_retention,
        idle: settings.idle_retention,
    };
    let counters = &shared.counters;
    let Some(report) = retention_pass(&shared.backend, &policy, settings.claim_ttl).await? else {
        return Ok(());
    };
    bump(&counters.retention_passes);
    add(&counters.events_pruned, report.events);
    add(&counters.runs_pruned, report.runs);
    add(&counters.conversations_pruned, report.conversations);
    if report.is_empty() {
        tracing::debug!("retention pass found nothing to remove");
    } else {
        tracing::info!(
            events = report.events,
            runs = report.runs,
            conversations = report.conversations,
            snapshots = report.snapshots,
            "retention pass removed old data"
        );
    }
    Ok(())
}

/// How long a retention pass keeps each kind of data (the runtime's come from
/// [`Settings`](crate::Settings): `event_retention`, `run_retention`, `idle_retention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Stored events of finished runs are kept this long after the run finished.
    pub events: Duration,
    /// Finished runs (with their idempotency keys and events) are kept this long.
    pub runs: Duration,
    /// Conversations idle this long are removed, with forensic copies older than it
    /// (`None`: conversations are kept for ever).
    pub idle: Option<Duration>,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetentionReport {
    /// Stored run events.
    pub events: u64,
    /// Finished runs.
    pub runs: u64,
    /// Idle conversations.
    pub conversations: u64,
    /// Snapshots (of those conversations, and old forensic copies).
    pub snapshots: u64,
}

impl RetentionReport {
    /// Whether the pass removed nothing.
    pub fn is_empty(&self) -> bool {
        *self == RetentionReport::default()
    }
}

/// Run one retention pass on `backend`: events, then finished runs, then (with
/// [`RetentionPolicy::idle`]) idle conversations. The pass holds the fleet's retention lease
/// (on [`RETENTION_KEY`]) so that no two replicas, nor an operator's `lobu prune`, run one at
/// once: `Ok(None)` when another holds it now. Each step is one backend call that must end
/// within `step_limit` (else `Unavailable`); steps are idempotent deletes, so a pass cut
/// short is finished by the next.
pub async fn retention_pass(
    backend: &Backend,
    policy: &RetentionPolicy,
    step_limit: Duration,
) -> Result<Option<RetentionReport>> {
    let (org, agent, conversation) = RETENTION_KEY;
    let key = ConversationKey::parse(org, agent, conversation)?;
    // Longer than the pass can take: three steps, each bounded by `step_limit`.
    let ttl = step_limit.saturating_mul(4);
    let locks = &backend.locks;
    let lease = within(
        step_limit,
        "taking the retention lease",
        locks.try_acquire(&key, ttl),
    );
    let Some(lease) = lease.await? else {
        return Ok(None);
    };
    let pass = pass(backend, policy, step_limit).await;
    let release = within(
        step_limit,
        "releasing the retention lease",
        locks.release(&lease),
    );
    if let Err(error) = release.await {
        tracing::info!(%error, "the retention lease will lapse on its own");
    }
    pass.map(Some)
}

async fn pass(
    backend: &Backend,
    policy: &RetentionPolicy,
    limit: Duration,
) -> Result<RetentionReport> {
    let queue = &backend.queue;
    let mut report = RetentionReport::default();
    let events = queue.prune_events(cutoff(policy.events));
    report.events = within(limit, "pruning run events", events).await?;
    let runs = queue.prune_runs(cutoff(policy.runs));
    report.runs = within(limit, "pruning finished runs", runs).await?;
    if let Some(idle) = policy.idle {
        let prune = backend.sessions.prune(cutoff(idle));
        let pruned = within(limit, "pruning idle conversations", prune).await?;
        (report.conversations, report.snapshots) = (pruned.conversations, pruned.snapshots);
    }
    Ok(report)
}

fn cutoff(kept_for: Duration) -> SystemTime {
    SystemTime::now()
        .checked_sub(kept_for)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}
