//! Test support: a real server on a free port (file store in a temp dir, or PostgreSQL in a
//! fresh database), an HTTP client speaking to it, and SSE parsing.
#![allow(dead_code, unreachable_pub)]

pub mod dump;
pub mod pg;
pub mod raw;
pub mod replica;

use std::time::Duration;

use example_axum_host::{ApiKeys, Config, Server, StoreChoice};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use pg::TestDb;

/// The longest any "eventually" wait may take (generous: a loaded 2-core machine).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Which store a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    File,
    Pg,
}

/// Where a server's data lives; kept so a second server can open the same store.
#[derive(Debug)]
pub enum Data {
    File(tempfile::TempDir),
    Pg(TestDb),
}

impl Data {
    pub async fn new(store: Store) -> Data {
        match store {
            Store::File => Data::File(tempfile::tempdir().expect("temp dir")),
            Store::Pg => Data::Pg(TestDb::create().await),
        }
    }

    pub fn choice(&self) -> StoreChoice {
        match self {
            Data::File(dir) => StoreChoice::File {
                dir: dir.path().join("lobu-data"),
            },
            Data::Pg(db) => StoreChoice::Snapshot {
                database_url: db.url.clone(),
            },
        }
    }

    /// Remove the PostgreSQL database (a failed test keeps it, for inspection).
    pub async fn cleanup(self) {
        if let Data::Pg(db) = self {
            db.drop().await;
        }
    }
}

/// A test configuration: free port, quick retries, fast word streaming.
pub fn test_config(data: &Data, keys: Option<&str>) -> Config {
    let mut config = Config::defaults();
    config.addr = "127.0.0.1:0".parse().unwrap();
    config.store = data.choice();
    config.api_keys = keys.map_or(ApiKeys::Open, |k| ApiKeys::parse(k).unwrap());
    config.settings.retry_delay = Duration::from_millis(50);
    config.settings.shutdown_grace = Duration::from_secs(20);
    config.settings.status_poll_interval = Duration::from_millis(200);
    config.demo_word_delay = Duration::from_millis(1);
    config
}

/// A server on its own fresh store, for one test.
#[derive(Debug)]
pub struct TestHost {
    pub host: Host,
    pub data: Data,
}

impl TestHost {
    pub async fn start(store: Store) -> TestHost {
        Self::start_with_keys(store, None).await
    }

    pub async fn start_with_keys(store: Store, keys: Option<&str>) -> TestHost {
        let data = Data::new(store).await;
        let host = Host::start(test_config(&data, keys)).await;
        TestHost { host, data }
    }

    pub fn api(&self) -> Api {
        self.host.api()
    }

    pub fn api_with_key(&self, key: &str) -> Api {
        self.host.api_with_key(key)
    }

    /// Stop the server gracefully and remove its database.
    pub async fn finish(self) {
        self.host.stop().await;
        self.data.cleanup().await;
    }
}

/// A server running in this process.
#[derive(Debug)]
pub struct Host {
    pub base: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), example_axum_host::Error>>>,
}

