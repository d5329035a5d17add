//! The message parts a [`TranscriptWriter`](super::TranscriptWriter) writes, in pi's shapes.

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// One block of message content, serialised with pi's `type` tags:
/// `text{text}`, `thinking{thinking}`, `image{data,mimeType}`, `toolCall{id,name,arguments}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
#[non_exhaustive]
pub enum ContentBlock {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// The model's reasoning.
    Thinking {
        /// The reasoning text.
        thinking: String,
    },
    /// An image, base64-encoded.
    Image {
        /// Base64 data.
        data: String,
        /// e.g. `image/png`.
        #[serde(rename = "mimeType")]
        mime_type: String,
    },
    /// A tool call made by the assistant; answer it with a
    /// [`ToolResult`] whose `tool_call_id` is this `id`.
    ToolCall {
        /// The provider's tool call id.
        id: String,
        /// The tool's name.
        name: String,
        /// The arguments, as JSON.
        arguments: Value,
    },
}

impl ContentBlock {
    /// A text block.
    pub fn text(text: impl Into<String>) -> Self {
        ContentBlock::Text { text: text.into() }
    }

    /// A tool call block.
    pub fn tool_call(id: impl Into<String>, name: impl Into<String>, arguments: Value) -> Self {
        ContentBlock::ToolCall {
            id: id.into(),
            name: name.into(),
            arguments,
        }
    }
}

/// Why the assistant stopped (pi's spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum StopReason {
    /// A normal end of turn.
    Stop,
    /// The output hit the token limit.
    Length,
    /// The assistant wants tool results before it continues.
    ToolUse,
    /// The provider returned an error.
    Error,
    /// The call was aborted.
    Aborted,
}

/// Token usage of one assistant message. Written as pi writes it:
/// `{input, output, cacheRead, cacheWrite, totalTokens, cost{input, output, cacheRead, cacheWrite, total}}`,
/// with `totalTokens` and `cost.total` computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Usage {
    /// Input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Tokens read from the provider's prompt cache.
    pub cache_read: u64,
    /// Tokens written to the provider's prompt cache.
    pub cache_write: u64,
    /// What the tokens cost.
    pub cost: Cost,
}

impl Usage {
    /// Usage with only input and output tokens.
    pub fn tokens(input: u64, output: u64) -> Self {
        Usage {
            input,
            output,
            ..Usage::default()
        }
    }

    /// All tokens: input, output, cache reads and cache writes.
    pub fn total_tokens(&self) -> u64 {
        self.input
            .saturating_add(self.output)
            .saturating_add(self.cache_read)
            .saturating_add(self.cache_write)
    }
}

impl Serialize for Usage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = s.serialize_struct("Usage", 6)?;
        out.serialize_field("input", &self.input)?;
        out.serialize_field("output", &self.output)?;
        out.serialize_field("cacheRead", &self.cache_read)?;
        out.serialize_field("cacheWrite", &self.cache_write)?;
        out.serialize_field("totalTokens", &self.total_tokens())?;
        out.serialize_field("cost", &self.cost)?;
        out.end()
    }
}

/// The cost of one assistant message, in the provider's currency (usually USD).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Cost {
    /// Cost of input tokens.
    pub input: f64,
    /// Cost of output tokens.
    pub output: f64,
    /// Cost of cache reads.
    pub cache_read: f64,
    /// Cost of cache writes.
    pub cache_write: f64,
}

impl Cost {
    /// The sum of the four parts.
    pub fn total(&self) -> f64 {
        self.input + self.output + self.cache_read + self.cache_write
    }
}

impl Serialize for Cost {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut out = s.serialize_struct("Cost", 5)?;
        out.serialize_field("input", &self.input)?;
        out.serialize_field("output", &self.output)?;
        out.serialize_field("cacheRead", &self.cache_read)?;
        out.serialize_field("cacheWrite", &self.cache_write)?;
        out.serialize_field("total", &self.total())?;
        out.end()
    }
}

/// An assistant message (role `assistant`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssistantMessage {
    /// Text, thinking and tool call blocks, in order.
    pub content: Vec<ContentBlock>,
    /// The provider API used (pi's `api`, e.g. `openai-responses`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    /// The provider, e.g. `anthropic`.
    pub provider: String,
    /// The model id, e.g. `claude-sonnet-4-5`.
    pub model: String,
    /// Token usage.
    pub usage: Usage,
    /// Why the model stopped.
    pub stop_reason: StopReason,
    /// The provider's error, when `stop_reason` is [`StopReason::Error`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

impl AssistantMessage {
    /// A message with `content` from `provider`/`model`, no usage, stopped normally.
    pub fn new(
        provider: impl Into<String>,
        model: impl Into<String>,
        content: Vec<ContentBlock>,
    ) -> Self {
        AssistantMessage {
            content,
            api: None,
            provider: provider.into(),
            model: model.into(),
            usage: Usage::default(),
            stop_reason: StopReason::Stop,
            error_message: None,
        }
    }
}

/// The result of a tool call (role `toolResult`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResult {
    /// The `id` of the [`ContentBlock::ToolCall`] this answers.
    pub tool_call_id: String,
    /// The tool's name.
    pub tool_name: String,
    /// What the tool returned, as content blocks.
    pub content: Vec<ContentBlock>,
    /// Structured details for UIs (not sent to the model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// Whether the tool failed.
    pub is_error: bool,
}

impl ToolResult {
    /// A successful result with text output.
    pub fn text(
        tool_call_id: impl Into<String>,
        tool_name: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        ToolResult {
            tool_call_id: tool_call_id.into(),
            tool_name: tool_name.into(),
            content: vec![ContentBlock::text(text)],
            details: None,
            is_error: false,
        }
    }
}
