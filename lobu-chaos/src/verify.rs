//! After the load: wait for the queue to drain, then check everything from the outside
//! (HTTP while the replicas run; their logs, the stored transcripts and, on PostgreSQL,
//! read-only SQL once they stopped).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use lobu_core::ConversationKey;
use lobu_core::transcript::{DisplayMessage, DisplayType};
use tokio::time::Instant;

use crate::api::Api;
use crate::check_fences::{CommitOrder, check_fences};
use crate::check_overlap::{Window, check_overlaps, windows};
use crate::check_sql::{check_stored_runs, read_stored};
use crate::check_stored::{check_stored, open_store};
use crate::check_transcript::{Line, Origins, check_transcript};
use crate::database::ChaosDb;
use crate::findings::Findings;
use crate::fleet::Fleet;
use crate::ledger::{ConversationLedger, Ending, Expect};
use crate::load::wait_for_end;
use crate::logs::{ClaimRef, LogEvent, parse_line};
use crate::plan::{AGENT, ORGS};
use crate::report::Report;

/// How long the queue may take to drain once the load ended.
const DRAIN: Duration = Duration::from_secs(180);

/// What the checks look at.
#[derive(Debug)]
pub(crate) struct Setting<'a> {
    pub(crate) fleet: &'a Fleet,
    pub(crate) api: &'a Api,
    pub(crate) db: Option<&'a ChaosDb>,
    pub(crate) data_dir: &'a Path,
}

pub(crate) async fn verify(
    setting: &Setting<'_>,
    mut ledgers: Vec<ConversationLedger>,
) -> Result<Report, String> {
    let mut findings = Findings::default();
    let drain_started = Instant::now();
    drain(setting.api, &mut ledgers, &mut findings).await?;
    let drain_time = drain_started.elapsed();

    let origins: Origins = ledgers
        .iter()
        .flat_map(|l| {
            let name = format!("{}/{}", ORGS[l.org].0, l.conversation);
            l.turns().map(move |t| (t.text.clone(), name.clone()))
        })
        .filter(|(text, _)| !text.starts_with('/'))
        .collect();
    let mut shown = Vec::new();
    let mut orders = Vec::new();
    for ledger in &ledgers {
        let name = format!("{}/{}", ORGS[ledger.org].0, ledger.conversation);
        if let Some(error) = &ledger.error {
            findings
                .other
                .push(format!("{name}: the client stopped: {error}"));
        }
        findings
            .duplicated
            .extend(ledger.resend_mismatches.iter().cloned());
        for turn in ledger.turns() {
            if turn.expect == Expect::Failure && turn.ending == Some(Ending::Completed) {
                findings
                    .corrupt
                    .push(format!("{name}: run {} of /fail completed", turn.run));
            }
        }
        let messages = setting
            .api
            .messages(ledger.org, &ledger.conversation)
            .await?;
        let lines = lines_of(&messages);
        findings.absorb(check_transcript(ledger, &lines, &origins));
        orders.push(transcript_order(ledger, &name, &lines));
        shown.push(messages);
    }
    findings.absorb(check_tenancy(setting.api, &ledgers).await?);

    setting.fleet.stop_all().await;
    findings.other.extend(setting.fleet.crashes());
    let logged = read_logs(setting.fleet);
    findings.absorb(check_overlaps(&logged.windows));

    let store = open_store(setting.db.map(|db| db.url.as_str()), setting.data_dir).await?;
    for (ledger, messages) in ledgers.iter().zip(&shown) {
        let key = ConversationKey::parse(ORGS[ledger.org].0, AGENT, &ledger.conversation)
            .map_err(|e| format!("a harness key is invalid: {e}"))?;
        findings.absorb(check_stored(store.as_ref(), &key, messages).await);
    }
    let mut stored_fences = HashMap::new();
    if let Some(db) = setting.db {
        let pool = db.pool().await?;
        let stored = read_stored(&pool).await?;
        let (sql_findings, fences, sql_orders) = check_stored_runs(&stored, &ledgers);
        findings.absorb(sql_findings);
        stored_fences = fences;
        orders.extend(sql_orders);
        pool.close().await;
    }
    findings.absorb(check_fences(&logged.commits, &orders, &stored_fences));

    let mut report = Report::new(&ledgers, findings, drain_time);
    // The log-based checks must have had something to check: every completed turn ran in a
    // window and was committed by a claim (most commits are logged; a kill can eat one).
    let completed = usize::try_from(report.completed).unwrap_or(usize::MAX);
    if logged.windows.len() < completed || logged.commits.len() < completed / 2 {
        report.findings.other.push(format!(
            "the logs hold {} turn windows and {} commits for {completed} completed turns: \
             did the log format change?",
            logged.windows.len(),
            logged.commits.len()
        ));
    }
    if setting.db.is_some() && stored_fences.len() < completed {
        report.findings.other.push(format!(
            "the database holds {} commit fences for {completed} completed turns",
            stored_fences.len()
        ));
    }
    report.windows = logged.windows.len();
    report.commits_logged = logged.commits.len();
    report.refused_writes = logged.refused;
    report.stopped_at_deadline = logged.stopped_at_deadline;
    report.fences_stored = stored_fences.len();
    Ok(report)
}

