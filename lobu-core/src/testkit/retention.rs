//! Clauses of retention with a policy: dry runs, per-agent windows, the dead-letter window
//! of failed runs, forensic copies' own window, and bounded calls. Each removes every org's
//! old data: run them on a backend of their own (the macro gives every clause its own).

use std::time::SystemTime;

use super::Capabilities;
use super::support::{
    LONG, acquire, assert_kind, assert_no_head, claim_mine, forensic, fresh_key, hydrate, new_turn,
    sibling, submit, transcript, turn,
};
use crate::backend::Backend;
use crate::control::{Failure, Retry};
use crate::error::ErrorKind;
use crate::id::{AgentId, ConversationKey, RunId, WorkerId};
use crate::queue::Commit;
use crate::retention::{Agents, EventPrune, IdlePrune, RunPrune};
use crate::session::{PruneReport, TerminalStatus};

/// A conversation with a head and no owner.
async fn idle_conversation(backend: &Backend, key: &ConversationKey) {
    let lease = acquire(backend, key).await;
    turn(backend, &lease, None, &transcript("idle", 1)).await;
    backend.locks.release(&lease).await.expect("release");
}

/// A finished run of `key` with two events; `failed` ends it failed, else completed.
async fn finished_run(backend: &Backend, key: &ConversationKey, failed: bool) -> RunId {
    let run = submit(backend, new_turn(key, 0, 1)).await;
    let claim = claim_mine(backend, &WorkerId::generate(), LONG, &[key]).await;
    let events = [
        r#"{"type":"output"}"#.to_owned(),
        r#"{"type":"output"}"#.to_owned(),
    ];
    backend
        .queue
        .record_events(&claim, &events)
        .await
        .expect("events");
    if failed {
        let failure = Failure::new(TerminalStatus::Failed, "boom").retry(Retry::Never);
        backend.queue.fail(&claim, &failure).await.expect("fail");
    } else {
        backend
            .queue
            .complete(&claim, Commit::default())
            .await
            .expect("complete");
    }
    run
}

/// Wait until a cutoff taken now lies clearly after everything written so far.
async fn cutoff(capabilities: &Capabilities) -> SystemTime {
    tokio::time::sleep(capabilities.settle).await;
    let cutoff = SystemTime::now();
    tokio::time::sleep(capabilities.settle).await;
    cutoff
}

fn idle(cutoff: SystemTime) -> IdlePrune {
    IdlePrune::everything_before(cutoff)
}

/// A dry run of each prune reports exactly what the real one then removes, and removes
/// nothing.
pub async fn a_dry_run_counts_what_a_prune_would_remove_and_removes_nothing(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let key = fresh_key();
    let kept = sibling(&key, "with-forensic");
    idle_conversation(backend, &key).await;
    let lease = acquire(backend, &kept).await;
    forensic(backend, &lease, TerminalStatus::Failed, &transcript("x", 1)).await;
    backend.locks.release(&lease).await.expect("release");
    let run = finished_run(backend, &kept, false).await;
    let cutoff = cutoff(capabilities).await;

    let dry = |prune: IdlePrune| IdlePrune {
        dry_run: true,
        ..prune
    };
    let counted = backend
        .sessions
        .prune_with(&dry(idle(cutoff)))
        .await
        .expect("dry prune");
    let expected = PruneReport {
        conversations: 1,
        snapshots: 2,
    };
    assert_eq!(
        counted, expected,
        "one idle conversation and one forensic copy"
    );
    hydrate(backend, &key).await;
    let events = EventPrune {
        dry_run: true,
        ..EventPrune::everything_before(cutoff)
    };
    assert_eq!(
        backend
            .queue
            .prune_events_with(&events)
            .await
            .expect("dry events"),
        2
    );
    let runs = RunPrune {
        dry_run: true,
        ..RunPrune::everything_before(cutoff)
    };
    assert_eq!(
        backend
            .queue
            .prune_runs_with(&runs)
            .await
            .expect("dry runs"),
        1
    );
    let page = backend
        .queue
        .read_events(&kept.org, &run, 0, 10)
        .await
        .expect("read");
    assert_eq!(
        page.expect("the run is kept").events.len(),
        2,
        "events are kept"
    );

    assert_eq!(
        backend
            .sessions
            .prune_with(&idle(cutoff))
            .await
            .expect("prune"),
        expected
    );
    assert_no_head(backend, &key).await;
    let events = EventPrune::everything_before(cutoff);
    assert_eq!(
        backend
            .queue
            .prune_events_with(&events)
            .await
            .expect("events"),
        2
    );
    let runs = RunPrune::everything_before(cutoff);
    assert_eq!(backend.queue.prune_runs_with(&runs).await.expect("runs"), 1);
    assert!(
        backend
            .queue
            .status(&kept.org, &run)
            .await
            .expect("status")
            .is_none()
    );
}

