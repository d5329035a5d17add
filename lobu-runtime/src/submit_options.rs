//! [`SubmitOptions`]: how a message is submitted.

use lobu_core::{IdempotencyKey, MultitaskStrategy, TraceParent};

/// How [`Runtime::submit_with`](crate::Runtime::submit_with) submits a message.
///
/// ```
/// use lobu_core::MultitaskStrategy;
/// use lobu_runtime::SubmitOptions;
///
/// let options = SubmitOptions::new().multitask(MultitaskStrategy::Interrupt);
/// assert_eq!(options.strategy(), MultitaskStrategy::Interrupt);
/// ```
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    idempotency_key: Option<IdempotencyKey>,
    multitask: MultitaskStrategy,
    trace_parent: Option<TraceParent>,
}

impl SubmitOptions {
    /// Enqueue, no idempotency key.
    pub fn new() -> Self {
        SubmitOptions::default()
    }

    /// Make a retried submit return the first submit's run (scoped to the conversation).
    pub fn idempotency_key(mut self, key: impl Into<Option<IdempotencyKey>>) -> Self {
        self.idempotency_key = key.into();
        self
    }

    /// What to do about the conversation's unfinished runs ("double texting"); see
    /// [`MultitaskStrategy`].
    pub fn multitask(mut self, strategy: MultitaskStrategy) -> Self {
        self.multitask = strategy;
        self
    }

    /// The strategy it submits with.
    pub fn strategy(&self) -> MultitaskStrategy {
        self.multitask
    }

    /// The submitting request's W3C trace context (its `traceparent` header, parsed with
    /// [`TraceParent::parse`]): it travels with the run to whichever replica claims it, whose
    /// `lobu.run` span records `trace_id`, `parent_span_id` and `traceparent`. It is kept in
    /// the stored payload under [`TRACE_PAYLOAD_KEY`](lobu_core::TRACE_PAYLOAD_KEY), which
    /// the agent and [`Runtime::status`](crate::Runtime::status) never see.
    pub fn trace_parent(mut self, parent: impl Into<Option<TraceParent>>) -> Self {
        self.trace_parent = parent.into();
        self
    }

    /// The trace context it submits with.
    pub fn trace(&self) -> Option<TraceParent> {
        self.trace_parent
    }
}

impl SubmitOptions {
    /// The idempotency key, strategy and trace parent, for the submit.
    pub(crate) fn into_parts(
        self,
    ) -> (
        Option<IdempotencyKey>,
        MultitaskStrategy,
        Option<TraceParent>,
    ) {
        (self.idempotency_key, self.multitask, self.trace_parent)
    }
}
