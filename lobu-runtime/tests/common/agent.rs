//! A deterministic agent for tests, driven by the message text.
//!
//! * any text `T`: appends a user message `T` and an assistant message
//!   `You said: T (turn N)` (N = user messages in the hydrated transcript + 1), streaming the
//!   answer word by word;
//! * `/fail`: appends the user message, then fails;
//! * `/fail-until K`: fails on attempts before `K`, then answers;
//! * `/sleep MS`: waits MS milliseconds, then answers;
//! * `/hang`: appends the user message, then waits until cancelled (answers at once when
//!   the agent was built with `hang = false`);
//! * `/gate`: waits until the test opens the gate, then answers;
//! * `/big BYTES`: appends an entry of about BYTES bytes, then answers;
//! * `/permanent`: fails with a [`lobu_runtime::Permanent`] error;
//! * `/steer`: waits (up to 30 s) until a steered message waits, takes every one waiting
//!   and appends each as a user message, then answers;
//! * `/steer-fail-once`: as `/steer`, but attempt 1 fails after taking them;
//! * `/panic`: panics.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lobu_core::transcript::{self, AssistantMessage, ContentBlock, Usage};
use lobu_core::{BoxError, ConversationKey, RunId};
use lobu_runtime::{Agent, Turn};
use tokio::sync::watch;

/// What one call of the agent saw and did.
#[derive(Debug, Clone)]
pub struct TurnLog {
    pub key: ConversationKey,
    pub run: RunId,
    pub attempt: u32,
    pub text: String,
    /// User texts of the hydrated transcript.
    pub seen: Vec<String>,
    /// Whether `Turn::parsed` was exactly a fresh parse of `Turn::transcript` (the runtime
    /// keeps the parse across turns instead of parsing the history again).
    pub parse_matches: bool,
    pub scratch: PathBuf,
    pub scratch_was_empty: bool,
    pub start: Instant,
    pub end: Option<Instant>,
    /// Whether the cancellation token had fired when the call ended.
    pub cancelled: bool,
}

#[derive(Debug)]
pub struct State {
    pub turns: Mutex<Vec<TurnLog>>,
    gate: watch::Sender<bool>,
    active: AtomicUsize,
    max_active: AtomicUsize,
    hang: bool,
}

/// The test agent; clones share their state (several runtimes may share one).
#[derive(Debug, Clone)]
pub struct ScriptAgent(pub Arc<State>);

impl ScriptAgent {
    pub fn new() -> Self {
        Self::with_hang(true)
    }

    /// `hang = false`: `/hang` answers at once (a replica that takes over a hung turn).
    pub fn with_hang(hang: bool) -> Self {
        ScriptAgent(Arc::new(State {
            turns: Mutex::new(Vec::new()),
            gate: watch::channel(false).0,
            active: AtomicUsize::new(0),
            max_active: AtomicUsize::new(0),
            hang,
        }))
    }

    pub fn arc(&self) -> Arc<dyn Agent> {
        Arc::new(self.clone())
    }

    pub fn open_gate(&self) {
        self.0.gate.send_replace(true);
    }

    pub fn turns(&self) -> Vec<TurnLog> {
        self.0.turns.lock().unwrap().clone()
    }

    /// The most turns that ran at once.
    pub fn max_active(&self) -> usize {
        self.0.max_active.load(Ordering::SeqCst)
    }
}

/// Records the end of a call even when the runtime drops it (timeout, cancellation).
struct EndGuard<'a> {
    state: &'a State,
    index: usize,
    cancel: tokio_util::sync::CancellationToken,
}

impl Drop for EndGuard<'_> {
    fn drop(&mut self) {
        self.state.active.fetch_sub(1, Ordering::SeqCst);
        let mut turns = self.state.turns.lock().unwrap();
        turns[self.index].end = Some(Instant::now());
        turns[self.index].cancelled = self.cancel.is_cancelled();
    }
}

