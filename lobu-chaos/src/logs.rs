//! Reading the replicas' logs (tracing's plain `fmt` output, one event a line):
//!
//! * `lobu::turn: turn started run=… key=… kind=… fence=… attempt=…` when a claimed run's
//!   owner starts, and `turn ended … outcome=…` when its agent has stopped;
//! * `lobu.run{… run=… fence=…}: lobu::turn: run completed` when a claim's commit
//!   was accepted.
//!
//! The line's first token is its RFC 3339 timestamp (all replicas run on this machine, so
//! their clocks agree).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Nanoseconds since the Unix epoch.
pub(crate) type Nanos = i128;

/// Which claim an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimRef {
    pub(crate) run: String,
    /// The conversation key as the runtime prints it: `"org"/"agent"/"conversation"`.
    pub(crate) key: String,
    pub(crate) fence: u64,
}

/// One event of interest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogEvent {
    Started {
        at: Nanos,
        claim: ClaimRef,
    },
    Ended {
        at: Nanos,
        claim: ClaimRef,
        outcome: String,
    },
    Committed {
        at: Nanos,
        claim: ClaimRef,
    },
    /// A write of a taken-over claim that the store refused (`Fenced`), as the runtime
    /// reports it.
    Refused,
    /// A turn stopped because its claim was about to lapse unrenewed (the store hung).
    StoppedAtDeadline,
}

/// The runtime's messages for a write refused because a newer claim owns the conversation.
const REFUSED: [&str; 5] = [
    "a newer claim owns the conversation",
    "another worker took over; cancelling the run",
    "the run was taken over before it was committed",
    "the run was taken over before its failure was recorded",
    "the run was taken over before it was handed back",
];

/// The event on `line`, if it is one of ours.
pub(crate) fn parse_line(line: &str) -> Option<LogEvent> {
    let (stamp, rest) = line.split_once(' ')?;
    let at = OffsetDateTime::parse(stamp, &Rfc3339)
        .ok()?
        .unix_timestamp_nanos();
    if let Some((_, fields)) = rest.split_once(" lobu::turn: turn started ") {
        let fields = Fields::parse(fields);
        return Some(LogEvent::Started {
            at,
            claim: fields.claim()?,
        });
    }
    if let Some((_, fields)) = rest.split_once(" lobu::turn: turn ended ") {
        let fields = Fields::parse(fields);
        return Some(LogEvent::Ended {
            at,
            claim: fields.claim()?,
            outcome: fields.get("outcome")?.to_owned(),
        });
    }
    if REFUSED.iter().any(|m| rest.contains(m)) {
        return Some(LogEvent::Refused);
    }
    if rest.contains("the claim is about to run out unrenewed") {
        return Some(LogEvent::StoppedAtDeadline);
    }
    if rest.contains(" lobu::turn: run completed") {
        let (_, span) = rest.split_once("lobu.run{")?;
        let (span, _) = span.split_once("}: ")?;
        return Some(LogEvent::Committed {
            at,
            claim: Fields::parse(span).claim()?,
        });
    }
    None
}

/// `name=value` pairs separated by spaces; quoted string values lose their quotes. Keys and
/// ids in the harness never contain spaces.
struct Fields<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Fields<'a> {
    fn parse(text: &'a str) -> Self {
        Fields(
            text.split(' ')
                .filter_map(|pair| pair.split_once('='))
                .map(|(name, value)| (name, unquote(value)))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&'a str> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    fn claim(&self) -> Option<ClaimRef> {
        Some(ClaimRef {
            run: self.get("run")?.to_owned(),
            key: self.get("key")?.to_owned(),
            fence: self.get("fence")?.parse().ok()?,
        })
    }
}

/// `"turn"` → `turn`; a key such as `"acme"/"support"/"c1"` is kept whole.
fn unquote(value: &str) -> &str {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) if !inner.contains('"') => inner,
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STARTED: &str = r#"2026-06-01T10:00:00.000100Z  INFO lobu.run{key="acme"/"support"/"chat-0" run=0197-a kind="turn" attempt=1 fence=5}: lobu::turn: turn started run=0197-a key="acme"/"support"/"chat-0" kind="turn" fence=5 attempt=1"#;
    const ENDED: &str = r#"2026-06-01T10:00:01.5Z  INFO lobu.run{key="acme"/"support"/"chat-0" run=0197-a kind="turn" attempt=1 fence=5}: lobu::turn: turn ended run=0197-a key="acme"/"support"/"chat-0" kind="turn" fence=5 attempt=1 outcome="commit""#;
    const COMMITTED: &str = r#"2026-06-01T10:00:01.6Z  INFO lobu.run{key="acme"/"support"/"chat-0" run=0197-a kind="turn" attempt=1 fence=5}: lobu::turn: run completed"#;

    /// The runtime's rendering of a conversation key.
    fn key_of(org: &str, agent: &str, conversation: &str) -> String {
        format!("{org:?}/{agent:?}/{conversation:?}")
    }

    fn claim() -> ClaimRef {
        ClaimRef {
            run: "0197-a".to_owned(),
            key: key_of("acme", "support", "chat-0"),
            fence: 5,
        }
    }

    #[test]
    fn a_turn_start_is_read_with_its_claim_and_time() {
        let Some(LogEvent::Started { at, claim: c }) = parse_line(STARTED) else {
            panic!("not read");
        };
        assert_eq!(c, claim());
        assert_eq!(at % 1_000_000_000, 100_000);
    }

    #[test]
    fn a_turn_end_carries_its_outcome() {
        let Some(LogEvent::Ended {
            outcome, claim: c, ..
        }) = parse_line(ENDED)
        else {
            panic!("not read");
        };
        assert_eq!((outcome.as_str(), c), ("commit", claim()));
    }

    #[test]
    fn an_accepted_commit_is_read_from_the_run_span() {
        let Some(LogEvent::Committed { claim: c, .. }) = parse_line(COMMITTED) else {
            panic!("not read");
        };
        assert_eq!(c, claim());
    }

    #[test]
    fn a_write_refused_by_the_fence_is_recognised() {
        let line = "2026-06-01T10:00:01.6Z  INFO lobu.run{run=x fence=5}: lobu::turn: \
                    the run was taken over before it was committed";
        assert_eq!(parse_line(line), Some(LogEvent::Refused));
    }

    #[test]
    fn other_lines_and_torn_lines_are_ignored() {
        assert_eq!(parse_line("2026-06-01T10:00:00Z  INFO serving"), None);
        assert_eq!(parse_line(&STARTED[..STARTED.len() - 30]), None);
        assert_eq!(parse_line("not a log line"), None);
    }
}
