//! Clauses of what `SessionStore::persist` refuses: stale versions, stale or forged
//! fences, the loser of a race, and transcripts over the size limit.

use super::support::{
    acquire, assert_head, assert_kind, assert_no_head, completed, extended, filler, fresh_key,
    sibling, transcript, turn, write,
};
use crate::backend::Backend;
use crate::error::ErrorKind;
use crate::id::RunId;
use crate::lock::Fence;
use crate::session::{TerminalStatus, Version};

/// A completed write whose `expected` is not the head (stale, from the future, or
/// claiming a head that does not exist) is a `Conflict` and changes nothing.
pub async fn a_stale_expected_version_conflicts_and_changes_nothing(backend: &Backend) {
    let key = fresh_key();
    let lease = acquire(backend, &key).await;
    let a = transcript("first", 1);
    let v1 = turn(backend, &lease, None, &a).await;
    let attempts = [
        (None, "expected no head"),
        (Some(Version(v1.0 + 1_000_000)), "a version never issued"),
    ];
    for (expected, what) in attempts {
        let write = completed(&RunId::generate(), &transcript(what, 1), expected, &lease);
        assert_kind(
            backend.sessions.persist(&key, write).await,
            ErrorKind::Conflict,
            what,
        );
        assert_head(backend, &key, v1, &a).await;
    }
    let b = extended(&a, 1, "second");
    let v2 = turn(backend, &lease, Some(v1), &b).await;
    let write = completed(
        &RunId::generate(),
        &extended(&a, 1, "lost race"),
        Some(v1),
        &lease,
    );
    let result = backend.sessions.persist(&key, write).await;
    assert_kind(result, ErrorKind::Conflict, "expected the previous head");
    assert_head(backend, &key, v2, &b).await;

    let empty = sibling(&key, "never-written");
    let other_lease = acquire(backend, &empty).await;
    let write = completed(&RunId::generate(), &a, Some(v1), &other_lease);
    let result = backend.sessions.persist(&empty, write).await;
    assert_kind(
        result,
        ErrorKind::Conflict,
        "expected a head where there is none",
    );
    assert_no_head(backend, &empty).await;
}

/// After another acquisition of the lease, a write with the old fence is `Fenced` and
/// changes nothing, even an exact retry of a write that was stored and even a
/// non-completed one; the fence is checked before the same-run rules.
pub async fn a_stale_fence_is_fenced_and_changes_nothing(backend: &Backend) {
    let key = fresh_key();
    let old = acquire(backend, &key).await;
    let run = RunId::generate();
    let a = transcript("zombie", 1);
    let v1 = backend
        .sessions
        .persist(&key, completed(&run, &a, None, &old))
        .await;
    let v1 = v1.expect("write under the first lease");
    backend.locks.release(&old).await.expect("release");
    let new = acquire(backend, &key).await;
    assert!(
        new.fence > old.fence,
        "fences grow: {} then {}",
        old.fence,
        new.fence
    );

    let b = extended(&a, 1, "zombie writes");
    let zombie_writes = [
        (
            completed(&RunId::generate(), &b, Some(v1), &old),
            "a stale fence",
        ),
        (
            completed(&run, &a, None, &old),
            "a retry with a stale fence",
        ),
        (
            completed(&run, &b, None, &old),
            "an extension with a stale fence",
        ),
        (
            write(&run, TerminalStatus::Failed, &b, None, old.fence),
            "a failed snapshot with a stale fence",
        ),
    ];
    for (write, what) in zombie_writes {
        assert_kind(
            backend.sessions.persist(&key, write).await,
            ErrorKind::Fenced,
            what,
        );
        assert_head(backend, &key, v1, &a).await;
    }
    let c = extended(&a, 1, "the new holder writes");
    let v2 = turn(backend, &new, Some(v1), &c).await;
    assert_head(backend, &key, v2, &c).await;
    // Exactly the first write and the new holder's: the zombie stored nothing.
    assert_eq!(
        backend
            .sessions
            .clear(&key, new.fence)
            .await
            .expect("clear"),
        2
    );
}

