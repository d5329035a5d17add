//! Clauses of `RunQueue` claims over time: expiry and re-delivery, release, bounded
//! attempts with a retry delay, fencing of stale claims, heartbeats, and run retention.

use std::time::{Duration, SystemTime};

use serde_json::json;

use super::Capabilities;
use super::support::{
    LONG, assert_kind, assert_nothing_claimable, claim_mine, claim_own, fresh_key, hydrate,
    new_turn, record, sibling, submit, transcript,
};
use crate::backend::Backend;
use crate::control::Failure;
use crate::error::ErrorKind;
use crate::id::WorkerId;
use crate::queue::{AfterFailure, Claim, Commit, RunStatus};
use crate::session::TerminalStatus;

/// Every call a claim holder can make must be `Fenced` for `stale`.
async fn assert_claim_fenced(backend: &Backend, stale: &Claim, why: &str) {
    let queue = &backend.queue;
    assert_kind(queue.heartbeat(stale, LONG).await, ErrorKind::Fenced, why);
    assert_kind(
        queue.complete(stale, Commit::default()).await,
        ErrorKind::Fenced,
        why,
    );
    let failed = queue
        .fail(stale, &Failure::new(TerminalStatus::Failed, "stale"))
        .await;
    assert_kind(failed, ErrorKind::Fenced, why);
    assert_kind(queue.release(stale).await, ErrorKind::Fenced, why);
}

/// A claim whose lease expired is re-delivered to the next claim as the next attempt with
/// a larger token; the old claim is then `Fenced` for every call and changes nothing.
pub async fn an_expired_claim_is_redelivered_as_the_next_attempt(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let key = fresh_key();
    let run = submit(backend, new_turn(&key, 0, 3)).await;
    let (dead, alive) = (WorkerId::generate(), WorkerId::generate());
    let first = claim_mine(backend, &dead, capabilities.short_lease, &[&key]).await;
    assert_eq!((&first.run, first.attempt), (&run, 1));
    tokio::time::sleep(capabilities.past_short_lease()).await;
    let second = claim_mine(backend, &alive, LONG, &[&key]).await;
    assert_eq!(
        (&second.run, second.attempt),
        (&run, 2),
        "re-delivered as attempt 2"
    );
    assert!(second.fence > first.fence, "fences grow");
    assert_eq!(second.worker, alive);
    assert_claim_fenced(backend, &first, "the expired claim").await;
    let state = record(backend, &key, &run).await;
    assert_eq!((state.status, state.attempts), (RunStatus::Running, 2));
    backend
        .queue
        .complete(&second, Commit::default())
        .await
        .expect("complete");
    let done = record(backend, &key, &run).await;
    assert_eq!((done.status, done.attempts), (RunStatus::Completed, 2));
}

/// `release` hands a run back at once without counting the attempt (so a one-attempt run
/// survives any number of releases), it stays first in its conversation, and the released
/// claim is `Fenced` afterwards.
pub async fn releasing_a_claim_does_not_count_an_attempt(backend: &Backend) {
    let key = fresh_key();
    let run = submit(backend, new_turn(&key, 0, 1)).await;
    let behind = submit(backend, new_turn(&key, 1, 1)).await;
    let worker = WorkerId::generate();
    let mut previous: Option<Claim> = None;
    for round in 0..3 {
        let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
        assert_eq!((&claim.run, claim.attempt), (&run, 1), "round {round}");
        if let Some(previous) = &previous {
            assert!(claim.fence > previous.fence, "fences grow");
        }
        backend.queue.release(&claim).await.expect("release");
        let state = record(backend, &key, &run).await;
        assert_eq!(
            (state.status, state.attempts),
            (RunStatus::Pending, 0),
            "round {round}"
        );
        assert_claim_fenced(backend, &claim, "a released claim").await;
        previous = Some(claim);
    }
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!((&claim.run, claim.attempt), (&run, 1));
    backend
        .queue
        .complete(&claim, Commit::default())
        .await
        .expect("complete");
    let next = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(next.run, behind);
    backend
        .queue
        .complete(&next, Commit::default())
        .await
        .expect("complete");
}

