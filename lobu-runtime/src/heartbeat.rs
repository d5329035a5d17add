//! Renewing a run's conversation lease and queue claim while it executes.

use std::sync::{Arc, Mutex};

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

/// A running heartbeat; [`Heartbeat::stop`] ends it.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    task: JoinHandle<()>,
    lost: Arc<Mutex<Option<Lost>>>,
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
        let lost = Arc::new(Mutex::new(None));
        let record = lost.clone();
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
                        *record.lock().unwrap_or_else(|p| p.into_inner()) = Some(found);
                        turn.cancel();
                        return;
                    }
                    if let Err(error) = lease_result {
                        tracing::warn!(%error, "renewing the conversation lease failed");
                    }
                    if let Err(error) = claim_result {
                        tracing::warn!(%error, "heartbeating the run claim failed");
                    }
                }
            }
            .instrument(span),
        );
        Heartbeat { task, lost }
    }

    /// What was lost so far, without stopping.
    pub(crate) fn lost(&self) -> Option<Lost> {
        *self.lost.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stop renewing; returns what was lost, if anything.
    pub(crate) async fn stop(mut self) -> Option<Lost> {
        self.task.abort();
        let _ = (&mut self.task).await;
        self.lost()
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}
