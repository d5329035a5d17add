//! Clauses of a conversation's history: turn chains, `clear`, `list` and `prune`.

use std::time::{Duration, SystemTime};

use super::Capabilities;
use super::support::{
    acquire, assert_head, assert_kind, assert_no_head, clear, extended, forensic, fresh_key,
    header, hydrate, sibling, transcript, turn, unique,
};
use crate::backend::Backend;
use crate::error::ErrorKind;
use crate::id::{AgentId, ConversationKey, OrgId};
use crate::session::{ConversationSummary, MAX_PAGE_LIMIT, TerminalStatus, Version};
use crate::transcript;

/// A chain of turns, each hydrating the last and persisting it extended by one exchange
/// with the hydrated version as `expected`, always hydrates the last turn exactly; the
/// listing counts every turn.
pub async fn a_chain_of_turns_hydrates_the_last_turn_exactly(backend: &Backend) {
    const TURNS: usize = 25;
    let key = fresh_key();
    let lease = acquire(backend, &key).await;
    let mut bytes = bytes::Bytes::from(header());
    let mut expected: Option<Version> = None;
    for n in 0..TURNS {
        match backend.sessions.hydrate(&key).await.expect("hydrate") {
            None => assert_eq!(n, 0, "turn {n} found no head"),
            Some(snapshot) => {
                assert_eq!(Some(snapshot.version), expected, "turn {n} hydrated");
                assert!(
                    snapshot.transcript == bytes,
                    "turn {n} hydrated other bytes"
                );
            }
        }
        bytes = extended(&bytes, n, &format!("turn {n}: ça va? 👍"));
        let version = turn(backend, &lease, expected, &bytes).await;
        assert!(expected.is_none_or(|e| version > e), "versions grow");
        expected = Some(version);
    }
    let last = expected.expect("a version");
    assert_head(backend, &key, last, &bytes).await;
    let page = backend.sessions.list(&key.org, &key.agent, None, 10).await;
    let page = page.expect("list");
    assert_eq!(page.items.len(), 1, "one conversation listed");
    let summary = &page.items[0];
    assert_eq!(summary.turns, TURNS as u64, "turns listed");
    assert_eq!(summary.version, last);
    assert_eq!(summary.bytes, bytes.len() as u64);
}

/// `clear` removes every snapshot of one conversation and returns how many (3), leaves a
/// sibling alone, returns 0 the second time; afterwards there is no head, and the next
/// write (expecting no head) gets a version greater than any before.
pub async fn clear_removes_one_conversation_and_leaves_its_sibling(backend: &Backend) {
    let key = fresh_key();
    let other = sibling(&key, "sibling");
    let lease = acquire(backend, &key).await;
    let other_lease = acquire(backend, &other).await;
    let mut bytes = transcript("to be forgotten", 1);
    let mut versions = vec![turn(backend, &lease, None, &bytes).await];
    for n in 1..3 {
        bytes = extended(&bytes, n, "more to forget");
        versions.push(turn(backend, &lease, versions.last().copied(), &bytes).await);
    }
    let kept = transcript("the sibling stays", 1);
    let kept_version = turn(backend, &other_lease, None, &kept).await;

    assert_eq!(clear(backend, &key, lease.fence).await, 3);
    assert_no_head(backend, &key).await;
    assert_eq!(clear(backend, &key, lease.fence).await, 0);
    assert_head(backend, &other, kept_version, &kept).await;
    let page = backend.sessions.list(&key.org, &key.agent, None, 10).await;
    let listed: Vec<_> = page.expect("list").items;
    let ids: Vec<&str> = listed.iter().map(|s| s.conversation.as_str()).collect();
    assert_eq!(ids, ["sibling"], "only the sibling is listed");

    let fresh = transcript("a new beginning", 1);
    let version = turn(backend, &lease, None, &fresh).await;
    let newest = versions.iter().max().copied().expect("versions");
    assert!(
        version > newest,
        "{version} after clear reuses or precedes {newest}"
    );
    assert_head(backend, &key, version, &fresh).await;
    let never = sibling(&key, "never-written");
    let never_lease = acquire(backend, &never).await;
    assert_eq!(clear(backend, &never, never_lease.fence).await, 0);
}

