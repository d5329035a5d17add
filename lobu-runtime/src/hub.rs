//! The event hub: one [`RunFeed`] per run that someone here follows, shared by all its
//! subscribers, so a thousand streams of one run cost one reader of the store.
//!
//! A feed holds the run's events in seq order (index = seq: 0 is `accepted`), filled by one
//! reader task ([`crate::subscription`]) from the store, and directly by this process's
//! recorder when the run executes here (no read needed). It lives while subscribers hold it;
//! the hub only keeps a weak reference, so an unfollowed run costs nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use lobu_core::{OrgId, RunId, RunRecord};
use tokio::sync::watch;

use crate::events::{NumberedEvent, RunEvent};

/// How many entries the hub holds before it drops the ones whose feed is gone.
const SWEEP_ABOVE: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct EventHub {
    feeds: Mutex<HashMap<RunId, Weak<RunFeed>>>,
}

/// The events of one run known here, in seq order.
#[derive(Debug)]
pub(crate) struct RunFeed {
    pub(crate) org: OrgId,
    pub(crate) run: RunId,
    state: Mutex<FeedState>,
    /// Bumped on every change, so readers can await "something new".
    changed: watch::Sender<u64>,
}

#[derive(Debug)]
struct FeedState {
    /// `events[i].seq == i`.
    events: Vec<NumberedEvent>,
    /// The terminal event is in, or the run is gone: nothing more will come.
    done: bool,
    /// The record the terminal event was made from.
    record: Option<RunRecord>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a push or a flag: a poisoned lock still holds consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EventHub {
    /// The live feed of `run` if someone here follows it and it belongs to `org`.
    pub(crate) fn find(&self, org: &OrgId, run: &RunId) -> Option<Arc<RunFeed>> {
        let feeds = lock(&self.feeds);
        let feed = feeds.get(run)?.upgrade()?;
        (feed.org == *org).then_some(feed)
    }

    /// Register `feed`, unless a live one for its run got in first: that one is returned
    /// (and `feed` dropped), so a run has one feed here.
    pub(crate) fn insert(&self, feed: Arc<RunFeed>) -> (Arc<RunFeed>, bool) {
        let mut feeds = lock(&self.feeds);
        if let Some(existing) = feeds.get(&feed.run).and_then(Weak::upgrade) {
            return (existing, false);
        }
        if feeds.len() >= SWEEP_ABOVE {
            feeds.retain(|_, feed| feed.strong_count() > 0);
        }
        feeds.insert(feed.run.clone(), Arc::downgrade(&feed));
        (feed, true)
    }

    /// Stored events of `run`, numbered by the store: to its feed here, if any.
    pub(crate) fn offer(&self, run: &RunId, events: Vec<NumberedEvent>) {
        let feed = lock(&self.feeds).get(run).and_then(Weak::upgrade);
        if let Some(feed) = feed {
            feed.push(events);
        }
    }

    /// Events that are not stored (`store_events` off): numbered here, after what the feed
    /// has, and seen only by this process's subscribers.
    pub(crate) fn offer_unstored(&self, run: &RunId, attempt: u32, events: Vec<RunEvent>) {
        let feed = lock(&self.feeds).get(run).and_then(Weak::upgrade);
        if let Some(feed) = feed {
            let next = feed.next_seq();
            let numbered = events
                .into_iter()
                .zip(next..)
                .map(|(event, seq)| NumberedEvent {
                    seq,
                    attempt,
                    event,
                });
            feed.push(numbered.collect());
        }
    }

    /// Forget `feed`'s entry if it is still the registered one.
    pub(crate) fn remove(&self, feed: &Arc<RunFeed>) {
        let mut feeds = lock(&self.feeds);
        if feeds
            .get(&feed.run)
            .is_some_and(|known| std::ptr::eq(known.as_ptr(), Arc::as_ptr(feed)))
        {
            feeds.remove(&feed.run);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.feeds).len()
    }
}

impl RunFeed {
    /// A feed holding the run's `accepted` event (seq 0).
    pub(crate) fn new(record: &RunRecord) -> Self {
        let accepted = NumberedEvent {
            seq: 0,
            attempt: 0,
            event: RunEvent::accepted(record),
        };
        RunFeed {
            org: record.key.org.clone(),
            run: record.run.clone(),
            state: Mutex::new(FeedState {
                events: vec![accepted],
                done: false,
                record: None,
            }),
            changed: watch::channel(0).0,
        }
    }

