//! Fault injection for one replica: its claims and claim heartbeats hang while stalled (a GC
//! pause, a network partition); the next few commits of a transcript can be made to hang (a
//! backend that stops answering), to land only when the test says so (a write the caller gave
//! up on that is still in flight), or to lose their answer after landing (a connection
//! dropped after COMMIT); claims can be held back (a slow claim query); run completions can
//! fail without reaching the store; the store's clock can run ahead of the replica's (the
//! expiries it reports are skewed); everything else goes to the real store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lobu_core::events::EventPage;
use lobu_core::{
    AfterFailure, AgentId, Backend, CancelOutcome, Claim, Commit, ConversationKey,
    ConversationLocks, ConversationSummary, Error, ErrorKind, Failure, Fence, Lease, NewRun, OrgId,
    Page, Persist, PruneReport, Result, RunId, RunQueue, RunRecord, SessionStore, Snapshot,
    Submitted, Version, WorkerId,
};
use tokio::sync::watch;

/// What the store answered a detached commit.
pub type Landed = std::result::Result<Option<Version>, ErrorKind>;

/// Wraps a backend; [`Stall::backend`] is what the stalled replica uses.
#[derive(Debug, Clone)]
pub struct Stall {
    inner: Backend,
    stalled: Arc<watch::Sender<bool>>,
    hanging_persists: Arc<AtomicUsize>,
    detached_persists: Arc<AtomicUsize>,
    land: Arc<watch::Sender<bool>>,
    landed: Arc<Mutex<Vec<Landed>>>,
    lost_answers: Arc<AtomicUsize>,
    failing_completes: Arc<AtomicUsize>,
    claims_held: Arc<watch::Sender<bool>>,
    claims_waiting: Arc<AtomicUsize>,
    skew: Arc<Mutex<Duration>>,
    corrupt_commits: Arc<AtomicUsize>,
    claim_answer_delay: Arc<Mutex<Duration>>,
    event_reads: Arc<AtomicUsize>,
    prune_delay: Arc<Mutex<Duration>>,
    prunes_in_flight: Arc<AtomicUsize>,
    most_prunes_at_once: Arc<AtomicUsize>,
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
            skew: Arc::new(Mutex::new(Duration::ZERO)),
            corrupt_commits: Arc::new(AtomicUsize::new(0)),
            claim_answer_delay: Arc::new(Mutex::new(Duration::ZERO)),
            event_reads: Arc::new(AtomicUsize::new(0)),
            prune_delay: Arc::new(Mutex::new(Duration::ZERO)),
            prunes_in_flight: Arc::new(AtomicUsize::new(0)),
            most_prunes_at_once: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Every `prune_runs` takes `delay` longer (a slow retention pass).
    pub fn slow_prunes(&self, delay: Duration) {
        *self.prune_delay.lock().unwrap() = delay;
    }

    /// The most `prune_runs` calls that were in flight at once through this wrapper.
    pub fn most_prunes_at_once(&self) -> usize {
        self.most_prunes_at_once.load(Ordering::SeqCst)
    }

    pub fn backend(&self) -> Backend {
        Backend {
            sessions: Arc::new(self.clone()),
            locks: Arc::new(self.clone()),
            queue: Arc::new(self.clone()),
        }
    }

    /// How many times this replica read run events from the store.
    pub fn event_reads(&self) -> usize {
        self.event_reads.load(Ordering::SeqCst)
    }

