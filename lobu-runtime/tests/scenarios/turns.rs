//! Turns that succeed: one end to end, many in order, many conversations at once.

use lobu_core::transcript;
use lobu_core::{RunKind, RunStatus};
use lobu_runtime::RunEvent;

use crate::common::*;

pub async fn one_turn_end_to_end(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let worker = start(&rt);
    let k = key("telegram:42");

    let submitted = rt.submit(k.clone(), "hello there", None).await.unwrap();
    assert!(submitted.created);
    let events = events_of(&rt, &k.org, &submitted.run).await;

    assert!(
        matches!(&events[0], RunEvent::Accepted { run, key, kind: RunKind::Turn }
            if *run == submitted.run && *key == k),
        "{events:?}"
    );
    assert_eq!(events[1], RunEvent::Started { attempt: 1 });
    let output: String = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Output { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(output, "You said: hello there (turn 1)");
    let entries: Vec<&serde_json::Value> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Entry { entry, .. } => Some(entry),
            _ => None,
        })
        .collect();
    assert_eq!(events.last(), Some(&RunEvent::Completed { output: None }));

    let record = rt.status(&k.org, &submitted.run).await.unwrap();
    assert_eq!(record.status, RunStatus::Completed);
    assert_eq!(record.attempts, 1);

    let bytes = head(&fx.backend, &k).await;
    assert_eq!(user_texts(&bytes), ["hello there"]);
    assert_eq!(assistant_texts(&bytes), ["You said: hello there (turn 1)"]);
    // The streamed entries are exactly the entries that reached the transcript.
    let parsed = transcript::parse(&bytes);
    assert_eq!(parsed.skipped_lines(), 0);
    let stored: Vec<serde_json::Value> = parsed
        .entries()
        .iter()
        .map(|e| serde_json::Value::Object(e.fields().clone()))
        .collect();
    assert_eq!(entries.into_iter().cloned().collect::<Vec<_>>(), stored);

    let page = rt.messages(&k, None, None).await.unwrap();
    assert_eq!(page.messages.len(), 2);
    assert!(!page.has_more);
    let stats = rt.stats(&k).await.unwrap();
    assert_eq!((stats.user_messages, stats.assistant_messages), (1, 1));
    assert_eq!(
        stats.total_output_tokens,
        "You said: hello there (turn 1)".len() as u64
    );
    let list = rt.list(&k.org, &k.agent, None, 10).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].conversation, k.conversation);
    assert_eq!(list.items[0].turns, 1);
    assert_eq!(list.items[0].bytes, bytes.len() as u64);
    assert_eq!(list.items[0].title.as_deref(), Some("hello there"));

    let turns = agent.turns();
    assert_eq!(turns.len(), 1);
    assert!(turns[0].scratch_was_empty);
    assert!(turns[0].scratch.starts_with(fx.scratch_root()));
    // Removed after the run, in the background (the agent asked for it).
    let scratch = turns[0].scratch.clone();
    eventually("the scratch dir to be removed", || async {
        (!scratch.exists()).then_some(())
    })
    .await;

    // The run may be seen completed (the queue says so) a moment before this worker
    // finishes its bookkeeping.
    eventually("the run to leave the worker", || async {
        (rt.metrics().in_flight == 0).then_some(())
    })
    .await;
    let m = rt.metrics();
    assert_eq!(m.runs_claimed, 1);
    assert_eq!(m.runs_completed, 1);
    assert_eq!(m.persist_writes, 1);
    assert_eq!(m.persist_bytes, bytes.len() as u64);
    assert_eq!(m.attempts_failed, 0);
    stop(&rt, worker).await;
}

pub async fn ten_turns_in_order_on_one_conversation(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    // One turn at a time: with more, the next turn may be claimed in the instant between
    // a commit and its transcript entering the cache, and read the head once from the store
    // (correct, one round trip more), which the counts below would see on a loaded machine.
    let rt = fx.builder(&agent).concurrency(1).build().unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let texts: Vec<String> = (0..10).map(|i| format!("message {i}")).collect();
    let mut runs = Vec::new();
    for text in &texts {
        runs.push(send(&rt, &k, text).await);
    }
    for run in &runs {
        assert_eq!(finished(&rt, &k, run).await.status, RunStatus::Completed);
    }

    let bytes = head(&fx.backend, &k).await;
    assert_eq!(user_texts(&bytes), texts);
    let expected: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| format!("You said: {t} (turn {})", i + 1))
        .collect();
    assert_eq!(assistant_texts(&bytes), expected);
    // Each turn saw exactly the turns before it.
    let turns = agent.turns();
    assert_eq!(turns.len(), 10);
    for (i, turn) in turns.iter().enumerate() {
        assert_eq!(turn.text, texts[i]);
        assert_eq!(turn.seen, texts[..i]);
        assert!(
            turn.parse_matches,
            "turn {i}: the kept parse is the transcript's"
        );
    }
    // This worker wrote every head it read: after the first turn, the version check
    // sufficed and no transcript was read again. (The last run may be seen completed a
    // moment before this worker counts it.)
    eventually("the last run to leave the worker", || async {
        (rt.metrics().in_flight == 0).then_some(())
    })
    .await;
    let m = rt.metrics();
    assert_eq!(m.hydrate_reads, 0);
    assert_eq!(m.hydrate_cache_hits, 9);
    assert_eq!(m.persist_writes, 10);
    stop(&rt, worker).await;
}

pub async fn many_conversations_run_in_parallel(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).concurrency(4).build().unwrap();
    let worker = start(&rt);
    let keys: Vec<_> = (0..12).map(|i| key(&format!("conv-{i}"))).collect();
    let mut runs = Vec::new();
    for k in &keys {
        runs.push((k.clone(), send(&rt, k, "/gate").await));
    }
    // Gated turns of four conversations hold all four slots at once.
    eventually("four conversations to run at once", || async {
        (agent.max_active() == 4).then_some(())
    })
    .await;
    for k in &keys {
        runs.push((k.clone(), send(&rt, k, "second").await));
    }
    agent.open_gate();
    for (k, run) in &runs {
        assert_eq!(finished(&rt, k, run).await.status, RunStatus::Completed);
    }
    for k in &keys {
        let bytes = head(&fx.backend, k).await;
        assert_eq!(user_texts(&bytes), ["/gate", "second"], "{k}");
    }
    assert_eq!(
        agent.max_active(),
        4,
        "never more turns at once than the concurrency"
    );
    stop(&rt, worker).await;
}
