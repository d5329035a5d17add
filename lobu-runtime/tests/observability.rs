//! Metrics and spans of real turns on the memory backend, and the trace context a run
//! carries from its submit on one replica to its turn on another.

mod observability {
    pub(crate) mod capture;
}

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lobu_core::memory::MemoryBackend;
use lobu_core::{Backend, BoxError, ConversationKey, ErrorKind, TRACE_PAYLOAD_KEY, TraceParent};
use lobu_runtime::{Agent, OrgLabel, Runtime, RuntimeBuilder, SubmitOptions, Turn};
use metrics::Unit;
use observability::capture::capture;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const PATIENCE: Duration = Duration::from_secs(60);

/// Answers every message, streaming it; `/fail-once` fails its first attempt.
#[derive(Debug, Default)]
struct Echo {
    payloads: Mutex<Vec<serde_json::Value>>,
}

#[async_trait::async_trait]
impl Agent for Echo {
    async fn run_turn(&self, turn: &mut Turn) -> Result<(), BoxError> {
        self.payloads.lock().unwrap().push(turn.payload().clone());
        let text = turn.text().to_owned();
        if text == "/fail-once" && turn.attempt() == 1 {
            return Err("the first attempt fails".into());
        }
        turn.output("You said: ");
        turn.output(text);
        Ok(())
    }
}

fn backend() -> Backend {
    Backend::from_shared(Arc::new(MemoryBackend::new()))
}

fn quick(backend: Backend, agent: Arc<Echo>) -> RuntimeBuilder {
    Runtime::builder(backend, agent)
        .poll_interval(Duration::from_millis(50))
        .retry_delay(Duration::from_millis(50))
        .status_poll_interval(Duration::from_millis(100))
}

