//! Retention that runs by itself: the worker loop starts a pass on a timer, and one replica
//! at a time across the fleet runs it (the pass holds a lease on [`RETENTION_KEY`] in the
//! backend). A pass removes stored events of runs finished longer than
//! [`Settings::event_retention`](crate::Settings::event_retention) ago, completed runs older
//! than [`Settings::run_retention`](crate::Settings::run_retention) and failed ones older
//! than [`Settings::failed_run_retention`](crate::Settings::failed_run_retention) (with their
//! events and idempotency keys), idle conversations by
//! [`Settings::idle_retention`](crate::Settings::idle_retention) and per-agent windows, and
//! forensic copies older than
//! [`Settings::forensic_retention`](crate::Settings::forensic_retention). Transcripts never
//! depend on run retention.
//!
//! Each step is one backend call bounded by the claim period and by
//! [`Settings::retention_batch`](crate::Settings::retention_batch) items; steps are
//! idempotent deletes, so a pass cut short is finished by the next. [`retention_pass`] is
//! public: `lobu prune` runs the same pass (and its dry run).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use lobu_core::retention::{Agents, EventPrune, IdlePrune, RunPrune};
use lobu_core::{AgentId, Backend, ConversationKey, Result};

use crate::config::Settings;
use crate::execute::within;
use crate::instruments;
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
    let per_agent = settings.idle_retention_by_agent.values().flatten().copied();
    let shortest = [settings.event_retention, settings.run_retention]
        .into_iter()
        .chain([settings.forensic_retention])
        .chain(settings.idle_retention)
        .chain(per_agent)
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

/// The most rounds one pass runs while steps keep reaching their batch.
const MAX_ROUNDS: usize = 10;

/// Run a pass for this replica's worker loop, with its settings, metrics and logs.
async fn leased_pass(shared: &Shared) -> Result<()> {
    let policy = RetentionPolicy::from_settings(&shared.settings);
    let counters = &shared.counters;
    let step_limit = shared.settings.claim_ttl;
    let Some(report) = retention_pass(&shared.backend, &policy, step_limit).await? else {
        return Ok(());
    };
    bump(&counters.retention_passes);
    add(&counters.events_pruned, report.events);
    add(&counters.runs_pruned, report.runs);
    add(&counters.conversations_pruned, report.conversations);
    instruments::retention_pass(&[
        ("events", report.events),
        ("runs", report.runs),
        ("conversations", report.conversations),
        ("snapshots", report.snapshots),
    ]);
    if report.is_empty() {
        tracing::debug!("retention pass found nothing to remove");
    } else {
        tracing::info!(
            events = report.events,
            runs = report.runs,
            conversations = report.conversations,
            snapshots = report.snapshots,
            more = report.more,
            "retention pass removed old data"
        );
    }
    Ok(())
}

/// How long a retention pass keeps each kind of data. The runtime's comes from its
/// [`Settings`] ([`RetentionPolicy::from_settings`]); `lobu prune` builds its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Stored events of finished runs are kept this long after the run finished.
    pub events: Duration,
    /// Completed runs (with their idempotency keys and events) are kept this long.
    pub runs: Duration,
    /// Failed, timed-out and cancelled runs are kept this long (at least `runs`).
    pub failed_runs: Duration,
    /// Conversations idle this long are removed (`None`: kept for ever), but for agents in
    /// `idle_by_agent`.
    pub idle: Option<Duration>,
    /// Per-agent idle windows (`None`: that agent's conversations are kept for ever).
    pub idle_by_agent: BTreeMap<AgentId, Option<Duration>>,
    /// Forensic copies of failed attempts are kept this long.
    pub forensic: Duration,
    /// The most items one step removes; a pass runs up to ten rounds while a step reaches it.
    pub batch: usize,
    /// Count what a pass would remove; remove nothing (and take no lease).
    pub dry_run: bool,
}

impl RetentionPolicy {
    /// The policy [`Settings`] describe (what the worker loop's passes use).
    pub fn from_settings(settings: &Settings) -> Self {
        RetentionPolicy {
            events: settings.event_retention,
            runs: settings.run_retention,
            failed_runs: settings
                .failed_run_retention
                .unwrap_or(settings.run_retention)
                .max(settings.run_retention),
            idle: settings.idle_retention,
            idle_by_agent: settings.idle_retention_by_agent.clone(),
            forensic: settings.forensic_retention,
            batch: settings.retention_batch,
            dry_run: false,
        }
    }
}

/// What a retention pass removed (or, for a dry run, would remove).
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
    /// A step still had more than its batch after the pass's last round: the next pass
    /// goes on (a dry run counts one round only, so this says there is more than it counted).
    pub more: bool,
}

impl RetentionReport {
    /// Whether the pass removed nothing.
    pub fn is_empty(&self) -> bool {
        self.events + self.runs + self.conversations + self.snapshots == 0
    }
}

