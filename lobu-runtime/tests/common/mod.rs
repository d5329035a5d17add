//! Shared test harness: stores, runtimes with test settings, and waits.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

pub mod agent;
pub mod pg;
pub mod stall;
pub mod stores;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use lobu_core::{Backend, ConversationKey, OrgId, RunId, RunRecord};
use lobu_runtime::{NumberedEvent, RunEvent, RunEvents, Runtime, RuntimeBuilder};
use tokio::task::JoinHandle;

pub use agent::{ScriptAgent, assistant_texts, user_texts};
pub use stores::{Fixture, Store};

/// How long any "eventually" may take before a test fails (generous: 2 shared cores).
pub const PATIENCE: Duration = Duration::from_secs(90);

/// Await `fut`, failing the test with `what` if it takes longer than [`PATIENCE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Poll `check` until it returns `Some`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(what, async {
        loop {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Settings that keep tests quick without being tight: short polls and retry delays.
pub fn quick(builder: RuntimeBuilder) -> RuntimeBuilder {
    builder
        .concurrency(4)
        .poll_interval(Duration::from_millis(50))
        .retry_delay(Duration::from_millis(50))
        .status_poll_interval(Duration::from_millis(100))
        .turn_timeout(Duration::from_secs(60))
}

/// Settings for tests where claims must expire (a killed or stalled replica's):
/// a few seconds, so a loaded machine does not expire a live replica's by accident, and a
/// stop margin (one heartbeat, 750 ms) that a stalled replica's turn ends within.
pub fn expiring(builder: RuntimeBuilder) -> RuntimeBuilder {
    quick(builder)
        .claim_ttl(Duration::from_secs(3))
        .heartbeat_interval(Duration::from_millis(750))
}

/// Start the worker loop of `runtime` in a task.
pub fn start(runtime: &Runtime) -> JoinHandle<lobu_core::Result<()>> {
    let runtime = runtime.clone();
    tokio::spawn(async move { runtime.run().await })
}

/// Shut `runtime` down and check its loop ended cleanly.
pub async fn stop(runtime: &Runtime, worker: JoinHandle<lobu_core::Result<()>>) {
    within("shutdown", runtime.shutdown_within(Duration::from_secs(30))).await;
    within("the worker loop to end", worker)
        .await
        .expect("worker task")
        .expect("worker loop");
}

/// Wait until the run is over.
pub async fn finished(runtime: &Runtime, key: &ConversationKey, run: &RunId) -> RunRecord {
    within("the run to finish", runtime.wait(&key.org, run))
        .await
        .expect("wait")
}

/// Every event of a run, until its terminal one.
pub async fn events_of(runtime: &Runtime, org: &OrgId, run: &RunId) -> Vec<RunEvent> {
    let events = runtime.subscribe(org, run).await.expect("subscribe");
    collect(events).await
}

pub async fn collect(events: RunEvents) -> Vec<RunEvent> {
    let numbered = collect_numbered(events).await;
    numbered.into_iter().map(|n| n.event).collect()
}

/// Every event with its seq and attempt, until the terminal one.
pub async fn collect_numbered(events: RunEvents) -> Vec<NumberedEvent> {
    within("the run's events", events.collect::<Vec<_>>()).await
}

/// The head transcript in the store (empty if none).
pub async fn head(backend: &Backend, key: &ConversationKey) -> Bytes {
    backend
        .sessions
        .hydrate(key)
        .await
        .expect("hydrate")
        .map(|s| s.transcript)
        .unwrap_or_default()
}

pub fn key(conversation: &str) -> ConversationKey {
    ConversationKey::parse("acme", "bot", conversation).expect("key")
}

/// Submit `text` and return the run id.
pub async fn send(runtime: &Runtime, key: &ConversationKey, text: &str) -> RunId {
    runtime
        .submit(key.clone(), text, None)
        .await
        .expect("submit")
        .run
}

/// Stamp one test per store for each scenario: `scenarios!(store_fn; a, b)` makes
/// `a` and `b` calling `scenarios::a(Store::X)`.
#[macro_export]
macro_rules! for_store {
    ($store:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::scenarios::$name($store).await;
            }
        )*
    };
}