impl Host {
    pub async fn start(config: Config) -> Host {
        let server = Server::bind(config).await.expect("server starts");
        let base = format!("http://{}", server.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Host {
            base,
            client: client(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Graceful shutdown; panics if the server reports an error.
    pub async fn stop(mut self) {
        self.stop.take().expect("running").send(()).ok();
        let task = self.task.take().expect("running");
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("server stops within the patience")
            .expect("server task")
            .expect("server stops cleanly");
    }

    pub fn api(&self) -> Api {
        Api {
            base: self.base.clone(),
            client: self.client.clone(),
            key: None,
        }
    }

    pub fn api_with_key(&self, key: &str) -> Api {
        Api {
            key: Some(key.to_owned()),
            ..self.api()
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .expect("HTTP client")
}

/// `s` percent-encoded as one path segment (everything but unreserved characters).
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A client of one server, optionally with a bearer key.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
    pub key: Option<String>,
}

/// A response's status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub json: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub fn error(&self) -> &str {
        self.json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {self:?}"))
    }
}

impl Api {
    pub fn conversation(agent: &str, conversation: &str) -> String {
        format!(
            "/v1/agents/{}/conversations/{}",
            segment(agent),
            segment(conversation)
        )
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    pub async fn send(&self, request: RequestBuilder) -> Reply {
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body read");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            json,
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(self.request(Method::DELETE, path)).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// Post a message; returns the whole reply.
    pub async fn say(&self, agent: &str, conversation: &str, text: &str) -> Reply {
        let path = format!("{}/messages", Api::conversation(agent, conversation));
        self.post_json(&path, &serde_json::json!({ "text": text }))
            .await
    }

    /// Post a message and return its run id (asserting 202).
    pub async fn submit(&self, agent: &str, conversation: &str, text: &str) -> String {
        let reply = self.say(agent, conversation, text).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
        reply.json["run_id"].as_str().expect("run_id").to_owned()
    }

    /// Poll the run until it is over; returns its final JSON.
    pub async fn wait_run(&self, run: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let reply = self.get(&format!("/v1/runs/{}", segment(run))).await;
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            let status = reply.json["status"].as_str().unwrap().to_owned();
            if !matches!(status.as_str(), "pending" | "running") {
                return reply.json;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {run} never ended: {reply:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Post a message and wait for its run to complete.
    pub async fn turn(&self, agent: &str, conversation: &str, text: &str) -> Value {
        let run = self.submit(agent, conversation, text).await;
        let done = self.wait_run(&run).await;
        assert_eq!(done["status"], "completed", "{done}");
        done
    }

    /// Every display message of a conversation, following the cursor.
    pub async fn history(&self, agent: &str, conversation: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor = String::new();
        loop {
            let path = format!(
                "{}/session/messages?limit=200&cursor={}",
                Api::conversation(agent, conversation),
                segment(&cursor)
            );
            let reply = self.get(&path).await;
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            all.extend(reply.json["messages"].as_array().unwrap().iter().cloned());
            match reply.json["nextCursor"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => return all,
            }
        }
    }

    /// The texts of a conversation's user and assistant messages, as `role: text`.
    pub async fn lines(&self, agent: &str, conversation: &str) -> Vec<String> {
        self.history(agent, conversation)
            .await
            .iter()
            .filter(|m| m["type"] == "message" && !m["isVerbose"].as_bool().unwrap())
            .map(|m| {
                format!(
                    "{}: {}",
                    m["role"].as_str().unwrap(),
                    text_of(&m["content"])
                )
            })
            .collect()
    }
}

/// The text blocks of a message's content, joined.
pub fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .map(|b| b["text"].as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(""),
        other => other.to_string(),
    }
}

/// Parse an SSE body into `(event name, JSON data)` pairs.
pub fn sse_events(body: &str) -> Vec<(String, Value)> {
    sse_events_with_ids(body)
        .into_iter()
        .map(|(_, name, data)| (name, data))
        .collect()
}

/// Parse an SSE body into `(id, event name, JSON data)`; every event must carry an id.
pub fn sse_events_with_ids(body: &str) -> Vec<(u64, String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let (mut id, mut name) = (None, None);
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = Some(n.trim().to_owned());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.strip_prefix(' ').unwrap_or(d));
                } else if let Some(i) = line.strip_prefix("id:") {
                    id = Some(i.trim().parse::<u64>().expect("an SSE id is a number"));
                }
            }
            let name = name?;
            let id = id.unwrap_or_else(|| panic!("event {name} without an id"));
            Some((
                id,
                name,
                serde_json::from_str(&data).expect("event data is JSON"),
            ))
        })
        .collect()
}

/// Run `scenario` once on the file store and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Store::File).await;
                }
            )*
        }
        mod pg {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Store::Pg).await;
                }
            )*
        }
    };
}
