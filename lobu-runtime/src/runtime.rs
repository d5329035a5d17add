//! [`Runtime`]: the handle a host keeps, and [`RuntimeBuilder`] that makes it.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lobu_core::{AgentId, Backend, Result, WorkerId};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::Agent;
use crate::cache::TranscriptCache;
use crate::config::Settings;
use crate::hub::EventHub;
use crate::instruments::OrgLabel;
use crate::local_turns::LocalTurns;
use crate::metrics::{Counters, Metrics};
use crate::scratch_pool::ScratchPool;

/// lobu's gateway and worker loop, embedded in the host's process.
///
/// Cheap to clone (an `Arc` inside); every clone is the same runtime. The gateway side
/// ([`submit`](Self::submit), [`subscribe`](Self::subscribe), [`status`](Self::status),
/// [`reset`](Self::reset), [`messages`](Self::messages), [`stats`](Self::stats),
/// [`list`](Self::list)) works whether or not this process runs the worker loop
/// ([`run`](Self::run), [`shutdown`](Self::shutdown)).
#[derive(Clone)]
pub struct Runtime {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("worker", &self.shared.worker)
            .field("backend", &self.shared.backend)
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

/// What every part of the runtime shares.
pub(crate) struct Shared {
    pub(crate) backend: Backend,
    pub(crate) agent: Arc<dyn Agent>,
    pub(crate) settings: Settings,
    pub(crate) worker: WorkerId,
    pub(crate) hub: EventHub,
    pub(crate) cache: TranscriptCache,
    pub(crate) counters: Counters,
    /// Set when shutdown begins: the worker loop claims nothing more.
    pub(crate) stop_claiming: CancellationToken,
    /// Held while shutdown stops claiming and while the worker loop decides to start a run,
    /// so a run is either started before shutdown waits for runs, or handed back.
    pub(crate) start_gate: Mutex<()>,
    /// Set when the grace period is over: in-flight turns are cancelled.
    pub(crate) abort_turns: CancellationToken,
    /// Every run this worker executes.
    pub(crate) tracker: TaskTracker,
    pub(crate) loop_running: AtomicBool,
    /// Wakes the worker loop (a local submit, a run finished).
    pub(crate) wake: Notify,
    /// The runs executing here, for cancellations asked for here.
    pub(crate) local_turns: Arc<LocalTurns>,
    /// Scratch directories made ahead of the turns that take them.
    pub(crate) scratch: Arc<ScratchPool>,
}

impl Runtime {
    /// Start building a runtime on `backend` with `agent` (any [`Agent`], or an `Arc` of one).
    pub fn builder(backend: Backend, agent: impl Agent) -> RuntimeBuilder {
        RuntimeBuilder {
            backend,
            agent: Arc::new(agent),
            settings: Settings::default(),
            worker: None,
        }
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    /// The id this runtime claims runs under.
    pub fn worker_id(&self) -> &WorkerId {
        &self.shared.worker
    }

    /// The backend it speaks to.
    pub fn backend(&self) -> &Backend {
        &self.shared.backend
    }

    /// A snapshot of the counters (hydrate and persist bytes and times, queue
    /// depth, runs).
    pub fn metrics(&self) -> Metrics {
        self.shared.counters.snapshot()
    }

    /// How many runs are pending on the queue now (also updates
    /// [`Metrics::queue_depth`]). A cheap readiness probe for a host: it fails when the
    /// backend does not answer.
    pub async fn queue_depth(&self) -> Result<u64> {
        let depth = self.shared.backend.queue.depth().await?;
        self.shared
            .counters
            .queue_depth
            .store(depth, std::sync::atomic::Ordering::Relaxed);
        crate::instruments::queue_depth(depth);
        Ok(depth)
    }
}

/// Builds a [`Runtime`]; every setting has a default (see [`Settings`]).
#[must_use]
pub struct RuntimeBuilder {
    backend: Backend,
    agent: Arc<dyn Agent>,
    settings: Settings,
    worker: Option<WorkerId>,
}

impl fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("settings", &self.settings)
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.settings.$name = value;
            self
        }
    };
}

