//! Clauses of contract v2: a claim is its conversation's ownership (one fence shared with
//! leases), the end of a turn is one commit, clear is fenced, prune spares owned
//! conversations.

use std::time::SystemTime;

use bytes::Bytes;

use super::Capabilities;
use super::support::{
    LONG, acquire, assert_head, assert_kind, assert_nothing_claimable, claim_mine, extended,
    fresh_key, hydrate, new_turn, record, sibling, submit, transcript, turn,
};
use crate::backend::Backend;
use crate::error::ErrorKind;
use crate::id::WorkerId;
use crate::queue::{Commit, RunStatus};

/// While a run is claimed its conversation's lease is busy, and while a lease is live the
/// conversation's runs are not claimable; the claim's fence is newer than every lease's.
pub async fn a_claim_and_a_lease_of_one_conversation_exclude_each_other(backend: &Backend) {
    let key = fresh_key();
    let worker = WorkerId::generate();
    let lease = acquire(backend, &key).await;
    submit(backend, new_turn(&key, 1, 3)).await;
    assert_nothing_claimable(
        backend,
        &worker,
        &[&key],
        "a conversation with a live lease",
    )
    .await;
    backend.locks.release(&lease).await.expect("release");

    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert!(
        claim.fence > lease.fence,
        "the claim's {} is not newer than the lease's {}",
        claim.fence,
        lease.fence
    );
    let busy = backend
        .locks
        .try_acquire(&key, LONG)
        .await
        .expect("try_acquire");
    assert!(busy.is_none(), "a lease was granted while a run is claimed");
    // The claim's fence is what writes carry now; the old lease's is stale.
    let stale = super::support::completed(
        &claim.run,
        &transcript("a zombie lease holder", 1),
        None,
        &lease,
    );
    let refused = backend.sessions.persist(&key, stale).await;
    assert_kind(refused, ErrorKind::Fenced, "a write under the older lease");
    backend
        .queue
        .complete(&claim, Commit::default())
        .await
        .expect("complete");
    let free = backend
        .locks
        .try_acquire(&key, LONG)
        .await
        .expect("try_acquire");
    assert!(free.is_some(), "the commit did not end the ownership");
}

/// `complete` writes the transcript as the head and completes the run in one commit; the
/// conversation's next run is claimable at once and its claim reports the new head.
pub async fn a_commit_writes_the_head_and_completes_the_run_together(backend: &Backend) {
    let key = fresh_key();
    let worker = WorkerId::generate();
    let first = submit(backend, new_turn(&key, 1, 3)).await;
    let second = submit(backend, new_turn(&key, 2, 3)).await;
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(
        (&claim.run, claim.head),
        (&first, None),
        "a fresh conversation"
    );
    let bytes = transcript("one commit", 1);
    let version = backend
        .queue
        .complete(&claim, Commit::transcript(bytes.clone(), None))
        .await
        .expect("commit")
        .expect("a version for the transcript");
    let head = hydrate(backend, &key).await;
    assert_eq!((head.version, &head.run), (version, &first));
    assert_eq!(head.transcript, bytes);
    assert_eq!(
        record(backend, &key, &first).await.status,
        RunStatus::Completed
    );

    let next = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(
        next.run, second,
        "the next run is claimable right after the commit"
    );
    assert_eq!(next.head, Some(version), "its claim reports the head");
    assert!(next.fence > claim.fence, "fences grow claim after claim");
    backend
        .queue
        .complete(&next, Commit::default())
        .await
        .expect("a commit without a transcript");
    assert_head(backend, &key, version, &bytes).await;
}

/// A commit that fails a check (stale expected version, over the size limit) changes
/// nothing: the run stays claimed and the head stays. Retrying a commit that succeeded
/// returns the same version and stores nothing twice.
pub async fn a_commit_that_fails_a_check_changes_nothing_and_a_retry_is_harmless(
    backend: &Backend,
) {
    let key = fresh_key();
    let worker = WorkerId::generate();
    submit(backend, new_turn(&key, 1, 3)).await;
    let run = submit(backend, new_turn(&key, 2, 3)).await;
    let first = claim_mine(backend, &worker, LONG, &[&key]).await;
    let a = transcript("first", 1);
    let v1 = backend
        .queue
        .complete(&first, Commit::transcript(a.clone(), None))
        .await
        .expect("commit")
        .expect("version");

    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(claim.run, run);
    let b = extended(&a, 1, "second");
    let stale = backend
        .queue
        .complete(&claim, Commit::transcript(b.clone(), None))
        .await;
    assert_kind(stale, ErrorKind::Conflict, "a commit over a stale head");
    let limit = backend.sessions.max_transcript_bytes();
    let huge = Bytes::from(vec![b'x'; limit + 1]);
    let too_large = backend
        .queue
        .complete(&claim, Commit::transcript(huge, Some(v1)))
        .await;
    assert_kind(
        too_large,
        ErrorKind::TooLarge,
        "a commit over the size limit",
    );
    assert_head(backend, &key, v1, &a).await;
    let state = record(backend, &key, &run).await;
    assert_eq!(
        state.status,
        RunStatus::Running,
        "a refused commit left the run"
    );

    let commit = Commit::transcript(b.clone(), Some(v1));
    let v2 = backend
        .queue
        .complete(&claim, commit.clone())
        .await
        .expect("commit");
    let again = backend
        .queue
        .complete(&claim, commit)
        .await
        .expect("retried commit");
    assert_eq!(again, v2, "a retried commit answers the same version");
    let v2 = v2.expect("version");
    assert_head(backend, &key, v2, &b).await;
    assert_eq!(
        record(backend, &key, &run).await.status,
        RunStatus::Completed
    );
}