/// The user texts of a transcript, in order.
pub fn user_texts(bytes: &[u8]) -> Vec<String> {
    transcript::parse(bytes)
        .entries()
        .iter()
        .filter_map(|e| e.message())
        .filter(|m| m.role() == Some("user"))
        .filter_map(|m| {
            m.content()?
                .get(0)?
                .get("text")?
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// The assistant texts of a transcript, in order.
pub fn assistant_texts(bytes: &[u8]) -> Vec<String> {
    transcript::parse(bytes)
        .entries()
        .iter()
        .filter_map(|e| e.message())
        .filter(|m| m.role() == Some("assistant"))
        .filter_map(|m| {
            m.content()?
                .get(0)?
                .get("text")?
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[async_trait::async_trait]
impl Agent for ScriptAgent {
    async fn run_turn(&self, turn: &mut Turn) -> Result<(), BoxError> {
        let state = &*self.0;
        let text = turn.text().to_owned();
        let seen = user_texts(turn.transcript());
        let parse_matches = *turn.parsed() == transcript::parse(turn.transcript());
        let scratch_was_empty = tokio::fs::read_dir(turn.scratch_dir())
            .await?
            .next_entry()
            .await?
            .is_none();
        tokio::fs::write(turn.scratch_dir().join("work.txt"), &text).await?;
        let index = {
            let mut turns = state.turns.lock().unwrap();
            turns.push(TurnLog {
                key: turn.key().clone(),
                run: turn.run().clone(),
                attempt: turn.attempt(),
                text: text.clone(),
                seen: seen.clone(),
                parse_matches,
                scratch: turn.scratch_dir().to_path_buf(),
                scratch_was_empty,
                start: Instant::now(),
                end: None,
                cancelled: false,
            });
            turns.len() - 1
        };
        let now = state.active.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_active.fetch_max(now, Ordering::SeqCst);
        let _end = EndGuard {
            state,
            index,
            cancel: turn.cancelled().clone(),
        };

        // The runtime has appended the user's message (the default).
        let mut words = text.split_whitespace();
        let command = words.next().unwrap_or_default();
        let arg: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        match command {
            "/fail" => return Err(format!("agent failure on attempt {}", turn.attempt()).into()),
            "/fail-until" if u64::from(turn.attempt()) < arg => {
                return Err(format!("flaky failure on attempt {}", turn.attempt()).into());
            }
            "/permanent" => {
                let refused = format!("refused on attempt {}", turn.attempt());
                return Err(lobu_runtime::Permanent::new(refused).into());
            }
            "/panic" => panic!("the test agent panicked"),
            "/sleep" => tokio::time::sleep(Duration::from_millis(arg)).await,
            "/hang" if state.hang => {
                turn.cancelled().cancelled().await;
                return Err("cancelled".into());
            }
            "/steer" | "/steer-fail-once" => {
                let waiting = turn.steered_waiting();
                tokio::time::timeout(Duration::from_secs(30), waiting).await??;
                for steered in turn.take_steered().await? {
                    turn.writer().user_text(steered.text())?;
                }
                if command == "/steer-fail-once" && turn.attempt() == 1 {
                    return Err("failing after taking steered messages".into());
                }
            }
            "/gate" => {
                let mut gate = state.gate.subscribe();
                gate.wait_for(|open| *open).await?;
            }
            "/big" => {
                let mut fields = serde_json::Map::new();
                fields.insert("customType".to_owned(), "blob".into());
                fields.insert("data".to_owned(), "x".repeat(arg as usize).into());
                turn.writer().append("custom", fields)?;
            }
            _ => {}
        }
        let answer = format!("You said: {text} (turn {})", seen.len() + 1);
        for word in answer.split_inclusive(' ') {
            turn.output(word);
        }
        let mut reply =
            AssistantMessage::new("test", "script-1", vec![ContentBlock::text(answer.clone())]);
        reply.usage = Usage::tokens(text.len() as u64, answer.len() as u64);
        turn.writer().assistant(&reply)?;
        Ok(())
    }
}
