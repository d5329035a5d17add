//! Stored run events: what a run's subscribers replay, on any replica, after any restart.
//!
//! The runtime turns what an attempt does (it started, streamed output, appended an entry,
//! failed and will retry) into JSON objects and records them with
//! [`RunQueue::record_events`](crate::RunQueue::record_events) under the attempt's claim;
//! subscribers anywhere read them back with
//! [`RunQueue::read_events`](crate::RunQueue::read_events) and wait for more with
//! [`RunQueue::wait_for_run`](crate::RunQueue::wait_for_run). The backend never looks inside
//! an event: it numbers them, fences them and keeps them.
//!
//! The rules every backend applies the same way are here: what an append may carry
//! ([`check_events`]), which claim may append ([`check_may_record`]) and what a read may ask
//! for ([`check_read_limit`]).

use crate::error::{Error, Result};
use crate::lock::Fence;
use crate::queue::{Claim, RunRecord, RunStatus};

/// The largest single event, in bytes of JSON.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// The most events one append may carry.
pub const MAX_EVENTS_PER_APPEND: usize = 1024;
/// The most events one read may return.
pub const MAX_EVENTS_PER_READ: usize = 1024;

/// One stored event of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its place in the run: 1 for the first stored event, then one more for each; never
    /// reused within the run, across attempts and replicas.
    pub seq: u64,
    /// The attempt that recorded it (the claim's [`Claim::attempt`]).
    pub attempt: u32,
    /// The event, a JSON object, byte for byte as recorded.
    pub data: String,
}

/// A run and its stored events after some point, read at one moment.
///
/// Events are recorded under a claim that must still be the run's newest and unfinished, so
/// once [`record`](Self::record) is terminal the run's events are all stored: a page whose
/// record is terminal and whose events reach [`last_seq`](Self::last_seq) is the whole rest
/// of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    /// The run as it stood when the events were read.
    pub record: RunRecord,
    /// Events after the point asked for, in order, at most the limit asked for.
    pub events: Vec<StoredEvent>,
    /// The run's newest stored event's seq at that moment (0: none).
    pub last_seq: u64,
}

impl EventPage {
    /// Whether this page ends the run: the run is finished and nothing stored is left after
    /// the page's last event.
    pub fn ends_the_run(&self, after: u64) -> bool {
        let reached = self.events.last().map_or(after, |event| event.seq);
        self.record.status.is_terminal() && reached >= self.last_seq
    }
}

/// `InvalidInput` unless every event is one JSON object of at most [`MAX_EVENT_BYTES`]
/// (`TooLarge` past it) and there are at most [`MAX_EVENTS_PER_APPEND`]; an empty append is
/// allowed (it stores nothing).
pub fn check_events(events: &[String]) -> Result<()> {
    if events.len() > MAX_EVENTS_PER_APPEND {
        return Err(Error::invalid(format!(
            "{} events in one append; the limit is {MAX_EVENTS_PER_APPEND}",
            events.len()
        )));
    }
    for (i, event) in events.iter().enumerate() {
        if event.len() > MAX_EVENT_BYTES {
            return Err(Error::too_large(format!(
                "event {i} is {} bytes; the limit is {MAX_EVENT_BYTES}",
                event.len()
            )));
        }
        if !event.trim_start().starts_with('{') {
            return Err(Error::invalid(format!("event {i} is not a JSON object")));
        }
        // Only the syntax is checked: nothing is built from it.
        serde_json::from_str::<serde::de::IgnoredAny>(event)
            .map_err(|e| Error::invalid(format!("event {i} is not JSON")).with_source(e))?;
    }
    Ok(())
}

/// `Fenced` unless `claim` may still record events of its run: the run is unfinished and
/// its newest claim is this one (`last_fence` is the fence of the run's newest claim: every
/// claim draws a fresh one). A claim keeps this right after its own `fail` or `release` (so
/// it can say it will retry), and loses it to a newer claim or to the run's end.
pub fn check_may_record(claim: &Claim, status: RunStatus, last_fence: Option<Fence>) -> Result<()> {
    if last_fence == Some(claim.fence) && !status.is_terminal() {
        return Ok(());
    }
    let why = if status.is_terminal() {
        "the run has ended"
    } else {
        "a newer claim owns the run"
    };
    Err(Error::fenced(format!(
        "attempt {} of run {} ({}) may not record events: {why}",
        claim.attempt, claim.run, claim.fence
    )))
}

/// `InvalidInput` unless `1 <= limit <= MAX_EVENTS_PER_READ`.
pub fn check_read_limit(limit: usize) -> Result<()> {
    if limit == 0 || limit > MAX_EVENTS_PER_READ {
        return Err(Error::invalid(format!(
            "an event read takes 1 to {MAX_EVENTS_PER_READ} events, not {limit}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::id::{ConversationKey, RunId, WorkerId};
    use crate::queue::RunKind;
    use std::time::SystemTime;

    fn claim(fence: u64, attempt: u32) -> Claim {
        Claim {
            run: RunId::generate(),
            key: ConversationKey::parse("acme", "bot", "c1").unwrap(),
            kind: RunKind::Turn,
            payload: serde_json::json!({}),
            attempt,
            max_attempts: 3,
            worker: WorkerId::generate(),
            fence: Fence(fence),
            head: None,
            expires_at: SystemTime::now(),
        }
    }

    #[test]
    fn only_json_objects_within_the_limits_may_be_recorded() {
        assert!(check_events(&[]).is_ok());
        assert!(check_events(&[r#" {"type":"output","text":"hi"}"#.to_owned()]).is_ok());
        for bad in ["", "[1]", "\"text\"", "{", "{} {}", "null"] {
            let error = check_events(&[bad.to_owned()]).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
        let huge = format!(r#"{{"t":"{}"}}"#, "x".repeat(MAX_EVENT_BYTES));
        assert_eq!(
            check_events(&[huge]).unwrap_err().kind(),
            ErrorKind::TooLarge
        );
        let many = vec!["{}".to_owned(); MAX_EVENTS_PER_APPEND + 1];
        assert_eq!(
            check_events(&many).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn the_newest_claim_of_an_unfinished_run_may_record_and_nobody_else() {
        let c = claim(7, 2);
        let fenced = |r: Result<()>| r.unwrap_err().kind() == ErrorKind::Fenced;
        assert!(check_may_record(&c, RunStatus::Running, Some(Fence(7))).is_ok());
        // after its own fail or release (pending) it may still say what happens next
        assert!(check_may_record(&c, RunStatus::Pending, Some(Fence(7))).is_ok());
        assert!(fenced(check_may_record(
            &c,
            RunStatus::Running,
            Some(Fence(9))
        )));
        assert!(fenced(check_may_record(&c, RunStatus::Pending, None)));
        assert!(fenced(check_may_record(
            &c,
            RunStatus::Completed,
            Some(Fence(7))
        )));
    }

    #[test]
    fn read_limits_outside_one_to_the_maximum_are_invalid() {
        assert!(check_read_limit(1).is_ok());
        assert!(check_read_limit(MAX_EVENTS_PER_READ).is_ok());
        assert!(check_read_limit(0).is_err());
        assert!(check_read_limit(MAX_EVENTS_PER_READ + 1).is_err());
    }
}
