//! Shared helpers for the clauses: fresh ids, transcripts, leases, writes, and claiming
//! only one's own runs on a shared backend.

use std::fmt::Debug;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use crate::backend::Backend;
use crate::error::{ErrorKind, Result};
use crate::id::{AgentId, ConversationId, ConversationKey, OrgId, RunId, WorkerId};
use crate::lock::{Fence, Lease};
use crate::queue::{Claim, NewRun, RunQueue, RunRecord};
use crate::session::{Persist, Snapshot, TerminalStatus, Version};

/// A lease or claim that must not run out during a clause.
pub(crate) const LONG: Duration = Duration::from_secs(120);

/// `prefix-<uuid>`: unique across clauses and runs.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A key in a fresh org, so nothing else on a shared backend can see or touch it.
pub(crate) fn fresh_key() -> ConversationKey {
    let agent = &uuid::Uuid::new_v4().simple().to_string()[..12];
    ConversationKey::new(
        OrgId::new(unique("org")).expect("valid org id"),
        AgentId::new(format!("agent-{agent}")).expect("valid agent id"),
        ConversationId::new(unique("conv")).expect("valid conversation id"),
    )
}

/// Another conversation of the same org and agent.
pub(crate) fn sibling(key: &ConversationKey, conversation: &str) -> ConversationKey {
    ConversationKey::new(
        key.org.clone(),
        key.agent.clone(),
        ConversationId::new(conversation).expect("valid conversation id"),
    )
}

/// Assert that a call failed with `expected`.
pub(crate) fn assert_kind<T: Debug>(result: Result<T>, expected: ErrorKind, what: &str) {
    match result {
        Ok(value) => panic!("{what}: expected {expected}, got Ok({value:?})"),
        Err(error) => assert_eq!(error.kind(), expected, "{what}: wrong error {error}"),
    }
}

/// Take the conversation's lease for the whole clause.
pub(crate) async fn acquire(backend: &Backend, key: &ConversationKey) -> Lease {
    backend
        .locks
        .try_acquire(key, LONG)
        .await
        .expect("try_acquire")
        .unwrap_or_else(|| panic!("the lease of fresh conversation {key} is busy"))
}

/// Clear `key` under `fence`; the count removed.
pub(crate) async fn clear(backend: &Backend, key: &ConversationKey, fence: Fence) -> u64 {
    let cleared = backend.sessions.clear(key, fence).await;
    cleared.unwrap_or_else(|e| panic!("clearing {key} under {fence}: {e}"))
}

/// A write of `transcript` by `run` with `status`.
pub(crate) fn write(
    run: &RunId,
    status: TerminalStatus,
    transcript: &Bytes,
    expected: Option<Version>,
    fence: Fence,
) -> Persist {
    Persist {
        run: run.clone(),
        status,
        transcript: transcript.clone(),
        expected,
        fence,
        base_len: None,
    }
}

/// A completed write.
pub(crate) fn completed(
    run: &RunId,
    transcript: &Bytes,
    expected: Option<Version>,
    lease: &Lease,
) -> Persist {
    write(
        run,
        TerminalStatus::Completed,
        transcript,
        expected,
        lease.fence,
    )
}

/// Persist a completed turn by a new run; it must succeed.
pub(crate) async fn turn(
    backend: &Backend,
    lease: &Lease,
    expected: Option<Version>,
    transcript: &Bytes,
) -> Version {
    let run = RunId::generate();
    let write = completed(&run, transcript, expected, lease);
    backend
        .sessions
        .persist(&lease.key, write)
        .await
        .unwrap_or_else(|e| panic!("persisting a turn of {}: {e}", lease.key))
}

/// Persist a non-completed snapshot by a new run; it must succeed.
pub(crate) async fn forensic(
    backend: &Backend,
    lease: &Lease,
    status: TerminalStatus,
    transcript: &Bytes,
) -> Version {
    let write = write(&RunId::generate(), status, transcript, None, lease.fence);
    backend
        .sessions
        .persist(&lease.key, write)
        .await
        .unwrap_or_else(|e| panic!("persisting a {} snapshot: {e}", status.as_str()))
}

/// Hydrate, which must find a head.
pub(crate) async fn hydrate(backend: &Backend, key: &ConversationKey) -> Snapshot {
    backend
        .sessions
        .hydrate(key)
        .await
        .expect("hydrate")
        .unwrap_or_else(|| panic!("{key} has no head"))
}

