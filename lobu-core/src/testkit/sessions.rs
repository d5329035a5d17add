//! Clauses of `SessionStore::hydrate` and `persist`: byte-exact storage, non-completed
//! snapshots and per-run idempotency.

use bytes::Bytes;

use super::Capabilities;
use super::support::{
    acquire, assert_head, assert_kind, assert_no_head, assert_same_bytes, completed, extended,
    forensic, fresh_key, hydrate, large_transcript, transcript, turn, write,
};
use crate::backend::Backend;
use crate::error::ErrorKind;
use crate::id::RunId;
use crate::session::TerminalStatus;

const NOT_COMPLETED: [TerminalStatus; 3] = [
    TerminalStatus::Failed,
    TerminalStatus::Timeout,
    TerminalStatus::Cancelled,
];

/// Hydrate and head of a conversation that was never written are `None`, and its agent
/// lists nothing.
pub async fn hydrate_of_an_unknown_conversation_is_none(backend: &Backend) {
    let key = fresh_key();
    assert_no_head(backend, &key).await;
    let page = backend.sessions.list(&key.org, &key.agent, None, 10).await;
    let page = page.expect("list");
    assert!(
        page.items.is_empty(),
        "an unknown agent lists {:?}",
        page.items
    );
    assert_eq!(page.next_cursor, None);
}

/// Persist then hydrate returns the bytes exactly, with the version persist returned and
/// the run that wrote them: a small transcript, then a ~600 KB one with multi-byte UTF-8,
/// a raw U+2028, a CRLF line and a trailing newline.
pub async fn persist_then_hydrate_is_byte_exact(backend: &Backend) {
    let key = fresh_key();
    let lease = acquire(backend, &key).await;
    let small = transcript("Hello there", 1);
    let run = RunId::generate();
    let write = completed(&run, &small, None, &lease);
    let v1 = backend
        .sessions
        .persist(&key, write)
        .await
        .expect("persist");
    assert_head(backend, &key, v1, &small).await;
    assert_eq!(hydrate(backend, &key).await.run, run, "the writing run");

    let large = large_transcript();
    assert!(
        large.len() <= backend.sessions.max_transcript_bytes(),
        "this clause needs a size limit of at least {} bytes",
        large.len()
    );
    let run = RunId::generate();
    let write = completed(&run, &large, Some(v1), &lease);
    let v2 = backend
        .sessions
        .persist(&key, write)
        .await
        .expect("persist");
    assert!(v2 > v1, "versions grow: {v1} then {v2}");
    let snapshot = hydrate(backend, &key).await;
    assert_eq!((snapshot.version, &snapshot.run), (v2, &run));
    // lobu's own check: split on newlines, compare line by line, then the whole.
    let lines = |b: &[u8]| b.split(|c| *c == b'\n').count();
    assert_eq!(lines(&snapshot.transcript), lines(&large), "line count");
    assert_same_bytes(&snapshot.transcript, &large, "large transcript");
    assert!(
        snapshot.transcript.ends_with(b"\n"),
        "trailing newline kept"
    );
    assert_head(backend, &key, v2, &large).await;
}

/// Transcripts are bytes: invalid UTF-8 and NUL round-trip exactly, unless the backend
/// declares [`Capabilities::utf8_transcripts_only`], in which case they are `InvalidInput`
/// and nothing is stored.
pub async fn non_utf8_transcripts_round_trip_or_are_refused(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let key = fresh_key();
    let lease = acquire(backend, &key).await;
    let mut bytes = transcript("binary", 1).to_vec();
    bytes.extend_from_slice(b"{\"type\":\"custom\",\"data\":\"\xff\xfe\x00 torn \xe2\x82\"}\n");
    let bytes = Bytes::from(bytes);
    let run = RunId::generate();
    let result = backend
        .sessions
        .persist(&key, completed(&run, &bytes, None, &lease))
        .await;
    if capabilities.utf8_transcripts_only {
        assert_kind(result, ErrorKind::InvalidInput, "non-UTF-8 transcript");
        assert_no_head(backend, &key).await;
        let cleared = backend.sessions.clear(&key, lease.fence).await;
        assert_eq!(cleared.expect("clear"), 0);
    } else {
        let version = result.expect("persisting non-UTF-8 bytes");
        assert_head(backend, &key, version, &bytes).await;
    }
}

