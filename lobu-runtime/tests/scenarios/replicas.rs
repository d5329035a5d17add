//! Several runtimes on one store: one turn at a time per conversation, exactly once, and
//! a stalled replica stops its turn before its lease runs out and another takes over.

use std::collections::HashMap;
use std::time::Duration;

use lobu_core::RunStatus;

use crate::common::stall::Stall;
use crate::common::*;

pub async fn two_runtimes_never_overlap_a_conversation_and_run_each_turn_once(store: Store) {
    let fx = Fixture::new(store).await;
    // One agent state for both replicas, so every turn's start and end is recorded together.
    let agent = ScriptAgent::new();
    let a = fx.builder(&agent).concurrency(3).build().unwrap();
    let b = fx
        .builder_on(fx.replica().await, &agent)
        .concurrency(3)
        .build()
        .unwrap();
    let (a_worker, b_worker) = (start(&a), start(&b));
    let keys: Vec<_> = (0..4).map(|i| key(&format!("shared-{i}"))).collect();
    let mut runs = Vec::new();
    let mut sent: HashMap<_, Vec<String>> = HashMap::new();
    for i in 0..6 {
        for (n, k) in keys.iter().enumerate() {
            let text = format!("/sleep 30 turn-{i}");
            // Alternate the gateway too: both replicas accept work.
            let gateway = if (i + n) % 2 == 0 { &a } else { &b };
            runs.push((k.clone(), send(gateway, k, &text).await));
            sent.entry(k.clone()).or_default().push(text);
        }
    }
    for (k, run) in &runs {
        let record = finished(&a, k, run).await;
        assert_eq!(record.status, RunStatus::Completed);
        assert_eq!(record.attempts, 1);
    }

    let turns = agent.turns();
    assert_eq!(turns.len(), runs.len(), "each turn ran exactly once");
    for k in &keys {
        let mut spans: Vec<_> = turns
            .iter()
            .filter(|t| &t.key == k)
            .map(|t| (t.start, t.end.expect("ended")))
            .collect();
        spans.sort();
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "two turns of {k} overlapped");
        }
        let bytes = head(&fx.backend, k).await;
        assert_eq!(user_texts(&bytes), sent[k], "{k}: each turn once, in order");
    }
    stop(&a, a_worker).await;
    stop(&b, b_worker).await;
}

pub async fn a_stalled_replica_stops_its_turn_before_another_takes_over(store: Store) {
    stalled_replica_stops_before_takeover(store, Duration::ZERO).await;
}

/// The stop deadline is measured on the replica's own monotonic clock: a store whose clock
/// runs 15 s ahead (so every expiry it reports looks 15 s later) changes nothing.
pub async fn a_stalled_replica_whose_store_clock_runs_ahead_still_stops_before_another_takes_over(
    store: Store,
) {
    stalled_replica_stops_before_takeover(store, Duration::from_secs(15)).await;
}

async fn stalled_replica_stops_before_takeover(store: Store, store_clock_ahead: Duration) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let stall = Stall::new(fx.replica().await);
    stall.skew_clock(store_clock_ahead);
    // Concurrency 1: while its only attempt hangs, A claims nothing else.
    let a = expiring(fx.builder_on(stall.backend(), &agent))
        .concurrency(1)
        .build()
        .unwrap();
    let a_worker = start(&a);
    let k = key("c1");
    let first = send(&a, &k, "first").await;
    finished(&a, &k, &first).await;

    let run = send(&a, &k, "/gate").await;
    eventually("A's attempt to start", || async {
        agent
            .turns()
            .iter()
            .any(|t| t.text == "/gate")
            .then_some(())
    })
    .await;
    // A freezes: its renewals hang while its agent is still working. It must stop the agent
    // before its lease and claim run out, as B may take over from then on.
    stall.set(true);
    let b = expiring(fx.builder_on(fx.replica().await, &agent))
        .build()
        .unwrap();
    let b_worker = start(&b);
    let gates = eventually("B to take the run over", || async {
        let gates: Vec<_> = agent
            .turns()
            .into_iter()
            .filter(|t| t.text == "/gate")
            .collect();
        (gates.len() == 2).then_some(gates)
    })
    .await;
    let (stalled, taken_over) = (&gates[0], &gates[1]);
    assert!(stalled.cancelled, "A cancelled its turn");
    let stalled_end = stalled.end.expect("A's turn ended before B's started");
    assert!(
        stalled_end <= taken_over.start,
        "A's and B's turns overlapped"
    );
    agent.open_gate();
    let record = finished(&b, &k, &run).await;
    assert_eq!(record.status, RunStatus::Completed);
    // A hands the run back uncounted; only if its claim ran out first is it counted.
    assert!((1..=2).contains(&record.attempts), "{record:?}");
    eventually("A's attempt to end", || async {
        (a.metrics().in_flight == 0).then_some(())
    })
    .await;
    assert_eq!(
        a.metrics().persist_writes,
        1,
        "only A's first turn was written"
    );
    // B counts its write after its commit returns, which may be after the waiter saw the end.
    eventually("B's write to be counted", || async {
        (b.metrics().persist_writes == 1).then_some(())
    })
    .await;
    let bytes = head(&fx.backend, &k).await;
    assert_eq!(
        user_texts(&bytes),
        ["first", "/gate"],
        "the turn is there once"
    );
    stall.set(false);

    let after = send(&a, &k, "after").await;
    finished(&a, &k, &after).await;
    assert_eq!(
        user_texts(&head(&fx.backend, &k).await),
        ["first", "/gate", "after"]
    );
    stop(&a, a_worker).await;
    stop(&b, b_worker).await;
}

