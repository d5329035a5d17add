//! Wake-ups across processes: a follower of a run in one process returns from
//! [`wait_for_run`](lobu_core::RunQueue::wait_for_run) within milliseconds of another process
//! (or another [`FileStore`] on the same root) recording the run's events or changing it.
//!
//! Every such change touches one of the run's two files: an append writes its event log
//! (`events/<run>`), and a claim, heartbeat, completion, failure or release appends to its
//! record (`queue/runs/<run>`, or replaces it when it grew too big); a steer submit bumps the modification
//! time of the running run's record (its followers' hint that a message waits). One [`notify`] watcher per store (inotify
//! on Linux, the platform's equivalent elsewhere) watches both directories, started when a
//! follower first waits; its thread maps each changed path back to its run and signals the
//! store's [`RunSignals`](lobu_core::RunSignals), which the waits use. This process's own
//! changes signal at once, without it. Opening and reading files signals nothing, so
//! followers reading the log do not wake each other.
//!
//! The same watcher wakes this process's [`wait_for_work`](lobu_core::RunQueue::wait_for_work)
//! callers when another process queues a run or makes one claimable: a marker created or
//! renamed to a pending name in `queue/active/`, or one removed (a finished run's: its
//! conversation's next run may be claimable). A claim's rename of a marker to a running name
//! wakes nobody. Workers start the watcher on their first wait for work; without one they
//! poll (see [`FileStore::with_poll_interval`]).
//!
//! A change made before the watcher started is caught by the run's files' modification
//! times, which that first wait compares with its `since`. Where no watcher can be started
//! (the per-user inotify limit is reached, or the platform has none), waits fall back to
//! looking at the two files' sizes and modification times every [`POLL_RUN`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lobu_core::{RunId, RunSignals};
use notify::event::{ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;

use crate::layout::{self, Layout};
use crate::store::{FileStore, Inner};

/// How often a wait looks at the run's files when no watcher could be started.
pub(crate) const POLL_RUN: Duration = Duration::from_millis(10);

/// How far a file's modification time may lag the write (file systems stamp with a coarse
/// clock): a change this close before `since` still counts as after it.
const STAMP_SLACK: Duration = Duration::from_millis(20);

/// A store's watcher, if it has one.
#[derive(Default)]
pub(crate) enum Watch {
    /// No follower has waited yet.
    #[default]
    NotStarted,
    /// Watching until dropped with the store.
    Watching { _watcher: RecommendedWatcher },
    /// It could not be started: waits poll.
    Unavailable,
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Watch::NotStarted => "NotStarted",
            Watch::Watching { .. } => "Watching",
            Watch::Unavailable => "Unavailable",
        })
    }
}

/// What a wait found when it looked at the watcher.
enum Start {
    Watching,
    Unavailable,
    /// The run's files changed after `since` already.
    Changed,
}

impl FileStore {
    /// Start the store's watcher (if nobody has) so that other processes' queue changes wake
    /// this one's waits for work.
    pub(crate) async fn watch_for_work(&self) {
        if matches!(*lock(&self.inner), Watch::NotStarted) {
            let _ = self.blocking(|inner| Ok(ensure_started(inner))).await;
        }
    }

    /// Wait until `run` may have changed after `since`, here or in another process.
    pub(crate) async fn wait_for_run_anywhere(&self, run: &RunId, since: Instant, max: Duration) {
        let watching = matches!(*lock(&self.inner), Watch::Watching { .. });
        let start = if watching {
            Start::Watching
        } else {
            let (id, since) = (run.clone(), wall_clock(since));
            let started = self.blocking(move |inner| Ok(start(inner, &id, since)));
            started.await.unwrap_or(Start::Unavailable)
        };
        match start {
            Start::Changed => {}
            Start::Watching => self.inner.runs.wait(run, since, max).await,
            Start::Unavailable => self.poll(run, since, max).await,
        }
    }