/// `fail` with attempts left makes the run pending again, claimable no earlier than its
/// retry delay and still ahead of later runs; on the last attempt it makes the run terminal
/// with the given status and the conversation moves on. `fail` with `completed` is
/// `InvalidInput` and changes nothing.
pub async fn failed_attempts_are_retried_after_the_delay_then_fail_for_good(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let key = fresh_key();
    let mut new = new_turn(&key, 0, 2);
    new.retry_delay = capabilities.short_lease * 3;
    let run = submit(backend, new).await;
    let next = submit(backend, new_turn(&key, 1, 1)).await;
    let worker = WorkerId::generate();
    let first = claim_mine(backend, &worker, LONG, &[&key]).await;
    let wrong = backend
        .queue
        .fail(&first, &Failure::new(TerminalStatus::Completed, "no"))
        .await;
    assert_kind(
        wrong,
        ErrorKind::InvalidInput,
        "fail with a completed status",
    );
    assert_eq!(record(backend, &key, &run).await.status, RunStatus::Running);

    let failed_at = SystemTime::now();
    let after = backend
        .queue
        .fail(&first, &Failure::new(TerminalStatus::Failed, "boom 1"))
        .await;
    let after = after.expect("fail");
    let AfterFailure::Retry { at } = after else {
        panic!("attempt 1 of 2 must be retried, got {after:?}");
    };
    // A second of slack for a database server's clock.
    assert!(at + Duration::from_secs(1) >= failed_at + capabilities.short_lease * 3);
    let state = record(backend, &key, &run).await;
    assert_eq!((state.status, state.attempts), (RunStatus::Pending, 1));
    assert_eq!(state.error.as_deref(), Some("boom 1"));
    assert_claim_fenced(backend, &first, "a failed attempt's claim").await;

    // Nothing of this conversation before the delay (the later run may not overtake).
    let early = claim_own(backend.queue.as_ref(), &worker, LONG, &[&key]).await;
    let second = match early {
        Some(claim) => {
            assert_eq!(
                claim.run, run,
                "a later run overtook a run waiting to retry"
            );
            assert!(
                SystemTime::now() >= at,
                "claimed before its retry delay ran out"
            );
            claim
        }
        None => {
            let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::sleep(wait + capabilities.settle).await;
            claim_mine(backend, &worker, LONG, &[&key]).await
        }
    };
    assert_eq!((&second.run, second.attempt), (&run, 2));
    let last = backend
        .queue
        .fail(&second, &Failure::new(TerminalStatus::Timeout, "too slow"))
        .await;
    assert_eq!(last.expect("fail"), AfterFailure::Final(RunStatus::Timeout));
    let state = record(backend, &key, &run).await;
    assert_eq!((state.status, state.attempts), (RunStatus::Timeout, 2));
    assert_eq!(state.error.as_deref(), Some("too slow"));
    let moved_on = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(
        moved_on.run, next,
        "the conversation moves on after a final failure"
    );
    let cancelled = backend
        .queue
        .fail(&moved_on, &Failure::new(TerminalStatus::Cancelled, "bye"))
        .await;
    assert_eq!(
        cancelled.expect("fail"),
        AfterFailure::Final(RunStatus::Cancelled)
    );
}

/// A claim that expires on the run's last attempt is not re-delivered: the next claim
/// fails the run (status `failed`, attempts not exceeded) and moves on to the
/// conversation's next run.
pub async fn an_expired_claim_on_the_last_attempt_fails_the_run(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let key = fresh_key();
    let run = submit(backend, new_turn(&key, 0, 1)).await;
    let next = submit(backend, new_turn(&key, 1, 1)).await;
    let worker = WorkerId::generate();
    let dead = claim_mine(backend, &worker, capabilities.short_lease, &[&key]).await;
    assert_eq!(dead.run, run);
    tokio::time::sleep(capabilities.past_short_lease()).await;
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(
        (&claim.run, claim.attempt),
        (&next, 1),
        "the next run, not a 2nd attempt"
    );
    let state = record(backend, &key, &run).await;
    assert_eq!((state.status, state.attempts), (RunStatus::Failed, 1));
    assert!(state.error.is_some(), "the failure says why");
    assert_claim_fenced(backend, &dead, "the expired last attempt").await;
    backend
        .queue
        .complete(&claim, Commit::default())
        .await
        .expect("complete");
}

