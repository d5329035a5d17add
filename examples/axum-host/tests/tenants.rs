//! Bearer keys and tenant isolation over HTTP, on both stores: the org comes only from the
//! key, so two orgs using the same agent and conversation ids never meet.

mod common;

use common::{Api, Store, TestHost, segment};
use reqwest::{Method, StatusCode};
use serde_json::json;

const KEYS: &str = "alpha-key-0001=acme,beta-key-0002=globex";

on_both_stores!(
    requests_without_a_known_key_are_401_on_every_api_route,
    the_event_route_also_takes_the_key_as_a_query_parameter,
    two_orgs_with_the_same_ids_never_see_each_other,
    an_open_server_puts_every_request_in_the_default_org,
);

async fn requests_without_a_known_key_are_401_on_every_api_route(store: Store) {
    let t = TestHost::start_with_keys(store, Some(KEYS)).await;
    let alpha = t.api_with_key("alpha-key-0001");
    let run = alpha.submit("support", "c1", "hello").await;
    alpha.wait_run(&run).await;

    let base = Api::conversation("support", "c1");
    let routes = [
        (Method::POST, format!("{base}/messages")),
        (Method::GET, format!("/v1/runs/{run}")),
        (Method::GET, format!("/v1/runs/{run}/events")),
        (Method::GET, format!("{base}/session/messages")),
        (Method::GET, format!("{base}/session/stats")),
        (Method::DELETE, format!("{base}/session")),
        (Method::GET, "/v1/agents/support/conversations".to_owned()),
        (Method::DELETE, base.clone()),
        (
            Method::DELETE,
            "/v1/agents/support/conversations".to_owned(),
        ),
        (Method::DELETE, "/v1/data".to_owned()),
        // Auth comes first: a bad id without a key is still 401.
        (
            Method::GET,
            "/v1/agents/bad%20agent/conversations".to_owned(),
        ),
    ];
    let anonymous = t.api();
    let wrong_key = t.api_with_key("alpha-key-0001x");
    for (method, path) in &routes {
        for (who, api) in [("no key", &anonymous), ("unknown key", &wrong_key)] {
            let request = api
                .request(method.clone(), path)
                .json(&json!({"text": "x"}));
            let reply = api.send(request).await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{who}: {method} {path}"
            );
            assert!(reply.error().contains("API key"), "{}", reply.error());
            assert_eq!(reply.headers["www-authenticate"], "Bearer");
        }
        // Another scheme is not a bearer key, and the query key only works for events.
        let basic = anonymous
            .request(method.clone(), path)
            .header("authorization", "Basic YWxwaGEta2V5LTAwMDE6")
            .json(&json!({"text": "x"}));
        assert_eq!(anonymous.send(basic).await.status, StatusCode::UNAUTHORIZED);
        if !path.ends_with("/events") {
            let separator = if path.contains('?') { '&' } else { '?' };
            let query = anonymous
                .request(
                    method.clone(),
                    &format!("{path}{separator}key=alpha-key-0001"),
                )
                .json(&json!({"text": "x"}));
            let reply = anonymous.send(query).await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path}?key="
            );
        }
    }
    // Probes and the page need no key.
    assert_eq!(anonymous.get("/health/live").await.status, StatusCode::OK);
    assert_eq!(anonymous.get("/health/ready").await.status, StatusCode::OK);
    let page = anonymous.request(Method::GET, "/").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    // Nothing the refused requests carried reached the conversation.
    assert_eq!(alpha.lines("support", "c1").await.len(), 2);
    t.finish().await;
}

async fn the_event_route_also_takes_the_key_as_a_query_parameter(store: Store) {
    let t = TestHost::start_with_keys(store, Some(KEYS)).await;
    let alpha = t.api_with_key("alpha-key-0001");
    let run = alpha.submit("support", "c1", "stream me").await;
    alpha.wait_run(&run).await;
    let anonymous = t.api();
    let path = format!("/v1/runs/{}/events?key=alpha-key-0001", segment(&run));
    let response = anonymous.request(Method::GET, &path).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let events = common::sse_events(&response.text().await.unwrap());
    assert_eq!(events.last().unwrap().0, "completed");
    // Beta's key in the query does not open alpha's run.
    let path = format!("/v1/runs/{}/events?key=beta-key-0002", segment(&run));
    assert_eq!(anonymous.get(&path).await.status, StatusCode::NOT_FOUND);
    let path = format!("/v1/runs/{}/events?key=wrong", segment(&run));
    assert_eq!(anonymous.get(&path).await.status, StatusCode::UNAUTHORIZED);
    t.finish().await;
}

