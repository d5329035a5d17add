//! What a retention call removes: [`IdlePrune`] for conversations and forensic copies,
//! [`RunPrune`] for finished runs, [`EventPrune`] for stored events. Each says, once for
//! every backend, which items it takes ([`IdlePrune::takes_conversation`],
//! [`RunPrune::takes`], …); SQL backends say the same in their `WHERE`. Every call is
//! bounded ([`limit`](IdlePrune::limit)) and can count instead of removing
//! ([`dry_run`](IdlePrune::dry_run)).

use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::id::AgentId;
use crate::queue::RunStatus;
use crate::session::TerminalStatus;

/// Which agents' conversations an [`IdlePrune`] covers (in every org).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Agents {
    /// Every agent.
    #[default]
    All,
    /// Only this one.
    Only(AgentId),
    /// Every agent but these (those with a window of their own).
    AllExcept(Vec<AgentId>),
}

impl Agents {
    /// Whether `agent` is covered.
    pub fn covers(&self, agent: &AgentId) -> bool {
        match self {
            Agents::All => true,
            Agents::Only(only) => only == agent,
            Agents::AllExcept(except) => !except.contains(agent),
        }
    }
}

/// What [`SessionStore::prune_with`](crate::SessionStore::prune_with) removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdlePrune {
    /// Whole conversations whose head was written before this, that have no live owner (a
    /// claimed run or a live lease), with all their snapshots (`None`: no conversation).
    pub idle_before: Option<SystemTime>,
    /// Non-completed snapshots (forensic copies of failed attempts) written before this
    /// (`None`: none). Completed snapshots are only ever removed with their conversation.
    pub forensic_before: Option<SystemTime>,
    /// Whose conversations.
    pub agents: Agents,
    /// At most this many conversations, and this many forensic copies, per call (a bounded
    /// pass; the next call goes on). `usize::MAX`: no bound.
    pub limit: usize,
    /// Count what would go, remove nothing.
    pub dry_run: bool,
}

impl IdlePrune {
    /// Conversations idle since before `idle_before` and forensic copies older than it, of
    /// every agent, without a bound: what [`SessionStore::prune`](crate::SessionStore::prune) does.
    pub fn everything_before(idle_before: SystemTime) -> Self {
        IdlePrune {
            idle_before: Some(idle_before),
            forensic_before: Some(idle_before),
            agents: Agents::All,
            limit: usize::MAX,
            dry_run: false,
        }
    }

    /// `limit` of 0 is `InvalidInput`.
    pub fn validate(&self) -> Result<()> {
        check_limit(self.limit)
    }

    /// Whether a conversation of `agent` whose head was written at `head_written` is idle
    /// (whether it has a live owner is for the backend to add).
    pub fn takes_conversation(&self, agent: &AgentId, head_written: SystemTime) -> bool {
        self.agents.covers(agent) && self.idle_before.is_some_and(|before| head_written < before)
    }

    /// Whether a snapshot of `agent` with `status`, written at `written`, is an old forensic
    /// copy.
    pub fn takes_forensic(
        &self,
        agent: &AgentId,
        status: TerminalStatus,
        written: SystemTime,
    ) -> bool {
        status != TerminalStatus::Completed
            && self.agents.covers(agent)
            && self.forensic_before.is_some_and(|before| written < before)
    }
}

/// What [`RunQueue::prune_runs_with`](crate::RunQueue::prune_runs_with) removes: finished
/// runs, with their idempotency keys and events. Transcripts never depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunPrune {
    /// Completed runs that finished before this.
    pub completed_before: SystemTime,
    /// Failed, timed-out and cancelled runs (the dead letters, kept at least as long)
    /// that finished before this.
    pub failed_before: SystemTime,
    /// At most this many runs per call. `usize::MAX`: no bound.
    pub limit: usize,
    /// Count what would go, remove nothing.
    pub dry_run: bool,
}

impl RunPrune {
    /// Every finished run that ended before `before`, without a bound: what
    /// [`RunQueue::prune_runs`](crate::RunQueue::prune_runs) does.
    pub fn everything_before(before: SystemTime) -> Self {
        RunPrune {
            completed_before: before,
            failed_before: before,
            limit: usize::MAX,
            dry_run: false,
        }
    }

    /// `limit` of 0 is `InvalidInput`.
    pub fn validate(&self) -> Result<()> {
        check_limit(self.limit)
    }

    /// Whether a run in `status`, last changed at `updated_at`, goes.
    pub fn takes(&self, status: RunStatus, updated_at: SystemTime) -> bool {
        match status {
            RunStatus::Pending | RunStatus::Running => false,
            RunStatus::Completed => updated_at < self.completed_before,
            RunStatus::Failed | RunStatus::Timeout | RunStatus::Cancelled => {
                updated_at < self.failed_before
            }
        }
    }
}

