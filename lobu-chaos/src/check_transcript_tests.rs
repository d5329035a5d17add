use super::*;
use crate::ledger::{Entry, Expect};

fn turn(run: &str, text: &str, ending: Ending) -> Entry {
    Entry::Turn(TurnRecord {
        run: run.to_owned(),
        text: text.to_owned(),
        expect: if text == "/fail" {
            Expect::Failure
        } else {
            Expect::Answer
        },
        ending: Some(ending),
        attempts: 1,
    })
}

fn ledger(entries: Vec<Entry>) -> ConversationLedger {
    let mut ledger = ConversationLedger::new(0, "chat-0".to_owned());
    ledger.entries = entries;
    ledger
}

/// The transcript the demo agent writes for `texts`, in order.
fn transcript(texts: &[&str]) -> Vec<Line> {
    texts
        .iter()
        .enumerate()
        .flat_map(|(i, text)| {
            [
                ("user".to_owned(), (*text).to_owned()),
                (
                    "assistant".to_owned(),
                    format!("You said: {text} (turn {})", i + 1),
                ),
            ]
        })
        .collect()
}

fn failed() -> Ending {
    Ending::Failed("failed".to_owned())
}

#[test]
fn completed_turns_in_submission_order_pass() {
    let l = ledger(vec![
        turn("r1", "a", Ending::Completed),
        turn("r2", "/fail", failed()),
        turn("r3", "b", Ending::Completed),
        turn("r4", "c", failed()),
    ]);
    let findings = check_transcript(&l, &transcript(&["a", "b"]), &Origins::new());
    assert!(findings.is_clean(), "{findings:?}");
}

#[test]
fn a_turn_appearing_twice_counts_as_duplicated() {
    let l = ledger(vec![
        turn("r1", "a", Ending::Completed),
        turn("r2", "b", Ending::Completed),
    ]);
    let findings = check_transcript(&l, &transcript(&["a", "a", "b"]), &Origins::new());
    assert_eq!(findings.duplicated.len(), 1, "{findings:?}");
    assert!(findings.lost.is_empty() && findings.corrupt.is_empty());
}

#[test]
fn a_completed_turn_missing_from_the_transcript_counts_as_lost() {
    let l = ledger(vec![
        turn("r1", "a", Ending::Completed),
        turn("r2", "b", Ending::Completed),
    ]);
    let findings = check_transcript(&l, &transcript(&["b"]), &Origins::new());
    assert_eq!(findings.lost.len(), 1, "{findings:?}");
    assert!(findings.lost[0].contains("r1"));
}

#[test]
fn turns_out_of_submission_order_are_corrupt() {
    let l = ledger(vec![
        turn("r1", "a", Ending::Completed),
        turn("r2", "b", Ending::Completed),
    ]);
    let findings = check_transcript(&l, &transcript(&["b", "a"]), &Origins::new());
    assert_eq!(findings.corrupt.len(), 1, "{findings:?}");
    assert!(findings.corrupt[0].contains("out of submission order"));
}

#[test]
fn anything_of_a_failed_turn_in_the_transcript_is_corrupt() {
    let l = ledger(vec![
        turn("r1", "/fail", failed()),
        turn("r2", "b", failed()),
    ]);
    let findings = check_transcript(&l, &transcript(&["/fail", "b"]), &Origins::new());
    assert_eq!(findings.corrupt.len(), 2, "{findings:?}");
}

#[test]
fn a_turn_from_before_the_last_reset_that_came_back_is_corrupt() {
    let l = ledger(vec![
        turn("r1", "a", Ending::Completed),
        Entry::Reset,
        turn("r2", "b", Ending::Completed),
    ]);
    assert!(check_transcript(&l, &transcript(&["b"]), &Origins::new()).is_clean());
    let findings = check_transcript(&l, &transcript(&["a", "b"]), &Origins::new());
    assert_eq!(findings.corrupt.len(), 1, "{findings:?}");
    assert!(findings.corrupt[0].contains("before the last reset"));
}

#[test]
fn another_orgs_text_is_corrupt_and_named() {
    let l = ledger(vec![turn("r1", "a", Ending::Completed)]);
    let origins = Origins::from([("theirs".to_owned(), "globex/chat-0".to_owned())]);
    let findings = check_transcript(&l, &transcript(&["a", "theirs"]), &origins);
    assert_eq!(findings.corrupt.len(), 1, "{findings:?}");
    assert!(findings.corrupt[0].contains("belongs to globex/chat-0"));
}

#[test]
fn a_user_message_without_its_numbered_answer_is_a_torn_turn() {
    let l = ledger(vec![
        turn("r1", "a", Ending::Completed),
        turn("r2", "b", Ending::Completed),
    ]);
    let mut lines = transcript(&["a", "b"]);
    lines.pop();
    let findings = check_transcript(&l, &lines, &Origins::new());
    assert_eq!(findings.corrupt.len(), 1, "{findings:?}");
    assert!(findings.corrupt[0].contains("torn"));

    let mut lines = transcript(&["a", "b"]);
    lines[3].1 = "You said: b (turn 3)".to_owned();
    let findings = check_transcript(&l, &lines, &Origins::new());
    assert_eq!(findings.corrupt.len(), 1, "{findings:?}");
}

#[test]
fn a_run_in_the_transcript_that_never_ended_is_corrupt_not_clean() {
    let l = ledger(vec![turn(
        "r1",
        "a",
        Ending::NeverEnded("running".to_owned()),
    )]);
    let findings = check_transcript(&l, &transcript(&["a"]), &Origins::new());
    assert_eq!(findings.corrupt.len(), 1, "{findings:?}");
}
