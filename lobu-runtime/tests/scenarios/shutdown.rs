//! Graceful shutdown with a turn in flight, within and past the grace period.

use std::time::Duration;

use lobu_core::{ErrorKind, RunStatus};
use lobu_runtime::RunEvent;

use crate::common::*;

pub async fn shutdown_within_the_grace_period_finishes_the_turn(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let run = send(&rt, &k, "/sleep 700").await;
    eventually("the turn to start", || async {
        (!agent.turns().is_empty()).then_some(())
    })
    .await;
    within("shutdown", rt.shutdown_within(Duration::from_secs(60))).await;
    within("the worker loop", worker).await.unwrap().unwrap();

    let record = rt.status(&k.org, &run).await.unwrap();
    assert_eq!(record.status, RunStatus::Completed);
    assert_eq!(user_texts(&head(&fx.backend, &k).await), ["/sleep 700"]);
    assert!(!agent.turns()[0].cancelled);
    assert_eq!(rt.metrics().in_flight, 0);
}

pub async fn shutdown_past_the_grace_period_hands_the_turn_back_uncounted(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let first = send(&rt, &k, "first").await;
    finished(&rt, &k, &first).await;
    let before = head(&fx.backend, &k).await;

    let run = send(&rt, &k, "/hang").await;
    eventually("the turn to start", || async {
        agent
            .turns()
            .iter()
            .any(|t| t.text == "/hang")
            .then_some(())
    })
    .await;
    within("shutdown", rt.shutdown_within(Duration::from_millis(300))).await;
    within("the worker loop", worker).await.unwrap().unwrap();

    let record = rt.status(&k.org, &run).await.unwrap();
    assert_eq!(record.status, RunStatus::Pending);
    assert_eq!(
        record.attempts, 0,
        "a handed-back run does not count an attempt"
    );
    assert_eq!(head(&fx.backend, &k).await, before, "nothing persisted");
    let turn = agent.turns().pop().unwrap();
    assert!(turn.cancelled);
    assert!(!turn.scratch.exists());
    assert_eq!(rt.metrics().runs_released, 1);

    // Another replica (whose agent answers `/hang` at once) takes the run over.
    let other = ScriptAgent::with_hang(false);
    let b = fx.builder_on(fx.replica().await, &other).build().unwrap();
    let b_worker = start(&b);
    let record = finished(&b, &k, &run).await;
    assert_eq!(record.status, RunStatus::Completed);
    assert_eq!(record.attempts, 1);
    assert_eq!(other.turns()[0].seen, ["first"]);
    assert_eq!(user_texts(&head(&fx.backend, &k).await), ["first", "/hang"]);
    // The first runtime recorded that its attempt went back to the queue.
    let events = events_of(&rt, &k.org, &run).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RunEvent::Requeued { attempt: 1, .. }))
    );
    assert_eq!(events.last(), Some(&RunEvent::Completed { output: None }));
    stop(&b, b_worker).await;
}

pub async fn the_worker_loop_runs_once_and_not_after_shutdown(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let worker = start(&rt);
    // The loop samples the queue depth when it finds nothing to do: then it surely runs.
    eventually("the loop to run", || async { rt.metrics().queue_depth }).await;
    let second = rt.run().await.unwrap_err();
    assert_eq!(second.kind(), ErrorKind::Busy);
    stop(&rt, worker).await;
    within("run after shutdown", rt.run()).await.unwrap();
    // Shut down: a submit is still durable, but nothing here claims it.
    let k = key("c1");
    let run = send(&rt, &k, "late").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rt.status(&k.org, &run).await.unwrap().status,
        RunStatus::Pending
    );
    assert!(agent.turns().is_empty());
}

pub async fn a_claim_that_returns_after_shutdown_hands_its_run_back(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let stall = crate::common::stall::Stall::new(fx.replica().await);
    let rt = fx.builder_on(stall.backend(), &agent).build().unwrap();
    let k = key("c1");
    let run = send(&rt, &k, "hello").await;
    // The worker's claim is on its way when shutdown begins, and answers only after it.
    stall.hold_claims(true);
    let worker = start(&rt);
    eventually("a claim to be in flight", || async {
        (stall.claims_waiting() > 0).then_some(())
    })
    .await;
    within("shutdown", rt.shutdown_within(Duration::from_secs(30))).await;
    stall.hold_claims(false);
    within("the worker loop", worker).await.unwrap().unwrap();

    assert!(agent.turns().is_empty(), "no turn started after shutdown");
    let record = rt.status(&k.org, &run).await.unwrap();
    assert_eq!(record.status, RunStatus::Pending, "{record:?}");
    assert_eq!(
        record.attempts, 0,
        "handed back without counting an attempt"
    );
    assert_eq!(rt.metrics().in_flight, 0);
}
