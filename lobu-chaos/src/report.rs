//! The report: what ran, what broke, and the last line,
//! `chaos: accepted=A completed=C failed=F lost=L duplicated=D corrupt=X overlaps=O kills=K`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::db_faults::FaultReport;
use crate::findings::Findings;
use crate::fleet::KillStats;
use crate::ledger::{ConversationLedger, Ending, Entry, Expect};

/// How many findings of each kind are printed.
const SHOWN: usize = 20;

/// Everything a run found and counted.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) seed: u64,
    pub(crate) accepted: u64,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) resets: u64,
    pub(crate) resends: u64,
    /// Completed turns that needed more than one attempt.
    pub(crate) retried: u64,
    /// Turns that failed although they did not ask to (their attempts ran out), by reason.
    pub(crate) other_failures: BTreeMap<String, u64>,
    /// Turn windows read from the logs.
    pub(crate) windows: usize,
    /// Accepted commits read from the logs (with their fences).
    pub(crate) commits_logged: usize,
    /// Writes of taken-over claims that the store refused, read from the logs.
    pub(crate) refused_writes: usize,
    /// Turns stopped because their claim was about to lapse unrenewed.
    pub(crate) stopped_at_deadline: usize,
    /// Completed runs whose committing fence the database recorded.
    pub(crate) fences_stored: usize,
    pub(crate) findings: Findings,
    pub(crate) kills: KillStats,
    pub(crate) faults: FaultReport,
    pub(crate) proxy: Option<String>,
    pub(crate) load_time: Duration,
    pub(crate) drain_time: Duration,
    pub(crate) total_time: Duration,
}

impl Report {
    pub(crate) fn new(
        ledgers: &[ConversationLedger],
        findings: Findings,
        drain_time: Duration,
    ) -> Report {
        let mut report = Report {
            findings,
            drain_time,
            ..Report::default()
        };
        for ledger in ledgers {
            report.resends += ledger.resends;
            for entry in &ledger.entries {
                match entry {
                    Entry::Reset => report.resets += 1,
                    Entry::Turn(turn) => {
                        report.accepted += 1;
                        match &turn.ending {
                            Some(Ending::Completed) => {
                                report.completed += 1;
                                if turn.attempts > 1 {
                                    report.retried += 1;
                                }
                            }
                            Some(Ending::Failed(error)) => {
                                report.failed += 1;
                                if turn.expect == Expect::Answer {
                                    let reason = error.chars().take(90).collect::<String>();
                                    *report.other_failures.entry(reason).or_default() += 1;
                                }
                            }
                            Some(Ending::NeverEnded(_)) | None => {}
                        }
                    }
                }
            }
        }
        report
    }

    /// No finding of any kind, and at least one replica was killed.
    pub(crate) fn passed(&self) -> bool {
        self.findings.is_clean() && self.faults.findings.is_empty() && self.kills.kills > 0
    }

    /// The lines printed at the end, the last one being the `chaos:` summary.
    pub(crate) fn lines(&self) -> Vec<String> {
        let k = &self.kills;
        let mut lines = vec![
            format!(
                "chaos: seed {}; load {:.1} s, drain {:.1} s, total {:.1} s",
                self.seed,
                self.load_time.as_secs_f64(),
                self.drain_time.as_secs_f64(),
                self.total_time.as_secs_f64()
            ),
            format!(
                "chaos: kills {} (mid-turn {}, mid-/sleep {}, during start-up {}); \
                 replacements that failed to start {}",
                k.kills, k.mid_turn, k.mid_sleep, k.during_start_up, k.failed_starts
            ),
            format!(
                "chaos: {} resets, {} idempotency keys sent again, {} turns completed after a \
                 retry",
                self.resets, self.resends, self.retried
            ),
            format!(
                "chaos: logs: {} turn windows, {} accepted commits, {} turns stopped before \
                 their claim lapsed, {} stale writes refused by the fence; {} commit fences in \
                 the database",
                self.windows,
                self.commits_logged,
                self.stopped_at_deadline,
                self.refused_writes,
                self.fences_stored
            ),
        ];
        for (reason, count) in &self.other_failures {
            lines.push(format!(
                "chaos: {count} turns (not /fail) failed after their attempts: {reason}"
            ));
        }
        if let Some(proxy) = &self.proxy {
            lines.push(format!(
                "chaos: database faults: {} cycles, {proxy}; readiness checked {} times",
                self.faults.cycles, self.faults.readiness_checked
            ));
        }
        let mut findings = self.findings.clone();
        findings.other.extend(self.faults.findings.iter().cloned());
        lines.extend(
            findings
                .lines(SHOWN)
                .into_iter()
                .map(|l| format!("chaos: {l}")),
        );
        if self.kills.kills == 0 {
            lines.push("chaos: no replica was killed".to_owned());
        }
        lines.push(self.summary());
        lines
    }

    /// The last line.
    pub(crate) fn summary(&self) -> String {
        format!(
            "chaos: accepted={} completed={} failed={} lost={} duplicated={} corrupt={} \
             overlaps={} kills={}",
            self.accepted,
            self.completed,
            self.failed,
            self.findings.lost.len(),
            self.findings.duplicated.len(),
            self.findings.corrupt.len(),
            self.findings.overlaps.len(),
            self.kills.kills
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_has_the_exact_shape() {
        let mut report = Report {
            accepted: 10,
            completed: 7,
            failed: 3,
            ..Report::default()
        };
        report.kills.kills = 4;
        assert_eq!(
            report.summary(),
            "chaos: accepted=10 completed=7 failed=3 lost=0 duplicated=0 corrupt=0 overlaps=0 kills=4"
        );
        assert!(report.passed());
        assert_eq!(report.lines().last().unwrap(), &report.summary());
    }

    #[test]
    fn any_finding_or_no_kill_fails_the_run() {
        let mut report = Report::default();
        assert!(!report.passed(), "no kill");
        report.kills.kills = 1;
        report.findings.overlaps.push("x".to_owned());
        assert!(!report.passed());
    }
}
