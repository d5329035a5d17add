//! The `LISTEN/NOTIFY` wake-up of `wait_for_work`: a hint that work may be claimable, never
//! the only way work is found (the caller polls, and the wait is capped by the poll interval).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// One listener task per store, started by the first `wait_for_work`, ended with the store.
#[derive(Debug)]
pub(crate) struct Wakeup {
    channel: String,
    notify: Arc<Notify>,
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
            task: Mutex::new(None),
        }
    }

    /// The NOTIFY channel writers signal (`<schema>_runs`).
    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// Wait for a notification or `max`, whichever comes first. Starts the listener if it
    /// is not running (the first call, or its runtime shut down under a shared store).
    pub(crate) async fn wait(&self, options: impl FnOnce() -> PgConnectOptions, max: Duration) {
        let notified = self.notify.notified();
        {
            let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
            if task.as_ref().is_none_or(JoinHandle::is_finished) {
                let listener = listen(options(), self.channel.clone(), self.notify.clone());
                *task = Some(tokio::spawn(listener));
            }
        }
        let _ = tokio::time::timeout(max, notified).await;
    }
}

/// Keep one `LISTEN` connection open, reconnecting with backoff; wake every waiter on each
/// notification and after every (re)connect, since notifications sent meanwhile are lost.
/// Failures are logged, never fatal: polling still delivers.
async fn listen(options: PgConnectOptions, channel: String, notify: Arc<Notify>) {
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
                    loop {
                        match listener.try_recv().await {
                            // Some: a notification; None: the connection dropped and was
                            // re-established, so anything sent in between was missed.
                            Ok(_) => notify.notify_waiters(),
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