/// Failed, timed-out and cancelled snapshots are stored but never hydrated, do not check
/// `expected` and do not move the head; each gets its own version.
pub async fn non_completed_snapshots_are_never_hydrated(backend: &Backend) {
    let key = fresh_key();
    let lease = acquire(backend, &key).await;
    let mut versions = Vec::new();
    for status in NOT_COMPLETED {
        let partial = transcript(&format!("{} turn", status.as_str()), 2);
        versions.push(forensic(backend, &lease, status, &partial).await);
        assert_no_head(backend, &key).await;
    }
    let page = backend.sessions.list(&key.org, &key.agent, None, 10).await;
    assert!(
        page.expect("list").items.is_empty(),
        "listed without a head"
    );

    // They did not move the head: the first completed write still expects none.
    let good = transcript("good turn", 1);
    let head = turn(backend, &lease, None, &good).await;
    versions.push(head);
    for status in NOT_COMPLETED {
        let failed = extended(&good, 1, "this turn fails");
        for expected in [None, Some(head)] {
            let run = RunId::generate();
            let write = write(&run, status, &failed, expected, lease.fence);
            let version = backend.sessions.persist(&key, write).await;
            versions.push(version.expect("a non-completed write ignores expected"));
        }
        assert_head(backend, &key, head, &good).await;
    }
    let mut unique = versions.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        versions.len(),
        "versions reused: {versions:?}"
    );
}

/// The same run, status and bytes again is a retry: it succeeds with the version first
/// returned (even with an `expected` that is no longer the head, even once another run has
/// moved the head on) and stores nothing new.
pub async fn persisting_the_same_run_and_bytes_again_returns_the_same_version(backend: &Backend) {
    let key = fresh_key();
    let lease = acquire(backend, &key).await;
    let first = transcript("retry me", 1);
    let run = RunId::generate();
    let persist = |bytes: &Bytes, expected| completed(&run, bytes, expected, &lease);
    let v1 = backend.sessions.persist(&key, persist(&first, None)).await;
    let v1 = v1.expect("first write");
    let again = backend.sessions.persist(&key, persist(&first, None)).await;
    assert_eq!(
        again.expect("retry"),
        v1,
        "a retry returns the stored version"
    );
    assert_head(backend, &key, v1, &first).await;

    let second = extended(&first, 1, "next turn");
    let v2 = turn(backend, &lease, Some(v1), &second).await;
    let late = backend.sessions.persist(&key, persist(&first, None)).await;
    assert_eq!(
        late.expect("late retry"),
        v1,
        "a late retry still finds its write"
    );
    assert_head(backend, &key, v2, &second).await;

    let failed = extended(&second, 2, "boom");
    let run = RunId::generate();
    let failure = write(&run, TerminalStatus::Failed, &failed, None, lease.fence);
    let vf = backend.sessions.persist(&key, failure.clone()).await;
    let vf = vf.expect("failed snapshot");
    let vf_again = backend.sessions.persist(&key, failure).await;
    assert_eq!(vf_again.expect("failed retry"), vf);
    assert_head(backend, &key, v2, &second).await;
    // Three snapshots, not five: the retries stored nothing.
    let cleared = backend.sessions.clear(&key, lease.fence).await;
    assert_eq!(cleared.expect("clear"), 3);
}

