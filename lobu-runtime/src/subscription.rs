//! [`RunEvents`]: the stream [`Runtime::subscribe`](crate::Runtime::subscribe) returns, and
//! the one reader per followed run that fills its [`RunFeed`] from the store.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use futures::Stream;
use futures::stream::BoxStream;
use lobu_core::events::{EventPage, MAX_EVENTS_PER_READ};
use lobu_core::{Error, OrgId, Result, RunId, RunRecord};
use std::time::Instant;
use tokio::sync::watch;

use crate::events::{NumberedEvent, RunEvent};
use crate::hub::RunFeed;
use crate::runtime::Shared;

/// The events of one run after a point, then live ones, ending after the terminal event.
///
/// Every replica streams every run: events are stored by the backend under the executing
/// attempt's claim, and each replica has one reader per followed run, woken by the backend
/// ([`RunQueue::wait_for_run`](lobu_core::RunQueue::wait_for_run): PostgreSQL's `NOTIFY`,
/// the file store's watch of its directory) and, as a backstop, every
/// [`Settings::status_poll_interval`](crate::Settings::status_poll_interval). Subscribers of
/// one run share what that reader reads. A run removed by retention while followed ends the
/// stream without a terminal event.
pub struct RunEvents {
    inner: BoxStream<'static, NumberedEvent>,
    feed: Arc<RunFeed>,
}

impl fmt::Debug for RunEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunEvents").finish_non_exhaustive()
    }
}

impl Stream for RunEvents {
    type Item = NumberedEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<NumberedEvent>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl RunEvents {
    /// Follow `run` from seq `from` (0: from `accepted`).
    pub(crate) async fn follow(
        shared: &Arc<Shared>,
        org: &OrgId,
        run: &RunId,
        from: u64,
    ) -> Result<Self> {
        let feed = match shared.hub.find(org, run) {
            Some(feed) => feed,
            None => open_feed(shared, org, run).await?,
        };
        let reader = Reader {
            rx: feed.watch(),
            feed: feed.clone(),
            next: from,
            pending: VecDeque::new(),
            finished: false,
        };
        let inner = futures::stream::unfold(reader, |mut reader| async move {
            let event = reader.next().await?;
            Some((event, reader))
        });
        Ok(RunEvents {
            inner: Box::pin(inner),
            feed,
        })
    }

    /// The run's record as its terminal event was read from the store, once it was.
    pub(crate) fn final_record(&self) -> Option<RunRecord> {
        self.feed.final_record()
    }
}

/// Read the run's stored events and start its reader task; `NotFound` for an unknown run
/// or another org's. Round trips: one read (more for a run with over a thousand events).
async fn open_feed(shared: &Arc<Shared>, org: &OrgId, run: &RunId) -> Result<Arc<RunFeed>> {
    // Before the read: a change signalled from here on is not missed.
    let since = Instant::now();
    let page = read(shared, org, run, 0).await?;
    let Some(page) = page else {
        return Err(Error::not_found(format!("no run {run} in org {org}")));
    };
    let (feed, fresh) = shared.hub.insert(Arc::new(RunFeed::new(&page.record)));
    if fresh && !take(&feed, &page) {
        let task = fill(
            shared.clone(),
            Arc::downgrade(&feed),
            since,
            more_stored(&page),
        );
        tokio::spawn(task);
    }
    Ok(feed)
}

async fn read(shared: &Shared, org: &OrgId, run: &RunId, after: u64) -> Result<Option<EventPage>> {
    let queue = &shared.backend.queue;
    queue
        .read_events(org, run, after, MAX_EVENTS_PER_READ)
        .await
}

/// Whether the store holds events past the page (a page may stop short of its limit).
fn more_stored(page: &EventPage) -> bool {
    page.events
        .last()
        .is_some_and(|event| event.seq < page.last_seq)
}

/// Put a page's events into the feed; end it if the page ends the run. Whether it ended.
fn take(feed: &RunFeed, page: &EventPage) -> bool {
    let after = feed.next_seq().saturating_sub(1);
    let events = page.events.iter().filter_map(|stored| {
        let event = serde_json::from_str::<RunEvent>(&stored.data);
        match event {
            Ok(event) => Some(NumberedEvent {
                seq: stored.seq,
                attempt: stored.attempt,
                event,
            }),
            Err(error) => {
                tracing::warn!(seq = stored.seq, %error, "a stored run event is not one this runtime reads; skipped");
                None
            }
        }
    });
    feed.push(events.collect());
    if page.ends_the_run(after) && feed.next_seq() > page.last_seq {
        feed.end(Some(&page.record));
        return true;
    }
    false
}

/// The reader task: after each wake-up (or the backstop interval), read what is new; end
/// with the run, or when nobody follows it any more.
async fn fill(shared: Arc<Shared>, feed: Weak<RunFeed>, mut since: Instant, more: bool) {
    let poll_every = shared.settings.status_poll_interval;
    let mut full = more;
    let Some((org, run)) = feed.upgrade().map(|f| (f.org.clone(), f.run.clone())) else {
        return;
    };
    loop {
        if !full {
            // Holding only a weak reference while waiting: a feed nobody follows goes.
            let queue = &shared.backend.queue;
            queue.wait_for_run(&org, &run, since, poll_every).await;
        }
        let Some(live) = feed.upgrade() else { return };
        since = Instant::now();
        let after = live.next_seq().saturating_sub(1);
        match read(&shared, &live.org, &live.run, after).await {
            Ok(Some(page)) => {
                full = more_stored(&page);
                if take(&live, &page) {
                    shared.hub.remove(&live);
                    return;
                }
            }
            Ok(None) => {
                tracing::debug!(run = %live.run, "followed run no longer stored");
                live.end(None);
                shared.hub.remove(&live);
                return;
            }
            Err(error) => {
                full = false;
                tracing::warn!(run = %live.run, %error, "reading run events failed; will retry");
            }
        }
    }
}

struct Reader {
    feed: Arc<RunFeed>,
    rx: watch::Receiver<u64>,
    /// The next seq to hand out.
    next: u64,
    pending: VecDeque<NumberedEvent>,
    finished: bool,
}

impl Reader {
    async fn next(&mut self) -> Option<NumberedEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.finished |= event.event.is_terminal();
                return Some(event);
            }
            if self.finished {
                return None;
            }
            // Mark the current version seen before reading, so a push after the read still
            // wakes us.
            self.rx.borrow_and_update();
            let (new, done) = self.feed.read_from(self.next);
            if let Some(last) = new.last() {
                self.next = last.seq + 1;
                self.pending.extend(new);
                continue;
            }
            if done || self.rx.changed().await.is_err() {
                return None;
            }
        }
    }
}