/// A reset's clear that lands after a newer turn committed (its claim lapsed and the
/// conversation moved on) is `Fenced` and removes nothing: the newer turn survives.
pub async fn a_clear_landing_after_a_newer_turn_is_fenced_and_the_turn_survives(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let key = fresh_key();
    let worker = WorkerId::generate();
    let lease = acquire(backend, &key).await;
    let old = transcript("before the reset", 1);
    let v1 = turn(backend, &lease, None, &old).await;
    backend.locks.release(&lease).await.expect("release");
    let mut reset = crate::queue::NewRun::reset(key.clone());
    reset.retry_delay = std::time::Duration::ZERO;
    let reset = submit(backend, reset).await;
    let slow = claim_mine(backend, &worker, capabilities.short_lease, &[&key]).await;
    assert_eq!(slow.run, reset);
    tokio::time::sleep(capabilities.past_short_lease()).await;
    // The reset was re-delivered and done elsewhere; then a newer turn committed.
    let retried = claim_mine(backend, &worker, LONG, &[&key]).await;
    assert_eq!(retried.run, reset);
    let cleared = backend.sessions.clear(&key, retried.fence).await;
    assert_eq!(cleared.expect("clear"), 1);
    backend
        .queue
        .complete(&retried, Commit::default())
        .await
        .expect("complete the reset");
    submit(backend, new_turn(&key, 1, 3)).await;
    let newer = claim_mine(backend, &worker, LONG, &[&key]).await;
    let fresh = transcript("after the reset", 1);
    let v2 = backend
        .queue
        .complete(&newer, Commit::transcript(fresh.clone(), None))
        .await
        .expect("commit")
        .expect("version");
    assert!(v2 > v1);

    let late = backend.sessions.clear(&key, slow.fence).await;
    assert_kind(late, ErrorKind::Fenced, "the first attempt's late clear");
    assert_head(backend, &key, v2, &fresh).await;
}

/// `prune` never removes a conversation whose run is claimed, however idle its head is; once
/// the ownership ends it does. It removes every org's old data: run it on its own backend.
pub async fn prune_never_removes_a_conversation_whose_run_is_claimed(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let key = fresh_key();
    let idle = sibling(&key, "idle");
    let worker = WorkerId::generate();
    for conversation in [&key, &idle] {
        submit(backend, new_turn(conversation, 1, 3)).await;
        let claim = claim_mine(backend, &worker, LONG, &[conversation]).await;
        let bytes = transcript("long ago", 1);
        backend
            .queue
            .complete(&claim, Commit::transcript(bytes, None))
            .await
            .expect("commit");
    }
    submit(backend, new_turn(&key, 2, 3)).await;
    let in_flight = claim_mine(backend, &worker, LONG, &[&key]).await;
    tokio::time::sleep(capabilities.settle).await;
    let cutoff = SystemTime::now();

    let report = backend.sessions.prune(cutoff).await.expect("prune");
    assert!(report.conversations >= 1, "the idle one: {report:?}");
    let head = backend.sessions.head(&idle).await.expect("head");
    assert_eq!(head, None, "the unowned idle conversation is pruned");
    let kept = hydrate(backend, &key).await;
    assert_eq!(kept.version, in_flight.head.expect("a head when claimed"));

    backend.queue.release(&in_flight).await.expect("release");
    backend.sessions.prune(cutoff).await.expect("prune");
    let head = backend.sessions.head(&key).await.expect("head");
    assert_eq!(head, None, "pruned once nobody owns it");
}

