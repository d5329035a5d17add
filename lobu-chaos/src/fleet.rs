//! The replicas: start them, hand the client their addresses, kill one with SIGKILL every so
//! often (some mid-turn, some mid-`/sleep`, some during start-up) and replace it, and stop
//! the rest gracefully at the end.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::RngExt;
use rand::rngs::StdRng;

use crate::logs::{LogEvent, parse_line};
use crate::replica::{Ended, Launch, Replica, last_line};

/// How many times a replacement may fail to start (the database may be away) before the
/// harness gives up.
const START_TRIES: u32 = 60;

/// What the kills hit.
#[derive(Debug, Default, Clone)]
pub(crate) struct KillStats {
    pub(crate) kills: u64,
    /// The victim had a turn open when it died.
    pub(crate) mid_turn: u64,
    /// … and one of them was a `/sleep` turn.
    pub(crate) mid_sleep: u64,
    /// The victim had not finished starting (no `serving` line yet).
    pub(crate) during_start_up: u64,
    /// Replacements that failed to start and were retried.
    pub(crate) failed_starts: u64,
}

/// The running replicas and the ones that are gone.
#[derive(Debug)]
pub(crate) struct Fleet {
    launch: Launch,
    live: Mutex<Vec<Replica>>,
    ended: Mutex<Vec<Ended>>,
    next_id: AtomicUsize,
    stats: Mutex<KillStats>,
    /// Replicas that exited without being told to: each one is a finding.
    crashes: Mutex<Vec<String>>,
    /// A replica the killer leaves alone (the one a database fault is stalling).
    spared: Mutex<Option<usize>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fleet {
    pub(crate) fn new(launch: Launch) -> Fleet {
        Fleet {
            launch,
            live: Mutex::new(Vec::new()),
            ended: Mutex::new(Vec::new()),
            next_id: AtomicUsize::new(0),
            stats: Mutex::new(KillStats::default()),
            crashes: Mutex::new(Vec::new()),
            spared: Mutex::new(None),
        }
    }

    /// Start one replica and add it to the live set once it serves; retried while it fails
    /// to start.
    pub(crate) async fn start_one(&self) -> Result<(), String> {
        let mut last_error = String::new();
        for _ in 0..START_TRIES {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let mut replica = Replica::spawn(&self.launch, id)?;
            match replica.wait_ready().await {
                Ok(()) => {
                    lock(&self.live).push(replica);
                    return Ok(());
                }
                Err(error) => {
                    lock(&self.stats).failed_starts += 1;
                    let ended = replica.kill().await;
                    lock(&self.ended).push(Ended {
                        how: "exited",
                        ..ended
                    });
                    last_error = error;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        Err(format!("no replica would start: {last_error}"))
    }

    /// The live replica running the most turns now, spared by the killer until
    /// [`spare_none`](Self::spare_none).
    pub(crate) fn spare_busiest(&self) -> Option<usize> {
        let live = lock(&self.live);
        let busiest = live.iter().max_by_key(|r| open_runs(&r.log).len())?.id;
        *lock(&self.spared) = Some(busiest);
        Some(busiest)
    }

    pub(crate) fn spare_none(&self) {
        *lock(&self.spared) = None;
    }

    /// The addresses of the replicas serving now.
    pub(crate) fn bases(&self) -> Vec<String> {
        lock(&self.live)
            .iter()
            .filter_map(|r| r.base.clone())
            .collect()
    }

    /// Kill one replica and start its replacement. Every fourth kill hits a replica still
    /// starting (an extra one); of the others, half prefer a replica running one of
    /// `sleep_runs`.
    pub(crate) async fn kill_one(
        &self,
        rng: &mut StdRng,
        sleep_runs: &HashSet<String>,
    ) -> Result<(), String> {
        let kills = lock(&self.stats).kills;
        if kills % 4 == 3 {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let starting = Replica::spawn(&self.launch, id)?;
            // Killed as soon as it has logged that it is opening its store.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while std::fs::metadata(&starting.log).map_or(0, |m| m.len()) == 0
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let ended = starting.kill().await;
            self.record_kill(&ended, sleep_runs);
            lock(&self.ended).push(ended);
            return Ok(());
        }
        let victim = {
            let mut live = lock(&self.live);
            if live.is_empty() {
                return Ok(());
            }
            let spared = *lock(&self.spared);
            let fair: Vec<usize> = (0..live.len())
                .filter(|&i| Some(live[i].id) != spared)
                .collect();
            let sleeping: Vec<usize> = fair
                .iter()
                .copied()
                .filter(|&i| !open_runs(&live[i].log).is_disjoint(sleep_runs))
                .collect();
            let at = if !sleeping.is_empty() && rng.random_bool(0.5) {
                sleeping[rng.random_range(0..sleeping.len())]
            } else if !fair.is_empty() {
                fair[rng.random_range(0..fair.len())]
            } else {
                return Ok(());
            };
            live.remove(at)
        };
        let ended = victim.kill().await;
        self.record_kill(&ended, sleep_runs);
        lock(&self.ended).push(ended);
        self.start_one().await
    }

    fn record_kill(&self, ended: &Ended, sleep_runs: &HashSet<String>) {
        let open = open_runs(&ended.log);
        let text = std::fs::read_to_string(&ended.log).unwrap_or_default();
        let mut stats = lock(&self.stats);
        stats.kills += 1;
        if !text.contains(" serving") {
            stats.during_start_up += 1;
        }
        if !open.is_empty() {
            stats.mid_turn += 1;
        }
        if !open.is_disjoint(sleep_runs) {
            stats.mid_sleep += 1;
        }
    }

    /// Take out replicas that exited by themselves (recorded as crashes) and start others.
    pub(crate) async fn replace_crashed(&self) -> Result<(), String> {
        let crashed: Vec<Replica> = {
            let mut live = lock(&self.live);
            let mut crashed = Vec::new();
            let mut i = 0;
            while i < live.len() {
                if live[i].exited() {
                    crashed.push(live.remove(i));
                } else {
                    i += 1;
                }
            }
            crashed
        };
        for replica in crashed {
            let ended = replica.into_exited();
            lock(&self.crashes).push(format!(
                "replica {} exited by itself: {}",
                ended.id,
                last_line(&ended.log)
            ));
            lock(&self.ended).push(ended);
            self.start_one().await?;
        }
        Ok(())
    }

    /// Stop every live replica gracefully (SIGTERM).
    pub(crate) async fn stop_all(&self) {
        let live: Vec<Replica> = lock(&self.live).drain(..).collect();
        let ended = futures::future::join_all(live.into_iter().map(Replica::stop)).await;
        lock(&self.ended).extend(ended);
    }

    pub(crate) fn stats(&self) -> KillStats {
        lock(&self.stats).clone()
    }

    pub(crate) fn crashes(&self) -> Vec<String> {
        lock(&self.crashes).clone()
    }

    /// Every replica that ended (after [`stop_all`](Self::stop_all): all of them).
    pub(crate) fn ended(&self) -> Vec<Ended> {
        lock(&self.ended).clone()
    }
}

/// The runs whose turn started in this log and has not ended.
fn open_runs(log: &std::path::Path) -> HashSet<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut open = HashSet::new();
    for event in text.lines().filter_map(parse_line) {
        match event {
            LogEvent::Started { claim, .. } => {
                open.insert(claim.run);
            }
            LogEvent::Ended { claim, .. } => {
                open.remove(&claim.run);
            }
            LogEvent::Committed { .. } | LogEvent::Refused | LogEvent::StoppedAtDeadline => {}
        }
    }
    open
}
