//! lobu-axum's routes over real HTTP: the ready-made bearer-key router, a host's own state and
//! auth, and the timeouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use lobu_axum::{Api, ApiError, ApiKeys, Caller};
use lobu_core::memory::MemoryBackend;
use lobu_core::{BoxError, OrgId};
use lobu_runtime::{Agent, Runtime, Turn};
use serde_json::{Value, json};

/// Echoes the text; `slow` holds the turn for two seconds first.
struct Echo;

#[async_trait::async_trait]
impl Agent for Echo {
    async fn run_turn(&self, turn: &mut Turn) -> Result<(), BoxError> {
        let text = turn.text().to_owned();
        if text == "slow" {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        turn.output(format!("echo: {text}"));
        Ok(())
    }
}

fn runtime() -> Runtime {
    let runtime = Runtime::builder(MemoryBackend::new().into_backend(), Arc::new(Echo))
        .build()
        .unwrap();
    tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.run().await }
    });
    runtime
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// POST a message as `headers`, answering the status and the JSON body.
async fn post(
    client: &reqwest::Client,
    url: String,
    headers: &[(&str, &str)],
    text: &str,
) -> (u16, Value) {
    let mut request = client.post(url).json(&json!({ "text": text }));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn get(client: &reqwest::Client, url: String, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn the_ready_made_router_takes_bearer_keys_and_query_keys_only_on_event_streams() {
    let keys = ApiKeys::parse("acme-key=acme,globex-key=globex").unwrap();
    let base = format!("http://{}", serve(Api::new(runtime()).router(keys)).await);
    let client = reqwest::Client::new();
    let messages = format!("{base}/v1/agents/bot/conversations/c1/messages");

    let (status, body) = post(&client, messages.clone(), &[], "hi").await;
    assert_eq!(status, 401, "{body}");
    let bearer = [("authorization", "Bearer acme-key")];
    let (status, body) = post(&client, messages, &bearer, "hi").await;
    assert_eq!(status, 202, "{body}");
    let run = body["run_id"].as_str().unwrap().to_owned();

    let (status, body) = get(&client, format!("{base}/v1/runs/{run}?wait=5"), &bearer).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("completed")));
    // Another org's key sees no such run.
    let other = [("authorization", "Bearer globex-key")];
    let (status, _) = get(&client, format!("{base}/v1/runs/{run}"), &other).await;
    assert_eq!(status, 404);
    // `?key=` is read on the event stream alone, never on other routes.
    let (status, _) = get(&client, format!("{base}/v1/runs/{run}?key=acme-key"), &[]).await;
    assert_eq!(status, 401);
    let (status, events) = get(
        &client,
        format!("{base}/v1/runs/{run}/events?key=acme-key"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let events = events.as_str().unwrap();
    assert!(
        events.contains("echo: hi") && events.contains("event: completed"),
        "{events}"
    );

    let (status, body) = get(&client, format!("{base}/nowhere"), &bearer).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("no route for /nowhere"))
    );
}

/// A host's state: the API and nothing else here.
#[derive(Clone)]
struct HostState {
    api: Api,
}

impl FromRef<HostState> for Api {
    fn from_ref(state: &HostState) -> Api {
        state.api.clone()
    }
}

/// The host's own auth: the org from `x-tenant` (set by its gateway).
struct Tenant(OrgId);

impl Caller for Tenant {
    fn org(&self) -> &OrgId {
        &self.0
    }
}

impl FromRequestParts<HostState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &HostState) -> Result<Self, ApiError> {
        let org = parts.headers.get("x-tenant").and_then(|v| v.to_str().ok());
        let org = org.and_then(|o| OrgId::new(o).ok());
        org.map(Tenant).ok_or_else(ApiError::unauthorized)
    }
}

