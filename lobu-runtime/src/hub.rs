//! The event hub: one append-only log per run, replayed to late subscribers.
//!
//! Subscribers read the log by index, so a slow subscriber never lags or loses events (a
//! broadcast channel would drop them). Logs of runs that saw no activity for the retention
//! period are evicted, unless the run is unfinished and its log still in use (the run
//! executes here, or someone follows it): a quiet turn keeps its log however long it runs.
//! A subscriber of an evicted or foreign run falls back to the queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lobu_core::{ConversationKey, OrgId, RunId, RunKind};
use tokio::sync::watch;

use crate::events::RunEvent;

/// How often, at most, the hub scans for logs to evict.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How many finished runs' logs the hub keeps at most, whatever their age; the ones that
/// ended longest ago go first (their subscribers fall back to the queue).
pub(crate) const MAX_FINISHED_LOGS: usize = 10_000;

#[derive(Debug)]
pub(crate) struct EventHub {
    state: Mutex<HubState>,
    retention: Duration,
}

#[derive(Debug)]
struct HubState {
    runs: HashMap<RunId, Arc<RunLog>>,
    last_sweep: Instant,
}

/// The events of one run so far.
#[derive(Debug)]
pub(crate) struct RunLog {
    key: ConversationKey,
    state: Mutex<LogState>,
    /// Bumped on every append, so readers can await "something new".
    changed: watch::Sender<u64>,
}

#[derive(Debug)]
struct LogState {
    events: Vec<RunEvent>,
    done: bool,
    last_activity: Instant,
    /// Orders appends across all logs (instants can tie).
    last_seq: u64,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the data half-updated (every update is
    // a single push or flag), so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EventHub {
    pub(crate) fn new(retention: Duration) -> Self {
        EventHub {
            state: Mutex::new(HubState {
                runs: HashMap::new(),
                last_sweep: Instant::now(),
            }),
            retention,
        }
    }

    /// The run's log, created with its [`RunEvent::Accepted`] event if this process has
    /// none yet (a run submitted by another replica and claimed here).
    pub(crate) fn open(&self, key: &ConversationKey, run: &RunId, kind: RunKind) -> Arc<RunLog> {
        let mut state = lock(&self.state);
        let now = Instant::now();
        if now.duration_since(state.last_sweep) >= SWEEP_EVERY {
            state.last_sweep = now;
            self.sweep(&mut state.runs, now);
        }
        state
            .runs
            .entry(run.clone())
            .or_insert_with(|| {
                let log = RunLog::new(key.clone());
                log.push(RunEvent::Accepted {
                    run: run.clone(),
                    key: key.clone(),
                    kind,
                });
                Arc::new(log)
            })
            .clone()
    }

    fn sweep(&self, runs: &mut HashMap<RunId, Arc<RunLog>>, now: Instant) {
        runs.retain(|_, log| {
            // Held elsewhere: by the executing worker or a subscriber. An unfinished run's
            // log held by no one (submitted here, executed by another replica) may go.
            let in_use = Arc::strong_count(log) > 1;
            (in_use && !log.is_done()) || now.duration_since(log.last_activity()) < self.retention
        });
        let mut finished: Vec<(u64, RunId)> = runs
            .iter()
            .filter(|(_, log)| log.is_done())
            .map(|(run, log)| (lock(&log.state).last_seq, run.clone()))
            .collect();
        if finished.len() > MAX_FINISHED_LOGS {
            finished.sort_unstable();
            let excess = finished.len() - MAX_FINISHED_LOGS;
            for (_, run) in finished.into_iter().take(excess) {
                runs.remove(&run);
            }
        }
    }

    /// The run's log if this process has one for a run of `org`.
    pub(crate) fn find(&self, org: &OrgId, run: &RunId) -> Option<Arc<RunLog>> {
        let state = lock(&self.state);
        state
            .runs
            .get(run)
            .filter(|log| &log.key.org == org)
            .cloned()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.state).runs.len()
    }
}

impl RunLog {
    fn new(key: ConversationKey) -> Self {
        RunLog {
            key,
            state: Mutex::new(LogState {
                events: Vec::new(),
                done: false,
                last_activity: Instant::now(),
                last_seq: SEQ.fetch_add(1, Ordering::Relaxed),
            }),
            changed: watch::channel(0).0,
        }
    }

    fn last_activity(&self) -> Instant {
        lock(&self.state).last_activity
    }

