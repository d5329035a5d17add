//! Run control: how a failed attempt goes on ([`Failure`], [`Retry`]), the backoff between
//! attempts ([`backoff`]), and cancellation ([`CancelOutcome`], [`cancel_outcome`]).
//!
//! The decisions every backend makes the same way live here as pure functions; backends load
//! a run, ask, and write the answer.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::queue::{MAX_RETRY_DELAY, RunStatus, check_failure_status};
use crate::session::TerminalStatus;

/// When the run of a failed attempt may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retry {
    /// After the run's own `retry_delay` (what it was submitted with), while attempts remain.
    AfterRunDelay,
    /// After this long (at most [`MAX_RETRY_DELAY`]), while attempts remain.
    After(Duration),
    /// Never: the run ends now with the failure's status, whatever attempts remain (a
    /// permanent error, a cancellation).
    Never,
}

/// A failed attempt, as [`RunQueue::fail`](crate::RunQueue::fail) records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// How it failed: failed, timeout or cancelled (`completed` is `InvalidInput`).
    pub status: TerminalStatus,
    /// Why, for the run record (cut to [`MAX_ERROR_BYTES`](crate::run_state::MAX_ERROR_BYTES)).
    pub error: String,
    /// Whether and when the run is tried again.
    pub retry: Retry,
}

impl Failure {
    /// A failure retried after the run's own delay while attempts remain.
    pub fn new(status: TerminalStatus, error: impl Into<String>) -> Self {
        Failure {
            status,
            error: error.into(),
            retry: Retry::AfterRunDelay,
        }
    }

    /// The same failure with another [`Retry`].
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// `InvalidInput` for a `completed` status or a delay past [`MAX_RETRY_DELAY`].
    pub fn validate(&self) -> Result<()> {
        check_failure_status(self.status)?;
        if let Retry::After(delay) = self.retry
            && delay > MAX_RETRY_DELAY
        {
            return Err(Error::invalid("a retry delay must be at most 24h"));
        }
        Ok(())
    }
}

/// The delay before attempt `attempt + 1` after attempt `attempt` (from 1) failed:
/// exponential from `base` (`base`, `2 base`, `4 base`, …) up to `cap`, with "equal jitter":
/// half of it fixed, half scaled by `jitter` (a random number in `0.0..1.0`), so a crowd of
/// runs that failed together does not come back together.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(30);
    let full = base.saturating_mul(1 << doublings).min(cap);
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// What [`RunQueue::cancel`](crate::RunQueue::cancel) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// The run was waiting (pending, or waiting out a retry delay) or its claim had lapsed: it
    /// is now `cancelled` and never runs again.
    Cancelled,
    /// The run is claimed: its claim holder learns it at its next heartbeat (`Cancelled`), its
    /// commit is refused, and the run ends `cancelled`.
    Requested,
    /// The run had already ended with this status: nothing changed.
    Finished(RunStatus),
}

/// What cancelling a run in `status` does; `claim_live` says whether a running run's claim
/// has not lapsed. The rule every backend applies.
pub fn cancel_outcome(status: RunStatus, claim_live: bool) -> CancelOutcome {
    match status {
        RunStatus::Pending => CancelOutcome::Cancelled,
        RunStatus::Running if claim_live => CancelOutcome::Requested,
        RunStatus::Running => CancelOutcome::Cancelled,
        finished => CancelOutcome::Finished(finished),
    }
}

/// The error a cancelled run records when no reason was given.
pub const CANCELLED_ERROR: &str = "cancelled";

/// The error a run cancelled with `reason` records: the reason, cut like any run error
/// ([`error_text`](crate::run_state::error_text)), or [`CANCELLED_ERROR`] when it is empty.
pub fn cancel_reason(reason: &str) -> String {
    if reason.is_empty() {
        CANCELLED_ERROR.to_owned()
    } else {
        crate::run_state::error_text(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap_with_half_of_it_jittered() {
        let (base, cap) = (Duration::from_secs(2), Duration::from_secs(60));
        let at = |attempt, jitter| backoff(attempt, base, cap, jitter);
        assert_eq!(at(1, 1.0), Duration::from_secs(2));
        assert_eq!(at(1, 0.0), Duration::from_secs(1));
        assert_eq!(at(2, 1.0), Duration::from_secs(4));
        assert_eq!(at(3, 1.0), Duration::from_secs(8));
        assert_eq!(at(10, 1.0), cap);
        assert_eq!(at(10, 0.0), cap / 2);
        assert_eq!(at(u32::MAX, 0.5), cap / 2 + cap / 4);
        assert_eq!(at(0, 1.0), base, "attempt 0 is treated as the first");
        assert_eq!(at(2, 7.0), Duration::from_secs(4), "jitter is clamped");
    }

    #[test]
    fn cancelling_ends_a_waiting_or_abandoned_run_asks_a_held_one_and_leaves_a_finished_one() {
        assert_eq!(
            cancel_outcome(RunStatus::Pending, false),
            CancelOutcome::Cancelled
        );
        assert_eq!(
            cancel_outcome(RunStatus::Running, true),
            CancelOutcome::Requested
        );
        assert_eq!(
            cancel_outcome(RunStatus::Running, false),
            CancelOutcome::Cancelled
        );
        for status in [
            RunStatus::Completed,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ] {
            assert_eq!(
                cancel_outcome(status, true),
                CancelOutcome::Finished(status)
            );
        }
    }

    #[test]
    fn a_completed_failure_or_a_delay_past_a_day_is_invalid() {
        let ok = Failure::new(TerminalStatus::Failed, "x").retry(Retry::After(MAX_RETRY_DELAY));
        assert!(ok.validate().is_ok());
        let late = ok.clone().retry(Retry::After(MAX_RETRY_DELAY * 2));
        assert_eq!(late.validate().unwrap_err().kind(), ErrorKind::InvalidInput);
        let completed = Failure::new(TerminalStatus::Completed, "x");
        assert_eq!(
            completed.validate().unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
}
