//! Reading: parse, projection, paging, stats and titles against lobu's rules.

use serde_json::{Value, json};

use super::*;
use crate::ErrorKind;

pub(super) fn jsonl(lines: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

fn header(id: &str) -> Value {
    json!({"type": "session", "version": 3, "id": id, "timestamp": "2026-05-18T08:00:00.000Z", "cwd": "/w"})
}

fn user(id: &str, content: Value) -> Value {
    let mut line = json!({"type": "message", "id": id, "parentId": null,
                          "timestamp": "2026-05-18T08:00:01.000Z", "message": {"role": "user"}});
    line["message"]["content"] = content;
    line
}

fn numbered_users(n: usize) -> Vec<u8> {
    let mut lines = vec![header("s-1")];
    lines.extend((0..n).map(|i| user(&format!("m{i}"), json!(format!("hello {i}")))));
    jsonl(&lines)
}

#[test]
fn header_id_becomes_the_session_id() {
    let t = parse(&jsonl(&[header("abc-123"), user("u1", json!("hi"))]));
    assert_eq!(t.session_id(), Some("abc-123"));
    assert_eq!(t.entries().len(), 1);
    assert_eq!(t.entries()[0].id(), Some("u1"));
    assert_eq!(t.page(None, None).unwrap().session_id, "abc-123");
}

#[test]
fn last_of_several_headers_wins_and_headers_are_not_entries() {
    let t = parse(&jsonl(&[
        header("first"),
        user("u1", json!("hi")),
        header("second"),
    ]));
    assert_eq!(t.session_id(), Some("second"));
    assert_eq!(t.entries().len(), 1);
    // A last header without an id wins too, leaving the session unknown.
    let t = parse(&jsonl(&[header("first"), json!({"type": "session"})]));
    assert_eq!(t.session_id(), None);
    assert_eq!(t.stats().session_id, UNKNOWN_SESSION_ID);
}

#[test]
fn malformed_and_invalid_utf8_lines_are_skipped_and_counted() {
    let mut bytes = jsonl(&[header("s"), user("u1", json!("one"))]);
    bytes.extend_from_slice(b"{\"type\":\"message\",\"id\":\"torn\n"); // line 3: bad JSON
    bytes.extend_from_slice(b"\xff\xfe{\"type\":\"x\"}\n"); // line 4: not UTF-8
    bytes.extend_from_slice(b"[1,2]\n   \n\n"); // line 5: not an object; 6, 7 blank
    bytes.extend_from_slice(&jsonl(&[user("u2", json!("two"))])); // line 8
    bytes.extend_from_slice(b"{\"type\":\"message\",\"id\":\"u3\""); // line 9: torn tail

    let t = parse(&bytes);
    let ids: Vec<_> = t.entries().iter().map(|e| e.id().unwrap()).collect();
    assert_eq!(ids, ["u1", "u2"]);
    assert_eq!(t.skipped_lines(), 4);
    let skipped: Vec<_> = t.skipped().iter().map(|s| (s.line, s.reason)).collect();
    assert_eq!(
        skipped,
        [
            (3, SkipReason::InvalidJson),
            (4, SkipReason::InvalidUtf8),
            (5, SkipReason::NotAnObject),
            (9, SkipReason::InvalidJson),
        ]
    );
    let u2 = &t.entries()[1];
    assert_eq!(u2.line(), 8);
    assert_eq!(
        &bytes[u2.byte_range()],
        user("u2", json!("two")).to_string().as_bytes()
    );
}

#[test]
fn a_600_kb_transcript_with_multibyte_utf8_parses_and_pages() {
    let text = "日本語のテキスト — émojis 🦀🚀 ".repeat(20);
    let mut lines = vec![header("big")];
    let (mut i, mut size) = (0, 0);
    while size < 600 * 1024 {
        let line = user(&format!("m{i}"), json!(format!("{i}: {text}")));
        size += line.to_string().len() + 1;
        lines.push(line);
        i += 1;
    }
    let bytes = jsonl(&lines);
    assert!(bytes.len() >= 600 * 1024);

    let t = parse(&bytes);
    assert_eq!(t.skipped_lines(), 0);
    assert_eq!(t.entries().len(), i);
    let mut seen = 0;
    let mut cursor: Option<String> = None;
    loop {
        let page = t.page(cursor.as_deref(), Some(200)).unwrap();
        for m in &page.messages {
            assert_eq!(m.id.as_deref(), Some(format!("m{seen}").as_str()));
            assert_eq!(m.content, Some(json!(format!("{seen}: {text}"))));
            seen += 1;
        }
        if !page.has_more {
            assert_eq!(page.next_cursor, None);
            break;
        }
        cursor = page.next_cursor;
    }
    assert_eq!(seen, i);
    assert_eq!(t.stats().user_messages, i as u64);
}

#[test]
fn message_entry_projects_role_content_usage_and_verbosity() {
    let usage =
        json!({"input": 10, "output": 5, "cacheRead": 0, "cacheWrite": 0, "totalTokens": 15});
    let t = parse(&jsonl(&[
        json!({"type": "message", "id": "a1", "parentId": null, "timestamp": "T1",
               "message": {"role": "assistant", "content": [{"type": "text", "text": "hi"}], "usage": usage}}),
        json!({"type": "message", "id": "r1", "parentId": "a1", "timestamp": "T2",
               "message": {"role": "toolResult", "toolCallId": "c1", "content": [], "isError": false}}),
        json!({"type": "message", "id": "n1", "parentId": "r1", "timestamp": "T3"}),
        json!({"type": "message", "id": "n2", "parentId": "r1", "timestamp": "T3", "message": null}),
    ]));
    let shown: Vec<_> = t.messages().collect();
    assert_eq!(
        shown.len(),
        2,
        "message entries without a message are not shown"
    );
    assert_eq!(
        serde_json::to_value(&shown[0]).unwrap(),
        json!({"id": "a1", "type": "message", "role": "assistant",
               "content": [{"type": "text", "text": "hi"}], "timestamp": "T1",
               "isVerbose": false, "usage": usage})
    );
    assert_eq!(
        serde_json::to_value(&shown[1]).unwrap(),
        json!({"id": "r1", "type": "message", "role": "toolResult", "content": [],
               "timestamp": "T2", "isVerbose": true})
    );
}

#[test]
fn compaction_model_change_and_custom_message_project_like_lobu() {
    let t = parse(&jsonl(&[
        json!({"type": "compaction", "id": "c1", "timestamp": "T", "summary": "we talked", "tokensBefore": 9}),
        json!({"type": "compaction", "id": "c2", "timestamp": "T"}),
        json!({"type": "model_change", "id": "mc", "timestamp": "T", "provider": "openai", "modelId": "gpt-5"}),
        json!({"type": "model_change", "id": "mc2", "timestamp": "T"}),
        json!({"type": "custom_message", "id": "x1", "timestamp": "T", "customType": "note", "content": "shown", "display": true}),
        json!({"type": "custom_message", "id": "x2", "timestamp": "T", "content": [{"type": "text", "text": "hidden"}]}),
        json!({"type": "thinking_level_change", "id": "t", "timestamp": "T", "thinkingLevel": "high"}),
        json!({"type": "custom", "id": "cu", "timestamp": "T", "customType": "k", "data": {}}),
        json!({"type": "label", "id": "l", "timestamp": "T", "targetId": "c1", "label": "x"}),
    ]));
    let shown: Vec<Value> = t
        .messages()
        .map(|m| serde_json::to_value(m).unwrap())
        .collect();
    assert_eq!(
        shown,
        [
            json!({"id": "c1", "type": "compaction", "content": "we talked", "timestamp": "T", "isVerbose": true}),
            json!({"id": "c2", "type": "compaction", "content": "", "timestamp": "T", "isVerbose": true}),
            json!({"id": "mc", "type": "model_change", "content": "openai/gpt-5", "model": "openai/gpt-5",
                   "timestamp": "T", "isVerbose": true}),
            json!({"id": "mc2", "type": "model_change", "content": "undefined/undefined",
                   "model": "undefined/undefined", "timestamp": "T", "isVerbose": true}),
            json!({"id": "x1", "type": "custom_message", "role": "user", "content": "shown",
                   "timestamp": "T", "isVerbose": false}),
            json!({"id": "x2", "type": "custom_message", "role": "user",
                   "content": [{"type": "text", "text": "hidden"}], "timestamp": "T", "isVerbose": true}),
        ]
    );
}

#[test]
fn display_message_serialises_with_lobu_field_names_and_round_trips() {
    let t = parse(&jsonl(&[
        json!({"type": "message", "id": "u", "timestamp": "T",
                                  "message": {"role": "user", "content": "hi", "usage": null}}),
    ]));
    let m = t.messages().next().unwrap();
    let text = serde_json::to_string(&m).unwrap();
    assert_eq!(
        text,
        r#"{"id":"u","type":"message","role":"user","content":"hi","timestamp":"T","isVerbose":false,"usage":null}"#
    );
    assert_eq!(serde_json::from_str::<DisplayMessage>(&text).unwrap(), m);
}

#[test]
fn paging_defaults_to_50_and_next_cursor_continues_after_the_last_item() {
    let t = parse(&numbered_users(120));
    let first = t.page(None, None).unwrap();
    assert_eq!(first.messages.len(), DEFAULT_MESSAGE_LIMIT);
    assert!(first.has_more);
    assert_eq!(first.next_cursor.as_deref(), Some("m49"));
    let second = t.page(first.next_cursor.as_deref(), None).unwrap();
    assert_eq!(second.messages[0].id.as_deref(), Some("m50"));
    let last = t.page(Some("m99"), None).unwrap();
    assert_eq!(last.messages.len(), 20);
    assert!(!last.has_more);
    assert_eq!(last.next_cursor, None);
    let after_end = t.page(Some("m119"), None).unwrap();
    assert!(after_end.messages.is_empty() && !after_end.has_more);
}

#[test]
fn paging_allows_at_most_200_and_an_unknown_cursor_starts_at_zero() {
    let t = parse(&numbered_users(250));
    let page = t.page(Some("no-such-id"), Some(200)).unwrap();
    assert_eq!(page.messages.len(), 200);
    assert_eq!(page.messages[0].id.as_deref(), Some("m0"));
    assert_eq!(page.next_cursor.as_deref(), Some("m199"));
    let empty_cursor = t.page(Some(""), Some(1)).unwrap();
    assert_eq!(empty_cursor.messages[0].id.as_deref(), Some("m0"));
}

#[test]
fn limit_zero_and_201_are_rejected_as_invalid_input() {
    let t = parse(&numbered_users(3));
    for limit in [0, 201] {
        let err = t.page(None, Some(limit)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "limit {limit}");
    }
    // Rejected even when there is nothing to page.
    assert!(parse(b"").page(None, Some(0)).is_err());
}

#[test]
fn message_page_serialises_with_lobu_field_names() {
    let t = parse(&numbered_users(2));
    let page = serde_json::to_value(t.page(None, Some(1)).unwrap()).unwrap();
    let keys: Vec<_> = page.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.len(), 4);
    for key in ["messages", "nextCursor", "hasMore", "sessionId"] {
        assert!(page.get(key).is_some(), "missing {key}");
    }
    let last = serde_json::to_value(t.page(Some("m0"), None).unwrap()).unwrap();
    assert_eq!(last["nextCursor"], Value::Null);
}