/// A fence that was never issued for the conversation is `Fenced`: any fence before the
/// first acquisition, one larger than the newest, or another conversation's fence.
pub async fn a_fence_that_was_never_issued_is_fenced(backend: &Backend) {
    let key = fresh_key();
    let bytes = transcript("forged", 1);
    for fence in [Fence(0), Fence(1)] {
        let write = write(
            &RunId::generate(),
            TerminalStatus::Completed,
            &bytes,
            None,
            fence,
        );
        let result = backend.sessions.persist(&key, write).await;
        assert_kind(
            result,
            ErrorKind::Fenced,
            "a write before any lease was acquired",
        );
    }
    let lease = acquire(backend, &key).await;
    let forged = Fence(lease.fence.0 + 1);
    let write_with = |fence| {
        write(
            &RunId::generate(),
            TerminalStatus::Completed,
            &bytes,
            None,
            fence,
        )
    };
    let result = backend.sessions.persist(&key, write_with(forged)).await;
    assert_kind(result, ErrorKind::Fenced, "a fence from the future");

    // Another conversation, acquired twice so its fence differs from ours either way.
    let other = sibling(&key, "other");
    let first = acquire(backend, &other).await;
    backend.locks.release(&first).await.expect("release");
    let foreign = acquire(backend, &other).await;
    if foreign.fence != lease.fence {
        let result = backend
            .sessions
            .persist(&key, write_with(foreign.fence))
            .await;
        assert_kind(result, ErrorKind::Fenced, "another conversation's fence");
    }
    assert_no_head(backend, &key).await;
    let version = turn(backend, &lease, None, &bytes).await;
    assert_head(backend, &key, version, &bytes).await;
}

/// Of many concurrent completed writes with the same `expected` version, exactly one wins;
/// the others get `Conflict` (or `Fenced`) and the head is the winner's, round after round.
pub async fn of_concurrent_writers_with_one_expected_version_exactly_one_wins(backend: &Backend) {
    const WRITERS: usize = 8;
    let key = fresh_key();
    let lease = acquire(backend, &key).await;
    let mut expected = None;
    let mut base = transcript("race", 1);
    for round in 0..3 {
        let tasks = (0..WRITERS).map(|writer| {
            let sessions = backend.sessions.clone();
            let (key, lease) = (key.clone(), lease.clone());
            let bytes = extended(&base, round + 1, &format!("writer {writer}"));
            tokio::spawn(async move {
                let write = completed(&RunId::generate(), &bytes, expected, &lease);
                (sessions.persist(&key, write).await, bytes)
            })
        });
        let results = futures::future::join_all(tasks).await;
        let mut winners = Vec::new();
        for result in results {
            let (outcome, bytes) = result.expect("writer task");
            match outcome {
                Ok(version) => winners.push((version, bytes)),
                Err(e) => assert!(
                    matches!(e.kind(), ErrorKind::Conflict | ErrorKind::Fenced),
                    "a losing writer got {e}"
                ),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {} writers won",
            winners.len()
        );
        let (version, bytes) = winners.remove(0);
        assert_head(backend, &key, version, &bytes).await;
        expected = Some(version);
        base = bytes;
    }
}

/// A transcript over [`max_transcript_bytes`](crate::SessionStore::max_transcript_bytes)
/// is `TooLarge` whatever else is wrong with the write (the size is checked first), and
/// stores nothing; one of exactly the limit is stored.
pub async fn a_transcript_over_the_size_limit_is_too_large_and_stores_nothing(backend: &Backend) {
    let max = backend.sessions.max_transcript_bytes();
    let key = fresh_key();
    let lease = acquire(backend, &key).await;
    let over = filler(max + 1);
    let forged = Fence(lease.fence.0 + 1);
    let cases = [
        (
            completed(&RunId::generate(), &over, None, &lease),
            "one byte over",
        ),
        (
            write(
                &RunId::generate(),
                TerminalStatus::Completed,
                &over,
                None,
                forged,
            ),
            "over the limit with a bad fence",
        ),
        (
            write(
                &RunId::generate(),
                TerminalStatus::Failed,
                &over,
                None,
                lease.fence,
            ),
            "a failed snapshot over the limit",
        ),
    ];
    for (write, what) in cases {
        assert_kind(
            backend.sessions.persist(&key, write).await,
            ErrorKind::TooLarge,
            what,
        );
    }
    assert_no_head(backend, &key).await;
    // Allocating the limit is only sensible for a limit of a sensible size.
    if max <= 64 * 1024 * 1024 {
        let exact = filler(max);
        let version = turn(backend, &lease, None, &exact).await;
        assert_head(backend, &key, version, &exact).await;
        let bigger = completed(&RunId::generate(), &over, Some(version), &lease);
        let result = backend.sessions.persist(&key, bigger).await;
        assert_kind(result, ErrorKind::TooLarge, "growing past the limit");
        assert_head(backend, &key, version, &exact).await;
    }
    let stored = backend
        .sessions
        .clear(&key, lease.fence)
        .await
        .expect("clear");
    assert!(
        stored <= 1,
        "an oversized write was stored ({stored} snapshots)"
    );
}
