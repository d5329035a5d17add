//! Clauses of run control: failures that retry on their own delay or never, and
//! cancellation of waiting, claimed and abandoned runs.

use super::Capabilities;
use super::support::{
    LONG, assert_kind, assert_nothing_claimable, claim_mine, fresh_key, new_turn, record, submit,
    transcript,
};
use crate::backend::Backend;
use crate::control::{CancelOutcome, Failure, Retry};
use crate::error::ErrorKind;
use crate::id::{RunId, WorkerId};
use crate::queue::{AfterFailure, Commit, MAX_RETRY_DELAY, RunStatus};
use crate::session::TerminalStatus;

/// A failure with `Retry::Never` ends the run with its status although attempts remain; the
/// conversation's next run is claimable at once.
pub async fn a_permanent_failure_ends_the_run_with_attempts_left(backend: &Backend) {
    let key = fresh_key();
    let run = submit(backend, new_turn(&key, 0, 3)).await;
    let next = submit(backend, new_turn(&key, 1, 3)).await;
    let worker = WorkerId::generate();
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    let permanent = Failure::new(TerminalStatus::Failed, "the request is malformed");
    let after = backend
        .queue
        .fail(&claim, &permanent.retry(Retry::Never))
        .await;
    assert_eq!(after.expect("fail"), AfterFailure::Final(RunStatus::Failed));
    let ended = record(backend, &key, &run).await;
    assert_eq!((ended.status, ended.attempts), (RunStatus::Failed, 1));
    assert_eq!(ended.error.as_deref(), Some("the request is malformed"));
    let following = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(following.run, next);
    backend.queue.release(&following).await.expect("release");
}

/// A failure with a delay of its own is retried after that delay, not the run's; a bad
/// failure (a `completed` status, a delay past a day) is `InvalidInput` and changes nothing.
pub async fn a_failure_with_its_own_delay_is_retried_after_it(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let key = fresh_key();
    let mut turn = new_turn(&key, 0, 3);
    turn.retry_delay = LONG;
    let run = submit(backend, turn).await;
    let worker = WorkerId::generate();
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    let queue = &backend.queue;
    for bad in [
        Failure::new(TerminalStatus::Completed, "no"),
        Failure::new(TerminalStatus::Failed, "late").retry(Retry::After(MAX_RETRY_DELAY * 2)),
    ] {
        assert_kind(
            queue.fail(&claim, &bad).await,
            ErrorKind::InvalidInput,
            "bad failure",
        );
    }
    queue
        .heartbeat(&claim, LONG)
        .await
        .expect("the claim is still held");
    let soon = Failure::new(TerminalStatus::Failed, "flaky");
    let soon = soon.retry(Retry::After(capabilities.short_lease));
    let after = queue.fail(&claim, &soon).await.expect("fail");
    assert!(matches!(after, AfterFailure::Retry { .. }), "{after:?}");
    assert_nothing_claimable(backend, &worker, &[&key], "before its own delay").await;
    tokio::time::sleep(capabilities.past_short_lease()).await;
    let again = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(
        (&again.run, again.attempt),
        (&run, 2),
        "its own delay, not the run's"
    );
    queue.release(&again).await.expect("release");
}

/// Cancelling a waiting run ends it `cancelled` with the reason, and it never runs: the
/// conversation's next run is claimed instead. Cancelling it again reports it finished;
/// another org's run and an unknown run are `None`.
pub async fn cancelling_a_waiting_run_ends_it_and_it_never_runs(backend: &Backend) {
    let key = fresh_key();
    let first = submit(backend, new_turn(&key, 0, 3)).await;
    let second = submit(backend, new_turn(&key, 1, 3)).await;
    let queue = &backend.queue;
    let other = fresh_key();
    assert_eq!(
        queue.cancel(&other.org, &first, "x").await.expect("cancel"),
        None
    );
    let nobody = RunId::generate();
    assert_eq!(
        queue.cancel(&key.org, &nobody, "x").await.expect("cancel"),
        None
    );
    let outcome = queue
        .cancel(&key.org, &first, "the user changed their mind")
        .await;
    assert_eq!(outcome.expect("cancel"), Some(CancelOutcome::Cancelled));
    let ended = record(backend, &key, &first).await;
    assert_eq!((ended.status, ended.attempts), (RunStatus::Cancelled, 0));
    assert_eq!(ended.error.as_deref(), Some("the user changed their mind"));
    let again = queue
        .cancel(&key.org, &first, "again")
        .await
        .expect("cancel");
    assert_eq!(again, Some(CancelOutcome::Finished(RunStatus::Cancelled)));
    let worker = WorkerId::generate();
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(claim.run, second, "the cancelled run never runs");
    queue
        .complete(&claim, Commit::default())
        .await
        .expect("complete");
    let done = queue
        .cancel(&key.org, &second, "too late")
        .await
        .expect("cancel");
    assert_eq!(done, Some(CancelOutcome::Finished(RunStatus::Completed)));
    assert_eq!(
        record(backend, &key, &second).await.status,
        RunStatus::Completed
    );
}

