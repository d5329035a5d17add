//! Renewing a run's conversation lease and queue claim while it executes.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use lobu_core::{Claim, ErrorKind, Lease};
use tokio::task::JoinHandle;
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
}

/// What the heartbeat knows when it stops.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    /// What another worker took over, if anything.
    pub(crate) lost: Option<Lost>,
    /// Until when the queue claim is held for sure: the expiry of its last renewal.
    pub(crate) claim_until: SystemTime,
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
    /// and retried at the next beat; if ownership really was lost, the fenced persist or
    /// queue call refuses this worker's late writes anyway.
    pub(crate) fn start(
        shared: Arc<Shared>,
        lease: Lease,
        claim: Claim,
        turn: CancellationToken,
    ) -> Self {
        let held = Arc::new(Mutex::new(Held {
            lost: None,
            claim_until: claim.expires_at,
        }));
        let record = held.clone();
        let span = tracing::Span::current();
        let task = tokio::spawn(
            async move {
                let settings = &shared.settings;
                let mut tick = tokio::time::interval(settings.heartbeat_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await; // the first tick is immediate
                loop {
                    tick.tick().await;
                    let lease_result = shared.backend.locks.renew(&lease, settings.lease_ttl).await;
                    let claim_result = shared
                        .backend
                        .queue
                        .heartbeat(&claim, settings.claim_ttl)
                        .await;
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
                    if let Err(error) = lease_result {
                        tracing::warn!(%error, "renewing the conversation lease failed");
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

fn lock(held: &Mutex<Held>) -> std::sync::MutexGuard<'_, Held> {
    // Every update is one field assignment, so a poisoned lock holds consistent data.
    held.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}
