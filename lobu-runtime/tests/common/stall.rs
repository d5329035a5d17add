//! Fault injection for one replica: its lease renewals and claim heartbeats hang while
//! stalled (a GC pause, a network partition), everything else goes to the real store.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use lobu_core::{
    AfterFailure, Backend, Claim, ConversationKey, ConversationLocks, Lease, NewRun, OrgId, Result,
    RunId, RunQueue, RunRecord, Submitted, TerminalStatus, WorkerId,
};
use tokio::sync::watch;

/// Wraps a backend; [`Stall::backend`] is what the stalled replica uses.
#[derive(Debug, Clone)]
pub struct Stall {
    inner: Backend,
    stalled: Arc<watch::Sender<bool>>,
}

impl Stall {
    pub fn new(inner: Backend) -> Self {
        Stall {
            inner,
            stalled: Arc::new(watch::channel(false).0),
        }
    }

    pub fn backend(&self) -> Backend {
        Backend {
            sessions: self.inner.sessions.clone(),
            locks: Arc::new(self.clone()),
            queue: Arc::new(self.clone()),
        }
    }

    pub fn set(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    async fn pass(&self) {
        let mut rx = self.stalled.subscribe();
        let _ = rx.wait_for(|stalled| !*stalled).await;
    }
}

#[async_trait]
impl ConversationLocks for Stall {
    async fn try_acquire(&self, key: &ConversationKey, ttl: Duration) -> Result<Option<Lease>> {
        self.inner.locks.try_acquire(key, ttl).await
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        self.pass().await;
        self.inner.locks.renew(lease, ttl).await
    }
    async fn release(&self, lease: &Lease) -> Result<()> {
        self.inner.locks.release(lease).await
    }
}

#[async_trait]
impl RunQueue for Stall {
    async fn submit(&self, run: NewRun) -> Result<Submitted> {
        self.inner.queue.submit(run).await
    }
    async fn claim(&self, worker: &WorkerId, lease: Duration) -> Result<Option<Claim>> {
        self.inner.queue.claim(worker, lease).await
    }
    async fn heartbeat(&self, claim: &Claim, lease: Duration) -> Result<Claim> {
        self.pass().await;
        self.inner.queue.heartbeat(claim, lease).await
    }
    async fn complete(&self, claim: &Claim, output: Option<serde_json::Value>) -> Result<()> {
        self.inner.queue.complete(claim, output).await
    }
    async fn fail(
        &self,
        claim: &Claim,
        status: TerminalStatus,
        error: &str,
    ) -> Result<AfterFailure> {
        self.inner.queue.fail(claim, status, error).await
    }
    async fn release(&self, claim: &Claim) -> Result<()> {
        self.inner.queue.release(claim).await
    }
    async fn status(&self, org: &OrgId, run: &RunId) -> Result<Option<RunRecord>> {
        self.inner.queue.status(org, run).await
    }
    async fn depth(&self) -> Result<u64> {
        self.inner.queue.depth().await
    }
    async fn prune_runs(&self, before: SystemTime) -> Result<u64> {
        self.inner.queue.prune_runs(before).await
    }
    async fn wait_for_work(&self, max: Duration) {
        self.inner.queue.wait_for_work(max).await
    }
}
