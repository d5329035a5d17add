//! The stale-fence check: no write under an old claim was accepted.
//!
//! Each accepted commit is logged by its replica under its claim's fence (`run completed`).
//! Under contract v2 a run is committed by one claim only (a commit retried after a lost
//! answer is the same claim), and the commits of one conversation happen in claim order, so:
//! * no run was committed by two claims;
//! * along a conversation's commit order (its transcript, or PostgreSQL's `committed_seq`),
//!   the committing fences strictly grow: a smaller fence after a larger one was a write by
//!   an owner that had been taken over;
//! * where the database records the committing fence (`runs.claim_token`), it is the fence
//!   the replica logged.

use std::collections::{BTreeSet, HashMap};

use crate::findings::Findings;
use crate::logs::ClaimRef;

/// A conversation's completed runs in the order they were committed.
#[derive(Debug, Clone)]
pub(crate) struct CommitOrder {
    /// Where the order comes from (for the report): "transcript" or "database".
    pub(crate) source: &'static str,
    pub(crate) conversation: String,
    pub(crate) runs: Vec<String>,
}

/// `commits`: every logged accepted commit; `orders`: commit orders; `stored`: the fence the
/// database recorded for each completed run (empty for the file store).
pub(crate) fn check_fences(
    commits: &[ClaimRef],
    orders: &[CommitOrder],
    stored: &HashMap<String, u64>,
) -> Findings {
    let mut findings = Findings::default();
    let mut logged: HashMap<&str, BTreeSet<u64>> = HashMap::new();
    for commit in commits {
        logged.entry(&commit.run).or_default().insert(commit.fence);
    }
    for (run, fences) in &logged {
        if fences.len() > 1 {
            findings.corrupt.push(format!(
                "run {run} was committed by {} claims (fences {fences:?}): a stale-fence write \
                 was accepted",
                fences.len()
            ));
        }
    }
    for (run, fence) in stored {
        if let Some(fences) = logged.get(run.as_str()).filter(|f| !f.contains(fence)) {
            findings.corrupt.push(format!(
                "run {run}: the database recorded its commit under fence {fence}, its replica \
                 logged {fences:?}"
            ));
        }
    }
    let fence_of = |run: &str| {
        stored
            .get(run)
            .copied()
            .or_else(|| logged.get(run).and_then(|f| f.iter().next_back().copied()))
    };
    for order in orders {
        let mut newest: Option<(&str, u64)> = None;
        for run in &order.runs {
            let Some(fence) = fence_of(run) else {
                continue; // committed by a replica killed before it logged: fence unknown
            };
            if let Some((before, was)) = newest.filter(|(_, was)| fence <= *was) {
                findings.corrupt.push(format!(
                    "{} ({}): run {run} was committed under fence {fence} after run {before} \
                     under fence {was}: a stale-fence write was accepted",
                    order.conversation, order.source
                ));
            }
            newest = Some((run, fence));
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(run: &str, fence: u64) -> ClaimRef {
        ClaimRef {
            run: run.to_owned(),
            key: "k".to_owned(),
            fence,
        }
    }

    fn order(runs: &[&str]) -> CommitOrder {
        CommitOrder {
            source: "transcript",
            conversation: "acme/chat-0".to_owned(),
            runs: runs.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn commits_under_growing_fences_pass() {
        let commits = [commit("a", 1), commit("b", 4), commit("c", 9)];
        let findings = check_fences(&commits, &[order(&["a", "b", "c"])], &HashMap::new());
        assert!(findings.is_clean(), "{findings:?}");
    }

    #[test]
    fn a_run_committed_by_two_claims_is_a_stale_fence_write() {
        let commits = [commit("a", 1), commit("a", 2)];
        let findings = check_fences(&commits, &[order(&["a"])], &HashMap::new());
        assert_eq!(findings.corrupt.len(), 1, "{findings:?}");
    }

    #[test]
    fn a_smaller_fence_committed_after_a_larger_one_is_a_stale_fence_write() {
        let commits = [commit("a", 7), commit("b", 3)];
        let findings = check_fences(&commits, &[order(&["a", "b"])], &HashMap::new());
        assert_eq!(findings.corrupt.len(), 1, "{findings:?}");
        assert!(findings.corrupt[0].contains("after run a"));
    }

    #[test]
    fn a_run_whose_commit_was_never_logged_is_skipped_not_guessed() {
        let commits = [commit("a", 1), commit("c", 5)];
        let findings = check_fences(&commits, &[order(&["a", "b", "c"])], &HashMap::new());
        assert!(findings.is_clean(), "{findings:?}");
    }

    #[test]
    fn the_database_fence_must_be_the_logged_one_and_fills_the_gaps() {
        let commits = [commit("a", 1), commit("b", 5)];
        let stored = HashMap::from([("a".to_owned(), 2), ("c".to_owned(), 3)]);
        let findings = check_fences(&commits, &[order(&["a", "b", "c"])], &stored);
        // a: 2 stored but 1 logged; c: 3 after b's 5.
        assert_eq!(findings.corrupt.len(), 2, "{findings:?}");
    }
}
