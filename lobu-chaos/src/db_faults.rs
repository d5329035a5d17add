//! The database-fault schedule (`--db-faults`): while the load runs, cycles of
//! 1. connections dropped mid-transaction (3 s);
//! 2. one replica's connections, open and new, stalled past a claim's lifetime (the others
//!    take its conversations over; its late writes must be refused by the fence);
//! 3. half of all open connections stalled past a claim's lifetime;
//! 4. the database away (connections cut, ports closed) for 8 s, with every replica's
//!    `/health/ready` polled: it must say not-ready during the outage and ready again after.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::time::Instant;

use crate::api::Api;
use crate::fleet::Fleet;
use crate::proxy::FaultProxy;

/// How long the database is away in each outage.
const OUTAGE: Duration = Duration::from_secs(8);
/// How long after the database went away a ready answer counts against a replica (a
/// probe already on its way may have been answered before the cut reached it).
const SETTLE: Duration = Duration::from_millis(500);
/// How long replicas get to report ready again after an outage.
const RECOVERY: Duration = Duration::from_secs(45);

/// What the fault cycles did and saw.
#[derive(Debug, Default, Clone)]
pub(crate) struct FaultReport {
    pub(crate) cycles: u64,
    /// (replica, outage) pairs checked: not ready during, ready after.
    pub(crate) readiness_checked: u64,
    pub(crate) findings: Vec<String>,
}

/// Run fault cycles while `running` (the load) lasts: the first cycle whole, later ones up to
/// the fault during which the load ended.
pub(crate) async fn run_faults(
    proxy: FaultProxy,
    fleet: Arc<Fleet>,
    api: Api,
    claim_ttl: Duration,
    running: Arc<AtomicBool>,
) -> FaultReport {
    let mut report = FaultReport::default();
    let started = Instant::now();
    let say = |what: &str| println!("chaos: +{:.1} s: {what}", started.elapsed().as_secs_f64());
    let stall = claim_ttl + Duration::from_secs(2);
    loop {
        report.cycles += 1;
        // The first cycle runs whole; later ones stop between faults once the load is over.
        let first = report.cycles == 1;
        let go_on = || first || running.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(4)).await;
        say("dropping connections mid-transaction for 3 s");
        proxy.drop_mid_transaction(Duration::from_secs(3)).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        if !go_on() {
            break;
        }
        if let Some(victim) = fleet.spare_busiest() {
            say(&format!(
                "stalling replica {victim}'s connections for {stall:?}"
            ));
            proxy.stall_replica(victim, stall).await;
            tokio::time::sleep(Duration::from_secs(3)).await; // its late calls land
            fleet.spare_none();
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        if !go_on() {
            break;
        }
        say(&format!("stalling half the connections for {stall:?}"));
        proxy.stall_half(stall).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        if !go_on() {
            break;
        }
        say(&format!("the database goes away for {OUTAGE:?}"));
        outage(&proxy, &fleet, &api, &mut report).await;
        say("the replicas are ready again");
        if !running.load(Ordering::SeqCst) {
            break;
        }
    }
    report
}

async fn outage(proxy: &FaultProxy, fleet: &Fleet, api: &Api, report: &mut FaultReport) {
    let before: HashSet<String> = fleet.bases().into_iter().collect();
    proxy.set_away(true);
    let away_since = Instant::now();
    let mut not_ready: HashSet<String> = HashSet::new();
    let mut ready_while_away: HashMap<String, u32> = HashMap::new();
    let mut probes = Vec::new();
    while away_since.elapsed() < OUTAGE {
        for base in fleet.bases() {
            let api = api.clone();
            probes.push(tokio::spawn(async move {
                let sent = Instant::now();
                let status = api.ready(&base).await;
                (base, sent, Instant::now(), status)
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let away_until = Instant::now();
    for probe in probes {
        let Ok((base, sent, answered, status)) = probe.await else {
            continue;
        };
        match status {
            Some(StatusCode::OK) if answered < away_until && sent > away_since + SETTLE => {
                *ready_while_away.entry(base).or_default() += 1;
            }
            Some(status) if status != StatusCode::OK => {
                not_ready.insert(base);
            }
            _ => {}
        }
    }
    proxy.set_away(false);
    let during: HashSet<String> = fleet.bases().into_iter().collect();
    let stayed: Vec<&String> = before.intersection(&during).collect();
    for (base, count) in ready_while_away {
        report.findings.push(format!(
            "{base} answered ready {count} times while the database was away"
        ));
    }
    for base in &stayed {
        if !not_ready.contains(*base) {
            report.findings.push(format!(
                "{base} never reported not-ready while the database was away"
            ));
        }
    }
    let deadline = Instant::now() + RECOVERY;
    let mut waiting: Vec<String> = stayed.into_iter().cloned().collect();
    while !waiting.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for base in waiting {
            if !fleet.bases().contains(&base) {
                continue; // killed meanwhile
            }
            if api.ready(&base).await == Some(StatusCode::OK) {
                report.readiness_checked += 1;
            } else {
                still.push(base);
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    for base in waiting {
        report.findings.push(format!(
            "{base} did not report ready within {RECOVERY:?} after the database came back"
        ));
    }
}
