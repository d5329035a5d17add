//! Renewing a run's claim (its conversation's ownership) while it executes.
//!
//! Deadlines are measured on the local monotonic clock from when each renewal was *sent*:
//! the store's expiry timestamps come from its own clock (PostgreSQL's, say), and comparing
//! them with this machine's clock would let a replica whose clock runs behind keep its agent
//! running after another replica took over.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lobu_core::{Claim, ErrorKind};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::runtime::Shared;

/// What the heartbeat found when it stopped the turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lost {
    /// The claim was taken over: the run was re-delivered, or the conversation has a newer
    /// owner.
    Claim,
    /// The run was cancelled through the queue (`Runtime::cancel`, on any replica).
    Cancelled,
    /// Not taken over yet, but the claim was about to run out without a renewal (the store
    /// did not answer): another worker may take over at its expiry, and two turns of one
    /// conversation must never run at once.
    Expiring,
}

/// What the heartbeat knows when it stops.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    /// What happened to the claim, if anything.
    pub(crate) lost: Option<Lost>,
    /// Until when the claim is held for sure, on the local monotonic clock: the send time
    /// of its last successful renewal plus the claim's duration.
    pub(crate) claim_until: Instant,
}

impl Held {
    /// When the turn must stop: `margin` before the claim can run out.
    fn deadline(&self, margin: Duration) -> Instant {
        self.claim_until
            .checked_sub(margin)
            .unwrap_or(self.claim_until)
    }
}

/// A running heartbeat; [`Heartbeat::stop`] ends it.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    task: JoinHandle<()>,
    held: Arc<Mutex<Held>>,
}

impl Heartbeat {
    /// Renew `claim` every heartbeat interval (one store call a beat). When it was taken
    /// over, record it and cancel `turn`: someone else owns the conversation now. Other
    /// errors are logged and retried at the next beat, but only until shortly before the
    /// last renewal runs out: then the turn is cancelled too, as another worker may take
    /// over at the expiry (fencing would refuse this worker's late writes, but the two
    /// agents would overlap). `claimed_at` is when the claim call was sent. A `poke` renews
    /// at once (a cancellation asked for in this process is heard within one round trip).
    pub(crate) fn start(
        shared: Arc<Shared>,
        claim: Claim,
        claimed_at: Instant,
        turn: CancellationToken,
        poke: Arc<Notify>,
    ) -> Self {
        let ttl = shared.settings.claim_ttl;
        let held = Arc::new(Mutex::new(Held {
            lost: None,
            claim_until: claimed_at + ttl,
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
                        tokio::select! {
                            _ = tick.tick() => {}
                            () = poke.notified() => {}
                        }
                        let sent = Instant::now();
                        (sent, shared.backend.queue.heartbeat(&claim, ttl).await)
                    };
                    let (sent, result) = tokio::select! {
                        // A renewal that answered wins over a deadline reached meanwhile.
                        biased;
                        results = beat => results,
                        () = tokio::time::sleep_until(deadline) => {
                            tracing::warn!(
                                ?margin,
                                "the claim is about to run out unrenewed; cancelling the run"
                            );
                            lock(&record).lost = Some(Lost::Expiring);
                            turn.cancel();
                            return;
                        }
                    };
                    match result {
                        Ok(_) => lock(&record).claim_until = sent + ttl,
                        Err(e) if e.is(ErrorKind::Cancelled) => {
                            tracing::info!("the run was cancelled; stopping its turn");
                            lock(&record).lost = Some(Lost::Cancelled);
                            turn.cancel();
                            return;
                        }
                        Err(e) if e.is(ErrorKind::Fenced) => {
                            tracing::warn!("another worker took over; cancelling the run");
                            lock(&record).lost = Some(Lost::Claim);
                            turn.cancel();
                            return;
                        }
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

/// Whether a claim sent at `claimed_at` is already within the stop margin of running out,
/// so its turn must not start at all.
pub(crate) fn arrived_too_late(settings: &crate::Settings, claimed_at: Instant) -> bool {
    Instant::now() + stop_margin(settings) >= claimed_at + settings.claim_ttl
}

/// How long before its claim runs out an unrenewed turn is stopped: one heartbeat interval,
/// so the stop takes effect before another worker can take over, but at most a quarter of
/// the claim, so the deadline never comes before the first renewal.
fn stop_margin(settings: &crate::Settings) -> Duration {
    settings.heartbeat_interval.min(settings.claim_ttl / 4)
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