/// `clear` counts snapshots of every status, not only completed ones.
pub async fn clear_counts_non_completed_snapshots_too(backend: &Backend) {
    let key = fresh_key();
    let lease = acquire(backend, &key).await;
    let a = transcript("counted", 1);
    let v1 = turn(backend, &lease, None, &a).await;
    let b = extended(&a, 1, "counted too");
    turn(backend, &lease, Some(v1), &b).await;
    let broken = extended(&b, 2, "this one failed");
    forensic(backend, &lease, TerminalStatus::Failed, &broken).await;
    forensic(backend, &lease, TerminalStatus::Timeout, &broken).await;
    assert_eq!(clear(backend, &key, lease.fence).await, 4);
    assert_eq!(clear(backend, &key, lease.fence).await, 0);
}

/// `list` pages through one org's and agent's conversations that have a head, ordered by
/// conversation id: with limit 2, three conversations make two pages and `next_cursor` is
/// only set while more remain; an unknown cursor starts after its text; each summary
/// reports the head; a limit outside `1..=200` is `InvalidInput`.
pub async fn listing_pages_through_an_agents_conversations_in_order(backend: &Backend) {
    let first = fresh_key();
    let (org, agent) = (first.org.clone(), first.agent.clone());
    let key = |id: &str| sibling(&first, id);
    let started = SystemTime::now();
    let mut heads = Vec::new();
    // Written out of order; listed by id.
    for (id, turns) in [("b-conv", 2), ("a-conv", 1), ("c-conv", 3)] {
        let lease = acquire(backend, &key(id)).await;
        let mut bytes = transcript(&format!("Title of {id}"), 1);
        let mut version = turn(backend, &lease, None, &bytes).await;
        for n in 1..turns {
            bytes = extended(&bytes, n, "and then");
            version = turn(backend, &lease, Some(version), &bytes).await;
        }
        heads.push((id, turns, version, bytes));
    }
    heads.sort_by(|a, b| a.0.cmp(b.0));
    // Not listed: no head, another agent, another org.
    let failed_only = acquire(backend, &key("d-failed-only")).await;
    forensic(
        backend,
        &failed_only,
        TerminalStatus::Failed,
        &transcript("x", 1),
    )
    .await;
    let other_agent = AgentId::new(format!("{agent}-other")).expect("agent id");
    let other_org = OrgId::new(unique("org")).expect("org id");
    for other in [
        ConversationKey::new(org.clone(), other_agent, first.conversation.clone()),
        ConversationKey::new(other_org, agent.clone(), first.conversation.clone()),
    ] {
        let lease = acquire(backend, &other).await;
        turn(backend, &lease, None, &transcript("elsewhere", 1)).await;
    }

    let list = |cursor: Option<String>, limit| {
        let (org, agent) = (org.clone(), agent.clone());
        async move {
            let page = backend
                .sessions
                .list(&org, &agent, cursor.as_deref(), limit)
                .await;
            page.expect("list")
        }
    };
    let ids = |items: &[ConversationSummary]| {
        let ids = items.iter().map(|s| s.conversation.as_str().to_owned());
        ids.collect::<Vec<_>>()
    };
    let page1 = list(None, 2).await;
    assert_eq!(ids(&page1.items), ["a-conv", "b-conv"], "first page");
    let cursor = page1.next_cursor.clone();
    assert!(
        cursor.is_some(),
        "a full page with more to come has a cursor"
    );
    let page2 = list(cursor, 2).await;
    assert_eq!(ids(&page2.items), ["c-conv"], "second page");
    assert_eq!(page2.next_cursor, None, "the last page has no cursor");
    let whole = list(None, 3).await;
    assert_eq!(ids(&whole.items), ["a-conv", "b-conv", "c-conv"]);
    assert_eq!(
        whole.next_cursor, None,
        "nothing remains after an exact fit"
    );
    let widest = list(None, MAX_PAGE_LIMIT).await;
    assert_eq!(widest, whole, "a wider page lists the same");
    let after = list(Some("a-conv-unknown".to_owned()), 10).await;
    assert_eq!(ids(&after.items), ["b-conv", "c-conv"], "an unknown cursor");

    let slack = Duration::from_secs(5);
    for (summary, (id, turns, version, bytes)) in whole.items.iter().zip(&heads) {
        assert_eq!(summary.conversation.as_str(), *id);
        assert_eq!(summary.version, *version, "{id}: head version");
        assert_eq!(summary.turns, *turns as u64, "{id}: turns");
        assert_eq!(summary.bytes, bytes.len() as u64, "{id}: bytes");
        assert_eq!(summary.title, transcript::title(bytes), "{id}: title");
        let latest = SystemTime::now() + slack;
        let when = summary.updated_at;
        assert!(
            when + slack >= started && when <= latest,
            "{id}: updated_at"
        );
    }
    for limit in [0, MAX_PAGE_LIMIT + 1] {
        let result = backend.sessions.list(&org, &agent, None, limit).await;
        assert_kind(result, ErrorKind::InvalidInput, "a limit outside 1..=200");
    }
}