#[test]
fn empty_content_reports_none_but_blank_content_reports_unknown() {
    let empty = parse(b"");
    assert_eq!(
        serde_json::to_value(empty.page(None, None).unwrap()).unwrap(),
        json!({"messages": [], "nextCursor": null, "hasMore": false, "sessionId": "none"})
    );
    assert_eq!(
        serde_json::to_value(empty.stats()).unwrap(),
        json!({"sessionId": "none", "messageCount": 0, "userMessages": 0, "assistantMessages": 0,
               "totalInputTokens": 0, "totalOutputTokens": 0})
    );
    assert_eq!(
        parse(b"\n \n").page(None, None).unwrap().session_id,
        "unknown"
    );
}

#[test]
fn stats_count_both_token_spellings_and_take_the_last_model_change() {
    let t = parse(&jsonl(&[
        header("s"),
        json!({"type": "model_change", "id": "1", "provider": "openai", "modelId": "gpt-5"}),
        user("2", json!("hi")),
        json!({"type": "message", "id": "3", "message": {"role": "assistant", "content": [],
               "usage": {"input": 100, "output": 20}}}),
        json!({"type": "message", "id": "4", "message": {"role": "assistant", "content": [],
               "usage": {"inputTokens": 7, "outputTokens": 3, "input": 1000}}}),
        json!({"type": "message", "id": "5", "message": {"role": "toolResult", "content": [],
               "usage": {"inputTokens": 0, "input": 5}}}),
        json!({"type": "model_change", "id": "6", "provider": "anthropic", "modelId": "claude-opus-4"}),
        json!({"type": "compaction", "id": "7", "summary": "s"}),
    ]));
    let stats = t.stats();
    assert_eq!(
        serde_json::to_value(&stats).unwrap(),
        json!({"sessionId": "s", "messageCount": 4, "userMessages": 1, "assistantMessages": 2,
               "totalInputTokens": 112, "totalOutputTokens": 23,
               "currentModel": "anthropic/claude-opus-4"})
    );
}

