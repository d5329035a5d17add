//! The run state machine: the decisions every backend makes the same way about a run's
//! attempts, due times and failure text. Backends load a run, ask these functions, and write
//! what they answer (lobu-store-pg states the same rules in its SQL, held to them by the
//! conformance suite).

use std::time::{Duration, SystemTime};

use crate::control::{Failure, Retry};
use crate::queue::{AfterFailure, RunStatus};
#[cfg(test)]
use crate::session::TerminalStatus;

/// The most bytes of a failure message a run record keeps: one runaway message must not
/// bloat every later read of the record.
pub const MAX_ERROR_BYTES: usize = 16 * 1024;

/// `error` as a run record stores it: cut to [`MAX_ERROR_BYTES`] at a char boundary, with `…`
/// marking the cut.
pub fn error_text(error: &str) -> String {
    if error.len() <= MAX_ERROR_BYTES {
        return error.to_owned();
    }
    let mut cut = MAX_ERROR_BYTES;
    while !error.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut text = error[..cut].to_owned();
    text.push('…');
    text
}

/// What a conversation's oldest unfinished run offers a claim at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Claimable now: pending and due, or its claim lapsed with attempts left (re-delivery).
    Ready,
    /// Its claim lapsed on the last attempt: it fails instead of being re-delivered.
    Exhausted,
    /// Not claimable before then (a retry delay, or a live claim's expiry).
    Later(SystemTime),
}

/// Where a run stands for the claim rules, whatever the backend stores it as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunState {
    /// Pending or running (terminal runs are never claimable).
    pub status: RunStatus,
    /// Attempts started so far.
    pub attempts: u32,
    /// The attempt limit.
    pub max_attempts: u32,
    /// When the live claim lapses (a running run).
    pub claim_expires_at: Option<SystemTime>,
    /// A pending run is not claimable before this (its retry delay).
    pub not_before: SystemTime,
}

impl RunState {
    /// When the run may next be claimable.
    pub fn due_at(&self) -> SystemTime {
        match (self.status, self.claim_expires_at) {
            (RunStatus::Running, Some(expires_at)) => expires_at,
            _ => self.not_before,
        }
    }

    /// What the run offers a claim at `now`. A claim ending exactly at `now` has lapsed.
    pub fn due(&self, now: SystemTime) -> Due {
        let at = self.due_at();
        if at > now {
            Due::Later(at)
        } else if self.status == RunStatus::Running && self.attempts >= self.max_attempts {
            Due::Exhausted
        } else {
            Due::Ready
        }
    }

    /// After a failed attempt: retry as `failure.retry` says (`run_delay` is the run's own
    /// delay) while attempts remain, else terminal with the failure's status. A run whose
    /// cancellation was requested never runs again: it ends `cancelled`.
    pub fn after_failure(
        &self,
        failure: &Failure,
        run_delay: Duration,
        cancel_requested: bool,
        now: SystemTime,
    ) -> AfterFailure {
        if cancel_requested {
            return AfterFailure::Final(RunStatus::Cancelled);
        }
        let delay = match failure.retry {
            Retry::Never => return AfterFailure::Final(RunStatus::from(failure.status)),
            Retry::AfterRunDelay => run_delay,
            Retry::After(delay) => delay,
        };
        if self.attempts < self.max_attempts {
            AfterFailure::Retry { at: now + delay }
        } else {
            AfterFailure::Final(RunStatus::from(failure.status))
        }
    }
}

/// The error a run records when its claim lapsed and it is re-delivered.
pub fn redelivered_error(attempts: u32) -> String {
    format!(
        "the claim of attempt {attempts} expired (its worker stopped heartbeating); re-delivered"
    )
}

/// The error a run records when the claim of its last attempt lapsed (the reaper fails it).
pub fn exhausted_error(attempts: u32, max_attempts: u32) -> String {
    format!(
        "the claim of attempt {attempts} of {max_attempts} expired (its worker stopped heartbeating)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: RunStatus, attempts: u32, expires: Option<SystemTime>) -> RunState {
        RunState {
            status,
            attempts,
            max_attempts: 3,
            claim_expires_at: expires,
            not_before: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_pending_run_past_its_delay_is_ready() {
        let now = SystemTime::now();
        assert_eq!(state(RunStatus::Pending, 1, None).due(now), Due::Ready);
    }

    #[test]
    fn a_live_claim_is_due_at_its_expiry() {
        let now = SystemTime::now();
        let later = now + Duration::from_secs(5);
        let run = state(RunStatus::Running, 1, Some(later));
        assert_eq!(run.due(now), Due::Later(later));
    }

    #[test]
    fn a_lapsed_claim_with_attempts_left_is_redelivered_and_on_the_last_is_exhausted() {
        let now = SystemTime::now();
        assert_eq!(state(RunStatus::Running, 2, Some(now)).due(now), Due::Ready);
        assert_eq!(
            state(RunStatus::Running, 3, Some(now)).due(now),
            Due::Exhausted
        );
    }

    #[test]
    fn a_failure_retries_while_attempts_remain_then_is_final() {
        let now = SystemTime::now();
        let delay = Duration::from_secs(2);
        let timeout = Failure::new(TerminalStatus::Timeout, "slow");
        let second = state(RunStatus::Running, 2, None);
        assert_eq!(
            second.after_failure(&timeout, delay, false, now),
            AfterFailure::Retry { at: now + delay }
        );
        assert_eq!(
            state(RunStatus::Running, 3, None).after_failure(&timeout, delay, false, now),
            AfterFailure::Final(RunStatus::Timeout)
        );
        let own = timeout.clone().retry(Retry::After(Duration::from_secs(9)));
        assert_eq!(
            second.after_failure(&own, delay, false, now),
            AfterFailure::Retry {
                at: now + Duration::from_secs(9)
            }
        );
    }

    #[test]
    fn a_permanent_failure_or_a_requested_cancel_ends_the_run_with_attempts_left() {
        let now = SystemTime::now();
        let first = state(RunStatus::Running, 1, None);
        let permanent = Failure::new(TerminalStatus::Failed, "bad").retry(Retry::Never);
        assert_eq!(
            first.after_failure(&permanent, Duration::ZERO, false, now),
            AfterFailure::Final(RunStatus::Failed)
        );
        let retried = Failure::new(TerminalStatus::Failed, "flaky");
        assert_eq!(
            first.after_failure(&retried, Duration::ZERO, true, now),
            AfterFailure::Final(RunStatus::Cancelled)
        );
    }

    #[test]
    fn long_error_text_is_cut_at_a_char_boundary_and_marked() {
        let text = "é".repeat(MAX_ERROR_BYTES);
        let kept = error_text(&text);
        assert!(kept.ends_with('…'));
        assert!(kept.len() <= MAX_ERROR_BYTES + '…'.len_utf8());
        assert_eq!(error_text("short"), "short");
    }
}
