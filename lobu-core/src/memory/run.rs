//! One queued run and what its claim allows.

use std::time::{Duration, SystemTime};

use crate::error::Result;
use crate::id::WorkerId;
use crate::queue::{Claim, RunRecord, RunStatus};

pub(super) struct Run {
    pub(super) record: RunRecord,
    /// Submission order, to pick the oldest claimable run across conversations.
    pub(super) seq: u64,
    pub(super) retry_delay: Duration,
    /// A pending run is not claimable before this (its retry delay).
    pub(super) not_before: SystemTime,
    /// The newest claim; kept after it ends so older claims stay fenced.
    pub(super) holder: Option<Holder>,
}

pub(super) struct Holder {
    pub(super) worker: WorkerId,
    pub(super) token: u64,
    pub(super) expires_at: SystemTime,
}

/// What the front run of a lane offers to a claim at some instant.
pub(super) enum Front {
    /// Claimable now (pending and due, or its claim expired with attempts left).
    Ready,
    /// Its claim expired on the last attempt: it fails instead of being re-delivered.
    Exhausted,
    /// Claimable at that time at the earliest (a retry delay, or a live claim's expiry).
    Later(SystemTime),
}

impl Run {
    pub(super) fn front(&self, now: SystemTime) -> Front {
        let due = match (&self.record.status, &self.holder) {
            (RunStatus::Running, Some(holder)) => holder.expires_at,
            _ => self.not_before,
        };
        if due > now {
            Front::Later(due)
        } else if self.record.status == RunStatus::Running
            && self.record.attempts >= self.record.max_attempts
        {
            Front::Exhausted
        } else {
            Front::Ready
        }
    }

    /// The run as `claim` holds it: `Fenced` unless it is the newest claim of a running run.
    pub(super) fn check_claim(&self, claim: &Claim) -> Result<()> {
        let holder = self.holder.as_ref().map(|h| (&h.worker, h.token));
        claim.check_newest(self.record.status, holder)
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
            token: holder.token,
            expires_at: holder.expires_at,
        })
    }
}