/// Wait for every accepted turn to end; the ones that did not in [`DRAIN`] are lost.
async fn drain(
    api: &Api,
    ledgers: &mut [ConversationLedger],
    findings: &mut Findings,
) -> Result<(), String> {
    let deadline = Instant::now() + DRAIN;
    let waits = ledgers.iter_mut().map(|ledger| async move {
        let org = ledger.org;
        let name = format!("{}/{}", ORGS[org].0, ledger.conversation);
        let mut lost = Vec::new();
        for turn in ledger.turns_mut() {
            let patience = deadline.saturating_duration_since(Instant::now());
            match wait_for_end(api, org, &turn.run, patience).await? {
                Some((ending, attempts)) => {
                    if let Ending::NeverEnded(why) = &ending {
                        lost.push(format!("{name}: run {} {why}", turn.run));
                    }
                    turn.ending = Some(ending);
                    turn.attempts = attempts;
                }
                None => {
                    lost.push(format!(
                        "{name}: run {} had not ended {DRAIN:?} after the load",
                        turn.run
                    ));
                    turn.ending = Some(Ending::NeverEnded("did not end".to_owned()));
                }
            }
        }
        Ok::<_, String>(lost)
    });
    for lost in futures::future::join_all(waits).await {
        findings.lost.extend(lost?);
    }
    Ok(())
}

/// The user and assistant messages as `(role, text)`, hidden ones left out.
fn lines_of(messages: &[DisplayMessage]) -> Vec<Line> {
    messages
        .iter()
        .filter(|m| m.kind == DisplayType::Message && !m.is_verbose)
        .map(|m| {
            let text = match &m.content {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Array(blocks)) => blocks
                    .iter()
                    .filter(|b| b["type"] == "text")
                    .filter_map(|b| b["text"].as_str())
                    .collect(),
                other => format!("{other:?}"),
            };
            (m.role.clone().unwrap_or_default(), text)
        })
        .collect()
}

/// The runs of the transcript's turns, in transcript order (for the fence check).
fn transcript_order(ledger: &ConversationLedger, name: &str, lines: &[Line]) -> CommitOrder {
    let (_, after) = ledger.split_at_last_reset();
    let run_of: HashMap<&str, &str> = after
        .iter()
        .map(|t| (t.text.as_str(), t.run.as_str()))
        .collect();
    CommitOrder {
        source: "transcript",
        conversation: name.to_owned(),
        runs: lines
            .iter()
            .filter(|(role, _)| role == "user")
            .filter_map(|(_, text)| run_of.get(text.as_str()).map(|r| (*r).to_owned()))
            .collect(),
    }
}

/// Org A's key never sees org B's runs (404, like an unknown run), and the other way round.
async fn check_tenancy(api: &Api, ledgers: &[ConversationLedger]) -> Result<Findings, String> {
    let mut findings = Findings::default();
    for (org, other) in [(0, 1), (1, 0)] {
        let theirs = ledgers
            .iter()
            .filter(|l| l.org == other)
            .flat_map(|l| l.turns())
            .take(20);
        for turn in theirs {
            if let Some(status) = api.status(org, &turn.run).await? {
                findings.corrupt.push(format!(
                    "{} sees {}'s run {} ({})",
                    ORGS[org].0, ORGS[other].0, turn.run, status.status
                ));
            }
        }
    }
    Ok(findings)
}

/// What the replicas' logs hold.
#[derive(Debug, Default)]
struct Logged {
    windows: Vec<Window>,
    commits: Vec<ClaimRef>,
    /// Writes of taken-over claims the store refused.
    refused: usize,
    /// Turns stopped because their claim was about to lapse unrenewed.
    stopped_at_deadline: usize,
}

/// Every replica's turn windows, accepted commits and refused stale writes.
fn read_logs(fleet: &Fleet) -> Logged {
    let mut logged = Logged::default();
    for ended in fleet.ended() {
        let text = std::fs::read_to_string(&ended.log).unwrap_or_default();
        let events: Vec<LogEvent> = text.lines().filter_map(parse_line).collect();
        for event in &events {
            match event {
                LogEvent::Committed { claim, .. } => logged.commits.push(claim.clone()),
                LogEvent::Refused => logged.refused += 1,
                LogEvent::StoppedAtDeadline => logged.stopped_at_deadline += 1,
                LogEvent::Started { .. } | LogEvent::Ended { .. } => {}
            }
        }
        logged
            .windows
            .extend(windows(ended.id, &events, ended.at, ended.how));
    }
    logged
}
