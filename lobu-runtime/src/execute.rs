//! Executing one claimed run: the claim is the conversation's ownership (contract v2), so a
//! run needs no lock of its own: the turn or reset → one commit of transcript and run.
//!
//! A turn's storage work: hydrate (0 round trips when the cache holds the head the claim
//! reported, else 1), heartbeats, and one `complete` (PostgreSQL: one transaction).
//! A reset runs behind the conversation's earlier runs like a turn and clears under its claim.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use lobu_core::transcript::Transcript;
use lobu_core::{
    AfterFailure, Claim, Commit, Error, ErrorKind, Failure, Result, Retry, RunKind, TerminalStatus,
};
use tokio::time::Instant;

use crate::events::RunEvent;
use crate::heartbeat::{Heartbeat, Held, Lost};
use crate::metrics::{add, add_time, bump};
use crate::recorder::EventRecorder;
use crate::runtime::Shared;
use crate::turn::{self, describe};

/// How an attempt ended, as the turn or reset saw it.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Done: commit this with the run's completion.
    Commit(Commit, Appended),
    /// The attempt failed; record it (the queue retries, with backoff, while attempts
    /// remain).
    Failed(TerminalStatus, String),
    /// The attempt failed in a way retrying cannot fix ([`Permanent`](crate::Permanent), a
    /// transcript over the limit): the run fails now.
    Permanent(String),
    /// A newer claim owns the conversation: this run's writes are refused; report nothing.
    TakenOver,
    /// The attempt was cancelled before it finished; the cause decides what to report.
    Interrupted,
}

/// What a turn added, beside its commit.
#[derive(Debug, Default)]
pub(crate) struct Appended {
    /// Transcript bytes the turn added (for metrics).
    pub(crate) bytes: u64,
    /// The parse of the transcript the commit makes the head, for the cache.
    pub(crate) parsed: Option<Arc<Transcript>>,
    /// The whole transcript the commit makes the head (the commit sends only what the turn
    /// appended), for the cache.
    pub(crate) transcript: Option<Bytes>,
}

/// Run a store call of a claimed run, abandoned after one claim period: a backend that does
/// not answer must not pin a worker slot forever (the claim lapses meanwhile, and another
/// worker takes over; its newer fence refuses this call should it land late).
pub(crate) async fn bounded<T>(
    shared: &Shared,
    what: &str,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    within(shared.settings.claim_ttl, what, call).await
}

/// `call`, or `Unavailable` if it takes longer than `limit`.
pub(crate) async fn within<T>(
    limit: Duration,
    what: &str,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(Error::unavailable(format!(
            "{what} took longer than the claim ({limit:?})"
        )))
    })
}

/// Whether retrying the same call cannot help: the error is in the data or the request, not
/// in reaching the store. Such an error fails the attempt (counted), so a damaged
/// conversation fails its run visibly instead of coming back forever.
pub(crate) fn is_permanent(error: &Error) -> bool {
    !matches!(error.kind(), ErrorKind::Unavailable | ErrorKind::Busy)
}

impl Outcome {
    /// A one-word name for logs.
    fn name(&self) -> &'static str {
        match self {
            Outcome::Commit(..) => "commit",
            Outcome::Failed(..) => "failed",
            Outcome::Permanent(..) => "permanent",
            Outcome::TakenOver => "taken_over",
            Outcome::Interrupted => "interrupted",
        }
    }
}

struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) async fn execute(shared: &Arc<Shared>, claim: Claim, claimed_at: Instant) {
    bump(&shared.counters.in_flight);
    let _in_flight = InFlight(shared);
    let log = EventRecorder::start(shared, &claim);
    if crate::heartbeat::arrived_too_late(&shared.settings, claimed_at) {
        // The claim's answer took so long (a stalled connection) that the claim may lapse
        // before the first renewal: another worker may own the conversation already, and
        // two turns of one conversation must never run at once. Hand it back unrun.
        tracing::warn!("the claim arrived too late to be held safely; handing the run back");
        let reason = "the claim arrived too late to be held safely".to_owned();
        release(shared, &claim, &log, Some(reason)).await;
        log.finish().await;
        return;
    }
    let cancel = shared.abort_turns.child_token();
    let local = shared.local_turns.register(&claim);
    let poke = local.poke.clone();
    let heartbeat = Heartbeat::start(
        shared.clone(),
        claim.clone(),
        claimed_at,
        cancel.clone(),
        poke,
    );
    // The owner's window, for operators and the chaos harness (lobu-chaos): two windows of
    // one conversation must never overlap. It ends when the agent has stopped, before the
    // commit (a commit after a takeover is refused by the fence).
    tracing::info!(
        target: "lobu::turn",
        run = %claim.run,
        key = %claim.key,
        kind = claim.kind.as_str(),
        fence = claim.fence.0,
        attempt = claim.attempt,
        "turn started"
    );
    let outcome = match claim.kind {
        RunKind::Turn => turn::run_turn(shared, &claim, &log, &cancel).await,
        RunKind::Reset => run_reset(shared, &claim).await,
        // A kind added to lobu-core after this crate: the attempt fails and the run is
        // retried while attempts remain, so in a fleet being upgraded a replica that knows
        // the kind can take it; it still ends within its attempts.
        other => Outcome::Failed(
            TerminalStatus::Failed,
            format!("this version of lobu-runtime cannot run a {other:?} run"),
        ),
    };
    let held = heartbeat.stop().await;
    cancel.cancel(); // anything the agent left running must stop now
    tracing::info!(
        target: "lobu::turn",
        run = %claim.run,
        key = %claim.key,
        kind = claim.kind.as_str(),
        fence = claim.fence.0,
        attempt = claim.attempt,
        outcome = outcome.name(),
        "turn ended"
    );
    report(shared, &claim, &log, outcome, held).await;
    drop(local);
    log.finish().await; // whatever the outcome, the writer task ends with the attempt
}