    /// Look at the run's files every [`POLL_RUN`] until they change, a signal of this
    /// process comes, or `max` passes.
    async fn poll(&self, run: &RunId, since: Instant, max: Duration) {
        let deadline = Instant::now() + max;
        let stamps = |run: RunId| self.blocking(move |inner| Ok(stamps(&inner.layout, &run)));
        let Ok(first) = stamps(run.clone()).await else {
            return self.inner.runs.wait(run, since, max).await;
        };
        loop {
            let step = POLL_RUN.min(deadline.saturating_duration_since(Instant::now()));
            if step.is_zero() {
                return;
            }
            let waited = Instant::now();
            self.inner.runs.wait(run, since, step).await;
            if waited.elapsed() < step || stamps(run.clone()).await.ok() != Some(first) {
                return;
            }
        }
    }
}

fn lock(inner: &Inner) -> std::sync::MutexGuard<'_, Watch> {
    // Assigned whole: a poisoned watch is still consistent.
    inner.watch.lock().unwrap_or_else(|p| p.into_inner())
}

/// Start the store's watcher if nobody has, and tell whether the run changed after `since`
/// already (a change the watcher, started just now, cannot have seen).
fn start(inner: &Inner, run: &RunId, since: Option<SystemTime>) -> Start {
    let watching = ensure_started(inner);
    let changed = since.is_some_and(|since| {
        let [record, log] = stamps(&inner.layout, run);
        [record, log]
            .iter()
            .flatten()
            .any(|(_, modified)| *modified + STAMP_SLACK > since)
    });
    match (changed, watching) {
        (true, _) => Start::Changed,
        (false, true) => Start::Watching,
        (false, false) => Start::Unavailable,
    }
}

/// Start the store's watcher if nobody has; whether it is watching.
fn ensure_started(inner: &Inner) -> bool {
    let mut watch = lock(inner);
    if matches!(*watch, Watch::NotStarted) {
        *watch = match watcher(&inner.layout, inner.runs.clone(), inner.work.clone()) {
            Ok(watcher) => Watch::Watching { _watcher: watcher },
            Err(e) => {
                tracing::warn!(error = %e, root = %inner.layout.root().display(),
                    "cannot watch the store for other processes' changes; followers poll");
                Watch::Unavailable
            }
        };
    }
    matches!(*watch, Watch::Watching { .. })
}

/// A watcher of the run records and event logs under `layout`, signalling `signals`, and of
/// the markers, waking `work`'s waiters.
fn watcher(
    layout: &Layout,
    signals: Arc<RunSignals>,
    work: Arc<Notify>,
) -> notify::Result<RecommendedWatcher> {
    let dirs = [layout.run_records(), layout.events()];
    let active = layout.queue().join("active");
    for dir in dirs.iter().chain([&active]) {
        std::fs::create_dir_all(dir).map_err(notify::Error::io)?;
    }
    let bases = dirs.clone();
    let markers = active.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        match event {
            // The kernel's queue overflowed: any run may have changed.
            Ok(event) if event.need_rescan() => {
                signals.signal_all();
                work.notify_waiters();
            }
            Ok(event) if event.paths.iter().any(|p| p.parent() == Some(&markers)) => {
                if makes_work(&event) {
                    work.notify_waiters();
                }
            }
            Ok(event) if changes(&event.kind) => {
                for run in event.paths.iter().filter_map(|path| run_of(&bases, path)) {
                    signals.signal(&run);
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "watching the store failed; waking every follower");
                signals.signal_all();
                work.notify_waiters();
            }
        }
    })?;
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::Recursive)?;
    }
    watcher.watch(&active, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Whether a change of `queue/active/` may have made a run claimable: a pending marker
/// made or renamed into place (a submit, a release, a retry), or a marker removed (a run
/// finished: its conversation's next run may be claimable). A claim's rename of a pending
/// marker to a running one is neither.
fn makes_work(event: &Event) -> bool {
    let pending = |path: Option<&PathBuf>| {
        path.and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(crate::queue::markers::Marker::parse)
            .is_some_and(|m| m.pending)
    };
    match event.kind {
        EventKind::Remove(_) => true,
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
            pending(event.paths.first())
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => pending(event.paths.get(1)),
        _ => false,
    }
}

/// Whether an event is a change (opening or reading a file is not).
fn changes(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
    )
}

