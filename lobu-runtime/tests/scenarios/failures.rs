//! Turns that fail, time out, panic or grow too large: nothing reaches the head.

use std::time::Duration;

use lobu_core::{RunStatus, TerminalStatus};
use lobu_runtime::RunEvent;

use crate::common::stall::Stall;
use crate::common::*;

pub async fn a_failed_turn_leaves_the_transcript_as_before(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    // The `retrying` event is stored after the failure is recorded; a retry claimed sooner
    // (the fixture's 50 ms, on a loaded machine) fences it out, so give it room here.
    let rt = fx
        .builder(&agent)
        .max_attempts(2)
        .retry_delay(Duration::from_millis(500))
        .build()
        .unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let first = send(&rt, &k, "first").await;
    finished(&rt, &k, &first).await;
    let before = head(&fx.backend, &k).await;

    let failing = send(&rt, &k, "/fail").await;
    let events = events_of(&rt, &k.org, &failing).await;
    let record = rt.status(&k.org, &failing).await.unwrap();
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.attempts, 2);
    assert!(
        record
            .error
            .as_deref()
            .unwrap()
            .contains("agent failure on attempt 2"),
        "{record:?}"
    );
    assert!(events.iter().any(|e| matches!(e,
        RunEvent::Retrying { attempt: 1, status: TerminalStatus::Failed, error, .. }
            if error.contains("attempt 1"))));
    assert!(
        matches!(events.last(), Some(RunEvent::Failed { error }) if error.contains("attempt 2"))
    );
    assert_eq!(
        head(&fx.backend, &k).await,
        before,
        "byte for byte as before"
    );

    let third = send(&rt, &k, "third").await;
    finished(&rt, &k, &third).await;
    let turns = agent.turns();
    assert_eq!(turns.last().unwrap().seen, ["first"]);
    let bytes = head(&fx.backend, &k).await;
    assert!(bytes.starts_with(&before));
    assert_eq!(user_texts(&bytes), ["first", "third"]);
    assert_eq!(assistant_texts(&bytes)[1], "You said: third (turn 2)");
    assert_eq!(rt.metrics().attempts_failed, 2);
    stop(&rt, worker).await;
}

pub async fn a_timed_out_turn_leaves_no_trace(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    // Turns that must succeed run on runtimes with the usual time limit; only the turn that
    // hangs until cancelled runs where the limit is short.
    let rt = fx.builder(&agent).build().unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let first = send(&rt, &k, "first").await;
    finished(&rt, &k, &first).await;
    stop(&rt, worker).await;
    let before = head(&fx.backend, &k).await;

    let short = fx
        .builder(&agent)
        .max_attempts(1)
        .turn_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let worker = start(&short);
    let hung = send(&short, &k, "/hang").await;
    let events = events_of(&short, &k.org, &hung).await;
    assert!(
        matches!(events.last(), Some(RunEvent::Timeout { .. })),
        "{events:?}"
    );
    let record = short.status(&k.org, &hung).await.unwrap();
    assert_eq!(record.status, RunStatus::Timeout);
    assert_eq!(head(&fx.backend, &k).await, before);
    let turn = agent.turns().pop().unwrap();
    assert!(turn.cancelled, "the agent's cancellation token fired");
    assert!(turn.end.is_some());
    // Removed in the background after the attempt.
    eventually("the scratch dir to be removed", || async {
        (!turn.scratch.exists()).then_some(())
    })
    .await;
    stop(&short, worker).await;

    let rt = fx.builder(&agent).build().unwrap();
    let worker = start(&rt);
    let next = send(&rt, &k, "next").await;
    finished(&rt, &k, &next).await;
    assert_eq!(agent.turns().pop().unwrap().seen, ["first"]);
    stop(&rt, worker).await;
}

pub async fn retries_then_success(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).max_attempts(3).build().unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let run = send(&rt, &k, "/fail-until 3").await;
    let events = events_of(&rt, &k.org, &run).await;
    let record = rt.status(&k.org, &run).await.unwrap();
    assert_eq!(record.status, RunStatus::Completed);
    assert_eq!(record.attempts, 3);
    let retries: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Retrying { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(retries, [1, 2]);
    assert!(events.contains(&RunEvent::Started { attempt: 3 }));
    assert_eq!(events.last(), Some(&RunEvent::Completed { output: None }));
    let bytes = head(&fx.backend, &k).await;
    assert_eq!(
        user_texts(&bytes),
        ["/fail-until 3"],
        "the turn is in the transcript once"
    );
    assert_eq!(agent.turns().len(), 3);
    stop(&rt, worker).await;
}

