//! Client mistakes get 400 (413 for sizes) with `{"error"}` naming the problem and change
//! nothing; unknown things are 404; probes and the page answer. On both stores. The
//! `hostile_*` tests add every other class of bad input, comparing the store's bytes.

mod common;

use common::dump::{settled_store_bytes, store_bytes};
use common::{Api, Store, TestHost, segment};
use lobu_core::testkit::hostile::assert_unchanged;
use reqwest::{Method, StatusCode};
use serde_json::json;

on_both_stores!(
    bad_ids_are_400_on_every_route,
    bad_bodies_are_refused_and_queue_nothing,
    bad_limits_and_cursors_are_400,
    unknown_runs_and_routes_are_404,
    health_probes_and_the_chat_page_answer,
);

async fn bad_ids_are_400_on_every_route(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    let before = settled_store_bytes(&t).await;
    let long_conversation = "c".repeat(513);
    let cases = [
        ("a b", "c1", "agent id may only contain [A-Za-z0-9_-]"),
        ("a:b", "c1", "agent id may only contain [A-Za-z0-9_-]"),
        (
            &*"a".repeat(65),
            "c1",
            "agent id must be 1 to 64 characters",
        ),
        (
            "demo",
            "line\nbreak",
            "conversation id must not contain control characters",
        ),
        (
            "demo",
            "nul\0",
            "conversation id must not contain control characters",
        ),
        (
            "demo",
            &long_conversation,
            "conversation id is 513 bytes; the limit is 512",
        ),
    ];
    for (agent, conversation, expected) in cases {
        let base = Api::conversation(agent, conversation);
        let replies = [
            api.post_json(&format!("{base}/messages"), &json!({"text": "hi"}))
                .await,
            api.get(&format!("{base}/session/messages")).await,
            api.get(&format!("{base}/session/stats")).await,
            api.delete(&format!("{base}/session")).await,
        ];
        for reply in replies {
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{agent:?}/{conversation:?}"
            );
            assert!(reply.error().contains(expected), "{}", reply.error());
        }
    }
    let reply = api.get("/v1/agents/no%20spaces/conversations").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    // Percent-encoded bytes that are not UTF-8.
    let reply = api
        .get("/v1/agents/demo/conversations/%FF%FE/session/stats")
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.error().starts_with("bad path"), "{}", reply.error());
    let reply = api.get(&format!("/v1/runs/{}", "r".repeat(256))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.error().contains("run id is 256 bytes"),
        "{}",
        reply.error()
    );
    let reply = api.get("/v1/runs/a%01b/events").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_no_conversations(&api).await;
    assert_unchanged(&before, &store_bytes(&t.data).await, "bad ids");
    t.finish().await;
}

async fn bad_bodies_are_refused_and_queue_nothing(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    let path = format!("{}/messages", Api::conversation("demo", "c1"));
    let raw = |body: Vec<u8>| {
        api.request(Method::POST, &path)
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "bad JSON body"),
        (b"not json".to_vec(), "bad JSON body"),
        (b"{\"text\": \"unterminated".to_vec(), "bad JSON body"),
        (b"[\"hi\"]".to_vec(), "bad JSON body"),
        (b"{}".to_vec(), "a message needs text or images"),
        (
            b"{\"text\": null}".to_vec(),
            "a message needs text or images",
        ),
        (
            b"{\"images\": []}".to_vec(),
            "a message needs text or images",
        ),
        (
            br#"{"images": [{"data": "AAAA", "mimeType": "text/html"}]}"#.to_vec(),
            "image 1: \"mimeType\" must be",
        ),
        (
            b"{\"text\": \"hi\", \"extra\": 1}".to_vec(),
            "unknown field `extra`",
        ),
        (b"{\"text\": \"\"}".to_vec(), "text must not be empty"),
        (
            b"{\"text\": \" \\n\\t \"}".to_vec(),
            "text must not be empty",
        ),
        (b"{\"text\": \"\xff\"}".to_vec(), "bad JSON body"),
        (
            json!({"text": "hi", "idempotency_key": ""})
                .to_string()
                .into_bytes(),
            "idempotency key must not be empty",
        ),
        (
            json!({"text": "hi", "idempotency_key": "k".repeat(256)})
                .to_string()
                .into_bytes(),
            "idempotency key is 256 bytes",
        ),
        (
            json!({"text": "hi", "idempotency_key": 7})
                .to_string()
                .into_bytes(),
            "invalid type",
        ),
    ];
    for (body, expected) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let reply = api.send(raw(body)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{shown}: {reply:?}");
        assert!(
            reply.error().contains(expected),
            "{shown}: {}",
            reply.error()
        );
    }
    // Sizes over a limit are 413 (the hostile_http_bodies tests send far larger ones).
    let too_large = [
        (
            json!({"text": "x".repeat(64 * 1024 + 1)}),
            "text is 65537 bytes; the limit is 65536",
        ),
        (
            json!({"text": "x".repeat(lobu_axum::MAX_MESSAGE_BODY_BYTES)}),
            "bad body",
        ),
    ];
    for (body, expected) in too_large {
        let reply = api.send(raw(body.to_string().into_bytes())).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{reply:?}");
        assert!(reply.error().contains(expected), "{}", reply.error());
    }
    // A good message with a JSON content type works, so the refusals above were about content.
    api.turn("demo", "c1", "fine").await;
    assert_eq!(
        api.lines("demo", "c1").await.len(),
        2,
        "nothing else was queued"
    );
    t.finish().await;
}