/// What [`RunQueue::prune_events_with`](crate::RunQueue::prune_events_with) removes: the
/// stored events of runs that finished before a time (the runs stay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPrune {
    /// Events of runs that finished before this.
    pub finished_before: SystemTime,
    /// At most this many events per call. `usize::MAX`: no bound.
    pub limit: usize,
    /// Count what would go, remove nothing.
    pub dry_run: bool,
}

impl EventPrune {
    /// Every event of runs that finished before `before`, without a bound.
    pub fn everything_before(before: SystemTime) -> Self {
        EventPrune {
            finished_before: before,
            limit: usize::MAX,
            dry_run: false,
        }
    }

    /// `limit` of 0 is `InvalidInput`.
    pub fn validate(&self) -> Result<()> {
        check_limit(self.limit)
    }

    /// Whether the events of a run in `status`, last changed at `updated_at`, go.
    pub fn takes(&self, status: RunStatus, updated_at: SystemTime) -> bool {
        status.is_terminal() && updated_at < self.finished_before
    }
}

/// A limit as SQL takes it: `usize::MAX` (and anything past `i64::MAX`) is `i64::MAX`.
pub fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn check_limit(limit: usize) -> Result<()> {
    if limit == 0 {
        return Err(Error::invalid("a retention limit must be at least 1"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn agent(id: &str) -> AgentId {
        AgentId::new(id).unwrap()
    }

    #[test]
    fn agents_cover_all_one_or_all_but_some() {
        let (bot, helper) = (agent("bot"), agent("helper"));
        assert!(Agents::All.covers(&bot));
        assert!(Agents::Only(bot.clone()).covers(&bot));
        assert!(!Agents::Only(bot.clone()).covers(&helper));
        assert!(!Agents::AllExcept(vec![bot.clone()]).covers(&bot));
        assert!(Agents::AllExcept(vec![bot]).covers(&helper));
    }

    #[test]
    fn an_idle_prune_takes_old_heads_and_old_forensic_copies_of_covered_agents() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let (old, new) = (t - Duration::from_secs(1), t);
        let prune = IdlePrune {
            agents: Agents::Only(agent("bot")),
            ..IdlePrune::everything_before(t)
        };
        assert!(prune.takes_conversation(&agent("bot"), old));
        assert!(
            !prune.takes_conversation(&agent("bot"), new),
            "not before the cutoff"
        );
        assert!(!prune.takes_conversation(&agent("helper"), old));
        assert!(prune.takes_forensic(&agent("bot"), TerminalStatus::Failed, old));
        assert!(!prune.takes_forensic(&agent("bot"), TerminalStatus::Completed, old));
        assert!(!prune.takes_forensic(&agent("bot"), TerminalStatus::Timeout, new));
        let forensic_only = IdlePrune {
            idle_before: None,
            ..IdlePrune::everything_before(t)
        };
        assert!(!forensic_only.takes_conversation(&agent("bot"), old));
        assert!(forensic_only.takes_forensic(&agent("bot"), TerminalStatus::Cancelled, old));
    }

    #[test]
    fn failed_runs_have_their_own_window_and_unfinished_runs_never_go() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let prune = RunPrune {
            failed_before: t - Duration::from_secs(100),
            ..RunPrune::everything_before(t)
        };
        let between = t - Duration::from_secs(50);
        assert!(prune.takes(RunStatus::Completed, between));
        for dead in [RunStatus::Failed, RunStatus::Timeout, RunStatus::Cancelled] {
            assert!(
                !prune.takes(dead, between),
                "kept for the dead-letter window"
            );
            assert!(prune.takes(dead, t - Duration::from_secs(101)));
        }
        for live in [RunStatus::Pending, RunStatus::Running] {
            assert!(!prune.takes(live, SystemTime::UNIX_EPOCH));
        }
        let events = EventPrune::everything_before(t);
        assert!(events.takes(RunStatus::Failed, between));
        assert!(!events.takes(RunStatus::Running, between));
    }

    #[test]
    fn a_limit_of_zero_is_invalid_input_and_no_bound_is_the_largest_sql_limit() {
        let t = SystemTime::now();
        let zero = IdlePrune {
            limit: 0,
            ..IdlePrune::everything_before(t)
        };
        assert_eq!(
            zero.validate().unwrap_err().kind(),
            crate::ErrorKind::InvalidInput
        );
        assert!(
            RunPrune {
                limit: 0,
                ..RunPrune::everything_before(t)
            }
            .validate()
            .is_err()
        );
        assert!(
            EventPrune {
                limit: 0,
                ..EventPrune::everything_before(t)
            }
            .validate()
            .is_err()
        );
        assert_eq!(sql_limit(usize::MAX), i64::MAX);
        assert_eq!(sql_limit(10), 10);
    }
}