    /// Append the events that continue the feed (seq = the next one); others are already
    /// here, or ahead of a gap a read will fill, and are skipped.
    pub(crate) fn push(&self, events: Vec<NumberedEvent>) {
        let mut added = false;
        {
            let mut state = lock(&self.state);
            for event in events {
                if state.done || event.seq != state.events.len() as u64 {
                    continue;
                }
                state.done = event.event.is_terminal();
                state.events.push(event);
                added = true;
            }
        }
        if added {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// End the feed with the terminal event `record` stands for, numbered after the events
    /// the feed holds (the caller has read them all), or without one if the run is gone.
    pub(crate) fn end(&self, record: Option<&RunRecord>) {
        {
            let mut state = lock(&self.state);
            if state.done {
                return;
            }
            state.record = record.cloned();
            if let Some(event) = record.and_then(RunEvent::from_record) {
                let seq = state.events.len() as u64;
                let attempt = record.map_or(0, |r| r.attempts);
                state.events.push(NumberedEvent {
                    seq,
                    attempt,
                    event,
                });
            }
            state.done = true;
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// The record the feed ended with, if it ended with the run.
    pub(crate) fn final_record(&self) -> Option<RunRecord> {
        lock(&self.state).record.clone()
    }

    /// The seq the next event will have.
    pub(crate) fn next_seq(&self) -> u64 {
        lock(&self.state).events.len() as u64
    }

    /// Events from seq `from` on, and whether the feed is over.
    pub(crate) fn read_from(&self, from: u64) -> (Vec<NumberedEvent>, bool) {
        let state = lock(&self.state);
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        let events = state.events.get(from..).map(<[_]>::to_vec);
        (events.unwrap_or_default(), state.done)
    }

    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use lobu_core::{ConversationKey, RunKind, RunStatus};

    use super::*;

    fn record(org: &str, status: RunStatus) -> RunRecord {
        RunRecord {
            run: RunId::generate(),
            key: ConversationKey::parse(org, "bot", "c1").unwrap(),
            kind: RunKind::Turn,
            status,
            attempts: 2,
            max_attempts: 3,
            error: None,
            output: None,
            payload: serde_json::json!({"text": "hi"}),
            created_at: SystemTime::now(),
            updated_at: SystemTime::now(),
        }
    }

    fn output(seq: u64, text: &str) -> NumberedEvent {
        NumberedEvent {
            seq,
            attempt: 1,
            event: RunEvent::Output {
                attempt: 1,
                text: text.to_owned(),
            },
        }
    }

    #[test]
    fn a_feed_keeps_seq_order_and_skips_what_it_has_or_cannot_place() {
        let feed = RunFeed::new(&record("acme", RunStatus::Running));
        feed.push(vec![output(1, "a"), output(2, "b")]);
        feed.push(vec![output(2, "b again"), output(4, "after a gap")]);
        feed.push(vec![output(3, "c")]);
        let (events, done) = feed.read_from(0);
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!((seqs, done), (vec![0, 1, 2, 3], false));
        assert!(matches!(events[0].event, RunEvent::Accepted { .. }));
        assert_eq!(feed.read_from(2).0, vec![output(2, "b"), output(3, "c")]);
        assert!(feed.read_from(9).0.is_empty());
    }

    #[test]
    fn the_terminal_event_comes_after_the_last_and_nothing_follows_it() {
        let mut finished = record("acme", RunStatus::Completed);
        finished.output = Some(serde_json::json!({"ok": true}));
        let feed = RunFeed::new(&finished);
        feed.push(vec![output(1, "a")]);
        feed.end(Some(&finished));
        feed.push(vec![output(2, "late")]);
        feed.end(Some(&finished));
        let (events, done) = feed.read_from(2);
        assert!(done);
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].seq, events[0].attempt), (2, 2));
        assert!(events[0].event.is_terminal());
    }

    #[test]
    fn another_orgs_run_is_not_found_and_dead_feeds_are_forgotten() {
        let hub = EventHub::default();
        let rec = record("acme", RunStatus::Running);
        let (feed, fresh) = hub.insert(Arc::new(RunFeed::new(&rec)));
        assert!(fresh);
        let (same, fresh) = hub.insert(Arc::new(RunFeed::new(&rec)));
        assert!(!fresh && Arc::ptr_eq(&feed, &same));
        assert!(hub.find(&OrgId::new("acme").unwrap(), &rec.run).is_some());
        assert!(hub.find(&OrgId::new("evil").unwrap(), &rec.run).is_none());
        drop((feed, same));
        assert!(hub.find(&OrgId::new("acme").unwrap(), &rec.run).is_none());
        for _ in 0..SWEEP_ABOVE + 1 {
            let feed = Arc::new(RunFeed::new(&record("acme", RunStatus::Running)));
            drop(hub.insert(feed));
        }
        assert!(hub.len() <= SWEEP_ABOVE + 1, "dead entries are swept");
    }
}