pub async fn exhausted_attempts_fail_visibly(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).max_attempts(3).build().unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let run = send(&rt, &k, "/fail").await;
    let record = finished(&rt, &k, &run).await;
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.attempts, 3);
    assert!(record.error.unwrap().contains("agent failure on attempt 3"));
    assert_eq!(agent.turns().len(), 3);
    assert!(fx.backend.sessions.hydrate(&k).await.unwrap().is_none());
    stop(&rt, worker).await;
}

pub async fn a_panicking_agent_fails_the_attempt_and_the_worker_goes_on(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx.builder(&agent).max_attempts(1).build().unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let run = send(&rt, &k, "/panic").await;
    let record = finished(&rt, &k, &run).await;
    assert_eq!(record.status, RunStatus::Failed);
    assert!(record.error.unwrap().contains("the test agent panicked"));
    let after = send(&rt, &k, "after").await;
    assert_eq!(finished(&rt, &k, &after).await.status, RunStatus::Completed);
    assert_eq!(user_texts(&head(&fx.backend, &k).await), ["after"]);
    stop(&rt, worker).await;
}

pub async fn an_oversized_transcript_fails_visibly_and_keeps_the_head(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let rt = fx
        .builder(&agent)
        .max_attempts(1)
        .max_transcript_bytes(4096)
        .build()
        .unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let first = send(&rt, &k, "first").await;
    finished(&rt, &k, &first).await;
    let before = head(&fx.backend, &k).await;

    let big = send(&rt, &k, "/big 10000").await;
    let record = finished(&rt, &k, &big).await;
    assert_eq!(record.status, RunStatus::Failed);
    let error = record.error.unwrap();
    assert!(error.contains("too_large"), "{error}");
    assert_eq!(
        head(&fx.backend, &k).await,
        before,
        "nothing truncated, nothing stored"
    );

    let after = send(&rt, &k, "after").await;
    assert_eq!(finished(&rt, &k, &after).await.status, RunStatus::Completed);
    assert_eq!(user_texts(&head(&fx.backend, &k).await), ["first", "after"]);
    stop(&rt, worker).await;
}

pub async fn a_store_that_stops_answering_fails_the_attempt_not_the_worker(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let stall = Stall::new(fx.replica().await);
    let rt = expiring(fx.builder_on(stall.backend(), &agent))
        .concurrency(1)
        .max_attempts(2)
        .build()
        .unwrap();
    let worker = start(&rt);
    let k = key("c1");
    stall.hang_commits(1);
    let run = send(&rt, &k, "hello").await;
    let events = events_of(&rt, &k.org, &run).await;
    // The hung commit is given up after one claim period; the claim lapses and the run is
    // re-delivered as attempt 2 (the worker itself went on).
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RunEvent::Started { attempt: 2 })),
        "{events:?}"
    );
    assert_eq!(events.last(), Some(&RunEvent::Completed { output: None }));
    let record = rt.status(&k.org, &run).await.unwrap();
    assert_eq!(record.attempts, 2);
    assert_eq!(user_texts(&head(&fx.backend, &k).await), ["hello"]);
    stop(&rt, worker).await;
}

pub async fn a_persist_whose_answer_is_lost_completes_the_run_once(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let stall = Stall::new(fx.replica().await);
    // One attempt only: the run must not need a second one to find out the turn persisted.
    let rt = fx
        .builder_on(stall.backend(), &agent)
        .max_attempts(1)
        .build()
        .unwrap();
    let worker = start(&rt);
    let k = key("c1");
    stall.lose_commit_answers(1);
    let run = send(&rt, &k, "hello").await;
    let events = events_of(&rt, &k.org, &run).await;
    assert_eq!(events.last(), Some(&RunEvent::Completed { output: None }));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, RunEvent::Retrying { .. })),
        "{events:?}"
    );
    let record = rt.status(&k.org, &run).await.unwrap();
    assert_eq!(record.status, RunStatus::Completed);
    assert_eq!(record.attempts, 1);
    assert_eq!(user_texts(&head(&fx.backend, &k).await), ["hello"]);
    assert_eq!(agent.turns().len(), 1, "the turn ran once");
    stop(&rt, worker).await;
}

