//! [`Agent`]: the host's code for one turn, and the [`Turn`] context it receives.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use lobu_core::transcript::{Entry, Transcript, TranscriptWriter, UserInput};
use lobu_core::{BoxError, ConversationKey, RunId, Steered, Version};
use tokio_util::sync::CancellationToken;

use crate::events::RunEvent;
use crate::recorder::EventRecorder;
use crate::steer::Steering;

/// The host's agent: runs one turn of a conversation.
///
/// The runtime calls [`run_turn`](Self::run_turn) with the conversation's last completed
/// transcript already hydrated and the user's message (the payload's text and images)
/// already appended to the turn's working transcript (unless
/// [`appends_user_message`](Self::appends_user_message) says the agent does it). Append what
/// the turn produces through [`Turn::writer`] and stream text through [`Turn::output`] (or
/// [`EntryWriter::output`] while a writer is open). Return `Ok(())` and the working transcript becomes
/// the conversation's new head; return an error (or run past the turn timeout, or be
/// cancelled) and nothing of this attempt reaches the head: the next attempt starts from the
/// same transcript.
///
/// Watch [`Turn::cancelled`] in long operations: after it fires the runtime stops polling the
/// turn and discards its work. Tools should be idempotent: a turn interrupted by a crash is
/// run again from its start.
#[async_trait]
pub trait Agent: Send + Sync + 'static {
    /// Run one turn.
    async fn run_turn(&self, turn: &mut Turn) -> Result<(), BoxError>;

    /// Whether this agent appends the user's message to the transcript itself. `false`, the
    /// default: the runtime appends it (a `user` message of the payload's `text` and
    /// `images`; nothing for a payload with neither) before [`run_turn`](Self::run_turn), so
    /// it is in [`Turn::appended`]. Return `true` to write it your own way.
    fn appends_user_message(&self) -> bool {
        false
    }
}

/// An agent behind an `Arc` (`Arc<dyn Agent>` included) is an agent.
#[async_trait]
impl<A: Agent + ?Sized> Agent for Arc<A> {
    async fn run_turn(&self, turn: &mut Turn) -> Result<(), BoxError> {
        (**self).run_turn(turn).await
    }

    fn appends_user_message(&self) -> bool {
        (**self).appends_user_message()
    }
}

/// Everything one attempt of a turn needs.
pub struct Turn {
    pub(crate) key: ConversationKey,
    pub(crate) run: RunId,
    pub(crate) attempt: u32,
    pub(crate) payload: serde_json::Value,
    pub(crate) version: Option<Version>,
    pub(crate) hydrated: Bytes,
    pub(crate) parsed: Arc<Transcript>,
    pub(crate) writer: TranscriptWriter,
    pub(crate) published: usize,
    pub(crate) output: OutputSink,
    pub(crate) scratch: PathBuf,
    /// Set when the agent asks for `scratch`: the directory is then removed after the
    /// attempt, never handed to another.
    pub(crate) scratch_looked: Arc<AtomicBool>,
    pub(crate) cancel: CancellationToken,
    pub(crate) steering: Arc<Steering>,
}

impl fmt::Debug for Turn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Turn")
            .field("key", &self.key)
            .field("run", &self.run)
            .field("attempt", &self.attempt)
            .field("version", &self.version)
            .field("hydrated_bytes", &self.hydrated.len())
            .field("scratch", &self.scratch)
            .finish_non_exhaustive()
    }
}

impl Turn {
    /// The conversation.
    pub fn key(&self) -> &ConversationKey {
        &self.key
    }

    /// The run this turn executes.
    pub fn run(&self) -> &RunId {
        &self.run
    }

    /// Which attempt of the run this is, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The user's message: the payload's `text` field (empty if it has none).
    pub fn text(&self) -> &str {
        self.payload
            .get("text")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
    }

    /// The whole run payload as submitted, unknown fields included.
    pub fn payload(&self) -> &serde_json::Value {
        &self.payload
    }

    /// The payload as the host's own type (what it gave
    /// [`Runtime::submit_payload`](crate::Runtime::submit_payload)). A payload that does not
    /// fit is a [`Permanent`] error: return it with `?` and the run fails at once (retrying
    /// cannot change the payload).
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, Permanent> {
        T::deserialize(&self.payload).map_err(|e| {
            Permanent::new(format!(
                "the run payload does not fit {}: {e}",
                std::any::type_name::<T>()
            ))
        })
    }

    /// The user's message in the payload: its text and images.
    pub fn user_input(&self) -> UserInput {
        // Checked at submit; a payload queued some other way reads as what it holds.
        UserInput::from_payload(&self.payload).unwrap_or_default()
    }

    /// The version of the hydrated transcript (`None`: the conversation had none).
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// The hydrated transcript, byte for byte (empty for a new conversation).
    pub fn transcript(&self) -> &Bytes {
        &self.hydrated
    }

    /// The hydrated transcript, parsed (entries, session id, skipped lines, display pages).
    pub fn parsed(&self) -> &Transcript {
        &self.parsed
    }

    /// The hydrated transcript's entries, in order.
    pub fn entries(&self) -> &[Entry] {
        self.parsed.entries()
    }

