//! How an attempt's end is recorded: the commit of a finished turn (retried while the claim
//! holds), a failure (retried by the queue while attempts remain), or the run handed back.
//! Each returns the [`TurnOutcome`] the attempt's metrics report.

use std::time::{Duration, SystemTime};

use lobu_core::{AfterFailure, Claim, Commit, ErrorKind, Failure, Retry, TerminalStatus};
use metrics::Label;
use tokio::time::Instant;
use tracing::Instrument;

use crate::events::RunEvent;
use crate::execute::{Appended, Outcome, bounded, is_permanent};
use crate::heartbeat::{Held, Lost};
use crate::instruments::{self, TurnOutcome};
use crate::metrics::{add, add_time, bump};
use crate::recorder::EventRecorder;
use crate::runtime::Shared;
use crate::spans::conversation_span;
use crate::turn::describe;

/// Record how the attempt ended; returns that, for metrics.
pub(crate) async fn report(
    shared: &Shared,
    claim: &Claim,
    log: &EventRecorder,
    outcome: Outcome,
    held: Held,
    labels: &[Label],
) -> TurnOutcome {
    match outcome {
        Outcome::Commit(commit, appended) => {
            match complete(shared, claim, log, commit, appended, held, labels).await {
                Ok(ended) => ended,
                Err((status, failure, retry)) => {
                    record_failure(shared, claim, log, status, failure, retry).await
                }
            }
        }
        Outcome::Failed(status, error) => {
            let retry = retry_with_backoff(shared, claim);
            record_failure(shared, claim, log, status, error, retry).await
        }
        Outcome::Permanent(error) => {
            record_failure(
                shared,
                claim,
                log,
                TerminalStatus::Failed,
                error,
                Retry::Never,
            )
            .await
        }
        Outcome::TakenOver => {
            tracing::info!(
                "a newer claim owns the conversation; this attempt's writes were refused"
            );
            TurnOutcome::TakenOver
        }
        Outcome::Interrupted => match held.lost {
            // Re-delivered: the newer attempt's claim records from now on (its `started`
            // marks the change); this one may not record any more.
            Some(Lost::Claim) => {
                log.finish().await;
                TurnOutcome::TakenOver
            }
            // Cancelled through the queue: the run ends `cancelled` (the store keeps the
            // reason it was given).
            Some(Lost::Cancelled) => {
                let error = "the run was cancelled".to_owned();
                record_failure(
                    shared,
                    claim,
                    log,
                    TerminalStatus::Cancelled,
                    error,
                    Retry::Never,
                )
                .await
            }
            Some(Lost::Expiring) => {
                let reason = "the store did not renew the claim in time".to_owned();
                release(shared, claim, log, Some(reason)).await
            }
            None => {
                let reason = "the worker is shutting down".to_owned();
                release(shared, claim, log, Some(reason)).await
            }
        },
    }
}

/// The retry of a failed attempt: exponential backoff from `retry_delay` up to
/// `max_retry_delay`, jittered (`lobu_core::control::backoff`).
fn retry_with_backoff(shared: &Shared, claim: &Claim) -> Retry {
    let settings = &shared.settings;
    let delay = lobu_core::control::backoff(
        claim.attempt,
        settings.retry_delay,
        settings.max_retry_delay,
        fastrand::f64(),
    );
    Retry::After(delay)
}

/// Record a failed attempt: the queue retries it as `retry` says while attempts remain.
async fn record_failure(
    shared: &Shared,
    claim: &Claim,
    log: &EventRecorder,
    status: TerminalStatus,
    error: String,
    retry: Retry,
) -> TurnOutcome {
    bump(&shared.counters.attempts_failed);
    tracing::warn!(status = status.as_str(), %error, "attempt failed");
    // What the attempt did is stored first: a final failure ends the run, and a run that
    // ended takes no more events (its terminal event is read from its record).
    log.finish().await;
    let failure = Failure {
        status,
        error,
        retry,
    };
    let fail = shared.backend.queue.fail(claim, &failure);
    let failed = bounded(shared, "recording the failure", fail).await;
    let error = failure.error;
    match failed {
        Ok(AfterFailure::Retry { at }) => {
            log.record_now(RunEvent::Retrying {
                attempt: claim.attempt,
                status,
                error,
                retry_after_ms: millis_until(at),
            })
            .await;
            TurnOutcome::Retried
        }
        // Or an outcome added to lobu-core after this crate: no `retrying` event, whose
        // delay is unknown; a run that ended has its terminal event read from its record.
        Ok(_) => TurnOutcome::Ended(status),
        Err(e) if e.is(ErrorKind::Fenced) => {
            tracing::info!("the run was taken over before its failure was recorded");
            TurnOutcome::TakenOver
        }
        Err(e) => {
            tracing::warn!(error = %e, "recording the failure failed");
            TurnOutcome::Lost
        }
    }
}

