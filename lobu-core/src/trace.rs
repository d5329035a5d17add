//! Trace context that travels with a run: the submitting request's W3C `traceparent`, and
//! when it was submitted, so the replica that claims the run can join its logs and spans to
//! the request's trace and measure how long the run waited.
//!
//! It is carried in the run's payload under one reserved key, [`TRACE_PAYLOAD_KEY`], so no
//! store needs another column: [`RunTrace::insert_into`] puts it there at submit, and
//! [`RunTrace::take_from`] removes it before anyone else (the agent, a status reader) sees
//! the payload. A host's own payload may not use the key.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The payload key the runtime reserves for a run's [`RunTrace`]:
/// `{"lobu_trace": {"traceparent": "00-…", "submitted_at_ms": 1700000000000}}`.
pub const TRACE_PAYLOAD_KEY: &str = "lobu_trace";

/// A W3C Trace Context `traceparent`: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.
///
/// ```
/// use lobu_core::TraceParent;
///
/// let parent: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse()?;
/// assert_eq!(parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(parent.parent_id(), "00f067aa0ba902b7");
/// assert!(parent.sampled());
/// # Ok::<(), lobu_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

/// The length of a version-00 `traceparent`.
const TRACEPARENT_LEN: usize = 55;

impl TraceParent {
    /// Parse a `traceparent` header value. Anything but the W3C format (lowercase hex;
    /// version `ff` is invalid; a version-00 value is exactly 55 characters; a later
    /// version may carry more fields after a `-`), or an all-zero trace or parent id, is
    /// `InvalidInput`.
    pub fn parse(header: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid(format!("traceparent {header:?}: {why}"));
        let bytes = header.as_bytes();
        if bytes.len() < TRACEPARENT_LEN {
            return Err(bad("too short"));
        }
        let version = lower_hex::<1>(&bytes[0..2]).ok_or_else(|| bad("bad version"))?[0];
        if version == 0xff {
            return Err(bad("version ff is invalid"));
        }
        // A later version may append fields; version 00 may not.
        let tail_ok = match bytes.len() {
            TRACEPARENT_LEN => true,
            _ => version != 0 && bytes[TRACEPARENT_LEN] == b'-',
        };
        if !tail_ok || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(bad("not version-flags-trace id-parent id"));
        }
        let trace_id = lower_hex::<16>(&bytes[3..35]).ok_or_else(|| bad("bad trace id"))?;
        let parent_id = lower_hex::<8>(&bytes[36..52]).ok_or_else(|| bad("bad parent id"))?;
        let flags = lower_hex::<1>(&bytes[53..55]).ok_or_else(|| bad("bad flags"))?[0];
        TraceParent::new(trace_id, parent_id, flags)
    }

    /// A trace parent from its parts; an all-zero trace or parent id is `InvalidInput`.
    pub fn new(trace_id: [u8; 16], parent_id: [u8; 8], flags: u8) -> Result<Self> {
        if trace_id == [0; 16] {
            return Err(Error::invalid("traceparent: the trace id is all zeros"));
        }
        if parent_id == [0; 8] {
            return Err(Error::invalid("traceparent: the parent id is all zeros"));
        }
        Ok(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The trace id's bytes.
    pub fn trace_id_bytes(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The caller's span id (the parent of the spans that continue the trace), 16 lowercase
    /// hex digits.
    pub fn parent_id(&self) -> String {
        hex::encode(self.parent_id)
    }

    /// The parent id's bytes.
    pub fn parent_id_bytes(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The trace flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the caller sampled the trace (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// `n` bytes from exactly `2n` lowercase hex digits (W3C: uppercase is invalid).
/// Works on bytes: slicing a `str` inside a multibyte character would panic.
fn lower_hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.len() != 2 * N
        || !digits
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let mut out = [0; N];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

impl fmt::Display for TraceParent {
    /// The version-00 header value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id(),
            self.parent_id(),
            self.flags
        )
    }
}

impl FromStr for TraceParent {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        TraceParent::parse(s)
    }
}

/// What a run carries under [`TRACE_PAYLOAD_KEY`]: the submitter's trace parent, if it had
/// one, and when it was submitted (by the submitting replica's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunTrace {
    /// The submitting request's `traceparent`.
    pub trace_parent: Option<TraceParent>,
    /// When the run was submitted.
    pub submitted_at: Option<SystemTime>,
}

/// The stored form: the header text and milliseconds since the Unix epoch.
#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    submitted_at_ms: Option<u64>,
}

impl RunTrace {
    /// A run's trace submitted now, with `trace_parent`.
    pub fn submitted_now(trace_parent: Option<TraceParent>) -> Self {
        RunTrace {
            trace_parent,
            submitted_at: Some(SystemTime::now()),
        }
    }

