//! Clauses of double texting (`reject`, `interrupt`, `rollback`) and steering.

use std::time::{Duration, Instant};

use super::support::{
    LONG, assert_head, assert_kind, assert_no_head, claim_mine, follower, fresh_key, new_turn,
    record, submit, transcript,
};
use crate::backend::Backend;
use crate::control::CancelOutcome;
use crate::error::ErrorKind;
use crate::id::{ConversationKey, IdempotencyKey, RunId, WorkerId};
use crate::multitask::{MultitaskStrategy, steered_output};
use crate::queue::{Commit, NewRun, RunKind, RunStatus};

fn with(key: &ConversationKey, n: u64, strategy: MultitaskStrategy) -> NewRun {
    new_turn(key, n, 3).multitask(strategy)
}

async fn assert_cancelled_by(backend: &Backend, key: &ConversationKey, run: &RunId, by: &str) {
    let ended = record(backend, key, run).await;
    assert_eq!(ended.status, RunStatus::Cancelled, "run {run}");
    let error = ended.error.unwrap_or_default();
    assert!(error.contains(by), "run {run}'s error {error:?} names {by}");
}

/// `reject` is `Conflict` naming the unfinished run while the conversation has one (pending
/// or running) and queues nothing; a retried submit whose key matched returns its run; once
/// the conversation is idle, `reject` queues.
pub async fn reject_refuses_while_a_run_is_unfinished_and_queues_nothing(backend: &Backend) {
    let key = fresh_key();
    let first = submit(backend, new_turn(&key, 0, 3)).await;
    let queue = &backend.queue;
    let depth = queue.depth().await.expect("depth");
    let err = queue
        .submit(with(&key, 1, MultitaskStrategy::Reject))
        .await
        .expect_err("reject while a run waits");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.message().contains(first.as_str()), "{err}");
    let worker = WorkerId::generate();
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    let mut keyed = with(&key, 2, MultitaskStrategy::Reject);
    keyed.idempotency_key = Some(IdempotencyKey::new("reject-once").expect("key"));
    assert_kind(
        queue.submit(keyed.clone()).await,
        ErrorKind::Conflict,
        "reject while a run runs",
    );
    assert!(
        queue.depth().await.expect("depth") <= depth,
        "a rejected submit queues nothing"
    );
    queue
        .complete(&claim, Commit::default())
        .await
        .expect("complete");
    let accepted = queue.submit(keyed.clone()).await.expect("reject when idle");
    assert!(accepted.created);
    let again = queue.submit(keyed).await.expect("the same key again");
    assert_eq!((again.run, again.created), (accepted.run.clone(), false));
    let next = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(
        next.run, accepted.run,
        "the rejected ones left no run behind"
    );
    queue.release(&next).await.expect("release");
}

/// `interrupt` cancels the started turn (a claimed one is asked to stop: its heartbeat
/// answers `Cancelled` and its release ends it cancelled, naming the new run), keeps the
/// waiting runs in order ahead of the new run, and never cancels a reset.
pub async fn interrupt_cancels_the_started_turn_and_keeps_the_waiting_runs(backend: &Backend) {
    let key = fresh_key();
    let running = submit(backend, new_turn(&key, 0, 3)).await;
    let waiting = submit(backend, new_turn(&key, 1, 3)).await;
    let reset = submit(backend, NewRun::reset(key.clone())).await;
    let worker = WorkerId::generate();
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(claim.run, running);
    let queue = &backend.queue;
    let new = submit(backend, with(&key, 2, MultitaskStrategy::Interrupt)).await;
    assert_kind(
        queue.heartbeat(&claim, LONG).await,
        ErrorKind::Cancelled,
        "the interrupted turn's heartbeat",
    );
    queue.release(&claim).await.expect("release");
    assert_cancelled_by(backend, &key, &running, new.as_str()).await;
    for expected in [&waiting, &reset, &new] {
        let next = claim_mine(backend, &worker, LONG, &[&key]).await;
        assert_eq!(&next.run, expected, "waiting runs keep their place");
        queue
            .complete(&next, Commit::default())
            .await
            .expect("complete");
    }
}

/// `rollback` cancels the started turn and every waiting turn (at once, naming the new run),
/// leaves a waiting reset, and the new run follows it.
pub async fn rollback_cancels_every_turn_and_runs_the_new_one(backend: &Backend) {
    let key = fresh_key();
    let running = submit(backend, new_turn(&key, 0, 3)).await;
    let waiting = submit(backend, new_turn(&key, 1, 3)).await;
    let reset = submit(backend, NewRun::reset(key.clone())).await;
    let later = submit(backend, new_turn(&key, 3, 3)).await;
    let worker = WorkerId::generate();
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    let queue = &backend.queue;
    let new = submit(backend, with(&key, 4, MultitaskStrategy::Rollback)).await;
    for gone in [&waiting, &later] {
        assert_cancelled_by(backend, &key, gone, new.as_str()).await;
        assert_eq!(record(backend, &key, gone).await.attempts, 0);
    }
    assert_eq!(
        record(backend, &key, &reset).await.status,
        RunStatus::Pending
    );
    assert_kind(
        queue.complete(&claim, Commit::default()).await,
        ErrorKind::Cancelled,
        "the rolled-back turn's commit",
    );
    queue.release(&claim).await.expect("release");
    assert_cancelled_by(backend, &key, &running, new.as_str()).await;
    let next = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!((next.run.clone(), next.kind), (reset, RunKind::Reset));
    queue
        .complete(&next, Commit::default())
        .await
        .expect("complete");
    let last = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(last.run, new);
    queue.release(&last).await.expect("release");
}

