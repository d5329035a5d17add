//! [`ConversationLocks`]: one turn at a time per conversation, across replicas.

use std::fmt::Debug;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::ConversationKey;

/// The longest lease or claim a caller may ask for.
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

/// A fencing token. Every acquisition of a conversation's lease gets a larger one than any
/// before it; stores refuse writes carrying a fence older than the newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Fence(pub u64);

impl std::fmt::Display for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fence {}", self.0)
    }
}

/// A held conversation lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The conversation.
    pub key: ConversationKey,
    /// The fencing token of this acquisition; pass it to [`SessionStore::persist`](crate::SessionStore::persist).
    pub fence: Fence,
    /// When the lease lapses unless renewed.
    pub expires_at: SystemTime,
}

/// Check a lease or claim duration: more than zero and at most [`MAX_LEASE`].
pub fn check_lease_duration(ttl: Duration) -> Result<()> {
    if ttl.is_zero() || ttl > MAX_LEASE {
        return Err(Error::invalid(format!(
            "lease duration must be between 1ms and {}s, got {ttl:?}",
            MAX_LEASE.as_secs()
        )));
    }
    Ok(())
}

/// Conversation leases with fencing.
///
/// # Contract
///
/// * [`try_acquire`](Self::try_acquire) never waits: it returns `Some(lease)` when the
///   conversation had no live owner (no live lease and no live run claim: leases and claims
///   are one ownership, see [`RunQueue`](crate::RunQueue)) and `None` when it has one. Busy
///   is an answer, not an error. A host uses leases to write with
///   [`SessionStore`](crate::SessionStore) on its own; the runtime's turns need none, their
///   claim is their ownership.
/// * Each successful acquisition's [`Fence`] is greater than every fence issued before for
///   that conversation (by leases and claims), including after expiry, release and
///   [`SessionStore::clear`](crate::SessionStore::clear).
/// * [`renew`](Self::renew) extends a lease whose fence is still the newest (even if it had
///   expired, as long as nobody acquired since); otherwise `Fenced`.
/// * [`release`](Self::release) ends a lease; releasing a lease that was already released,
///   expired or taken over is `Ok` and does not disturb the new holder.
/// * Holding a lease holds no connection, file handle or task: a lease is data.
/// * Durations must be in `(0, MAX_LEASE]`, else `InvalidInput`.
#[async_trait]
pub trait ConversationLocks: Debug + Send + Sync + 'static {
    /// Take the lease if it is free; `None` if another holder's lease is live.
    async fn try_acquire(&self, key: &ConversationKey, ttl: Duration) -> Result<Option<Lease>>;

    /// Extend a held lease by `ttl` from now; `Fenced` if it was taken over.
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease>;

    /// Give the lease up; idempotent.
    async fn release(&self, lease: &Lease) -> Result<()>;
}