/// An idle prune of one agent removes only its conversations; "all but" spares the named
/// agents; a limit of 0 is `InvalidInput`.
pub async fn an_idle_prune_of_one_agent_leaves_the_others(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let bot = fresh_key();
    let helper = ConversationKey::new(
        bot.org.clone(),
        AgentId::new("helper").expect("agent"),
        bot.conversation.clone(),
    );
    for key in [&bot, &helper] {
        idle_conversation(backend, key).await;
    }
    let cutoff = cutoff(capabilities).await;
    let only_bot = IdlePrune {
        agents: Agents::Only(bot.agent.clone()),
        ..idle(cutoff)
    };
    let report = backend
        .sessions
        .prune_with(&only_bot)
        .await
        .expect("prune one agent");
    assert_eq!(report.conversations, 1);
    assert_no_head(backend, &bot).await;
    hydrate(backend, &helper).await;
    let but_helper = IdlePrune {
        agents: Agents::AllExcept(vec![helper.agent.clone()]),
        ..idle(cutoff)
    };
    let report = backend
        .sessions
        .prune_with(&but_helper)
        .await
        .expect("prune all but");
    assert_eq!(report.conversations, 0);
    hydrate(backend, &helper).await;
    assert_eq!(
        backend
            .sessions
            .prune_with(&idle(cutoff))
            .await
            .expect("prune")
            .conversations,
        1
    );
    assert_no_head(backend, &helper).await;
    let zero = IdlePrune {
        limit: 0,
        ..idle(cutoff)
    };
    assert_kind(
        backend.sessions.prune_with(&zero).await,
        ErrorKind::InvalidInput,
        "limit 0",
    );
}

/// Failed runs are kept for their own (longer) window: a prune whose failed cutoff is
/// earlier removes the completed run and keeps the failed one.
pub async fn failed_runs_are_kept_for_their_own_window(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let key = fresh_key();
    let done = finished_run(backend, &key, false).await;
    let failed = finished_run(backend, &sibling(&key, "failed"), true).await;
    let cutoff = cutoff(capabilities).await;
    let dead_letters_kept = RunPrune {
        failed_before: SystemTime::UNIX_EPOCH,
        ..RunPrune::everything_before(cutoff)
    };
    assert_eq!(
        backend
            .queue
            .prune_runs_with(&dead_letters_kept)
            .await
            .expect("prune"),
        1
    );
    let status = |run: RunId| {
        let (queue, org) = (backend.queue.clone(), key.org.clone());
        async move { queue.status(&org, &run).await.expect("status") }
    };
    assert!(status(done).await.is_none(), "the completed run goes");
    assert!(
        status(failed.clone()).await.is_some(),
        "the failed run stays"
    );
    assert_eq!(backend.queue.prune_runs(cutoff).await.expect("prune"), 1);
    assert!(status(failed).await.is_none());
    let zero = RunPrune {
        limit: 0,
        ..RunPrune::everything_before(cutoff)
    };
    assert_kind(
        backend.queue.prune_runs_with(&zero).await,
        ErrorKind::InvalidInput,
        "limit 0",
    );
}

/// Forensic copies have their own window: a prune of old forensic copies alone keeps every
/// conversation and every completed snapshot, and fresh forensic copies.
pub async fn forensic_copies_have_their_own_window(backend: &Backend, capabilities: &Capabilities) {
    let key = fresh_key();
    let lease = acquire(backend, &key).await;
    let bytes = transcript("kept", 1);
    let version = turn(backend, &lease, None, &bytes).await;
    forensic(
        backend,
        &lease,
        TerminalStatus::Failed,
        &transcript("old", 1),
    )
    .await;
    let cutoff = cutoff(capabilities).await;
    forensic(
        backend,
        &lease,
        TerminalStatus::Timeout,
        &transcript("new", 1),
    )
    .await;
    backend.locks.release(&lease).await.expect("release");
    let forensic_only = IdlePrune {
        idle_before: None,
        ..idle(cutoff)
    };
    let report = backend
        .sessions
        .prune_with(&forensic_only)
        .await
        .expect("prune");
    assert_eq!(
        report,
        PruneReport {
            conversations: 0,
            snapshots: 1
        }
    );
    assert_eq!(hydrate(backend, &key).await.version, version);
    let again = backend
        .sessions
        .prune_with(&forensic_only)
        .await
        .expect("again");
    assert_eq!(again, PruneReport::default(), "the fresh copy stays");
}

/// A bounded prune removes at most its limit; the next call goes on, and a call after the
/// last finds nothing.
pub async fn a_bounded_prune_removes_at_most_its_limit_and_the_next_goes_on(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let key = fresh_key();
    let keys = [key.clone(), sibling(&key, "two"), sibling(&key, "three")];
    for key in &keys {
        idle_conversation(backend, key).await;
        finished_run(backend, key, false).await;
    }
    let cutoff = cutoff(capabilities).await;
    let bounded = IdlePrune {
        limit: 2,
        ..idle(cutoff)
    };
    let mut removed = Vec::new();
    for _ in 0..3 {
        removed.push(
            backend
                .sessions
                .prune_with(&bounded)
                .await
                .expect("prune")
                .conversations,
        );
    }
    assert_eq!(removed, [2, 1, 0], "conversations per bounded call");
    let events = EventPrune {
        limit: 4,
        ..EventPrune::everything_before(cutoff)
    };
    let mut removed = Vec::new();
    for _ in 0..3 {
        removed.push(
            backend
                .queue
                .prune_events_with(&events)
                .await
                .expect("events"),
        );
    }
    assert_eq!(removed, [4, 2, 0], "events per bounded call");
    let runs = RunPrune {
        limit: 2,
        ..RunPrune::everything_before(cutoff)
    };
    let mut removed = Vec::new();
    for _ in 0..3 {
        removed.push(backend.queue.prune_runs_with(&runs).await.expect("runs"));
    }
    assert_eq!(removed, [2, 1, 0], "runs per bounded call");
}