/// Cancelling a claimed run asks its holder: its heartbeat and commit answer `Cancelled` and
/// change nothing (no transcript is written), and its `fail`, even one that asks for a retry,
/// ends the run `cancelled`; the conversation's next run is claimable.
pub async fn a_cancelled_claim_is_told_at_its_heartbeat_and_cannot_commit(backend: &Backend) {
    let key = fresh_key();
    let run = submit(backend, new_turn(&key, 0, 3)).await;
    let next = submit(backend, new_turn(&key, 1, 3)).await;
    let worker = WorkerId::generate();
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    let queue = &backend.queue;
    let outcome = queue.cancel(&key.org, &run, "stop").await.expect("cancel");
    assert_eq!(outcome, Some(CancelOutcome::Requested));
    assert_eq!(record(backend, &key, &run).await.status, RunStatus::Running);
    assert_kind(
        queue.heartbeat(&claim, LONG).await,
        ErrorKind::Cancelled,
        "heartbeat",
    );
    let commit = Commit::transcript(transcript("cancelled", 1), claim.head);
    assert_kind(
        queue.complete(&claim, commit).await,
        ErrorKind::Cancelled,
        "commit",
    );
    assert!(
        backend
            .sessions
            .hydrate(&key)
            .await
            .expect("hydrate")
            .is_none(),
        "a cancelled run's commit wrote nothing"
    );
    let retry = Failure::new(TerminalStatus::Cancelled, "stopped by its worker");
    let after = queue.fail(&claim, &retry).await.expect("fail");
    assert_eq!(after, AfterFailure::Final(RunStatus::Cancelled));
    let ended = record(backend, &key, &run).await;
    assert_eq!(
        (ended.status, ended.error.as_deref()),
        (RunStatus::Cancelled, Some("stop"))
    );
    let following = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(following.run, next);
    queue.release(&following).await.expect("release");
}

/// A claimed run whose cancellation was requested and that its holder hands back (a worker
/// shutting down) ends `cancelled` instead of running again.
pub async fn releasing_a_cancelled_claim_ends_the_run(backend: &Backend) {
    let key = fresh_key();
    let run = submit(backend, new_turn(&key, 0, 3)).await;
    let worker = WorkerId::generate();
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    let queue = &backend.queue;
    queue.cancel(&key.org, &run, "").await.expect("cancel");
    queue.release(&claim).await.expect("release");
    let ended = record(backend, &key, &run).await;
    assert_eq!(
        (ended.status, ended.error.as_deref()),
        (RunStatus::Cancelled, Some("cancelled"))
    );
    assert_nothing_claimable(backend, &worker, &[&key], "a cancelled run").await;
}

/// A run whose claim lapsed (its worker died) is cancelled at once: nobody holds it.
pub async fn cancelling_a_run_whose_claim_lapsed_ends_it(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let key = fresh_key();
    let run = submit(backend, new_turn(&key, 0, 3)).await;
    let dead = WorkerId::generate();
    let claim = claim_mine(backend, &dead, capabilities.short_lease, &[&key]).await;
    tokio::time::sleep(capabilities.past_short_lease()).await;
    let outcome = backend.queue.cancel(&key.org, &run, "abandoned").await;
    assert_eq!(outcome.expect("cancel"), Some(CancelOutcome::Cancelled));
    assert_eq!(
        record(backend, &key, &run).await.status,
        RunStatus::Cancelled
    );
    assert_kind(
        backend.queue.heartbeat(&claim, LONG).await,
        ErrorKind::Fenced,
        "the lapsed claim after the run ended",
    );
    let alive = WorkerId::generate();
    assert_nothing_claimable(backend, &alive, &[&key], "a cancelled run").await;
}
