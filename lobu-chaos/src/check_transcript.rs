//! The transcript check: a conversation's messages against what the client submitted.
//!
//! After the queue drained, a conversation's transcript must hold exactly the turns that
//! completed after its last reset, each once, in submission order, each user message followed
//! by the demo agent's answer `You said: <text> (turn N)` with N its position; nothing of a
//! failed turn, nothing from before the reset, nothing of another conversation or org.

use std::collections::HashMap;

use crate::findings::Findings;
use crate::ledger::{ConversationLedger, Ending, TurnRecord};

/// A shown message: `(role, text)`.
pub(crate) type Line = (String, String);

/// Where each plain text of the run was sent: `text → "org/conversation"`.
pub(crate) type Origins = HashMap<String, String>;

/// Check one conversation's `lines` (its non-verbose messages, in order) against `ledger`.
pub(crate) fn check_transcript(
    ledger: &ConversationLedger,
    lines: &[Line],
    origins: &Origins,
) -> Findings {
    let mut findings = Findings::default();
    let name = format!(
        "{}/{}",
        crate::plan::ORGS[ledger.org].0,
        ledger.conversation
    );
    let users = user_texts(&name, lines, &mut findings);

    let (before, after) = ledger.split_at_last_reset();
    let index_after: HashMap<&str, usize> = after
        .iter()
        .enumerate()
        .map(|(i, t)| (t.text.as_str(), i))
        .collect();
    let before: HashMap<&str, &TurnRecord> = before.iter().map(|t| (t.text.as_str(), *t)).collect();

    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut last_position = None;
    for text in &users {
        let count = seen.entry(text.as_str()).or_default();
        *count += 1;
        if *count > 1 {
            findings.duplicated.push(format!(
                "{name}: {text:?} is in the transcript {count} times"
            ));
            continue;
        }
        if text == "/fail" {
            findings.corrupt.push(format!(
                "{name}: a /fail turn's message reached the transcript"
            ));
            continue;
        }
        let Some(&at) = index_after.get(text.as_str()) else {
            let problem = if before.contains_key(text.as_str()) {
                "was sent before the last reset and came back".to_owned()
            } else if let Some(origin) = origins.get(text).filter(|o| **o != name) {
                format!("belongs to {origin}")
            } else {
                "was never sent here".to_owned()
            };
            findings
                .corrupt
                .push(format!("{name}: {text:?} in the transcript {problem}"));
            continue;
        };
        let turn = after[at];
        match &turn.ending {
            Some(Ending::Completed) => {}
            other => findings.corrupt.push(format!(
                "{name}: run {} is in the transcript but ended {other:?}",
                turn.run
            )),
        }
        if last_position.is_some_and(|last| at < last) {
            findings.corrupt.push(format!(
                "{name}: {text:?} is out of submission order in the transcript"
            ));
        }
        last_position = Some(at);
    }
    for turn in after {
        if turn.ending == Some(Ending::Completed) && !seen.contains_key(turn.text.as_str()) {
            findings.lost.push(format!(
                "{name}: run {} ({:?}) completed but is not in the transcript",
                turn.run, turn.text
            ));
        }
    }
    findings
}

/// The user messages' texts; checks along the way that each is followed by the demo agent's
/// answer numbered by its position, and that nothing else is shown.
fn user_texts(name: &str, lines: &[Line], findings: &mut Findings) -> Vec<String> {
    let mut users = Vec::new();
    let mut lines = lines.iter().peekable();
    while let Some((role, text)) = lines.next() {
        if role != "user" {
            findings
                .corrupt
                .push(format!("{name}: a {role} message {text:?} answers nothing"));
            continue;
        }
        users.push(text.clone());
        let expected = format!("You said: {text} (turn {})", users.len());
        match lines.peek() {
            Some((role, answer)) if role == "assistant" => {
                if *answer != expected {
                    findings.corrupt.push(format!(
                        "{name}: {text:?} was answered {answer:?}, expected {expected:?}"
                    ));
                }
                lines.next();
            }
            _ => findings
                .corrupt
                .push(format!("{name}: {text:?} has no answer (a torn turn)")),
        }
    }
    users
}

#[cfg(test)]
#[path = "check_transcript_tests.rs"]
mod tests;
