//! Double texting: what a submit does about the conversation's unfinished runs
//! ([`MultitaskStrategy`], [`plan_submit`]), and steering: which waiting messages a running
//! turn may take ([`steerable`]) and the check of what it took at its commit
//! ([`check_steered`]).
//!
//! These are the rules every backend applies the same way: a backend loads the conversation's
//! unfinished runs under its submit (or commit) lock as [`Queued`] rows, oldest first, asks
//! here, and writes the answer.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::RunId;
use crate::queue::{RunKind, RunStatus};

/// The most steered messages one turn can take (a bound on the rows a commit checks).
pub const MAX_STEERED: usize = 32;

/// What a submit does when its conversation has unfinished runs, as LangGraph's server has
/// it (`multitask_strategy`), with lobu's steering on top. Resets are never cancelled by
/// another run's strategy: a reset is an explicit request to forget, and cancelling it would
/// keep what the user asked to forget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MultitaskStrategy {
    /// Run after the conversation's earlier runs (first in, first out).
    #[default]
    Enqueue,
    /// Refused (`Conflict`, naming the unfinished run; nothing queued) while the
    /// conversation has an unfinished run.
    Reject,
    /// Cancel the conversation's started turn (running, or waiting out a retry delay; its
    /// work is discarded, as turns are atomic), then run after the runs that were waiting.
    Interrupt,
    /// Cancel the started turn and every waiting turn of the conversation, then run.
    Rollback,
    /// Offer the message to the running turn: the agent may take it into its turn (see
    /// [`steerable`]); if it does not, or no turn runs, the message runs as its own turn, in
    /// order.
    Steer,
}

impl MultitaskStrategy {
    /// Every strategy, in the order the docs list them.
    pub const ALL: [MultitaskStrategy; 5] = [
        MultitaskStrategy::Enqueue,
        MultitaskStrategy::Reject,
        MultitaskStrategy::Interrupt,
        MultitaskStrategy::Rollback,
        MultitaskStrategy::Steer,
    ];

    /// `enqueue`, `reject`, `interrupt`, `rollback` or `steer`.
    pub fn as_str(self) -> &'static str {
        match self {
            MultitaskStrategy::Enqueue => "enqueue",
            MultitaskStrategy::Reject => "reject",
            MultitaskStrategy::Interrupt => "interrupt",
            MultitaskStrategy::Rollback => "rollback",
            MultitaskStrategy::Steer => "steer",
        }
    }

    /// Parse one of [`as_str`](Self::as_str)'s spellings; anything else is `InvalidInput`.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|strategy| strategy.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown multitask strategy {s:?}; expected enqueue, reject, interrupt, \
                     rollback or steer"
                ))
            })
    }

    /// Whether the submit must look at the conversation's unfinished runs (under the
    /// conversation's submit lock) before it queues: `reject`, `interrupt`, `rollback`.
    pub fn looks_at_the_lane(self) -> bool {
        matches!(
            self,
            MultitaskStrategy::Reject | MultitaskStrategy::Interrupt | MultitaskStrategy::Rollback
        )
    }
}

/// One unfinished run of a conversation as the rules here see it. Backends pass the
/// conversation's unfinished runs oldest first (submission order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The run.
    pub run: RunId,
    /// Turn or reset.
    pub kind: RunKind,
    /// `Pending` or `Running`.
    pub status: RunStatus,
    /// Attempts started so far (0: it never ran).
    pub attempts: u32,
    /// Submitted with [`MultitaskStrategy::Steer`].
    pub steer: bool,
    /// A cancellation was asked for while it was claimed.
    pub cancel_requested: bool,
}

