use std::collections::HashSet;

use serde_json::{Value, json};

use super::*;
use crate::ErrorKind;
use crate::transcript::parse;

fn lines(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        out.extend(serde_json::to_vec(v).unwrap());
        out.push(b'\n');
    }
    out
}

fn values(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn version_1() -> Vec<u8> {
    lines(&[
        json!({"type": "session", "id": "s1", "timestamp": "T0", "cwd": "/w"}),
        json!({"type": "message", "timestamp": "T1", "message": {"role": "user", "content": "hi"}}),
        json!({"type": "message", "timestamp": "T2", "message": {"role": "assistant", "content": [{"type": "text", "text": "hello"}]}}),
        json!({"type": "message", "timestamp": "T3", "message": {"role": "hookMessage", "content": "from a hook"}}),
        json!({"type": "compaction", "timestamp": "T4", "summary": "s", "firstKeptEntryIndex": 2, "tokensBefore": 10}),
    ])
}

#[test]
fn version_1_entries_get_ids_a_parent_chain_and_compaction_ids() {
    let up = upgrade(&version_1()).unwrap();
    assert_eq!((up.from_version, up.dropped_lines), (1, 0));
    let out = values(&up.bytes);
    assert_eq!(out[0]["version"], 3);
    let ids: Vec<&str> = out[1..].iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(
        ids.iter()
            .all(|id| id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()))
    );
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    assert_eq!(out[1]["parentId"], Value::Null);
    for i in 2..out.len() {
        assert_eq!(out[i]["parentId"], out[i - 1]["id"]);
    }
    // firstKeptEntryIndex 2 counts the header: the assistant message.
    assert_eq!(out[4]["firstKeptEntryId"], out[2]["id"]);
    assert!(out[4].get("firstKeptEntryIndex").is_none());
    assert_eq!(out[3]["message"]["role"], "custom");
    let parsed = parse(&up.bytes);
    assert_eq!(parsed.skipped_lines(), 0);
    assert!(parsed.entries().iter().all(|e| e.id().is_some()));
}

#[test]
fn keys_keep_their_order_and_untouched_values_their_bytes() {
    let v1 = b"{\"type\":\"session\",\"id\":\"s1\",\"timestamp\":\"T0\",\"cwd\":\"/w\"}\n\
{\"type\":\"message\",\"timestamp\":\"T1\",\"message\":{\"role\":\"user\",\"content\":\"a\\u00e9  b\",\"n\":1.50}}\n";
    let up = upgrade(v1).unwrap();
    let text = String::from_utf8(up.bytes).unwrap();
    let mut out = text.lines();
    assert_eq!(
        out.next().unwrap(),
        "{\"type\":\"session\",\"id\":\"s1\",\"timestamp\":\"T0\",\"cwd\":\"/w\",\"version\":3}"
    );
    let entry = out.next().unwrap();
    assert!(
        entry.starts_with(
            "{\"type\":\"message\",\"timestamp\":\"T1\",\"message\":{\"role\":\"user\",\"content\":\"a\\u00e9  b\",\"n\":1.50},\"id\":\""
        ),
        "{entry}"
    );
    assert!(entry.ends_with("\",\"parentId\":null}"), "{entry}");
}

#[test]
fn version_2_only_renames_hook_messages() {
    let v2 = lines(&[
        json!({"type": "session", "version": 2, "id": "s2", "timestamp": "T0", "cwd": "/w"}),
        json!({"type": "message", "id": "a", "parentId": null, "timestamp": "T1", "message": {"role": "hookMessage", "content": "x"}}),
        json!({"type": "message", "id": "b", "parentId": "a", "timestamp": "T2", "message": {"role": "user", "content": "y"}}),
    ]);
    let up = upgrade(&v2).unwrap();
    assert_eq!(up.from_version, 2);
    let out = values(&up.bytes);
    assert_eq!(out[0]["version"], 3);
    assert_eq!(out[1]["message"]["role"], "custom");
    assert_eq!(
        (out[1]["id"].as_str(), out[2]["parentId"].as_str()),
        (Some("a"), Some("a"))
    );
    assert_eq!(out[2], values(&v2)[2]);
}

#[test]
fn a_current_file_is_kept_byte_for_byte_malformed_lines_and_all() {
    let mut v3 =
        lines(&[json!({"type": "session", "version": 3, "id": "s", "timestamp": "T", "cwd": "/"})]);
    v3.extend_from_slice(b"{torn\n\n{\"type\":\"message\",\"id\":\"a\"}");
    let up = upgrade(&v3).unwrap();
    assert_eq!((up.bytes, up.from_version, up.dropped_lines), (v3, 3, 0));
}

#[test]
fn upgrading_twice_gives_the_same_bytes_and_a_thousand_entries_get_distinct_ids() {
    let mut entries = vec![json!({"type": "session", "id": "big", "timestamp": "T", "cwd": "/"})];
    for i in 0..1000 {
        entries.push(json!({"type": "message", "timestamp": "T", "message": {"role": "user", "content": format!("m{i}")}}));
    }
    let v1 = lines(&entries);
    let once = upgrade(&v1).unwrap();
    assert_eq!(once, upgrade(&v1).unwrap());
    let ids: HashSet<String> = values(&once.bytes)[1..]
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1000);
    let page = parse(&once.bytes).page(None, Some(200)).unwrap();
    assert!(page.has_more && page.next_cursor.is_some());
}

#[test]
fn malformed_and_blank_lines_of_an_old_file_are_dropped_and_counted() {
    let mut v1 = version_1();
    v1.extend_from_slice(b"{torn line\n\n");
    v1.extend(lines(&[json!({"type": "message", "timestamp": "T9", "message": {"role": "user", "content": "after"}})]));
    let up = upgrade(&v1).unwrap();
    assert_eq!(up.dropped_lines, 2);
    assert_eq!(values(&up.bytes).len(), 6);
}

#[test]
fn what_is_not_a_pi_session_is_invalid_input() {
    let cases: [&[u8]; 5] = [
        b"",
        b"\n\n",
        b"{\"type\":\"message\",\"id\":\"a\"}\n",
        b"{\"type\":\"session\",\"version\":1}\n",
        b"\xff\xfe not utf-8",
    ];
    for case in cases {
        let err = upgrade(case).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }
}
