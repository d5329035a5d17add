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

use lobu_core::{ConversationKey, Result};

use crate::execute::bounded;
use crate::metrics::{add, bump};
use crate::runtime::Shared;

/// The longest pause between two passes (a shorter retention prunes more often).
const PRUNE_AT_LEAST_EVERY: Duration = Duration::from_secs(10 * 60);

/// The conversation whose lease a retention pass holds, so that one replica of a fleet runs
/// it at a time. Org `_lobu` is reserved for the runtime's own leases.
pub(crate) const RETENTION_KEY: (&str, &str, &str) = ("_lobu", "_lobu", "retention");

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

/// Take the fleet's retention lease, run a pass, give the lease back; another replica's
/// live lease means it runs one now, and this replica skips its turn.
async fn leased_pass(shared: &Shared) -> Result<()> {
    let (org, agent, conversation) = RETENTION_KEY;
    let key = ConversationKey::parse(org, agent, conversation)?;
    // Longer than the pass can take: three steps, each bounded by one claim period.
    let ttl = shared.settings.claim_ttl.saturating_mul(4);
    let locks = &shared.backend.locks;
    let Some(lease) = bounded(
        shared,
        "taking the retention lease",
        locks.try_acquire(&key, ttl),
    )
    .await?
    else {
        return Ok(());
    };
    let pass = pass(shared).await;
    if let Err(error) = bounded(
        shared,
        "releasing the retention lease",
        locks.release(&lease),
    )
    .await
    {
        tracing::info!(%error, "the retention lease will lapse on its own");
    }
    pass
}

/// One pass: events, runs, then idle conversations.
async fn pass(shared: &Shared) -> Result<()> {
    let settings = &shared.settings;
    let counters = &shared.counters;
    bump(&counters.retention_passes);
    let queue = &shared.backend.queue;
    let events = queue.prune_events(cutoff(settings.event_retention));
    let events = bounded(shared, "pruning run events", events).await?;
    add(&counters.events_pruned, events);
    let runs = queue.prune_runs(cutoff(settings.run_retention));
    let runs = bounded(shared, "pruning finished runs", runs).await?;
    add(&counters.runs_pruned, runs);
    let (mut conversations, mut snapshots) = (0, 0);
    if let Some(idle) = settings.idle_retention {
        let prune = shared.backend.sessions.prune(cutoff(idle));
        let report = bounded(shared, "pruning idle conversations", prune).await?;
        (conversations, snapshots) = (report.conversations, report.snapshots);
        add(&counters.conversations_pruned, conversations);
    }
    if events + runs + conversations + snapshots > 0 {
        tracing::info!(
            events,
            runs,
            conversations,
            snapshots,
            "retention pass removed old data"
        );
    } else {
        tracing::debug!("retention pass found nothing to remove");
    }
    Ok(())
}

fn cutoff(kept_for: Duration) -> SystemTime {
    SystemTime::now()
        .checked_sub(kept_for)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}
