//! [`ConversationLocks`] for [`FileStore`]: a lease is data in the conversation's
//! `state.json` (the newest fence and an expiry), changed under the conversation's OS lock
//! for one read-modify-write and never held longer. Any process on the machine sees it, and
//! `persist` checks the fence under the same lock as its write.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use lobu_core::{
    ConversationKey, ConversationLocks, Error, Fence, Lease, Result, check_lease_duration,
};

use crate::state::{Conversation, LeaseRecord, State};
use crate::store::{FileStore, Inner};

fn try_acquire(inner: &Inner, key: &ConversationKey, ttl: Duration) -> Result<Option<Lease>> {
    let conversation = Conversation::new(inner, key);
    conversation.create()?;
    let _lock = conversation.lock()?;
    let mut state = conversation.load()?.unwrap_or_else(|| State::fresh(key));
    let now = SystemTime::now();
    if state.lease.as_ref().is_some_and(|l| l.expires_at > now) {
        return Ok(None);
    }
    state.last_fence += 1;
    let expires_at = now + ttl;
    state.lease = Some(LeaseRecord {
        fence: state.last_fence,
        expires_at,
    });
    conversation.save(&state)?;
    Ok(Some(Lease {
        key: key.clone(),
        fence: Fence(state.last_fence),
        expires_at,
    }))
}

fn renew(inner: &Inner, lease: &Lease, ttl: Duration) -> Result<Lease> {
    let conversation = Conversation::new(inner, &lease.key);
    let never = || {
        Error::fenced(format!(
            "no lease of {} was ever issued with {}",
            lease.key, lease.fence
        ))
    };
    if !conversation.exists() {
        return Err(never());
    }
    let _lock = conversation.lock()?;
    let mut state = conversation.load()?.ok_or_else(never)?;
    if state.last_fence == 0 || state.last_fence != lease.fence.0 {
        return Err(Error::fenced(format!(
            "lease of {} with {} was taken over (fence {} is newer)",
            lease.key, lease.fence, state.last_fence
        )));
    }
    // Still the newest fence: extend it, even if it had lapsed or been released, since
    // nobody else can have written in between.
    let expires_at = SystemTime::now() + ttl;
    state.lease = Some(LeaseRecord {
        fence: lease.fence.0,
        expires_at,
    });
    conversation.save(&state)?;
    Ok(Lease {
        expires_at,
        ..lease.clone()
    })
}

fn release(inner: &Inner, lease: &Lease) -> Result<()> {
    let conversation = Conversation::new(inner, &lease.key);
    if !conversation.exists() {
        return Ok(());
    }
    let _lock = conversation.lock()?;
    let Some(mut state) = conversation.load()? else {
        return Ok(());
    };
    let held = state
        .lease
        .as_ref()
        .is_some_and(|l| l.fence == lease.fence.0);
    if held {
        state.lease = None;
        conversation.save(&state)?;
    }
    Ok(())
}

#[async_trait]
impl ConversationLocks for FileStore {
    async fn try_acquire(&self, key: &ConversationKey, ttl: Duration) -> Result<Option<Lease>> {
        check_lease_duration(ttl)?;
        let key = key.clone();
        self.blocking(move |inner| try_acquire(inner, &key, ttl))
            .await
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        check_lease_duration(ttl)?;
        let lease = lease.clone();
        self.blocking(move |inner| renew(inner, &lease, ttl)).await
    }

    async fn release(&self, lease: &Lease) -> Result<()> {
        let lease = lease.clone();
        self.blocking(move |inner| release(inner, &lease)).await?;
        // The conversation's runs may be claimable now.
        self.inner.work.notify_waiters();
        Ok(())
    }
}
