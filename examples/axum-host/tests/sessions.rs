//! Reading, listing and resetting conversations over HTTP, on both stores.

mod common;

use common::{Api, Store, TestHost, segment};
use reqwest::StatusCode;
use serde_json::json;

on_both_stores!(
    messages_page_by_cursor_in_lobu_shape,
    stats_count_messages_tokens_and_the_model,
    a_new_conversation_reads_as_empty,
    deleting_a_session_twice_deletes_then_reports_zero,
    a_delete_sent_again_with_its_key_is_the_same_reset_and_spares_later_turns,
    conversations_are_listed_with_title_turns_bytes_and_update_time,
    conversation_ids_with_colons_spaces_and_slashes_stay_distinct,
);

async fn messages_page_by_cursor_in_lobu_shape(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    for text in ["one", "two", "three"] {
        api.turn("demo", "paged", text).await;
    }
    let all = api.history("demo", "paged").await;
    assert_eq!(
        all.len(),
        7,
        "a model change and three user/assistant pairs"
    );

    let base = format!("{}/session/messages", Api::conversation("demo", "paged"));
    let first = api.get(&format!("{base}?limit=3")).await;
    assert_eq!(first.status, StatusCode::OK);
    let keys: Vec<&str> = first
        .json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["hasMore", "messages", "nextCursor", "sessionId"]);
    assert_eq!(first.json["hasMore"], true);
    assert_eq!(first.json["messages"].as_array().unwrap().len(), 3);
    assert_eq!(first.json["nextCursor"], first.json["messages"][2]["id"]);
    let session = first.json["sessionId"].as_str().unwrap();
    assert_eq!(session.len(), 36, "the transcript header's UUID: {session}");

    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = api
            .get(&format!("{base}?limit=3&cursor={}", segment(&cursor)))
            .await;
        assert_eq!(page.json["sessionId"], session);
        ids.extend(
            page.json["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].clone()),
        );
        match page.json["nextCursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => {
                assert_eq!(page.json["hasMore"], false);
                break;
            }
        }
    }
    let all_ids: Vec<_> = all.iter().map(|m| m["id"].clone()).collect();
    assert_eq!(ids, all_ids);

    let user = &all[1];
    assert_eq!(user["type"], "message");
    assert_eq!(user["role"], "user");
    assert_eq!(user["content"], json!([{"type": "text", "text": "one"}]));
    assert_eq!(user["isVerbose"], false);
    assert!(user["timestamp"].as_str().unwrap().ends_with('Z'));
    let answer = &all[2];
    assert_eq!(answer["role"], "assistant");
    assert!(answer["usage"]["input"].as_u64().unwrap() > 0);
    assert!(answer["usage"]["output"].as_u64().unwrap() > 0);
    assert_eq!(all[0]["type"], "model_change");
    assert_eq!(all[0]["model"], "lobu-demo/echo-1");
    assert_eq!(all[0]["isVerbose"], true);

    // An unknown cursor starts at the beginning, as in lobu.
    let unknown = api.get(&format!("{base}?cursor=ffffffff&limit=1")).await;
    assert_eq!(unknown.json["messages"][0]["id"], all_ids[0]);
    t.finish().await;
}

async fn stats_count_messages_tokens_and_the_model(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    api.turn("demo", "s", "hello").await;
    api.turn("demo", "s", "/tool").await;
    let stats = api
        .get(&format!("{}/session/stats", Api::conversation("demo", "s")))
        .await;
    assert_eq!(stats.status, StatusCode::OK);
    let history = api.history("demo", "s").await;
    let input: u64 = history
        .iter()
        .filter_map(|m| m["usage"]["input"].as_u64())
        .sum();
    let output: u64 = history
        .iter()
        .filter_map(|m| m["usage"]["output"].as_u64())
        .sum();
    assert!(input > 0 && output > 0);
    assert_eq!(
        stats.json,
        json!({
            "sessionId": api.get(&format!("{}/session/messages?limit=1", Api::conversation("demo", "s"))).await.json["sessionId"],
            "messageCount": 6,
            "userMessages": 2,
            "assistantMessages": 3,
            "totalInputTokens": input,
            "totalOutputTokens": output,
            "currentModel": "lobu-demo/echo-1",
        })
    );
    t.finish().await;
}

async fn a_new_conversation_reads_as_empty(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    let base = Api::conversation("demo", "never-written");
    let page = api.get(&format!("{base}/session/messages")).await;
    assert_eq!(
        page.json,
        json!({"messages": [], "nextCursor": null, "hasMore": false, "sessionId": "none"})
    );
    let stats = api.get(&format!("{base}/session/stats")).await;
    assert_eq!(stats.json["sessionId"], "none");
    assert_eq!(stats.json["messageCount"], 0);
    let list = api.get("/v1/agents/demo/conversations").await;
    assert_eq!(
        list.json,
        json!({"conversations": [], "nextCursor": null, "hasMore": false})
    );
    t.finish().await;
}

