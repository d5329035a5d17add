//! The runtime's tracing spans: every span about a conversation carries `org`, `agent` and
//! `conversation` as separate fields, and `gen_ai.conversation.id` (the whole key, as
//! OpenTelemetry's GenAI conventions name a conversation); a run's span adds `run`,
//! `attempt`, `gen_ai.operation.name` (`invoke_agent` for a turn), `gen_ai.agent.name`, and
//! the submitter's trace context: `trace_id`, `parent_span_id` and `traceparent`.
//!
//! Spans: `lobu.run` (one attempt), `lobu.hydrate`, `lobu.persist`, and one per gateway call
//! (`lobu.submit`, `lobu.reset`, `lobu.cancel`, `lobu.erase`, `lobu.status`,
//! `lobu.subscribe`, `lobu.wait`, `lobu.messages`, `lobu.stats`, `lobu.list`).

use lobu_core::{Claim, ConversationKey, RunKind, RunTrace};
use tracing::Span;
use tracing::field::Empty;

/// An info span named `$name` with the conversation fields of `$key` and any more fields.
macro_rules! conversation_span {
    ($name:literal, $key:expr $(, $($fields:tt)*)?) => {{
        let key: &lobu_core::ConversationKey = $key;
        tracing::info_span!(
            $name,
            org = %key.org,
            agent = %key.agent,
            conversation = %key.conversation,
            gen_ai.conversation.id = %key,
            $($($fields)*)?
        )
    }};
}
pub(crate) use conversation_span;

/// Fill the conversation fields of a span opened before the conversation was known (one
/// opened from an org and a run), once the run's record names it.
pub(crate) fn record_key(span: &Span, key: &ConversationKey) {
    span.record("agent", tracing::field::display(&key.agent));
    span.record("conversation", tracing::field::display(&key.conversation));
    span.record("gen_ai.conversation.id", tracing::field::display(key));
}

/// Record the submitter's trace context on `span` (fields declared `Empty`).
pub(crate) fn record_trace(span: &Span, trace: &RunTrace) {
    if let Some(parent) = trace.trace_parent {
        span.record("trace_id", parent.trace_id());
        span.record("parent_span_id", parent.parent_id());
        span.record("traceparent", tracing::field::display(parent));
    }
}

/// The span of one attempt of a claimed run.
pub(crate) fn run_span(claim: &Claim, trace: &RunTrace) -> Span {
    let span = conversation_span!(
        "lobu.run",
        &claim.key,
        gen_ai.operation.name = Empty,
        gen_ai.agent.name = %claim.key.agent,
        run = %claim.run,
        kind = claim.kind.as_str(),
        attempt = claim.attempt,
        fence = claim.fence.0,
        key = %claim.key,
        trace_id = Empty,
        parent_span_id = Empty,
        traceparent = Empty,
    );
    if claim.kind == RunKind::Turn {
        span.record("gen_ai.operation.name", "invoke_agent");
    }
    record_trace(&span, trace);
    span
}
