//! Clauses of `ConversationLocks`: busy, renew, expiry and takeover, fence growth, and
//! duration limits (of claims too).

use std::time::{Duration, SystemTime};

use super::Capabilities;
use super::support::{
    LONG, acquire, assert_kind, claim_mine, fresh_key, new_turn, sibling, submit,
};
use crate::backend::Backend;
use crate::error::ErrorKind;
use crate::id::{ConversationKey, WorkerId};
use crate::lock::{Lease, MAX_LEASE};
use crate::queue::Commit;

async fn try_acquire(backend: &Backend, key: &ConversationKey, ttl: Duration) -> Option<Lease> {
    backend
        .locks
        .try_acquire(key, ttl)
        .await
        .expect("try_acquire")
}

async fn assert_busy(backend: &Backend, key: &ConversationKey, why: &str) {
    if let Some(lease) = try_acquire(backend, key, LONG).await {
        panic!("{why}: {key} was acquired again with {}", lease.fence);
    }
}

/// A live lease makes `try_acquire` answer `None` (not an error) for its conversation
/// only; after `release` it is acquired again with a larger fence; releasing twice is `Ok`.
pub async fn a_held_lease_is_busy_for_everyone_else(backend: &Backend) {
    let key = fresh_key();
    let first = acquire(backend, &key).await;
    assert_eq!(first.key, key);
    assert!(first.expires_at > SystemTime::now(), "a new lease is live");
    assert_busy(backend, &key, "a held lease").await;
    let neighbour = try_acquire(backend, &sibling(&key, "neighbour"), LONG).await;
    assert!(neighbour.is_some(), "another conversation is not blocked");
    backend.locks.release(&first).await.expect("release");
    let second = acquire(backend, &key).await;
    assert!(
        second.fence > first.fence,
        "{} then {}",
        first.fence,
        second.fence
    );
    backend.locks.release(&second).await.expect("release");
    backend
        .locks
        .release(&second)
        .await
        .expect("releasing twice is fine");
    backend
        .locks
        .release(&first)
        .await
        .expect("releasing a stale lease is fine");
}

/// `renew` extends a live lease past its original expiry, keeping its fence.
pub async fn renewing_keeps_a_lease_alive(backend: &Backend, capabilities: &Capabilities) {
    let key = fresh_key();
    let short = try_acquire(backend, &key, capabilities.short_lease).await;
    let short = short.expect("a fresh conversation is free");
    let renewed = backend.locks.renew(&short, LONG).await.expect("renew");
    assert_eq!(renewed.fence, short.fence, "renewing keeps the fence");
    assert_eq!(renewed.key, key);
    assert!(
        renewed.expires_at > short.expires_at,
        "renewing moves the expiry on"
    );
    tokio::time::sleep(capabilities.past_short_lease()).await;
    assert_busy(backend, &key, "a renewed lease after its first expiry").await;
    backend.locks.release(&renewed).await.expect("release");
    assert!(
        try_acquire(backend, &key, LONG).await.is_some(),
        "free after release"
    );
}

/// An expired lease is acquired by the next caller with a larger fence; the old holder's
/// `renew` is then `Fenced` and its `release` is `Ok` without disturbing the new holder.
pub async fn an_expired_lease_is_taken_over_with_a_larger_fence(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let key = fresh_key();
    let old = try_acquire(backend, &key, capabilities.short_lease).await;
    let old = old.expect("a fresh conversation is free");
    tokio::time::sleep(capabilities.past_short_lease()).await;
    let new = try_acquire(backend, &key, LONG).await;
    let new = new.expect("an expired lease can be taken over");
    assert!(new.fence > old.fence, "{} then {}", old.fence, new.fence);
    let result = backend.locks.renew(&old, LONG).await;
    assert_kind(
        result,
        ErrorKind::Fenced,
        "renewing a lease that was taken over",
    );
    backend
        .locks
        .release(&old)
        .await
        .expect("releasing a taken-over lease");
    assert_busy(backend, &key, "the new holder after the old one released").await;
    let renewed = backend
        .locks
        .renew(&new, LONG)
        .await
        .expect("the new holder renews");
    assert_eq!(renewed.fence, new.fence);
}

