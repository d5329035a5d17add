//! Renewing a run's conversation lease and queue claim while it executes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lobu_core::{Claim, ErrorKind, Lease};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::runtime::Shared;

/// What the heartbeat found another worker took over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lost {
    /// The conversation lease: another worker acquired it (its fence is newer).
    Lease,
    /// The queue claim: the run was re-delivered to another worker.
    Claim,
    /// Neither was taken over yet, but the lease or the claim was about to run out without a
    /// renewal (the store did not answer): another worker may take over at its expiry, and
    /// two turns of one conversation must never run at once.
    Expiring,
}

/// What the heartbeat knows when it stops.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    /// What another worker took over, if anything.
    pub(crate) lost: Option<Lost>,
    /// Until when the queue claim is held for sure: the expiry of its last renewal.
    pub(crate) claim_until: SystemTime,
    /// Until when the conversation lease is held for sure.
    lease_until: SystemTime,
}

impl Held {
    /// When the turn must stop: `margin` before the lease or the claim runs out.
    fn deadline(&self, margin: Duration) -> Instant {
        let until = self.lease_until.min(self.claim_until);
        let left = until
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .saturating_sub(margin);
        Instant::now() + left
    }
}

/// A running heartbeat; [`Heartbeat::stop`] ends it.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    task: JoinHandle<()>,
    held: Arc<Mutex<Held>>,
}

impl Heartbeat {
    /// Renew `lease` and `claim` every heartbeat interval. When either was taken over,
    /// record it and cancel `turn`: someone else owns the work now. Other errors are logged
    /// and retried at the next beat, but only until shortly before the last renewal runs
    /// out: then the turn is cancelled too, as another worker may take over at the expiry
    /// (fencing would refuse this worker's late writes, but the two agents would overlap).
    pub(crate) fn start(
        shared: Arc<Shared>,
        lease: Lease,
        claim: Claim,
        turn: CancellationToken,
    ) -> Self {
        let held = Arc::new(Mutex::new(Held {
            lost: None,
            claim_until: claim.expires_at,
            lease_until: lease.expires_at,
        }));
        let record = held.clone();
        let span = tracing::Span::current();
        let task = tokio::spawn(
            async move {
                let settings = &shared.settings;
                let mut tick = tokio::time::interval(settings.heartbeat_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await; // the first tick is immediate
                let margin = stop_margin(settings);
                loop {
                    let deadline = lock(&record).deadline(margin);
                    let beat = async {
                        tick.tick().await;
                        let lease = shared.backend.locks.renew(&lease, settings.lease_ttl).await;
                        let claim = shared
                            .backend
                            .queue
                            .heartbeat(&claim, settings.claim_ttl)
                            .await;
                        (lease, claim)
                    };
                    let (lease_result, claim_result) = tokio::select! {
                        // A renewal that answered wins over a deadline reached meanwhile.
                        biased;
                        results = beat => results,
                        () = tokio::time::sleep_until(deadline) => {
                            tracing::warn!(
                                ?margin,
                                "the lease or claim is about to run out unrenewed; cancelling the run"
                            );
                            lock(&record).lost = Some(Lost::Expiring);
                            turn.cancel();
                            return;
                        }
                    };
                    let found = match (&lease_result, &claim_result) {
                        (_, Err(e)) if e.is(ErrorKind::Fenced) => Some(Lost::Claim),
                        (Err(e), _) if e.is(ErrorKind::Fenced) => Some(Lost::Lease),
                        _ => None,
                    };
                    if let Some(found) = found {
                        tracing::warn!(?found, "another worker took over; cancelling the run");
                        lock(&record).lost = Some(found);
                        turn.cancel();
                        return;
                    }
                    match lease_result {
                        Ok(renewed) => lock(&record).lease_until = renewed.expires_at,
                        Err(error) => tracing::warn!(%error, "renewing the conversation lease failed"),
                    }
                    match claim_result {
                        Ok(renewed) => lock(&record).claim_until = renewed.expires_at,
                        Err(error) => tracing::warn!(%error, "heartbeating the run claim failed"),
                    }
                }
            }
            .instrument(span),
        );
        Heartbeat { task, held }
    }

    /// Stop renewing; returns what was lost, if anything, and how long the claim is held.
    pub(crate) async fn stop(mut self) -> Held {
        self.task.abort();
        let _ = (&mut self.task).await;
        *lock(&self.held)
    }
}

/// How long before its lease or claim runs out an unrenewed turn is stopped: one heartbeat
/// interval, so the stop takes effect before another worker can take over, but at most a
/// quarter of the shorter lease, so the deadline never comes before the first renewal.
fn stop_margin(settings: &crate::Settings) -> Duration {
    let shortest = settings.lease_ttl.min(settings.claim_ttl);
    settings.heartbeat_interval.min(shortest / 4)
}

fn lock(held: &Mutex<Held>) -> std::sync::MutexGuard<'_, Held> {
    // Every update is one field assignment, so a poisoned lock holds consistent data.
    held.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}
