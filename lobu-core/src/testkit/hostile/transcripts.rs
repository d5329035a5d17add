//! Hostile transcripts: sizes are refused whole; bytes a store must keep are kept exactly
//! and read back with the malformed lines skipped and counted.

use bytes::Bytes;

use super::{StoreDump, Watched, assert_unchanged};
use crate::backend::Backend;
use crate::error::ErrorKind;
use crate::id::{RunId, WorkerId};
use crate::queue::Commit;
use crate::session::{TerminalStatus, Version};
use crate::testkit::Capabilities;
use crate::testkit::support::{
    LONG, acquire, claim_mine, completed, fresh_key, header, new_turn, sibling, submit, transcript,
    turn, write,
};
use crate::transcript::{self, SkipReason};

/// 100 MiB: "a 100 MB line".
pub const HUNDRED_MB: usize = 100 * 1024 * 1024;

/// A header and one message line of at least `size` bytes in total (a single line of about
/// `size` bytes), built once, without intermediate copies.
pub fn hundred_mb_line(size: usize) -> Bytes {
    let head = header();
    let open = r#"{"type":"message","id":"big","message":{"role":"user","content":""#;
    let close = "\"}}\n";
    let filler = size
        .saturating_sub(head.len() + open.len() + close.len())
        .max(1);
    let mut bytes = Vec::with_capacity(head.len() + open.len() + filler + close.len());
    bytes.extend_from_slice(head.as_bytes());
    bytes.extend_from_slice(open.as_bytes());
    bytes.resize(bytes.len() + filler, b'x');
    bytes.extend_from_slice(close.as_bytes());
    Bytes::from(bytes)
}

/// A transcript of exactly `size` bytes: `base` plus one filler message line.
fn exactly(base: &[u8], size: usize) -> Bytes {
    let open = br#"{"type":"message","id":"pad","x":""#;
    let close = b"\"}\n";
    let fixed = base.len() + open.len() + close.len();
    assert!(
        size > fixed,
        "the limit ({size}) is too small for this clause"
    );
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(base);
    bytes.extend_from_slice(open);
    bytes.resize(size - close.len(), b'p');
    bytes.extend_from_slice(close);
    Bytes::from(bytes)
}