/// The head must be `version` with exactly `transcript`, by `hydrate` and `head`.
pub(crate) async fn assert_head(
    backend: &Backend,
    key: &ConversationKey,
    version: Version,
    transcript: &[u8],
) {
    let snapshot = hydrate(backend, key).await;
    assert_eq!(snapshot.version, version, "head version of {key}");
    assert_same_bytes(&snapshot.transcript, transcript, "hydrated transcript");
    let head = backend.sessions.head(key).await.expect("head");
    assert_eq!(
        head,
        Some(version),
        "head() of {key} disagrees with hydrate"
    );
}

/// The conversation has no head.
pub(crate) async fn assert_no_head(backend: &Backend, key: &ConversationKey) {
    let snapshot = backend.sessions.hydrate(key).await.expect("hydrate");
    assert!(
        snapshot.is_none(),
        "{key} should have no head, found {:?}",
        snapshot.map(|s| (s.version, s.transcript.len()))
    );
    let head = backend.sessions.head(key).await.expect("head");
    assert_eq!(head, None, "head() of {key}");
}

/// Byte equality that reports where transcripts differ instead of printing megabytes.
pub(crate) fn assert_same_bytes(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let at = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or(actual.len().min(expected.len()));
    let line = expected[..at].iter().filter(|b| **b == b'\n').count() + 1;
    panic!(
        "{what}: {} bytes, expected {}; first difference at byte {at} (line {line})",
        actual.len(),
        expected.len()
    );
}

/// A session header line (pi session format v3).
pub(crate) fn header() -> String {
    let line = json!({
        "type": "session",
        "version": 3,
        "id": uuid::Uuid::new_v4().to_string(),
        "timestamp": "2026-07-01T09:00:00.000Z",
        "cwd": "/workspace",
    });
    format!("{line}\n")
}

/// One user message and one assistant reply, as JSON lines.
pub(crate) fn exchange(turn: usize, text: &str) -> String {
    let user = json!({
        "type": "message",
        "id": format!("u{turn:07x}"),
        "parentId": (turn > 0).then(|| format!("a{:07x}", turn - 1)),
        "timestamp": "2026-07-01T09:00:01.000Z",
        "message": {"role": "user", "content": [{"type": "text", "text": text}]},
    });
    let assistant = json!({
        "type": "message",
        "id": format!("a{turn:07x}"),
        "parentId": format!("u{turn:07x}"),
        "timestamp": "2026-07-01T09:00:02.000Z",
        "message": {
            "role": "assistant",
            "content": [{"type": "text", "text": format!("reply {turn} to: {text}")}],
            "usage": {"input": 120 + turn, "output": 40},
            "stopReason": "stop",
        },
    });
    format!("{user}\n{assistant}\n")
}

/// A transcript of `turns` exchanges whose first user text is `title`.
pub(crate) fn transcript(title: &str, turns: usize) -> Bytes {
    let mut text = header();
    for turn in 0..turns {
        let said = if turn == 0 {
            title.to_owned()
        } else {
            format!("{title}, part {turn}")
        };
        text.push_str(&exchange(turn, &said));
    }
    Bytes::from(text)
}

/// `base` with one more exchange appended.
pub(crate) fn extended(base: &[u8], turn: usize, text: &str) -> Bytes {
    let mut bytes = base.to_vec();
    bytes.extend_from_slice(exchange(turn, text).as_bytes());
    Bytes::from(bytes)
}

/// About 600 KB of transcript (lobu's largest production row was 633 KB) with multi-byte
/// UTF-8 of every width, a raw U+2028, escapes, a CRLF-terminated line and a trailing newline.
pub(crate) fn large_transcript() -> Bytes {
    let mut text = header();
    let mut turn = 0;
    while text.len() < 600 * 1024 {
        let said = format!(
            "Grüße aus Köln — 東京の天気は？ ñandú 🦤🌍 «quotes» \"escaped\" \\ back\u{2028}slash {turn}"
        );
        text.push_str(&exchange(turn, &said));
        turn += 1;
    }
    let custom = json!({"type": "custom", "id": "crlf", "parentId": null, "customType": "note"});
    text.push_str(&format!("{custom}\r\n"));
    text.push_str(&exchange(turn, "last line, then a newline: ✓"));
    Bytes::from(text)
}

