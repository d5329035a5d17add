//! Run control: cancelling waiting and running runs (on another replica), permanent errors,
//! and retries that back off.

use std::time::{Duration, Instant};

use lobu_core::{CancelOutcome, RunStatus};
use lobu_runtime::RunEvent;

use crate::common::*;

pub async fn cancelling_a_pending_run_means_it_never_starts(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let k = key("c1");
    let doomed = send(&rt, &k, "never run me").await;
    assert_eq!(
        rt.cancel(&k.org, &doomed).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let worker = start(&rt);
    let next = send(&rt, &k, "run me").await;
    assert_eq!(finished(&rt, &k, &next).await.status, RunStatus::Completed);
    let record = rt.status(&k.org, &doomed).await.unwrap();
    assert_eq!((record.status, record.attempts), (RunStatus::Cancelled, 0));
    let texts: Vec<String> = agent.turns().into_iter().map(|t| t.text).collect();
    assert_eq!(
        texts,
        ["run me"],
        "the cancelled run never reached the agent"
    );
    let events = events_of(&rt, &k.org, &doomed).await;
    assert!(
        matches!(events.last(), Some(RunEvent::Cancelled { .. })),
        "{events:?}"
    );
    let again = rt.cancel(&k.org, &doomed).await.unwrap();
    assert_eq!(again, CancelOutcome::Finished(RunStatus::Cancelled));
    let unknown = rt.cancel(&k.org, &lobu_core::RunId::generate()).await;
    assert_eq!(unknown.unwrap_err().kind(), lobu_core::ErrorKind::NotFound);
    stop(&rt, worker).await;
}

pub async fn cancelling_a_running_turn_on_another_replica_stops_it_and_persists_nothing(
    store: Store,
) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    // A is a gateway; B runs turns and renews its claim every 750 ms.
    let a = fx.builder(&agent).build().unwrap();
    let b = expiring(fx.builder_on(fx.replica().await, &agent))
        .build()
        .unwrap();
    let b_worker = start(&b);
    let k = key("c1");
    let first = send(&a, &k, "first").await;
    finished(&a, &k, &first).await;
    let hung = send(&a, &k, "/hang").await;
    eventually("the turn to start on B", || async {
        agent
            .turns()
            .iter()
            .any(|t| t.text == "/hang")
            .then_some(())
    })
    .await;
    let asked = Instant::now();
    assert_eq!(
        a.cancel(&k.org, &hung).await.unwrap(),
        CancelOutcome::Requested
    );
    let record = finished(&a, &k, &hung).await;
    let took = asked.elapsed();
    assert_eq!(record.status, RunStatus::Cancelled, "{record:?}");
    assert!(
        took < Duration::from_secs(5),
        "stopped within a heartbeat or so: {took:?}"
    );
    let turn = agent
        .turns()
        .into_iter()
        .find(|t| t.text == "/hang")
        .unwrap();
    assert!(turn.cancelled, "the agent saw the cancellation");
    assert_eq!(
        user_texts(&head(&fx.backend, &k).await),
        ["first"],
        "nothing persisted"
    );
    let events = events_of(&a, &k.org, &hung).await;
    assert!(
        matches!(events.last(), Some(RunEvent::Cancelled { .. })),
        "{events:?}"
    );
    let after = send(&a, &k, "after").await;
    assert_eq!(finished(&a, &k, &after).await.status, RunStatus::Completed);
    let last = agent
        .turns()
        .into_iter()
        .find(|t| t.text == "after")
        .unwrap();
    assert_eq!(
        last.seen,
        ["first"],
        "the next run saw the transcript as before"
    );
    stop(&b, b_worker).await;
}

pub async fn a_permanent_error_fails_the_run_after_one_attempt(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).max_attempts(3).build().unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let run = send(&rt, &k, "/permanent").await;
    let record = finished(&rt, &k, &run).await;
    assert_eq!(
        (record.status, record.attempts),
        (RunStatus::Failed, 1),
        "{record:?}"
    );
    assert!(record.error.unwrap().contains("refused on attempt 1"));
    assert_eq!(agent.turns().len(), 1, "never retried");
    stop(&rt, worker).await;
}

pub async fn retries_back_off_exponentially_within_the_cap(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx
        .builder(&agent)
        .max_attempts(4)
        .retry_delay(Duration::from_millis(100))
        .max_retry_delay(Duration::from_millis(300))
        .build()
        .unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let run = send(&rt, &k, "/fail-until 4").await;
    let events = events_of(&rt, &k.org, &run).await;
    assert!(
        matches!(events.last(), Some(RunEvent::Completed { .. })),
        "{events:?}"
    );
    let waits: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Retrying { retry_after_ms, .. } => Some(*retry_after_ms),
            _ => None,
        })
        .collect();
    assert_eq!(waits.len(), 3, "{events:?}");
    // Half of each delay is fixed, half jittered: 50-100, 100-200, then capped 150-300 ms
    // (the event says what is left of it, a few milliseconds less).
    for (wait, (low, high)) in waits.iter().zip([(30, 100), (80, 200), (130, 300)]) {
        assert!((low..=high).contains(wait), "{waits:?}");
    }
    stop(&rt, worker).await;
}
