//! Writing: headers, byte-exact prefixes, ids, the parent chain and refused fields.

use std::collections::HashSet;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::*;
use crate::ErrorKind;

const HYDRATED: &str = concat!(
    r#"{"type":"session","version":3,"id":"hydrated-session","timestamp":"2026-05-18T08:00:00.000Z","cwd":"/w"}"#,
    "\n",
    r#"{"type":"message","id":"0000beef","parentId":null,"timestamp":"2026-05-18T08:00:01.000Z","message":{"role":"user","content":"héllo  🦀"}}"#,
    "\n",
);

fn is_iso_utc(text: &str) -> bool {
    text.ends_with('Z') && OffsetDateTime::parse(text, &Rfc3339).is_ok()
}

#[test]
fn writer_on_empty_input_writes_a_valid_header_that_parses_back() {
    let mut writer = TranscriptWriter::new("/work/conv-1");
    let first_line = std::str::from_utf8(writer.as_slice()).unwrap();
    assert!(first_line.ends_with('\n') && first_line.matches('\n').count() == 1);
    let header: Value = serde_json::from_str(first_line.trim_end()).unwrap();
    assert_eq!(header["type"], "session");
    assert_eq!(header["version"], 3);
    assert_eq!(header["cwd"], "/work/conv-1");
    assert!(is_iso_utc(header["timestamp"].as_str().unwrap()));
    let id = header["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
    assert_eq!(writer.session_id(), Some(id));

    writer.user_text("hi").unwrap();
    let parsed = parse(writer.as_slice());
    assert_eq!(parsed.session_id(), Some(id));
    assert_eq!(parsed.skipped_lines(), 0);
    assert_eq!(parsed.entries().len(), 1);
    assert_eq!(parsed.entries()[0].parent_id(), None);
    assert_eq!(
        writer.appended_bytes(),
        writer.as_slice(),
        "header and entry are both new"
    );
    assert_eq!(
        TranscriptWriter::open(Vec::new(), "/x")
            .session_id()
            .map(str::len),
        Some(36)
    );
}

#[test]
fn writer_keeps_hydrated_bytes_byte_exact_as_a_prefix() {
    let untouched = TranscriptWriter::open(HYDRATED.as_bytes(), "/ignored");
    assert_eq!(untouched.bytes(), HYDRATED.as_bytes());

    let mut writer = TranscriptWriter::open(bytes::Bytes::from_static(HYDRATED.as_bytes()), "/x");
    assert_eq!(writer.session_id(), Some("hydrated-session"));
    assert_eq!(writer.leaf_id(), Some("0000beef"));
    writer.model_change("openai", "gpt-5").unwrap();
    writer.user_text("again").unwrap();
    let all = writer.bytes();
    assert!(all.starts_with(HYDRATED.as_bytes()));
    assert_eq!(writer.hydrated_len(), HYDRATED.len());
    assert_eq!(&all[HYDRATED.len()..], writer.appended_bytes());
    assert_eq!(writer.len(), all.len());
    assert!(all.ends_with(b"\n"));
    let parsed = parse(&all);
    assert_eq!(parsed.entries().len(), 3);
    assert_eq!(parsed.entries()[1].parent_id(), Some("0000beef"));
}

#[test]
fn writer_adds_the_missing_trailing_newline_before_appending() {
    let torn = HYDRATED.trim_end_matches('\n');
    let mut writer = TranscriptWriter::open(torn.as_bytes(), "/x");
    assert_eq!(
        writer.as_slice(),
        torn.as_bytes(),
        "nothing added before an append"
    );
    let entry = writer.user_text("next").unwrap().clone();
    let all = writer.into_bytes();
    assert_eq!(&all[..torn.len()], torn.as_bytes());
    assert_eq!(all[torn.len()], b'\n');
    let parsed = parse(&all);
    assert_eq!(parsed.entries().len(), 2);
    assert_eq!(
        parsed.entries()[1],
        entry,
        "line numbers and ranges match a fresh parse"
    );
}

#[test]
fn writer_ids_are_unique_and_each_parent_is_the_previous_entry() {
    let mut writer = TranscriptWriter::open(HYDRATED.as_bytes(), "/x");
    for i in 0..300 {
        writer.user_text(&format!("turn {i}")).unwrap();
    }
    let parsed = parse(writer.as_slice());
    let mut seen = HashSet::new();
    let mut previous: Option<&str> = None;
    for entry in parsed.entries() {
        let id = entry.id().unwrap();
        assert!(seen.insert(id), "duplicate id {id}");
        assert_eq!(entry.parent_id(), previous);
        previous = Some(id);
        if entry.id() != Some("0000beef") {
            assert!(
                id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()),
                "{id}"
            );
            assert!(is_iso_utc(entry.timestamp().unwrap()));
        }
    }
    assert_eq!(writer.appended().len(), 300);
    assert_eq!(writer.appended(), &parsed.entries()[1..]);
}