/// Commit the run: its transcript becomes the head and the run completes, in one call. A
/// call that failed to reach the store is retried with backoff while the claim is held: a
/// commit is idempotent per claim, so a retry after a lost answer is harmless, and giving up
/// at once would let the claim lapse and cost an attempt. If the claim lapses first, the run
/// is re-delivered and its next attempt finds its transcript as the head and completes it.
/// A permanent error (a conflict, a size or a damaged record) is returned: the attempt fails
/// (a size for good: retrying cannot shrink it); a cancelled run's refused commit ends it
/// `cancelled`.
async fn complete(
    shared: &Shared,
    claim: &Claim,
    log: &EventRecorder,
    commit: Commit,
    appended: Appended,
    held: Held,
    labels: &[Label],
) -> std::result::Result<TurnOutcome, (TerminalStatus, String, Retry)> {
    let queue = &shared.backend.queue;
    // The turn's last events are stored before the commit, which ends the run: one round
    // trip, the only one events add to a quick turn.
    log.finish().await;
    let mut backoff = COMPLETE_BACKOFF;
    loop {
        let started = Instant::now();
        let call = queue.complete(claim, commit.clone());
        let persist = conversation_span!("lobu.persist", &claim.key, run = %claim.run, attempt = claim.attempt);
        let result = bounded(shared, "committing the run", call)
            .instrument(persist)
            .await;
        if commit.transcript.is_some() {
            add_time(&shared.counters.persist_micros, started.elapsed());
            instruments::persisted(labels, started.elapsed());
        }
        match result {
            Ok(version) => {
                if let (Some(version), Some(transcript)) = (version, appended.transcript) {
                    bump(&shared.counters.persist_writes);
                    add(&shared.counters.persist_bytes, appended.bytes);
                    instruments::persisted_bytes(labels, appended.bytes);
                    tracing::debug!(%version, bytes = transcript.len(), "turn committed");
                    let (key, run) = (&claim.key, claim.run.clone());
                    shared
                        .cache
                        .put(key, version, run, transcript, appended.parsed);
                }
                bump(&shared.counters.runs_completed);
                // A stable target: the fault harness finds accepted commits by this line.
                tracing::info!(target: "lobu::turn", "run completed");
                return Ok(TurnOutcome::Ended(TerminalStatus::Completed));
            }
            Err(error) if error.is(ErrorKind::Fenced) => {
                shared.cache.remove(&claim.key);
                tracing::info!("the run was taken over before it was committed");
                return Ok(TurnOutcome::TakenOver);
            }
            Err(error) if error.is(ErrorKind::Cancelled) => {
                shared.cache.remove(&claim.key);
                let why = format!("the run was cancelled: {}", describe(&error));
                return Err((TerminalStatus::Cancelled, why, Retry::Never));
            }
            Err(error) if is_permanent(&error) => {
                shared.cache.remove(&claim.key);
                let retry = if error.is(ErrorKind::TooLarge) {
                    Retry::Never
                } else {
                    retry_with_backoff(shared, claim)
                };
                let why = format!("committing the turn failed: {}", describe(&error));
                return Err((TerminalStatus::Failed, why, retry));
            }
            Err(error) => {
                if Instant::now() + backoff >= held.claim_until {
                    shared.cache.remove(&claim.key);
                    tracing::warn!(%error, "committing the run failed; it will be re-delivered");
                    return Ok(TurnOutcome::Lost);
                }
                tracing::warn!(%error, ?backoff, "committing the run failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(shared.settings.heartbeat_interval);
            }
        }
    }
}

/// The first pause before committing a run again.
const COMPLETE_BACKOFF: Duration = Duration::from_millis(50);

/// Hand the run back without counting the attempt; `reason` is told to subscribers when
/// the attempt had started.
pub(crate) async fn release(
    shared: &Shared,
    claim: &Claim,
    log: &EventRecorder,
    reason: Option<String>,
) -> TurnOutcome {
    log.finish().await;
    // Said while the claim is still held: once the run is back, another worker may claim it
    // at once, and this attempt could no longer record anything.
    if let Some(reason) = &reason {
        log.record_now(RunEvent::Requeued {
            attempt: claim.attempt,
            reason: reason.clone(),
        })
        .await;
    }
    let handed_back = shared.backend.queue.release(claim);
    match bounded(shared, "handing the run back", handed_back).await {
        Ok(()) => {
            bump(&shared.counters.runs_released);
            if let Some(reason) = reason {
                tracing::info!(%reason, "run handed back");
            }
            TurnOutcome::Released
        }
        Err(error) if error.is(ErrorKind::Fenced) => {
            tracing::info!("the run was taken over before it was handed back");
            TurnOutcome::TakenOver
        }
        Err(error) => {
            tracing::warn!(%error, "handing the run back failed; its claim will expire");
            TurnOutcome::Lost
        }
    }
}

fn millis_until(at: SystemTime) -> u64 {
    let wait = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
}
