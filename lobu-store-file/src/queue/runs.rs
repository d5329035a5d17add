//! One run's record, `queue/runs/<run>`: the source of truth for the run (its status, its
//! claim, its attempts), replaced atomically on every change.

use std::time::{Duration, SystemTime};

use lobu_core::{
    Claim, ConversationKey, Error, IdempotencyKey, NewRun, Result, RunId, RunRecord, RunStatus,
    WorkerId,
};
use serde::{Deserialize, Serialize};

use super::markers::{Marker, lane_of};
use crate::clock;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunFile {
    pub(crate) format: u32,
    /// Submission order, to pick the oldest claimable run.
    pub(crate) seq: u64,
    pub(crate) lane: String,
    /// The marker's name when it was last written (a hint; the marker may have moved since).
    pub(crate) marker: Option<String>,
    pub(crate) retry_delay_ns: u64,
    /// A pending run is not claimable before this (its retry delay).
    #[serde(with = "crate::clock")]
    pub(crate) not_before: SystemTime,
    /// The newest claim token handed out for this run.
    pub(crate) last_token: u64,
    /// The newest claim; kept after it ends so older claims stay fenced.
    pub(crate) holder: Option<Holder>,
    pub(crate) idempotency_key: Option<IdempotencyKey>,
    pub(crate) record: RunRecord,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Holder {
    pub(crate) worker: WorkerId,
    pub(crate) token: u64,
    #[serde(with = "crate::clock")]
    pub(crate) expires_at: SystemTime,
}

/// What a lane's front run offers a claim at some instant.
#[derive(Debug)]
pub(crate) enum Front {
    /// Claimable now (pending and due, or its claim expired with attempts left).
    Ready,
    /// Its claim expired on the last attempt: it fails instead of being re-delivered.
    Exhausted,
    /// Not claimable before then (a retry delay, or a live claim).
    Later,
}

impl RunFile {
    pub(crate) fn new(seq: u64, id: RunId, new: NewRun, now: SystemTime) -> Self {
        let retry_delay_ns = u64::try_from(new.retry_delay.as_nanos()).unwrap_or(u64::MAX);
        RunFile {
            format: crate::store::FORMAT,
            seq,
            lane: lane_of(&new.key),
            marker: None,
            retry_delay_ns,
            not_before: now,
            last_token: 0,
            holder: None,
            idempotency_key: new.idempotency_key,
            record: RunRecord {
                run: id,
                key: new.key,
                kind: new.kind,
                status: RunStatus::Pending,
                attempts: 0,
                max_attempts: new.max_attempts,
                error: None,
                output: None,
                payload: new.payload,
                created_at: now,
                updated_at: now,
            },
        }
    }

    pub(crate) fn key(&self) -> &ConversationKey {
        &self.record.key
    }

    pub(crate) fn retry_delay(&self) -> Duration {
        Duration::from_nanos(self.retry_delay_ns)
    }

    /// When the run may next be claimable.
    fn due(&self) -> SystemTime {
        match (&self.record.status, &self.holder) {
            (RunStatus::Running, Some(holder)) => holder.expires_at,
            _ => self.not_before,
        }
    }

    pub(crate) fn front(&self, now: SystemTime) -> Front {
        if self.due() > now {
            Front::Later
        } else if self.record.status == RunStatus::Running
            && self.record.attempts >= self.record.max_attempts
        {
            Front::Exhausted
        } else {
            Front::Ready
        }
    }

    /// The marker this run should have; `None` once it is terminal.
    pub(crate) fn wanted_marker(&self) -> Option<Marker> {
        let status = self.record.status;
        (!status.is_terminal()).then(|| {
            let due = clock::millis(self.due());
            let pending = status == RunStatus::Pending;
            Marker::new(self.seq, &self.lane, due, pending, &self.record.run)
        })
    }

    /// `Fenced` unless `claim` is the newest claim of this running run.
    pub(crate) fn check_claim(&self, claim: &Claim) -> Result<()> {
        let holder = self.holder.as_ref().map(|h| (&h.worker, h.token));
        claim.check_newest(self.record.status, holder)
    }

    /// The claim this run's holder has.
    pub(crate) fn claim_of(&self) -> Result<Claim> {
        let holder = self
            .holder
            .as_ref()
            .ok_or_else(|| Error::fenced(format!("run {} has no claim", self.record.run)))?;
        let record = &self.record;
        Ok(Claim {
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