/// Run one retention pass on `backend`: stored events, finished runs (failed ones by their
/// own window), idle conversations (per agent, then the rest), old forensic copies; each
/// step removes at most [`RetentionPolicy::batch`] items and the pass repeats, up to ten
/// rounds, while a step reaches it. The pass holds the fleet's retention lease (on
/// [`RETENTION_KEY`]) so that no two replicas, nor an operator's `lobu prune`, remove at once:
/// `Ok(None)` when another holds it now. A dry run takes no lease and counts one round.
/// Each step is one backend call that must end within `step_limit` (else `Unavailable`);
/// steps are idempotent, so a pass cut short is finished by the next.
pub async fn retention_pass(
    backend: &Backend,
    policy: &RetentionPolicy,
    step_limit: Duration,
) -> Result<Option<RetentionReport>> {
    if policy.dry_run {
        return round(backend, policy, step_limit).await.map(Some);
    }
    let (org, agent, conversation) = RETENTION_KEY;
    let key = ConversationKey::parse(org, agent, conversation)?;
    // Longer than a round can take: five kinds of steps, each bounded by `step_limit`.
    let ttl = step_limit.saturating_mul(8);
    let locks = &backend.locks;
    let lease = within(
        step_limit,
        "taking the retention lease",
        locks.try_acquire(&key, ttl),
    );
    let Some(mut lease) = lease.await? else {
        return Ok(None);
    };
    let mut total = RetentionReport::default();
    let mut pass = Ok(());
    for _ in 0..MAX_ROUNDS {
        match round(backend, policy, step_limit).await {
            Ok(report) => {
                total.events += report.events;
                total.runs += report.runs;
                total.conversations += report.conversations;
                total.snapshots += report.snapshots;
                total.more = report.more;
            }
            Err(error) => {
                pass = Err(error);
                break;
            }
        }
        if !total.more {
            break;
        }
        let renew = within(
            step_limit,
            "renewing the retention lease",
            locks.renew(&lease, ttl),
        );
        match renew.await {
            Ok(renewed) => lease = renewed,
            Err(error) => {
                pass = Err(error);
                break;
            }
        }
    }
    let release = within(
        step_limit,
        "releasing the retention lease",
        locks.release(&lease),
    );
    if let Err(error) = release.await {
        tracing::info!(%error, "the retention lease will lapse on its own");
    }
    pass.map(|()| Some(total))
}

/// One round: each step once.
async fn round(
    backend: &Backend,
    policy: &RetentionPolicy,
    limit: Duration,
) -> Result<RetentionReport> {
    let (queue, sessions) = (&backend.queue, &backend.sessions);
    let (batch, dry_run) = (policy.batch, policy.dry_run);
    let mut report = RetentionReport::default();
    let full = |removed: u64| removed >= batch as u64;

    let events = EventPrune {
        finished_before: cutoff(policy.events),
        limit: batch,
        dry_run,
    };
    report.events = within(
        limit,
        "pruning run events",
        queue.prune_events_with(&events),
    )
    .await?;
    report.more |= full(report.events);

    let runs = RunPrune {
        completed_before: cutoff(policy.runs),
        failed_before: cutoff(policy.failed_runs.max(policy.runs)),
        limit: batch,
        dry_run,
    };
    report.runs = within(limit, "pruning finished runs", queue.prune_runs_with(&runs)).await?;
    report.more |= full(report.runs);

    let own_windows = policy.idle_by_agent.iter();
    let mut sweeps: Vec<(Agents, Duration)> = own_windows
        .filter_map(|(agent, window)| Some((Agents::Only(agent.clone()), (*window)?)))
        .collect();
    if let Some(idle) = policy.idle {
        let except = policy.idle_by_agent.keys().cloned().collect();
        sweeps.push((Agents::AllExcept(except), idle));
    }
    for (agents, window) in sweeps {
        let idle = IdlePrune {
            idle_before: Some(cutoff(window)),
            forensic_before: None,
            agents,
            limit: batch,
            dry_run,
        };
        let pruned = within(
            limit,
            "pruning idle conversations",
            sessions.prune_with(&idle),
        )
        .await?;
        report.conversations += pruned.conversations;
        report.snapshots += pruned.snapshots;
        report.more |= full(pruned.conversations);
    }

    let forensic = IdlePrune {
        idle_before: None,
        forensic_before: Some(cutoff(policy.forensic)),
        agents: Agents::All,
        limit: batch,
        dry_run,
    };
    let pruned = within(
        limit,
        "pruning forensic copies",
        sessions.prune_with(&forensic),
    )
    .await?;
    report.snapshots += pruned.snapshots;
    report.more |= full(pruned.snapshots);
    Ok(report)
}

fn cutoff(kept_for: Duration) -> SystemTime {
    SystemTime::now()
        .checked_sub(kept_for)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}
