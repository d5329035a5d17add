//! The client load: every conversation's script runs as its own task (steps one after
//! another, conversations side by side), and what the host accepted goes to the ledger.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::api::Api;
use crate::ledger::{ConversationLedger, Ending, Entry, Expect, TurnRecord};
use crate::plan::{ConversationPlan, Op, Resend};

/// How long a client waits for an answer before it goes on anyway.
const WAIT_FOR_ANSWER: Duration = Duration::from_secs(60);

/// Run ids of `/sleep` turns, for the killer to aim at.
pub(crate) type SleepRuns = Arc<Mutex<HashSet<String>>>;

/// Run one conversation's script to its end (or until the fleet stops answering: then the
/// ledger holds what was accepted so far, and the error).
pub(crate) async fn run_conversation(
    api: Api,
    plan: ConversationPlan,
    seed: u64,
    sleep_runs: SleepRuns,
) -> ConversationLedger {
    let mut ledger = ConversationLedger::new(plan.org, plan.conversation.clone());
    if let Err(error) = run_steps(&api, &plan, seed, &sleep_runs, &mut ledger).await {
        ledger.error = Some(error);
    }
    ledger
}

async fn run_steps(
    api: &Api,
    plan: &ConversationPlan,
    seed: u64,
    sleep_runs: &SleepRuns,
    ledger: &mut ConversationLedger,
) -> Result<(), String> {
    let mut resend_later = Vec::new();
    for (index, step) in plan.steps.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(step.think_ms)).await;
        let key = format!(
            "chaos-{seed}-{}-{}-{index}",
            crate::plan::ORGS[plan.org].0,
            plan.conversation
        );
        let Some(text) = step.op.text() else {
            reset(api, plan, &key).await?;
            ledger.entries.push(Entry::Reset);
            continue;
        };
        let run = api
            .submit(plan.org, &plan.conversation, &text, &key)
            .await?;
        if matches!(step.op, Op::Sleep(_)) {
            sleep_runs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(run.clone());
        }
        ledger.entries.push(Entry::Turn(TurnRecord {
            run: run.clone(),
            text: text.clone(),
            expect: if step.op == Op::Fail {
                Expect::Failure
            } else {
                Expect::Answer
            },
            ending: None,
            attempts: 0,
        }));
        match step.resend {
            Resend::AtOnce => resend(api, ledger, &text, &key, &run).await?,
            Resend::AtTheEnd => resend_later.push((text, key, run.clone())),
            Resend::Never => {}
        }
        if step.wait {
            wait_for_end(api, plan.org, &run, WAIT_FOR_ANSWER).await?;
        }
    }
    for (text, key, run) in resend_later {
        resend(api, ledger, &text, &key, &run).await?;
    }
    Ok(())
}

/// Send a turn's key again, as a client that timed out would; it must answer the same run.
async fn resend(
    api: &Api,
    ledger: &mut ConversationLedger,
    text: &str,
    key: &str,
    run: &str,
) -> Result<(), String> {
    let again = api
        .submit(ledger.org, &ledger.conversation, text, key)
        .await?;
    ledger.resends += 1;
    if again != run {
        ledger.resend_mismatches.push(format!(
            "{}/{}: idempotency key {key} made run {run} and then run {again}",
            crate::plan::ORGS[ledger.org].0,
            ledger.conversation
        ));
    }
    Ok(())
}

/// Poll the run until it ended or `patience` passed; its ending, if it ended.
pub(crate) async fn wait_for_end(
    api: &Api,
    org: usize,
    run: &str,
    patience: Duration,
) -> Result<Option<(Ending, u64)>, String> {
    let deadline = Instant::now() + patience;
    loop {
        match api.status(org, run).await? {
            None => return Ok(Some((Ending::NeverEnded("not found (404)".to_owned()), 0))),
            Some(status) => match status.status.as_str() {
                "pending" | "running" => {}
                "completed" => return Ok(Some((Ending::Completed, status.attempts))),
                other => {
                    let error = format!("{other}: {}", status.error.unwrap_or_default());
                    return Ok(Some((Ending::Failed(error), status.attempts)));
                }
            },
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Reset until a reset completes: one key per reset, sent again after timeouts; a reset that
/// ended failed (its attempts were killed) is followed by a new one with the next key.
async fn reset(api: &Api, plan: &ConversationPlan, key: &str) -> Result<(), String> {
    for attempt in 0..RESETS_BEFORE_GIVING_UP {
        let key = format!("{key}-reset-{attempt}");
        if api
            .reset(plan.org, &plan.conversation, &key)
            .await?
            .is_some()
        {
            return Ok(());
        }
    }
    Err(format!(
        "{RESETS_BEFORE_GIVING_UP} resets of {} in a row ended failed",
        plan.conversation
    ))
}

/// How many failed resets in a row the client takes before it stops.
const RESETS_BEFORE_GIVING_UP: u32 = 10;
