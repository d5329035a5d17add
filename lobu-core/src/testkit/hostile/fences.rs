//! Versions and fences that are stale, from the future, or from another conversation or org.

use super::{StoreDump, Watched};
use crate::backend::Backend;
use crate::control::Failure;
use crate::error::ErrorKind;
use crate::id::{ConversationKey, OrgId, RunId, WorkerId};
use crate::lock::{Fence, Lease};
use crate::queue::{Claim, Commit};
use crate::session::{TerminalStatus, Version};
use crate::testkit::support::{
    LONG, acquire, claim_mine, completed, extended, fresh_key, new_turn, sibling, submit,
    transcript, turn, write,
};

/// Refused writes of the clause: what is wrong, the expected version and the fence.
type BadWrite = (&'static str, Option<Version>, Fence, ErrorKind);

/// A conversation `key` with two heads and two leases (the first one stale), its sibling and
/// its twin in another org, each with a head and a live lease: every version and fence below
/// is real somewhere, just not the newest of `key`. Each refused call changes no byte:
///
/// * `persist` with a stale, future (`+1 000 000`, `u64::MAX`), zero, sibling's or other
///   org's fence is `Fenced`; with the right fence but an expected version that is stale,
///   from the future (`u64::MAX` too), absent, or the sibling's or other org's head, it is
///   `Conflict`;
/// * `clear` and `renew` with any of those fences are `Fenced`;
/// * `heartbeat`, `complete`, `fail` and `release` of a claim whose fence, worker or
///   conversation was forged are `Fenced`; of a run that does not exist (another run id, or
///   the run in another org) `Fenced` or `NotFound`.
pub async fn stale_future_and_foreign_versions_and_fences_change_nothing(
    backend: &Backend,
    dump: &dyn StoreDump,
) {
    let key = fresh_key();
    let sibling_key = sibling(&key, "sibling");
    let other_org = ConversationKey::new(
        OrgId::new(format!("{}-other", key.org)).expect("org id"),
        key.agent.clone(),
        key.conversation.clone(),
    );
    let stale = acquire(backend, &key).await;
    let first = transcript("first", 1);
    let v1 = turn(backend, &stale, None, &first).await;
    backend.locks.release(&stale).await.expect("release");
    let lease = acquire(backend, &key).await;
    let second = extended(&first, 1, "second");
    let v2 = turn(backend, &lease, Some(v1), &second).await;
    let sibling_lease = acquire(backend, &sibling_key).await;
    let sibling_head = turn(backend, &sibling_lease, None, &transcript("sib", 1)).await;
    let other_lease = acquire(backend, &other_org).await;
    let other_head = turn(backend, &other_lease, None, &transcript("other", 1)).await;
    let newest = lease.fence.max(sibling_lease.fence).max(other_lease.fence);

    let mut watched = Watched::new(backend, dump);
    for k in [&key, &sibling_key, &other_org] {
        watched.key(k);
    }
    let bad_fences = [
        ("a stale fence", stale.fence),
        ("a fence from the future", Fence(newest.0 + 1_000_000)),
        ("fence u64::MAX", Fence(u64::MAX)),
        ("fence zero", Fence(0)),
        ("the sibling's fence", sibling_lease.fence),
        ("another org's fence", other_lease.fence),
    ];
    for (what, fence) in &bad_fences {
        assert_ne!(
            *fence, lease.fence,
            "{what} must differ from the newest fence"
        );
    }
    let mut writes: Vec<BadWrite> = bad_fences
        .iter()
        .map(|(what, fence)| (*what, Some(v2), *fence, ErrorKind::Fenced))
        .collect();
    let bad_versions = [
        ("a stale expected version", Some(v1)),
        (
            "an expected version from the future",
            Some(Version(v2.0 + 1_000_000)),
        ),
        ("expected version u64::MAX", Some(Version(u64::MAX))),
        ("no expected version over a head", None),
        ("the sibling's head version", Some(sibling_head)),
        ("another org's head version", Some(other_head)),
    ];
    for (what, expected) in bad_versions {
        if expected != Some(v2) {
            writes.push((what, expected, lease.fence, ErrorKind::Conflict));
        }
    }

    let before = watched.state().await;
    let third = extended(&second, 2, "never stored");
    for (what, expected, fence, kind) in writes {
        for status in [TerminalStatus::Completed, TerminalStatus::Failed] {
            if status != TerminalStatus::Completed && kind == ErrorKind::Conflict {
                continue; // non-completed writes do not check the version
            }
            let write = write(&RunId::generate(), status, &third, expected, fence);
            let result = backend.sessions.persist(&key, write).await;
            let what = format!("persist with {what} ({})", status.as_str());
            watched.refused(&before, result, kind, &what).await;
        }
    }
    for (what, fence) in &bad_fences {
        let result = backend.sessions.clear(&key, *fence).await;
        let what = format!("clear with {what}");
        watched
            .refused(&before, result, ErrorKind::Fenced, &what)
            .await;
        let forged = Lease {
            fence: *fence,
            ..lease.clone()
        };
        let result = backend.locks.renew(&forged, LONG).await;
        let what = format!("renew with {what}");
        watched
            .refused(&before, result, ErrorKind::Fenced, &what)
            .await;
    }
    // The real lease still writes: the refusals were about their inputs.
    let write = completed(&RunId::generate(), &third, Some(v2), &lease);
    backend
        .sessions
        .persist(&key, write)
        .await
        .expect("the real lease writes");

    backend
        .locks
        .release(&sibling_lease)
        .await
        .expect("release");
    backend.locks.release(&other_lease).await.expect("release");
    let foreign_fences = [lease.fence, other_lease.fence];
    forged_claims_change_nothing(
        backend,
        &mut watched,
        &sibling_key,
        &other_org,
        &lease,
        foreign_fences,
    )
    .await;
}

/// Claims of the sibling's run with one part forged each: every claim-fenced call is
/// `Fenced` and changes nothing; the real claim then commits.
async fn forged_claims_change_nothing(
    backend: &Backend,
    watched: &mut Watched<'_>,
    key: &ConversationKey,
    other_org: &ConversationKey,
    foreign: &Lease,
    foreign_fences: [Fence; 2],
) {
    let run = submit(backend, new_turn(key, 1, 3)).await;
    watched.run(&key.org, &run);
    let worker = WorkerId::generate();
    let real = claim_mine(backend, &worker, LONG, &[key]).await;
    assert_eq!(real.run, run);
    // A fence is a number: on a store whose fences count per conversation, another
    // conversation's fence may equal this claim's, and then it *is* this claim's fence.
    let foreign_fence = foreign_fences
        .into_iter()
        .find(|fence| *fence != real.fence)
        .expect("another conversation's fence that differs from the claim's");
    let forged = |what: &'static str, change: &dyn Fn(&mut Claim)| {
        let mut claim = real.clone();
        change(&mut claim);
        (what, claim)
    };
    // A claim of a run that does not exist (in that org) may be `NotFound` instead.
    let fenced: &[ErrorKind] = &[ErrorKind::Fenced];
    let unknown: &[ErrorKind] = &[ErrorKind::Fenced, ErrorKind::NotFound];
    let claims = [
        forged("a fence from the future", &|c| {
            c.fence = Fence(c.fence.0 + 1_000_000)
        }),
        forged("fence u64::MAX", &|c| c.fence = Fence(u64::MAX)),
        forged("fence zero", &|c| c.fence = Fence(0)),
        forged("another conversation's fence", &|c| c.fence = foreign_fence),
        forged("another run", &|c| c.run = RunId::generate()),
        forged("another worker", &|c| c.worker = WorkerId::generate()),
        forged("another conversation", &|c| c.key = foreign.key.clone()),
        forged("another org", &|c| c.key = other_org.clone()),
    ];
    let kinds = |what: &str| match what {
        "another run" | "another org" => unknown,
        _ => fenced,
    };
    let transcript = transcript("forged", 1);
    let before = watched.state().await;
    for (what, claim) in &claims {
        assert_ne!(*claim, real, "{what}");
        let kinds = kinds(what);
        let result = backend.queue.heartbeat(claim, LONG).await;
        watched
            .refused_as(&before, result, kinds, &format!("heartbeat of {what}"))
            .await;
        let commit = Commit::transcript(transcript.clone(), real.head);
        let result = backend.queue.complete(claim, commit).await;
        watched
            .refused_as(&before, result, kinds, &format!("complete of {what}"))
            .await;
        let result = backend
            .queue
            .fail(claim, &Failure::new(TerminalStatus::Failed, "forged"))
            .await;
        watched
            .refused_as(&before, result, kinds, &format!("fail of {what}"))
            .await;
        let result = backend.queue.release(claim).await;
        watched
            .refused_as(&before, result, kinds, &format!("release of {what}"))
            .await;
    }
    let commit = Commit::transcript(transcript, real.head);
    let written = backend.queue.complete(&real, commit).await;
    assert!(written.expect("the real claim commits").is_some());
}
