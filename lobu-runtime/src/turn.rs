//! One attempt of a turn, under its claim (the conversation's ownership): hydrate → scratch
//! directory → the agent under the turn timeout → the commit to make.

use std::any::Any;
use std::error::Error as StdError;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt;
use lobu_core::transcript::TranscriptWriter;
use lobu_core::{BoxError, Claim, Commit, Error, ErrorKind, TerminalStatus};
use tokio_util::sync::CancellationToken;

use crate::agent::Permanent;
use crate::agent::{OutputSink, Turn};
use crate::events::RunEvent;
use crate::execute::{Appended, Outcome, bounded};
use crate::hydrate::{Hydrated, hydrate_claimed};
use crate::recorder::EventRecorder;
use crate::runtime::Shared;
use crate::steer::Steering;

pub(crate) async fn run_turn(
    shared: &Arc<Shared>,
    claim: &Claim,
    log: &Arc<EventRecorder>,
    cancel: &CancellationToken,
) -> Outcome {
    let hydrate = hydrate_claimed(shared, &claim.key, claim.head);
    let hydrated = match bounded(shared, "hydrating", hydrate).await {
        Ok(hydrated) => hydrated,
        Err(e) => {
            return Outcome::Failed(
                TerminalStatus::Failed,
                format!("hydrating the transcript failed: {}", describe(&e)),
            );
        }
    };
    if hydrated.run.as_ref() == Some(&claim.run) {
        // An earlier attempt persisted this turn and died before completing the run.
        tracing::info!("the turn is already the head; completing the run without re-running it");
        return Outcome::Commit(Commit::default(), Appended::default());
    }
    if cancel.is_cancelled() {
        return Outcome::Interrupted;
    }
    let scratch = match shared.scratch.take().await {
        Ok(scratch) => scratch,
        Err(e) => return Outcome::Failed(TerminalStatus::Failed, describe(&e)),
    };
    let looked = Arc::new(AtomicBool::new(false));
    let outcome = attempt(
        shared,
        claim,
        log,
        hydrated,
        (scratch.path(), &looked),
        cancel,
    )
    .await;
    shared
        .scratch
        .hand_back(scratch, looked.load(Ordering::Acquire));
    outcome
}

enum End {
    Returned(Result<(), BoxError>),
    Panicked(String),
    Cancelled,
}

async fn attempt(
    shared: &Shared,
    claim: &Claim,
    log: &Arc<EventRecorder>,
    hydrated: Hydrated,
    (scratch, looked): (&Path, &Arc<AtomicBool>),
    cancel: &CancellationToken,
) -> Outcome {
    let sink = OutputSink::new(log.clone(), claim.attempt);
    let mut turn = Turn {
        key: claim.key.clone(),
        run: claim.run.clone(),
        attempt: claim.attempt,
        payload: claim.payload.clone(),
        version: hydrated.version,
        writer: TranscriptWriter::continue_parsed(
            hydrated.transcript.to_vec(),
            &hydrated.parsed,
            &scratch.to_string_lossy(),
        ),
        parsed: hydrated.parsed,
        hydrated: hydrated.transcript,
        published: 0,
        output: sink.clone(),
        scratch: scratch.to_path_buf(),
        scratch_looked: Arc::clone(looked),
        cancel: cancel.clone(),
        steering: Arc::new(Steering::new(
            shared.backend.queue.clone(),
            claim.clone(),
            log.clone(),
        )),
    };
    log.push(RunEvent::Started {
        attempt: claim.attempt,
    });
    // Checked at submit; a payload queued some other way may not fit: no retry fixes it.
    if !shared.agent.appends_user_message()
        && let Err(error) = turn.record_user_message()
    {
        sink.close();
        return Outcome::Permanent(format!("the user's message: {}", error.message()));
    }
    let limit = shared.settings.turn_timeout;
    let timed_out = AtomicBool::new(false);
    // At the deadline the token fires while the agent is still alive, so the agent (and
    // anything it spawned) sees the cancellation before the runtime drops the turn.
    let deadline = async {
        tokio::time::sleep(limit).await;
        timed_out.store(true, Ordering::Release);
        cancel.cancel();
        std::future::pending::<()>().await;
    };
    let end = {
        let agent = AssertUnwindSafe(shared.agent.run_turn(&mut turn)).catch_unwind();
        tokio::select! {
            // A turn that finished wins over a cancellation that arrived at the same moment.
            biased;
            result = agent => match result {
                Ok(result) => End::Returned(result),
                Err(panic) => End::Panicked(panic_message(panic.as_ref())),
            },
            () = cancel.cancelled() => End::Cancelled,
            () = deadline => End::Cancelled,
        }
    };
    sink.close();
    match end {
        End::Returned(Ok(())) => finish(shared, turn),
        End::Panicked(message) => Outcome::Failed(
            TerminalStatus::Failed,
            format!("the agent panicked: {message}"),
        ),
        _ if timed_out.load(Ordering::Acquire) => Outcome::Failed(
            TerminalStatus::Timeout,
            format!("the turn ran past its time limit of {limit:?}"),
        ),
        End::Returned(Err(_)) | End::Cancelled if cancel.is_cancelled() => Outcome::Interrupted,
        End::Returned(Err(e)) if e.is::<Permanent>() => Outcome::Permanent(describe(e.as_ref())),
        // The turn learnt through the store (taking steered messages) that it lost the run.
        End::Returned(Err(e)) if store_said(e.as_ref(), ErrorKind::Fenced) => Outcome::TakenOver,
        End::Returned(Err(e)) if store_said(e.as_ref(), ErrorKind::Cancelled) => {
            Outcome::Failed(TerminalStatus::Cancelled, describe(e.as_ref()))
        }
        End::Returned(Err(e)) => Outcome::Failed(TerminalStatus::Failed, describe(e.as_ref())),
        End::Cancelled => Outcome::Interrupted,
    }
}