/// Run `texts` as turns of `key` on a runtime built by `builder`, each to its end.
async fn run_turns(builder: RuntimeBuilder, key: &ConversationKey, texts: &[&str]) {
    let runtime = builder.build().expect("runtime");
    let worker = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.run().await }
    });
    for text in texts {
        let run = runtime
            .submit(key.clone(), *text, None)
            .await
            .expect("submit")
            .run;
        let record = tokio::time::timeout(PATIENCE, runtime.wait(&key.org, &run))
            .await
            .expect("the turn in time")
            .expect("wait");
        assert_eq!(record.status.as_str(), "completed", "{text}");
    }
    runtime.shutdown().await;
    worker.await.expect("worker task").expect("worker loop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_submit_on_one_replica_is_the_parent_of_the_turn_on_another() {
    let capture = capture();
    let shared = backend();
    let agent = Arc::new(Echo::default());
    // The gateway replica runs no worker loop: the other replica claims the run.
    let gateway = quick(shared.clone(), agent.clone()).build().unwrap();
    let worker = quick(shared.clone(), agent.clone()).build().unwrap();
    let worker_loop = tokio::spawn({
        let worker = worker.clone();
        async move { worker.run().await }
    });
    let key = ConversationKey::parse("acme", "tracer", "web:1").unwrap();
    let parent = TraceParent::parse(TRACEPARENT).unwrap();
    let payload = serde_json::json!({"text": "hello", "channel": "web"});
    let options = SubmitOptions::new().trace_parent(parent);
    let run = gateway
        .submit_with(key.clone(), payload.clone(), options)
        .await
        .unwrap()
        .run;
    // The store carries the context (no schema change: one reserved payload field) ...
    let stored = shared.queue.status(&key.org, &run).await.unwrap().unwrap();
    assert_eq!(
        stored.payload[TRACE_PAYLOAD_KEY]["traceparent"],
        TRACEPARENT
    );
    let record = tokio::time::timeout(PATIENCE, gateway.wait(&key.org, &run))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status.as_str(), "completed");
    // ... that neither the agent nor a caller of the runtime sees.
    assert_eq!(
        agent.payloads.lock().unwrap().as_slice(),
        std::slice::from_ref(&payload)
    );
    assert_eq!(record.payload, payload);
    assert_eq!(
        gateway.status(&key.org, &run).await.unwrap().payload,
        payload
    );

    let run_id = run.to_string();
    let turns = capture.spans("lobu.run", "run", &run_id);
    assert_eq!(turns.len(), 1, "one attempt, one span: {turns:?}");
    let fields = &turns[0].fields;
    let expected = [
        ("org", "acme"),
        ("agent", "tracer"),
        ("conversation", "web:1"),
        ("gen_ai.conversation.id", &key.to_string()),
        ("gen_ai.operation.name", "invoke_agent"),
        ("gen_ai.agent.name", "tracer"),
        ("attempt", "1"),
        ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("parent_span_id", "00f067aa0ba902b7"),
        ("traceparent", TRACEPARENT),
    ];
    for (name, value) in expected {
        assert_eq!(
            fields.get(name).map(String::as_str),
            Some(value),
            "{name}: {fields:?}"
        );
    }
    let submits = capture.spans("lobu.submit", "run", &run_id);
    assert_eq!(submits.len(), 1);
    assert_eq!(
        submits[0].fields["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(submits[0].fields["conversation"], "web:1");
    // The turn started from no transcript (no read); a history read hydrates.
    let page = gateway.messages(&key, None, None).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    let conversation_id = key.to_string();
    let hydrates = capture.spans("lobu.hydrate", "gen_ai.conversation.id", &conversation_id);
    assert_eq!(hydrates.len(), 1, "{hydrates:?}");
    assert_eq!(
        capture
            .spans("lobu.messages", "gen_ai.conversation.id", &conversation_id)
            .len(),
        1
    );
    let persists = capture.spans("lobu.persist", "run", &run_id);
    assert_eq!(persists.len(), 1);
    assert_eq!(persists[0].fields["agent"], "tracer");

    worker.shutdown().await;
    worker_loop.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_traceparent_or_a_reserved_payload_field_is_refused_and_queues_nothing() {
    let shared = backend();
    let runtime = quick(shared.clone(), Arc::default()).build().unwrap();
    let error = TraceParent::parse("00-not-a-trace-01").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    let zeros = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
    assert_eq!(
        TraceParent::parse(zeros).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );

    let key = ConversationKey::parse("acme", "tracer", "web:2").unwrap();
    let smuggled =
        serde_json::json!({"text": "hi", TRACE_PAYLOAD_KEY: {"traceparent": TRACEPARENT}});
    let error = runtime
        .submit_with(key.clone(), smuggled, SubmitOptions::new())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(
        error.message().contains(TRACE_PAYLOAD_KEY),
        "{}",
        error.message()
    );
    assert_eq!(runtime.queue_depth().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_turns_record_latency_histograms_and_outcomes_labelled_by_agent_only() {
    let capture = capture();
    let key = ConversationKey::parse("acme", "metered", "c1").unwrap();
    let builder = quick(backend(), Arc::default());
    run_turns(builder, &key, &["hello", "/fail-once", "again"]).await;

    let series = capture.series("agent", "metered");
    let find = |kind: &str, name: &str, extra: &[(&str, &str)]| {
        series
            .iter()
            .find(|(s, _)| {
                s.kind == kind
                    && s.name == name
                    && extra
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("no {kind} {name} {extra:?} in {series:#?}"))
    };
    assert!(
        series.keys().all(|s| !s.labels.contains_key("org")),
        "no org label by default"
    );
    let turn = [("kind", "turn")];
    assert_eq!(find("counter", "lobu_runs_submitted_total", &turn).count, 3);
    let completed = [("kind", "turn"), ("outcome", "completed")];
    assert_eq!(find("counter", "lobu_turns_total", &completed).count, 3);
    let retried = [("kind", "turn"), ("outcome", "retried")];
    assert_eq!(find("counter", "lobu_turns_total", &retried).count, 1);
    let turn_seconds = find("histogram", "lobu_turn_seconds", &completed);
    assert_eq!(turn_seconds.samples.len(), 3);
    assert_eq!(
        turn_seconds.unit,
        Some(Unit::Seconds),
        "described with its unit"
    );
    // Queue wait: first attempts only (a retry's wait is its backoff).
    assert_eq!(
        find("histogram", "lobu_queue_wait_seconds", &turn)
            .samples
            .len(),
        3
    );
    // First output: every attempt that streamed (the failed one did not).
    assert_eq!(
        find("histogram", "lobu_first_output_seconds", &[])
            .samples
            .len(),
        3
    );
    assert_eq!(
        find("histogram", "lobu_persist_seconds", &[]).samples.len(),
        3
    );
    assert!(find("histogram", "lobu_hydrate_seconds", &[]).samples.len() >= 3);
    assert!(find("counter", "lobu_persist_bytes_total", &[]).count > 0);
    for samples in series.values().map(|r| &r.samples) {
        assert!(
            samples.iter().all(|s| s.is_finite() && *s >= 0.0),
            "{samples:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_org_label_appears_when_the_setting_turns_it_on() {
    let capture = capture();
    let key = ConversationKey::parse("globex", "org-metered", "c1").unwrap();
    let builder = quick(backend(), Arc::default()).metrics_org_label(OrgLabel::Every);
    run_turns(builder, &key, &["hello"]).await;

    let series = capture.series("agent", "org-metered");
    let turns = series
        .iter()
        .find(|(s, _)| s.name == "lobu_turns_total")
        .map(|(s, _)| s.clone())
        .expect("lobu_turns_total");
    assert_eq!(turns.labels.get("org").map(String::as_str), Some("globex"));
    assert!(
        series
            .keys()
            .all(|s| s.labels.get("org").map(String::as_str) == Some("globex"))
    );
}