/// What a submit with `strategy` does before it queues its run, given the conversation's
/// unfinished runs (`lane`, oldest first): the runs to cancel (each with
/// [`interrupted_reason`] as its error), or `Conflict` naming the oldest unfinished run for a
/// `reject` (then nothing is queued). A submit whose idempotency key matched an earlier run
/// does none of this.
pub fn plan_submit(strategy: MultitaskStrategy, lane: &[Queued]) -> Result<Vec<RunId>> {
    let turns = lane
        .iter()
        .filter(|queued| queued.kind == RunKind::Turn && !queued.cancel_requested);
    Ok(match strategy {
        MultitaskStrategy::Enqueue | MultitaskStrategy::Steer => Vec::new(),
        MultitaskStrategy::Reject => match lane.first() {
            Some(oldest) => {
                return Err(Error::conflict(format!(
                    "the conversation has an unfinished run {} ({}); nothing was queued",
                    oldest.run,
                    oldest.status.as_str()
                )));
            }
            None => Vec::new(),
        },
        MultitaskStrategy::Interrupt => turns
            .filter(|queued| queued.attempts > 0)
            .map(|queued| queued.run.clone())
            .collect(),
        MultitaskStrategy::Rollback => turns.map(|queued| queued.run.clone()).collect(),
    })
}

/// The error a run cancelled by a later submit's strategy records.
pub fn interrupted_reason(strategy: MultitaskStrategy, by: &RunId) -> String {
    match strategy {
        MultitaskStrategy::Rollback => format!("rolled back by run {by}"),
        _ => format!("interrupted by run {by}"),
    }
}

/// The messages the running turn of `claimed` may take: the steer turns queued directly
/// behind it that never ran and are not being cancelled, oldest first, at most
/// [`MAX_STEERED`]. The first run that is not one (an ordinary turn, a reset) ends the
/// offer, so taking never reorders the conversation. Empty unless `claimed` is the lane's
/// oldest run.
pub fn steerable(claimed: &RunId, lane: &[Queued]) -> Vec<RunId> {
    match lane.split_first() {
        Some((front, behind)) if front.run == *claimed => behind
            .iter()
            .take_while(|queued| {
                queued.steer
                    && queued.kind == RunKind::Turn
                    && queued.status == RunStatus::Pending
                    && queued.attempts == 0
                    && !queued.cancel_requested
            })
            .take(MAX_STEERED)
            .map(|queued| queued.run.clone())
            .collect(),
        _ => Vec::new(),
    }
}

/// `Conflict` unless `taken` (the runs a turn took, in the order it took them) is the start of
/// what [`steerable`] offers now: a taken run that was cancelled, or taken out of order, means
/// the turn's transcript answers a message that is not waiting for it, so its commit must not
/// land (the turn is tried again from the head, without it). Nothing taken is always fine.
pub fn check_steered(claimed: &RunId, lane: &[Queued], taken: &[RunId]) -> Result<()> {
    if taken.is_empty() {
        return Ok(());
    }
    let offered = steerable(claimed, lane);
    if offered.starts_with(taken) {
        return Ok(());
    }
    let missing = taken
        .iter()
        .zip(offered.iter().map(Some).chain(std::iter::repeat(None)))
        .find(|(taken, offered)| Some(*taken) != *offered)
        .map_or_else(|| taken[0].clone(), |(taken, _)| taken.clone());
    Err(Error::conflict(format!(
        "steered run {missing} is no longer waiting for run {claimed} (cancelled, or taken out \
         of order); the turn's commit is refused"
    )))
}

