//! Executing one claimed run: the claim is the conversation's ownership (contract v2), so a
//! run needs no lock of its own: the turn or reset → one commit of transcript and run.
//!
//! A turn's storage work: hydrate (0 round trips when the cache holds the head the claim
//! reported, else 1), heartbeats, and one `complete` (PostgreSQL: one transaction).
//! A reset runs behind the conversation's earlier runs like a turn and clears under its claim.
//! How the attempt's end is recorded is in [`crate::report`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use lobu_core::transcript::Transcript;
use lobu_core::{Claim, Commit, Error, ErrorKind, Result, RunKind, RunTrace, TerminalStatus};
use tokio::time::Instant;

use crate::heartbeat::Heartbeat;
use crate::instruments::{self, FirstOutput};
use crate::metrics::bump;
use crate::recorder::EventRecorder;
use crate::report::{release, report};
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
        instruments::in_flight(-1.0);
    }
}

pub(crate) async fn execute(
    shared: &Arc<Shared>,
    claim: Claim,
    claimed_at: Instant,
    trace: RunTrace,
) {
    bump(&shared.counters.in_flight);
    instruments::in_flight(1.0);
    let _in_flight = InFlight(shared);
    let labels = instruments::labels(&shared.settings, &claim.key);
    if let Some(submitted_at) = trace.submitted_at {
        instruments::queue_wait(&labels, claim.kind, claim.attempt, submitted_at);
    }
    let first_output = FirstOutput::new(claimed_at, labels.clone());
    let log = EventRecorder::start(shared, &claim, first_output);
    if crate::heartbeat::arrived_too_late(&shared.settings, claimed_at) {
        // The claim's answer took so long (a stalled connection) that the claim may lapse
        // before the first renewal: another worker may own the conversation already, and
        // two turns of one conversation must never run at once. Hand it back unrun.
        tracing::warn!("the claim arrived too late to be held safely; handing the run back");
        let reason = "the claim arrived too late to be held safely".to_owned();
        let outcome = release(shared, &claim, &log, Some(reason)).await;
        instruments::turn_ended(&labels, claim.kind, outcome, claimed_at.elapsed());
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
    let ended = report(shared, &claim, &log, outcome, held, &labels).await;
    instruments::turn_ended(&labels, claim.kind, ended, claimed_at.elapsed());
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
