//! [`DemoAgent`]: an offline, deterministic agent, so everything runs with no model and no
//! network.

use std::time::Duration;

use async_trait::async_trait;
use lobu_core::BoxError;
use lobu_core::transcript::{
    AssistantMessage, ContentBlock, StopReason, ToolResult, Transcript, Usage,
};
use lobu_runtime::{Agent, Turn};
use tokio_util::sync::CancellationToken;

/// The provider the demo agent's messages name.
pub const DEMO_PROVIDER: &str = "lobu-demo";
/// The model the demo agent's messages name.
pub const DEMO_MODEL: &str = "echo-1";
/// The longest `/sleep`, in milliseconds (10 minutes).
pub const MAX_SLEEP_MS: u64 = 600_000;
/// How often `/sleep` reports progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// The built-in agent. For a text `T` it appends a user message `T` and an assistant message
/// `You said: T (turn N)`, N being the number of user messages in the transcript including
/// this one, with usage token counts (about 4 bytes per token), and streams the answer word
/// by word. The first turn of a conversation also records a `model_change` to
/// `lobu-demo/echo-1`, so stats report a current model.
///
/// Commands (the whole text, surrounding spaces ignored):
/// * `/fail`: appends the user message, then fails the turn (nothing reaches the transcript);
/// * `/sleep MS`: streams progress every 250 ms for MS milliseconds (at most 600000), then
///   answers; it stops at once when the turn is cancelled. A bad MS fails the turn;
/// * `/tool`: the assistant calls the `conversation_stats` tool, the tool's result is
///   appended, then the assistant answers.
///
/// Steering: messages sent with the `steer` strategy while a turn runs are taken between
/// steps (after each `/sleep` progress step, and before the answer), appended as user
/// messages where the turn is, announced as `[steered: S]`, and answered in the same turn
/// (`… Then you said: S.`).
#[derive(Debug, Clone)]
pub struct DemoAgent {
    word_delay: Duration,
}

impl Default for DemoAgent {
    fn default() -> Self {
        DemoAgent::new(Duration::from_millis(30))
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Say,
    Fail,
    Sleep(u64),
    Tool,
}

impl Command {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        Ok(match text.split_once(char::is_whitespace) {
            None if text == "/fail" => Command::Fail,
            None if text == "/tool" => Command::Tool,
            None if text == "/sleep" => return Err(sleep_usage()),
            Some(("/sleep", ms)) => match ms.trim().parse::<u64>() {
                Ok(ms) if ms <= MAX_SLEEP_MS => Command::Sleep(ms),
                _ => return Err(sleep_usage()),
            },
            _ => Command::Say,
        })
    }
}

fn sleep_usage() -> String {
    format!("usage: /sleep MS, with MS a whole number of milliseconds up to {MAX_SLEEP_MS}")
}

impl DemoAgent {
    /// A demo agent pausing `word_delay` between streamed words (zero streams them at once).
    pub fn new(word_delay: Duration) -> Self {
        DemoAgent { word_delay }
    }

