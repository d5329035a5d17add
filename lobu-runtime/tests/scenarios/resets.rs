//! Resets: between turns, racing an in-flight turn, and across replicas' caches.

use std::time::Duration;

use lobu_core::RunStatus;
use lobu_runtime::RunEvent;

use crate::common::*;

pub async fn reset_between_turns_forgets_the_conversation(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let worker = start(&rt);
    let k = key("c1");
    for text in ["one", "two"] {
        let run = send(&rt, &k, text).await;
        finished(&rt, &k, &run).await;
    }
    let deleted = within("reset", rt.reset_and_wait(k.clone())).await.unwrap();
    assert_eq!(deleted, 2);
    assert!(fx.backend.sessions.hydrate(&k).await.unwrap().is_none());
    assert!(
        rt.messages(&k, None, None)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    assert_eq!(rt.stats(&k).await.unwrap().message_count, 0);
    assert!(
        rt.list(&k.org, &k.agent, None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        within("reset", rt.reset_and_wait(k.clone())).await.unwrap(),
        0
    );

    let reset = rt.reset(k.clone()).await.unwrap();
    let events = events_of(&rt, &k.org, &reset).await;
    assert_eq!(
        events.last(),
        Some(&RunEvent::Completed {
            output: Some(serde_json::json!({"deleted": 0}))
        })
    );

    let three = send(&rt, &k, "three").await;
    finished(&rt, &k, &three).await;
    assert!(agent.turns().last().unwrap().seen.is_empty());
    let bytes = head(&fx.backend, &k).await;
    assert_eq!(user_texts(&bytes), ["three"]);
    assert_eq!(assistant_texts(&bytes), ["You said: three (turn 1)"]);
    stop(&rt, worker).await;
}

pub async fn reset_waits_for_the_in_flight_turn_then_clears_it(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let first = send(&rt, &k, "first").await;
    finished(&rt, &k, &first).await;

    let gated = send(&rt, &k, "/gate").await;
    eventually("the gated turn to start", || async {
        agent
            .turns()
            .iter()
            .any(|t| t.text == "/gate")
            .then_some(())
    })
    .await;
    let reset = rt.reset(k.clone()).await.unwrap();
    // Ordered behind the turn: it cannot start while the turn runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rt.status(&k.org, &reset).await.unwrap().status,
        RunStatus::Pending
    );
    assert_eq!(
        rt.status(&k.org, &gated).await.unwrap().status,
        RunStatus::Running
    );

    agent.open_gate();
    assert_eq!(finished(&rt, &k, &gated).await.status, RunStatus::Completed);
    let record = finished(&rt, &k, &reset).await;
    assert_eq!(record.status, RunStatus::Completed);
    assert_eq!(record.output, Some(serde_json::json!({"deleted": 2})));
    assert!(fx.backend.sessions.hydrate(&k).await.unwrap().is_none());

    let after = send(&rt, &k, "after").await;
    finished(&rt, &k, &after).await;
    assert!(agent.turns().last().unwrap().seen.is_empty());
    assert_eq!(user_texts(&head(&fx.backend, &k).await), ["after"]);
    stop(&rt, worker).await;
}

pub async fn no_replica_serves_a_reset_conversation_from_its_cache(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let a = fx.builder(&agent).build().unwrap();
    let a_worker = start(&a);
    let k = key("c1");
    for text in ["one", "two"] {
        let run = send(&a, &k, text).await;
        finished(&a, &k, &run).await;
    }
    // A's cache now holds the head; A stops working but keeps serving reads.
    assert_eq!(a.messages(&k, None, None).await.unwrap().messages.len(), 4);
    stop(&a, a_worker).await;

    let b = fx.builder_on(fx.replica().await, &agent).build().unwrap();
    let b_worker = start(&b);
    assert_eq!(
        within("reset", b.reset_and_wait(k.clone())).await.unwrap(),
        2
    );
    assert!(
        a.messages(&k, None, None)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    // Two new turns: even if a store reused versions, A's cached "two" must not return.
    for text in ["x", "y"] {
        let run = send(&b, &k, text).await;
        finished(&b, &k, &run).await;
    }
    let page = a.messages(&k, None, None).await.unwrap();
    let texts: Vec<String> = page
        .messages
        .iter()
        .filter(|m| m.role.as_deref() == Some("user"))
        .map(|m| {
            m.content.as_ref().unwrap()[0]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(texts, ["x", "y"]);
    assert_eq!(a.stats(&k).await.unwrap().user_messages, 2);
    stop(&b, b_worker).await;
}