/// The run a path below one of `bases` names (staging files and directories name none).
fn run_of(bases: &[PathBuf], path: &Path) -> Option<RunId> {
    let relative = bases.iter().find_map(|base| path.strip_prefix(base).ok())?;
    RunId::new(layout::id_of(relative)?).ok()
}

/// Size and modification time of the run's record and of its event log (`None`: missing).
fn stamps(layout: &Layout, run: &RunId) -> [Option<(u64, SystemTime)>; 2] {
    let record = layout::nested(&layout.run_records(), run.as_str());
    [record, layout.event_log(run)].map(|path| {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.len(), meta.modified().ok()?))
    })
}

/// `since` on the wall clock (what file times are stamped with).
fn wall_clock(since: Instant) -> Option<SystemTime> {
    SystemTime::now().checked_sub(since.elapsed())
}

#[cfg(test)]
mod tests {
    use lobu_core::{Claim, ConversationKey, MultitaskStrategy, NewRun, RunQueue, WorkerId};

    use super::*;

    const LONG: Duration = Duration::from_secs(600);

    async fn two_stores_and_a_claim(dir: &Path) -> (FileStore, FileStore, Claim) {
        let a = FileStore::open(dir).await.unwrap();
        let b = FileStore::open(dir).await.unwrap();
        let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
        a.submit(NewRun::turn(key, serde_json::json!({})))
            .await
            .unwrap();
        let claim = a.claim(&WorkerId::generate(), LONG).await.unwrap();
        (a, b, claim.expect("the run"))
    }

