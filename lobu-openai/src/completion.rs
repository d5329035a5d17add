//! One streamed chat completion: the request, and the answer read as server-sent events.

use eventsource_stream::{EventStreamError, Eventsource};
use futures::StreamExt;
use lobu_core::transcript::Usage;
use lobu_runtime::Turn;
use serde_json::{Value, json};

use crate::config::OpenAiConfig;
use crate::error::OpenAiError;

/// How much of an error answer's body goes into the error.
const EXCERPT_CHARS: usize = 300;

/// Ask `<base>/chat/completions` for a streamed answer to `messages`, sending each piece to
/// the turn's output as it arrives. The whole answer and the endpoint's usage, once
/// `data: [DONE]` came.
pub(crate) async fn complete(
    client: &reqwest::Client,
    config: &OpenAiConfig,
    turn: &Turn,
    messages: &[Value],
) -> Result<(String, Usage), OpenAiError> {
    let url = format!("{}/chat/completions", config.base_url());
    let body = json!({
        "model": config.model(),
        "messages": messages,
        "stream": true,
        "stream_options": { "include_usage": true },
    });
    let mut request = client.post(&url).json(&body);
    if let Some(key) = config.api_key() {
        request = request.bearer_auth(key);
    }
    let cancel = turn.cancelled().clone();
    let response = tokio::select! {
        response = request.send() => response.map_err(OpenAiError::Request)?,
        () = cancel.cancelled() => return Err(OpenAiError::Cancelled),
    };
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(OpenAiError::Status {
            status: status.as_u16(),
            excerpt: text.chars().take(EXCERPT_CHARS).collect(),
        });
    }
    let mut answer = Answer::default();
    let mut events = response.bytes_stream().eventsource();
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = cancel.cancelled() => return Err(OpenAiError::Cancelled),
        };
        let data = match event {
            None => return Err(OpenAiError::ClosedEarly),
            Some(Ok(event)) => event.data,
            Some(Err(EventStreamError::Transport(e))) => return Err(OpenAiError::Stream(e)),
            Some(Err(e)) => return Err(OpenAiError::MalformedStream(e)),
        };
        match answer.take(&data)? {
            Step::Piece(piece) => turn.output(piece),
            Step::Nothing => {}
            Step::Done => return Ok((answer.text, answer.usage)),
        }
    }
}

/// What one event's data meant.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// A piece of the answer's text.
    Piece(String),
    /// No text (a role delta, the usage, an empty keep-alive).
    Nothing,
    /// `[DONE]`: the answer is whole.
    Done,
}

/// The answer so far: its text and the last usage the endpoint reported.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    pub(crate) text: String,
    pub(crate) usage: Usage,
}

impl Answer {
    /// Take one event's `data` (its lines already joined by the SSE parser).
    pub(crate) fn take(&mut self, data: &str) -> Result<Step, OpenAiError> {
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(Step::Done);
        }
        if data.is_empty() {
            return Ok(Step::Nothing);
        }
        let event: Value = serde_json::from_str(data).map_err(OpenAiError::EventJson)?;
        if let Some(error) = event.get("error") {
            return Err(OpenAiError::Endpoint(error.clone()));
        }
        if let Some(reported) = event.get("usage").filter(|u| u.is_object()) {
            self.usage = Usage::tokens(
                reported["prompt_tokens"].as_u64().unwrap_or(0),
                reported["completion_tokens"].as_u64().unwrap_or(0),
            );
        }
        match event["choices"][0]["delta"]["content"].as_str() {
            Some(piece) if !piece.is_empty() => {
                self.text.push_str(piece);
                Ok(Step::Piece(piece.to_owned()))
            }
            _ => Ok(Step::Nothing),
        }
    }
}
