//! The gateway side: replay to late subscribers, runs executed elsewhere, tenants, bad
//! input, idempotent submits, a busy conversation, and a turn persisted before a crash.

use std::time::Duration;

use lobu_core::transcript::TranscriptWriter;
use lobu_core::{ErrorKind, IdempotencyKey, OrgId, Persist, RunStatus, TerminalStatus, WorkerId};
use lobu_runtime::{RunEvent, Runtime};

use crate::common::*;

pub async fn a_late_subscriber_gets_the_whole_run_replayed(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let k = key("c1");
    // Subscribed before any worker runs: sees everything live.
    let run = send(&rt, &k, "hello world").await;
    let early = rt.subscribe(&k.org, &run).await.unwrap();
    let worker = start(&rt);
    let live = collect(early).await;
    let late = events_of(&rt, &k.org, &run).await;
    assert_eq!(late, live, "the replay equals what a live subscriber saw");
    assert!(matches!(late[0], RunEvent::Accepted { .. }));
    assert_eq!(late.iter().filter(|e| e.is_terminal()).count(), 1);
    assert_eq!(late.last(), Some(&RunEvent::Completed { output: None }));
    assert!(late.iter().any(|e| matches!(e, RunEvent::Output { .. })));
    stop(&rt, worker).await;
}

pub async fn a_subscriber_sees_the_end_of_a_run_executed_by_another_replica(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    // A is a gateway only; B executes.
    let a = fx.builder(&agent).build().unwrap();
    let b = fx.builder_on(fx.replica().await, &agent).build().unwrap();
    let k = key("c1");
    let run = send(&a, &k, "/sleep 200").await;
    let events = a.subscribe(&k.org, &run).await.unwrap();
    let b_worker = start(&b);
    let seen = collect(events).await;
    assert!(matches!(seen.first(), Some(RunEvent::Accepted { .. })));
    assert_eq!(seen.last(), Some(&RunEvent::Completed { output: None }));
    assert_eq!(
        a.wait(&k.org, &run).await.unwrap().status,
        RunStatus::Completed
    );

    // A runtime that never saw the run replays the stored events: the same stream.
    let c = fx.builder_on(fx.replica().await, &agent).build().unwrap();
    let replay = events_of(&c, &k.org, &run).await;
    assert!(matches!(&replay[0], RunEvent::Accepted { run: r, .. } if *r == run));
    assert_eq!(replay, seen, "{replay:?}");
    stop(&b, b_worker).await;
}

/// A waiter on a gateway-only replica learns that a run executed by another replica ended
/// from the backend's signal (PostgreSQL: NOTIFY), not from its next status poll: its poll
/// interval here is a minute. (The file store signals within one process only; another
/// process's waiters poll.)
pub async fn a_waiter_on_another_replica_learns_of_the_end_without_a_poll(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let a = fx
        .builder(&agent)
        .status_poll_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    let b = fx.builder_on(fx.replica().await, &agent).build().unwrap();
    let b_worker = start(&b);
    let k = key("c1");
    for text in ["first", "/fail", "second"] {
        let run = send(&a, &k, text).await;
        let started = std::time::Instant::now();
        let record = within("the waiter on the gateway replica", a.wait(&k.org, &run)).await;
        assert!(record.unwrap().status.is_terminal());
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{text}: the waiter took {:?}, as long as a poll",
            started.elapsed()
        );
    }
    stop(&b, b_worker).await;
}