/// An append ([`Commit::append`]) is the first `base_len` bytes of its expected head then
/// its new bytes, whatever the store keeps: the whole head, a shorter base (a rewrite), the
/// next plain append after it. A base past the end of the head is `InvalidInput`, an append
/// over a version that is no longer in the head or over no head is `Conflict`, and neither
/// changes anything: the claim still commits afterwards.
pub async fn an_append_commit_is_its_base_then_its_new_bytes(backend: &Backend) {
    let worker = WorkerId::generate();
    let (key, v1, first) = first_turn(backend, &worker, "append").await;
    let mut head = (v1, first.clone());
    let header_len = first.iter().position(|b| *b == b'\n').expect("a header") + 1;
    // The whole head, then a base of only its header (a rewrite), then the whole head again.
    for (n, rewrite) in [false, true, false].into_iter().enumerate() {
        let base = if rewrite { header_len } else { head.1.len() };
        let new = Bytes::from(super::support::exchange(n + 1, &format!("append {n}")));
        submit(backend, new_turn(&key, n as u64 + 1, 3)).await;
        let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
        let commit = Commit::append(new.clone(), Some(head.0), base);
        let version = backend
            .queue
            .complete(&claim, commit)
            .await
            .expect("append");
        let version = version.expect("a version");
        let whole = Bytes::from([&head.1[..base], &new[..]].concat());
        assert_head(backend, &key, version, &whole).await;
        head = (version, whole);
    }
    submit(backend, new_turn(&key, 9, 3)).await;
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    let new = Bytes::from(super::support::exchange(9, "refused"));
    let past_end = Commit::append(new.clone(), Some(head.0), head.1.len() + 1);
    let refused = backend.queue.complete(&claim, past_end).await;
    assert_kind(
        refused,
        ErrorKind::InvalidInput,
        "a base past the end of the head",
    );
    let not_in_head = Commit::append(new.clone(), Some(v1), 1);
    let refused = backend.queue.complete(&claim, not_in_head).await;
    assert_kind(
        refused,
        ErrorKind::Conflict,
        "a version no longer in the head",
    );
    let over_nothing = Commit::append(new.clone(), None, 0);
    let refused = backend.queue.complete(&claim, over_nothing).await;
    assert_kind(refused, ErrorKind::Conflict, "an append over no head");
    assert_head(backend, &key, head.0, &head.1).await;
    let status = record(backend, &key, &claim.run).await.status;
    assert_eq!(
        status,
        RunStatus::Running,
        "refused commits leave the run running"
    );
    let commit = Commit::append(new.clone(), Some(head.0), head.1.len());
    let version = backend
        .queue
        .complete(&claim, commit)
        .await
        .expect("append");
    let whole = Bytes::from([&head.1[..], &new[..]].concat());
    assert_head(backend, &key, version.expect("a version"), &whole).await;
}

/// A persist that appends ([`Persist::base_len`](crate::Persist::base_len)) stores the
/// whole transcript it stands for; sent again after its answer was lost (its expected
/// version is then no longer the head, but the head starts with it) it is the same write and
/// answers the same version; a different append over that old version conflicts.
pub async fn an_append_persist_sent_twice_is_stored_once(backend: &Backend) {
    let worker = WorkerId::generate();
    let (key, v1, first) = first_turn(backend, &worker, "twice").await;
    submit(backend, new_turn(&key, 1, 3)).await;
    let claim = claim_mine(backend, &worker, LONG, &[&key]).await;
    let new = Bytes::from(super::support::exchange(1, "twice, again"));
    let write = crate::Persist {
        run: claim.run.clone(),
        status: crate::TerminalStatus::Completed,
        transcript: new.clone(),
        expected: Some(v1),
        fence: claim.fence,
        base_len: Some(first.len()),
    };
    let v2 = backend
        .sessions
        .persist(&key, write.clone())
        .await
        .expect("append");
    let whole = Bytes::from([&first[..], &new[..]].concat());
    assert_head(backend, &key, v2, &whole).await;
    let again = backend.sessions.persist(&key, write.clone()).await;
    assert_eq!(again.expect("the same append again"), v2);
    let other = crate::Persist {
        transcript: Bytes::from(super::support::exchange(1, "something else")),
        ..write
    };
    let refused = backend.sessions.persist(&key, other).await;
    assert_kind(
        refused,
        ErrorKind::Conflict,
        "a different append over the old head",
    );
    assert_head(backend, &key, v2, &whole).await;
    // The claim's commit of the same bytes completes the run with the stored version.
    let commit = Commit::append(new, Some(v1), first.len());
    let committed = backend
        .queue
        .complete(&claim, commit)
        .await
        .expect("commit");
    assert_eq!(committed, Some(v2));
    assert_eq!(
        record(backend, &key, &claim.run).await.status,
        RunStatus::Completed
    );
}

/// A fresh conversation whose first turn `worker` committed: its key, version and bytes.
async fn first_turn(
    backend: &Backend,
    worker: &WorkerId,
    title: &str,
) -> (crate::ConversationKey, crate::Version, Bytes) {
    let key = fresh_key();
    let first = transcript(title, 1);
    submit(backend, new_turn(&key, 0, 3)).await;
    let claim = claim_mine(backend, worker, LONG, &[&key]).await;
    let v1 = backend
        .queue
        .complete(&claim, Commit::transcript(first.clone(), None))
        .await
        .expect("first commit")
        .expect("a version");
    (key, v1, first)
}