async fn two_orgs_with_the_same_ids_never_see_each_other(store: Store) {
    let t = TestHost::start_with_keys(store, Some(KEYS)).await;
    let alpha = t.api_with_key("alpha-key-0001");
    let beta = t.api_with_key("beta-key-0002");
    let alpha_run = alpha.submit("support", "telegram:1", "alpha secret").await;
    alpha.wait_run(&alpha_run).await;
    let beta_run = beta.submit("support", "telegram:1", "beta secret").await;
    beta.wait_run(&beta_run).await;
    beta.turn("support", "telegram:1", "beta again").await;

    assert_eq!(
        alpha.lines("support", "telegram:1").await,
        [
            "user: alpha secret",
            "assistant: You said: alpha secret (turn 1)"
        ]
    );
    assert_eq!(beta.lines("support", "telegram:1").await.len(), 4);
    let stats_path = format!(
        "{}/session/stats",
        Api::conversation("support", "telegram:1")
    );
    assert_eq!(alpha.get(&stats_path).await.json["userMessages"], 1);
    assert_eq!(beta.get(&stats_path).await.json["userMessages"], 2);

    // Runs: the other org's run is 404, exactly like a run that does not exist.
    for (api, foreign) in [(&alpha, &beta_run), (&beta, &alpha_run)] {
        for path in [
            format!("/v1/runs/{foreign}"),
            format!("/v1/runs/{foreign}/events"),
        ] {
            let reply = api.get(&path).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(reply.error(), format!("run {foreign} not found"));
        }
    }
    // The same idempotency key in two orgs makes two runs.
    let path = format!("{}/messages", Api::conversation("support", "idem"));
    let body = json!({"text": "same key", "idempotency_key": "shared-key"});
    let a = alpha.post_json(&path, &body).await;
    let b = beta.post_json(&path, &body).await;
    assert_ne!(a.json["run_id"], b.json["run_id"]);
    alpha.wait_run(a.json["run_id"].as_str().unwrap()).await;
    beta.wait_run(b.json["run_id"].as_str().unwrap()).await;

    let titles = |reply: common::Reply| -> Vec<String> {
        reply.json["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                format!(
                    "{}={}",
                    c["conversationId"].as_str().unwrap(),
                    c["title"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        titles(alpha.get("/v1/agents/support/conversations").await),
        ["idem=same key", "telegram:1=alpha secret"]
    );
    assert_eq!(
        titles(beta.get("/v1/agents/support/conversations").await),
        ["idem=same key", "telegram:1=beta secret"]
    );

    // Beta's reset only deletes beta's conversation.
    let reset = format!("{}/session", Api::conversation("support", "telegram:1"));
    assert!(beta.delete(&reset).await.json["deleted"].as_u64().unwrap() >= 1);
    assert_eq!(beta.delete(&reset).await.json, json!({"deleted": 0}));
    assert!(beta.lines("support", "telegram:1").await.is_empty());
    assert_eq!(alpha.lines("support", "telegram:1").await.len(), 2);
    t.finish().await;
}

async fn an_open_server_puts_every_request_in_the_default_org(store: Store) {
    let t = TestHost::start(store).await;
    let anonymous = t.api();
    let any_key = t.api_with_key("whatever");
    anonymous.turn("support", "c1", "from anyone").await;
    assert_eq!(any_key.lines("support", "c1").await.len(), 2);
    let run = any_key.submit("support", "c1", "second").await;
    let events = anonymous
        .get(&format!("/v1/runs/{}/events", segment(&run)))
        .await;
    assert_eq!(events.status, StatusCode::OK);
    let done = anonymous.wait_run(&run).await;
    assert_eq!(done["status"], "completed");
    t.finish().await;
}