/// After a run was claimed again, the older claim is `Fenced` for every call and changes
/// nothing; so is a claim with another worker or a token never issued, and any call after
/// the run completed.
pub async fn a_stale_claim_is_fenced_and_changes_nothing(backend: &Backend) {
    let key = fresh_key();
    let run = submit(backend, new_turn(&key, 0, 3)).await;
    let worker = WorkerId::generate();
    let old = claim_mine(backend, &worker, LONG, &[&key]).await;
    backend.queue.release(&old).await.expect("release");
    let current = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(current.run, run);
    assert_claim_fenced(backend, &old, "a claim from before the release").await;
    let forged = [
        Claim {
            worker: WorkerId::generate(),
            ..current.clone()
        },
        Claim {
            fence: crate::Fence(current.fence.0 + 1),
            ..current.clone()
        },
    ];
    for claim in &forged {
        assert_claim_fenced(backend, claim, "a forged claim").await;
    }
    let state = record(backend, &key, &run).await;
    assert_eq!((state.status, state.attempts), (RunStatus::Running, 1));
    backend
        .queue
        .complete(&current, Commit::output(Some(json!({"ok": true}))))
        .await
        .expect("complete");
    // Completing again with the same claim is a retry of a commit whose answer was lost:
    // `Ok`, and nothing changes. Every other call of the finished claim is `Fenced`.
    let again = backend
        .queue
        .complete(&current, Commit::output(Some(json!({"other": 1}))))
        .await;
    assert_eq!(again.expect("a retried commit"), None);
    let queue = &backend.queue;
    let why = "a claim of a completed run";
    assert_kind(
        queue.heartbeat(&current, LONG).await,
        ErrorKind::Fenced,
        why,
    );
    let failed = queue
        .fail(&current, &Failure::new(TerminalStatus::Failed, "late"))
        .await;
    assert_kind(failed, ErrorKind::Fenced, why);
    assert_kind(queue.release(&current).await, ErrorKind::Fenced, why);
    let state = record(backend, &key, &run).await;
    assert_eq!(
        (state.status, state.output),
        (RunStatus::Completed, Some(json!({"ok": true})))
    );
}

/// A heartbeat extends a claim past its original lease (same token and attempt), so the
/// run is not re-delivered, and the returned claim keeps working.
pub async fn a_heartbeat_keeps_a_claim_from_being_redelivered(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let key = fresh_key();
    let run = submit(backend, new_turn(&key, 0, 3)).await;
    let worker = WorkerId::generate();
    let claim = claim_mine(backend, &worker, capabilities.short_lease, &[&key]).await;
    let beat = backend
        .queue
        .heartbeat(&claim, LONG)
        .await
        .expect("heartbeat");
    assert_eq!(
        (&beat.run, beat.fence, beat.attempt),
        (&run, claim.fence, 1)
    );
    assert!(
        beat.expires_at > claim.expires_at,
        "the heartbeat moved the expiry on"
    );
    tokio::time::sleep(capabilities.past_short_lease()).await;
    assert_nothing_claimable(backend, &worker, &[&key], "a heartbeated claim").await;
    let state = record(backend, &key, &run).await;
    assert_eq!((state.status, state.attempts), (RunStatus::Running, 1));
    backend
        .queue
        .complete(&beat, Commit::default())
        .await
        .expect("complete after heartbeats");
}

/// `prune_runs(before)` removes terminal runs that finished before the cutoff and keeps
/// pending runs, runs finished later, and every snapshot. It removes every org's old runs:
/// run this clause on a backend of its own.
pub async fn prune_runs_removes_old_terminal_runs_and_never_snapshots(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let key = fresh_key();
    let waiting = sibling(&key, "waiting");
    let later = sibling(&key, "later");
    let worker = WorkerId::generate();
    let done = submit(backend, new_turn(&key, 0, 1)).await;
    let failed = submit(backend, new_turn(&key, 1, 1)).await;
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    let bytes = transcript("kept past run retention", 1);
    let version = backend
        .queue
        .complete(&claim, Commit::transcript(bytes, None))
        .await
        .expect("complete")
        .expect("the commit wrote a transcript");
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(claim.run, failed);
    backend
        .queue
        .fail(&claim, &Failure::new(TerminalStatus::Failed, "gone"))
        .await
        .expect("fail");
    let pending = submit(backend, new_turn(&waiting, 0, 1)).await;

    tokio::time::sleep(capabilities.settle).await;
    let cutoff = SystemTime::now();
    tokio::time::sleep(capabilities.settle).await;
    let recent = submit(backend, new_turn(&later, 0, 1)).await;
    let claim = claim_mine(backend, &worker, LONG, &[&later]).await;
    backend
        .queue
        .complete(&claim, Commit::default())
        .await
        .expect("complete");

    let removed = backend.queue.prune_runs(cutoff).await.expect("prune_runs");
    assert!(
        removed >= 2,
        "the completed and the failed run: removed {removed}"
    );
    for (run, gone) in [
        (&done, true),
        (&failed, true),
        (&pending, false),
        (&recent, false),
    ] {
        let found = backend.queue.status(&key.org, run).await.expect("status");
        assert_eq!(found.is_none(), gone, "run {run} after prune_runs");
    }
    let snapshot = hydrate(backend, &key).await;
    assert_eq!(
        snapshot.version, version,
        "run retention never removes snapshots"
    );
}
