//! One run's record, `queue/runs/<run>`: the source of truth for the run (its status, its
//! claim, its attempts), replaced atomically on every change.

use std::time::{Duration, SystemTime};

use lobu_core::multitask::Queued;
use lobu_core::run_state::{RunState, error_text};
use lobu_core::{
    Claim, ConversationKey, Error, ErrorKind, Fence, IdempotencyKey, MultitaskStrategy, NewRun,
    Result, RunId, RunRecord, RunStatus, Version, WorkerId,
};
use serde::{Deserialize, Serialize};

use super::markers::{Marker, lane_of};
use crate::clock;

/// A run record. Records written by the previous version (contract v1) still decode: they
/// carry a per-run `last_token` (ignored now) and a holder `token` (read as its fence: that
/// claim can only have lapsed, and the conversation's next claim draws a newer fence), and
/// lack `head` and `committed` (defaulted).
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
    /// The newest claim; kept after it ends so older claims stay fenced.
    pub(crate) holder: Option<Holder>,
    /// The conversation's head version when the newest claim was made.
    #[serde(default)]
    pub(crate) head: Option<u64>,
    /// The head version the run's commit wrote, once completed (a retried `complete` gets it
    /// back).
    #[serde(default)]
    pub(crate) committed: Option<u64>,
    pub(crate) idempotency_key: Option<IdempotencyKey>,
    /// The reason of a cancellation requested while the run was claimed: its holder's
    /// heartbeat and commit answer `Cancelled`, its fail or release ends it `cancelled`.
    /// Absent in records written before cancellation (and whenever none was requested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cancel_requested: Option<String>,
    /// Submitted with the `steer` strategy: offered to its conversation's running turn.
    /// Absent in records written before steering (and whenever it is false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) steer: bool,
    /// The steered runs this run's commit takes, written before the commit lands so that
    /// recovery of a commit stopped halfway completes them too (see `super::steering`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) steering: Vec<RunId>,
    pub(crate) record: RunRecord,
}

fn is_false(value: &bool) -> bool {
    !*value
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Holder {
    pub(crate) worker: WorkerId,
    /// The conversation's fence this claim drew (`token` in the previous version's records).
    #[serde(alias = "token")]
    pub(crate) fence: u64,
    #[serde(with = "crate::clock")]
    pub(crate) expires_at: SystemTime,
}

impl RunFile {
    pub(crate) fn new(seq: u64, id: RunId, new: NewRun, now: SystemTime) -> Self {
        let retry_delay_ns = u64::try_from(new.retry_delay.as_nanos()).unwrap_or(u64::MAX);
        let steer = new.multitask == MultitaskStrategy::Steer;
        RunFile {
            format: crate::store::FORMAT,
            seq,
            lane: lane_of(&new.key),
            marker: None,
            retry_delay_ns,
            not_before: now,
            holder: None,
            head: None,
            committed: None,
            idempotency_key: new.idempotency_key,
            cancel_requested: None,
            steer,
            steering: Vec::new(),
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

    /// The run as lobu-core's multitask rules see it (one row of its conversation's lane).
    pub(crate) fn queued(&self) -> Queued {
        Queued {
            run: self.record.run.clone(),
            kind: self.record.kind,
            status: self.record.status,
            attempts: self.record.attempts,
            steer: self.steer,
            cancel_requested: self.cancel_requested.is_some(),
        }
    }

    /// The run as lobu-core's run state machine sees it.
    pub(crate) fn state(&self) -> RunState {
        RunState {
            status: self.record.status,
            attempts: self.record.attempts,
            max_attempts: self.record.max_attempts,
            claim_expires_at: self.holder.as_ref().map(|h| h.expires_at),
            not_before: self.not_before,
        }
    }

    /// Whether `claim`'s worker and fence are this run's holder (whatever its status).
    pub(crate) fn held_by(&self, claim: &Claim) -> bool {
        self.holder
            .as_ref()
            .is_some_and(|h| h.worker == claim.worker && h.fence == claim.fence.0)
    }

    /// The marker this run should have; `None` once it is terminal.
    pub(crate) fn wanted_marker(&self) -> Option<Marker> {
        let status = self.record.status;
        (!status.is_terminal()).then(|| {
            let due = clock::millis(self.state().due_at());
            let pending = status == RunStatus::Pending;
            Marker::new(self.seq, &self.lane, due, pending, &self.record.run)
        })
    }

    /// `Fenced` unless `claim` is the newest claim of this running run and `newest` (the
    /// conversation's newest fence) is the claim's.
    pub(crate) fn check_claim(&self, claim: &Claim, newest: Option<Fence>) -> Result<()> {
        let holder = self.holder.as_ref().map(|h| (&h.worker, Fence(h.fence)));
        claim.check_newest(self.record.status, holder, newest)
    }

    /// `Cancelled` (with the reason) if a cancellation of the run was requested.
    pub(crate) fn check_not_cancelled(&self) -> Result<()> {
        match &self.cancel_requested {
            Some(reason) => Err(Error::new(
                ErrorKind::Cancelled,
                format!("run {} was cancelled: {reason}", self.record.run),
            )),
            None => Ok(()),
        }
    }

    /// End the run `cancelled` with `reason` as its error (the caller writes the record).
    pub(crate) fn end_cancelled(&mut self, reason: &str, now: SystemTime) {
        let record = &mut self.record;
        record.status = RunStatus::Cancelled;
        record.error = Some(error_text(reason));
        record.updated_at = now;
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
            fence: Fence(holder.fence),
            head: self.head.map(Version),
            expires_at: holder.expires_at,
        })
    }
}