pub async fn another_orgs_run_is_not_found(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let k = key("c1");
    let run = send(&rt, &k, "secret").await;
    let evil = OrgId::new("evil").unwrap();
    assert_eq!(
        rt.status(&evil, &run).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        rt.subscribe(&evil, &run).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        rt.wait(&evil, &run).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let unknown = lobu_core::RunId::generate();
    assert_eq!(
        rt.status(&k.org, &unknown).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        rt.subscribe(&k.org, &unknown).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

pub async fn bad_input_is_a_typed_error_and_queues_nothing(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let k = key("c1");
    let invalid = |e: lobu_core::Error| assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    invalid(rt.submit(k.clone(), "", None).await.unwrap_err());
    invalid(rt.submit(k.clone(), " \n\t ", None).await.unwrap_err());
    // A payload needs text, an image or a field of the agent's; `images` is a list.
    invalid(
        rt.submit_payload(k.clone(), serde_json::json!({}), None)
            .await
            .unwrap_err(),
    );
    invalid(
        rt.submit_payload(k.clone(), serde_json::json!({"images": "x"}), None)
            .await
            .unwrap_err(),
    );
    invalid(
        rt.submit_payload(k.clone(), serde_json::json!({"text": 7}), None)
            .await
            .unwrap_err(),
    );
    invalid(
        rt.submit_payload(k.clone(), serde_json::json!("text"), None)
            .await
            .unwrap_err(),
    );
    let huge = "x".repeat(lobu_core::MAX_PAYLOAD_BYTES + 1);
    let e = rt.submit(k.clone(), huge, None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge);
    assert_eq!(
        fx.backend.queue.depth().await.unwrap(),
        0,
        "nothing was queued"
    );

    invalid(rt.messages(&k, None, Some(0)).await.unwrap_err());
    invalid(rt.messages(&k, None, Some(201)).await.unwrap_err());
    invalid(rt.list(&k.org, &k.agent, None, 0).await.unwrap_err());
    invalid(rt.list(&k.org, &k.agent, None, 201).await.unwrap_err());
    let page = rt.messages(&k, None, None).await.unwrap();
    assert!(page.messages.is_empty() && !page.has_more);

    let bad = Runtime::builder(fx.backend.clone(), agent.arc())
        .concurrency(0)
        .build();
    invalid(bad.unwrap_err());
    let bad = Runtime::builder(fx.backend.clone(), agent.arc())
        .heartbeat_interval(Duration::from_secs(20))
        .build();
    invalid(bad.unwrap_err());
}

pub async fn a_repeated_idempotency_key_runs_the_turn_once(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let idem = IdempotencyKey::new("msg-1").unwrap();
    let first = rt
        .submit(k.clone(), "once", Some(idem.clone()))
        .await
        .unwrap();
    let again = rt
        .submit(k.clone(), "once", Some(idem.clone()))
        .await
        .unwrap();
    assert!(first.created && !again.created);
    assert_eq!(first.run, again.run);
    finished(&rt, &k, &first.run).await;
    let after = rt.submit(k.clone(), "once", Some(idem)).await.unwrap();
    assert_eq!(
        after.run, first.run,
        "still the same run after it completed"
    );
    assert_eq!(agent.turns().len(), 1);
    assert_eq!(user_texts(&head(&fx.backend, &k).await), ["once"]);
    stop(&rt, worker).await;
}

/// A reset sent again with its idempotency key (a client retrying after a timeout) is the
/// same reset: it queues nothing, so it cannot clear the turns sent after the first one.
/// (Found by lobu-chaos: a retried reset's stalled first copy landed late and cleared a turn.)
pub async fn a_reset_sent_again_with_its_key_is_one_reset_and_clears_no_later_turn(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let before = send(&rt, &k, "before").await;
    finished(&rt, &k, &before).await;
    let idem = IdempotencyKey::new("reset-1").unwrap();
    let first = rt
        .reset_with_key(k.clone(), Some(idem.clone()))
        .await
        .unwrap();
    assert!(first.created);
    finished(&rt, &k, &first.run).await;
    let after = send(&rt, &k, "after").await;
    finished(&rt, &k, &after).await;
    let again = rt.reset_with_key(k.clone(), Some(idem)).await.unwrap();
    assert!(!again.created, "the same key queued another reset");
    assert_eq!(again.run, first.run);
    assert_eq!(user_texts(&head(&fx.backend, &k).await), ["after"]);
    stop(&rt, worker).await;
}

pub async fn a_conversation_held_by_a_lease_is_not_claimed_until_the_lease_ends(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let k = key("c1");
    // Someone outside the runtime holds the conversation (a lease and a claim are one
    // ownership), and keeps holding it for now.
    let held = fx
        .backend
        .locks
        .try_acquire(&k, Duration::from_secs(300))
        .await
        .unwrap()
        .unwrap();
    let worker = start(&rt);
    let run = send(&rt, &k, "waiting").await;
    // Other conversations go on meanwhile.
    let other = key("c2");
    let quick = send(&rt, &other, "meanwhile").await;
    assert_eq!(
        finished(&rt, &other, &quick).await.status,
        RunStatus::Completed
    );
    let record = rt.status(&k.org, &run).await.unwrap();
    assert_eq!(
        (record.status, record.attempts),
        (RunStatus::Pending, 0),
        "an owned conversation's run is not claimed: {record:?}"
    );
    assert!(agent.turns().iter().all(|t| t.seen.is_empty()));

    fx.backend.locks.release(&held).await.unwrap();
    let record = finished(&rt, &k, &run).await;
    assert_eq!(record.status, RunStatus::Completed);
    assert_eq!(record.attempts, 1);
    assert_eq!(rt.metrics().runs_released, 0, "nothing was handed back");
    stop(&rt, worker).await;
}

pub async fn a_lease_left_by_a_dead_holder_keeps_the_run_waiting_until_it_lapses(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let k = key("c1");
    // A crashed holder's lease: nobody renews it, it runs out in 2 s.
    fx.backend
        .locks
        .try_acquire(&k, Duration::from_secs(2))
        .await
        .unwrap()
        .unwrap();
    let worker = start(&rt);
    let run = send(&rt, &k, "waiting").await;
    let record = finished(&rt, &k, &run).await;
    assert_eq!(record.status, RunStatus::Completed);
    assert_eq!(record.attempts, 1, "the run waited without using attempts");
    assert_eq!(
        rt.metrics().runs_released,
        0,
        "the run was never handed back"
    );
    assert_eq!(user_texts(&head(&fx.backend, &k).await), ["waiting"]);
    stop(&rt, worker).await;
}

pub async fn a_turn_persisted_before_a_crash_is_completed_not_run_again(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).build().unwrap();
    let k = key("c1");
    let run = send(&rt, &k, "done already").await;
    // A worker claims the run, persists its turn under its claim (as a store whose commit
    // is two steps does first), and dies before completing the run.
    let ghost = WorkerId::new("ghost").unwrap();
    let ttl = Duration::from_millis(500);
    let claim = fx.backend.queue.claim(&ghost, ttl).await.unwrap().unwrap();
    assert_eq!(claim.run, run);
    let mut writer = TranscriptWriter::new("/ghost");
    writer.user_text("done already").unwrap();
    let written = writer.into_bytes();
    let persist = Persist {
        run: run.clone(),
        status: TerminalStatus::Completed,
        transcript: written.clone(),
        expected: None,
        fence: claim.fence,
        base_len: None,
    };
    fx.backend.sessions.persist(&k, persist).await.unwrap();

    let worker = start(&rt);
    let record = finished(&rt, &k, &run).await;
    assert_eq!(record.status, RunStatus::Completed);
    // Completed by the next attempt, or by the claim that found the turn as the head.
    assert!(record.attempts <= 2, "{record:?}");
    assert!(agent.turns().is_empty(), "the agent was not run again");
    assert_eq!(head(&fx.backend, &k).await, written);
    stop(&rt, worker).await;
}
