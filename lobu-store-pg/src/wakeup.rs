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

    /// The echo of a notification with `payload` that a statement about to be sent will
    /// send: taken before the statement is sent, since the echo may come back before its
    /// answer. Mark it [`sent`](Echo::sent) once the statement did notify; dropped without
    /// that (an error, a statement that changed nothing), it is awaited no more.
    pub(crate) fn echo(&self, payload: String) -> Echo<'_> {
        let awaited = self.echoes.expect(&payload);
        Echo {
            echoes: &self.echoes,
            payload: awaited.then_some(payload),
        }
    }

    /// [`echo`](Self::echo) of a notification naming the run.
    pub(crate) fn run_echo(&self, run: &RunId) -> Echo<'_> {
        self.echo(run.as_str().to_owned())
    }

    /// [`echo`](Self::echo) of a run's `events:<run>` notification.
    pub(crate) fn events_echo(&self, run: &RunId) -> Echo<'_> {
        self.echo(format!("{EVENTS}{run}"))
    }

    /// A run this process submitted: wake the waiters for work here at once instead of
    /// after the notification's round trip.
    pub(crate) fn submitted(&self) {
        self.notify.notify_waiters();
    }

    /// A run changed by this process (a cancel, a strategy's cancellation): wake its
    /// followers and the waiters for work here at once (other replicas learn of it by the
    /// notification the write sent).
    pub(crate) fn run_changed(&self, run: &RunId) {
        self.runs.signal(run);
        self.notify.notify_waiters();
    }

    /// A run this process ended or handed back (complete, fail, release), or whose events it
    /// recorded (or whose steered message it took): wake its followers here. Not the waiters
    /// for work: the runtime that held the claim wakes its own claim loop, without losing the
    /// wake-up when the loop is mid-claim, and a second wake-up here would only cost an empty
    /// claim; events make nothing claimable.
    pub(crate) fn wake_followers(&self, run: &RunId) {
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

/// An awaited echo (see [`Wakeup::echo`]).
#[must_use = "mark the echo sent once its statement notified, or drop it"]
pub(crate) struct Echo<'a> {
    echoes: &'a Echoes,
    /// `None`: not awaited (nobody listened), or sent.
    payload: Option<String>,
}

impl Echo<'_> {
    /// The statement notified: its echo is dropped when it comes.
    pub(crate) fn sent(mut self) {
        self.payload = None;
    }
}

impl Drop for Echo<'_> {
    fn drop(&mut self) {
        if let Some(payload) = self.payload.take() {
            self.echoes.withdraw(&payload);
        }
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
    /// Since when `LISTEN` is in effect (`None`: not listening): a notification committed
    /// from then on comes back.
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

    /// Await the echo of `payload`, if the listener listens now (a statement sent from now
    /// on notifies it). Whether it is awaited.
    fn expect(&self, payload: &str) -> bool {
        let mut state = self.lock();
        if state.listening_since.is_none() {
            return false; // nobody listens: no echo will come
        }
        let now = Instant::now();
        if state.sent.len() >= ECHO_SWEEP_ABOVE {
            state
                .sent
                .retain(|_, (_, at)| now.duration_since(*at) < ECHO_TTL);
        }
        let entry = state.sent.entry(payload.to_owned()).or_insert((0, now));
        entry.0 += 1;
        entry.1 = now;
        true
    }

    /// Await one echo of `payload` fewer: its statement did not notify.
    fn withdraw(&self, payload: &str) {
        let sent = &mut self.lock().sent;
        if let Some((outstanding, _)) = sent.get_mut(payload) {
            *outstanding -= 1;
            if *outstanding == 0 {
                sent.remove(payload);
            }
        }
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

    fn listening() -> Echoes {
        let echoes = Echoes::default();
        echoes.listening(true);
        echoes
    }

    #[tokio::test]
    async fn the_echo_of_a_change_made_here_wakes_nobody_and_anothers_change_still_does() {
        let (work, runs, echoes) = (Notify::new(), RunSignals::new(), listening());
        let run = RunId::generate();
        assert!(echoes.expect(run.as_str()));
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
    fn an_echo_is_awaited_before_its_statement_answers_and_dropped_if_it_sent_nothing() {
        let wakeup = Wakeup::new("lobu_runs".to_owned());
        wakeup.echoes.listening(true);
        // The echo can come back before the statement's answer: awaited from before it.
        let echo = wakeup.echo("r1".to_owned());
        assert!(wakeup.echoes.take("r1"), "came back first");
        echo.sent();
        // A statement that failed or changed nothing sent no notification: another
        // replica's later one with the same payload must still wake.
        let echo = wakeup.echo("r1".to_owned());
        drop(echo);
        assert!(!wakeup.echoes.take("r1"));
        let echo = wakeup.events_echo(&RunId::new("r2").unwrap());
        echo.sent();
        assert!(wakeup.echoes.take("events:r2"));
    }

    #[test]
    fn an_echo_that_never_came_is_not_awaited_past_its_time() {
        let echoes = listening();
        assert!(echoes.expect("events:r1") && echoes.expect("events:r1"));
        assert!(echoes.take("events:r1"));
        assert!(!echoes.take("r1"), "another payload is no echo");
        std::thread::sleep(ECHO_TTL + Duration::from_millis(20));
        assert!(!echoes.take("events:r1"), "expired");
        assert!(!echoes.take("events:r1"), "and forgotten");
    }

    #[test]
    fn without_a_listener_no_echo_is_awaited_and_a_lost_one_forgets() {
        let echoes = Echoes::default();
        assert!(!echoes.expect("r1"), "nobody listens: nothing comes back");
        assert!(!echoes.take("r1"), "another replica's change of r1");
        echoes.listening(true);
        assert!(echoes.expect("r1"));
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
