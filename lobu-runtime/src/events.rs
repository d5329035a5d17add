//! [`RunEvent`]: what a subscriber sees of a run, from acceptance to its end.

use lobu_core::{ConversationKey, RunId, RunKind, RunRecord, RunStatus, TerminalStatus};
use serde::{Deserialize, Serialize};

/// A [`RunEvent`] with its place in the run, as every replica streams it.
///
/// `seq` is the same for an event wherever and whenever it is read: 0 is
/// [`RunEvent::Accepted`], the events an attempt recorded follow from 1 in the order they
/// were stored (across attempts and replicas), and the terminal event comes last. A client
/// that saw seq `k` resumes with `after: Some(k)` (SSE: `Last-Event-ID: k`) and gets exactly
/// what came after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NumberedEvent {
    /// Its place in the run.
    pub seq: u64,
    /// The attempt it belongs to (0 for `accepted`; the last attempt for the terminal event).
    pub attempt: u32,
    /// The event.
    #[serde(flatten)]
    pub event: RunEvent,
}

/// One event of a run. Serialised with a `type` tag (`accepted`, `started`, `output`, …), so
/// a host can forward it as an SSE event named [`RunEvent::name`] with the JSON as data.
///
/// A run may take several attempts: the events after a [`RunEvent::Started`] belong to that
/// attempt, and an attempt that did not complete ends with [`RunEvent::Retrying`] or
/// [`RunEvent::Requeued`] (its output and entries never reached the transcript). Exactly one
/// terminal event ([`RunEvent::is_terminal`]) ends every stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunEvent {
    /// The run is durable on the queue.
    Accepted {
        /// The run.
        run: RunId,
        /// Its conversation.
        key: ConversationKey,
        /// Turn or reset.
        kind: RunKind,
    },
    /// An attempt began: the run is claimed and the transcript hydrated.
    Started {
        /// The attempt, from 1.
        attempt: u32,
    },
    /// A piece of streamed output (e.g. a few words of the answer).
    Output {
        /// The attempt it belongs to.
        attempt: u32,
        /// The text.
        text: String,
    },
    /// The agent appended an entry to the working transcript.
    Entry {
        /// The attempt it belongs to.
        attempt: u32,
        /// The entry's JSON object, as written.
        entry: serde_json::Value,
    },
    /// The agent took a message sent with the `steer` strategy into this attempt: it is
    /// answered here, and its run completes with this one.
    Steered {
        /// The attempt that took it.
        attempt: u32,
        /// The steered message's run.
        run: RunId,
        /// Its payload as submitted (`{"text": …}`).
        payload: serde_json::Value,
    },
    /// The attempt failed and the run will be tried again.
    Retrying {
        /// The attempt that failed.
        attempt: u32,
        /// How it failed: `failed`, `timeout` or `cancelled`.
        status: TerminalStatus,
        /// Why.
        error: String,
        /// How long until the next attempt may start, in milliseconds.
        retry_after_ms: u64,
    },
    /// The attempt stopped without counting (shutdown, or this worker lost the conversation
    /// or the claim); the run goes back to the queue.
    Requeued {
        /// The attempt that stopped.
        attempt: u32,
        /// Why.
        reason: String,
    },
    /// The run completed. Terminal.
    Completed {
        /// What the worker reported, e.g. `{"deleted": 3}` for a reset.
        output: Option<serde_json::Value>,
    },
    /// The run failed after its last attempt. Terminal.
    Failed {
        /// Why.
        error: String,
    },
    /// The last attempt ran past the turn timeout. Terminal.
    Timeout {
        /// Why.
        error: String,
    },
    /// The last attempt was cancelled. Terminal.
    Cancelled {
        /// Why.
        error: String,
    },
    /// A stored event of a kind this version does not know (a newer version wrote it).
    #[serde(other)]
    Unknown,
}

impl RunEvent {
    /// The event's type tag, e.g. `"output"`.
    pub fn name(&self) -> &'static str {
        match self {
            RunEvent::Accepted { .. } => "accepted",
            RunEvent::Started { .. } => "started",
            RunEvent::Output { .. } => "output",
            RunEvent::Entry { .. } => "entry",
            RunEvent::Steered { .. } => "steered",
            RunEvent::Retrying { .. } => "retrying",
            RunEvent::Requeued { .. } => "requeued",
            RunEvent::Completed { .. } => "completed",
            RunEvent::Failed { .. } => "failed",
            RunEvent::Timeout { .. } => "timeout",
            RunEvent::Cancelled { .. } => "cancelled",
            RunEvent::Unknown => "unknown",
        }
    }

    /// Whether this event ends the run (completed, failed, timeout, cancelled).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            RunEvent::Completed { .. }
                | RunEvent::Failed { .. }
                | RunEvent::Timeout { .. }
                | RunEvent::Cancelled { .. }
        )
    }

    /// The terminal event for a final failure with `status`.
    pub(crate) fn terminal(status: RunStatus, error: String) -> Option<Self> {
        Some(match status {
            RunStatus::Failed => RunEvent::Failed { error },
            RunStatus::Timeout => RunEvent::Timeout { error },
            RunStatus::Cancelled => RunEvent::Cancelled { error },
            RunStatus::Completed => RunEvent::Completed { output: None },
            RunStatus::Pending | RunStatus::Running => return None,
            // A status added to lobu-core after this crate. A finished run's stream must
            // still end, and `failed` is the one terminal event that claims no success.
            other if other.is_terminal() => RunEvent::Failed { error },
            _ => return None,
        })
    }

    /// The terminal event a finished run record stands for, if it is finished.
    pub(crate) fn from_record(record: &RunRecord) -> Option<Self> {
        if record.status == RunStatus::Completed {
            return Some(RunEvent::Completed {
                output: record.output.clone(),
            });
        }
        Self::terminal(record.status, record.error.clone().unwrap_or_default())
    }

    /// The acceptance event for a run record.
    pub(crate) fn accepted(record: &RunRecord) -> Self {
        RunEvent::Accepted {
            run: record.run.clone(),
            key: record.key.clone(),
            kind: record.kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_with_their_name_as_type_tag() {
        let events = [
            RunEvent::Started { attempt: 1 },
            RunEvent::Output {
                attempt: 1,
                text: "hi".to_owned(),
            },
            RunEvent::Completed {
                output: Some(serde_json::json!({"deleted": 2})),
            },
            RunEvent::Timeout {
                error: "slow".to_owned(),
            },
        ];
        for event in events {
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(json["type"], event.name());
        }
        let json = serde_json::to_value(RunEvent::Completed {
            output: Some(serde_json::json!({"deleted": 2})),
        })
        .unwrap();
        assert_eq!(json["output"]["deleted"], 2);
    }

    #[test]
    fn only_final_outcomes_are_terminal() {
        assert!(!RunEvent::Started { attempt: 1 }.is_terminal());
        assert!(
            !RunEvent::Requeued {
                attempt: 1,
                reason: String::new()
            }
            .is_terminal()
        );
        assert!(RunEvent::Completed { output: None }.is_terminal());
        assert!(RunEvent::terminal(RunStatus::Pending, String::new()).is_none());
        assert!(
            RunEvent::terminal(RunStatus::Timeout, String::new())
                .unwrap()
                .is_terminal()
        );
    }
}
