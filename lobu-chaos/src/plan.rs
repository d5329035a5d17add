//! The workload, decided up front from the seed: which conversation each turn goes to, what
//! it says (`/fail`, `/sleep MS` — a quarter of them longer than a claim — or a text unique
//! in the whole run), whether its idempotency
//! key is sent again, where resets fall, and whether the client waits for the answer.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The two orgs and their bearer keys; every conversation id exists in both, so a leak from
/// one org to the other would show in the texts.
pub(crate) const ORGS: [(&str, &str); 2] = [
    ("acme", "chaos-key-acme-0001"),
    ("globex", "chaos-key-globex-0002"),
];
/// The agent every conversation talks to.
pub(crate) const AGENT: &str = "support";

/// What one step asks of the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    /// A plain message: answered `You said: <text> (turn N)`.
    Say(String),
    /// `/fail`: the turn fails on every attempt and must leave no trace.
    Fail,
    /// `/sleep MS`: the turn works MS milliseconds (kills land in it); MS is unique within the
    /// conversation so its messages can be told apart.
    Sleep(u64),
    /// `DELETE …/session`: forget everything before.
    Reset,
}

impl Op {
    /// The message text a turn sends (`None` for a reset).
    pub(crate) fn text(&self) -> Option<String> {
        match self {
            Op::Say(text) => Some(text.clone()),
            Op::Fail => Some("/fail".to_owned()),
            Op::Sleep(ms) => Some(format!("/sleep {ms}")),
            Op::Reset => None,
        }
    }
}

/// When a turn's idempotency key is sent a second time, as a client retrying after a timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    Never,
    /// Right after the first send was accepted (to a random live replica, as every request).
    AtOnce,
    /// After the conversation's last step.
    AtTheEnd,
}

/// One step of a conversation's script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) op: Op,
    pub(crate) resend: Resend,
    /// Wait for the run to end before the next step (a user reading the answer).
    pub(crate) wait: bool,
    /// Pause before this step, in milliseconds.
    pub(crate) think_ms: u64,
}

/// One conversation's script.
#[derive(Debug, Clone)]
pub(crate) struct ConversationPlan {
    /// Index into [`ORGS`].
    pub(crate) org: usize,
    pub(crate) conversation: String,
    pub(crate) steps: Vec<Step>,
}

/// The whole workload: `turns` turns over `conversations` conversations (half per org),
/// about one reset per twenty turns on top.
pub(crate) fn plan(seed: u64, conversations: u32, turns: u32) -> Vec<ConversationPlan> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut plans: Vec<ConversationPlan> = (0..conversations)
        .map(|i| ConversationPlan {
            org: (i % 2) as usize,
            conversation: format!("chat-{}", i / 2),
            steps: Vec::new(),
        })
        .collect();
    for n in 0..turns {
        let at = rng.random_range(0..plans.len());
        let plan = &mut plans[at];
        let index = plan.steps.len() as u64;
        let op = match rng.random_range(0..100) {
            0..8 => Op::Fail,
            8..17 => Op::Sleep(sleep_ms(index)),
            17..20 => Op::Sleep(long_sleep_ms(index)),
            _ => Op::Say(format!(
                "{} {} says #{n} (seed {seed})",
                ORGS[plan.org].0, plan.conversation
            )),
        };
        let resend = match rng.random_range(0..100) {
            0..15 => Resend::AtOnce,
            15..25 => Resend::AtTheEnd,
            _ => Resend::Never,
        };
        let wait = rng.random_bool(0.4);
        let think_ms = rng.random_range(0..300);
        plan.steps.push(Step {
            op,
            resend,
            wait,
            think_ms,
        });
        if rng.random_bool(0.05) {
            plan.steps.push(Step {
                op: Op::Reset,
                resend: Resend::Never,
                wait: true,
                think_ms: rng.random_range(0..300),
            });
        }
    }
    plans
}

/// A sleep between 0.9 and 2.1 s, different for every step index below 1200 (37 and 1200
/// are coprime).
fn sleep_ms(index: u64) -> u64 {
    900 + (index * 37) % 1200
}

/// A sleep between 6 and 9 s: longer than the harness's default claim (6 s), so the turn
/// lives on heartbeats; different for every step index below 3000, and from every short one.
fn long_sleep_ms(index: u64) -> u64 {
    6000 + (index * 37) % 3000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        let a = plan(7, 6, 100);
        let b = plan(7, 6, 100);
        let steps = |p: &[ConversationPlan]| p.iter().map(|c| c.steps.clone()).collect::<Vec<_>>();
        assert_eq!(steps(&a), steps(&b));
        assert_ne!(steps(&a), steps(&plan(8, 6, 100)));
    }

    #[test]
    fn every_turn_is_planned_once_and_texts_are_unique() {
        let plans = plan(1, 8, 500);
        let turns: Vec<&Step> = plans
            .iter()
            .flat_map(|p| &p.steps)
            .filter(|s| s.op != Op::Reset)
            .collect();
        assert_eq!(turns.len(), 500);
        let says: Vec<&Op> = turns
            .iter()
            .map(|s| &s.op)
            .filter(|op| matches!(op, Op::Say(_)))
            .collect();
        assert_eq!(says.iter().collect::<HashSet<_>>().len(), says.len());
        for p in &plans {
            let sleeps: Vec<&Op> = p
                .steps
                .iter()
                .map(|s| &s.op)
                .filter(|op| matches!(op, Op::Sleep(_)))
                .collect();
            assert_eq!(sleeps.iter().collect::<HashSet<_>>().len(), sleeps.len());
        }
    }

    #[test]
    fn conversations_alternate_between_the_two_orgs_with_the_same_ids() {
        let plans = plan(3, 4, 10);
        let ids: Vec<(usize, &str)> = plans
            .iter()
            .map(|p| (p.org, p.conversation.as_str()))
            .collect();
        assert_eq!(
            ids,
            [(0, "chat-0"), (1, "chat-0"), (0, "chat-1"), (1, "chat-1")]
        );
    }
}
