//! Double texting (`reject`, `interrupt`, `rollback`) and steering, through the runtime.

use std::time::{Duration, Instant};

use lobu_core::{ErrorKind, MultitaskStrategy, RunId, RunStatus};
use lobu_runtime::{RunEvent, Runtime, SubmitOptions};

use crate::common::*;

/// Submit `text` with `strategy`.
async fn send_with(
    runtime: &Runtime,
    key: &lobu_core::ConversationKey,
    text: &str,
    strategy: MultitaskStrategy,
) -> lobu_core::Result<RunId> {
    let payload = serde_json::json!({ "text": text });
    let options = SubmitOptions::new().multitask(strategy);
    Ok(runtime
        .submit_with(key.clone(), payload, options)
        .await?
        .run)
}

/// Wait until the agent has started a turn with `text`.
async fn started(agent: &ScriptAgent, text: &str) {
    eventually(&format!("the turn {text:?} to start"), || async {
        agent.turns().iter().any(|t| t.text == text).then_some(())
    })
    .await;
}

pub async fn reject_while_a_turn_runs_is_refused_and_queues_nothing(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let running = send(&rt, &k, "/gate").await;
    started(&agent, "/gate").await;
    let refused = send_with(&rt, &k, "too soon", MultitaskStrategy::Reject).await;
    let err = refused.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.message().contains(running.as_str()), "{err}");
    agent.open_gate();
    finished(&rt, &k, &running).await;
    let accepted = send_with(&rt, &k, "now", MultitaskStrategy::Reject)
        .await
        .expect("reject on an idle conversation");
    assert_eq!(
        finished(&rt, &k, &accepted).await.status,
        RunStatus::Completed
    );
    assert_eq!(
        user_texts(&head(&fx.backend, &k).await),
        ["/gate", "now"],
        "the rejected message never ran"
    );
    stop(&rt, worker).await;
}

pub async fn interrupt_stops_the_running_turn_and_runs_the_new_message(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let first = send(&rt, &k, "first").await;
    finished(&rt, &k, &first).await;
    let hung = send(&rt, &k, "/hang").await;
    started(&agent, "/hang").await;
    let asked = Instant::now();
    let new = send_with(&rt, &k, "instead", MultitaskStrategy::Interrupt)
        .await
        .unwrap();
    let ended = finished(&rt, &k, &hung).await;
    assert_eq!(ended.status, RunStatus::Cancelled, "{ended:?}");
    assert!(ended.error.unwrap().contains(new.as_str()));
    // The turn runs in this process: the gateway pokes its heartbeat, no waiting for a beat.
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(2), "stopped at once: {took:?}");
    assert_eq!(finished(&rt, &k, &new).await.status, RunStatus::Completed);
    assert_eq!(
        user_texts(&head(&fx.backend, &k).await),
        ["first", "instead"]
    );
    let hung_turn = agent.turns().into_iter().find(|t| t.text == "/hang");
    assert!(
        hung_turn.unwrap().cancelled,
        "the agent saw the cancellation"
    );
    stop(&rt, worker).await;
}

pub async fn rollback_cancels_the_running_and_the_waiting_turns(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let hung = send(&rt, &k, "/hang").await;
    started(&agent, "/hang").await;
    let waiting = send(&rt, &k, "waiting").await;
    let new = send_with(&rt, &k, "start over", MultitaskStrategy::Rollback)
        .await
        .unwrap();
    for gone in [&hung, &waiting] {
        let ended = finished(&rt, &k, gone).await;
        assert_eq!(ended.status, RunStatus::Cancelled, "{ended:?}");
        assert!(ended.error.unwrap().contains(new.as_str()));
    }
    assert_eq!(finished(&rt, &k, &new).await.status, RunStatus::Completed);
    let texts: Vec<String> = agent.turns().into_iter().map(|t| t.text).collect();
    assert_eq!(texts, ["/hang", "start over"], "the waiting turn never ran");
    assert_eq!(user_texts(&head(&fx.backend, &k).await), ["start over"]);
    stop(&rt, worker).await;
}

pub async fn a_steered_message_taken_by_the_running_turn_appears_once_in_that_turn(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    // A is a gateway; the turn runs on B: the steer reaches it through the store.
    let a = fx.builder(&agent).build().unwrap();
    let b = fx.builder_on(fx.replica().await, &agent).build().unwrap();
    let b_worker = start(&b);
    let k = key("c1");
    let main = send(&a, &k, "/steer").await;
    started(&agent, "/steer").await;
    let steered = send_with(&a, &k, "and also this", MultitaskStrategy::Steer)
        .await
        .unwrap();
    let record = finished(&a, &k, &main).await;
    assert_eq!(record.status, RunStatus::Completed, "{record:?}");
    let taken = finished(&a, &k, &steered).await;
    assert_eq!((taken.status, taken.attempts), (RunStatus::Completed, 0));
    assert_eq!(taken.output.unwrap()["steered_into"], main.as_str());
    assert_eq!(
        user_texts(&head(&fx.backend, &k).await),
        ["/steer", "and also this"],
        "the steered message appears once, in the turn that took it"
    );
    assert_eq!(agent.turns().len(), 1, "it never ran as its own turn");
    let events = events_of(&a, &k.org, &main).await;
    let told = events
        .iter()
        .any(|e| matches!(e, RunEvent::Steered { run, .. } if *run == steered));
    assert!(told, "the turn's subscribers see what it took: {events:?}");
    stop(&b, b_worker).await;
}

pub async fn a_steered_message_the_turn_does_not_take_runs_next_as_its_own_turn(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let running = send(&rt, &k, "/gate").await;
    started(&agent, "/gate").await;
    let steered = send_with(&rt, &k, "later", MultitaskStrategy::Steer)
        .await
        .unwrap();
    agent.open_gate();
    finished(&rt, &k, &running).await;
    let own = finished(&rt, &k, &steered).await;
    assert_eq!((own.status, own.attempts), (RunStatus::Completed, 1));
    assert_eq!(user_texts(&head(&fx.backend, &k).await), ["/gate", "later"]);
    let texts: Vec<String> = agent.turns().into_iter().map(|t| t.text).collect();
    assert_eq!(texts, ["/gate", "later"]);
    stop(&rt, worker).await;
}

pub async fn a_steered_message_taken_by_a_failed_attempt_is_taken_again_not_lost_or_doubled(
    store: Store,
) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = quick(fx.builder(&agent)).max_attempts(3).build().unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let main = send(&rt, &k, "/steer-fail-once").await;
    started(&agent, "/steer-fail-once").await;
    let steered = send_with(&rt, &k, "extra", MultitaskStrategy::Steer)
        .await
        .unwrap();
    let record = finished(&rt, &k, &main).await;
    assert_eq!((record.status, record.attempts), (RunStatus::Completed, 2));
    let taken = finished(&rt, &k, &steered).await;
    assert_eq!(taken.status, RunStatus::Completed);
    assert_eq!(taken.output.unwrap()["steered_into"], main.as_str());
    assert_eq!(
        user_texts(&head(&fx.backend, &k).await),
        ["/steer-fail-once", "extra"],
        "nothing lost or doubled"
    );
    let attempts: Vec<u32> = agent.turns().iter().map(|t| t.attempt).collect();
    assert_eq!(
        attempts,
        [1, 2],
        "the second attempt started from the same head"
    );
    stop(&rt, worker).await;
}