    /// How long `store`'s wait for `claim`'s run lasted when `during` ran 100 ms into it.
    async fn wait_during(store: &FileStore, claim: &Claim, during: impl AsyncFnOnce()) -> Duration {
        // Past the modification times' slack: only what happens from now on counts.
        tokio::time::sleep(STAMP_SLACK * 3).await;
        let since = Instant::now();
        let waiter = tokio::spawn({
            let (store, org, run) = (store.clone(), claim.key.org.clone(), claim.run.clone());
            async move {
                store
                    .wait_for_run(&org, &run, since, Duration::from_millis(600))
                    .await;
                since.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        during().await;
        waiter.await.unwrap()
    }

    #[tokio::test]
    async fn another_process_queueing_a_run_wakes_a_worker_waiting_for_work() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileStore::open(dir.path()).await.unwrap();
        // Polling alone would take ten seconds.
        let b = FileStore::open(dir.path())
            .await
            .unwrap()
            .with_poll_interval(Duration::from_secs(10));
        // Its first wait starts the watcher; nothing is queued, so it waits it out.
        b.wait_for_work(Duration::from_millis(50)).await;
        let waiter = tokio::spawn({
            let b = b.clone();
            async move {
                let since = Instant::now();
                b.wait_for_work(Duration::from_secs(10)).await;
                since.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
        a.submit(NewRun::turn(key, serde_json::json!({})))
            .await
            .unwrap();
        let waited = waiter.await.unwrap();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(
            waited < Duration::from_secs(2),
            "the submit did not wake it: {waited:?}"
        );
    }

    #[test]
    fn new_and_released_markers_and_removals_make_work_and_a_claims_rename_does_not() {
        use notify::event::{CreateKind, DataChange, RemoveKind};
        let key = ConversationKey::parse("acme", "bot", "c1").unwrap();
        let run = RunId::generate();
        let lane = crate::queue::markers::lane_of(&key);
        let marker = |pending| {
            let name = crate::queue::markers::Marker::new(7, &lane, 1, pending, &run).name;
            PathBuf::from("/store/queue/active").join(name)
        };
        let (pending, running) = (marker(true), marker(false));
        let event = |kind, paths: &[&PathBuf]| Event {
            kind,
            paths: paths.iter().map(|p| (*p).clone()).collect(),
            attrs: Default::default(),
        };
        let rename = |mode| EventKind::Modify(ModifyKind::Name(mode));
        let made = [
            event(EventKind::Create(CreateKind::File), &[&pending]),
            event(rename(RenameMode::To), &[&pending]),
            event(rename(RenameMode::Both), &[&running, &pending]),
            event(EventKind::Remove(RemoveKind::File), &[&running]),
        ];
        for event in made {
            assert!(makes_work(&event), "{event:?}");
        }
        let none = [
            event(rename(RenameMode::From), &[&pending]),
            event(rename(RenameMode::To), &[&running]),
            event(rename(RenameMode::Both), &[&pending, &running]),
            event(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                &[&pending],
            ),
        ];
        for event in none {
            assert!(!makes_work(&event), "{event:?}");
        }
    }

    #[tokio::test]
    async fn without_a_watcher_a_follower_polls_the_runs_files() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, claim) = two_stores_and_a_claim(dir.path()).await;
        *lock(&b.inner) = Watch::Unavailable;
        let waited = wait_during(&b, &claim, async || {
            a.record_events(&claim, &["{}".to_owned()]).await.unwrap();
        })
        .await;
        assert!(
            waited >= Duration::from_millis(100),
            "ended before the change"
        );
        assert!(
            waited < Duration::from_millis(400),
            "polling missed it: {waited:?}"
        );
        assert!(matches!(*lock(&b.inner), Watch::Unavailable));
    }

    #[tokio::test]
    async fn reading_a_run_wakes_none_of_its_followers() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, claim) = two_stores_and_a_claim(dir.path()).await;
        a.record_events(&claim, &["{}".to_owned()]).await.unwrap();
        let (org, run) = (&claim.key.org, &claim.run);
        b.wait_for_run(org, run, Instant::now(), Duration::ZERO)
            .await;
        assert!(matches!(*lock(&b.inner), Watch::Watching { .. }));
        let waited = wait_during(&b, &claim, async || {
            for _ in 0..3 {
                a.read_events(org, run, 0, 10).await.unwrap().unwrap();
                a.status(org, run).await.unwrap().unwrap();
            }
        })
        .await;
        assert!(
            waited >= Duration::from_millis(600),
            "a read woke it: {waited:?}"
        );
    }

    #[tokio::test]
    async fn a_steer_submit_elsewhere_wakes_the_running_runs_followers_watching_or_polling() {
        for watching in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (a, b, claim) = two_stores_and_a_claim(dir.path()).await;
            if !watching {
                *lock(&b.inner) = Watch::Unavailable;
            }
            let waited = wait_during(&b, &claim, async || {
                let steer = NewRun::turn(claim.key.clone(), serde_json::json!({}));
                a.submit(steer.multitask(MultitaskStrategy::Steer))
                    .await
                    .unwrap();
            })
            .await;
            assert!(
                waited >= Duration::from_millis(100),
                "{watching}: too early"
            );
            assert!(
                waited < Duration::from_millis(400),
                "{watching}: not woken: {waited:?}"
            );
        }
    }

    #[test]
    fn only_paths_of_run_records_and_logs_name_runs() {
        let layout = Layout::new(PathBuf::from("/store"));
        let bases = [layout.run_records(), layout.events()];
        let run = RunId::generate();
        assert_eq!(run_of(&bases, &layout.event_log(&run)), Some(run.clone()));
        let record = layout.run_records().join(run.as_str());
        assert_eq!(run_of(&bases, &record), Some(run.clone()));
        let staging = layout.run_records().join(format!(".{run}.1234.tmp"));
        for other in [
            staging,
            layout.queue().join("lock"),
            PathBuf::from("/elsewhere/x"),
        ] {
            assert_eq!(run_of(&bases, &other), None, "{other:?}");
        }
    }
}
