//! Executing one claimed run: conversation lease → the turn or reset → lease release →
//! report to the queue.
//!
//! A reset runs under the lease and behind the conversation's earlier runs like a turn.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use crate::acquire::{Acquired, acquire};
use crate::events::RunEvent;
use crate::heartbeat::{Heartbeat, Held, Lost};
use crate::hub::RunLog;
use crate::hydrate::hydrate;
use crate::metrics::bump;
use crate::runtime::Shared;
use crate::turn::{self, describe};
use crate::worker::pause_claims;
use lobu_core::{
    AfterFailure, Claim, ConversationKey, Error, ErrorKind, Result, RunKind, TerminalStatus,
};

/// How an attempt ended, as the turn or reset saw it.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Done: the transcript (if any) is persisted; complete the run.
    Completed(Option<serde_json::Value>),
    /// The attempt failed; record it (the queue retries while attempts remain).
    Failed(TerminalStatus, String),
    /// Hand the run back without counting the attempt.
    Release(String),
    /// The turn's persist timed out or its answer was lost: the write may have landed or may
    /// still land. Settled under a new lease before anything is reported.
    PersistUnknown(String),
    /// The attempt was cancelled before it finished; the cause decides what to report.
    Interrupted,
}

/// Run a store call of a claimed run, abandoned after one lease period: a backend that does
/// not answer must not pin a worker slot forever (its lease and claim lapse meanwhile, and
/// another worker takes over). An abandoned persist may still land: see [`settle`].
pub(crate) async fn bounded<T>(
    shared: &Shared,
    what: &str,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    let limit = shared.settings.lease_ttl;
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(Error::unavailable(format!(
            "{what} took longer than the lease ({limit:?})"
        )))
    })
}

struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) async fn execute(shared: &Arc<Shared>, claim: Claim) {
    bump(&shared.counters.in_flight);
    let _in_flight = InFlight(shared);
    let log = shared.hub.open(&claim.key, &claim.run, claim.kind);
    let locks = &shared.backend.locks;
    let (lease, claim) = match acquire(shared, claim.clone()).await {
        Acquired::Lease(lease, claim) => (lease, claim),
        Acquired::Busy => {
            // Its holder keeps it (or shutdown began): hand the run back, uncounted, and
            // pause before claiming again, as the run is the oldest and would come back.
            tracing::info!("conversation lease busy; handing the run back");
            pause_claims(shared, shared.settings.busy_backoff);
            release(shared, &claim, &log, None).await;
            return;
        }
        Acquired::Failed(error) => {
            tracing::warn!(%error, "acquiring the conversation lease failed; handing the run back");
            pause_claims(shared, shared.settings.busy_backoff);
            release(shared, &claim, &log, None).await;
            return;
        }
        Acquired::LostClaim => {
            tracing::info!("the run was re-delivered while its conversation lease was busy");
            return;
        }
    };
    tracing::Span::current().record("fence", lease.fence.0);

    let cancel = shared.abort_turns.child_token();
    let heartbeat = Heartbeat::start(shared.clone(), lease.clone(), claim.clone(), cancel.clone());
    let outcome = match claim.kind {
        RunKind::Turn => turn::run_turn(shared, &claim, &lease, &log, &cancel).await,
        RunKind::Reset => run_reset(shared, &claim.key).await,
    };
    let held = heartbeat.stop().await;
    cancel.cancel(); // anything the agent left running must stop now
    // Release the lease before reporting, so the conversation's next run (claimable once
    // this one is reported) never finds it busy. A crash right here is safe: the run is
    // re-delivered and the next attempt sees its snapshot is already the head.
    if let Err(error) = bounded(shared, "releasing the lease", locks.release(&lease)).await {
        tracing::warn!(%error, "releasing the conversation lease failed; it will expire");
    }
    let outcome = match outcome {
        Outcome::PersistUnknown(error) => settle(shared, &claim, error).await,
        outcome => outcome,
    };
    report(shared, &claim, &log, outcome, held).await;
}

/// Decide a turn whose persist may or may not have landed. Reporting it failed could leave
/// a "failed" turn as the head, hydrated by the next turn and duplicated by a client's
/// resend, if the write landed (or lands later: nothing newer than its fence exists yet).
/// So take the lease again — its new fence makes the store refuse the old write from now
/// on, and a file store's write still in progress holds the lock until it is done — and
/// look at the head: this run's snapshot there means the turn persisted.
async fn settle(shared: &Shared, claim: &Claim, error: String) -> Outcome {
    let locks = &shared.backend.locks;
    let acquire = locks.try_acquire(&claim.key, shared.settings.lease_ttl);
    let lease = match bounded(shared, "acquiring the lease again", acquire).await {
        Ok(Some(lease)) => lease,
        // Without a newer fence nothing can be decided here: the next attempt will, under its
        // own lease, and finds the turn as the head if it landed.
        Ok(None) => {
            return Outcome::Release(format!(
                "{error}; the conversation is busy, so the next attempt decides"
            ));
        }
        Err(e) => {
            return Outcome::Release(format!(
                "{error}; acquiring the lease again failed ({}), so the next attempt decides",
                describe(&e)
            ));
        }
    };
    let head = bounded(shared, "checking the head", hydrate(shared, &claim.key)).await;
    if let Err(error) = bounded(shared, "releasing the lease", locks.release(&lease)).await {
        tracing::warn!(%error, "releasing the conversation lease failed; it will expire");
    }
    match head {
        Ok(head) if head.run.as_ref() == Some(&claim.run) => {
            tracing::info!(%error, "the persist landed after all; completing the run");
            Outcome::Completed(None)
        }
        Ok(_) => Outcome::Failed(TerminalStatus::Failed, error),
        Err(e) => Outcome::Release(format!(
            "{error}; checking the head failed ({}), so the next attempt decides",
            describe(&e)
        )),
    }
}

