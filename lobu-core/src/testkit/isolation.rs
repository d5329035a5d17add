//! Clauses of isolation: tenants never meet, and distinct ids never collide.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::support::{
    LONG, acquire, assert_head, assert_kind, assert_no_head, claim_all_own, completed, fresh_key,
    new_turn, submit, transcript, turn, unique,
};
use crate::backend::Backend;
use crate::error::ErrorKind;
use crate::id::{AgentId, ConversationId, ConversationKey, OrgId, RunId, WorkerId};
use crate::queue::Commit;

/// Keys that differ only in org (or only in agent) never see each other: hydrate, head,
/// list and clear of one never reach the other, one's lease does not block the other, one's
/// fence is not valid for the other, and one org cannot look up the other's runs.
pub async fn conversations_in_different_orgs_never_see_each_other(backend: &Backend) {
    let ours = fresh_key();
    let theirs = ConversationKey::new(
        OrgId::new(unique("org")).expect("org id"),
        ours.agent.clone(),
        ours.conversation.clone(),
    );
    let other_agent = ConversationKey::new(
        ours.org.clone(),
        AgentId::new(format!("{}-2", ours.agent)).expect("agent id"),
        ours.conversation.clone(),
    );
    let lease = acquire(backend, &ours).await;
    let secret = transcript("our secret", 1);
    let version = turn(backend, &lease, None, &secret).await;

    for other in [&theirs, &other_agent] {
        assert_no_head(backend, other).await;
        let page = backend
            .sessions
            .list(&other.org, &other.agent, None, 10)
            .await;
        assert!(page.expect("list").items.is_empty(), "{other} lists ours");
        // Our fence means nothing there either: the clear is refused and removes nothing.
        let cleared = backend.sessions.clear(other, lease.fence).await;
        assert_kind(
            cleared,
            ErrorKind::Fenced,
            "clearing another org's conversation",
        );
        assert_head(backend, &ours, version, &secret).await;
        // Our fence means nothing there: nobody ever acquired that conversation.
        let write = completed(&RunId::generate(), &secret, None, &lease);
        let result = backend.sessions.persist(other, write).await;
        assert_kind(
            result,
            ErrorKind::Fenced,
            "writing elsewhere with our fence",
        );
    }
    let their_lease = backend
        .locks
        .try_acquire(&theirs, LONG)
        .await
        .expect("acquire");
    let their_lease = their_lease.expect("our lease does not block another org");
    let theirs_bytes = transcript("their own", 1);
    let their_version = turn(backend, &their_lease, None, &theirs_bytes).await;
    assert_head(backend, &theirs, their_version, &theirs_bytes).await;
    assert_head(backend, &ours, version, &secret).await;
    assert_eq!(
        backend
            .sessions
            .clear(&ours, lease.fence)
            .await
            .expect("clear"),
        1
    );
    assert_head(backend, &theirs, their_version, &theirs_bytes).await;

    let run = submit(backend, new_turn(&ours, 1, 1)).await;
    let seen = backend
        .queue
        .status(&theirs.org, &run)
        .await
        .expect("status");
    assert!(seen.is_none(), "another org looked up our run: {seen:?}");
    let ours_seen = backend.queue.status(&ours.org, &run).await.expect("status");
    assert!(ours_seen.is_some(), "our org finds its run");
}

/// Ids that a naive path or key sanitiser would merge (`a:b` and `a_b`, `x/../y` and `y`,
/// `a/b` and `a%2Fb`, case, Unicode normalisation, dots, 512-byte ids) stay distinct
/// conversations, orgs, leases and run lanes.
pub async fn ids_a_naive_sanitiser_would_merge_stay_distinct(backend: &Backend) {
    let base = fresh_key();
    let long = "é".repeat(256);
    let conversations = [
        "a:b", "a_b", "a/b", "a%2Fb", "a%3Ab", "a\\b", "a b", "a.b", "x/../y", "y", "../y", ".",
        "..", "Conv", "conv", "CONV", "\u{fc}", "u\u{308}", "😀", "con", "nul.txt", " a", "a ",
        &long,
    ];
    let mut leases = Vec::new();
    for id in conversations {
        let key = ConversationKey::new(
            base.org.clone(),
            base.agent.clone(),
            ConversationId::new(id).expect("conversation id"),
        );
        // Every lease is taken while the others are held: distinct ids, distinct locks.
        let lease = backend
            .locks
            .try_acquire(&key, LONG)
            .await
            .expect("acquire");
        let lease = lease.unwrap_or_else(|| panic!("{key}: lease busy, it collides"));
        let bytes = Bytes::from(format!("{{\"type\":\"session\",\"id\":{id:?}}}\n"));
        let version = turn(backend, &lease, None, &bytes).await;
        leases.push((key, version, bytes, lease));
    }
    for (key, version, bytes, _) in &leases {
        assert_head(backend, key, *version, bytes).await;
    }
    let page = backend
        .sessions
        .list(&base.org, &base.agent, None, 200)
        .await;
    let listed: BTreeSet<String> = page
        .expect("list")
        .items
        .into_iter()
        .map(|s| s.conversation.as_str().to_owned())
        .collect();
    let expected: BTreeSet<String> = conversations.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(listed, expected, "the listing round-trips every id");
    let (cleared, _, _, lease) = &leases[0];
    let removed = backend.sessions.clear(cleared, lease.fence).await;
    assert_eq!(removed.expect("clear"), 1);
    for (key, version, bytes, _) in &leases[1..] {
        assert_head(backend, key, *version, bytes).await;
    }

    let prefix = unique("org");
    let mut orgs = Vec::new();
    for suffix in [":t", "_t", "/t", "%2Ft", "/../t"] {
        let key = ConversationKey::new(
            OrgId::new(format!("{prefix}{suffix}")).expect("org id"),
            base.agent.clone(),
            base.conversation.clone(),
        );
        let lease = acquire(backend, &key).await;
        let bytes = transcript(&format!("org {suffix}"), 1);
        orgs.push((key, turn(backend, &lease, None, &bytes).await, bytes));
    }
    for (key, version, bytes) in &orgs {
        assert_head(backend, key, *version, bytes).await;
    }

    // Two lanes, so both first runs are claimable at once (once their leases are given up:
    // a live lease owns its conversation).
    for (_, _, _, lease) in &leases[..2] {
        backend.locks.release(lease).await.expect("release");
    }
    let (colon, underscore) = (&leases[0].0, &leases[1].0);
    let runs = [
        submit(backend, new_turn(colon, 1, 1)).await,
        submit(backend, new_turn(underscore, 1, 1)).await,
    ];
    let worker = WorkerId::generate();
    let mine = [colon, underscore];
    let claims = claim_all_own(backend.queue.as_ref(), &worker, LONG, &mine, 2).await;
    let claimed: BTreeSet<&RunId> = claims.iter().map(|c| &c.run).collect();
    assert_eq!(
        claimed,
        runs.iter().collect(),
        "both lanes claimable at once"
    );
    for claim in &claims {
        backend
            .queue
            .complete(claim, Commit::default())
            .await
            .expect("complete");
    }
}
