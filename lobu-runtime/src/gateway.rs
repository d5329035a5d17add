//! The gateway side: accept runs, follow them, read conversations.

use futures::StreamExt;
use lobu_core::transcript::{MessagePage, Stats, UserInput};
use lobu_core::{
    AgentId, CancelOutcome, ConversationKey, ConversationSummary, EraseScope, ErasureReport, Error,
    ErrorKind, IdempotencyKey, MultitaskStrategy, NewRun, OrgId, Page, Result, RunId, RunRecord,
    RunStatus, RunTrace, Submitted, TraceParent, check_page_limit,
};
use tracing::field::Empty;

use crate::hydrate::hydrate;
use crate::instruments;
use crate::runtime::Runtime;
use crate::spans;
use crate::submit_options::SubmitOptions;
use crate::subscription::RunEvents;

impl Runtime {
    /// Accept a user message for a conversation: the run is durable on the queue when this
    /// returns. The payload is `{"text": text}`.
    ///
    /// With an `idempotency_key` the conversation already used, the earlier run is returned
    /// (`created: false`) and nothing new is queued. Empty text is `InvalidInput`; text over
    /// the payload limit is `TooLarge`.
    pub async fn submit(
        &self,
        key: ConversationKey,
        text: impl Into<String>,
        idempotency_key: Option<IdempotencyKey>,
    ) -> Result<Submitted> {
        let payload = serde_json::json!({ "text": text.into() });
        self.submit_payload(key, payload, idempotency_key).await
    }

    /// [`submit`](Self::submit) and [`wait`](Self::wait) for the run's end in one call.
    pub async fn submit_and_wait(
        &self,
        key: ConversationKey,
        text: impl Into<String>,
    ) -> Result<RunRecord> {
        let org = key.org.clone();
        let submitted = self.submit(key, text, None).await?;
        self.wait(&org, &submitted.run).await
    }

    /// [`submit`](Self::submit) with a whole payload, any `Serialize` value that is a JSON
    /// object (a `serde_json::Value` or a type of the host's, which the agent reads back with
    /// [`Turn::payload_as`](crate::Turn::payload_as)): a non-blank string `text`, `images`
    /// (`[{"data": <base64>, "mimeType": "image/png"}]`), either or both, and any other fields
    /// the agent reads, kept as they are (checked by
    /// [`UserInput::from_payload`](lobu_core::transcript::UserInput::from_payload)). The field
    /// [`TRACE_PAYLOAD_KEY`](lobu_core::TRACE_PAYLOAD_KEY) (`"lobu_trace"`) is reserved for
    /// the runtime: a payload with it is `InvalidInput`.
    pub async fn submit_payload(
        &self,
        key: ConversationKey,
        payload: impl serde::Serialize,
        idempotency_key: Option<IdempotencyKey>,
    ) -> Result<Submitted> {
        let options = SubmitOptions::new().idempotency_key(idempotency_key);
        self.submit_with(key, payload, options).await
    }

