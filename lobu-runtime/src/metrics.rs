//! Counters the runtime keeps, and the [`Metrics`] snapshot a host reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// A snapshot of the runtime's counters since it was built.
///
/// Times are totals in microseconds (divide by the matching count for an average).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Metrics {
    /// Runs claimed from the queue (every attempt, including ones handed back).
    pub runs_claimed: u64,
    /// Runs this process completed.
    pub runs_completed: u64,
    /// Attempts that failed, timed out or were cancelled (retried or final).
    pub attempts_failed: u64,
    /// Runs handed back without counting an attempt (shutdown, a claim about to lapse).
    pub runs_released: u64,
    /// Runs executing right now.
    pub in_flight: u64,
    /// Hydrates that read the store.
    pub hydrate_reads: u64,
    /// Hydrates served from the cache after the version check.
    pub hydrate_cache_hits: u64,
    /// Transcript bytes read by hydrates.
    pub hydrate_bytes: u64,
    /// Time spent hydrating (version check included), in microseconds.
    pub hydrate_micros: u64,
    /// Completed turns persisted.
    pub persist_writes: u64,
    /// Bytes those turns added to their transcripts.
    pub persist_bytes: u64,
    /// Time spent persisting, in microseconds.
    pub persist_micros: u64,
    /// Run events that could not be stored (the store failed; subscribers elsewhere miss them).
    pub events_lost: u64,
    /// Stored events removed by retention.
    pub events_pruned: u64,
    /// Finished runs removed by retention.
    pub runs_pruned: u64,
    /// Idle conversations removed by retention.
    pub conversations_pruned: u64,
    /// Retention passes this replica ran (one replica at a time across the fleet).
    pub retention_passes: u64,
    /// Runs pending on the queue, as last sampled by the worker loop (`None` before the
    /// first sample).
    pub queue_depth: Option<u64>,
}

/// The live counters behind [`Metrics`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) runs_claimed: AtomicU64,
    pub(crate) runs_completed: AtomicU64,
    pub(crate) attempts_failed: AtomicU64,
    pub(crate) runs_released: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) hydrate_reads: AtomicU64,
    pub(crate) hydrate_cache_hits: AtomicU64,
    pub(crate) hydrate_bytes: AtomicU64,
    pub(crate) hydrate_micros: AtomicU64,
    pub(crate) persist_writes: AtomicU64,
    pub(crate) persist_bytes: AtomicU64,
    pub(crate) persist_micros: AtomicU64,
    pub(crate) events_lost: AtomicU64,
    pub(crate) events_pruned: AtomicU64,
    pub(crate) runs_pruned: AtomicU64,
    pub(crate) conversations_pruned: AtomicU64,
    pub(crate) retention_passes: AtomicU64,
    /// `u64::MAX` until the first sample.
    pub(crate) queue_depth: AtomicU64,
}

/// Add one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

/// Add `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Add an elapsed time, in microseconds.
pub(crate) fn add_time(counter: &AtomicU64, elapsed: Duration) {
    add(
        counter,
        u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
    );
}

impl Counters {
    pub(crate) fn new() -> Self {
        let counters = Counters::default();
        counters.queue_depth.store(u64::MAX, Ordering::Relaxed);
        counters
    }

    pub(crate) fn snapshot(&self) -> Metrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let depth = get(&self.queue_depth);
        Metrics {
            runs_claimed: get(&self.runs_claimed),
            runs_completed: get(&self.runs_completed),
            attempts_failed: get(&self.attempts_failed),
            runs_released: get(&self.runs_released),
            in_flight: get(&self.in_flight),
            hydrate_reads: get(&self.hydrate_reads),
            hydrate_cache_hits: get(&self.hydrate_cache_hits),
            hydrate_bytes: get(&self.hydrate_bytes),
            hydrate_micros: get(&self.hydrate_micros),
            persist_writes: get(&self.persist_writes),
            persist_bytes: get(&self.persist_bytes),
            persist_micros: get(&self.persist_micros),
            events_lost: get(&self.events_lost),
            events_pruned: get(&self.events_pruned),
            runs_pruned: get(&self.runs_pruned),
            conversations_pruned: get(&self.conversations_pruned),
            retention_passes: get(&self.retention_passes),
            queue_depth: (depth != u64::MAX).then_some(depth),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_depth_is_unknown_until_sampled() {
        let counters = Counters::new();
        assert_eq!(counters.snapshot().queue_depth, None);
        counters.queue_depth.store(7, Ordering::Relaxed);
        bump(&counters.runs_released);
        add_time(&counters.persist_micros, Duration::from_millis(2));
        let m = counters.snapshot();
        assert_eq!(m.queue_depth, Some(7));
        assert_eq!(m.runs_released, 1);
        assert_eq!(m.persist_micros, 2000);
    }
}
