//! Event retention: the worker loop removes stored events of runs that finished longer than
//! [`Settings::event_retention`](crate::Settings::event_retention) ago. Transcripts and run
//! records are untouched: their lifetimes never depend on events.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crate::execute::bounded;
use crate::metrics::add;
use crate::runtime::Shared;

/// The longest pause between two passes (a shorter retention prunes more often).
const PRUNE_AT_LEAST_EVERY: Duration = Duration::from_secs(10 * 60);

/// How often the worker loop prunes events.
pub(crate) fn prune_every(shared: &Shared) -> Duration {
    (shared.settings.event_retention / 4).clamp(Duration::from_secs(1), PRUNE_AT_LEAST_EVERY)
}

/// Start one pass in the background unless one is still running (a pass never holds up
/// claiming). Every replica with a worker loop prunes; passes are idempotent deletes.
pub(crate) fn prune_events(shared: &Arc<Shared>, running: &Arc<AtomicBool>) {
    if running.swap(true, Ordering::AcqRel) {
        return;
    }
    let (shared, running) = (shared.clone(), running.clone());
    tokio::spawn(async move {
        let before = SystemTime::now()
            .checked_sub(shared.settings.event_retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let pass = shared.backend.queue.prune_events(before);
        match bounded(&shared, "pruning run events", pass).await {
            Ok(removed) => {
                add(&shared.counters.events_pruned, removed);
                if removed > 0 {
                    tracing::info!(removed, "old run events pruned");
                }
            }
            Err(error) => tracing::warn!(%error, "pruning run events failed; next pass retries"),
        }
        running.store(false, Ordering::Release);
    });
}