    /// [`submit_payload`](Self::submit_payload) with a [`MultitaskStrategy`] for a message
    /// that arrives while the conversation's turn runs:
    ///
    /// * `enqueue` (the default) runs it after the conversation's earlier runs;
    /// * `reject` is `Conflict` (naming the unfinished run; nothing queued) while the
    ///   conversation has an unfinished run;
    /// * `interrupt` cancels the running turn (on whichever replica: at once here, within one
    ///   heartbeat elsewhere; nothing of it is kept) and runs the message after the runs that
    ///   were already waiting;
    /// * `rollback` cancels the running turn and every waiting turn, then runs the message;
    /// * `steer` offers the message to the running turn ([`Turn::take_steered`](crate::Turn::take_steered));
    ///   if the agent takes it, its run completes with that turn; if not, or no turn runs, it
    ///   runs as its own turn, in order.
    ///
    /// Resets are never cancelled by a strategy. The check and the cancellations happen
    /// atomically with queueing the run; a matched idempotency key returns the earlier run and
    /// does none of it.
    ///
    /// [`SubmitOptions::trace_parent`] carries the request's trace context with the run.
    #[tracing::instrument(
        name = "lobu.submit",
        skip_all,
        fields(
            org = %key.org,
            agent = %key.agent,
            conversation = %key.conversation,
            gen_ai.conversation.id = %key,
            run = Empty,
            trace_id = options.trace().map(|p| p.trace_id()),
        )
    )]
    pub async fn submit_with(
        &self,
        key: ConversationKey,
        payload: impl serde::Serialize,
        options: SubmitOptions,
    ) -> Result<Submitted> {
        let payload = serde_json::to_value(payload)
            .map_err(|e| Error::invalid(format!("the payload does not serialize to JSON: {e}")))?;
        UserInput::from_payload(&payload)?;
        RunTrace::check_unreserved(&payload)?;
        let settings = &self.shared.settings;
        let (idempotency_key, multitask, trace_parent) = options.into_parts();
        let run = NewRun {
            idempotency_key,
            max_attempts: settings.max_attempts,
            retry_delay: settings.retry_delay,
            multitask,
            ..NewRun::turn(key, payload)
        };
        self.enqueue(run, trace_parent).await
    }

    /// Queue a reset of the conversation and return its run at once. The reset waits behind
    /// the conversation's earlier runs, then clears its transcript in the store and in every
    /// cache; it completes with output `{"deleted": n}`. Follow it with
    /// [`wait`](Self::wait) or [`subscribe`](Self::subscribe), or use
    /// [`reset_and_wait`](Self::reset_and_wait).
    pub async fn reset(&self, key: ConversationKey) -> Result<RunId> {
        Ok(self.reset_with_key(key, None).await?.run)
    }

    /// [`reset`](Self::reset) with an idempotency key, for a client that may send the same
    /// reset again (after a timeout): the key answers with the first reset's run and queues
    /// nothing more (`created: false`). Without one, every call is another reset, and a
    /// retried reset whose first copy arrives late clears the turns sent in between.
    #[tracing::instrument(
        name = "lobu.reset",
        skip_all,
        fields(
            org = %key.org,
            agent = %key.agent,
            conversation = %key.conversation,
            gen_ai.conversation.id = %key,
            run = Empty,
        )
    )]
    pub async fn reset_with_key(
        &self,
        key: ConversationKey,
        idempotency_key: Option<IdempotencyKey>,
    ) -> Result<Submitted> {
        let settings = &self.shared.settings;
        let run = NewRun {
            max_attempts: settings.max_attempts,
            retry_delay: settings.retry_delay,
            idempotency_key,
            ..NewRun::reset(key)
        };
        self.enqueue(run, None).await
    }

    /// Reset the conversation and wait for it: returns how many snapshots were deleted (0
    /// for a conversation with none). A reset that failed after its attempts is an
    /// `Unavailable` error carrying its last error.
    pub async fn reset_and_wait(&self, key: ConversationKey) -> Result<u64> {
        let org = key.org.clone();
        let run = self.reset(key).await?;
        let record = self.wait(&org, &run).await?;
        match record.status {
            RunStatus::Completed => record
                .output
                .as_ref()
                .and_then(|o| o.get("deleted"))
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| Error::corrupt("reset run completed without a deleted count")),
            status => Err(Error::unavailable(format!(
                "reset run {run} ended {}: {}",
                status.as_str(),
                record.error.unwrap_or_default()
            ))),
        }
    }

    async fn enqueue(&self, mut run: NewRun, trace: Option<TraceParent>) -> Result<Submitted> {
        // Carried in the payload (no store needs another column), for the claiming replica.
        RunTrace::submitted_now(trace).insert_into(&mut run.payload)?;
        let (key, kind) = (run.key.clone(), run.kind);
        let cancels = matches!(
            run.multitask,
            MultitaskStrategy::Interrupt | MultitaskStrategy::Rollback
        );
        let submitted = self.shared.backend.queue.submit(run).await?;
        tracing::Span::current().record("run", tracing::field::display(&submitted.run));
        if submitted.created {
            let labels = instruments::labels(&self.shared.settings, &key);
            instruments::run_submitted(&labels, kind);
            if cancels {
                // A turn it cancelled that runs here stops now, not at its next heartbeat.
                self.shared.local_turns.poke_conversation(&key);
            }
            self.shared.wake.notify_one();
        }
        tracing::debug!(%key, run = %submitted.run, created = submitted.created, "run accepted");
        Ok(submitted)
    }

    /// Cancel a run, on whichever replica it runs: a waiting run ends `cancelled` and never
    /// runs; a running one is stopped by its worker: at once when it runs in this process,
    /// else at its next heartbeat (at most
    /// [`Settings::heartbeat_interval`](crate::Settings::heartbeat_interval) later); nothing
    /// of its turn is persisted, and it ends `cancelled` with a terminal event; the
    /// conversation's next run proceeds. A finished run is left as it is
    /// ([`CancelOutcome::Finished`] says how it ended). Unknown runs and other orgs' runs
    /// are `NotFound`.
    #[tracing::instrument(
        name = "lobu.cancel",
        skip_all,
        fields(org = %org, run = %run)
    )]
    pub async fn cancel(&self, org: &OrgId, run: &RunId) -> Result<CancelOutcome> {
        let queue = &self.shared.backend.queue;
        let outcome = queue.cancel(org, run, "cancelled on request").await?;
        if outcome == Some(CancelOutcome::Requested) {
            // If the run executes here, its turn stops now rather than at its next heartbeat.
            self.shared.local_turns.poke_run(run);
        }
        outcome.ok_or_else(|| Error::not_found(format!("no run {run} in org {org}")))
    }

    /// Remove every trace of a conversation, of one agent's conversations in an org, or of
    /// a whole org: transcripts and forensic copies, runs (waiting ones too), events,
    /// idempotency keys, leases; also from this replica's cache (other replicas' cached copies
    /// are never served again: they serve only the head a claim reports). Returns what was
    /// removed. A turn of the scope running meanwhile cannot commit (its run is gone).
    #[tracing::instrument(name = "lobu.erase", skip_all, fields(org = %scope.org(), scope = ?scope))]
    pub async fn erase(&self, scope: &EraseScope) -> Result<ErasureReport> {
        self.shared.cache.remove_where(|key| scope.covers(key));
        let report = self.shared.backend.sessions.erase(scope).await?;
        self.shared.cache.remove_where(|key| scope.covers(key));
        tracing::info!(
            org = %scope.org(),
            conversations = report.conversations,
            snapshots = report.snapshots,
            runs = report.runs,
            events = report.events,
            "erased"
        );
        Ok(report)
    }

    /// The run as the queue has it. Unknown runs and other orgs' runs are `NotFound`.
    #[tracing::instrument(
        name = "lobu.status",
        level = "debug",
        skip_all,
        fields(org = %org, run = %run, agent = Empty, conversation = Empty, gen_ai.conversation.id = Empty)
    )]
    pub async fn status(&self, org: &OrgId, run: &RunId) -> Result<RunRecord> {
        self.shared
            .backend
            .queue
            .status(org, run)
            .await?
            .map(without_trace)
            .ok_or_else(|| Error::not_found(format!("no run {run} in org {org}")))
    }

    /// Follow a run, on whichever replica it executes: every event since it was accepted,
    /// then live events, ending after the terminal one (see [`RunEvents`]). Unknown runs and
    /// other orgs' runs are `NotFound`.
    pub async fn subscribe(&self, org: &OrgId, run: &RunId) -> Result<RunEvents> {
        self.subscribe_after(org, run, None).await
    }

    /// [`subscribe`](Self::subscribe) from after the event with seq `after` (a client that
    /// reconnects: SSE's `Last-Event-ID`); `None` is from the start. Nothing at or before
    /// `after` is sent again, and nothing after it is skipped.
    #[tracing::instrument(
        name = "lobu.subscribe",
        level = "debug",
        skip_all,
        fields(org = %org, run = %run, after = ?after)
    )]
    pub async fn subscribe_after(
        &self,
        org: &OrgId,
        run: &RunId,
        after: Option<u64>,
    ) -> Result<RunEvents> {
        let from = after.map_or(0, |seq| seq.saturating_add(1));
        RunEvents::follow(&self.shared, org, run, from).await
    }

    /// Wait until the run is over and return its final record.
    #[tracing::instrument(
        name = "lobu.wait",
        level = "debug",
        skip_all,
        fields(org = %org, run = %run, agent = Empty, conversation = Empty, gen_ai.conversation.id = Empty)
    )]
    pub async fn wait(&self, org: &OrgId, run: &RunId) -> Result<RunRecord> {
        let mut events = self.subscribe(org, run).await?;
        while let Some(numbered) = events.next().await {
            if numbered.event.is_terminal() {
                break;
            }
        }
        // The terminal event was made from the record read with the run's last events.
        if let Some(record) = events.final_record() {
            return Ok(without_trace(record));
        }
        let record = self.status(org, run).await?;
        if record.status.is_terminal() {
            Ok(record)
        } else {
            // The stream ended without the run's end (it was removed while followed).
            Err(Error::new(
                ErrorKind::Conflict,
                format!("run {run} is {} on the queue", record.status.as_str()),
            ))
        }
    }

    /// A page of the conversation's display messages (lobu's history view): `cursor` is a
    /// `next_cursor` from an earlier page, `limit` at most 200 (default 50). A conversation
    /// without a transcript gives an empty page.
    #[tracing::instrument(
        name = "lobu.messages",
        level = "debug",
        skip_all,
        fields(
            org = %key.org,
            agent = %key.agent,
            conversation = %key.conversation,
            gen_ai.conversation.id = %key,
        )
    )]
    pub async fn messages(
        &self,
        key: &ConversationKey,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<MessagePage> {
        if let Some(limit) = limit {
            check_page_limit(limit)?;
        }
        let head = hydrate(&self.shared, key).await?;
        head.parsed.page(cursor, limit)
    }

    /// Message and token counts and the current model of the conversation.
    #[tracing::instrument(
        name = "lobu.stats",
        level = "debug",
        skip_all,
        fields(
            org = %key.org,
            agent = %key.agent,
            conversation = %key.conversation,
            gen_ai.conversation.id = %key,
        )
    )]
    pub async fn stats(&self, key: &ConversationKey) -> Result<Stats> {
        let head = hydrate(&self.shared, key).await?;
        Ok(head.parsed.stats())
    }

    /// The org's conversations of one agent, ordered by conversation id, with title, turn
    /// count, size and last update. `limit` is `1..=200`.
    #[tracing::instrument(
        name = "lobu.list",
        level = "debug",
        skip_all,
        fields(org = %org, agent = %agent, gen_ai.agent.name = %agent)
    )]
    pub async fn list(
        &self,
        org: &OrgId,
        agent: &AgentId,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ConversationSummary>> {
        check_page_limit(limit)?;
        self.shared
            .backend
            .sessions
            .list(org, agent, cursor, limit)
            .await
    }
}

/// The record as a caller sees it: the payload without the runtime's trace context.
fn without_trace(mut record: RunRecord) -> RunRecord {
    RunTrace::take_from(&mut record.payload);
    spans::record_key(&tracing::Span::current(), &record.key);
    record
}