/// A lease that expired but that nobody acquired since can still be renewed (its fence is
/// still the newest), and is then live again.
pub async fn an_expired_lease_nobody_took_can_be_renewed(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let key = fresh_key();
    let lease = try_acquire(backend, &key, capabilities.short_lease).await;
    let lease = lease.expect("a fresh conversation is free");
    tokio::time::sleep(capabilities.past_short_lease()).await;
    let renewed = backend.locks.renew(&lease, LONG).await;
    let renewed = renewed.expect("renewing an expired lease nobody took");
    assert_eq!(renewed.fence, lease.fence);
    assert_busy(backend, &key, "a lease renewed after expiry").await;
}

/// Every acquisition's fence is larger than all before it for that conversation, across
/// release, expiry and `clear` of the conversation's snapshots.
pub async fn fences_grow_across_release_expiry_and_clear(
    backend: &Backend,
    capabilities: &Capabilities,
) {
    let key = fresh_key();
    let mut fences = Vec::new();
    for round in 0..3 {
        let lease = acquire(backend, &key).await;
        fences.push(lease.fence);
        let bytes = super::support::transcript(&format!("round {round}"), 1);
        super::support::turn(backend, &lease, None, &bytes).await;
        let cleared = backend.sessions.clear(&key, lease.fence).await;
        cleared.expect("clear");
        backend.locks.release(&lease).await.expect("release");
    }
    let short = try_acquire(backend, &key, capabilities.short_lease).await;
    fences.push(short.expect("free after release").fence);
    tokio::time::sleep(capabilities.past_short_lease()).await;
    fences.push(acquire(backend, &key).await.fence);
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "fences must strictly grow: {fences:?}"
    );
}

/// Lease and claim durations must be in `(0, MAX_LEASE]`: zero or longer is
/// `InvalidInput` for `try_acquire`, `renew`, `claim` and `heartbeat`, and changes nothing.
pub async fn durations_out_of_range_are_invalid_input(backend: &Backend) {
    let key = fresh_key();
    let too_long = MAX_LEASE + Duration::from_millis(1);
    for ttl in [Duration::ZERO, too_long] {
        let result = backend.locks.try_acquire(&key, ttl).await;
        assert_kind(
            result,
            ErrorKind::InvalidInput,
            "try_acquire with a bad duration",
        );
    }
    let lease = acquire(backend, &key).await;
    for ttl in [Duration::ZERO, too_long] {
        let result = backend.locks.renew(&lease, ttl).await;
        assert_kind(result, ErrorKind::InvalidInput, "renew with a bad duration");
    }
    assert_busy(backend, &key, "the lease after a refused renew").await;
    let longest = try_acquire(backend, &sibling(&key, "longest"), MAX_LEASE).await;
    assert!(longest.is_some(), "MAX_LEASE itself is allowed");

    let worker = WorkerId::generate();
    for ttl in [Duration::ZERO, too_long] {
        let result = backend.queue.claim(&worker, ttl).await;
        assert_kind(result, ErrorKind::InvalidInput, "claim with a bad duration");
    }
    // Another conversation: `key`'s live lease owns it, so its runs are not claimable.
    let queued = sibling(&key, "queued");
    let run = submit(backend, new_turn(&queued, 1, 1)).await;
    let claim = claim_mine(backend, &worker, LONG, &[&queued]).await;
    assert_eq!(claim.run, run);
    for ttl in [Duration::ZERO, too_long] {
        let result = backend.queue.heartbeat(&claim, ttl).await;
        assert_kind(
            result,
            ErrorKind::InvalidInput,
            "heartbeat with a bad duration",
        );
    }
    backend
        .queue
        .complete(&claim, Commit::default())
        .await
        .expect("the claim is intact");
}