/// The commit a finished turn makes: the bytes it appended to the head it started from, or
/// nothing when it appended nothing. Checked against the size limit first. The parse of the
/// new transcript is the hydrated one plus this turn's entries (no parse of the history).
///
/// The steered messages the turn took complete with the commit.
fn finish(shared: &Shared, turn: Turn) -> Outcome {
    let steered = turn.steering.taken();
    let mut outcome = commit_of(shared, turn);
    if let Outcome::Commit(commit, _) = &mut outcome {
        commit.steered = steered;
    }
    outcome
}

fn commit_of(shared: &Shared, turn: Turn) -> Outcome {
    if turn.writer.appended().is_empty() {
        // Nothing to write: the head stays, and so does its parse.
        let appended = Appended {
            bytes: 0,
            parsed: Some(turn.parsed),
            transcript: None,
        };
        return Outcome::Commit(Commit::default(), appended);
    }
    let expected = turn.version;
    let base = turn.hydrated.len();
    let limit = shared
        .settings
        .max_transcript_bytes
        .min(shared.backend.sessions.max_transcript_bytes());
    if turn.writer.len() > limit {
        // lobu logged an oversized snapshot and lost every later turn; we fail visibly and
        // keep the head as it was. Nothing is truncated.
        let e = Error::too_large(format!(
            "the transcript would be {} bytes; the limit is {limit}",
            turn.writer.len()
        ));
        // Retrying cannot make the transcript smaller: the run fails now.
        return Outcome::Permanent(describe(&e));
    }
    let mut parsed = turn.parsed;
    // The cache gave the parse to this turn alone, so this does not copy it.
    turn.writer.apply_to(Arc::make_mut(&mut parsed));
    let transcript = turn.writer.into_bytes();
    // The writer only appends: the head's bytes are unchanged, and only the new ones go.
    let new_bytes = transcript.slice(base.min(transcript.len())..);
    let appended = Appended {
        bytes: new_bytes.len() as u64,
        parsed: Some(parsed),
        transcript: Some(transcript),
    };
    Outcome::Commit(Commit::append(new_bytes, expected, base), appended)
}

/// Whether the agent's error is the store's `kind` (from a [`Turn`] call such as
/// `take_steered`).
fn store_said(error: &(dyn StdError + 'static), kind: ErrorKind) -> bool {
    error.downcast_ref::<Error>().is_some_and(|e| e.is(kind))
}

/// An error with its sources, `outer: inner: …`.
pub(crate) fn describe(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}