/// The output a steered run completes with: the turn that answered it.
pub fn steered_output(into: &RunId) -> serde_json::Value {
    serde_json::json!({ "steered_into": into.as_str() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn queued(kind: RunKind, status: RunStatus, attempts: u32, steer: bool) -> Queued {
        Queued {
            run: RunId::generate(),
            kind,
            status,
            attempts,
            steer,
            cancel_requested: false,
        }
    }

    fn running() -> Queued {
        queued(RunKind::Turn, RunStatus::Running, 1, false)
    }

    fn waiting(steer: bool) -> Queued {
        queued(RunKind::Turn, RunStatus::Pending, 0, steer)
    }

    fn ids(lane: &[Queued]) -> Vec<RunId> {
        lane.iter().map(|queued| queued.run.clone()).collect()
    }

    #[test]
    fn strategies_parse_their_own_spelling_and_nothing_else() {
        for strategy in MultitaskStrategy::ALL {
            assert_eq!(
                MultitaskStrategy::parse(strategy.as_str()).unwrap(),
                strategy
            );
        }
        for bad in ["", "Enqueue", "cancel", "steer "] {
            let err = MultitaskStrategy::parse(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
        assert_eq!(MultitaskStrategy::default(), MultitaskStrategy::Enqueue);
    }

    #[test]
    fn reject_names_the_oldest_unfinished_run_and_passes_an_idle_conversation() {
        let lane = [running(), waiting(false)];
        let err = plan_submit(MultitaskStrategy::Reject, &lane).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert!(err.message().contains(lane[0].run.as_str()), "{err}");
        assert!(err.message().contains("running"), "{err}");
        assert_eq!(plan_submit(MultitaskStrategy::Reject, &[]).unwrap(), []);
    }

    #[test]
    fn interrupt_cancels_the_started_turn_and_rollback_every_turn_but_never_a_reset() {
        let reset = queued(RunKind::Reset, RunStatus::Pending, 0, false);
        let retrying = queued(RunKind::Turn, RunStatus::Pending, 2, false);
        let lane = [retrying.clone(), reset, waiting(false), waiting(true)];
        let interrupt = plan_submit(MultitaskStrategy::Interrupt, &lane).unwrap();
        assert_eq!(interrupt, std::slice::from_ref(&retrying.run));
        let rollback = plan_submit(MultitaskStrategy::Rollback, &lane).unwrap();
        assert_eq!(
            rollback,
            [
                lane[0].run.clone(),
                lane[2].run.clone(),
                lane[3].run.clone()
            ]
        );
        for quiet in [MultitaskStrategy::Enqueue, MultitaskStrategy::Steer] {
            assert_eq!(plan_submit(quiet, &lane).unwrap(), []);
        }
    }

    #[test]
    fn a_run_already_being_cancelled_is_not_cancelled_again() {
        let mut front = running();
        front.cancel_requested = true;
        let lane = [front];
        assert_eq!(
            plan_submit(MultitaskStrategy::Interrupt, &lane).unwrap(),
            []
        );
        assert_eq!(plan_submit(MultitaskStrategy::Rollback, &lane).unwrap(), []);
    }

    #[test]
    fn the_running_turn_is_offered_the_steer_turns_directly_behind_it_only() {
        let lane = [
            running(),
            waiting(true),
            waiting(true),
            waiting(false),
            waiting(true),
        ];
        let front = lane[0].run.clone();
        assert_eq!(steerable(&front, &lane), ids(&lane[1..3]));
        assert_eq!(steerable(&lane[1].run, &lane), [], "only the front's turn");
        assert_eq!(steerable(&front, &lane[..1]), []);
        let mut cancelled = lane.clone();
        cancelled[2].cancel_requested = true;
        assert_eq!(steerable(&front, &cancelled), ids(&lane[1..2]));
        let mut behind_reset = lane.clone();
        behind_reset[1].kind = RunKind::Reset;
        assert_eq!(steerable(&front, &behind_reset), []);
    }

    #[test]
    fn at_most_max_steered_messages_are_offered() {
        let lane: Vec<Queued> = std::iter::once(running())
            .chain((0..MAX_STEERED + 5).map(|_| waiting(true)))
            .collect();
        assert_eq!(steerable(&lane[0].run, &lane).len(), MAX_STEERED);
    }

    #[test]
    fn what_a_turn_took_must_still_be_the_start_of_the_offer() {
        let lane = [running(), waiting(true), waiting(true)];
        let front = lane[0].run.clone();
        assert!(check_steered(&front, &lane, &[]).is_ok());
        assert!(check_steered(&front, &lane, &ids(&lane[1..2])).is_ok());
        assert!(check_steered(&front, &lane, &ids(&lane[1..])).is_ok());
        let out_of_order = [lane[2].run.clone()];
        let err = check_steered(&front, &lane, &out_of_order).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert!(err.message().contains(lane[2].run.as_str()), "{err}");
        let gone = [lane[0].clone(), lane[2].clone()];
        let err = check_steered(&front, &gone, &ids(&lane[1..])).unwrap_err();
        assert!(err.message().contains(lane[1].run.as_str()), "{err}");
    }

    #[test]
    fn a_steered_run_reports_the_turn_that_answered_it() {
        let into = RunId::generate();
        assert_eq!(steered_output(&into)["steered_into"], into.as_str());
    }
}
