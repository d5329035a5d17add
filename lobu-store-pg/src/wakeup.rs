//! The `LISTEN/NOTIFY` wake-ups of `wait_for_work` and `wait_for_run`: hints that work may
//! be claimable or a run changed, never the only way either is found (callers poll, and
//! waits are capped). A notification's payload is the run it is about (empty: a new run),
//! so only that run's followers wake, on every replica. A run's recorded events send
//! `events:<run>` (sql/record_events.sql), which wakes that run's followers and nobody
//! waiting for work: a run streams events many times a second, and they make nothing
//! claimable.
//!
//! A change this process makes wakes its waiters here at once (no round trip through the
//! server), and the server's echo of that change's notification is then dropped
//! ([`Echoes`]): one change costs this process one read and at most one claim, not two.

use std::collections::HashMap;
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
    echoes: Arc<Echoes>,
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
            echoes: Arc::default(),
            task: Mutex::new(None),
        }
    }

    /// The NOTIFY channel writers signal (`<schema>_runs`).
    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// A run this process submitted (its statement sent the run id): wake the waiters for
    /// work here at once instead of after the notification's round trip.
    ///
    /// `sent` (here and below) is when the statement that notified was sent: only if this
    /// store was listening before then does its echo come, and only then is it dropped.
    pub(crate) fn submitted(&self, run: &RunId, sent: Instant) {
        self.echoes.expect(run.as_str().to_owned(), sent);
        self.notify.notify_waiters();
    }

    /// A run changed by this process (a cancel, a strategy's cancellation; the statement sent
    /// the run id): wake its followers and the waiters for work here at once (other
    /// replicas learn of it by the notification the write sent).
    pub(crate) fn run_changed(&self, run: &RunId, sent: Instant) {
        self.echoes.expect(run.as_str().to_owned(), sent);
        self.runs.signal(run);
        self.notify.notify_waiters();
    }

    /// A run its claim holder here ended or handed back (complete, fail, release; the
    /// statement sent the run id): wake its followers. Not the waiters for work: the
    /// runtime that held the claim wakes its own claim loop, without losing the wake-up
    /// when the loop is mid-claim, and a second wake-up here would only cost an empty claim.
    pub(crate) fn run_ended_here(&self, run: &RunId, sent: Instant) {
        self.echoes.expect(run.as_str().to_owned(), sent);
        self.runs.signal(run);
    }

    /// Events of a run recorded (or a steered run taken) by this process; the statement sent
    /// `events:<run>`: wake the run's followers here.
    pub(crate) fn events_changed(&self, run: &RunId, sent: Instant) {
        self.echoes.expect(format!("{EVENTS}{run}"), sent);
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
                self.echoes.clone(),
            );
            *task = Some(tokio::spawn(listener));
        }
    }
}

/// The payload prefix of a run's recorded events (sql/record_events.sql sends
/// `'events:' || run`).
const EVENTS: &str = "events:";