/// `n` bytes of ASCII ending in a newline.
pub(crate) fn filler(n: usize) -> Bytes {
    let mut bytes = vec![b'x'; n];
    if let Some(last) = bytes.last_mut() {
        *last = b'\n';
    }
    Bytes::from(bytes)
}

/// Submit a run that must be accepted.
pub(crate) async fn submit(backend: &Backend, run: NewRun) -> RunId {
    let submitted = backend.queue.submit(run).await.expect("submit");
    assert!(
        submitted.created,
        "a submit without a used key must create a run"
    );
    submitted.run
}

/// A turn on `key` with `payload` and `max_attempts`.
pub(crate) fn new_turn(key: &ConversationKey, n: u64, max_attempts: u32) -> NewRun {
    let mut run = NewRun::turn(key.clone(), json!({"message": format!("turn {n}"), "n": n}));
    run.max_attempts = max_attempts;
    run.retry_delay = Duration::ZERO;
    run
}

/// The run's record, which must exist in its org.
pub(crate) async fn record(backend: &Backend, key: &ConversationKey, run: &RunId) -> RunRecord {
    backend
        .queue
        .status(&key.org, run)
        .await
        .expect("status")
        .unwrap_or_else(|| panic!("run {run} of {key} not found"))
}

/// Claim until one of `mine` comes up or nothing is claimable. Other clauses' runs claimed
/// on the way are held until the end (so they cannot hide ours) and then released, which
/// counts no attempt against them.
pub(crate) async fn claim_own(
    queue: &dyn RunQueue,
    worker: &WorkerId,
    lease: Duration,
    mine: &[&ConversationKey],
) -> Option<Claim> {
    let mut claims = claim_all_own(queue, worker, lease, mine, 1).await;
    claims.pop()
}

/// Claim up to `most` of `mine` (see [`claim_own`]).
pub(crate) async fn claim_all_own(
    queue: &dyn RunQueue,
    worker: &WorkerId,
    lease: Duration,
    mine: &[&ConversationKey],
    most: usize,
) -> Vec<Claim> {
    let mut own = Vec::new();
    let mut foreign = Vec::new();
    while own.len() < most {
        match queue.claim(worker, lease).await.expect("claim") {
            Some(claim) if mine.contains(&&claim.key) => own.push(claim),
            Some(claim) => foreign.push(claim),
            None => break,
        }
    }
    give_back(queue, foreign).await;
    own
}

/// Release claims of other clauses' runs. Errors are ignored: their lease may have lapsed
/// and been re-delivered meanwhile, which is the other clause's business.
pub(crate) async fn give_back(queue: &dyn RunQueue, claims: Vec<Claim>) {
    for claim in claims {
        let _ = queue.release(&claim).await;
    }
}

/// Claim one of `mine`, which must be claimable.
pub(crate) async fn claim_mine(
    backend: &Backend,
    worker: &WorkerId,
    lease: Duration,
    mine: &[&ConversationKey],
) -> Claim {
    claim_own(backend.queue.as_ref(), worker, lease, mine)
        .await
        .unwrap_or_else(|| panic!("expected a claimable run in {mine:?}"))
}

/// Nothing of `mine` may be claimable.
pub(crate) async fn assert_nothing_claimable(
    backend: &Backend,
    worker: &WorkerId,
    mine: &[&ConversationKey],
    why: &str,
) {
    if let Some(claim) = claim_own(backend.queue.as_ref(), worker, LONG, mine).await {
        panic!(
            "{why}: claimed run {} of {} (attempt {})",
            claim.run, claim.key, claim.attempt
        );
    }
}

/// A follower of `run` waiting (up to ten minutes) for a change after `since`, spawned and
/// given a moment to start waiting; it ends when woken.
pub(crate) async fn follower(
    backend: &Backend,
    org: &crate::OrgId,
    run: &RunId,
    since: std::time::Instant,
) -> tokio::task::JoinHandle<()> {
    let waiter = tokio::spawn({
        let queue = backend.queue.clone();
        let (org, run) = (org.clone(), run.clone());
        async move {
            queue
                .wait_for_run(&org, &run, since, Duration::from_secs(600))
                .await;
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    waiter
}
