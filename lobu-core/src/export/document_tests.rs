use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::ErrorKind;

fn conversation(id: &str, transcript: &'static [u8]) -> Exported {
    Exported::new(
        ConversationKey::parse("acme", "bot", id).unwrap(),
        Version(3),
        RunId::new("run-1").unwrap(),
        UNIX_EPOCH + Duration::from_nanos(1_764_524_930_123_456_789),
        transcript,
    )
}

const PI: &[u8] = b"{\"type\":\"session\",\"version\":3,\"id\":\"s\",\"timestamp\":\"T\",\"cwd\":\"/\"}\n\
{\"type\":\"message\",\"id\":\"a\",\"parentId\":null,\"timestamp\":\"T\",\"message\":{\"role\":\"user\",\"content\":\"Hello there\"}}\n";

fn read_all(bytes: &[u8]) -> Vec<Result<Exported>> {
    DocumentReader::new(bytes).collect()
}

#[test]
fn documents_concatenate_and_read_back_equal_with_the_transcript_byte_for_byte() {
    let docs = [
        conversation("c1", PI),
        conversation("c2", b"no newline at the end"),
        conversation("c3", b""),
        conversation("c4", b"{\"a\":1}\r\n\n\n"),
    ];
    let stream: Vec<u8> = docs.iter().flat_map(Exported::to_document).collect();
    let back: Vec<Exported> = read_all(&stream).into_iter().map(Result::unwrap).collect();
    assert_eq!(back, docs);
    // JSON Lines: every line of the stream is one JSON value.
    for line in stream.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let text = std::str::from_utf8(line).unwrap().trim_end_matches('\r');
        if !text.is_empty() && text != "no newline at the end" {
            serde_json::from_str::<serde_json::Value>(text).unwrap();
        }
    }
}

#[test]
fn the_header_carries_ids_version_run_time_title_length_and_digest() {
    let doc = conversation("c1", PI).to_document();
    let header_line = doc.split(|b| *b == b'\n').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(header_line).unwrap();
    assert_eq!(header["lobu_export"], 1);
    assert_eq!(header["org"], "acme");
    assert_eq!(header["conversation"], "c1");
    assert_eq!(header["version"], 3);
    assert_eq!(header["run"], "run-1");
    assert_eq!(header["updated_at"], "2025-11-30T17:48:50.123456Z");
    assert_eq!(header["title"], "Hello there");
    assert_eq!(header["bytes"], PI.len());
    assert_eq!(header["sha256"], hash::hex(&hash::digest(PI)));
    assert_eq!(&doc[header_line.len() + 1..], PI);
}

#[test]
fn a_truncated_transcript_is_invalid_input_naming_the_document() {
    let mut stream = conversation("c1", PI).to_document();
    stream.extend(conversation("c2", PI).to_document());
    stream.truncate(stream.len() - 10);
    let results = read_all(&stream);
    assert_eq!(results.len(), 2);
    assert!(results[0].is_ok());
    let err = results[1].as_ref().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("export document 2"), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn a_changed_byte_fails_the_digest_check() {
    let mut doc = conversation("c1", PI).to_document();
    let last = doc.len() - 3;
    doc[last] = b'X';
    let err = read_all(&doc).remove(0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("SHA-256"), "{err}");
}

#[test]
fn bad_headers_are_invalid_input_and_reading_stops_at_the_first() {
    let good = conversation("c1", PI).to_document();
    let header_len = good.iter().position(|b| *b == b'\n').unwrap();
    let header: serde_json::Value = serde_json::from_slice(&good[..header_len]).unwrap();
    let with = |field: &str, value: serde_json::Value| {
        let mut h = header.clone();
        h[field] = value;
        let mut out = serde_json::to_vec(&h).unwrap();
        out.extend_from_slice(&good[header_len..]);
        out.extend_from_slice(&good);
        out
    };
    let cases = [
        b"not json at all\n".to_vec(),
        PI.to_vec(),
        with("lobu_export", 2.into()),
        with("org", "".into()),
        with("agent", "no spaces".into()),
        with("run", "".into()),
        with("updated_at", "yesterday".into()),
        with("version", "three".into()),
    ];
    for case in cases {
        let results = read_all(&case);
        assert_eq!(results.len(), 1, "reading goes on after a bad document");
        let err = results.into_iter().next().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }
}

#[test]
fn an_empty_stream_has_no_documents() {
    assert!(read_all(b"").is_empty());
}
