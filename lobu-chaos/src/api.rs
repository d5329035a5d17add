//! The client side of the host's HTTP API, as a client of a fleet behind a load balancer
//! would use it: each request goes to a random live replica, and a request that fails on the
//! way (the replica died, the store is away: 5xx) is sent again, to another replica, with
//! the same idempotency key.

use std::sync::Arc;
use std::time::Duration;

use lobu_core::transcript::DisplayMessage;
use rand::RngExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::fleet::Fleet;
use crate::plan::{AGENT, ORGS};

/// How long one request may keep being retried before the harness gives up.
const RETRY_FOR: Duration = Duration::from_secs(120);
/// One attempt's timeout (a reset waits for its run behind the conversation's others).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A run's status as `GET /v1/runs/{id}` reports it.
#[derive(Debug, Clone)]
pub(crate) struct RunStatus {
    pub(crate) status: String,
    pub(crate) attempts: u64,
    pub(crate) error: Option<String>,
}

/// The HTTP client of the whole fleet.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    client: reqwest::Client,
    fleet: Arc<Fleet>,
}

/// `s` percent-encoded as one path segment.
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn conversation_path(conversation: &str) -> String {
    format!(
        "/v1/agents/{}/conversations/{}",
        segment(AGENT),
        segment(conversation)
    )
}

impl Api {
    pub(crate) fn new(fleet: Arc<Fleet>) -> Result<Api, String> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(4)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Api { client, fleet })
    }

    /// Send until a replica answers something other than 5xx; `Err` on a 4xx other than 404
    /// (a harness mistake) and when no replica answered in [`RETRY_FOR`].
    async fn send(
        &self,
        org: usize,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), String> {
        let deadline = Instant::now() + RETRY_FOR;
        let mut last = String::from("no replica was serving");
        while Instant::now() < deadline {
            let bases = self.fleet.bases();
            if !bases.is_empty() {
                let base = &bases[rand::rng().random_range(0..bases.len())];
                let mut request = self
                    .client
                    .request(method.clone(), format!("{base}{path}"))
                    .bearer_auth(ORGS[org].1);
                if let Some(body) = body {
                    request = request.json(body);
                }
                match request.send().await {
                    Ok(response) if !response.status().is_server_error() => {
                        let status = response.status();
                        let json = response.json::<Value>().await.unwrap_or(Value::Null);
                        // 404 and 409 are answers the caller reads (an unseen run, a
                        // reset that ended failed); other 4xx are the harness's mistakes.
                        if status.is_client_error()
                            && status != StatusCode::NOT_FOUND
                            && status != StatusCode::CONFLICT
                        {
                            return Err(format!("{method} {path}: {status} {json}"));
                        }
                        return Ok((status, json));
                    }
                    Ok(response) => last = format!("{} from {base}", response.status()),
                    Err(error) => last = format!("{error} ({base})"),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "{method} {path}: gave up after {RETRY_FOR:?}: {last}"
        ))
    }

    /// Submit a message with its idempotency key; the run id once a replica accepted it.
    pub(crate) async fn submit(
        &self,
        org: usize,
        conversation: &str,
        text: &str,
        idempotency_key: &str,
    ) -> Result<String, String> {
        let path = format!("{}/messages", conversation_path(conversation));
        let body = json!({ "text": text, "idempotency_key": idempotency_key });
        let (status, json) = self.send(org, Method::POST, &path, Some(&body)).await?;
        match (status, json["run_id"].as_str()) {
            (StatusCode::ACCEPTED, Some(run)) => Ok(run.to_owned()),
            _ => Err(format!("POST {path}: {status} {json}")),
        }
    }

    /// Reset the conversation; sent again until a replica confirms it (a second reset right
    /// after the first changes nothing).
    pub(crate) async fn reset(
        &self,
        org: usize,
        conversation: &str,
        idempotency_key: &str,
    ) -> Result<Option<u64>, String> {
        // With a key, a reset sent again after a timeout waits for the first one instead of
        // queueing another that, arriving late, would clear the turns sent after it.
        let path = format!(
            "{}/session?idempotency_key={}",
            conversation_path(conversation),
            segment(idempotency_key)
        );
        let (status, json) = self.send(org, Method::DELETE, &path, None).await?;
        if status == StatusCode::CONFLICT {
            return Ok(None); // the reset ran and failed (its attempts were killed)
        }
        json["deleted"]
            .as_u64()
            .filter(|_| status == StatusCode::OK)
            .map(Some)
            .ok_or_else(|| format!("DELETE {path}: {status} {json}"))
    }

    /// A run's status; `None` when the org's key does not see it (404).
    pub(crate) async fn status(&self, org: usize, run: &str) -> Result<Option<RunStatus>, String> {
        let path = format!("/v1/runs/{}", segment(run));
        let (status, json) = self.send(org, Method::GET, &path, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(RunStatus {
            status: json["status"].as_str().unwrap_or("?").to_owned(),
            attempts: json["attempts"].as_u64().unwrap_or(0),
            error: json["error"].as_str().map(str::to_owned),
        }))
    }

    /// Every display message of the conversation, following the cursor.
    pub(crate) async fn messages(
        &self,
        org: usize,
        conversation: &str,
    ) -> Result<Vec<DisplayMessage>, String> {
        let mut all = Vec::new();
        let mut cursor = String::new();
        loop {
            let path = format!(
                "{}/session/messages?limit=200&cursor={}",
                conversation_path(conversation),
                segment(&cursor)
            );
            let (status, json) = self.send(org, Method::GET, &path, None).await?;
            if status != StatusCode::OK {
                return Err(format!("GET {path}: {status} {json}"));
            }
            let messages: Vec<DisplayMessage> = serde_json::from_value(json["messages"].clone())
                .map_err(|e| format!("GET {path}: messages unreadable: {e}"))?;
            all.extend(messages);
            match json["nextCursor"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => return Ok(all),
            }
        }
    }

    /// `GET /health/ready` of one replica: its status code, or `None` if it did not answer.
    pub(crate) async fn ready(&self, base: &str) -> Option<StatusCode> {
        let request = self
            .client
            .get(format!("{base}/health/ready"))
            .timeout(Duration::from_secs(8));
        request.send().await.ok().map(|r| r.status())
    }
}
