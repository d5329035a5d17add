//! The overlap check: no two turns (or resets) of one conversation ran at the same time,
//! and each conversation's claims drew ever larger fences.
//!
//! A window runs from a claim's `turn started` to its `turn ended`; a window still open when
//! its replica died (SIGKILL) or stopped ends at that moment.

use std::collections::{BTreeMap, HashMap};

use crate::findings::Findings;
use crate::logs::{ClaimRef, LogEvent, Nanos};

/// One owner's window on a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) claim: ClaimRef,
    /// Which replica process (for the report).
    pub(crate) replica: usize,
    pub(crate) start: Nanos,
    pub(crate) end: Nanos,
    /// The `turn ended` outcome, or `killed`/`stopped` when the process ended first.
    pub(crate) outcome: String,
}

/// The windows of one replica's `events` (in log order); `died_at` closes those left open,
/// as `died_how`.
pub(crate) fn windows(
    replica: usize,
    events: &[LogEvent],
    died_at: Nanos,
    died_how: &str,
) -> Vec<Window> {
    let mut open: HashMap<(String, u64), Window> = HashMap::new();
    let mut done = Vec::new();
    for event in events {
        match event {
            LogEvent::Started { at, claim } => {
                let window = Window {
                    claim: claim.clone(),
                    replica,
                    start: *at,
                    end: died_at,
                    outcome: died_how.to_owned(),
                };
                if let Some(previous) = open.insert((claim.run.clone(), claim.fence), window) {
                    done.push(previous); // started twice: keep both, the check will see it
                }
            }
            LogEvent::Ended { at, claim, outcome } => {
                if let Some(mut window) = open.remove(&(claim.run.clone(), claim.fence)) {
                    window.end = *at;
                    window.outcome.clone_from(outcome);
                    done.push(window);
                }
            }
            LogEvent::Committed { .. } | LogEvent::Refused | LogEvent::StoppedAtDeadline => {}
        }
    }
    done.extend(open.into_values());
    done
}

/// Overlapping windows of one conversation count as overlaps (each window that starts
/// before an earlier one ended, once); a claim whose fence is not larger than every fence
/// claimed before it in the conversation is corrupt (fences only grow).
pub(crate) fn check_overlaps(windows: &[Window]) -> Findings {
    let mut findings = Findings::default();
    let mut by_key: BTreeMap<&str, Vec<&Window>> = BTreeMap::new();
    for window in windows {
        by_key.entry(&window.claim.key).or_default().push(window);
    }
    for (key, mut list) in by_key {
        list.sort_by_key(|w| (w.start, w.end));
        let mut ends_last: Option<&Window> = None;
        let mut newest_fence: Option<&Window> = None;
        for window in list {
            if let Some(before) = ends_last.filter(|before| window.start < before.end) {
                findings.overlaps.push(format!(
                    "{key}: run {} (fence {}, replica {}) started {} µs before run {} \
                     (fence {}, replica {}, {}) ended",
                    window.claim.run,
                    window.claim.fence,
                    window.replica,
                    (before.end - window.start) / 1000,
                    before.claim.run,
                    before.claim.fence,
                    before.replica,
                    before.outcome,
                ));
            }
            if let Some(before) = newest_fence.filter(|b| window.claim.fence <= b.claim.fence) {
                findings.corrupt.push(format!(
                    "{key}: run {} claimed with fence {} after run {} had fence {}",
                    window.claim.run, window.claim.fence, before.claim.run, before.claim.fence
                ));
            }
            if ends_last.is_none_or(|w| window.end > w.end) {
                ends_last = Some(window);
            }
            if newest_fence.is_none_or(|w| window.claim.fence > w.claim.fence) {
                newest_fence = Some(window);
            }
        }
    }
    findings
}

#[cfg(test)]
#[path = "check_overlap_tests.rs"]
mod tests;
