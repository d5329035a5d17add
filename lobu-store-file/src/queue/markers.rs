//! Markers: the queue's index, one empty file per unfinished run in `queue/active/`, whose
//! name carries everything `claim` needs to choose a run without opening a record:
//!
//! ```text
//! <seq:020>.<lane>.<due_ms:016>.<p|r>.<run>
//! ```
//!
//! `seq` orders runs first in, first out; `lane` names the run's conversation (the first 128
//! bits of a SHA-256 of its key); `due_ms` is when the run may next be claimable (submitted,
//! retry due, or claim expiry); `p`/`r` says pending or running (for `depth`).
//!
//! A marker's instant is a **lower bound** of its run's true one: every change that makes a
//! run due earlier moves the marker before the record, every change that makes it due later
//! moves the record first. So a crash between the two, or a heartbeat that only rewrote the
//! record, can make `claim` open a record too early (it then corrects the marker), never
//! too late. The one exception is bounded: a crash between a run's final record and the
//! removal of its marker leaves the marker at the old claim's expiry, so the conversation's
//! next run waits until then, no longer than it would for a worker that died mid-run.

use std::collections::{BTreeMap, HashMap};

use lobu_core::{ConversationKey, RunId};
use sha2::{Digest, Sha256};

use crate::layout::{decode, encode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marker {
    pub(crate) seq: u64,
    pub(crate) lane: String,
    pub(crate) due_ms: u64,
    pub(crate) pending: bool,
    pub(crate) run: RunId,
    pub(crate) name: String,
}

impl Marker {
    pub(crate) fn new(seq: u64, lane: &str, due_ms: u64, pending: bool, run: &RunId) -> Self {
        let state = if pending { 'p' } else { 'r' };
        let name = format!(
            "{seq:020}.{lane}.{due_ms:016}.{state}.{}",
            encode(run.as_str())
        );
        Marker {
            seq,
            lane: lane.to_owned(),
            due_ms,
            pending,
            run: run.clone(),
            name,
        }
    }

    /// The marker named `name`; `None` for any other file (staging files included).
    pub(crate) fn parse(name: &str) -> Option<Self> {
        let mut parts = name.splitn(5, '.');
        let (seq, lane, due, state, run) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        let is_lane = lane.len() == 32 && lane.bytes().all(|b| b.is_ascii_hexdigit());
        if !digits(seq, 20) || !digits(due, 16) || !is_lane {
            return None;
        }
        let pending = match state {
            "p" => true,
            "r" => false,
            _ => return None,
        };
        let run = RunId::new(decode(run)?).ok()?;
        let marker = Marker::new(seq.parse().ok()?, lane, due.parse().ok()?, pending, &run);
        // Only the one spelling `new` makes is a marker.
        (marker.name == name).then_some(marker)
    }
}

/// The lane of a conversation: 128 bits of SHA-256 over its unambiguous encoding. Two keys
/// sharing a lane would only share first-in-first-out order, never a claim's exclusivity.
pub(crate) fn lane_of(key: &ConversationKey) -> String {
    let text = format!(
        "{}/{}/{}",
        encode(key.org.as_str()),
        encode(key.agent.as_str()),
        encode(key.conversation.as_str())
    );
    let digest = Sha256::digest(text.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Markers grouped by lane, each lane ordered first in, first out.
pub(crate) type Lanes = HashMap<String, BTreeMap<(u64, RunId), Marker>>;

pub(crate) fn lanes(markers: Vec<Marker>) -> Lanes {
    let mut lanes: Lanes = HashMap::new();
    for marker in markers {
        insert(&mut lanes, marker);
    }
    lanes
}

/// Add `marker` to its lane.
pub(crate) fn insert(lanes: &mut Lanes, marker: Marker) {
    let lane = lanes.entry(marker.lane.clone()).or_default();
    lane.insert((marker.seq, marker.run.clone()), marker);
}

/// Take `marker` out of its lane (and the lane out, once empty).
pub(crate) fn forget(lanes: &mut Lanes, marker: &Marker) {
    if let Some(lane) = lanes.get_mut(&marker.lane) {
        lane.remove(&(marker.seq, marker.run.clone()));
        if lane.is_empty() {
            lanes.remove(&marker.lane);
        }
    }
}

/// The front (oldest unfinished run) of every lane.
pub(crate) fn fronts(lanes: &Lanes) -> impl Iterator<Item = &Marker> {
    lanes.values().filter_map(|lane| lane.values().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_names_round_trip_and_sort_by_sequence() {
        let key = ConversationKey::parse("acme", "bot", "a:b").unwrap();
        let run = RunId::generate();
        let marker = Marker::new(42, &lane_of(&key), 1_780_000_000_123, true, &run);
        assert_eq!(Marker::parse(&marker.name), Some(marker.clone()));
        let later = Marker::new(43, &lane_of(&key), 1, false, &run);
        assert!(marker.name < later.name);
        for foreign in [
            "lock",
            ".x.tmp",
            "42.x.1.p.r",
            &marker.name.replace(".p.", ".q."),
        ] {
            assert_eq!(Marker::parse(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn lanes_tell_keys_apart() {
        let a = ConversationKey::parse("acme", "bot", "a:b").unwrap();
        let b = ConversationKey::parse("acme", "bot", "a_b").unwrap();
        assert_ne!(lane_of(&a), lane_of(&b));
        assert_eq!(lane_of(&a), lane_of(&a.clone()));
    }
}
