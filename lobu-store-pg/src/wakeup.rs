//! The `LISTEN/NOTIFY` wake-ups of `wait_for_work` and `wait_for_run`: hints that work may
//! be claimable or a run changed, never the only way either is found (callers poll, and
//! waits are capped). A notification's payload is the run it is about (empty: a new run),
//! so only that run's followers wake, on every replica. A run's recorded events send
//! `events:<run>` (sql/record_events.sql), which wakes that run's followers and nobody
//! waiting for work: a run streams events many times a second, and they make nothing
//! claimable.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use lobu_core::{RunId, RunSignals};

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// One listener task per store, started by the first `wait_for_work`, ended with the store.
#[derive(Debug)]
pub(crate) struct Wakeup {
    channel: String,
    notify: Arc<Notify>,
    runs: Arc<RunSignals>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Wakeup {
    fn drop(&mut self) {
        let task = self.task.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.take() {
            task.abort();
        }
    }
}

impl Wakeup {
    pub(crate) fn new(channel: String) -> Self {
        Wakeup {
            channel,
            notify: Arc::new(Notify::new()),
            runs: Arc::default(),
            task: Mutex::new(None),
        }
    }

    /// The NOTIFY channel writers signal (`<schema>_runs`).
    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// A run changed by this process: wake its followers here at once (other replicas
    /// learn of it by the notification the write sent).
    pub(crate) fn run_changed(&self, run: &RunId) {
        self.runs.signal(run);
    }

    /// Wait for a notification or `max`, whichever comes first.
    pub(crate) async fn wait(&self, options: impl FnOnce() -> PgConnectOptions, max: Duration) {
        let notified = self.notify.notified();
        self.listening(options);
        let _ = tokio::time::timeout(max, notified).await;
    }

    /// Wait until `run` is notified after `since`, or `max`.
    pub(crate) async fn wait_for_run(
        &self,
        options: impl FnOnce() -> PgConnectOptions,
        run: &RunId,
        since: Instant,
        max: Duration,
    ) {
        self.listening(options);
        self.runs.wait(run, since, max).await;
    }

    /// Start the listener if it is not running (the first call, or its runtime shut down
    /// under a shared store).
    fn listening(&self, options: impl FnOnce() -> PgConnectOptions) {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if task.as_ref().is_none_or(JoinHandle::is_finished) {
            let listener = listen(
                options(),
                self.channel.clone(),
                self.notify.clone(),
                self.runs.clone(),
            );
            *task = Some(tokio::spawn(listener));
        }
    }
}

/// The payload prefix of a run's recorded events (sql/record_events.sql sends
/// `'events:' || run`).
const EVENTS: &str = "events:";

/// Wake whoever a notification with `payload` concerns: the followers of the run it names,
/// and the waiters for work unless it only announces events.
fn wake(payload: &str, work: &Notify, runs: &RunSignals) {
    if let Some(run) = payload.strip_prefix(EVENTS) {
        if let Ok(run) = RunId::new(run) {
            runs.signal(&run);
        }
        return;
    }
    work.notify_waiters();
    if let Ok(run) = RunId::new(payload) {
        runs.signal(&run);
    }
}

/// Keep one `LISTEN` connection open, reconnecting with backoff; wake every waiter for work
/// on each notification but a run's events ([`wake`]), the followers of the run a payload
/// names, and everyone after every (re)connect, since notifications sent meanwhile are lost.
/// Failures are logged, never fatal: polling still delivers.
async fn listen(
    options: PgConnectOptions,
    channel: String,
    notify: Arc<Notify>,
    runs: Arc<RunSignals>,
) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(options);
    let mut backoff = Duration::from_millis(100);
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => match listener.listen(&channel).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    notify.notify_waiters();
                    runs.signal_all();
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(notification)) => {
                                wake(notification.payload(), &notify, &runs);
                            }
                            // The connection dropped and was re-established: anything sent
                            // in between was missed.
                            Ok(None) => {
                                notify.notify_waiters();
                                runs.signal_all();
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, %channel, "LISTEN connection failed; polling until it is back");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, %channel, "LISTEN failed; polling instead"),
            },
            Err(e) => tracing::debug!(error = %e, %channel, "cannot open the LISTEN connection"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_events_payload_wakes_the_runs_followers_and_no_waiter_for_work() {
        let (work, runs) = (Notify::new(), RunSignals::new());
        let run = RunId::generate();
        let since = Instant::now();
        let waiting = work.notified();
        tokio::pin!(waiting);
        waiting.as_mut().enable();
        wake(&format!("events:{run}"), &work, &runs);
        let woken = Duration::from_millis(50);
        assert!(tokio::time::timeout(woken, waiting.as_mut()).await.is_err());
        let started = Instant::now();
        runs.wait(&run, since, Duration::from_secs(10)).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the follower woke"
        );
        // Any other payload wakes the waiters for work too.
        wake(run.as_str(), &work, &runs);
        assert!(tokio::time::timeout(woken, waiting).await.is_ok());
    }

    #[test]
    fn the_record_statement_sends_the_events_prefix() {
        let statement = include_str!("sql/record_events.sql");
        assert!(statement.contains(&format!("'{EVENTS}' || run.id")));
    }
}
