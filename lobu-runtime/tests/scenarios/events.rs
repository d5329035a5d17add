//! Run events across replicas: live streaming from a gateway-only replica, resuming after
//! any event, replay after every replica restarts, attempts on different replicas, and one
//! reader of the store however many subscribers.

use std::time::Duration;

use futures::StreamExt;
use lobu_runtime::{NumberedEvent, RunEvent};

use crate::common::stall::Stall;
use crate::common::*;

/// Seqs must run 0, 1, 2, … with nothing skipped or repeated, `accepted` first and exactly
/// one terminal event, last.
fn assert_whole_stream(events: &[NumberedEvent]) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (0..events.len() as u64).collect();
    assert_eq!(seqs, expected, "gaps or duplicates: {events:?}");
    assert!(matches!(events[0].event, RunEvent::Accepted { .. }));
    let terminal = events.iter().filter(|e| e.event.is_terminal()).count();
    assert_eq!(terminal, 1, "{events:?}");
    assert!(events.last().unwrap().event.is_terminal());
}

fn output_text(events: &[NumberedEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.event {
            RunEvent::Output { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

pub async fn a_subscriber_on_a_gateway_replica_gets_every_live_event_of_another_replicas_run(
    store: Store,
) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    // A takes messages and streams (no worker loop); B executes. A's backstop read is a
    // minute away: what A streams comes through the backend's wake-ups.
    let a = fx
        .builder(&agent)
        .status_poll_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    let b = fx.builder_on(fx.replica().await, &agent).build().unwrap();
    let k = key("c1");
    let run = send(&a, &k, "the quick brown fox jumps over the lazy dog").await;
    let live = a.subscribe(&k.org, &run).await.unwrap();
    let b_worker = start(&b);
    let seen = collect_numbered(live).await;
    assert_whole_stream(&seen);
    assert!(
        seen.iter()
            .any(|e| e.event == RunEvent::Started { attempt: 1 }),
        "{seen:?}"
    );
    assert_eq!(
        output_text(&seen),
        "You said: the quick brown fox jumps over the lazy dog (turn 1)",
        "the live output, whole and once"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e.event, RunEvent::Entry { .. }))
    );
    assert_eq!(
        seen.last().unwrap().event,
        RunEvent::Completed { output: None }
    );
    stop(&b, b_worker).await;
}

pub async fn a_stream_resumed_after_any_event_gets_exactly_the_rest(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let run = send(&rt, &k, "one two three four").await;
    let all = collect_numbered(rt.subscribe(&k.org, &run).await.unwrap()).await;
    assert_whole_stream(&all);
    // Another replica, which never saw the run, resumes the same way.
    let other = fx.builder_on(fx.replica().await, &agent).build().unwrap();
    for replica in [&rt, &other] {
        for cut in 0..all.len() as u64 {
            let rest = replica.subscribe_after(&k.org, &run, Some(cut)).await;
            let rest = collect_numbered(rest.unwrap()).await;
            assert_eq!(rest, all[cut as usize + 1..], "resumed after {cut}");
        }
        let past_the_end = replica.subscribe_after(&k.org, &run, Some(1000)).await;
        assert!(collect_numbered(past_the_end.unwrap()).await.is_empty());
    }
    stop(&rt, worker).await;
}

pub async fn a_finished_runs_events_are_replayed_after_every_replica_restarts(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let (k, run, live) = {
        let rt = fx.builder(&agent).build().unwrap();
        let worker = start(&rt);
        let k = key("c1");
        let run = send(&rt, &k, "remember me").await;
        let live = collect_numbered(rt.subscribe(&k.org, &run).await.unwrap()).await;
        stop(&rt, worker).await;
        (k, run, live)
    };
    // A new process: a new handle on the storage and a new runtime.
    let restarted = fx.builder_on(fx.replica().await, &agent).build().unwrap();
    let replay = collect_numbered(restarted.subscribe(&k.org, &run).await.unwrap()).await;
    assert_eq!(replay, live, "the replay is what was seen live");
    assert!(output_text(&replay).contains("remember me"));
}

pub async fn a_run_retried_on_another_replica_streams_both_attempts_each_marked(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let a = fx
        .builder(&agent)
        .retry_delay(Duration::from_millis(300))
        .build()
        .unwrap();
    let b = fx.builder_on(fx.replica().await, &agent).build().unwrap();
    let k = key("c1");
    let run = send(&a, &k, "/fail-until 2").await;
    let events = a.subscribe(&k.org, &run).await.unwrap();
    // A runs attempt 1 (which fails) and stops; B runs attempt 2.
    let a_worker = start(&a);
    eventually("attempt 1 to fail", || async {
        let record = a.status(&k.org, &run).await.unwrap();
        (record.attempts == 1 && record.status == lobu_core::RunStatus::Pending).then_some(())
    })
    .await;
    stop(&a, a_worker).await;
    let b_worker = start(&b);
    let seen = collect_numbered(events).await;
    assert_whole_stream(&seen);
    let started: Vec<u32> = seen
        .iter()
        .filter_map(|e| match e.event {
            RunEvent::Started { attempt } => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(started, [1, 2], "{seen:?}");
    assert!(
        seen.iter()
            .any(|e| matches!(e.event, RunEvent::Retrying { attempt: 1, .. }))
    );
    for event in &seen[1..seen.len() - 1] {
        let inner = match &event.event {
            RunEvent::Started { attempt }
            | RunEvent::Output { attempt, .. }
            | RunEvent::Entry { attempt, .. }
            | RunEvent::Retrying { attempt, .. } => *attempt,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(
            event.attempt, inner,
            "each event is marked with its attempt"
        );
    }
    assert_eq!(seen.last().unwrap().attempt, 2);
    stop(&b, b_worker).await;
}

pub async fn a_thousand_subscribers_of_a_run_share_one_reader_of_the_store(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let counted = Stall::new(fx.replica().await);
    let gateway = fx.builder_on(counted.backend(), &agent).build().unwrap();
    let worker_rt = fx.builder(&agent).build().unwrap();
    let k = key("c1");
    let run = send(&gateway, &k, "/gate").await;
    let mut streams = Vec::new();
    for _ in 0..1000 {
        streams.push(gateway.subscribe(&k.org, &run).await.unwrap());
    }
    let worker = start(&worker_rt);
    eventually("the turn to start", || async {
        (!agent.turns().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    agent.open_gate();
    let all = futures::future::join_all(streams.into_iter().map(|s| s.collect::<Vec<_>>()));
    let all = within("every subscriber's stream", all).await;
    let first = &all[0];
    assert_whole_stream(first);
    assert!(
        all.iter().all(|seen| seen == first),
        "every subscriber saw the same"
    );
    let reads = counted.event_reads();
    assert!(
        reads < 50,
        "{reads} reads of the store for 1,000 subscribers: reads must not grow with them"
    );
    stop(&worker_rt, worker).await;
}

pub async fn output_is_stored_coalesced_and_past_the_cap_still_streamed_whole(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let words: Vec<String> = (0..200).map(|i| format!("word{i}")).collect();
    let text = words.join(" ");
    for cap in [1024 * 1024, 1] {
        let rt = fx.builder(&agent).max_event_bytes(cap).build().unwrap();
        let worker = start(&rt);
        let k = key(&format!("cap-{cap}"));
        let run = send(&rt, &k, &text).await;
        let seen = collect_numbered(rt.subscribe(&k.org, &run).await.unwrap()).await;
        assert_whole_stream(&seen);
        assert_eq!(
            output_text(&seen),
            format!("You said: {text} (turn 1)"),
            "cap {cap}"
        );
        let outputs = seen
            .iter()
            .filter(|e| matches!(e.event, RunEvent::Output { .. }))
            .count();
        // 201 pieces streamed within one window or two: a handful of stored events.
        assert!(
            outputs <= 5,
            "cap {cap}: {outputs} output events for 201 pieces"
        );
        stop(&rt, worker).await;
    }
}
