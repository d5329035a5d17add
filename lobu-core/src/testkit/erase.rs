//! Clauses of erasure: a conversation, an agent's conversations, a whole org; nothing else.

use super::support::{
    LONG, acquire, assert_head, assert_no_head, claim_mine, forensic, fresh_key, new_turn, sibling,
    submit, transcript,
};
use crate::backend::Backend;
use crate::erase::{EraseScope, ErasureReport};
use crate::id::{AgentId, ConversationKey, IdempotencyKey, WorkerId};
use crate::queue::Commit;
use crate::session::TerminalStatus;

/// Give `key` everything a store can hold: a committed turn with events and an idempotency
/// key, a forensic copy, and a waiting run. Returns the head and its bytes.
async fn populate(backend: &Backend, key: &ConversationKey) -> (crate::Version, bytes::Bytes) {
    let queue = &backend.queue;
    let mut keyed = new_turn(key, 0, 3);
    keyed.idempotency_key = Some(IdempotencyKey::new("erase-me").expect("key"));
    submit(backend, keyed).await;
    let claim = claim_mine(backend, &WorkerId::generate(), LONG, &[key]).await;
    let event = r#"{"type":"output","text":"secret"}"#.to_owned();
    queue
        .record_events(&claim, &[event.clone(), event])
        .await
        .expect("events");
    let bytes = transcript("secret", 2);
    let commit = Commit::transcript(bytes.clone(), None);
    let version = queue.complete(&claim, commit).await.expect("commit");
    let lease = acquire(backend, key).await;
    forensic(backend, &lease, TerminalStatus::Failed, &transcript("x", 1)).await;
    backend.locks.release(&lease).await.expect("release");
    submit(backend, new_turn(key, 1, 3)).await;
    (version.expect("a head"), bytes)
}

/// Erasing a conversation, then an agent's conversations, then an org removes each scope's
/// transcripts, forensic copies, runs (waiting ones too), events and idempotency keys, with a
/// report of what went; other conversations, agents and orgs are left exactly as they were.
pub async fn erasure_removes_every_trace_of_its_scope_and_nothing_else(backend: &Backend) {
    let one = fresh_key();
    let two = sibling(&one, "second");
    let helper = ConversationKey::new(
        one.org.clone(),
        AgentId::new("helper").expect("agent"),
        one.conversation.clone(),
    );
    let other_org =
        ConversationKey::new(fresh_key().org, one.agent.clone(), one.conversation.clone());
    let mut heads = Vec::new();
    for key in [&one, &two, &helper, &other_org] {
        heads.push(populate(backend, key).await);
    }
    let (sessions, queue) = (&backend.sessions, &backend.queue);
    let first_run = |key: &ConversationKey| {
        let mut run = new_turn(key, 9, 3);
        run.idempotency_key = Some(IdempotencyKey::new("erase-me").expect("key"));
        run
    };
    let kept = queue.submit(first_run(&other_org)).await.expect("submit");
    assert!(!kept.created, "the other org's key is still known");

    let report = sessions
        .erase(&EraseScope::Conversation(one.clone()))
        .await
        .expect("erase a conversation");
    let whole = ErasureReport {
        conversations: 1,
        snapshots: 2,
        runs: 2,
        events: 2,
    };
    assert_eq!(report, whole);
    assert_no_head(backend, &one).await;
    let listed = sessions
        .list(&one.org, &one.agent, None, 10)
        .await
        .expect("list");
    let ids: Vec<&str> = listed
        .items
        .iter()
        .map(|c| c.conversation.as_str())
        .collect();
    assert_eq!(ids, ["second"]);
    let again = queue.submit(first_run(&one)).await.expect("submit");
    assert!(again.created, "the erased conversation's key is forgotten");

    let report = sessions
        .erase(&EraseScope::Agent(one.org.clone(), one.agent.clone()))
        .await
        .expect("erase an agent");
    assert_eq!(report.conversations, 2, "{report:?}");
    assert_eq!(report.runs, 3, "{report:?}");
    assert_no_head(backend, &two).await;
    assert_head(backend, &helper, heads[2].0, &heads[2].1).await;

    let report = sessions
        .erase(&EraseScope::Org(one.org.clone()))
        .await
        .expect("erase an org");
    assert_eq!(
        report, whole,
        "only the helper agent's conversation was left"
    );
    assert_no_head(backend, &helper).await;
    let nothing = sessions
        .erase(&EraseScope::Org(one.org.clone()))
        .await
        .expect("erase again");
    assert_eq!(nothing, ErasureReport::default());
    assert_head(backend, &other_org, heads[3].0, &heads[3].1).await;
    let record = queue
        .status(&other_org.org, &kept.run)
        .await
        .expect("status");
    assert!(record.is_some(), "the other org's runs stay");
}
