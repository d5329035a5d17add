//! [`EventRecorder`]: stores what one attempt does as run events, coalesced, under its claim.
//!
//! Output arrives a few characters at a time; storing each piece would cost a write per
//! token. The recorder keeps what arrived and stores it in batches: output at once when
//! nothing was stored for [`COALESCE`] (so the first output of a turn leaves at once), else
//! when that window is over or [`BATCH_BYTES`] are waiting, with consecutive output pieces
//! joined into one event; other events wait for the next batch (at most one window). One background task per attempt does the writes, so the agent never waits on
//! the store; [`finish`](EventRecorder::finish) stores the rest before the turn commits
//! (events are refused once the run has ended). Round trips: one `record_events` per batch;
//! a quick turn costs one, at its end.
//!
//! Past [`Settings::max_event_bytes`](crate::Settings::max_event_bytes) stored by the
//! attempt, output is still streamed but stored coalesced: one batch per
//! [`OVER_CAP_WINDOW`], whatever its size, so a runaway stream costs a row a second.

use std::mem;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lobu_core::{Claim, ErrorKind};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::events::{NumberedEvent, RunEvent};
use crate::execute::bounded;
use crate::instruments::{self, FirstOutput};
use crate::metrics::bump;
use crate::runtime::Shared;

/// The longest output waits before it is stored (unless the store is slower).
pub(crate) const COALESCE: Duration = Duration::from_millis(50);
/// The window past [`Settings::max_event_bytes`](crate::Settings::max_event_bytes): output
/// keeps coming, one stored event per second.
pub(crate) const OVER_CAP_WINDOW: Duration = Duration::from_secs(1);
/// How many waiting bytes are stored at once, window or not.
pub(crate) const BATCH_BYTES: usize = 4 * 1024;

/// The events of one attempt on their way to the store.
pub(crate) struct EventRecorder {
    shared: Arc<Shared>,
    claim: Claim,
    state: Mutex<Waiting>,
    wake: Notify,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    first_output: FirstOutput,
}

#[derive(Default)]
struct Waiting {
    events: Vec<RunEvent>,
    /// When the oldest waiting event arrived.
    since: Option<Instant>,
    bytes: usize,
    /// Bytes stored by this attempt so far.
    stored: usize,
    /// No more events are taken; the task stores what waits and ends.
    closing: bool,
    /// The attempt lost its claim: nothing more can be stored.
    fenced: bool,
}

fn lock(m: &Mutex<Waiting>) -> MutexGuard<'_, Waiting> {
    // Every update is a push or a flag: a poisoned lock still holds consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The size an event adds to a batch (its text or entry), for the batch and the cap.
fn weight(event: &RunEvent) -> usize {
    match event {
        RunEvent::Output { text, .. } => text.len(),
        RunEvent::Entry { entry, .. } => entry.to_string().len(),
        _ => 64,
    }
}

impl EventRecorder {
    /// A recorder for `claim`'s attempt, with its writer task running.
    pub(crate) fn start(
        shared: &Arc<Shared>,
        claim: &Claim,
        first_output: FirstOutput,
    ) -> Arc<Self> {
        let recorder = Arc::new(EventRecorder {
            shared: shared.clone(),
            claim: claim.clone(),
            state: Mutex::new(Waiting::default()),
            wake: Notify::new(),
            task: Mutex::new(None),
            first_output,
        });
        let task = tokio::spawn(recorder.clone().write_loop());
        *recorder.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        recorder
    }

    /// Take an event of the attempt; ignored after [`finish`](Self::finish).
    pub(crate) fn push(&self, event: RunEvent) {
        let mut waiting = lock(&self.state);
        if waiting.closing || waiting.fenced {
            return;
        }
        if matches!(event, RunEvent::Output { .. }) {
            self.first_output.output();
        }
        waiting.bytes += weight(&event);
        waiting.since.get_or_insert_with(Instant::now);
        if let RunEvent::Output { text, .. } = &event
            && let Some(RunEvent::Output { text: last, .. }) = waiting.events.last_mut()
        {
            last.push_str(text);
        } else {
            waiting.events.push(event);
        }
        drop(waiting);
        self.wake.notify_one();
    }