#[test]
fn title_takes_the_first_user_text_with_content() {
    let bytes = jsonl(&[
        header("s"),
        json!({"type": "message", "id": "a", "message": {"role": "assistant", "content": "not me"}}),
        user("b", json!("   \n\t ")),
        user(
            "c",
            json!([{"type": "text", "text": "  "}, {"type": "text", "text": "second block"}]),
        ),
        user(
            "d",
            json!([{"type": "image", "data": "..."}, {"type": "text", "text": "  Plan \n the   trip "}]),
        ),
        user("e", json!("later")),
    ]);
    assert_eq!(title(&bytes).as_deref(), Some("Plan the trip"));
    assert_eq!(
        title(&jsonl(&[user("a", json!("Hello   world"))])).as_deref(),
        Some("Hello world")
    );
    assert_eq!(title(&jsonl(&[header("s"), user("a", json!("  "))])), None);
    assert_eq!(title(b""), None);
}

#[test]
fn title_is_cut_at_42_characters_not_bytes() {
    let exactly = "é".repeat(TITLE_MAX_CHARS);
    assert_eq!(
        title(&jsonl(&[user("a", json!(exactly))])),
        Some(exactly.clone())
    );
    let long = format!("{exactly}🦀 and more");
    assert_eq!(
        title(&jsonl(&[user("a", json!(long))])),
        Some(format!("{exactly}…"))
    );
}

#[test]
fn title_turns_control_characters_and_nul_into_spaces() {
    let bytes = jsonl(&[user("a", json!("hi\u{0}there\u{7}\u{1b}[31m red"))]);
    assert_eq!(title(&bytes).as_deref(), Some("hi there [31m red"));
    assert_eq!(title(&jsonl(&[user("a", json!("\u{0}\u{0}"))])), None);
}
