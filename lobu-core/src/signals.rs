//! [`RunSignals`]: wake-ups for followers of runs that execute elsewhere.
//!
//! A client waiting for a run that another replica (or another runtime on the same store)
//! executes has no live events here; without a signal it can only ask the queue again after
//! a poll interval. A backend that learns a run changed (its own write, or a notification
//! from another replica such as PostgreSQL's `NOTIFY`) calls [`RunSignals::signal`], and
//! [`RunQueue::wait_for_run`](crate::RunQueue::wait_for_run) waits on
//! [`RunSignals::wait`]. A signal is a hint: the waiter still reads the run's status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::RunId;

/// How many runs' signals are kept before old ones nobody waits for are swept.
const SWEEP_ABOVE: usize = 4096;

/// How long a signal nobody waits for is kept, for a follower that read the run's status
/// just before the signal and is about to wait.
const KEEP_UNWAITED: Duration = Duration::from_secs(30);

/// Per-run signals with "since" semantics: a wait that starts after a signal it has not
/// seen returns at once, so no signal is lost between reading a run's status and waiting.
#[derive(Debug, Default)]
pub struct RunSignals {
    runs: Mutex<HashMap<RunId, Signal>>,
}

#[derive(Debug)]
struct Signal {
    /// When the run was last signalled (`None`: only waited on so far).
    at: Option<Instant>,
    notify: Arc<Notify>,
}

impl RunSignals {
    /// No signals yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The run may have changed: wake its waiters, and any wait that starts later with an
    /// earlier `since`.
    pub fn signal(&self, run: &RunId) {
        let now = Instant::now();
        let mut runs = self.lock();
        if runs.len() >= SWEEP_ABOVE {
            sweep(&mut runs, now);
        }
        let signal = runs.entry(run.clone()).or_insert_with(|| Signal {
            at: None,
            notify: Arc::new(Notify::new()),
        });
        signal.at = Some(now);
        signal.notify.notify_waiters();
    }

    /// Every run may have changed (a notification channel was lost and re-established, so
    /// signals sent meanwhile are gone): wake every waiter.
    pub fn signal_all(&self) {
        let now = Instant::now();
        for signal in self.lock().values_mut() {
            signal.at = Some(now);
            signal.notify.notify_waiters();
        }
    }

    /// Wait until `run` is signalled after `since`, or `max` passes. Returns at once if it
    /// was signalled after `since` already.
    pub async fn wait(&self, run: &RunId, since: Instant, max: Duration) {
        let notify = {
            let mut runs = self.lock();
            let signal = runs.entry(run.clone()).or_insert_with(|| Signal {
                at: None,
                notify: Arc::new(Notify::new()),
            });
            if signal.at.is_some_and(|at| at > since) {
                return;
            }
            signal.notify.clone()
        };
        let notified = notify.notified();
        let _ = tokio::time::timeout(max, notified).await;
        // Waiting left an entry behind; it goes with the next sweep once nobody holds it.
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RunId, Signal>> {
        // Every update is a single assignment: a poisoned map is still consistent.
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Drop the signals nobody waits for that are older than [`KEEP_UNWAITED`].
fn sweep(runs: &mut HashMap<RunId, Signal>, now: Instant) {
    runs.retain(|_, signal| {
        let waited = Arc::strong_count(&signal.notify) > 1;
        let recent = signal
            .at
            .is_some_and(|at| now.duration_since(at) < KEEP_UNWAITED);
        waited || recent
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signal_wakes_a_waiter_of_that_run_only() {
        let signals = Arc::new(RunSignals::new());
        let (a, b) = (RunId::generate(), RunId::generate());
        let since = Instant::now();
        let waiter = {
            let (signals, a) = (signals.clone(), a.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                signals.wait(&a, since, Duration::from_secs(30)).await;
                started.elapsed()
            })
        };
        let other = {
            let (signals, b) = (signals.clone(), b.clone());
            tokio::spawn(async move {
                signals.wait(&b, since, Duration::from_millis(300)).await;
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let signalled_at = Instant::now();
        signals.signal(&a);
        let waited = waiter.await.unwrap();
        assert!(waited < Duration::from_secs(10), "woken by the signal");
        let other_done = other.await.unwrap();
        assert!(
            other_done.duration_since(signalled_at) >= Duration::from_millis(200),
            "the other run's waiter slept its whole wait"
        );
    }

    #[tokio::test]
    async fn a_signal_before_the_wait_but_after_since_is_not_lost() {
        let signals = RunSignals::new();
        let run = RunId::generate();
        let since = Instant::now();
        signals.signal(&run);
        let started = Instant::now();
        signals.wait(&run, since, Duration::from_secs(30)).await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_signal_older_than_since_does_not_end_the_wait() {
        let signals = RunSignals::new();
        let run = RunId::generate();
        signals.signal(&run);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let started = Instant::now();
        signals
            .wait(&run, Instant::now(), Duration::from_millis(100))
            .await;
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn signal_all_wakes_every_waiter() {
        let signals = Arc::new(RunSignals::new());
        let since = Instant::now();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let signals = signals.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let run = RunId::generate();
                    signals.wait(&run, since, Duration::from_secs(30)).await;
                    started.elapsed()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        signals.signal_all();
        for waiter in waiters {
            assert!(waiter.await.unwrap() < Duration::from_secs(10));
        }
    }

    #[test]
    fn old_signals_nobody_waits_for_are_swept() {
        let signals = RunSignals::new();
        let mut runs = signals.lock();
        let long_ago = Instant::now()
            .checked_sub(KEEP_UNWAITED * 2)
            .unwrap_or_else(Instant::now);
        for _ in 0..SWEEP_ABOVE {
            runs.insert(
                RunId::generate(),
                Signal {
                    at: Some(long_ago),
                    notify: Arc::new(Notify::new()),
                },
            );
        }
        drop(runs);
        let fresh = RunId::generate();
        signals.signal(&fresh);
        assert_eq!(signals.len(), 1, "only the fresh signal is left");
    }
}