async fn bad_limits_and_cursors_are_400(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    let messages = format!("{}/session/messages", Api::conversation("demo", "c1"));
    for base in [messages.as_str(), "/v1/agents/demo/conversations"] {
        for query in [
            "limit=0",
            "limit=201",
            "limit=-3",
            "limit=ten",
            "limit=1&limit=2",
        ] {
            let reply = api.get(&format!("{base}?{query}")).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{base}?{query}");
            assert!(!reply.error().is_empty());
        }
        let reply = api.get(&format!("{base}?limit=0")).await;
        assert!(reply.error().contains("from 1 to 200"), "{}", reply.error());
        let reply = api
            .get(&format!("{base}?cursor={}", segment(&"c".repeat(513))))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert!(
            reply.error().contains("cursor is 513 bytes"),
            "{}",
            reply.error()
        );
        let reply = api.get(&format!("{base}?cursor=a%00b")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        let reply = api.get(&format!("{base}?limit=200&cursor=")).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    t.finish().await;
}

async fn unknown_runs_and_routes_are_404(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    let unknown = "01900000-0000-7000-8000-000000000000";
    for path in [
        format!("/v1/runs/{unknown}"),
        format!("/v1/runs/{unknown}/events"),
    ] {
        let reply = api.get(&path).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.error(), format!("run {unknown} not found"));
    }
    let reply = api.get("/v2/nothing").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply.error().contains("/v2/nothing"));
    let reply = api
        .send(api.request(
            Method::PUT,
            &format!("{}/session", Api::conversation("demo", "c")),
        ))
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(!reply.error().is_empty());
    t.finish().await;
}

async fn health_probes_and_the_chat_page_answer(store: Store) {
    let t = TestHost::start(store).await;
    let api = t.api();
    let live = api.get("/health/live").await;
    assert_eq!(
        (live.status, live.json),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let ready = api.get("/health/ready").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json["status"], "ready");
    let page = api.request(Method::GET, "/").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("/page/app.js"), "the page loads its script");
    let script = api
        .request(Method::GET, "/page/app.js")
        .send()
        .await
        .unwrap();
    assert!(
        script.text().await.unwrap().contains("new EventSource("),
        "the page streams answers"
    );
    t.finish().await;
}

async fn assert_no_conversations(api: &Api) {
    let list = api.get("/v1/agents/demo/conversations").await;
    assert_eq!(
        list.json["conversations"],
        json!([]),
        "bad requests changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_the_database_is_gone_and_liveness_does_not() {
    let t = TestHost::start(Store::Pg).await;
    let api = t.api();
    assert_eq!(api.get("/health/ready").await.status, StatusCode::OK);
    let common::Data::Pg(db) = t.data else {
        unreachable!("a PostgreSQL host")
    };
    db.drop().await;
    let ready = api.get("/health/ready").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{ready:?}");
    assert_eq!(ready.json["status"], "unavailable");
    assert!(!ready.json["error"].as_str().unwrap().is_empty());
    assert_eq!(api.get("/health/live").await.status, StatusCode::OK);
    // A store outage is the server's problem: a 5xx without store details, never a 4xx.
    let reply = api.say("demo", "c1", "anyone there?").await;
    assert!(reply.status.is_server_error(), "{reply:?}");
    assert!(!reply.error().contains("lobu_host_"), "{reply:?}");
    t.host.stop().await;
}