impl RuntimeBuilder {
    /// Replace all settings at once.
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// The worker id to claim under (default: a fresh `worker-<uuid>`).
    pub fn worker_id(mut self, worker: WorkerId) -> Self {
        self.worker = Some(worker);
        self
    }

    setter!(/// How many runs execute at once.
        concurrency: usize);
    setter!(/// The time limit of one attempt of a turn.
        turn_timeout: Duration);
    setter!(/// How long a run claim lasts without a heartbeat.
        claim_ttl: Duration);
    setter!(/// How often the claims of running turns are renewed.
        heartbeat_interval: Duration);
    setter!(/// How many attempts a submitted run gets.
        max_attempts: u32);
    setter!(/// The first retry's delay (later ones back off exponentially).
        retry_delay: Duration);
    setter!(/// The longest delay between attempts.
        max_retry_delay: Duration);
    setter!(/// The default grace period of [`Runtime::shutdown`].
        shutdown_grace: Duration);
    setter!(/// The largest transcript a turn may persist.
        max_transcript_bytes: usize);
    setter!(/// Where per-run scratch directories are created.
        scratch_root: PathBuf);
    setter!(/// The longest idle wait between claim attempts.
        poll_interval: Duration);
    setter!(/// How often followed runs are read without a wake-up (a backstop).
        status_poll_interval: Duration);
    setter!(/// How long stored events of finished runs are kept.
        event_retention: Duration);
    setter!(/// How long finished runs stay on the queue.
        run_retention: Duration);
    setter!(/// Keep failed runs this long (`None`: as long as finished runs).
        failed_run_retention: Option<Duration>);
    setter!(/// Remove conversations idle longer than this (`None`: never).
        idle_retention: Option<Duration>);
    setter!(/// Keep forensic copies of failed attempts this long.
        forensic_retention: Duration);
    setter!(/// The most items one step of a retention pass removes.
        retention_batch: usize);

    /// Give `agent`'s conversations their own idle window (`None`: keep them forever).
    pub fn idle_retention_for(mut self, agent: AgentId, window: Option<Duration>) -> Self {
        self.settings.idle_retention_by_agent.insert(agent, window);
        self
    }
    setter!(/// Whether run events are stored for every replica.
        store_events: bool);
    setter!(/// How many bytes of events an attempt stores as they come.
        max_event_bytes: usize);
    setter!(/// The transcript cache budget in bytes (0 disables it).
        cache_bytes: usize);
    setter!(/// Which orgs label metrics with `org` (default: none).
        metrics_org_label: OrgLabel);

    /// Check the settings and build. Bad settings are `InvalidInput`.
    pub fn build(self) -> Result<Runtime> {
        self.settings.validate()?;
        crate::instruments::describe_metrics();
        let settings = self.settings;
        Ok(Runtime {
            shared: Arc::new(Shared {
                backend: self.backend,
                agent: self.agent,
                worker: self.worker.unwrap_or_else(WorkerId::generate),
                hub: EventHub::default(),
                cache: TranscriptCache::new(settings.cache_bytes),
                counters: Counters::new(),
                stop_claiming: CancellationToken::new(),
                start_gate: Mutex::new(()),
                abort_turns: CancellationToken::new(),
                tracker: TaskTracker::new(),
                loop_running: AtomicBool::new(false),
                wake: Notify::new(),
                local_turns: Arc::default(),
                scratch: Arc::new(ScratchPool::new(
                    settings.scratch_root.clone(),
                    settings.concurrency,
                )),
                settings,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_and_streams_can_cross_tasks() {
        fn send_sync<T: Send + Sync + 'static>() {}
        fn send<T: Send + 'static>() {}
        send_sync::<Runtime>();
        send::<crate::RunEvents>();
        send_sync::<crate::RunEvent>();
        send_sync::<crate::OutputSink>();
        send::<crate::Turn>();
    }
}