    /// Send `text` word by word, pausing between words; `Err` when cancelled.
    async fn stream_words(
        &self,
        turn: &Turn,
        text: &str,
        cancel: &CancellationToken,
    ) -> Result<(), BoxError> {
        for (index, word) in text.split(' ').enumerate() {
            if index > 0 {
                pause(self.word_delay, cancel).await?;
            }
            turn.output(if index == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Agent for DemoAgent {
    /// The demo writes the user's message itself, after a `model_change` on a first turn
    /// (pi's order: the model first, then what it answers).
    fn appends_user_message(&self) -> bool {
        true
    }

    async fn run_turn(&self, turn: &mut Turn) -> Result<(), BoxError> {
        let text = turn.text().to_owned();
        let cancel = turn.cancelled().clone();
        let turn_number = user_messages(turn.parsed()) + 1;
        let first_turn = !turn
            .entries()
            .iter()
            .any(|e| e.entry_type() == Some("model_change"));
        {
            let mut writer = turn.writer();
            if first_turn {
                writer.model_change(DEMO_PROVIDER, DEMO_MODEL)?;
            }
            writer.user_text(&text)?;
        }
        let command = Command::parse(&text)?;
        // The prompt a model would read: the whole transcript so far.
        let mut prompt_bytes = turn.transcript().len() + text.len();
        let mut steered = Vec::new();
        match command {
            Command::Say => {}
            Command::Fail => return Err("the demo agent was asked to fail (/fail)".into()),
            Command::Sleep(ms) => steered = sleep_with_progress(turn, ms, &cancel).await?,
            Command::Tool => {
                prompt_bytes += call_stats_tool(turn, turn_number)?;
            }
        }
        steered.extend(take_steered(turn).await?);
        let mut answer = format!("You said: {text} (turn {turn_number})");
        if !steered.is_empty() {
            prompt_bytes += steered.iter().map(String::len).sum::<usize>();
            answer.push_str(&format!(" Then you said: {}.", steered.join(" / ")));
        }
        self.stream_words(turn, &answer, &cancel).await?;
        let mut reply =
            AssistantMessage::new(DEMO_PROVIDER, DEMO_MODEL, vec![ContentBlock::text(&answer)]);
        reply.usage = Usage::tokens(tokens(prompt_bytes), tokens(answer.len()));
        turn.writer().assistant(&reply)?;
        Ok(())
    }
}

/// The assistant calls `conversation_stats` and the result is appended; returns the bytes
/// the model would read back.
fn call_stats_tool(turn: &mut Turn, turn_number: u64) -> Result<usize, BoxError> {
    let call_id = format!("call_{turn_number}");
    let result_text = format!(
        "{turn_number} user messages; {} bytes of transcript before this turn",
        turn.transcript().len()
    );
    let mut call = AssistantMessage::new(
        DEMO_PROVIDER,
        DEMO_MODEL,
        vec![
            ContentBlock::text("Let me look at this conversation."),
            ContentBlock::tool_call(&call_id, "conversation_stats", serde_json::json!({})),
        ],
    );
    call.stop_reason = StopReason::ToolUse;
    call.usage = Usage::tokens(tokens(turn.transcript().len()), 12);
    turn.output("[calling conversation_stats]\n");
    let mut writer = turn.writer();
    writer.assistant(&call)?;
    writer.tool_result(&ToolResult::text(
        &call_id,
        "conversation_stats",
        &result_text,
    ))?;
    drop(writer);
    turn.output(format!("[conversation_stats: {result_text}]\n"));
    Ok(result_text.len())
}

/// Sleep `ms`, reporting progress every 250 ms and taking steered messages between steps;
/// returns their texts.
async fn sleep_with_progress(
    turn: &mut Turn,
    ms: u64,
    cancel: &CancellationToken,
) -> Result<Vec<String>, BoxError> {
    let total = Duration::from_millis(ms);
    let mut slept = Duration::ZERO;
    let mut steered = Vec::new();
    while slept < total {
        let step = PROGRESS_EVERY.min(total - slept);
        pause(step, cancel).await?;
        slept += step;
        turn.output(format!("[slept {} of {ms} ms]\n", slept.as_millis()));
        steered.extend(take_steered(turn).await?);
    }
    Ok(steered)
}

/// Take the steered messages waiting (one store read), append each as a user message where
/// the turn is now and announce it; returns their texts.
async fn take_steered(turn: &mut Turn) -> Result<Vec<String>, BoxError> {
    let mut texts = Vec::new();
    for steered in turn.take_steered().await? {
        let text = steered.text().to_owned();
        turn.writer().user_text(&text)?;
        turn.output(format!("[steered: {text}]\n"));
        texts.push(text);
    }
    Ok(texts)
}

/// Wait `delay`, or fail as soon as the turn is cancelled.
async fn pause(delay: Duration, cancel: &CancellationToken) -> Result<(), BoxError> {
    if delay.is_zero() {
        return if cancel.is_cancelled() {
            Err("turn cancelled".into())
        } else {
            Ok(())
        };
    }
    tokio::select! {
        () = tokio::time::sleep(delay) => Ok(()),
        () = cancel.cancelled() => Err("turn cancelled".into()),
    }
}

fn user_messages(transcript: &Transcript) -> u64 {
    transcript.stats().user_messages
}

/// About four bytes per token, as common tokenizers average on English text; at least one.
fn tokens(bytes: usize) -> u64 {
    u64::try_from(bytes.div_ceil(4).max(1)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_the_whole_text() {
        assert_eq!(Command::parse("/fail"), Ok(Command::Fail));
        assert_eq!(Command::parse("  /tool "), Ok(Command::Tool));
        assert_eq!(Command::parse("/sleep 1500"), Ok(Command::Sleep(1500)));
        assert_eq!(Command::parse("/failing"), Ok(Command::Say));
        assert_eq!(Command::parse("please /fail"), Ok(Command::Say));
        assert_eq!(Command::parse("/fail now"), Ok(Command::Say));
        assert_eq!(Command::parse("hello"), Ok(Command::Say));
    }

    #[test]
    fn bad_sleeps_are_refused_with_usage() {
        for bad in [
            "/sleep",
            "/sleep soon",
            "/sleep -5",
            "/sleep 600001",
            "/sleep 1.5",
        ] {
            let error = Command::parse(bad).unwrap_err();
            assert!(error.starts_with("usage: /sleep MS"), "{bad}: {error}");
        }
        assert_eq!(
            Command::parse("/sleep 600000"),
            Ok(Command::Sleep(MAX_SLEEP_MS))
        );
    }

    #[test]
    fn token_estimate_rounds_up_and_is_never_zero() {
        assert_eq!(tokens(0), 1);
        assert_eq!(tokens(4), 1);
        assert_eq!(tokens(5), 2);
    }
}