    pub fn set(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    /// The store's clock runs `ahead` of this replica's: every expiry it reports is that much
    /// later than the replica's clock would say.
    pub fn skew_clock(&self, ahead: Duration) {
        *self.skew.lock().unwrap() = ahead;
    }

    fn skewed(&self, mut claim: Claim) -> Claim {
        claim.expires_at += *self.skew.lock().unwrap();
        claim
    }

    /// The next `n` commits of a transcript never reach the store and never return.
    pub fn hang_commits(&self, n: usize) {
        self.hanging_persists.store(n, Ordering::SeqCst);
    }

    /// The next `n` commits of a transcript run in a task of their own that reaches the store only after
    /// [`land_detached`](Self::land_detached); a caller that gives up waiting does not stop
    /// them (as the file store's blocking write, or a query already sent, goes on).
    pub fn detach_commits(&self, n: usize) {
        self.detached_persists.store(n, Ordering::SeqCst);
    }

    /// Let the detached commits reach the store.
    pub fn land_detached(&self) {
        self.land.send_replace(true);
    }

    /// What the store answered to the detached commits that reached it so far.
    pub fn landed(&self) -> Vec<Landed> {
        self.landed.lock().unwrap().clone()
    }

    /// The next `n` commits of a transcript reach the store, then answer `Unavailable`.
    pub fn lose_commit_answers(&self, n: usize) {
        self.lost_answers.store(n, Ordering::SeqCst);
    }

    /// The next `n` commits of a transcript answer `Corrupt` without reaching the store (a
    /// damaged conversation record: retrying cannot help).
    pub fn corrupt_commits(&self, n: usize) {
        self.corrupt_commits.store(n, Ordering::SeqCst);
    }

    /// The next `n` run completions answer `Unavailable` without reaching the queue.
    pub fn fail_completes(&self, n: usize) {
        self.failing_completes.store(n, Ordering::SeqCst);
    }

    /// While held, claims wait before reaching the queue (a slow claim query).
    pub fn hold_claims(&self, held: bool) {
        self.claims_held.send_replace(held);
    }

    /// Claims reach the store at once, but their answers arrive `delay` later (a stalled
    /// connection delivering a claim long after the store made it).
    pub fn delay_claim_answers(&self, delay: Duration) {
        *self.claim_answer_delay.lock().unwrap() = delay;
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
        let claim = self.inner.queue.claim(worker, lease).await?;
        let delay = *self.claim_answer_delay.lock().unwrap();
        if claim.is_some() && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(claim.map(|claim| self.skewed(claim)))
    }
    async fn heartbeat(&self, claim: &Claim, lease: Duration) -> Result<Claim> {
        self.pass().await;
        let claim = self.inner.queue.heartbeat(claim, lease).await?;
        Ok(self.skewed(claim))
    }
    async fn complete(&self, claim: &Claim, commit: Commit) -> Result<Option<Version>> {
        if commit.transcript.is_some() && take(&self.lost_answers) {
            self.inner.queue.complete(claim, commit).await?;
            return Err(Error::unavailable(
                "the connection dropped after the commit",
            ));
        }
        if take(&self.failing_completes) {
            return Err(Error::unavailable("the queue did not answer"));
        }
        if commit.transcript.is_some() && take(&self.corrupt_commits) {
            return Err(Error::corrupt("the conversation's stored state is damaged"));
        }
        if commit.transcript.is_none() {
            return self.inner.queue.complete(claim, commit).await;
        }
        if take(&self.hanging_persists) {
            std::future::pending::<()>().await;
        }
        if take(&self.detached_persists) {
            let (queue, claim) = (self.inner.queue.clone(), claim.clone());
            let (mut land, landed) = (self.land.subscribe(), self.landed.clone());
            let write = tokio::spawn(async move {
                let _ = land.wait_for(|land| *land).await;
                let result = queue.complete(&claim, commit).await;
                landed
                    .lock()
                    .unwrap()
                    .push(result.as_ref().copied().map_err(Error::kind));
                result
            });
            return write.await.expect("the detached commit");
        }
        self.inner.queue.complete(claim, commit).await
    }
    async fn fail(&self, claim: &Claim, failure: &Failure) -> Result<AfterFailure> {
        self.inner.queue.fail(claim, failure).await
    }
    async fn cancel(
        &self,
        org: &OrgId,
        run: &RunId,
        reason: &str,
    ) -> Result<Option<CancelOutcome>> {
        self.inner.queue.cancel(org, run, reason).await
    }
    async fn steerable(&self, claim: &Claim) -> Result<Vec<lobu_core::Steered>> {
        self.inner.queue.steerable(claim).await
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
    async fn runs(
        &self,
        org: &OrgId,
        filter: &lobu_core::RunFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<RunRecord>> {
        self.inner.queue.runs(org, filter, cursor, limit).await
    }
    async fn prune_runs_with(&self, prune: &lobu_core::retention::RunPrune) -> Result<u64> {
        let now = self.prunes_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_prunes_at_once.fetch_max(now, Ordering::SeqCst);
        let delay = *self.prune_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        let pruned = self.inner.queue.prune_runs_with(prune).await;
        self.prunes_in_flight.fetch_sub(1, Ordering::SeqCst);
        pruned
    }
    async fn record_events(&self, claim: &Claim, events: &[String]) -> Result<u64> {
        self.inner.queue.record_events(claim, events).await
    }
    async fn read_events(
        &self,
        org: &OrgId,
        run: &RunId,
        after: u64,
        limit: usize,
    ) -> Result<Option<EventPage>> {
        self.event_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.queue.read_events(org, run, after, limit).await
    }
    async fn prune_events_with(&self, prune: &lobu_core::retention::EventPrune) -> Result<u64> {
        self.inner.queue.prune_events_with(prune).await
    }
    async fn wait_for_work(&self, max: Duration) {
        self.inner.queue.wait_for_work(max).await
    }
    async fn wait_for_run(&self, org: &OrgId, run: &RunId, since: Instant, max: Duration) {
        self.inner.queue.wait_for_run(org, run, since, max).await
    }
}

#[async_trait]
impl SessionStore for Stall {
    async fn erase(&self, scope: &lobu_core::EraseScope) -> Result<lobu_core::ErasureReport> {
        self.inner.sessions.erase(scope).await
    }
    async fn hydrate(&self, key: &ConversationKey) -> Result<Option<Snapshot>> {
        self.inner.sessions.hydrate(key).await
    }
    async fn head(&self, key: &ConversationKey) -> Result<Option<Version>> {
        self.inner.sessions.head(key).await
    }
    async fn persist(&self, key: &ConversationKey, write: Persist) -> Result<Version> {
        self.inner.sessions.persist(key, write).await
    }
    async fn clear(&self, key: &ConversationKey, fence: Fence) -> Result<u64> {
        self.inner.sessions.clear(key, fence).await
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
    async fn prune_with(&self, prune: &lobu_core::retention::IdlePrune) -> Result<PruneReport> {
        self.inner.sessions.prune_with(prune).await
    }
    async fn scan(&self, cursor: Option<&str>, limit: usize) -> Result<Page<ConversationKey>> {
        self.inner.sessions.scan(cursor, limit).await
    }
    async fn export(&self, key: &ConversationKey) -> Result<Option<lobu_core::export::Exported>> {
        self.inner.sessions.export(key).await
    }
    async fn import(
        &self,
        conversation: &lobu_core::export::Exported,
    ) -> Result<lobu_core::export::Imported> {
        self.inner.sessions.import(conversation).await
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