    /// The working transcript: append this turn's entries here. Each entry is also sent to
    /// subscribers as a [`RunEvent::Entry`] when the returned guard is dropped.
    pub fn writer(&mut self) -> EntryWriter<'_> {
        EntryWriter { turn: self }
    }

    /// The entries appended so far in this attempt.
    pub fn appended(&self) -> &[Entry] {
        self.writer.appended()
    }

    /// Stream a piece of output (e.g. a few words of the answer) to subscribers.
    pub fn output(&self, text: impl Into<String>) {
        self.output.send(text);
    }

    /// A cloneable handle to [`output`](Self::output), for tasks the agent spawns.
    pub fn output_sink(&self) -> OutputSink {
        self.output.clone()
    }

    /// A fresh directory for this attempt's files: new and empty, used by no other attempt,
    /// removed after this one. (A directory an attempt never asks for here, and leaves
    /// empty, may serve a later attempt instead: it was never this one's.)
    pub fn scratch_dir(&self) -> &Path {
        self.scratch_looked.store(true, Ordering::Release);
        &self.scratch
    }

    /// Fires when the attempt must stop (shutdown past its grace period, turn timeout, or
    /// this worker lost the conversation). Work done after it fires is discarded.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Take the messages sent to this conversation with the `steer` strategy while this turn
    /// runs, oldest first (one store read; empty when none waits). Append each where the
    /// turn answers it (as the turn's own user message: `writer().user_text(steered.text())`):
    /// the taken messages' runs complete with this turn's commit, atomically, and are never
    /// run on their own. Messages not taken, or sent after the turn ended, run as their own
    /// turns, in order. If this attempt fails, the next one is offered them again.
    ///
    /// Errors: `Cancelled` (the run was cancelled) or `Fenced` (another worker owns the
    /// conversation now); return them and the runtime ends the attempt accordingly.
    pub async fn take_steered(&self) -> Result<Vec<Steered>, lobu_core::Error> {
        self.steering.take().await
    }

    /// Resolves once a steered message this turn has not taken waits (a notification, so an
    /// agent can `select!` on it while it works); take it with
    /// [`take_steered`](Self::take_steered). Looks at the store when woken, at most every
    /// 100 ms and at least every second.
    pub async fn steered_waiting(&self) -> Result<(), lobu_core::Error> {
        self.steering.waiting().await
    }

    /// Append the payload's user message (text and images; nothing for a payload with
    /// neither) and publish it.
    pub(crate) fn record_user_message(&mut self) -> lobu_core::Result<()> {
        let input = UserInput::from_payload(&self.payload)?;
        if !input.is_empty() {
            self.writer.user(&input.content())?;
            self.publish_new_entries();
        }
        Ok(())
    }

    fn publish_new_entries(&mut self) {
        let appended = self.writer.appended();
        for entry in appended.get(self.published..).unwrap_or_default() {
            self.output.log_event(RunEvent::Entry {
                attempt: self.attempt,
                entry: serde_json::Value::Object(entry.fields().clone()),
            });
        }
        self.published = appended.len();
    }
}

/// Mutable access to a turn's [`TranscriptWriter`]; publishes the entries appended through
/// it when dropped.
pub struct EntryWriter<'a> {
    turn: &'a mut Turn,
}

impl fmt::Debug for EntryWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntryWriter").finish_non_exhaustive()
    }
}

impl Deref for EntryWriter<'_> {
    type Target = TranscriptWriter;
    fn deref(&self) -> &TranscriptWriter {
        &self.turn.writer
    }
}

impl DerefMut for EntryWriter<'_> {
    fn deref_mut(&mut self) -> &mut TranscriptWriter {
        &mut self.turn.writer
    }
}

impl EntryWriter<'_> {
    /// Stream a piece of output while the writer is open (the same as [`Turn::output`]).
    pub fn output(&self, text: impl Into<String>) {
        self.turn.output.send(text);
    }
}

impl Drop for EntryWriter<'_> {
    fn drop(&mut self) {
        self.turn.publish_new_entries();
    }
}

/// Streams output of one attempt to the run's subscribers. Cheap to clone; sends after the
/// attempt ended are ignored.
#[derive(Clone)]
pub struct OutputSink {
    log: Arc<EventRecorder>,
    attempt: u32,
    open: Arc<AtomicBool>,
}

impl fmt::Debug for OutputSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputSink")
            .field("attempt", &self.attempt)
            .field("open", &self.is_open())
            .finish()
    }
}

impl OutputSink {
    pub(crate) fn new(log: Arc<EventRecorder>, attempt: u32) -> Self {
        OutputSink {
            log,
            attempt,
            open: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Send a piece of output.
    pub fn send(&self, text: impl Into<String>) {
        self.log_event(RunEvent::Output {
            attempt: self.attempt,
            text: text.into(),
        });
    }

    /// Whether the attempt is still running (sends are delivered).
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    pub(crate) fn close(&self) {
        self.open.store(false, Ordering::Release);
    }

    fn log_event(&self, event: RunEvent) {
        if self.is_open() {
            self.log.push(event);
        }
    }
}

/// An agent error that retrying cannot fix (a malformed request, a refused input): return it
/// from [`Agent::run_turn`] and the run fails at once with its message, whatever attempts
/// remain. Any other error is retried with backoff.
///
/// ```
/// use lobu_core::BoxError;
/// use lobu_runtime::Permanent;
///
/// fn refuse() -> Result<(), BoxError> {
///     Err(Permanent::new("the attachment is not an image").into())
/// }
/// assert!(refuse().unwrap_err().is::<Permanent>());
/// ```
#[derive(Debug)]
pub struct Permanent(BoxError);

impl Permanent {
    /// Wrap `error` as permanent.
    pub fn new(error: impl Into<BoxError>) -> Self {
        Permanent(error.into())
    }

    /// The error it wraps.
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl fmt::Display for Permanent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Permanent {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}
