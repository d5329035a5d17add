//! Conversation leases in memory.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::MemoryBackend;
use crate::error::{Error, Result};
use crate::id::ConversationKey;
use crate::lock::{ConversationLocks, Fence, Lease, check_lease_duration};

/// The owner of every conversation ever owned: the newest lease or run claim (they share one
/// fence sequence and one slot). Entries are kept after release and expiry because writes
/// check fences against them.
#[derive(Default)]
pub(super) struct LeaseTable {
    leases: HashMap<ConversationKey, Held>,
    /// One counter for all conversations: it only grows, so every acquisition's fence is
    /// larger than any fence issued before for its conversation.
    last_fence: u64,
}

struct Held {
    fence: Fence,
    /// `None` once released.
    expires_at: Option<SystemTime>,
}

impl LeaseTable {
    /// Forget the scope's leases and fences; returns their conversations.
    pub(super) fn erase(&mut self, scope: &crate::erase::EraseScope) -> Vec<ConversationKey> {
        let keys: Vec<ConversationKey> = self
            .leases
            .keys()
            .filter(|key| scope.covers(key))
            .cloned()
            .collect();
        for key in &keys {
            self.leases.remove(key);
        }
        keys
    }

    /// The newest fence issued for `key`, if any was.
    pub(super) fn newest_fence(&self, key: &ConversationKey) -> Option<Fence> {
        self.leases.get(key).map(|held| held.fence)
    }

    pub(super) fn len(&self) -> usize {
        self.leases.len()
    }

    /// Until when `key`'s live owner holds it, if it has one at `now`.
    pub(super) fn owned_until(&self, key: &ConversationKey, now: SystemTime) -> Option<SystemTime> {
        self.leases
            .get(key)
            .and_then(|held| held.expires_at)
            .filter(|at| *at > now)
    }

    /// Whether `key` has a live owner at `now`.
    pub(super) fn is_owned(&self, key: &ConversationKey, now: SystemTime) -> bool {
        self.leases
            .get(key)
            .is_some_and(|held| held.expires_at.is_some_and(|at| at > now))
    }

    /// Extend the owner `fence` (a claim's) to `until`, if it is still the newest.
    pub(super) fn extend(&mut self, key: &ConversationKey, fence: Fence, until: SystemTime) {
        if let Some(held) = self.leases.get_mut(key)
            && held.fence == fence
        {
            held.expires_at = Some(until);
        }
    }

    /// End the ownership of `fence`, if it is still the newest.
    pub(super) fn end(&mut self, key: &ConversationKey, fence: Fence) {
        if let Some(held) = self.leases.get_mut(key)
            && held.fence == fence
        {
            held.expires_at = None;
        }
    }

    /// Take the conversation (for a lease or a run claim) when it has no live owner.
    pub(super) fn try_acquire(
        &mut self,
        key: &ConversationKey,
        ttl: Duration,
        now: SystemTime,
    ) -> Option<Lease> {
        if let Some(held) = self.leases.get(key)
            && held.expires_at.is_some_and(|at| at > now)
        {
            return None;
        }
        self.last_fence += 1;
        let fence = Fence(self.last_fence);
        let expires_at = now + ttl;
        self.leases.insert(
            key.clone(),
            Held {
                fence,
                expires_at: Some(expires_at),
            },
        );
        Some(Lease {
            key: key.clone(),
            fence,
            expires_at,
        })
    }

    fn renew(&mut self, lease: &Lease, ttl: Duration, now: SystemTime) -> Result<Lease> {
        match self.leases.get_mut(&lease.key) {
            // Still the newest fence: extend it, even if it had lapsed or been released,
            // since nobody else can have written in between.
            Some(held) if held.fence == lease.fence => {
                let expires_at = now + ttl;
                held.expires_at = Some(expires_at);
                Ok(Lease {
                    expires_at,
                    ..lease.clone()
                })
            }
            Some(held) => Err(Error::fenced(format!(
                "lease of {} with {} was taken over ({} is newer)",
                lease.key, lease.fence, held.fence
            ))),
            None => Err(Error::fenced(format!(
                "no lease of {} was ever issued with {}",
                lease.key, lease.fence
            ))),
        }
    }

    fn release(&mut self, lease: &Lease) {
        self.end(&lease.key, lease.fence);
    }
}

#[async_trait]
impl ConversationLocks for MemoryBackend {
    async fn try_acquire(&self, key: &ConversationKey, ttl: Duration) -> Result<Option<Lease>> {
        check_lease_duration(ttl)?;
        let now = SystemTime::now();
        Ok(self.state()?.leases.try_acquire(key, ttl, now))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        check_lease_duration(ttl)?;
        let now = SystemTime::now();
        self.state()?.leases.renew(lease, ttl, now)
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        self.state()?.leases.release(lease);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ConversationKey {
        ConversationKey::parse("acme", "bot", "c1").unwrap()
    }

    #[test]
    fn fences_grow_across_conversations_and_reacquisitions() {
        let mut table = LeaseTable::default();
        let now = SystemTime::now();
        let ttl = Duration::from_secs(1);
        let other = ConversationKey::parse("acme", "bot", "c2").unwrap();
        let a = table.try_acquire(&key(), ttl, now).unwrap();
        let b = table.try_acquire(&other, ttl, now).unwrap();
        let later = now + Duration::from_secs(2);
        let c = table.try_acquire(&key(), ttl, later).unwrap();
        assert!(a.fence < b.fence && b.fence < c.fence);
        assert_eq!(table.newest_fence(&key()), Some(c.fence));
    }

    #[test]
    fn a_lease_ending_exactly_now_is_free() {
        let mut table = LeaseTable::default();
        let now = SystemTime::now();
        let lease = table
            .try_acquire(&key(), Duration::from_secs(1), now)
            .unwrap();
        assert!(
            table
                .try_acquire(&key(), Duration::from_secs(1), lease.expires_at)
                .is_some()
        );
    }
}
