//! [`OpenAiAgent`]: an agent for any OpenAI-compatible chat completions endpoint (feature
//! `openai`), chosen when `LOBU_LLM_BASE_URL` is set.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lobu_core::BoxError;
use lobu_core::transcript::{AssistantMessage, ContentBlock, Entry, Usage};
use lobu_runtime::{Agent, Turn};
use serde_json::{Value, json};

use crate::config::LlmConfig;

/// The provider name written into transcripts.
const PROVIDER: &str = "openai-compatible";
/// How long to wait for the endpoint to start answering.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times one turn asks the model again for steered messages; later ones run as
/// their own turns.
pub(crate) const MAX_STEER_ROUNDS: usize = 8;

/// Sends the conversation's user and assistant texts plus the new message to
/// `<base>/chat/completions` with `stream: true`, streams the answer's pieces as they arrive
/// and appends the user message and the answer (with the endpoint's token usage) to the
/// transcript. A `model_change` is recorded whenever the configured model differs from the
/// transcript's current one. A non-2xx answer, a broken stream or cancellation fails the
/// turn, so nothing of it reaches the transcript.
///
/// Steering: after each answer the agent takes the messages sent with the `steer` strategy
/// meanwhile; if there are any, the answer and those user messages are appended and the
/// model is asked again with them (at most 8 times), so one turn answers
/// them all. Plain `http://` only: this example carries
/// no TLS client (use a local server such as Ollama, vLLM or llama.cpp, or a TLS proxy).
#[derive(Debug, Clone)]
pub struct OpenAiAgent {
    config: LlmConfig,
    client: reqwest::Client,
}

impl OpenAiAgent {
    /// An agent for the endpoint in `config`.
    pub fn new(config: LlmConfig) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .unwrap_or_default();
        OpenAiAgent { config, client }
    }

    async fn complete(
        &self,
        turn: &Turn,
        messages: Vec<Value>,
    ) -> Result<(String, Usage), BoxError> {
        let url = format!("{}/chat/completions", self.config.base_url);
        let body = json!({
            "model": self.config.model,
            "messages": messages,
            "stream": true,
            "stream_options": { "include_usage": true },
        });
        let mut request = self.client.post(&url).json(&body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let excerpt: String = text.chars().take(300).collect();
            return Err(format!("the model endpoint answered {status}: {excerpt}").into());
        }
        let mut stream = response.bytes_stream();
        let mut buffer = Vec::new();
        let mut answer = String::new();
        let mut usage = Usage::default();
        let cancel = turn.cancelled().clone();
        loop {
            let chunk = tokio::select! {
                chunk = stream.next() => chunk,
                () = cancel.cancelled() => return Err("turn cancelled".into()),
            };
            let Some(chunk) = chunk else {
                return Err("the model endpoint closed the stream before [DONE]".into());
            };
            buffer.extend_from_slice(&chunk?);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let line = std::str::from_utf8(&line)?.trim();
                let Some(data) = line.strip_prefix("data:").map(str::trim) else {
                    continue; // comments, `event:` lines and blank separators
                };
                if data == "[DONE]" {
                    return Ok((answer, usage));
                }
                let event: Value = serde_json::from_str(data)?;
                if let Some(error) = event.get("error") {
                    return Err(format!("the model endpoint reported an error: {error}").into());
                }
                if let Some(piece) = event["choices"][0]["delta"]["content"].as_str() {
                    turn.output(piece);
                    answer.push_str(piece);
                }
                if let Some(reported) = event.get("usage").filter(|u| u.is_object()) {
                    usage = Usage::tokens(
                        reported["prompt_tokens"].as_u64().unwrap_or(0),
                        reported["completion_tokens"].as_u64().unwrap_or(0),
                    );
                }
            }
        }
    }
}

#[async_trait]
impl Agent for OpenAiAgent {
    async fn run_turn(&self, turn: &mut Turn) -> Result<(), BoxError> {
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
            if current_model.as_deref() != Some(self.config.model.as_str()) {
                writer.model_change(PROVIDER, &self.config.model)?;
            }
            writer.user_text(&text)?;
        }
        for round in 0..=MAX_STEER_ROUNDS {
            let (answer, usage) = self.complete(turn, messages.clone()).await?;
            messages.push(json!({ "role": "assistant", "content": answer }));
            let mut reply = AssistantMessage::new(
                PROVIDER,
                &self.config.model,
                vec![ContentBlock::text(answer)],
            );
            reply.api = Some("openai-completions".to_owned());
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