/// The running turn is offered the steer runs directly behind it, with their payloads,
/// without taking them (asking twice offers the same); a steer submit wakes the running run's
/// followers; the steered runs the commit names complete with it (output naming the turn, no
/// attempt counted) and the rest run as their own turns, in order. With no running turn a
/// steer run is an ordinary run.
pub async fn steered_runs_complete_with_the_turn_that_took_them(backend: &Backend) {
    let key = fresh_key();
    let alone = submit(backend, with(&key, 0, MultitaskStrategy::Steer)).await;
    let worker = WorkerId::generate();
    let queue = &backend.queue;
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(
        claim.run, alone,
        "with no running turn a steer run is a run"
    );
    assert_eq!(queue.steerable(&claim).await.expect("steerable"), []);
    // The first wait may start a listener, whose connecting wakes everyone once (a hint).
    let settle = Duration::from_millis(50);
    queue
        .wait_for_run(&key.org, &claim.run, Instant::now(), settle)
        .await;
    let waiter = follower(backend, &key.org, &claim.run, Instant::now()).await;
    let first = submit(backend, with(&key, 1, MultitaskStrategy::Steer)).await;
    let woken = tokio::time::timeout(Duration::from_secs(30), waiter).await;
    assert!(
        woken.is_ok(),
        "a steer submit wakes the running run's followers"
    );
    let second = submit(backend, with(&key, 2, MultitaskStrategy::Steer)).await;
    let ordinary = submit(backend, new_turn(&key, 3, 3)).await;
    let behind = submit(backend, with(&key, 4, MultitaskStrategy::Steer)).await;
    let offered = queue.steerable(&claim).await.expect("steerable");
    let runs: Vec<RunId> = offered.iter().map(|s| s.run.clone()).collect();
    assert_eq!(runs, [first.clone(), second.clone()]);
    assert_eq!(offered[1].payload["n"], 2, "with its payload");
    let again = queue.steerable(&claim).await.expect("steerable again");
    assert_eq!(again, offered, "looking takes nothing");
    let bytes = transcript("steered", 3);
    let mut commit = Commit::transcript(bytes.clone(), None);
    commit.steered = runs;
    let version = queue
        .complete(&claim, commit.clone())
        .await
        .expect("commit");
    assert_head(backend, &key, version.expect("a version"), &bytes).await;
    let retried = queue
        .complete(&claim, commit)
        .await
        .expect("a retried commit");
    assert_eq!(retried, version, "a lost answer's retry is harmless");
    for steered in [&first, &second] {
        let done = record(backend, &key, steered).await;
        assert_eq!((done.status, done.attempts), (RunStatus::Completed, 0));
        assert_eq!(done.output, Some(steered_output(&alone)));
    }
    for expected in [&ordinary, &behind] {
        let next = claim_mine(backend, &worker, LONG, &[&key]).await;
        assert_eq!(&next.run, expected, "what was not taken runs in order");
        queue
            .complete(&next, Commit::default())
            .await
            .expect("complete");
    }
}

/// A commit naming a steered run that is no longer offered (it was cancelled) is `Conflict`
/// and changes nothing: no head, the turn still claimed; a stale claim may not look at the
/// offer (`Fenced`).
pub async fn a_commit_taking_a_run_no_longer_offered_conflicts_and_changes_nothing(
    backend: &Backend,
) {
    let key = fresh_key();
    submit(backend, new_turn(&key, 0, 3)).await;
    let worker = WorkerId::generate();
    let queue = &backend.queue;
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    let steered = submit(backend, with(&key, 1, MultitaskStrategy::Steer)).await;
    let offered = queue.steerable(&claim).await.expect("steerable");
    assert_eq!(offered.len(), 1);
    let outcome = queue.cancel(&key.org, &steered, "never mind").await;
    assert_eq!(outcome.expect("cancel"), Some(CancelOutcome::Cancelled));
    let mut commit = Commit::transcript(transcript("steered", 2), None);
    commit.steered = vec![steered.clone()];
    assert_kind(
        queue.complete(&claim, commit.clone()).await,
        ErrorKind::Conflict,
        "a commit taking a cancelled run",
    );
    assert_no_head(backend, &key).await;
    let held = queue.heartbeat(&claim, LONG).await.expect("still claimed");
    let mut stale = held.clone();
    stale.fence = crate::lock::Fence(held.fence.0 + 1);
    assert_kind(
        queue.steerable(&stale).await,
        ErrorKind::Fenced,
        "a stale claim's look",
    );
    commit.steered.clear();
    queue
        .complete(&held, commit)
        .await
        .expect("commit without it");
    assert_eq!(
        record(backend, &key, &steered).await.status,
        RunStatus::Cancelled
    );
}
