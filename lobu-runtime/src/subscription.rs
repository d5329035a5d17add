//! [`RunEvents`]: the stream [`Runtime::subscribe`](crate::Runtime::subscribe) returns.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::stream::BoxStream;
use lobu_core::{OrgId, RunId, RunQueue, RunRecord};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::events::RunEvent;
use crate::hub::RunLog;

/// The events of one run, replayed from the start, then live, ending after the terminal
/// event.
///
/// Events of an attempt running in this process arrive live. An attempt running on another
/// replica cannot be streamed here: the stream asks the queue when the backend signals that
/// the run changed ([`RunQueue::wait_for_run`]; PostgreSQL's `NOTIFY` reaches every replica)
/// and whenever the run has been quiet here for
/// [`Settings::status_poll_interval`](crate::Settings::status_poll_interval), and ends with
/// the terminal event the run record stands for. A run removed by
/// [`RunQueue::prune_runs`] while followed ends the stream without a terminal event.
pub struct RunEvents {
    inner: BoxStream<'static, RunEvent>,
}

impl fmt::Debug for RunEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunEvents").finish_non_exhaustive()
    }
}

impl Stream for RunEvents {
    type Item = RunEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RunEvent>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl RunEvents {
    /// Follow a run: `log` is this process's log of it, if any; `record` its queue record
    /// when the caller already read it; `since` when the caller began looking (a change
    /// signalled after it is not missed).
    pub(crate) fn follow(
        queue: Arc<dyn RunQueue>,
        org: OrgId,
        run: RunId,
        log: Option<Arc<RunLog>>,
        record: Option<&RunRecord>,
        poll_every: Duration,
        since: Instant,
    ) -> Self {
        let mut pending = VecDeque::new();
        if log.is_none()
            && let Some(record) = record
        {
            pending.push_back(RunEvent::accepted(record));
            pending.extend(RunEvent::from_record(record));
        }
        let follower = Follower {
            queue,
            org,
            run,
            rx: log.as_ref().map(|log| log.watch()),
            log,
            cursor: 0,
            pending,
            finished: false,
            poll_every,
            next_poll: Instant::now() + poll_every,
            polled_at: since,
        };
        let inner = futures::stream::unfold(follower, |mut f| async move {
            let event = f.next().await?;
            Some((event, f))
        });
        RunEvents {
            inner: Box::pin(inner),
        }
    }
}

struct Follower {
    queue: Arc<dyn RunQueue>,
    org: OrgId,
    run: RunId,
    log: Option<Arc<RunLog>>,
    rx: Option<watch::Receiver<u64>>,
    cursor: usize,
    pending: VecDeque<RunEvent>,
    finished: bool,
    poll_every: Duration,
    next_poll: Instant,
    /// When the last status read began: a signal after it means the run may have changed.
    polled_at: Instant,
}

impl Follower {
    async fn next(&mut self) -> Option<RunEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.finished |= event.is_terminal();
                return Some(event);
            }
            if self.finished {
                return None;
            }
            if let Some(log) = &self.log {
                // Mark the current version seen before reading, so an append that lands
                // after the read still wakes us.
                if let Some(rx) = &mut self.rx {
                    rx.borrow_and_update();
                }
                let new = log.read_from(self.cursor);
                if !new.is_empty() {
                    self.cursor += new.len();
                    self.pending.extend(new);
                    // The run is alive here: the queue need not be asked while it talks.
                    self.next_poll = Instant::now() + self.poll_every;
                    continue;
                }
            }
            let wait = self.next_poll.saturating_duration_since(Instant::now());
            let since = self.polled_at.into_std();
            let signalled = self.queue.wait_for_run(&self.org, &self.run, since, wait);
            tokio::select! {
                () = log_changed(&mut self.rx) => continue,
                () = signalled => {}
            }
            if self.log.is_some() && Instant::now() < self.next_poll {
                // Signalled with a log here: if the run executes here its own events are
                // a moment away, and the queue need not be asked.
                tokio::select! {
                    () = log_changed(&mut self.rx) => continue,
                    () = tokio::time::sleep(LOCAL_GRACE) => {}
                }
            }
            self.poll().await;
        }
    }

    async fn poll(&mut self) {
        self.polled_at = Instant::now();
        self.next_poll = self.polled_at + self.poll_every;
        match self.queue.status(&self.org, &self.run).await {
            Ok(Some(record)) => {
                if let Some(event) = RunEvent::from_record(&record) {
                    match &self.log {
                        // Into the log, so every subscriber here ends; ignored if the local
                        // worker already recorded the end.
                        Some(log) => log.push(event),
                        None => self.pending.push_back(event),
                    }
                }
            }
            Ok(None) => {
                tracing::debug!(run = %self.run, "followed run no longer on the queue");
                self.finished = true;
            }
            Err(error) => {
                tracing::warn!(run = %self.run, %error, "polling run status failed; will retry");
            }
        }
    }
}

/// How long a follower with a local log waits for the run's own events after a signal
/// before it asks the queue.
const LOCAL_GRACE: Duration = Duration::from_millis(5);

/// Something new in the local log; never, without one (the sender lives in the log we hold,
/// so it only closes with the log).
async fn log_changed(rx: &mut Option<watch::Receiver<u64>>) {
    match rx {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}