#[tokio::test]
async fn a_hosts_own_auth_scopes_every_route_to_the_org_it_yields() {
    let api = Api::new(runtime());
    let app = api
        .routes::<HostState, Tenant>()
        .merge(api.probes())
        .fallback(lobu_axum::not_found)
        .with_state(HostState { api });
    let base = format!("http://{}", serve(app).await);
    let client = reqwest::Client::new();
    let conversation = format!("{base}/v1/agents/bot/conversations/shared-id");
    let acme = [("x-tenant", "acme")];
    let globex = [("x-tenant", "globex")];

    let (status, _) = post(&client, format!("{conversation}/messages"), &[], "hi").await;
    assert_eq!(status, 401);
    let (status, body) = post(
        &client,
        format!("{conversation}/messages"),
        &acme,
        "from acme",
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let run = body["run_id"].as_str().unwrap();
    let (status, _) = get(&client, format!("{base}/v1/runs/{run}?wait=5"), &acme).await;
    assert_eq!(status, 200);

    let (_, page) = get(&client, format!("{conversation}/session/messages"), &acme).await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1, "{page}");
    // The same ids under another org are another, empty conversation.
    let (_, page) = get(&client, format!("{conversation}/session/messages"), &globex).await;
    assert_eq!(page["messages"], json!([]), "{page}");
    let (_, list) = get(
        &client,
        format!("{base}/v1/agents/bot/conversations"),
        &globex,
    )
    .await;
    assert_eq!(list["conversations"], json!([]), "{list}");
    let (status, _) = get(&client, format!("{base}/v1/runs/{run}"), &globex).await;
    assert_eq!(status, 404);

    let (status, body) = get(&client, format!("{base}/health/ready"), &[]).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    let response = client
        .put(format!("{conversation}/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
}

#[tokio::test]
async fn a_reset_past_its_timeout_answers_503_and_still_runs() {
    let api = Api::new(runtime()).reset_timeout(Duration::from_millis(300));
    let base = format!("http://{}", serve(api.router(ApiKeys::Open)).await);
    let client = reqwest::Client::new();
    let conversation = format!("{base}/v1/agents/bot/conversations/c1");

    let (status, _) = post(&client, format!("{conversation}/messages"), &[], "first").await;
    assert_eq!(status, 202);
    let (status, slow) = post(&client, format!("{conversation}/messages"), &[], "slow").await;
    assert_eq!(status, 202);
    // The reset waits behind the slow turn, longer than its timeout.
    let reset = format!("{conversation}/session?idempotency_key=reset-1");
    let response = client.delete(&reset).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("will still run"),
        "{body}"
    );

    let run = slow["run_id"].as_str().unwrap();
    get(&client, format!("{base}/v1/runs/{run}?wait=10"), &[]).await;
    // The same request again waits for the same reset, which ran after the slow turn.
    let mut deleted = None;
    for _ in 0..50 {
        let response = client.delete(&reset).send().await.unwrap();
        if response.status().as_u16() == 200 {
            deleted = Some(response.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(deleted, Some(json!({ "deleted": 2 })));
    let (_, page) = get(&client, format!("{conversation}/session/messages"), &[]).await;
    assert_eq!(page["messages"], json!([]), "{page}");
}

#[tokio::test]
async fn a_traceparent_header_travels_with_the_run_and_a_malformed_one_is_ignored() {
    let runtime = runtime();
    let backend = runtime.backend().clone();
    let base = format!(
        "http://{}",
        serve(Api::new(runtime).router(ApiKeys::Open)).await
    );
    let client = reqwest::Client::new();
    let messages = format!("{base}/v1/agents/bot/conversations/traced/messages");
    let org = OrgId::new(lobu_axum::OPEN_ORG).unwrap();
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    for (header, carried) in [(parent, Some(parent)), ("00-not-a-trace", None)] {
        let (status, body) =
            post(&client, messages.clone(), &[("traceparent", header)], "hi").await;
        assert_eq!(status, 202, "{body}");
        let run = lobu_core::RunId::new(body["run_id"].as_str().unwrap()).unwrap();
        let stored = backend.queue.status(&org, &run).await.unwrap().unwrap();
        let trace = &stored.payload[lobu_core::TRACE_PAYLOAD_KEY]["traceparent"];
        assert_eq!(trace.as_str(), carried, "{}", stored.payload);
    }
}
