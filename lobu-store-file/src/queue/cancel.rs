//! `cancel`, and the same cancellation applied by a submit's `interrupt` or `rollback`, under
//! the lock of the run's conversation (see [`super::files`]).
//!
//! Syncs, with syncing on: a waiting run 3 (run record 2, marker 1), one whose claim lapsed
//! 5 (and `state.json` 2 ending the lapsed lease); a claimed run 2 (run record only); a
//! finished, unknown or other org's run none. A cancelled claim's `heartbeat` and `complete`
//! sync nothing.

use std::time::SystemTime;

use lobu_core::control::{CancelOutcome, cancel_outcome};
use lobu_core::run_state::error_text;
use lobu_core::{Error, OrgId, Result, RunId, RunStatus};

use super::files::Queue;
use super::runs::RunFile;
use super::steering;
use crate::state::Conversation;
use crate::store::Inner;

/// Cancel `run` of `org` (see [`cancel_outcome`]): a waiting run, or one whose claim lapsed,
/// ends `cancelled` now (record and marker, and a lapsed claim's ownership of the
/// conversation); a claimed one is marked for its holder; a finished one is left. `None` for
/// an unknown run or another org's.
pub(crate) fn cancel(
    inner: &Inner,
    org: &OrgId,
    run: &RunId,
    reason: &str,
) -> Result<Option<CancelOutcome>> {
    let queue = Queue::new(inner);
    // Which conversation's lock guards the record: its key never changes.
    let Some(file) = queue.load_run(run)?.filter(|f| f.key().org == *org) else {
        return Ok(None);
    };
    let key = file.key().clone();
    let conversation = Conversation::new(inner, &key);
    let _lock = conversation.create_and_lock()?;
    cancel_locked(&queue, &conversation, org, run, reason, SystemTime::now())
}

/// [`cancel`] under the lock of the run's conversation (`conversation`), which the caller
/// holds.
pub(super) fn cancel_locked(
    queue: &Queue<'_>,
    conversation: &Conversation<'_>,
    org: &OrgId,
    run: &RunId,
    reason: &str,
    now: SystemTime,
) -> Result<Option<CancelOutcome>> {
    let load = || Ok::<_, Error>(queue.load_run(run)?.filter(|f| f.key().org == *org));
    let Some(mut file) = load()? else {
        return Ok(None);
    };
    // A commit taking steered runs that landed before a crash stopped it (this run's, or
    // the one of the turn that took this run) is finished first: it came before this cancel.
    if *file.key() != *conversation.key {
        // Not the conversation whose lock the caller holds (a submit's lane never holds
        // another's runs): left alone.
        return Ok(None);
    }
    if steering::settle(queue, conversation, &file, now)? {
        let Some(settled) = load()? else {
            return Ok(None);
        };
        file = settled;
    }
    let live = file.holder.as_ref().is_some_and(|h| h.expires_at > now);
    let outcome = cancel_outcome(file.record.status, live);
    match outcome {
        CancelOutcome::Cancelled => {
            let lapsed = file.record.status == RunStatus::Running;
            file.end_cancelled(reason, now);
            let marker = queue.find_marker(&file)?;
            queue.commit(&mut file, marker)?;
            if lapsed {
                end_lapsed_ownership(conversation, &file);
            }
        }
        CancelOutcome::Requested => {
            file.cancel_requested = Some(error_text(reason));
            // Only the record: a running run's marker does not change.
            queue.save_run(&file)?;
        }
        _ => {}
    }
    Ok(Some(outcome))
}

/// Drop the conversation's lease if it is still the lapsed claim of `file`'s holder (under
/// the conversation's lock, which the caller holds). Only tidiness (a lapsed lease owns
/// nothing): a failure is logged, the cancel stands.
fn end_lapsed_ownership(conversation: &Conversation<'_>, file: &RunFile) {
    let Some(fence) = file.holder.as_ref().map(|h| h.fence) else {
        return;
    };
    let ended = conversation.load().and_then(|state| match state {
        Some(mut state) if state.lease.as_ref().is_some_and(|l| l.fence == fence) => {
            state.lease = None;
            conversation.save(&state)
        }
        _ => Ok(()),
    });
    if let Err(e) = ended {
        tracing::warn!(conversation = %file.key(), error = %e,
            "could not end the cancelled run's lapsed ownership");
    }
}
