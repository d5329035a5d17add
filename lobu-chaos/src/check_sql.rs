//! The PostgreSQL checks, by read-only SQL on the run's database: the runs table agrees with
//! what the client was told (one run per accepted turn and idempotency key, in the right org
//! and conversation, with the status the API reported), each conversation's head is its last
//! completed turn since its last reset, and the commit order and fences for the fence check.

use std::collections::HashMap;

use sqlx::PgPool;

use crate::check_fences::CommitOrder;
use crate::findings::Findings;
use crate::ledger::{ConversationLedger, Ending};
use crate::plan::ORGS;

/// One row of `lobu.runs`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct RunRow {
    pub(crate) id: String,
    pub(crate) org: String,
    pub(crate) conversation: String,
    pub(crate) kind: String,
    pub(crate) status: String,
    pub(crate) claim_token: i64,
    pub(crate) committed_seq: Option<i64>,
}

/// One conversation's head: `(org, conversation) → head run`.
pub(crate) type Heads = HashMap<(String, String), Option<String>>;

/// What the database says.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    pub(crate) runs: Vec<RunRow>,
    pub(crate) heads: Heads,
}

pub(crate) async fn read_stored(pool: &PgPool) -> Result<Stored, String> {
    let runs = sqlx::query_as::<_, RunRow>(
        "SELECT id, org, conversation, kind, status, claim_token, committed_seq \
         FROM lobu.runs ORDER BY seq",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| format!("reading lobu.runs: {e}"))?;
    let heads = sqlx::query_as::<_, (String, String, Option<String>)>(
        "SELECT org, conversation, CASE WHEN head_seq IS NULL THEN NULL ELSE head_run END \
         FROM lobu.conversations",
    )
    .fetch_all(pool)
    .await
    .map_err(|e| format!("reading lobu.conversations: {e}"))?
    .into_iter()
    .map(|(org, conversation, head)| ((org, conversation), head))
    .collect();
    Ok(Stored { runs, heads })
}

/// Check the rows against the ledgers; returns the findings, each completed run's stored
/// fence and each conversation's commit order.
pub(crate) fn check_stored_runs(
    stored: &Stored,
    ledgers: &[ConversationLedger],
) -> (Findings, HashMap<String, u64>, Vec<CommitOrder>) {
    let mut findings = Findings::default();
    let rows: HashMap<&str, &RunRow> = stored.runs.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut turn_rows: HashMap<(&str, &str), usize> = HashMap::new();
    for row in stored.runs.iter().filter(|r| r.kind == "turn") {
        *turn_rows.entry((&row.org, &row.conversation)).or_default() += 1;
    }
    for ledger in ledgers {
        let org = ORGS[ledger.org].0;
        let name = format!("{org}/{}", ledger.conversation);
        for turn in ledger.turns() {
            let Some(row) = rows.get(turn.run.as_str()) else {
                findings
                    .lost
                    .push(format!("{name}: run {} is not in the database", turn.run));
                continue;
            };
            if row.org != org || row.conversation != ledger.conversation {
                findings.corrupt.push(format!(
                    "{name}: run {} is stored under {}/{}",
                    turn.run, row.org, row.conversation
                ));
            }
            let agrees = match &turn.ending {
                Some(Ending::Completed) => row.status == "completed",
                Some(Ending::Failed(_)) => {
                    matches!(row.status.as_str(), "failed" | "timeout" | "cancelled")
                }
                Some(Ending::NeverEnded(_)) | None => true,
            };
            if !agrees {
                findings.corrupt.push(format!(
                    "{name}: run {} is {} in the database, the API said {:?}",
                    turn.run, row.status, turn.ending
                ));
            }
        }
        let accepted = ledger.turns().count();
        let stored_turns = turn_rows
            .get(&(org, ledger.conversation.as_str()))
            .copied()
            .unwrap_or(0);
        if stored_turns > accepted {
            findings.duplicated.push(format!(
                "{name}: {stored_turns} turn runs stored for {accepted} accepted turns"
            ));
        }
        let (_, after) = ledger.split_at_last_reset();
        let expected_head = after
            .iter()
            .rev()
            .find(|t| t.ending == Some(Ending::Completed))
            .map(|t| t.run.clone());
        let head = stored
            .heads
            .get(&(org.to_owned(), ledger.conversation.clone()))
            .cloned()
            .flatten();
        if head != expected_head {
            findings.corrupt.push(format!(
                "{name}: the head is run {head:?}, its last completed turn since the last reset \
                 is {expected_head:?}"
            ));
        }
    }
    let mut fences = HashMap::new();
    let mut orders: HashMap<(&str, &str), Vec<(i64, String)>> = HashMap::new();
    for row in &stored.runs {
        if let (Some(seq), "completed") = (row.committed_seq, row.status.as_str()) {
            fences.insert(row.id.clone(), row.claim_token as u64);
            orders
                .entry((&row.org, &row.conversation))
                .or_default()
                .push((seq, row.id.clone()));
        }
    }
    let orders = orders
        .into_iter()
        .map(|((org, conversation), mut runs)| {
            runs.sort();
            CommitOrder {
                source: "database",
                conversation: format!("{org}/{conversation}"),
                runs: runs.into_iter().map(|(_, run)| run).collect(),
            }
        })
        .collect();
    (findings, fences, orders)
}

#[cfg(test)]
#[path = "check_sql_tests.rs"]
mod tests;