/// Transcripts over the size limit (a 100 MB line, one byte over) are `TooLarge` on
/// `persist` (every status) and on a claim's `complete`, and change no byte of the store.
/// Bytes a store must keep as they are (invalid UTF-8, a torn last line, JSON nested 100 000
/// deep, a header only, nothing at all) are stored exactly, touch no other conversation and
/// read back with each malformed line skipped and counted; a store that keeps text only
/// (`utf8_transcripts_only`) refuses the non-UTF-8 ones with `InvalidInput` instead and
/// changes nothing.
pub async fn hostile_transcripts_are_refused_whole_or_kept_byte_for_byte(
    backend: &Backend,
    dump: &dyn StoreDump,
    capabilities: &Capabilities,
) {
    let key = fresh_key();
    let neighbour = sibling(&key, "neighbour");
    let lease = acquire(backend, &key).await;
    let neighbour_lease = acquire(backend, &neighbour).await;
    let first = transcript("before the hostile writes", 1);
    let mut head = turn(backend, &lease, None, &first).await;
    turn(backend, &neighbour_lease, None, &transcript("next door", 2)).await;
    let mut watched = Watched::new(backend, dump);
    watched.key(&key);
    watched.key(&neighbour);

    let limit = backend.sessions.max_transcript_bytes();
    assert!(
        limit < HUNDRED_MB,
        "this clause needs a transcript limit under 100 MB, the store has {limit}"
    );
    let huge = hundred_mb_line(HUNDRED_MB);
    let over = exactly(&first, limit + 1);
    let before = watched.state().await;
    for (bytes, what) in [(&huge, "a 100 MB line"), (&over, "one byte over the limit")] {
        for status in [TerminalStatus::Completed, TerminalStatus::Failed] {
            let run = RunId::generate();
            let write = write(&run, status, bytes, Some(head), lease.fence);
            let result = backend.sessions.persist(&key, write).await;
            let what = format!("{what} ({})", status.as_str());
            watched
                .refused(&before, result, ErrorKind::TooLarge, &what)
                .await;
        }
    }
    drop(huge);

    // The same sizes as a turn's commit, under a claim of the neighbour.
    backend
        .locks
        .release(&neighbour_lease)
        .await
        .expect("release");
    let run = submit(backend, new_turn(&neighbour, 1, 1)).await;
    watched.run(&neighbour.org, &run);
    let worker = WorkerId::generate();
    let claim = claim_mine(backend, &worker, LONG, &[&neighbour]).await;
    let before = watched.state().await;
    for (size, what) in [
        (HUNDRED_MB, "a 100 MB commit"),
        (limit + 1, "a commit one byte over"),
    ] {
        let bytes = exactly(&first, size);
        let commit = Commit::transcript(bytes, claim.head);
        let result = backend.queue.complete(&claim, commit).await;
        watched
            .refused(&before, result, ErrorKind::TooLarge, what)
            .await;
    }
    backend
        .queue
        .release(&claim)
        .await
        .expect("release the claim");

    // Kept exactly: each becomes the head, the neighbour is untouched.
    let mut torn = first.to_vec();
    torn.extend_from_slice(br#"{"type":"message","id":"torn","message":{"role":"us"#);
    let mut nested = first.to_vec();
    nested.extend_from_slice(br#"{"type":"message","deep":"#);
    nested.resize(nested.len() + 100_000, b'[');
    nested.resize(nested.len() + 100_000, b']');
    nested.extend_from_slice(b"}\n");
    let mut not_utf8 = first.to_vec();
    not_utf8.extend_from_slice(b"{\"type\":\"message\",\"id\":\"\xff\xfe\"}\n");
    let mut nul = first.to_vec();
    nul.extend_from_slice(b"{\"type\":\"message\",\"id\":\"a\0b\"}\n");
    let cases: [(Vec<u8>, bool, Option<SkipReason>, &str); 6] = [
        (
            torn,
            true,
            Some(SkipReason::InvalidJson),
            "a torn last line",
        ),
        (
            nested,
            true,
            Some(SkipReason::InvalidJson),
            "JSON nested 100 000 deep",
        ),
        (
            not_utf8,
            false,
            Some(SkipReason::InvalidUtf8),
            "invalid UTF-8",
        ),
        (
            nul,
            false,
            Some(SkipReason::InvalidJson),
            "a raw NUL byte in a line",
        ),
        (header().into_bytes(), true, None, "a header only"),
        (Vec::new(), true, None, "an empty transcript"),
    ];
    for (bytes, text, skipped, what) in cases {
        let bytes = Bytes::from(bytes);
        let write = completed(&RunId::generate(), &bytes, Some(head), &lease);
        let before = watched.state().await;
        let result = backend.sessions.persist(&key, write).await;
        if !text && capabilities.utf8_transcripts_only {
            watched
                .refused(&before, result, ErrorKind::InvalidInput, what)
                .await;
            continue;
        }
        head = result.unwrap_or_else(|e| panic!("{what}: a store keeps any bytes, got {e}"));
        kept_exactly(backend, &watched, &before, &key, head, &bytes, what).await;
        read_back(&bytes, skipped, what);
    }
}

/// The head is `bytes` at `version` and nothing else the clause watches changed.
async fn kept_exactly(
    backend: &Backend,
    watched: &Watched<'_>,
    before: &super::StoreBytes,
    key: &crate::id::ConversationKey,
    version: Version,
    bytes: &Bytes,
    what: &str,
) {
    let snapshot = backend.sessions.hydrate(key).await.expect("hydrate");
    let snapshot = snapshot.unwrap_or_else(|| panic!("{what}: no head after the write"));
    assert_eq!(snapshot.version, version, "{what}: head version");
    assert!(snapshot.transcript == *bytes, "{what}: stored bytes differ");
    // Only this conversation's head moved: compare everything else the API reads.
    let mut after = watched.state().await;
    let raw = |state: &super::StoreBytes| -> super::StoreBytes {
        let raw = state.iter().filter(|(name, _)| !name.starts_with("api: "));
        raw.map(|(name, bytes)| (name.clone(), bytes.clone()))
            .collect()
    };
    // A dump that missed an accepted write could not see a refused one either.
    let (raw_before, raw_after) = (raw(before), raw(&after));
    assert!(
        raw_before.is_empty() || raw_before != raw_after,
        "{what}: the store's dump did not change with an accepted write"
    );
    let mut expected = before.clone();
    let head = format!("api: head of {key}");
    expected.remove(&head);
    after.remove(&head);
    let strip = |state: &mut super::StoreBytes| state.retain(|name, _| name.starts_with("api: "));
    strip(&mut expected);
    strip(&mut after);
    let list = format!("api: list of {}/{}", key.org, key.agent);
    expected.remove(&list);
    after.remove(&list);
    assert_unchanged(&expected, &after, what);
}

/// The reader takes the bytes without panicking and reports the malformed line.
fn read_back(bytes: &[u8], skipped: Option<SkipReason>, what: &str) {
    let parsed = transcript::parse(bytes);
    let reasons: Vec<SkipReason> = parsed.skipped().iter().map(|s| s.reason).collect();
    assert_eq!(reasons, skipped.into_iter().collect::<Vec<_>>(), "{what}");
    let page = parsed
        .page(None, Some(200))
        .expect("a page of a stored transcript");
    assert!(!page.has_more, "{what}: one page holds it");
    let stats = parsed.stats();
    assert_eq!(stats.session_id, page.session_id, "{what}");
    if bytes.is_empty() {
        assert_eq!(page.session_id, crate::transcript::NO_SESSION_ID, "{what}");
    } else {
        assert_ne!(
            page.session_id,
            crate::transcript::UNKNOWN_SESSION_ID,
            "{what}"
        );
    }
}
