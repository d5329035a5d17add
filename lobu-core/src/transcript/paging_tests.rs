//! Paging transcripts whose messages lack ids, repeat them, or have ids shaped like a
//! positional cursor: every one pages to its end, each message once, in order.

use serde_json::{Value, json};

use super::read_tests::jsonl;
use super::*;

/// A pi session of version 1: entries carry no `id` or `parentId`.
fn version_1_session(messages: usize) -> Vec<u8> {
    let mut lines = vec![json!({"type": "session", "version": 1, "id": "v1", "timestamp": "T"})];
    lines.extend((0..messages).map(|n| {
        json!({"type": "message", "timestamp": "T", "message": {"role": "user", "content": format!("n{n}")}})
    }));
    jsonl(&lines)
}

fn with_ids(ids: &[String]) -> Vec<u8> {
    let lines: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            json!({"type": "message", "id": id, "timestamp": "T", "message": {"role": "user", "content": format!("n{n}")}})
        })
        .collect();
    jsonl(&lines)
}

/// Page from the start with `limit` until `has_more` is false; every page with more has a
/// cursor. Returns the contents seen and the cursors given.
fn page_all(transcript: &Transcript, limit: usize) -> (Vec<String>, Vec<String>) {
    let (mut seen, mut cursors) = (Vec::new(), Vec::new());
    let mut cursor: Option<String> = None;
    for _ in 0..=transcript.entries().len() {
        let page = transcript.page(cursor.as_deref(), Some(limit)).unwrap();
        assert_eq!(page.has_more, page.next_cursor.is_some(), "{page:?}");
        seen.extend(
            page.messages
                .iter()
                .map(|m| m.content.clone().unwrap().to_string()),
        );
        match page.next_cursor {
            Some(next) => {
                cursors.push(next.clone());
                cursor = Some(next);
            }
            None => return (seen, cursors),
        }
    }
    panic!("paging did not end");
}

fn numbered(n: usize) -> Vec<String> {
    (0..n).map(|n| format!("\"n{n}\"")).collect()
}

#[test]
fn a_version_1_transcript_of_1000_entries_without_ids_pages_to_its_end() {
    let transcript = parse(&version_1_session(1000));
    assert_eq!(transcript.skipped_lines(), 0);
    let (seen, cursors) = page_all(&transcript, 200);
    assert_eq!(seen, numbered(1000));
    assert_eq!(cursors, ["@200", "@400", "@600", "@800"]);
}

#[test]
fn repeated_ids_page_to_the_end_by_position() {
    let ids: Vec<String> = (0..300).map(|n| format!("id{}", n % 7)).collect();
    let transcript = parse(&with_ids(&ids));
    let (seen, cursors) = page_all(&transcript, 50);
    assert_eq!(seen, numbered(300));
    // The first page's last id (id6 at 49) was used before (at 6): it would lead back there.
    assert_eq!(cursors[0], "@50");
}

#[test]
fn ids_shaped_like_a_positional_cursor_are_never_used_as_cursors() {
    let ids: Vec<String> = (0..30).map(|n| format!("@{}", 29 - n)).collect();
    let transcript = parse(&with_ids(&ids));
    let (seen, cursors) = page_all(&transcript, 10);
    assert_eq!(seen, numbered(30));
    assert_eq!(cursors, ["@10", "@20"]);
}

#[test]
fn a_unique_id_stays_the_cursor_as_lobu_has_it_and_a_positional_one_past_the_end_is_empty() {
    let ids: Vec<String> = (0..30).map(|n| format!("m{n}")).collect();
    let transcript = parse(&with_ids(&ids));
    let (seen, cursors) = page_all(&transcript, 10);
    assert_eq!(seen, numbered(30));
    assert_eq!(cursors, ["m9", "m19"]);
    let past = transcript.page(Some("@999"), Some(10)).unwrap();
    assert!(past.messages.is_empty() && !past.has_more && past.next_cursor.is_none());
    let resumed = transcript.page(Some("@25"), Some(10)).unwrap();
    assert_eq!(resumed.messages[0].id.as_deref(), Some("m25"));
}