    /// `InvalidInput` if a host's payload uses the reserved key (the runtime writes it, and
    /// would drop what the host put there).
    pub fn check_unreserved(payload: &serde_json::Value) -> Result<()> {
        if payload.get(TRACE_PAYLOAD_KEY).is_some() {
            return Err(Error::invalid(format!(
                "payload field {TRACE_PAYLOAD_KEY:?} is reserved for lobu's trace context"
            )));
        }
        Ok(())
    }

    /// Put this trace in `payload` under [`TRACE_PAYLOAD_KEY`]. A payload that is not a JSON
    /// object is `InvalidInput`.
    pub fn insert_into(&self, payload: &mut serde_json::Value) -> Result<()> {
        let object = payload
            .as_object_mut()
            .ok_or_else(|| Error::invalid("the run payload must be a JSON object"))?;
        let millis = self
            .submitted_at
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
        let stored = Stored {
            traceparent: self.trace_parent.map(|parent| parent.to_string()),
            submitted_at_ms: millis,
        };
        let value = serde_json::to_value(stored).map_err(|e| Error::invalid(e.to_string()))?;
        object.insert(TRACE_PAYLOAD_KEY.to_owned(), value);
        Ok(())
    }

    /// Remove the reserved key from `payload` and return what it held. Whatever is there is
    /// removed; parts that do not parse (a run written by something else) are left out, not
    /// an error: a trace is never a reason to fail a run.
    pub fn take_from(payload: &mut serde_json::Value) -> RunTrace {
        let Some(value) = payload
            .as_object_mut()
            .and_then(|object| object.remove(TRACE_PAYLOAD_KEY))
        else {
            return RunTrace::default();
        };
        let Ok(stored) = serde_json::from_value::<Stored>(value) else {
            return RunTrace::default();
        };
        RunTrace {
            trace_parent: stored
                .traceparent
                .and_then(|text| TraceParent::parse(&text).ok()),
            submitted_at: stored
                .submitted_at_ms
                .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_w3c_traceparent_parses_and_prints_back_the_same() {
        let parent = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.parent_id(), "00f067aa0ba902b7");
        assert_eq!(parent.flags(), 1);
        assert!(parent.sampled());
        assert_eq!(parent.to_string(), EXAMPLE);
        let unsampled: TraceParent = EXAMPLE.replace("-01", "-00").parse().unwrap();
        assert!(!unsampled.sampled());
    }

    #[test]
    fn a_later_version_with_more_fields_is_read_as_version_00() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever";
        let parent = TraceParent::parse(later).unwrap();
        assert_eq!(parent.to_string(), EXAMPLE);
    }

    #[test]
    fn malformed_traceparents_are_invalid_input() {
        let bad = [
            "",
            "00",
            "not a traceparent at all, but long enough to be checked",
            // Uppercase hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // Version ff.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Version 00 with a tail.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            // A later version whose tail does not start with '-'.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            // Wrong separators, short ids, non-hex flags.
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // A multibyte character where a separator goes must not panic.
            "00-4bf92f3577b34da6a3ce929d0e0e473é00f067aa0ba902b7-01",
        ];
        for header in bad {
            let error = TraceParent::parse(header).expect_err(header);
            assert_eq!(error.kind(), ErrorKind::InvalidInput, "{header}");
        }
    }

    #[test]
    fn a_run_trace_round_trips_through_the_payload_and_leaves_it_as_it_was() {
        let original = serde_json::json!({"text": "hi", "channel": "web"});
        let mut payload = original.clone();
        let trace = RunTrace {
            trace_parent: Some(EXAMPLE.parse().unwrap()),
            submitted_at: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
        };
        trace.insert_into(&mut payload).unwrap();
        assert_eq!(
            payload[TRACE_PAYLOAD_KEY],
            serde_json::json!({"traceparent": EXAMPLE, "submitted_at_ms": 1_700_000_000_123_u64})
        );
        assert!(RunTrace::check_unreserved(&payload).is_err());
        assert_eq!(RunTrace::take_from(&mut payload), trace);
        assert_eq!(payload, original);
        RunTrace::check_unreserved(&payload).unwrap();
    }

    #[test]
    fn a_damaged_or_missing_run_trace_is_removed_and_read_as_none() {
        let mut payload = serde_json::json!({"text": "hi", TRACE_PAYLOAD_KEY: {"traceparent": "zz", "submitted_at_ms": 5}});
        let trace = RunTrace::take_from(&mut payload);
        assert_eq!(trace.trace_parent, None);
        assert_eq!(
            trace.submitted_at,
            Some(UNIX_EPOCH + Duration::from_millis(5))
        );
        assert_eq!(payload, serde_json::json!({"text": "hi"}));
        let mut junk = serde_json::json!({"text": "hi", TRACE_PAYLOAD_KEY: 7});
        assert_eq!(RunTrace::take_from(&mut junk), RunTrace::default());
        assert_eq!(junk, serde_json::json!({"text": "hi"}));
        let mut not_object = serde_json::json!("text");
        assert_eq!(RunTrace::take_from(&mut not_object), RunTrace::default());
        let error = RunTrace::default()
            .insert_into(&mut not_object)
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
    }
}
