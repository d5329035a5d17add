//! Fault injection for one replica: its lease renewals, claims and claim heartbeats hang while
//! stalled (a GC pause, a network partition), and the next few persists can be made to hang
//! (a backend that stops answering), claims can be held back (a slow claim query), run completions can fail once in a while, persists can
//! be made to land only when the test says so (a write the caller
//! gave up on that is still in flight), or to lose their answer after landing (a connection
//! dropped after COMMIT); everything else goes to the real store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use lobu_core::{
    AfterFailure, AgentId, Backend, Claim, ConversationKey, ConversationLocks, ConversationSummary,
    Error, ErrorKind, Lease, NewRun, OrgId, Page, Persist, PruneReport, Result, RunId, RunQueue,
    RunRecord, SessionStore, Snapshot, Submitted, TerminalStatus, Version, WorkerId,
};
use tokio::sync::watch;

/// Wraps a backend; [`Stall::backend`] is what the stalled replica uses.
#[derive(Debug, Clone)]
pub struct Stall {
    inner: Backend,
    stalled: Arc<watch::Sender<bool>>,
    hanging_persists: Arc<AtomicUsize>,
    detached_persists: Arc<AtomicUsize>,
    land: Arc<watch::Sender<bool>>,
    landed: Arc<Mutex<Vec<std::result::Result<Version, ErrorKind>>>>,
    lost_answers: Arc<AtomicUsize>,
    failing_completes: Arc<AtomicUsize>,
    claims_held: Arc<watch::Sender<bool>>,
    claims_waiting: Arc<AtomicUsize>,
}

impl Stall {
    pub fn new(inner: Backend) -> Self {
        Stall {
            inner,
            stalled: Arc::new(watch::channel(false).0),
            hanging_persists: Arc::new(AtomicUsize::new(0)),
            detached_persists: Arc::new(AtomicUsize::new(0)),
            land: Arc::new(watch::channel(false).0),
            landed: Arc::new(Mutex::new(Vec::new())),
            lost_answers: Arc::new(AtomicUsize::new(0)),
            failing_completes: Arc::new(AtomicUsize::new(0)),
            claims_held: Arc::new(watch::channel(false).0),
            claims_waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn backend(&self) -> Backend {
        Backend {
            sessions: Arc::new(self.clone()),
            locks: Arc::new(self.clone()),
            queue: Arc::new(self.clone()),
        }
    }

    pub fn set(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    /// The next `n` persists never reach the store and never return.
    pub fn hang_persists(&self, n: usize) {
        self.hanging_persists.store(n, Ordering::SeqCst);
    }

    /// The next `n` persists run in a task of their own that reaches the store only after
    /// [`land_detached`](Self::land_detached); a caller that gives up waiting does not stop
    /// them (as the file store's blocking write, or a query already sent, goes on).
    pub fn detach_persists(&self, n: usize) {
        self.detached_persists.store(n, Ordering::SeqCst);
    }

    /// Let the detached persists reach the store.
    pub fn land_detached(&self) {
        self.land.send_replace(true);
    }

    /// What the store answered to the detached persists that reached it so far.
    pub fn landed(&self) -> Vec<std::result::Result<Version, ErrorKind>> {
        self.landed.lock().unwrap().clone()
    }

    /// The next `n` persists reach the store, then answer `Unavailable`.
    pub fn lose_persist_answers(&self, n: usize) {
        self.lost_answers.store(n, Ordering::SeqCst);
    }

    /// The next `n` run completions answer `Unavailable` without reaching the queue.
    pub fn fail_completes(&self, n: usize) {
        self.failing_completes.store(n, Ordering::SeqCst);
    }

    /// While held, claims wait before reaching the queue (a slow claim query).
    pub fn hold_claims(&self, held: bool) {
        self.claims_held.send_replace(held);
    }

    /// How many claims are waiting because claims are held.
    pub fn claims_waiting(&self) -> usize {
        self.claims_waiting.load(Ordering::SeqCst)
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
        // A stalled replica claims nothing either, so another replica takes over its work.
        self.pass().await;
        let mut held = self.claims_held.subscribe();
        if *held.borrow_and_update() {
            self.claims_waiting.fetch_add(1, Ordering::SeqCst);
            let _ = held.wait_for(|held| !*held).await;
            self.claims_waiting.fetch_sub(1, Ordering::SeqCst);
        }
        self.inner.queue.claim(worker, lease).await
    }
    async fn heartbeat(&self, claim: &Claim, lease: Duration) -> Result<Claim> {
        self.pass().await;
        self.inner.queue.heartbeat(claim, lease).await
    }
    async fn complete(&self, claim: &Claim, output: Option<serde_json::Value>) -> Result<()> {
        if take(&self.failing_completes) {
            return Err(Error::unavailable("the queue did not answer"));
        }
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

#[async_trait]
impl SessionStore for Stall {
    async fn hydrate(&self, key: &ConversationKey) -> Result<Option<Snapshot>> {
        self.inner.sessions.hydrate(key).await
    }
    async fn head(&self, key: &ConversationKey) -> Result<Option<Version>> {
        self.inner.sessions.head(key).await
    }
    async fn persist(&self, key: &ConversationKey, write: Persist) -> Result<Version> {
        if take(&self.hanging_persists) {
            std::future::pending::<()>().await;
        }
        if take(&self.detached_persists) {
            let (sessions, key) = (self.inner.sessions.clone(), key.clone());
            let (mut land, landed) = (self.land.subscribe(), self.landed.clone());
            let write = tokio::spawn(async move {
                let _ = land.wait_for(|land| *land).await;
                let result = sessions.persist(&key, write).await;
                landed
                    .lock()
                    .unwrap()
                    .push(result.as_ref().copied().map_err(Error::kind));
                result
            });
            return write.await.expect("the detached persist");
        }
        let result = self.inner.sessions.persist(key, write).await;
        if result.is_ok() && take(&self.lost_answers) {
            return Err(Error::unavailable("the connection dropped after the write"));
        }
        result
    }
    async fn clear(&self, key: &ConversationKey) -> Result<u64> {
        self.inner.sessions.clear(key).await
    }
    async fn list(
        &self,
        org: &OrgId,
        agent: &AgentId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationSummary>> {
        self.inner.sessions.list(org, agent, cursor, limit).await
    }
    async fn prune(&self, idle_before: SystemTime) -> Result<PruneReport> {
        self.inner.sessions.prune(idle_before).await
    }
    fn max_transcript_bytes(&self) -> usize {
        self.inner.sessions.max_transcript_bytes()
    }
}

/// Take one from `count` if it is not zero.
fn take(count: &AtomicUsize) -> bool {
    count
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}