    /// Store everything taken so far and stop taking events. Returns when it is stored (or
    /// could not be).
    pub(crate) async fn finish(&self) {
        lock(&self.state).closing = true;
        self.wake.notify_one();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Store one event now, after [`finish`](Self::finish) (a retry announcement).
    pub(crate) async fn record_now(&self, event: RunEvent) {
        if !lock(&self.state).fenced {
            self.store(vec![event]).await;
        }
    }

    async fn write_loop(self: Arc<Self>) {
        let mut last_store: Option<Instant> = None;
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (empty, closing, due) = {
                let waiting = lock(&self.state);
                let over_cap = waiting.stored >= self.shared.settings.max_event_bytes;
                // Output is what a reader waits for: the first leaves at once. Other events
                // (`started`, entries) ride along with the next output or the attempt's end,
                // so a quick turn stores its events in one write.
                let has_output = waiting
                    .events
                    .iter()
                    .any(|e| matches!(e, RunEvent::Output { .. }));
                let due = match last_store {
                    // Past the cap: still streamed, but stored at most once per window.
                    _ if over_cap => {
                        Some(last_store.unwrap_or_else(Instant::now) + OVER_CAP_WINDOW)
                    }
                    _ if waiting.bytes >= BATCH_BYTES => None,
                    None if has_output => None,
                    Some(at) if has_output => Some(at + COALESCE),
                    _ => waiting.since.map(|since| since + COALESCE),
                };
                let done = waiting.fenced;
                (waiting.events.is_empty() || done, waiting.closing, due)
            };
            if empty {
                if closing {
                    return;
                }
                notified.await;
                continue;
            }
            if !closing && let Some(due) = due.filter(|due| *due > Instant::now()) {
                tokio::select! {
                    () = &mut notified => continue,
                    () = tokio::time::sleep_until(due) => {}
                }
            }
            let batch = {
                let mut waiting = lock(&self.state);
                waiting.bytes = 0;
                waiting.since = None;
                mem::take(&mut waiting.events)
            };
            last_store = Some(Instant::now());
            self.store(batch).await;
        }
    }

    /// Store `batch` (one round trip) and hand it, numbered, to this process's subscribers.
    async fn store(&self, batch: Vec<RunEvent>) {
        let shared = &self.shared;
        let attempt = self.claim.attempt;
        if !shared.settings.store_events {
            shared.hub.offer_unstored(&self.claim.run, attempt, batch);
            return;
        }
        // Events are plain data (strings, numbers, JSON values): encoding cannot fail.
        let encoded: Vec<(RunEvent, String)> = batch
            .into_iter()
            .filter_map(|event| Some((serde_json::to_string(&event).ok()?, event)))
            .map(|(json, event)| (event, json))
            .collect();
        let (batch, data): (Vec<RunEvent>, Vec<String>) = encoded.into_iter().unzip();
        let bytes: usize = data.iter().map(String::len).sum();
        let call = shared.backend.queue.record_events(&self.claim, &data);
        match bounded(shared, "recording run events", call).await {
            Ok(last) => {
                lock(&self.state).stored += bytes;
                let first = last + 1 - batch.len() as u64;
                let numbered = batch
                    .into_iter()
                    .zip(first..)
                    .map(|(event, seq)| NumberedEvent {
                        seq,
                        attempt,
                        event,
                    });
                shared.hub.offer(&self.claim.run, numbered.collect());
            }
            Err(error) if error.is(ErrorKind::Fenced) => {
                tracing::info!("this attempt may no longer record events: {error}");
                lock(&self.state).fenced = true;
            }
            Err(error) => {
                bump(&shared.counters.events_lost);
                instruments::events_lost(batch.len() as u64);
                tracing::warn!(%error, events = batch.len(), "recording run events failed; they are not stored");
            }
        }
    }
}