#[test]
fn writer_records_assistant_tool_calls_and_results_in_pi_shapes() {
    let mut writer = TranscriptWriter::new("/x");
    writer.user_text("weather in Paris?").unwrap();
    let mut call = AssistantMessage::new(
        "anthropic",
        "claude-sonnet-4-5",
        vec![
            ContentBlock::Thinking {
                thinking: "use the tool".into(),
            },
            ContentBlock::tool_call("toolu_1", "weather", json!({"city": "Paris"})),
        ],
    );
    call.usage = Usage {
        input: 40,
        output: 9,
        cache_read: 2,
        cache_write: 1,
        cost: Cost::default(),
    };
    call.stop_reason = StopReason::ToolUse;
    writer.assistant(&call).unwrap();
    writer
        .tool_result(&ToolResult::text("toolu_1", "weather", "18°C"))
        .unwrap();

    let entries = writer.appended();
    let assistant = entries[1].message().unwrap().value();
    assert_eq!(assistant["role"], "assistant");
    assert_eq!(
        assistant["content"][1],
        json!({"type": "toolCall", "id": "toolu_1", "name": "weather", "arguments": {"city": "Paris"}})
    );
    assert_eq!(assistant["usage"]["totalTokens"], 52);
    assert_eq!(assistant["usage"]["cost"]["total"], 0.0);
    assert_eq!(assistant["stopReason"], "toolUse");
    assert_eq!(
        (assistant["provider"].as_str(), assistant["model"].as_str()),
        (Some("anthropic"), Some("claude-sonnet-4-5"))
    );
    assert!(assistant["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
    let result = entries[2].message().unwrap().value();
    assert_eq!(result["role"], "toolResult");
    assert_eq!(result["toolCallId"], "toolu_1");
    assert_eq!(result["isError"], false);
    assert_eq!(result["content"], json!([{"type": "text", "text": "18°C"}]));

    let parsed = parse(writer.as_slice());
    let stats = parsed.stats();
    assert_eq!(
        (stats.total_input_tokens, stats.total_output_tokens),
        (40, 9)
    );
    assert_eq!(parsed.messages().filter(|m| m.is_verbose).count(), 1);
    assert_eq!(parsed.title().as_deref(), Some("weather in Paris?"));
}

#[test]
fn generic_append_writes_fields_and_refuses_reserved_ones_without_writing() {
    let mut writer = TranscriptWriter::open(HYDRATED.as_bytes(), "/x");
    for reserved in RESERVED_FIELDS {
        let mut fields = Map::new();
        fields.insert(reserved.to_owned(), json!("mine"));
        fields.insert("summary".to_owned(), json!("s"));
        let err = writer.append("compaction", fields).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{reserved}");
    }
    for bad_type in ["", "session"] {
        let err = writer.append(bad_type, Map::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad_type:?}");
    }
    assert_eq!(
        writer.as_slice(),
        HYDRATED.as_bytes(),
        "refusals write nothing"
    );
    assert!(writer.appended().is_empty());

    let mut fields = Map::new();
    fields.insert("summary".to_owned(), json!("we talked"));
    fields.insert("firstKeptEntryId".to_owned(), json!("0000beef"));
    let entry = writer.append("compaction", fields).unwrap();
    assert_eq!(entry.entry_type(), Some("compaction"));
    assert_eq!(entry.summary(), Some("we talked"));
    assert_eq!(entry.parent_id(), Some("0000beef"));
    let shown: Vec<_> = parse(writer.as_slice()).messages().collect();
    assert_eq!(shown[1].content, Some(json!("we talked")));
}

#[test]
fn writer_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<TranscriptWriter>();
    assert_send_sync::<Transcript>();
}

#[test]
fn a_writer_applied_to_the_parse_of_its_base_equals_a_parse_of_its_bytes() {
    let torn_tail = format!("{HYDRATED}{{\"type\":\"message\",\"id\":\"torn");
    let malformed_middle = format!("{HYDRATED}not json\n{HYDRATED}");
    let header_only = HYDRATED.lines().next().unwrap().to_owned();
    for base in ["", HYDRATED, &torn_tail, &malformed_middle, &header_only] {
        let mut parsed = parse(base.as_bytes());
        let mut writer = TranscriptWriter::continue_parsed(base.as_bytes(), &parsed, "/x");
        writer.user_text("one").unwrap();
        writer.model_change("openai", "gpt-5").unwrap();
        writer.user_text("two").unwrap();
        writer.apply_to(&mut parsed);
        assert_eq!(parsed, parse(writer.as_slice()), "base {base:?}");
    }
}

#[test]
fn a_writer_continued_from_a_parse_is_the_writer_opened_on_the_bytes() {
    let parsed = parse(HYDRATED.as_bytes());
    let continued = TranscriptWriter::continue_parsed(HYDRATED.as_bytes(), &parsed, "/x");
    let opened = TranscriptWriter::open(HYDRATED.as_bytes(), "/x");
    assert_eq!(continued.session_id(), opened.session_id());
    assert_eq!(continued.leaf_id(), opened.leaf_id());
    assert_eq!(continued.as_slice(), opened.as_slice());
    assert_eq!(continued.hydrated_len(), opened.hydrated_len());
}

#[test]
fn a_writer_that_appended_nothing_leaves_the_parse_unchanged() {
    let mut parsed = parse(HYDRATED.as_bytes());
    let before = parsed.clone();
    TranscriptWriter::continue_parsed(HYDRATED.as_bytes(), &parsed, "/x").apply_to(&mut parsed);
    assert_eq!(parsed, before);
}
