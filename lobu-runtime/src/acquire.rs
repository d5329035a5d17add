//! Taking a claimed run's conversation lease, waiting a while when it is busy.
//!
//! The queue never claims two runs of one conversation at once, so a busy lease is held by
//! a worker that died or stalled (its lease runs out within one lease period) or by someone
//! outside the runtime. Handing the run back at once made this worker claim the same run
//! again and again (it is the oldest), pausing all of its claiming each time; waiting here,
//! with the claim heartbeated, holds up only this conversation, which is blocked anyway.

use lobu_core::{Claim, ErrorKind, Lease};
use tokio::time::Instant;

use crate::execute::bounded;
use crate::metrics::bump;
use crate::runtime::Shared;

/// What came of trying to take the lease.
#[derive(Debug)]
pub(crate) enum Acquired {
    /// The lease, and the claim as last renewed while waiting.
    Lease(Lease, Claim),
    /// Still busy after a lease period (its holder renews it), or shutdown began: hand the
    /// run back, uncounted.
    Busy,
    /// The lease store failed: hand the run back, uncounted.
    Failed(lobu_core::Error),
    /// The claim was re-delivered to another worker while waiting: nothing to hand back.
    LostClaim,
}

/// Take `claim`'s conversation lease; retry a busy one with backoff (from `busy_backoff`,
/// doubling up to the heartbeat interval) for at most one lease period.
pub(crate) async fn acquire(shared: &Shared, mut claim: Claim) -> Acquired {
    let settings = &shared.settings;
    let locks = &shared.backend.locks;
    let give_up = Instant::now() + settings.lease_ttl;
    let mut next_beat = Instant::now() + settings.heartbeat_interval;
    let mut backoff = settings.busy_backoff.min(settings.heartbeat_interval);
    loop {
        let attempt = locks.try_acquire(&claim.key, settings.lease_ttl);
        match bounded(shared, "acquiring the lease", attempt).await {
            Ok(Some(lease)) => return Acquired::Lease(lease, claim),
            Ok(None) => bump(&shared.counters.lease_waits),
            Err(error) => return Acquired::Failed(error),
        }
        if Instant::now() + backoff > give_up {
            return Acquired::Busy;
        }
        tracing::debug!(?backoff, "conversation lease busy; waiting");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shared.stop_claiming.cancelled() => return Acquired::Busy,
        }
        backoff = (backoff * 2).min(settings.heartbeat_interval);
        if Instant::now() >= next_beat {
            let beat = shared.backend.queue.heartbeat(&claim, settings.claim_ttl);
            match bounded(shared, "heartbeating the run claim", beat).await {
                Ok(renewed) => claim = renewed,
                Err(e) if e.is(ErrorKind::Fenced) => return Acquired::LostClaim,
                Err(error) => tracing::warn!(%error, "heartbeating the run claim failed"),
            }
            next_beat = Instant::now() + settings.heartbeat_interval;
        }
    }
}