/// Clear every snapshot of `key` and drop this process's cached copy; write no snapshot.
/// Other replicas' cached copies die with the version: they are only used after a head check,
/// and the store never hands out a version twice.
async fn run_reset(shared: &Shared, key: &ConversationKey) -> Outcome {
    // Drop the cached copy first: even if the clear fails, nothing stale is served from here.
    shared.cache.remove(key);
    match bounded(shared, "clearing", shared.backend.sessions.clear(key)).await {
        Ok(deleted) => {
            shared.cache.remove(key);
            tracing::info!(deleted, "conversation reset");
            Outcome::Completed(Some(serde_json::json!({ "deleted": deleted })))
        }
        Err(e) => Outcome::Failed(
            TerminalStatus::Failed,
            format!("clearing the conversation failed: {}", describe(&e)),
        ),
    }
}

async fn report(shared: &Shared, claim: &Claim, log: &RunLog, outcome: Outcome, held: Held) {
    let queue = &shared.backend.queue;
    match outcome {
        Outcome::Completed(output) => complete(shared, claim, log, output, held).await,
        Outcome::Failed(status, error) => {
            bump(&shared.counters.attempts_failed);
            tracing::warn!(status = status.as_str(), %error, "attempt failed");
            let fail = queue.fail(claim, status, &error);
            match bounded(shared, "recording the failure", fail).await {
                Ok(AfterFailure::Retry { at }) => log.push(RunEvent::Retrying {
                    attempt: claim.attempt,
                    status,
                    error,
                    retry_after_ms: millis_until(at),
                }),
                Ok(AfterFailure::Final(final_status)) => {
                    log.push(
                        RunEvent::terminal(final_status, error).unwrap_or(RunEvent::Failed {
                            error: format!("the queue reported {final_status:?} as final"),
                        }),
                    );
                }
                Err(e) if e.is(ErrorKind::Fenced) => {
                    tracing::info!("the run was taken over before its failure was recorded");
                }
                Err(e) => tracing::warn!(error = %e, "recording the failure failed"),
            }
        }
        // `execute` settles an unknown persist first; handing the run back is the safe answer
        // should one get here (the next attempt decides under its own lease).
        Outcome::Release(reason) | Outcome::PersistUnknown(reason) => {
            release(shared, claim, log, Some(reason)).await;
        }
        Outcome::Interrupted => match held.lost {
            Some(Lost::Claim) => log.push(RunEvent::Requeued {
                attempt: claim.attempt,
                reason: "the run was re-delivered to another worker".to_owned(),
            }),
            Some(Lost::Lease) => {
                let reason = "another worker took over the conversation".to_owned();
                release(shared, claim, log, Some(reason)).await;
            }
            Some(Lost::Expiring) => {
                let reason = "the store did not renew the lease or claim in time".to_owned();
                release(shared, claim, log, Some(reason)).await;
            }
            None => {
                let reason = "the worker is shutting down".to_owned();
                release(shared, claim, log, Some(reason)).await;
            }
        },
    }
}

/// Complete the run, retrying a failed call with backoff while the claim is still held:
/// giving up at once would let the claim lapse and cost an attempt (on the last one, a
/// turn that is persisted would be recorded as failed).
async fn complete(
    shared: &Shared,
    claim: &Claim,
    log: &RunLog,
    output: Option<serde_json::Value>,
    held: Held,
) {
    let queue = &shared.backend.queue;
    let mut backoff = COMPLETE_BACKOFF;
    loop {
        let call = queue.complete(claim, output.clone());
        match bounded(shared, "completing the run", call).await {
            Ok(()) => {
                bump(&shared.counters.runs_completed);
                tracing::info!("run completed");
                log.push(RunEvent::Completed { output });
                return;
            }
            Err(error) if error.is(ErrorKind::Fenced) => {
                tracing::info!("the run was taken over before it was completed");
                return;
            }
            Err(error) => {
                let retry_at = SystemTime::now() + backoff;
                if retry_at >= held.claim_until {
                    // The claim lapses: the run is re-delivered, and its next attempt finds
                    // the turn as the head and completes it without running it again.
                    tracing::warn!(%error, "completing the run failed; it will be re-delivered");
                    return;
                }
                tracing::warn!(%error, ?backoff, "completing the run failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(shared.settings.heartbeat_interval);
            }
        }
    }
}

/// The first pause before completing a run again.
const COMPLETE_BACKOFF: Duration = Duration::from_millis(50);

/// Hand the run back without counting the attempt; `reason` is told to subscribers when
/// the attempt had started.
async fn release(shared: &Shared, claim: &Claim, log: &RunLog, reason: Option<String>) {
    let handed_back = shared.backend.queue.release(claim);
    match bounded(shared, "handing the run back", handed_back).await {
        Ok(()) => {
            bump(&shared.counters.runs_released);
            if let Some(reason) = reason {
                tracing::info!(%reason, "run handed back");
                log.push(RunEvent::Requeued {
                    attempt: claim.attempt,
                    reason,
                });
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
