//! One queued run and what its claim allows.

use std::time::{Duration, SystemTime};

use crate::error::Result;
use crate::events::StoredEvent;
use crate::id::WorkerId;
use crate::lock::Fence;
use crate::queue::{Claim, RunRecord};
use crate::run_state::RunState;
use crate::session::Version;

pub(super) struct Run {
    pub(super) record: RunRecord,
    /// Submission order, to pick the oldest claimable run across conversations.
    pub(super) seq: u64,
    pub(super) retry_delay: Duration,
    /// A pending run is not claimable before this (its retry delay).
    pub(super) not_before: SystemTime,
    /// The newest claim; kept after it ends so older claims stay fenced.
    pub(super) holder: Option<Holder>,
    /// The head version at the newest claim.
    pub(super) head: Option<Version>,
    /// The version the run's commit wrote, once completed (for a retried commit).
    pub(super) committed: Option<Version>,
    /// Its stored events, oldest first.
    pub(super) events: Vec<StoredEvent>,
    /// The newest event's seq (kept when the events are pruned, so seqs are never reused).
    pub(super) event_seq: u64,
    /// A cancellation was requested while the run was claimed (its reason).
    pub(super) cancel: Option<String>,
    /// Submitted with the `steer` strategy: offered to the running turn.
    pub(super) steer: bool,
}

pub(super) struct Holder {
    pub(super) worker: WorkerId,
    pub(super) fence: Fence,
    pub(super) expires_at: SystemTime,
}

impl Run {
    /// The run as the shared state machine sees it.
    pub(super) fn state(&self) -> RunState {
        RunState {
            status: self.record.status,
            attempts: self.record.attempts,
            max_attempts: self.record.max_attempts,
            claim_expires_at: self.holder.as_ref().map(|h| h.expires_at),
            not_before: self.not_before,
        }
    }

    /// `Fenced` unless `claim` is the newest claim of this running run and `newest` (the
    /// conversation's newest fence) is the claim's.
    pub(super) fn check_claim(&self, claim: &Claim, newest: Option<Fence>) -> Result<()> {
        let holder = self.holder.as_ref().map(|h| (&h.worker, h.fence));
        claim.check_newest(self.record.status, holder, newest)
    }

    /// `Cancelled` if a cancellation of the run was requested.
    pub(super) fn check_not_cancelled(&self) -> Result<()> {
        match &self.cancel {
            Some(reason) => Err(crate::Error::new(
                crate::ErrorKind::Cancelled,
                format!("run {} was cancelled: {reason}", self.record.run),
            )),
            None => Ok(()),
        }
    }

    pub(super) fn claim_of(&self) -> Option<Claim> {
        let holder = self.holder.as_ref()?;
        let record = &self.record;
        Some(Claim {
            run: record.run.clone(),
            key: record.key.clone(),
            kind: record.kind,
            payload: record.payload.clone(),
            attempt: record.attempts,
            max_attempts: record.max_attempts,
            worker: holder.worker.clone(),
            fence: holder.fence,
            head: self.head,
            expires_at: holder.expires_at,
        })
    }
}