pub async fn a_replica_that_stops_renewing_cancels_its_turn_and_hands_it_back(store: Store) {
    let fx = Fixture::new(store).await;
    let stalled_agent = ScriptAgent::new();
    let stall = Stall::new(fx.replica().await);
    let a = expiring(fx.builder_on(stall.backend(), &stalled_agent))
        .concurrency(1)
        .build()
        .unwrap();
    let a_worker = start(&a);
    let k = key("c1");
    let run = send(&a, &k, "/hang").await;
    eventually("A's attempt to start", || async {
        (!stalled_agent.turns().is_empty()).then_some(())
    })
    .await;
    stall.set(true);
    let other = ScriptAgent::with_hang(false);
    let b = expiring(fx.builder_on(fx.replica().await, &other))
        .build()
        .unwrap();
    let b_worker = start(&b);
    let record = finished(&b, &k, &run).await;
    assert_eq!(record.status, RunStatus::Completed);
    assert!((1..=2).contains(&record.attempts), "{record:?}");

    let stalled = stalled_agent.turns().remove(0);
    assert!(stalled.cancelled, "the turn was cancelled, not finished");
    let taken_over = other.turns().remove(0);
    assert!(
        stalled.end.expect("A's turn ended") <= taken_over.start,
        "A's and B's turns overlapped"
    );
    let events = events_of(&a, &k.org, &run).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, lobu_runtime::RunEvent::Requeued { attempt: 1, .. })),
        "{events:?}"
    );
    assert_eq!(
        events.last(),
        Some(&lobu_runtime::RunEvent::Completed { output: None })
    );
    assert_eq!(a.metrics().persist_writes, 0);
    assert_eq!(user_texts(&head(&fx.backend, &k).await), ["/hang"]);
    stall.set(false);
    stop(&a, a_worker).await;
    stop(&b, b_worker).await;
}

/// A claim whose answer arrives so late that it could lapse before its first renewal (a
/// stalled connection) is handed back without running: another replica may own the
/// conversation by then. (Found by lobu-chaos with database faults: a late claim answer
/// started an agent while another replica ran the conversation's next turn.)
pub async fn a_claim_answered_too_late_is_handed_back_unrun(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let stall = Stall::new(fx.backend.clone());
    let rt = expiring(fx.builder_on(stall.backend(), &agent))
        .build()
        .unwrap();
    // claim 3 s, stop margin 750 ms: an answer 2.5 s after sending is too late.
    stall.delay_claim_answers(Duration::from_millis(2500));
    let worker = start(&rt);
    let k = key("late");
    let run = send(&rt, &k, "hello").await;
    eventually("the late claim to be handed back", || async {
        (rt.metrics().runs_released >= 1).then_some(())
    })
    .await;
    assert!(
        agent.turns().is_empty(),
        "a turn ran on a claim answered too late"
    );
    stall.delay_claim_answers(Duration::ZERO);
    let record = finished(&rt, &k, &run).await;
    assert_eq!(record.status, RunStatus::Completed);
    assert_eq!(agent.turns().len(), 1);
    stop(&rt, worker).await;
}
