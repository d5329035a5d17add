//! Steering: the messages sent with the `steer` strategy while a turn runs, offered to that
//! turn through [`Turn::take_steered`](crate::Turn::take_steered) and
//! [`Turn::steered_waiting`](crate::Turn::steered_waiting).
//!
//! Taking is not durable by itself: the store only offers (`RunQueue::steerable`), and the
//! runs a turn took complete with its commit, atomically (`Commit::steered`). A turn that
//! dies after taking loses nothing: its next attempt is offered the same messages again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lobu_core::{Claim, Result, RunId, RunQueue, RunTrace, Steered};
use tokio::time::Instant;

use crate::events::RunEvent;
use crate::recorder::EventRecorder;

/// The longest a [`Steering::waiting`] sleeps between looks when no wake-up comes (a wake-up
/// is a hint: a lost one costs at most this).
const LOOK_AT_MOST_EVERY: Duration = Duration::from_secs(1);
/// The shortest time between two looks of one wait: the run's own events wake it too, and
/// each look is a store read.
const LOOK_AT_LEAST_EVERY: Duration = Duration::from_millis(100);

/// One attempt's view of the steered messages waiting for it.
pub(crate) struct Steering {
    queue: Arc<dyn RunQueue>,
    claim: Claim,
    log: Arc<EventRecorder>,
    /// What this attempt took, in order: its commit completes these runs.
    taken: Mutex<Vec<RunId>>,
}

impl Steering {
    pub(crate) fn new(queue: Arc<dyn RunQueue>, claim: Claim, log: Arc<EventRecorder>) -> Self {
        Steering {
            queue,
            claim,
            log,
            taken: Mutex::new(Vec::new()),
        }
    }

    /// The messages waiting that this attempt has not taken yet, without taking them.
    async fn offered(&self) -> Result<Vec<Steered>> {
        let offered = self.queue.steerable(&self.claim).await?;
        let taken = self.lock().clone();
        Ok(offered
            .into_iter()
            .filter(|steered| !taken.contains(&steered.run))
            .collect())
    }

    /// Take every message waiting, oldest first (one store read); each is told to the run's
    /// subscribers as [`RunEvent::Steered`].
    pub(crate) async fn take(&self) -> Result<Vec<Steered>> {
        let mut offered = self.queue.steerable(&self.claim).await?;
        // The trace context is the runtime's: the agent and the events never see it.
        for steered in &mut offered {
            RunTrace::take_from(&mut steered.payload);
        }
        let mut taken = self.lock();
        // Filtered under the lock, so two takes at once never take one message twice.
        let fresh: Vec<Steered> = offered
            .into_iter()
            .filter(|steered| !taken.contains(&steered.run))
            .collect();
        for steered in &fresh {
            taken.push(steered.run.clone());
            self.log.push(RunEvent::Steered {
                attempt: self.claim.attempt,
                run: steered.run.clone(),
                payload: steered.payload.clone(),
            });
        }
        Ok(fresh)
    }

    /// Resolve once a message this attempt has not taken is waiting. A steer submit wakes the
    /// run's followers (any replica, where the backend can), so this looks when woken, at
    /// most every 100 ms and at least every second.
    pub(crate) async fn waiting(&self) -> Result<()> {
        let (org, run) = (&self.claim.key.org, &self.claim.run);
        loop {
            let looked = Instant::now();
            if !self.offered().await?.is_empty() {
                return Ok(());
            }
            let since = looked.into_std();
            self.queue
                .wait_for_run(org, run, since, LOOK_AT_MOST_EVERY)
                .await;
            tokio::time::sleep_until(looked + LOOK_AT_LEAST_EVERY).await;
        }
    }

    /// The runs this attempt took, for its commit.
    pub(crate) fn taken(&self) -> Vec<RunId> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RunId>> {
        // Every update is one push, so a poisoned lock holds consistent data.
        self.taken.lock().unwrap_or_else(|p| p.into_inner())
    }
}
