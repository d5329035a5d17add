//! [`OpenAiAgent`]: the conversation's history in, the model's streamed answer out.

use async_trait::async_trait;
use lobu_core::BoxError;
use lobu_core::transcript::{AssistantMessage, ContentBlock, Entry};
use lobu_runtime::{Agent, Permanent, Turn};
use serde_json::{Value, json};

use crate::client::http_client;
use crate::completion::complete;
use crate::config::OpenAiConfig;
use crate::error::OpenAiError;

/// The provider name written into transcripts.
pub const PROVIDER: &str = "openai-compatible";
/// The `api` recorded on each answer.
pub const API: &str = "openai-completions";
/// How many times one turn asks the model again for steered messages; later ones run as
/// their own turns.
pub const MAX_STEER_ROUNDS: usize = 8;

/// An [`Agent`] for an OpenAI-compatible chat completions endpoint.
///
/// Each turn sends the conversation's user and assistant texts plus the new message to
/// `<base>/chat/completions` with `stream: true`, streams the answer's pieces as the run's
/// output as they arrive and appends the user message and the answer (with the endpoint's
/// token usage) to the transcript. A `model_change` is recorded whenever the configured
/// model differs from the transcript's current one. A non-2xx answer, a broken or malformed
/// stream, a TLS failure or cancellation fails the turn with an [`OpenAiError`], so nothing
/// of it reaches the transcript.
///
/// Steering: after each answer the agent takes the messages sent with the `steer` strategy
/// meanwhile; if there are any, the answer and those user messages are appended and the
/// model is asked again with them (at most [`MAX_STEER_ROUNDS`] times), so one turn answers
/// them all.
#[derive(Debug, Clone)]
pub struct OpenAiAgent {
    config: OpenAiConfig,
    client: reqwest::Client,
}

impl OpenAiAgent {
    /// An agent for the endpoint in `config`, with its HTTPS client ready. Fails when the TLS
    /// verifier or the client cannot be built.
    pub fn new(config: OpenAiConfig) -> Result<Self, OpenAiError> {
        let client = http_client(&config)?;
        Ok(OpenAiAgent { config, client })
    }

    /// Its config.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }
}

#[async_trait]
impl Agent for OpenAiAgent {
    /// The agent writes the user's message itself, after a `model_change` when the model
    /// changed (pi's order: the model first, then what it answers).
    fn appends_user_message(&self) -> bool {
        true
    }

    async fn run_turn(&self, turn: &mut Turn) -> Result<(), BoxError> {
        let model = self.config.model();
        let text = turn.text().to_owned();
        let mut messages: Vec<Value> = turn.entries().iter().filter_map(chat_message).collect();
        messages.push(json!({ "role": "user", "content": text }));
        let current_model = turn
            .entries()
            .iter()
            .rev()
            .find(|e| e.entry_type() == Some("model_change"))
            .and_then(|e| e.model_id())
            .map(str::to_owned);
        {
            let mut writer = turn.writer();
            if current_model.as_deref() != Some(model) {
                writer.model_change(PROVIDER, model)?;
            }
            writer.user_text(&text)?;
        }
        for round in 0..=MAX_STEER_ROUNDS {
            let (answer, usage) = complete(&self.client, &self.config, turn, &messages)
                .await
                .map_err(permanent_if_refused)?;
            messages.push(json!({ "role": "assistant", "content": answer }));
            let mut reply =
                AssistantMessage::new(PROVIDER, model, vec![ContentBlock::text(answer)]);
            reply.api = Some(API.to_owned());
            reply.usage = usage;
            turn.writer().assistant(&reply)?;
            if round == MAX_STEER_ROUNDS {
                break;
            }
            let steered = turn.take_steered().await?;
            if steered.is_empty() {
                break;
            }
            for message in steered {
                turn.writer().user_text(message.text())?;
                messages.push(json!({ "role": "user", "content": message.text() }));
                turn.output("\n\n");
            }
        }
        Ok(())
    }
}

/// A transcript entry as a chat message: the text of user and assistant messages; tool
/// traffic and other entries are left out (this agent calls no tools).
fn chat_message(entry: &Entry) -> Option<Value> {
    let message = entry.message()?;
    let role = message.role()?;
    if role != "user" && role != "assistant" {
        return None;
    }
    let text = match message.content()? {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => return None,
    };
    (!text.is_empty()).then(|| json!({ "role": role, "content": text }))
}

/// A 4xx answer (a bad key, a malformed request, a model that does not exist) will be the
/// same on every attempt: it fails the run at once ([`Permanent`]). 408 and 429 (timeouts and
/// rate limits) pass, and 5xx and transport errors are retried.
fn permanent_if_refused(error: OpenAiError) -> BoxError {
    match error {
        OpenAiError::Status { status, .. }
            if (400..500).contains(&status) && status != 408 && status != 429 =>
        {
            Permanent::new(error).into()
        }
        other => other.into(),
    }
}
