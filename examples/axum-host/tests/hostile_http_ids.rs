//! Hostile ids over HTTP, sent byte for byte (no client-side path normalisation): bad agent,
//! conversation and run ids are 4xx on every route and change no byte of the store; ids
//! that are valid but confusable (`..`, `/`, `\`, `%2F`, a lone `%`, case, Unicode forms)
//! are each a conversation of their own, whose data stays inside the data directory.

mod common;

use common::dump::{settled_store_bytes, store_bytes};
use common::raw::{self, RawReply};
use common::{Store, TestHost, segment};
use lobu_core::testkit::hostile::assert_unchanged;

/// Every conversation route with `agent` and `conversation` as raw path text.
async fn every_route(base: &str, agent: &str, conversation: &str) -> Vec<(String, RawReply)> {
    let prefix = format!("/v1/agents/{agent}/conversations/{conversation}");
    let json = [("content-type", "application/json")];
    let mut replies = Vec::new();
    for (method, path, body) in [
        (
            "POST",
            format!("{prefix}/messages"),
            &br#"{"text":"hi"}"#[..],
        ),
        ("GET", format!("{prefix}/session/messages"), b""),
        ("GET", format!("{prefix}/session/stats"), b""),
        ("DELETE", format!("{prefix}/session"), b""),
    ] {
        let reply = raw::request(base, method, &path, &json, body).await;
        replies.push((format!("{method} {path}"), reply));
    }
    replies
}

fn assert_client_error(what: &str, reply: &RawReply) {
    assert!((400..500).contains(&reply.status), "{what}: {reply:?}");
}

async fn bad_ids_are_4xx_on_every_route_and_change_nothing(store: Store) {
    let t = TestHost::start(store).await;
    let base = t.host.base.clone();
    let before = settled_store_bytes(&t).await;
    let mut bad_agents: Vec<String> = [
        "..", ".", "a%2Fb", "a%5Cb", "%25", "100%25", "a%00b", "a%01b", "a%7Fb", "a%C2%85b",
        "%C3%BC", "a%20b", "a:b", "%FF", "Ab%2E",
    ]
    .map(str::to_owned)
    .to_vec();
    bad_agents.push("a".repeat(65));
    let mut bad_conversations: Vec<String> = (0u8..0x20)
        .chain([0x7f])
        .map(|b| format!("a%{b:02X}b"))
        .collect();
    bad_conversations.extend((0x80u8..0xa0).map(|b| format!("a%C2%{b:02X}b")));
    bad_conversations.push("c".repeat(513));
    bad_conversations.push(segment(&"\u{e9}".repeat(257)));
    bad_conversations.push(segment(&"\u{1f600}".repeat(129)));
    bad_conversations.push("%FF%FE".to_owned());
    bad_conversations.push("a%C3".to_owned());
    let mut count = 0;
    for agent in &bad_agents {
        for (what, reply) in every_route(&base, agent, "c1").await {
            assert_eq!(reply.status, 400, "{what}: {reply:?}");
            count += 1;
        }
        let reply = raw::request(
            &base,
            "GET",
            &format!("/v1/agents/{agent}/conversations"),
            &[],
            b"",
        )
        .await;
        assert_eq!(reply.status, 400, "listing of {agent}: {reply:?}");
    }
    for conversation in &bad_conversations {
        for (what, reply) in every_route(&base, "demo", conversation).await {
            assert_eq!(reply.status, 400, "{what}: {reply:?}");
            assert!(!reply.error().is_empty(), "{what}: names the problem");
            count += 1;
        }
    }
    // Empty segments match no route.
    for (what, reply) in every_route(&base, "demo", "").await {
        assert_client_error(&what, &reply);
    }
    for (what, reply) in every_route(&base, "", "c1").await {
        assert_client_error(&what, &reply);
    }
    let long_run = "r".repeat(256);
    for run in [
        "a%00b",
        "a%1Bb",
        "%FF",
        long_run.as_str(),
        "..",
        "%2E%2E%2F%2E%2E",
        "a%2Fb",
    ] {
        for path in [format!("/v1/runs/{run}"), format!("/v1/runs/{run}/events")] {
            let reply = raw::request(&base, "GET", &path, &[], b"").await;
            assert_client_error(&path, &reply);
        }
    }
    assert!(count > 300, "{count} cases");
    assert_unchanged(&before, &store_bytes(&t.data).await, "bad ids");
    t.finish().await;
}

/// `(raw path segment, the conversation id it names)`.
const CONFUSABLE: &[(&str, &str)] = &[
    ("..", ".."),
    (".", "."),
    ("...", "..."),
    ("a%2Fb", "a/b"),
    ("a%252Fb", "a%2Fb"),
    ("a%5Cb", "a\\b"),
    ("a%5C..%5C..%5Cb", "a\\..\\..\\b"),
    ("%2E%2E%2F%2E%2E%2Fetc", "../../etc"),
    ("100%25", "100%"),
    ("a%3Ab", "a:b"),
    ("a_b", "a_b"),
    ("Conv", "Conv"),
    ("conv", "conv"),
    ("c%C3%B6nv", "c\u{f6}nv"),
    ("co%CC%88nv", "co\u{308}nv"),
    ("a%E2%80%8Bb", "a\u{200b}b"),
];

async fn confusable_ids_are_distinct_conversations_inside_the_data_directory(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    let base = t.host.base.clone();
    let json = [("content-type", "application/json")];
    for (raw_segment, id) in CONFUSABLE {
        let path = format!("/v1/agents/demo/conversations/{raw_segment}/messages");
        let body = serde_json::json!({ "text": format!("I am {id}") }).to_string();
        let reply = raw::request(&base, "POST", &path, &json, body.as_bytes()).await;
        assert_eq!(reply.status, 202, "{raw_segment}: {reply:?}");
        let run = reply.json()["run_id"].as_str().unwrap().to_owned();
        assert_eq!(api.wait_run(&run).await["status"], "completed", "{id:?}");
    }
    for (raw_segment, id) in CONFUSABLE {
        let path = format!("/v1/agents/demo/conversations/{raw_segment}/session/messages");
        let reply = raw::request(&base, "GET", &path, &[], b"").await;
        assert_eq!(reply.status, 200, "{raw_segment}: {reply:?}");
        let texts: Vec<String> = reply.json()["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "user")
            .map(|m| common::text_of(&m["content"]))
            .collect();
        assert_eq!(
            texts,
            [format!("I am {id}")],
            "{id:?} sees only its own turn"
        );
    }
    let listed = api.get("/v1/agents/demo/conversations?limit=200").await;
    let mut ids: Vec<&str> = listed.json["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["conversationId"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = CONFUSABLE.iter().map(|(_, id)| *id).collect();
    ids.sort_unstable();
    expected.sort_unstable();
    assert_eq!(ids, expected, "one conversation per id");
    if let common::Data::File(dir) = &t.data {
        // Nothing escaped the data directory: everything is under it.
        let bytes = store_bytes(&t.data).await;
        let outside: Vec<&String> = bytes
            .keys()
            .filter(|p| !p.starts_with("lobu-data/"))
            .collect();
        assert!(
            outside.is_empty(),
            "outside {}: {outside:?}",
            dir.path().display()
        );
        assert!(
            bytes
                .keys()
                .any(|p| p.starts_with("lobu-data/orgs/default/demo/"))
        );
    }
    t.finish().await;
}

on_both_stores!(
    bad_ids_are_4xx_on_every_route_and_change_nothing,
    confusable_ids_are_distinct_conversations_inside_the_data_directory,
);
