//! The bodies of lobu's fuzz targets (`fuzz/` at the repository root, run with `cargo
//! fuzz`), shared with the test that replays their corpora in the normal test run.
//!
//! Each function takes arbitrary bytes, must never panic on its own account, and panics
//! (so the fuzzer reports a crash) when an invariant of the code under test breaks.

use crate::error::ErrorKind;
use crate::id::{
    AgentId, ConversationId, ConversationKey, IdempotencyKey, MAX_AGENT_ID_BYTES,
    MAX_CONVERSATION_ID_BYTES, MAX_ID_BYTES, OrgId, RunId, WorkerId,
};
use crate::session::MAX_PAGE_LIMIT;
use crate::transcript::{self, TITLE_MAX_CHARS};

/// What the transcript reader made of some bytes, for the replay test to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TranscriptOutcome {
    /// Entries parsed.
    pub entries: usize,
    /// Lines skipped as malformed.
    pub skipped: usize,
    /// Display messages.
    pub messages: usize,
}

/// Feed `data` to the transcript reader: [`transcript::parse`], paging, stats and the title.
///
/// Invariants: every entry's byte range slices `data` to a line that parses back to the
/// same entry; entries and skipped lines never outnumber the lines; a limit of 0 or over
/// [`MAX_PAGE_LIMIT`] is `InvalidInput`; a page never exceeds its limit; following
/// `next_cursor` from the start (when message ids are unique) visits every message once, in
/// order; a title is at most [`TITLE_MAX_CHARS`] characters plus `…` and has no control
/// characters.
pub fn transcript_reader(data: &[u8]) -> TranscriptOutcome {
    let parsed = transcript::parse(data);
    let lines = data.split(|b| *b == b'\n').count();
    assert!(parsed.entries().len() + parsed.skipped_lines() <= lines);
    for entry in parsed.entries() {
        let line = &data[entry.byte_range()];
        let again = transcript::parse(line);
        assert_eq!(
            again.entries().len(),
            1,
            "line {} parses alone",
            entry.line()
        );
        assert_eq!(again.entries()[0].fields(), entry.fields());
    }
    for limit in [0, MAX_PAGE_LIMIT + 1] {
        let refused = parsed.page(None, Some(limit)).map(|_| ());
        assert_eq!(refused.map_err(|e| e.kind()), Err(ErrorKind::InvalidInput));
    }
    let messages: Vec<_> = parsed.messages().collect();
    let limit = 1 + data.len() % 7;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    // Ids may be missing, repeated or shaped like a positional cursor: paging still ends.
    for _ in 0..=parsed.entries().len() {
        let page = parsed
            .page(cursor.as_deref(), Some(limit))
            .expect("a valid limit");
        assert!(page.messages.len() <= limit);
        assert_eq!(page.has_more, page.next_cursor.is_some());
        seen.extend(page.messages);
        match page.next_cursor {
            Some(next) if page.has_more => cursor = Some(next),
            _ => break,
        }
    }
    assert_eq!(seen, messages, "paging visits every message once, in order");
    let stats = parsed.stats();
    assert_eq!(stats.session_id, parsed.reported_session_id());
    assert!(stats.user_messages + stats.assistant_messages <= stats.message_count);
    if let Some(title) = parsed.title() {
        assert!(!title.is_empty() && !title.chars().any(char::is_control));
        assert!(title.chars().count() <= TITLE_MAX_CHARS + 1, "{title:?}");
    }
    TranscriptOutcome {
        entries: parsed.entries().len(),
        skipped: parsed.skipped_lines(),
        messages: messages.len(),
    }
}

/// How many of the id parsers accepted the input, for the replay test to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdOutcome {
    /// Accepted by the text id parsers (org, conversation, run, idempotency, worker).
    pub accepted: usize,
    /// Refused by them (each with `InvalidInput`).
    pub refused: usize,
    /// Whether the three `0xff`-separated parts made a [`ConversationKey`].
    pub key: bool,
}

/// Feed `data` to every id parser, as text (lossily decoded), as JSON and, split at `0xff`
/// bytes, as the three parts of a [`ConversationKey`].
///
/// Invariants: each parser accepts exactly the ids its rule allows (non-empty, within its
/// byte limit, no control characters; agents `[A-Za-z0-9_-]{1,64}`), keeps accepted text
/// verbatim and refuses everything else with `InvalidInput`; deserialising a JSON string
/// agrees with the parser; a key parses exactly when its three parts do.
pub fn id_parsers(data: &[u8]) -> IdOutcome {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    let allowed =
        |max: usize| !text.is_empty() && text.len() <= max && !text.chars().any(char::is_control);
    let results = [
        (
            allowed(MAX_ID_BYTES),
            OrgId::new(text).map(|i| i.to_string()),
        ),
        (
            allowed(MAX_CONVERSATION_ID_BYTES),
            ConversationId::new(text).map(|i| i.to_string()),
        ),
        (
            allowed(MAX_ID_BYTES),
            RunId::new(text).map(|i| i.to_string()),
        ),
        (
            allowed(MAX_ID_BYTES),
            IdempotencyKey::new(text).map(|i| i.to_string()),
        ),
        (
            allowed(MAX_ID_BYTES),
            WorkerId::new(text).map(|i| i.to_string()),
        ),
    ];
    let mut outcome = IdOutcome {
        accepted: 0,
        refused: 0,
        key: false,
    };
    for (allowed, result) in results {
        match result {
            Ok(id) => {
                assert!(allowed, "accepted {text:?}");
                assert_eq!(id, text, "kept verbatim");
                outcome.accepted += 1;
            }
            Err(error) => {
                assert!(!allowed, "refused {text:?}: {error}");
                assert_eq!(error.kind(), ErrorKind::InvalidInput);
                outcome.refused += 1;
            }
        }
    }
    let agent_allowed = (1..=MAX_AGENT_ID_BYTES).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    assert_eq!(AgentId::new(text).is_ok(), agent_allowed, "agent {text:?}");
    let json = serde_json::Value::String(text.to_owned()).to_string();
    let decoded = serde_json::from_str::<ConversationId>(&json);
    assert_eq!(decoded.is_ok(), allowed(MAX_CONVERSATION_ID_BYTES));

    let parts: Vec<String> = data
        .splitn(3, |b| *b == 0xff)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    if let [org, agent, conversation] = parts.as_slice() {
        let key = ConversationKey::parse(org, agent, conversation);
        let each = OrgId::new(org).is_ok()
            && AgentId::new(agent).is_ok()
            && ConversationId::new(conversation).is_ok();
        assert_eq!(key.is_ok(), each, "{parts:?}");
        if let Err(error) = &key {
            assert_eq!(error.kind(), ErrorKind::InvalidInput);
        }
        outcome.key = key.is_ok();
    }
    outcome
}