pub async fn a_commit_that_lands_after_the_run_failed_is_refused(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let stall = Stall::new(fx.replica().await);
    // The runtime gives up on a commit after one claim period; the claim then lapses and,
    // on the run's last attempt, the run fails.
    let rt = fx
        .builder_on(stall.backend(), &agent)
        .claim_ttl(Duration::from_secs(2))
        .heartbeat_interval(Duration::from_millis(500))
        .max_attempts(1)
        .build()
        .unwrap();
    let worker = start(&rt);
    let k = key("c1");
    let first = send(&rt, &k, "first").await;
    finished(&rt, &k, &first).await;
    let before = head(&fx.backend, &k).await;

    stall.detach_commits(1);
    let run = send(&rt, &k, "late").await;
    let record = finished(&rt, &k, &run).await;
    assert_eq!(record.status, RunStatus::Failed);
    assert!(
        record.error.as_deref().unwrap().contains("expired"),
        "{record:?}"
    );
    // The commit the runtime gave up on reaches the store only now, after the run failed.
    stall.land_detached();
    let landed = eventually("the late write to reach the store", || async {
        stall.landed().pop()
    })
    .await;
    assert_eq!(
        landed,
        Err(lobu_core::ErrorKind::Fenced),
        "a failed run's write"
    );
    assert_eq!(
        head(&fx.backend, &k).await,
        before,
        "the failed turn left no trace"
    );

    let next = send(&rt, &k, "next").await;
    finished(&rt, &k, &next).await;
    assert_eq!(agent.turns().pop().unwrap().seen, ["first"]);
    stop(&rt, worker).await;
}

pub async fn a_completion_that_fails_for_a_while_is_retried_in_the_same_attempt(store: Store) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let stall = Stall::new(fx.replica().await);
    // One attempt only: losing it to a transient queue error would fail a persisted turn.
    let rt = fx
        .builder_on(stall.backend(), &agent)
        .claim_ttl(Duration::from_secs(5))
        .heartbeat_interval(Duration::from_secs(1))
        .max_attempts(1)
        .build()
        .unwrap();
    let worker = start(&rt);
    let k = key("c1");
    stall.fail_completes(2);
    let run = send(&rt, &k, "hello").await;
    let record = finished(&rt, &k, &run).await;
    assert_eq!(record.status, RunStatus::Completed, "{record:?}");
    assert_eq!(record.attempts, 1);
    assert_eq!(user_texts(&head(&fx.backend, &k).await), ["hello"]);
    assert_eq!(agent.turns().len(), 1, "the turn ran once");
    stop(&rt, worker).await;
}

pub async fn a_turn_committed_on_its_last_attempt_whose_answer_was_lost_ends_completed_once(
    store: Store,
) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let stall = Stall::new(fx.replica().await);
    // One attempt, and after the commit lands every further call to complete fails until the
    // claim lapses: the worker never learns that its turn was committed.
    let rt = expiring(fx.builder_on(stall.backend(), &agent))
        .max_attempts(1)
        .build()
        .unwrap();
    let worker = start(&rt);
    let k = key("c1");
    stall.lose_commit_answers(1);
    stall.fail_completes(1_000);
    let run = send(&rt, &k, "hello").await;
    let record = finished(&rt, &k, &run).await;
    assert_eq!(record.status, RunStatus::Completed, "{record:?}");
    assert_eq!(user_texts(&head(&fx.backend, &k).await), ["hello"]);
    // Even after the claim lapsed and the reaper looked, the run stays completed.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = rt.status(&k.org, &run).await.unwrap();
    assert_eq!(later.status, RunStatus::Completed, "{later:?}");
    assert_eq!(agent.turns().len(), 1, "the turn ran once");
    stall.fail_completes(0);
    stop(&rt, worker).await;
}

pub async fn a_damaged_conversation_fails_its_run_visibly_and_the_next_run_and_a_reset_proceed(
    store: Store,
) {
    let fx = Fixture::new(store).await;
    let agent = ScriptAgent::new();
    let stall = Stall::new(fx.replica().await);
    let rt = fx
        .builder_on(stall.backend(), &agent)
        .max_attempts(2)
        .build()
        .unwrap();
    let worker = start(&rt);
    let k = key("c1");
    stall.corrupt_commits(2);
    let run = send(&rt, &k, "doomed").await;
    let record = finished(&rt, &k, &run).await;
    assert_eq!(
        (record.status, record.attempts),
        (RunStatus::Failed, 2),
        "{record:?}"
    );
    assert!(
        record
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("damaged"),
        "{record:?}"
    );
    let next = send(&rt, &k, "next").await;
    assert_eq!(finished(&rt, &k, &next).await.status, RunStatus::Completed);
    assert_eq!(user_texts(&head(&fx.backend, &k).await), ["next"]);
    let reset = rt.reset(k.clone()).await.unwrap();
    assert_eq!(finished(&rt, &k, &reset).await.status, RunStatus::Completed);
    assert_eq!(fx.backend.sessions.head(&k).await.unwrap(), None);
    stop(&rt, worker).await;
}
