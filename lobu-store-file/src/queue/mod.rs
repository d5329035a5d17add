//! [`RunQueue`] for [`FileStore`]: one record file per run, an index of marker files for
//! claiming, an idempotency index (the locks that guard them: [`files`]); run events are in
//! [`crate::events`], wake-ups from other processes in [`crate::watch`].

mod cancel;
mod candidate;
mod claim;
pub(crate) mod files;
mod index;
mod intake;
mod lane;
mod listing;
pub(crate) mod markers;
#[cfg(test)]
mod recovery_tests;
mod runs;
mod sequence;
mod steering;
#[cfg(test)]
mod steering_tests;
#[cfg(test)]
mod sync_tests;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use lobu_core::control::CancelOutcome;
use lobu_core::events::{EventPage, check_events, check_read_limit};
use lobu_core::retention::{EventPrune, RunPrune};
use lobu_core::{
    AfterFailure, Claim, Commit, Failure, NewRun, OrgId, Page, Result, RunFilter, RunId, RunQueue,
    RunRecord, Steered, Submitted, Version, WorkerId, check_lease_duration, check_page_limit,
};

pub(crate) use self::index::MarkerIndex;
use crate::events;
use crate::store::FileStore;

#[async_trait]
impl RunQueue for FileStore {
    async fn submit(&self, run: NewRun) -> Result<Submitted> {
        run.validate()?;
        let (submitted, woken) = self
            .blocking(move |inner| intake::submit(inner, run))
            .await?;
        self.inner.work.notify_waiters();
        // Runs its strategy cancelled, and for a steer the running turn (offered a message).
        for run in &woken {
            self.inner.runs.signal(run);
        }
        Ok(submitted)
    }

    async fn claim(&self, worker: &WorkerId, lease: Duration) -> Result<Option<Claim>> {
        check_lease_duration(lease)?;
        let worker = worker.clone();
        let claim = self
            .blocking(move |inner| claim::claim(inner, &worker, lease))
            .await?;
        if let Some(claim) = &claim {
            self.inner.runs.signal(&claim.run);
        }
        Ok(claim)
    }

    async fn heartbeat(&self, claim: &Claim, lease: Duration) -> Result<Claim> {
        check_lease_duration(lease)?;
        let claim = claim.clone();
        self.blocking(move |inner| claim::heartbeat(inner, &claim, lease))
            .await
    }

    async fn complete(&self, claim: &Claim, commit: Commit) -> Result<Option<Version>> {
        let run = claim.run.clone();
        let claim = claim.clone();
        let steered = commit.steered.clone();
        let version = self
            .blocking(move |inner| claim::complete(inner, &claim, commit))
            .await?;
        // The conversation's next run may be claimable now.
        self.inner.work.notify_waiters();
        self.inner.runs.signal(&run);
        for run in &steered {
            self.inner.runs.signal(run);
        }
        Ok(version)
    }

    async fn fail(&self, claim: &Claim, failure: &Failure) -> Result<AfterFailure> {
        failure.validate()?;
        let run = claim.run.clone();
        let (claim, failure) = (claim.clone(), failure.clone());
        let after = self
            .blocking(move |inner| claim::fail(inner, &claim, &failure))
            .await?;
        self.inner.work.notify_waiters();
        self.inner.runs.signal(&run);
        Ok(after)
    }

    async fn cancel(
        &self,
        org: &OrgId,
        run: &RunId,
        reason: &str,
    ) -> Result<Option<CancelOutcome>> {
        let reason = lobu_core::control::cancel_reason(reason);
        let (org, id) = (org.clone(), run.clone());
        let outcome = self
            .blocking(move |inner| cancel::cancel(inner, &org, &id, &reason))
            .await?;
        if outcome.is_some() {
            // Followers see the run's new state; a cancelled run's lane moves on.
            self.inner.work.notify_waiters();
            self.inner.runs.signal(run);
        }
        Ok(outcome)
    }

    async fn steerable(&self, claim: &Claim) -> Result<Vec<Steered>> {
        let claim = claim.clone();
        self.blocking(move |inner| steering::steerable(inner, &claim))
            .await
    }

    async fn release(&self, claim: &Claim) -> Result<()> {
        let run = claim.run.clone();
        let claim = claim.clone();
        self.blocking(move |inner| claim::release(inner, &claim))
            .await?;
        self.inner.work.notify_waiters();
        self.inner.runs.signal(&run);
        Ok(())
    }

    async fn status(&self, org: &OrgId, run: &RunId) -> Result<Option<RunRecord>> {
        let (org, run) = (org.clone(), run.clone());
        self.blocking(move |inner| intake::status(inner, &org, &run))
            .await
    }

    async fn runs(
        &self,
        org: &OrgId,
        filter: &RunFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<RunRecord>> {
        check_page_limit(limit)?;
        let (org, filter) = (org.clone(), filter.clone());
        let cursor = cursor.map(str::to_owned);
        self.blocking(move |inner| listing::runs(inner, &org, &filter, cursor.as_deref(), limit))
            .await
    }

    async fn depth(&self) -> Result<u64> {
        self.blocking(intake::depth).await
    }

    async fn prune_runs_with(&self, prune: &RunPrune) -> Result<u64> {
        prune.validate()?;
        let prune = *prune;
        self.blocking(move |inner| intake::prune_runs(inner, &prune))
            .await
    }

    async fn record_events(&self, claim: &Claim, events: &[String]) -> Result<u64> {
        check_events(events)?;
        let (claim, batch) = (claim.clone(), events.to_vec());
        let run = claim.run.clone();
        let last = self
            .blocking(move |inner| events::record(inner, &claim, &batch))
            .await?;
        if !events.is_empty() {
            self.inner.runs.signal(&run);
        }
        Ok(last)
    }

    async fn read_events(
        &self,
        org: &OrgId,
        run: &RunId,
        after: u64,
        limit: usize,
    ) -> Result<Option<EventPage>> {
        check_read_limit(limit)?;
        let (org, run) = (org.clone(), run.clone());
        self.blocking(move |inner| events::read(inner, &org, &run, after, limit))
            .await
    }

    async fn prune_events_with(&self, prune: &EventPrune) -> Result<u64> {
        prune.validate()?;
        let prune = *prune;
        self.blocking(move |inner| events::prune(inner, &prune))
            .await
    }

    async fn wait_for_work(&self, max: Duration) {
        // Other processes' submits and finished runs wake us through the store's watcher;
        // where none can be started, the poll interval bounds the wait.
        self.watch_for_work().await;
        // Registered before looking, so a submit between the look and the wait still wakes
        // us.
        let notified = self.inner.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let due = match self.blocking(intake::next_due).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "could not look at the run queue");
                None
            }
        };
        let wait = due
            .map_or(max, |due| due.min(max))
            .min(self.inner.poll_interval);
        if wait.is_zero() {
            return;
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep(wait) => {}
        }
    }

    async fn wait_for_run(&self, _org: &OrgId, run: &RunId, since: Instant, max: Duration) {
        // Changes made by this process wake at once; another process's through the store's
        // watcher (see `crate::watch`).
        self.wait_for_run_anywhere(run, since, max).await;
    }
}