/// Clear every snapshot of the claim's conversation under its fence and drop this process's
/// cached copy; write no snapshot. A clear that lands after the run was taken over (and a
/// newer turn committed) is refused by the fence. Other replicas' cached copies die with
/// the version: they are only used for the head a claim reports, and the store never hands
/// out a version twice.
async fn run_reset(shared: &Shared, claim: &Claim) -> Outcome {
    let key = &claim.key;
    // Drop the cached copy first: even if the clear fails, nothing stale is served from here.
    shared.cache.remove(key);
    let clear = shared.backend.sessions.clear(key, claim.fence);
    match bounded(shared, "clearing", clear).await {
        Ok(deleted) => {
            shared.cache.remove(key);
            tracing::info!(deleted, "conversation reset");
            let output = serde_json::json!({ "deleted": deleted });
            Outcome::Commit(Commit::output(Some(output)), Appended::default())
        }
        Err(e) if e.is(ErrorKind::Fenced) => Outcome::TakenOver,
        Err(e) => Outcome::Failed(
            TerminalStatus::Failed,
            format!("clearing the conversation failed: {}", describe(&e)),
        ),
    }
}

async fn report(shared: &Shared, claim: &Claim, log: &EventRecorder, outcome: Outcome, held: Held) {
    match outcome {
        Outcome::Commit(commit, appended) => {
            if let Err((status, failure, retry)) =
                complete(shared, claim, log, commit, appended, held).await
            {
                record_failure(shared, claim, log, status, failure, retry).await;
            }
        }
        Outcome::Failed(status, error) => {
            let retry = retry_with_backoff(shared, claim);
            record_failure(shared, claim, log, status, error, retry).await;
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
            .await;
        }
        Outcome::TakenOver => {
            tracing::info!(
                "a newer claim owns the conversation; this attempt's writes were refused"
            );
        }
        Outcome::Interrupted => match held.lost {
            // Re-delivered: the newer attempt's claim records from now on (its `started`
            // marks the change); this one may not record any more.
            Some(Lost::Claim) => log.finish().await,
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
                .await;
            }
            Some(Lost::Expiring) => {
                let reason = "the store did not renew the claim in time".to_owned();
                release(shared, claim, log, Some(reason)).await;
            }
            None => {
                let reason = "the worker is shutting down".to_owned();
                release(shared, claim, log, Some(reason)).await;
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
) {
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
        }
        Ok(AfterFailure::Final(_)) => {}
        // An outcome added to lobu-core after this crate: no `retrying` event, whose delay
        // is unknown; a run that ended has its terminal event read from its record.
        Ok(_) => {}
        Err(e) if e.is(ErrorKind::Fenced) => {
            tracing::info!("the run was taken over before its failure was recorded");
        }
        Err(e) => tracing::warn!(error = %e, "recording the failure failed"),
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
) -> std::result::Result<(), (TerminalStatus, String, Retry)> {
    let queue = &shared.backend.queue;
    // The turn's last events are stored before the commit, which ends the run: one round
    // trip, the only one events add to a quick turn.
    log.finish().await;
    let mut backoff = COMPLETE_BACKOFF;
    loop {
        let started = Instant::now();
        let call = queue.complete(claim, commit.clone());
        let result = bounded(shared, "committing the run", call).await;
        if commit.transcript.is_some() {
            add_time(&shared.counters.persist_micros, started.elapsed());
        }
        match result {
            Ok(version) => {
                if let (Some(version), Some(transcript)) = (version, appended.transcript) {
                    bump(&shared.counters.persist_writes);
                    add(&shared.counters.persist_bytes, appended.bytes);
                    tracing::debug!(%version, bytes = transcript.len(), "turn committed");
                    let (key, run) = (&claim.key, claim.run.clone());
                    shared
                        .cache
                        .put(key, version, run, transcript, appended.parsed);
                }
                bump(&shared.counters.runs_completed);
                tracing::info!("run completed");
                return Ok(());
            }
            Err(error) if error.is(ErrorKind::Fenced) => {
                shared.cache.remove(&claim.key);
                tracing::info!("the run was taken over before it was committed");
                return Ok(());
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
                    return Ok(());
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
async fn release(shared: &Shared, claim: &Claim, log: &EventRecorder, reason: Option<String>) {
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
        }
        Err(error) if error.is(ErrorKind::Fenced) => {
            tracing::info!("the run was taken over before it was handed back");
        }
        Err(error) => tracing::warn!(%error, "handing the run back failed; its claim will expire"),
    }
}

fn millis_until(at: SystemTime) -> u64 {
    let wait = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
}
