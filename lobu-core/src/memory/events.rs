//! Run events in memory: kept on the run they belong to, so pruning a run drops them.

use super::queue::QueueTable;
use crate::error::{Error, Result};
use crate::events::{EventPage, StoredEvent, check_may_record};
use crate::id::{OrgId, RunId};
use crate::queue::Claim;
use crate::retention::EventPrune;

impl QueueTable {
    /// Append `events` under `claim` (already checked for shape); the run's newest seq after.
    pub(super) fn record_events(&mut self, claim: &Claim, events: &[String]) -> Result<u64> {
        let run = self
            .runs
            .get_mut(&claim.run)
            .filter(|run| run.record.key.org == claim.key.org)
            .ok_or_else(|| Error::not_found(format!("run {} does not exist", claim.run)))?;
        let last_fence = run.holder.as_ref().map(|holder| holder.fence);
        check_may_record(claim, run.record.status, last_fence)?;
        for data in events {
            run.event_seq += 1;
            run.events.push(StoredEvent {
                seq: run.event_seq,
                attempt: claim.attempt,
                data: data.clone(),
            });
        }
        Ok(run.event_seq)
    }

    pub(super) fn read_events(
        &self,
        org: &OrgId,
        id: &RunId,
        after: u64,
        limit: usize,
    ) -> Option<EventPage> {
        let run = self.runs.get(id).filter(|run| run.record.key.org == *org)?;
        // Seqs are consecutive from the first kept event, so `after` is an index.
        let first = run.events.first().map_or(1, |event| event.seq);
        let skip =
            usize::try_from(after.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX);
        Some(EventPage {
            record: run.record.clone(),
            events: run.events.iter().skip(skip).take(limit).cloned().collect(),
            last_seq: run.events.last().map_or(0, |event| event.seq),
        })
    }

    pub(super) fn prune_events(&mut self, prune: &EventPrune) -> u64 {
        let mut left = prune.limit;
        for run in self.runs.values_mut() {
            if left == 0 {
                break;
            }
            if prune.takes(run.record.status, run.record.updated_at) {
                let taken = run.events.len().min(left);
                left -= taken;
                if !prune.dry_run {
                    run.events.drain(..taken);
                }
            }
        }
        (prune.limit - left) as u64
    }
}