/// Wake whoever a notification with `payload` concerns: the followers of the run it names,
/// and the waiters for work unless it only announces events. The echo of a change this
/// process already woke everyone for wakes nobody.
fn wake(payload: &str, work: &Notify, runs: &RunSignals, echoes: &Echoes) {
    if echoes.take(payload) {
        return;
    }
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
    echoes: Arc<Echoes>,
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
                    echoes.listening(true);
                    notify.notify_waiters();
                    runs.signal_all();
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(notification)) => {
                                wake(notification.payload(), &notify, &runs, &echoes);
                            }
                            // The connection dropped and was re-established: anything sent
                            // in between was missed.
                            Ok(None) => {
                                echoes.listening(false);
                                echoes.listening(true);
                                notify.notify_waiters();
                                runs.signal_all();
                            }
                            Err(e) => {
                                echoes.listening(false);
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

/// How long a sent notification's echo is waited for. An echo normally arrives within
/// milliseconds; one that never comes (the write changed nothing, the connection dropped)
/// must not swallow another replica's notification with the same payload for long.
const ECHO_TTL: Duration = Duration::from_secs(1);
/// Entries above which expired ones are swept.
const ECHO_SWEEP_ABOVE: usize = 256;

/// Notifications this process sent whose wake-ups it already did here, by payload, with how
/// many are outstanding and when the newest was sent; and since when the listener listens.
#[derive(Debug, Default)]
struct Echoes {
    state: Mutex<EchoState>,
}

#[derive(Debug, Default)]
struct EchoState {
    sent: HashMap<String, (u32, Instant)>,
    /// Since when `LISTEN` is in effect (`None`: not listening). A notification committed
    /// after that comes back; one sent before may not.
    listening_since: Option<Instant>,
}

impl Echoes {
    fn lock(&self) -> std::sync::MutexGuard<'_, EchoState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The listener's connection listens from now on (`true`), or was lost (`false`):
    /// echoes awaited across a reconnect may never come, so they are forgotten.
    fn listening(&self, listening: bool) {
        let mut state = self.lock();
        state.sent.clear();
        state.listening_since = listening.then(Instant::now);
    }

    fn expect(&self, payload: String, sent: Instant) {
        let mut state = self.lock();
        if state.listening_since.is_none_or(|since| since > sent) {
            return; // its notification may have been missed: no echo to drop
        }
        let now = Instant::now();
        if state.sent.len() >= ECHO_SWEEP_ABOVE {
            state
                .sent
                .retain(|_, (_, at)| now.duration_since(*at) < ECHO_TTL);
        }
        let entry = state.sent.entry(payload).or_insert((0, now));
        entry.0 += 1;
        entry.1 = now;
    }

    /// Whether `payload` is the echo of a notification this process sent (and count it
    /// received).
    fn take(&self, payload: &str) -> bool {
        let sent = &mut self.lock().sent;
        let Some((outstanding, at)) = sent.get_mut(payload) else {
            return false;
        };
        if at.elapsed() >= ECHO_TTL {
            sent.remove(payload);
            return false;
        }
        *outstanding -= 1;
        if *outstanding == 0 {
            sent.remove(payload);
        }
        true
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
        let echoes = Echoes::default();
        wake(&format!("events:{run}"), &work, &runs, &echoes);
        let woken = Duration::from_millis(50);
        assert!(tokio::time::timeout(woken, waiting.as_mut()).await.is_err());
        let started = Instant::now();
        runs.wait(&run, since, Duration::from_secs(10)).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the follower woke"
        );
        // Any other payload wakes the waiters for work too.
        wake(run.as_str(), &work, &runs, &echoes);
        assert!(tokio::time::timeout(woken, waiting).await.is_ok());
    }

    #[tokio::test]
    async fn the_echo_of_a_change_made_here_wakes_nobody_and_anothers_change_still_does() {
        let (work, runs, echoes) = (Notify::new(), RunSignals::new(), Echoes::default());
        let run = RunId::generate();
        echoes.listening(true);
        echoes.expect(run.as_str().to_owned(), Instant::now());
        let waiting = work.notified();
        tokio::pin!(waiting);
        waiting.as_mut().enable();
        wake(run.as_str(), &work, &runs, &echoes);
        let woken = Duration::from_millis(50);
        assert!(tokio::time::timeout(woken, waiting.as_mut()).await.is_err());
        // The same payload again is another replica's change of the run: it wakes.
        wake(run.as_str(), &work, &runs, &echoes);
        assert!(tokio::time::timeout(woken, waiting).await.is_ok());
    }

    #[test]
    fn an_echo_that_never_came_is_not_awaited_past_its_time() {
        let echoes = Echoes::default();
        echoes.listening(true);
        echoes.expect("events:r1".to_owned(), Instant::now());
        echoes.expect("events:r1".to_owned(), Instant::now());
        assert!(echoes.take("events:r1"));
        assert!(!echoes.take("r1"), "another payload is no echo");
        std::thread::sleep(ECHO_TTL + Duration::from_millis(20));
        assert!(!echoes.take("events:r1"), "expired");
        assert!(!echoes.take("events:r1"), "and forgotten");
    }

    #[test]
    fn a_change_sent_before_the_listener_listened_awaits_no_echo() {
        let echoes = Echoes::default();
        let sent = Instant::now();
        echoes.expect("r1".to_owned(), sent);
        assert!(
            !echoes.take("r1"),
            "not listening: another replica's change of r1"
        );
        std::thread::sleep(Duration::from_millis(2));
        echoes.listening(true);
        echoes.expect("r1".to_owned(), sent);
        assert!(
            !echoes.take("r1"),
            "sent before LISTEN: its echo may never come"
        );
        echoes.expect("r1".to_owned(), Instant::now());
        echoes.listening(false);
        assert!(
            !echoes.take("r1"),
            "a lost connection forgets what it awaited"
        );
    }

    #[test]
    fn the_record_statement_sends_the_events_prefix() {
        let statement = include_str!("sql/record_events.sql");
        assert!(statement.contains(&format!("'{EVENTS}' || run.id")));
    }
}