    pub(crate) fn push(&self, event: RunEvent) {
        {
            let mut state = lock(&self.state);
            if state.done {
                return;
            }
            state.done = event.is_terminal();
            state.events.push(event);
            state.last_activity = Instant::now();
            state.last_seq = SEQ.fetch_add(1, Ordering::Relaxed);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Events from index `from` on.
    pub(crate) fn read_from(&self, from: usize) -> Vec<RunEvent> {
        let state = lock(&self.state);
        state
            .events
            .get(from..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    /// Whether the log holds its terminal event.
    pub(crate) fn is_done(&self) -> bool {
        lock(&self.state).done
    }

    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(org: &str) -> ConversationKey {
        ConversationKey::parse(org, "bot", "c1").unwrap()
    }

    #[test]
    fn nothing_is_recorded_after_the_terminal_event() {
        let hub = EventHub::new(Duration::from_secs(60));
        let run = RunId::generate();
        let log = hub.open(&key("acme"), &run, RunKind::Turn);
        log.push(RunEvent::Started { attempt: 1 });
        log.push(RunEvent::Completed { output: None });
        log.push(RunEvent::Failed {
            error: "late".to_owned(),
        });
        let log = hub.find(&OrgId::new("acme").unwrap(), &run).unwrap();
        assert!(log.is_done());
        assert_eq!(
            log.read_from(1),
            vec![
                RunEvent::Started { attempt: 1 },
                RunEvent::Completed { output: None }
            ]
        );
        assert!(matches!(log.read_from(0)[0], RunEvent::Accepted { .. }));
        assert_eq!(log.read_from(3), vec![]);
        assert_eq!(log.read_from(7), vec![]);
    }

    #[test]
    fn another_orgs_run_is_not_found() {
        let hub = EventHub::new(Duration::from_secs(60));
        let run = RunId::generate();
        hub.open(&key("acme"), &run, RunKind::Turn);
        assert!(hub.find(&OrgId::new("acme").unwrap(), &run).is_some());
        assert!(hub.find(&OrgId::new("evil").unwrap(), &run).is_none());
    }

    #[test]
    fn idle_logs_are_evicted_after_the_retention() {
        let hub = EventHub::new(Duration::ZERO);
        let old = RunId::generate();
        hub.open(&key("acme"), &old, RunKind::Turn);
        lock(&hub.state).last_sweep = Instant::now() - SWEEP_EVERY;
        hub.open(&key("acme"), &RunId::generate(), RunKind::Reset);
        assert!(hub.find(&OrgId::new("acme").unwrap(), &old).is_none());
        assert_eq!(hub.len(), 1);
    }

    #[test]
    fn an_unfinished_run_in_use_keeps_its_log_past_the_retention() {
        let hub = EventHub::new(Duration::ZERO);
        let org = OrgId::new("acme").unwrap();
        let (running, finished) = (RunId::generate(), RunId::generate());
        // The executing worker holds its run's log for as long as the turn runs.
        let executing = hub.open(&key("acme"), &running, RunKind::Turn);
        let done = hub.open(&key("acme"), &finished, RunKind::Turn);
        done.push(RunEvent::Completed { output: None });
        lock(&hub.state).last_sweep = Instant::now() - SWEEP_EVERY;
        hub.open(&key("acme"), &RunId::generate(), RunKind::Turn);
        assert!(
            hub.find(&org, &running).is_some(),
            "a quiet turn's log stays"
        );
        assert!(
            hub.find(&org, &finished).is_none(),
            "a finished run's log goes"
        );

        executing.push(RunEvent::Completed { output: None });
        drop(executing);
        lock(&hub.state).last_sweep = Instant::now() - SWEEP_EVERY;
        hub.open(&key("acme"), &RunId::generate(), RunKind::Turn);
        assert!(
            hub.find(&org, &running).is_none(),
            "once finished it ages out"
        );
        drop(done);
    }

    #[test]
    fn the_oldest_finished_logs_go_first_over_the_cap() {
        let hub = EventHub::new(Duration::from_secs(3600));
        let org = OrgId::new("acme").unwrap();
        let running = RunId::generate();
        hub.open(&key("acme"), &running, RunKind::Turn);
        let mut finished = Vec::new();
        for _ in 0..MAX_FINISHED_LOGS + 3 {
            let run = RunId::generate();
            hub.open(&key("acme"), &run, RunKind::Turn)
                .push(RunEvent::Completed { output: None });
            finished.push(run);
        }
        lock(&hub.state).last_sweep = Instant::now() - SWEEP_EVERY;
        hub.open(&key("acme"), &RunId::generate(), RunKind::Turn);
        assert!(hub.find(&org, &running).is_some(), "unfinished runs stay");
        for run in &finished[..3] {
            assert!(hub.find(&org, run).is_none());
        }
        assert!(hub.find(&org, &finished[3]).is_some());
        assert_eq!(hub.len(), MAX_FINISHED_LOGS + 2);
    }
}
