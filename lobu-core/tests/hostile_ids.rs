//! Hostile ids at the edge: every parser refuses empty, oversized and control-laden ids with
//! `InvalidInput` naming the id, never a panic; conversation ids keep path syntax and
//! percent signs verbatim; ids differing by case or by what a sanitiser folds stay distinct
//! values. (What stores do with them: `lobu_core::testkit::hostile`.)

use std::collections::HashSet;

use lobu_core::testkit::hostile::CONFUSABLE_CONVERSATION_IDS;
use lobu_core::{
    AgentId, ConversationId, ConversationKey, ErrorKind, IdempotencyKey, MAX_AGENT_ID_BYTES,
    MAX_CONVERSATION_ID_BYTES, MAX_ID_BYTES, OrgId, RunId, WorkerId,
};

/// Each text id type: its name in messages, its limit, and its parser (kind or value).
type Parser = fn(&str) -> Result<String, (ErrorKind, String)>;

fn parsers() -> [(&'static str, usize, Parser); 5] {
    fn wrap<T: ToString>(r: lobu_core::Result<T>) -> Result<String, (ErrorKind, String)> {
        r.map(|id| id.to_string())
            .map_err(|e| (e.kind(), e.message().to_owned()))
    }
    [
        ("org id", MAX_ID_BYTES, |s| wrap(OrgId::new(s))),
        ("conversation id", MAX_CONVERSATION_ID_BYTES, |s| {
            wrap(ConversationId::new(s))
        }),
        ("run id", MAX_ID_BYTES, |s| wrap(RunId::new(s))),
        ("idempotency key", MAX_ID_BYTES, |s| {
            wrap(IdempotencyKey::new(s))
        }),
        ("worker id", MAX_ID_BYTES, |s| wrap(WorkerId::new(s))),
    ]
}

/// Ids every parser refuses, for a limit of `max` bytes.
fn refused(max: usize) -> Vec<(String, &'static str)> {
    let mut cases = vec![
        (String::new(), "must not be empty"),
        ("x".repeat(max + 1), "bytes; the limit is"),
        ("x".repeat(1 << 20), "bytes; the limit is"),
        // Long Unicode: one byte over the limit in the middle of a character.
        (
            format!("{}\u{e9}", "c".repeat(max - 1)),
            "bytes; the limit is",
        ),
        ("\u{1f600}".repeat(max / 4 + 1), "bytes; the limit is"),
        ("\u{e9}".repeat(max), "bytes; the limit is"),
    ];
    let controls = (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32);
    for c in controls {
        cases.push((format!("a{c}b"), "control characters"));
    }
    cases.push(("\0".to_owned(), "control characters"));
    cases.push(("trailing\n".to_owned(), "control characters"));
    cases
}

#[test]
fn empty_long_and_control_laden_ids_are_refused_by_every_parser_naming_the_id() {
    let mut count = 0;
    for (name, max, parse) in parsers() {
        for (id, expected) in refused(max) {
            let (kind, message) = parse(&id).expect_err(&format!("{name} {id:?}"));
            assert_eq!(kind, ErrorKind::InvalidInput, "{name} {id:?}");
            assert!(message.starts_with(name), "{name}: {message}");
            assert!(message.contains(expected), "{name} {id:?}: {message}");
            count += 1;
        }
        // Up to the limit, in four-byte characters, is fine.
        let longest = "\u{1f600}".repeat(max / 4);
        assert_eq!(parse(&longest).as_deref(), Ok(longest.as_str()), "{name}");
    }
    assert!(count > 5 * 70, "{count} cases");
}

#[test]
fn agent_ids_refuse_path_syntax_percent_signs_and_anything_outside_their_alphabet() {
    let long = "a".repeat(MAX_AGENT_ID_BYTES + 1);
    let bad = [
        "",
        "..",
        ".",
        "a/b",
        "a\\b",
        "%2F",
        "a%2Fb",
        "%",
        "100%",
        "a b",
        "a:b",
        "a.b",
        "ü",
        "a\0b",
        "a\nb",
        "\u{200b}",
        "a\u{ff0f}b",
        &long,
    ];
    for id in bad {
        let error = AgentId::new(id).expect_err(id);
        assert_eq!(error.kind(), ErrorKind::InvalidInput, "{id:?}");
        assert!(
            error.message().starts_with("agent id"),
            "{}",
            error.message()
        );
    }
    assert!(AgentId::new("a".repeat(MAX_AGENT_ID_BYTES)).is_ok());
}

#[test]
fn conversation_ids_keep_path_syntax_and_percent_signs_verbatim() {
    for id in CONFUSABLE_CONVERSATION_IDS {
        let parsed = ConversationId::new(id).unwrap_or_else(|e| panic!("{id:?}: {e}"));
        assert_eq!(parsed.as_str(), *id, "no decoding, trimming or folding");
        let json = serde_json::to_string(&parsed).unwrap();
        let back: ConversationId = serde_json::from_str(&json).unwrap();
        assert_eq!(back, parsed, "{id:?} round-trips through JSON");
    }
}

#[test]
fn ids_differing_by_case_or_by_what_a_sanitiser_folds_are_different_values() {
    let ids: HashSet<ConversationId> = CONFUSABLE_CONVERSATION_IDS
        .iter()
        .map(|id| ConversationId::new(id).unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        CONFUSABLE_CONVERSATION_IDS.len(),
        "no two collapse"
    );
    let orgs: HashSet<OrgId> = ["acme", "Acme", "ACME", "acme ", " acme", "acme\u{200b}"]
        .iter()
        .map(|id| OrgId::new(id).unwrap())
        .collect();
    assert_eq!(orgs.len(), 6);
    let keys: HashSet<ConversationKey> = [("a", "b-c", "d"), ("a", "b", "c-d"), ("a-b", "c", "d")]
        .iter()
        .map(|(o, a, c)| ConversationKey::parse(o, a, c).unwrap())
        .collect();
    assert_eq!(keys.len(), 3, "the parts never run together");
}

#[test]
fn a_key_names_the_part_that_is_wrong() {
    let cases = [
        (("", "bot", "c"), "org id"),
        (("acme", "", "c"), "agent id"),
        (("acme", "bot", ""), "conversation id"),
        (("ac\0me", "bot", "c"), "org id"),
        (("acme", "../bot", "c"), "agent id"),
        (("acme", "bot", "c\u{85}"), "conversation id"),
    ];
    for ((org, agent, conversation), part) in cases {
        let error = ConversationKey::parse(org, agent, conversation).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        assert!(error.message().starts_with(part), "{}", error.message());
    }
}

#[test]
fn deserialising_a_key_or_an_id_with_a_bad_part_is_an_error_not_a_panic() {
    let bad = [
        r#"{"org":"","agent":"bot","conversation":"c"}"#,
        r#"{"org":"acme","agent":"b/t","conversation":"c"}"#,
        r#"{"org":"acme","agent":"bot","conversation":"a\u0000b"}"#,
        r#"{"org":"acme","agent":"bot","conversation":"a\u001bb"}"#,
        r#"{"org":"acme","agent":"bot","conversation":7}"#,
        r#"{"org":"acme","agent":"bot"}"#,
    ];
    for json in bad {
        assert!(
            serde_json::from_str::<ConversationKey>(json).is_err(),
            "{json}"
        );
    }
    let long = format!("\"{}\"", "r".repeat(MAX_ID_BYTES + 1));
    assert!(serde_json::from_str::<RunId>(&long).is_err());
    assert!(
        serde_json::from_str::<RunId>("\"\\ud800\"").is_err(),
        "a lone surrogate"
    );
}
