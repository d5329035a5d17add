//! Clauses of run events: numbering, replay after a seq, the claim fence, bad input,
//! wake-ups and retention.

use std::time::{Duration, Instant, SystemTime};

use super::Capabilities;
use super::support::{LONG, assert_kind, claim_mine, follower, fresh_key, new_turn, submit};
use crate::backend::Backend;
use crate::control::Failure;
use crate::error::ErrorKind;
use crate::events::{EventPage, MAX_EVENT_BYTES, MAX_EVENTS_PER_READ};
use crate::id::{ConversationKey, OrgId, RunId, WorkerId};
use crate::queue::{Claim, Commit, RunStatus};
use crate::session::TerminalStatus;

fn event(n: usize) -> String {
    format!(r#"{{"type":"output","text":"part {n} é👋","n":{n}}}"#)
}

async fn record(backend: &Backend, claim: &Claim, events: &[String]) -> u64 {
    backend
        .queue
        .record_events(claim, events)
        .await
        .expect("record events")
}

async fn page(backend: &Backend, key: &ConversationKey, run: &RunId, after: u64) -> EventPage {
    backend
        .queue
        .read_events(&key.org, run, after, MAX_EVENTS_PER_READ)
        .await
        .expect("read events")
        .unwrap_or_else(|| panic!("run {run} not found"))
}

fn seqs(page: &EventPage) -> Vec<(u64, u32)> {
    page.events.iter().map(|e| (e.seq, e.attempt)).collect()
}

/// Events are numbered 1, 2, 3, … in the order recorded, read back byte for byte with their
/// attempt, after any seq and up to a limit; another org and an unknown run find nothing.
pub async fn events_are_numbered_in_order_and_replayed_after_a_seq(backend: &Backend) {
    let key = fresh_key();
    submit(backend, new_turn(&key, 0, 3)).await;
    let claim = claim_mine(backend, &WorkerId::generate(), LONG, &[&key]).await;
    let empty = page(backend, &key, &claim.run, 0).await;
    assert_eq!((empty.events.len(), empty.last_seq), (0, 0));
    assert_eq!(empty.record.status, RunStatus::Running);
    assert!(!empty.ends_the_run(0));

    assert_eq!(record(backend, &claim, &[event(1), event(2)]).await, 2);
    assert_eq!(record(backend, &claim, &[]).await, 2, "an empty append");
    assert_eq!(record(backend, &claim, &[event(3)]).await, 3);
    let all = page(backend, &key, &claim.run, 0).await;
    assert_eq!(seqs(&all), vec![(1, 1), (2, 1), (3, 1)]);
    let texts: Vec<&str> = all.events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(texts, vec![event(1), event(2), event(3)], "byte for byte");
    assert_eq!(all.last_seq, 3);
    assert_eq!(
        seqs(&page(backend, &key, &claim.run, 2).await),
        vec![(3, 1)]
    );
    assert!(page(backend, &key, &claim.run, 3).await.events.is_empty());
    assert!(page(backend, &key, &claim.run, 99).await.events.is_empty());
    let two = backend.queue.read_events(&key.org, &claim.run, 0, 2).await;
    let two = two.expect("read").expect("found");
    assert_eq!((seqs(&two), two.last_seq), (vec![(1, 1), (2, 1)], 3));

    let elsewhere = fresh_key();
    let foreign = backend.queue.read_events(&elsewhere.org, &claim.run, 0, 10);
    assert!(foreign.await.expect("read").is_none(), "another org's run");
    let nobody = RunId::generate();
    let unknown = backend.queue.read_events(&key.org, &nobody, 0, 10);
    assert!(unknown.await.expect("read").is_none(), "an unknown run");
    for limit in [0, MAX_EVENTS_PER_READ + 1] {
        let bad = backend.queue.read_events(&key.org, &claim.run, 0, limit);
        assert_kind(
            bad.await,
            ErrorKind::InvalidInput,
            "a read limit out of range",
        );
    }

    backend
        .queue
        .complete(&claim, Commit::default())
        .await
        .expect("complete");
    let done = page(backend, &key, &claim.run, 0).await;
    assert_eq!(done.record.status, RunStatus::Completed);
    assert!(
        done.ends_the_run(0),
        "a finished run's page is its whole rest"
    );
    assert!(page(backend, &key, &claim.run, 3).await.ends_the_run(3));
}

/// Only the run's newest claim records, while the run is unfinished: after its own failed
/// attempt it may still say it will retry; the next attempt's claim takes over (the old
/// claim is `Fenced` and stores nothing) and its events continue the numbering with its
/// attempt; after the run ends nobody records; a claim in another org is `NotFound`.
pub async fn only_the_newest_claim_of_an_unfinished_run_records_events(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let key = fresh_key();
    let mut turn = new_turn(&key, 0, 3);
    turn.retry_delay = capabilities.short_lease;
    submit(backend, turn).await;
    let worker = WorkerId::generate();
    let first = claim_mine(backend, &worker, LONG, &[&key]).await;
    record(backend, &first, &[event(1)]).await;
    let boom = Failure::new(TerminalStatus::Failed, "boom");
    backend.queue.fail(&first, &boom).await.expect("fail");
    assert_eq!(
        record(backend, &first, &[event(2)]).await,
        2,
        "after its fail"
    );

    tokio::time::sleep(capabilities.past_short_lease()).await;
    let second = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(second.attempt, 2);
    let stale = backend.queue.record_events(&first, &[event(99)]).await;
    assert_kind(
        stale,
        ErrorKind::Fenced,
        "the first attempt after a newer claim",
    );
    assert_eq!(record(backend, &second, &[event(3)]).await, 3);
    assert_eq!(
        seqs(&page(backend, &key, &second.run, 0).await),
        vec![(1, 1), (2, 1), (3, 2)]
    );

    let mut foreign = second.clone();
    let other: OrgId = fresh_key().org;
    foreign.key = ConversationKey::new(other, key.agent.clone(), key.conversation.clone());
    let elsewhere = backend.queue.record_events(&foreign, &[event(98)]).await;
    assert_kind(elsewhere, ErrorKind::NotFound, "a claim naming another org");

    backend
        .queue
        .complete(&second, Commit::default())
        .await
        .expect("complete");
    let late = backend.queue.record_events(&second, &[event(97)]).await;
    assert_kind(late, ErrorKind::Fenced, "after the run ended");
    let done = page(backend, &key, &second.run, 0).await;
    assert_eq!(done.last_seq, 3, "nothing refused was stored");
    assert!(done.ends_the_run(0));
}

/// A bad event (not a JSON object, over the size limit) or a bad batch is refused with a
/// typed error and nothing of the call is stored, not even its good events.
pub async fn bad_events_are_typed_errors_and_store_nothing(backend: &Backend) {
    let key = fresh_key();
    submit(backend, new_turn(&key, 0, 3)).await;
    let claim = claim_mine(backend, &WorkerId::generate(), LONG, &[&key]).await;
    record(backend, &claim, &[event(1)]).await;
    let huge = format!(r#"{{"text":"{}"}}"#, "x".repeat(MAX_EVENT_BYTES));
    let cases: [(Vec<String>, ErrorKind); 5] = [
        (vec![event(2), "[1,2]".to_owned()], ErrorKind::InvalidInput),
        (vec!["not json".to_owned()], ErrorKind::InvalidInput),
        (vec![String::new()], ErrorKind::InvalidInput),
        (
            vec![r#"{"a":1} {"b":2}"#.to_owned()],
            ErrorKind::InvalidInput,
        ),
        (vec![event(2), huge], ErrorKind::TooLarge),
    ];
    for (events, kind) in cases {
        let refused = backend.queue.record_events(&claim, &events).await;
        assert_kind(refused, kind, "a bad append");
    }
    let stored = page(backend, &key, &claim.run, 0).await;
    assert_eq!((seqs(&stored), stored.last_seq), (vec![(1, 1)], 1));
    backend.queue.release(&claim).await.expect("release");
}

/// Recording events wakes a follower waiting for the run.
pub async fn recording_events_wakes_a_follower_of_the_run(backend: &Backend) {
    let key = fresh_key();
    submit(backend, new_turn(&key, 0, 3)).await;
    let claim = claim_mine(backend, &WorkerId::generate(), LONG, &[&key]).await;
    // The first wait may start a listener, whose connecting wakes everyone once (a hint).
    let (org, run) = (&key.org, &claim.run);
    let settle = Duration::from_millis(50);
    backend
        .queue
        .wait_for_run(org, run, Instant::now(), settle)
        .await;
    let since = Instant::now();
    let waiter = follower(backend, &key.org, &claim.run, since).await;
    record(backend, &claim, &[event(1)]).await;
    let woken = tokio::time::timeout(Duration::from_secs(30), waiter).await;
    assert!(woken.is_ok(), "the follower was not woken by the events");
    backend.queue.release(&claim).await.expect("release");
}

/// `prune_events` removes the events of runs that finished before the cutoff and keeps
/// those of later and unfinished runs; the pruned run's record stays.
pub async fn prune_events_removes_events_of_runs_finished_before_the_cutoff(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let (old, fresh, open) = (fresh_key(), fresh_key(), fresh_key());
    let worker = WorkerId::generate();
    let mut claims = Vec::new();
    for key in [&old, &fresh, &open] {
        submit(backend, new_turn(key, 0, 3)).await;
        let claim = claim_mine(backend, &worker, LONG, &[key]).await;
        record(backend, &claim, &[event(1), event(2)]).await;
        claims.push(claim);
    }
    let queue = &backend.queue;
    queue
        .complete(&claims[0], Commit::default())
        .await
        .expect("complete");
    tokio::time::sleep(capabilities.settle).await;
    let cutoff = SystemTime::now();
    tokio::time::sleep(capabilities.settle).await;
    queue
        .complete(&claims[1], Commit::default())
        .await
        .expect("complete");

    let removed = backend.queue.prune_events(cutoff).await.expect("prune");
    assert!(
        removed >= 2,
        "the old run's two events go (removed {removed})"
    );
    let gone = page(backend, &old, &claims[0].run, 0).await;
    assert!(gone.events.is_empty(), "the old run's events are gone");
    assert_eq!(gone.record.status, RunStatus::Completed, "its record stays");
    assert!(gone.ends_the_run(0));
    assert_eq!(
        page(backend, &fresh, &claims[1].run, 0).await.events.len(),
        2
    );
    assert_eq!(
        page(backend, &open, &claims[2].run, 0).await.events.len(),
        2
    );
    backend.queue.release(&claims[2]).await.expect("release");
}