async fn a_delete_sent_again_with_its_key_is_the_same_reset_and_spares_later_turns(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    api.turn("demo", "retried", "before").await;
    let path = format!(
        "{}/session?idempotency_key=reset-1",
        Api::conversation("demo", "retried")
    );
    let first = api.delete(&path).await;
    assert_eq!(first.status, StatusCode::OK);
    let deleted = first.json["deleted"].as_u64().unwrap();
    assert!(deleted >= 1, "{first:?}");
    api.turn("demo", "retried", "after").await;
    // A client retrying the same reset gets the first one's answer; nothing is cleared.
    let again = api.delete(&path).await;
    assert_eq!(again.json, json!({ "deleted": deleted }));
    assert!(
        !api.history("demo", "retried").await.is_empty(),
        "the later turn survives"
    );
    let bad = format!(
        "{}/session?idempotency_key=%00",
        Api::conversation("demo", "retried")
    );
    assert_eq!(api.delete(&bad).await.status, StatusCode::BAD_REQUEST);
    assert!(!api.history("demo", "retried").await.is_empty());
    t.finish().await;
}

async fn deleting_a_session_twice_deletes_then_reports_zero(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    api.turn("demo", "gone", "remember this").await;
    api.turn("demo", "gone", "and this").await;
    api.turn("demo", "kept", "sibling").await;
    let path = format!("{}/session", Api::conversation("demo", "gone"));

    let first = api.delete(&path).await;
    assert_eq!(first.status, StatusCode::OK);
    let deleted = first.json["deleted"].as_u64().unwrap();
    assert!(deleted >= 1, "{first:?}");
    let second = api.delete(&path).await;
    assert_eq!(second.json, json!({"deleted": 0}));

    assert!(api.history("demo", "gone").await.is_empty());
    let list = api.get("/v1/agents/demo/conversations").await;
    let ids: Vec<&str> = list.json["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["conversationId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["kept"]);
    api.turn("demo", "gone", "fresh start").await;
    assert_eq!(
        api.lines("demo", "gone").await,
        [
            "user: fresh start",
            "assistant: You said: fresh start (turn 1)"
        ]
    );
    assert_eq!(api.lines("demo", "kept").await.len(), 2);
    t.finish().await;
}

async fn conversations_are_listed_with_title_turns_bytes_and_update_time(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    api.turn("support", "b thread", "Where is my   order?")
        .await;
    api.turn("support", "b thread", "thanks").await;
    api.turn(
        "support",
        "a:thread",
        "A question that is far too long to be a whole title",
    )
    .await;
    api.turn("other-agent", "c", "not listed under support")
        .await;

    let list = api.get("/v1/agents/support/conversations").await;
    assert_eq!(list.status, StatusCode::OK);
    let items = list.json["conversations"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["conversationId"], "a:thread");
    assert_eq!(
        items[0]["title"],
        "A question that is far too long to be a wh…"
    );
    assert_eq!(items[0]["turns"], 1);
    assert_eq!(items[1]["conversationId"], "b thread");
    assert_eq!(items[1]["title"], "Where is my order?");
    assert_eq!(items[1]["turns"], 2);
    for item in items {
        assert!(item["bytes"].as_u64().unwrap() > 100, "{item}");
        let updated = item["updatedAt"].as_str().unwrap();
        time::OffsetDateTime::parse(updated, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{updated}: {e}"));
    }

    let first = api.get("/v1/agents/support/conversations?limit=1").await;
    assert_eq!(first.json["hasMore"], true);
    assert_eq!(first.json["conversations"][0]["conversationId"], "a:thread");
    let cursor = first.json["nextCursor"].as_str().unwrap();
    let rest = api
        .get(&format!(
            "/v1/agents/support/conversations?limit=1&cursor={}",
            segment(cursor)
        ))
        .await;
    assert_eq!(rest.json["conversations"][0]["conversationId"], "b thread");
    t.finish().await;
}

async fn conversation_ids_with_colons_spaces_and_slashes_stay_distinct(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    let ids = [
        "telegram:42",
        "telegram_42",
        "a b",
        "a/b",
        "a%2Fb",
        "ü ✓ 😀",
        " padded ",
    ];
    for id in ids {
        api.turn("demo", id, &format!("I am {id}")).await;
    }
    for id in ids {
        assert_eq!(
            api.lines("demo", id).await,
            [
                format!("user: I am {id}"),
                format!("assistant: You said: I am {id} (turn 1)")
            ],
            "{id:?}"
        );
    }
    let list = api.get("/v1/agents/demo/conversations?limit=200").await;
    let mut listed: Vec<&str> = list.json["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["conversationId"].as_str().unwrap())
        .collect();
    listed.sort_unstable();
    let mut expected = ids.to_vec();
    expected.sort_unstable();
    assert_eq!(listed, expected);
    t.finish().await;
}
