//! The worker loop: claim runs and execute them until shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use lobu_core::{Claim, Error, ErrorKind, Result, RunTrace};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use crate::execute::{self, bounded};
use crate::instruments;
use crate::metrics::bump;
use crate::retention;
use crate::runtime::{Runtime, Shared};
use crate::spans;

impl Runtime {
    /// Claim runs and execute them, up to the configured concurrency, until
    /// [`shutdown`](Self::shutdown). Returns once every run it started has finished or been
    /// handed back. Spawn it: `tokio::spawn({ let rt = rt.clone(); async move { rt.run().await } })`.
    ///
    /// Only one loop may run per runtime at a time (a second call is `Busy`); raise the
    /// concurrency, or run more runtimes, for more throughput. After shutdown it returns at
    /// once.
    pub async fn run(&self) -> Result<()> {
        let shared = &self.shared;
        if shared.loop_running.swap(true, Ordering::AcqRel) {
            return Err(Error::new(
                ErrorKind::Busy,
                "the worker loop of this runtime is already running",
            ));
        }
        tracing::info!(worker = %shared.worker, concurrency = shared.settings.concurrency, "worker loop started");
        claim_loop(shared).await;
        shared.tracker.close();
        shared.tracker.wait().await;
        shared.scratch.close().await;
        shared.loop_running.store(false, Ordering::Release);
        tracing::info!(worker = %shared.worker, "worker loop stopped");
        Ok(())
    }

    /// Graceful shutdown with the configured grace period
    /// ([`Settings::shutdown_grace`](crate::Settings::shutdown_grace)).
    pub async fn shutdown(&self) {
        self.shutdown_within(self.shared.settings.shutdown_grace)
            .await;
    }

    /// Graceful shutdown: stop claiming, let in-flight runs finish within `grace`, then
    /// cancel the rest without persisting anything and hand their runs back to the queue
    /// without counting an attempt. Returns when no run of this runtime is executing.
    /// Idempotent. The gateway side keeps working: submitted runs are durable and wait for
    /// a worker.
    pub async fn shutdown_within(&self, grace: Duration) {
        let shared = &self.shared;
        {
            let _gate = shared.start_gate.lock().unwrap_or_else(|p| p.into_inner());
            shared.stop_claiming.cancel();
            shared.tracker.close();
        }
        shared.wake.notify_waiters();
        if tokio::time::timeout(grace, shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = shared.tracker.len(),
                ?grace,
                "grace period over; cancelling in-flight runs"
            );
            shared.abort_turns.cancel();
            shared.tracker.wait().await;
        }
    }
}

async fn claim_loop(shared: &Arc<Shared>) {
    let settings = &shared.settings;
    let permits = Arc::new(Semaphore::new(settings.concurrency));
    let mut last_sample: Option<Instant> = None;
    let (mut last_prune, pruning) = (Instant::now(), Arc::new(AtomicBool::new(false)));
    loop {
        // Sampled on a timer (at most once a second), never before every claim.
        if last_sample.is_none_or(|at| at.elapsed() >= DEPTH_SAMPLE_EVERY) {
            sample_depth(shared).await;
            last_sample = Some(Instant::now());
        }
        if last_prune.elapsed() >= retention::prune_every(shared) {
            retention::start_pass(shared, &pruning);
            last_prune = Instant::now();
        }
        if shared.stop_claiming.is_cancelled() {
            return;
        }
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return, // never closed
            },
            () = shared.stop_claiming.cancelled() => return,
        };
        // A wake-up stored before this claim is answered by it: the change it announces was
        // made before the claim is sent. Dropping it saves an empty claim after every turn
        // that the store's own wake-up already started.
        let _ = shared.wake.notified().now_or_never();
        // Not raced against shutdown: a claim that succeeded must be executed or handed back.
        // The claim's deadlines count from when it was sent, on this machine's clock.
        let claimed_at = Instant::now();
        match shared
            .backend
            .queue
            .claim(&shared.worker, settings.claim_ttl)
            .await
        {
            Ok(Some(claim)) => {
                bump(&shared.counters.runs_claimed);
                if let Some(claim) = start(shared, claim, claimed_at, permit) {
                    // Shutdown began while the claim was on its way: nothing would let a
                    // turn started now finish or cancel it, so the run goes back, uncounted.
                    hand_back(shared, &claim).await;
                    return;
                }
            }
            Ok(None) => {
                drop(permit);
                tokio::select! {
                    () = shared.backend.queue.wait_for_work(settings.poll_interval) => {}
                    () = shared.wake.notified() => {}
                    () = shared.stop_claiming.cancelled() => return,
                }
            }
            Err(error) => {
                drop(permit);
                tracing::warn!(%error, "claiming a run failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(settings.poll_interval) => {}
                    () = shared.stop_claiming.cancelled() => return,
                }
            }
        }
    }
}

/// Execute `claim` on the tracker, unless shutdown has begun: then the claim comes back.
fn start(
    shared: &Arc<Shared>,
    claim: Claim,
    claimed_at: Instant,
    permit: OwnedSemaphorePermit,
) -> Option<Claim> {
    let _gate = shared.start_gate.lock().unwrap_or_else(|p| p.into_inner());
    if shared.stop_claiming.is_cancelled() {
        return Some(claim);
    }
    // The trace context leaves the payload here: the agent and the events never see it.
    let mut claim = claim;
    let trace = RunTrace::take_from(&mut claim.payload);
    let span = spans::run_span(&claim, &trace);
    let task_shared = shared.clone();
    shared.tracker.spawn(
        async move {
            execute::execute(&task_shared, claim, claimed_at, trace).await;
            drop(permit);
            // The conversation's next run may be claimable now.
            task_shared.wake.notify_one();
        }
        .instrument(span),
    );
    None
}

/// Give back a run claimed but never started, without counting an attempt.
async fn hand_back(shared: &Shared, claim: &Claim) {
    match bounded(
        shared,
        "handing the run back",
        shared.backend.queue.release(claim),
    )
    .await
    {
        Ok(()) => {
            bump(&shared.counters.runs_released);
            tracing::info!(run = %claim.run, "claimed during shutdown; run handed back");
        }
        Err(error) => {
            tracing::warn!(%error, run = %claim.run, "handing the run back failed; its claim will expire");
        }
    }
}

/// How often a busy worker loop samples the queue depth for [`Metrics`](crate::Metrics).
const DEPTH_SAMPLE_EVERY: Duration = Duration::from_secs(1);

async fn sample_depth(shared: &Shared) {
    match shared.backend.queue.depth().await {
        Ok(depth) => {
            shared.counters.queue_depth.store(depth, Ordering::Relaxed);
            instruments::queue_depth(depth);
        }
        Err(error) => tracing::debug!(%error, "sampling queue depth failed"),
    }
}