/// `prune(idle_before)` removes whole conversations whose head was written before the
/// cutoff (all their snapshots) and non-completed snapshots older than it, and keeps
/// everything newer; versions are not reused afterwards. It removes every org's old data:
/// run this clause on a backend of its own.
pub async fn prune_removes_idle_conversations_and_keeps_fresh_ones(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let idle = fresh_key();
    let mixed = sibling(&idle, "mixed");
    let fresh = sibling(&idle, "fresh");
    let (idle_lease, mixed_lease) = (
        acquire(backend, &idle).await,
        acquire(backend, &mixed).await,
    );
    let fresh_lease = acquire(backend, &fresh).await;
    let old = transcript("long ago", 1);
    let v1 = turn(backend, &idle_lease, None, &old).await;
    let older = extended(&old, 1, "still long ago");
    let v2 = turn(backend, &idle_lease, Some(v1), &older).await;
    forensic(backend, &idle_lease, TerminalStatus::Failed, &older).await;
    forensic(backend, &mixed_lease, TerminalStatus::Failed, &old).await;

    // A conversation with a live owner is never pruned: give the idle one up first.
    backend.locks.release(&idle_lease).await.expect("release");
    tokio::time::sleep(capabilities.settle).await;
    let cutoff = SystemTime::now();
    tokio::time::sleep(capabilities.settle).await;

    let recent = transcript("just now", 1);
    let mixed_head = turn(backend, &mixed_lease, None, &recent).await;
    let fresh_head = turn(backend, &fresh_lease, None, &recent).await;
    forensic(backend, &fresh_lease, TerminalStatus::Timeout, &recent).await;

    let report = backend.sessions.prune(cutoff).await.expect("prune");
    assert!(
        report.conversations >= 1,
        "the idle conversation: {report:?}"
    );
    assert!(
        report.snapshots >= 4,
        "its 3 snapshots and an old failed one: {report:?}"
    );
    assert_no_head(backend, &idle).await;
    assert_head(backend, &mixed, mixed_head, &recent).await;
    assert_head(backend, &fresh, fresh_head, &recent).await;
    let page = backend
        .sessions
        .list(&idle.org, &idle.agent, None, 10)
        .await;
    let listed: Vec<_> = page
        .expect("list")
        .items
        .into_iter()
        .map(|s| s.conversation)
        .collect();
    assert_eq!(listed.len(), 2, "the idle conversation is gone: {listed:?}");

    let idle_lease = acquire(backend, &idle).await;
    let again = transcript("back again", 1);
    let v3 = turn(backend, &idle_lease, None, &again).await;
    assert!(v3 > v2, "{v3} after prune reuses or precedes {v2}");
    assert_eq!(hydrate(backend, &idle).await.version, v3);
    assert_eq!(clear(backend, &idle, idle_lease.fence).await, 1);
    let mixed_cleared = clear(backend, &mixed, mixed_lease.fence).await;
    assert_eq!(mixed_cleared, 1, "old failed pruned");
    assert_eq!(
        clear(backend, &fresh, fresh_lease.fence).await,
        2,
        "fresh kept"
    );
}
