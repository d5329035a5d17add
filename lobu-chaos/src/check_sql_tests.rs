use super::*;
use crate::ledger::{Entry, Expect, TurnRecord};

fn row(id: &str, conversation: &str, status: &str, fence: i64, seq: Option<i64>) -> RunRow {
    RunRow {
        id: id.to_owned(),
        org: "acme".to_owned(),
        conversation: conversation.to_owned(),
        kind: "turn".to_owned(),
        status: status.to_owned(),
        claim_token: fence,
        committed_seq: seq,
    }
}

fn ledger(turns: &[(&str, Ending)]) -> ConversationLedger {
    let mut ledger = ConversationLedger::new(0, "chat-0".to_owned());
    for (run, ending) in turns {
        ledger.entries.push(Entry::Turn(TurnRecord {
            run: (*run).to_owned(),
            text: format!("text of {run}"),
            expect: Expect::Answer,
            ending: Some(ending.clone()),
            attempts: 1,
        }));
    }
    ledger
}

fn heads(head: Option<&str>) -> Heads {
    Heads::from([(
        ("acme".to_owned(), "chat-0".to_owned()),
        head.map(str::to_owned),
    )])
}

#[test]
fn rows_that_agree_with_the_client_pass_and_give_the_commit_order() {
    let stored = Stored {
        runs: vec![
            row("b", "chat-0", "completed", 9, Some(20)),
            row("a", "chat-0", "completed", 4, Some(10)),
        ],
        heads: heads(Some("b")),
    };
    let ledgers = [ledger(&[
        ("a", Ending::Completed),
        ("b", Ending::Completed),
    ])];
    let (findings, fences, orders) = check_stored_runs(&stored, &ledgers);
    assert!(findings.is_clean(), "{findings:?}");
    assert_eq!(fences["a"], 4);
    assert_eq!(orders[0].runs, ["a", "b"]);
}

#[test]
fn a_stored_turn_run_the_client_never_got_counts_as_duplicated() {
    let stored = Stored {
        runs: vec![
            row("a", "chat-0", "completed", 4, Some(10)),
            row("x", "chat-0", "completed", 5, Some(11)),
        ],
        heads: heads(Some("a")),
    };
    let ledgers = [ledger(&[("a", Ending::Completed)])];
    let (findings, _, _) = check_stored_runs(&stored, &ledgers);
    assert_eq!(findings.duplicated.len(), 1, "{findings:?}");
}

#[test]
fn a_status_that_disagrees_with_the_api_or_a_wrong_head_is_corrupt() {
    let stored = Stored {
        runs: vec![row("a", "chat-0", "failed", 4, None)],
        heads: heads(Some("a")),
    };
    let ledgers = [ledger(&[("a", Ending::Completed)])];
    let (findings, _, _) = check_stored_runs(&stored, &ledgers);
    assert_eq!(findings.corrupt.len(), 1, "{findings:?}");

    let stored = Stored {
        runs: vec![row("a", "chat-0", "failed", 4, None)],
        heads: heads(None),
    };
    let ledgers = [ledger(&[("a", Ending::Failed("failed".to_owned()))])];
    assert!(check_stored_runs(&stored, &ledgers).0.is_clean());
}

#[test]
fn an_accepted_run_missing_from_the_database_is_lost() {
    let stored = Stored {
        runs: vec![],
        heads: heads(None),
    };
    let ledgers = [ledger(&[("a", Ending::Failed("failed".to_owned()))])];
    let (findings, _, _) = check_stored_runs(&stored, &ledgers);
    assert_eq!(findings.lost.len(), 1, "{findings:?}");
}