/// A run whose completed snapshot is still the head may persist bytes that strictly
/// extend it: that is a new head version, whatever `expected` it carries.
pub async fn the_same_run_may_extend_its_own_head(backend: &Backend) {
    let key = fresh_key();
    let lease = acquire(backend, &key).await;
    let run = RunId::generate();
    let a = transcript("growing", 1);
    let ab = extended(&a, 1, "more");
    let abc = extended(&ab, 2, "and more");
    let v1 = backend
        .sessions
        .persist(&key, completed(&run, &a, None, &lease))
        .await;
    let v1 = v1.expect("first write");
    // The retrying writer still carries the expected version it started from.
    let v2 = backend
        .sessions
        .persist(&key, completed(&run, &ab, None, &lease))
        .await;
    let v2 = v2.expect("an extension by the same run");
    assert!(v2 > v1, "an extension is a new version: {v1} then {v2}");
    assert_head(backend, &key, v2, &ab).await;
    let v3 = backend
        .sessions
        .persist(&key, completed(&run, &abc, Some(v1), &lease))
        .await;
    let v3 = v3.expect("a second extension");
    assert!(v3 > v2);
    let snapshot = hydrate(backend, &key).await;
    assert_eq!(snapshot.run, run);
    assert_head(backend, &key, v3, &abc).await;
}

/// Bytes for a run that already completed which are not a retry and not an extension of
/// the head (changed bytes, a truncation, another status, or an extension after another
/// run moved the head) are a `Conflict` and change nothing.
pub async fn divergent_bytes_for_the_same_run_conflict(backend: &Backend) {
    let key = fresh_key();
    let lease = acquire(backend, &key).await;
    let run = RunId::generate();
    let stored = transcript("original", 2);
    let v1 = backend
        .sessions
        .persist(&key, completed(&run, &stored, None, &lease))
        .await;
    let v1 = v1.expect("first write");
    let mut changed = stored.to_vec();
    let last = changed.len() - 3;
    changed[last] ^= 0x01;
    let truncated = stored.slice(..stored.len() - 10);
    for (bytes, what) in [(Bytes::from(changed), "changed"), (truncated, "truncated")] {
        let result = backend
            .sessions
            .persist(&key, completed(&run, &bytes, None, &lease))
            .await;
        assert_kind(result, ErrorKind::Conflict, what);
    }
    let failed = write(&run, TerminalStatus::Failed, &stored, None, lease.fence);
    let result = backend.sessions.persist(&key, failed).await;
    assert_kind(
        result,
        ErrorKind::Conflict,
        "a completed run reported as failed",
    );
    assert_head(backend, &key, v1, &stored).await;

    let other = transcript("another run", 1);
    let v2 = turn(backend, &lease, Some(v1), &other).await;
    let longer = extended(&stored, 2, "too late");
    let result = backend
        .sessions
        .persist(&key, completed(&run, &longer, Some(v1), &lease))
        .await;
    assert_kind(
        result,
        ErrorKind::Conflict,
        "extending a snapshot that is no longer the head",
    );
    assert_head(backend, &key, v2, &other).await;
}

/// A run whose earlier attempt left a failed (or timed-out) snapshot may still complete
/// in a later attempt: non-completed snapshots of a run never block it.
pub async fn a_later_attempt_of_a_run_may_complete_after_a_failed_one(backend: &Backend) {
    let key = fresh_key();
    let lease = acquire(backend, &key).await;
    let base = transcript("base", 1);
    let v1 = turn(backend, &lease, None, &base).await;
    let run = RunId::generate();
    let attempt1 = extended(&base, 1, "first attempt, times out");
    let timeout = write(
        &run,
        TerminalStatus::Timeout,
        &attempt1,
        Some(v1),
        lease.fence,
    );
    backend
        .sessions
        .persist(&key, timeout)
        .await
        .expect("timeout snapshot");
    let attempt2 = extended(&base, 1, "second attempt, fails differently");
    let failed = write(
        &run,
        TerminalStatus::Failed,
        &attempt2,
        Some(v1),
        lease.fence,
    );
    backend
        .sessions
        .persist(&key, failed)
        .await
        .expect("second attempt's snapshot");
    let attempt3 = extended(&base, 1, "third attempt, completes");
    let v2 = backend
        .sessions
        .persist(&key, completed(&run, &attempt3, Some(v1), &lease))
        .await;
    let v2 = v2.expect("a later attempt completes");
    assert_head(backend, &key, v2, &attempt3).await;
}
