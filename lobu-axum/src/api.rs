//! [`Api`]: what every handler shares, and how long a request may take.

use std::sync::Arc;
use std::time::Duration;

use lobu_runtime::Runtime;
use tokio_util::sync::CancellationToken;

use crate::streams::StreamSlots;

/// How many event streams one org may hold open on a replica by default.
pub const DEFAULT_MAX_STREAMS_PER_ORG: usize = 100;

/// How long a non-streaming request may take by default before it is answered `503`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `DELETE …/session` waits by default for its reset, which runs after the
/// conversation's earlier runs (a long model call among them), before answering `503`.
pub const DEFAULT_RESET_TIMEOUT: Duration = Duration::from_secs(120);

/// The longest request timeout a host may set: past it a client should stream.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

/// The run and session API's shared state: the runtime, the event-stream bound and the
/// shutdown signals. Cheap to clone. A host with its own state holds one and implements
/// [`FromRef`](axum::extract::FromRef) for it (see [`routes`](Api::routes)).
#[derive(Debug, Clone)]
pub struct Api {
    pub(crate) runtime: Runtime,
    /// Cancelled when shutdown begins: readiness turns 503.
    pub(crate) draining: CancellationToken,
    /// Cancelled when the worker has stopped: event streams end and waits give up, so the
    /// HTTP server can finish (clients reconnect to another replica and replay).
    pub(crate) closing: CancellationToken,
    pub(crate) streams: Arc<StreamSlots>,
    pub(crate) request_timeout: Duration,
    pub(crate) reset_timeout: Duration,
}

impl Api {
    /// The API over `runtime`, with the default bounds.
    pub fn new(runtime: Runtime) -> Self {
        Api {
            runtime,
            draining: CancellationToken::new(),
            closing: CancellationToken::new(),
            streams: StreamSlots::new(DEFAULT_MAX_STREAMS_PER_ORG),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            reset_timeout: DEFAULT_RESET_TIMEOUT,
        }
    }

    /// At most `per_org` event streams per org at once on this replica (past it: `429`).
    pub fn max_streams_per_org(mut self, per_org: usize) -> Self {
        self.streams = StreamSlots::new(per_org);
        self
    }

    /// How long a non-streaming request may take (default 30 s, at most an hour): past it
    /// the answer is `503` and the work it started is dropped where it stands (a submit
    /// either queued its run or not; resend it with the same idempotency key). `GET
    /// /v1/runs/{id}?wait=N` gets `N` seconds more; event streams are not bounded.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout.clamp(Duration::from_millis(1), MAX_REQUEST_TIMEOUT);
        self
    }

    /// How long `DELETE …/session` waits for its reset (default 120 s, at most an hour).
    /// Past it the answer is `503`; the reset stays queued and still runs, and the same
    /// request with the same `idempotency_key` waits for it again.
    pub fn reset_timeout(mut self, timeout: Duration) -> Self {
        self.reset_timeout = timeout.clamp(Duration::from_millis(1), MAX_REQUEST_TIMEOUT);
        self
    }

    /// The runtime the handlers speak to.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Mark the server as shutting down: `/health/ready` answers 503 from now on.
    pub fn begin_drain(&self) {
        self.draining.cancel();
    }

    /// Whether [`begin_drain`](Self::begin_drain) was called.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Completes when [`begin_drain`](Self::begin_drain) is called.
    pub async fn drained(&self) {
        self.draining.cancelled().await;
    }

    /// End every open event stream and pending wait (call after the worker stopped).
    pub fn close_streams(&self) {
        self.draining.cancel();
        self.closing.cancel();
    }
}
