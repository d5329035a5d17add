//! One attempt of a turn, under the conversation lease: hydrate → scratch directory → the
//! agent under the turn timeout → persist.

use std::any::Any;
use std::error::Error as StdError;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::FutureExt;
use lobu_core::transcript::{self, TranscriptWriter};
use lobu_core::{BoxError, Claim, Error, ErrorKind, Lease, Persist, TerminalStatus};
use tokio_util::sync::CancellationToken;

use crate::agent::{OutputSink, Turn};
use crate::events::RunEvent;
use crate::execute::{Outcome, bounded};
use crate::hub::RunLog;
use crate::hydrate::{Hydrated, hydrate};
use crate::metrics::{add, add_time, bump};
use crate::runtime::Shared;
use crate::scratch::ScratchDir;

pub(crate) async fn run_turn(
    shared: &Arc<Shared>,
    claim: &Claim,
    lease: &Lease,
    log: &Arc<RunLog>,
    cancel: &CancellationToken,
) -> Outcome {
    let hydrated = match bounded(shared, "hydrating", hydrate(shared, &claim.key)).await {
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
        return Outcome::Completed(None);
    }
    if cancel.is_cancelled() {
        return Outcome::Interrupted;
    }
    let scratch = match ScratchDir::create(&shared.settings.scratch_root).await {
        Ok(scratch) => scratch,
        Err(e) => return Outcome::Failed(TerminalStatus::Failed, describe(&e)),
    };
    let outcome = attempt(shared, claim, lease, log, hydrated, scratch.path(), cancel).await;
    scratch.remove().await;
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
    lease: &Lease,
    log: &Arc<RunLog>,
    hydrated: Hydrated,
    scratch: &Path,
    cancel: &CancellationToken,
) -> Outcome {
    let sink = OutputSink::new(log.clone(), claim.attempt);
    let mut turn = Turn {
        key: claim.key.clone(),
        run: claim.run.clone(),
        attempt: claim.attempt,
        payload: claim.payload.clone(),
        version: hydrated.version,
        parsed: transcript::parse(&hydrated.transcript),
        writer: TranscriptWriter::open(hydrated.transcript.to_vec(), &scratch.to_string_lossy()),
        hydrated: hydrated.transcript,
        published: 0,
        output: sink.clone(),
        scratch: scratch.to_path_buf(),
        cancel: cancel.clone(),
    };
    log.push(RunEvent::Started {
        attempt: claim.attempt,
    });
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
        End::Returned(Ok(())) => persist(shared, claim, lease, turn).await,
        End::Panicked(message) => Outcome::Failed(
            TerminalStatus::Failed,
            format!("the agent panicked: {message}"),
        ),
        _ if timed_out.load(Ordering::Acquire) => Outcome::Failed(
            TerminalStatus::Timeout,
            format!("the turn ran past its time limit of {limit:?}"),
        ),
        End::Returned(Err(_)) | End::Cancelled if cancel.is_cancelled() => Outcome::Interrupted,
        End::Returned(Err(e)) => Outcome::Failed(TerminalStatus::Failed, describe(e.as_ref())),
        End::Cancelled => Outcome::Interrupted,
    }
}

async fn persist(shared: &Shared, claim: &Claim, lease: &Lease, turn: Turn) -> Outcome {
    if turn.writer.appended().is_empty() {
        return Outcome::Completed(None); // nothing to write: the head stays as it is
    }
    let expected = turn.version;
    let base = turn.hydrated.len();
    let transcript = turn.writer.into_bytes();
    let sessions = &shared.backend.sessions;
    let limit = shared
        .settings
        .max_transcript_bytes
        .min(sessions.max_transcript_bytes());
    if transcript.len() > limit {
        // lobu logged an oversized snapshot and lost every later turn; we fail visibly and
        // keep the head as it was. Nothing is truncated.
        let e = Error::too_large(format!(
            "the transcript would be {} bytes; the limit is {limit}",
            transcript.len()
        ));
        return Outcome::Failed(TerminalStatus::Failed, describe(&e));
    }
    let started = Instant::now();
    let write = Persist {
        run: claim.run.clone(),
        status: TerminalStatus::Completed,
        transcript: transcript.clone(),
        expected,
        fence: lease.fence,
    };
    let result = bounded(shared, "persisting", sessions.persist(&claim.key, write)).await;
    add_time(&shared.counters.persist_micros, started.elapsed());
    match result {
        Ok(version) => {
            bump(&shared.counters.persist_writes);
            add(
                &shared.counters.persist_bytes,
                transcript.len().saturating_sub(base) as u64,
            );
            tracing::debug!(%version, bytes = transcript.len(), "turn persisted");
            shared
                .cache
                .put(&claim.key, version, claim.run.clone(), transcript);
            Outcome::Completed(None)
        }
        Err(e) => {
            shared.cache.remove(&claim.key);
            if e.is(ErrorKind::Fenced) {
                Outcome::Release("another worker took over the conversation".to_owned())
            } else if e.is(ErrorKind::Unavailable) {
                // Timed out or the connection dropped: the write may have landed, or may
                // still land. The executor settles it under a fresh fence.
                Outcome::PersistUnknown(format!(
                    "persisting the transcript failed: {}",
                    describe(&e)
                ))
            } else {
                Outcome::Failed(
                    TerminalStatus::Failed,
                    format!("persisting the transcript failed: {}", describe(&e)),
                )
            }
        }
    }
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
