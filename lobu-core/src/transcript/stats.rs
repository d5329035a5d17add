//! Stats (lobu's `GET /session/stats`) and a title from the first user text.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::display::model_name;
use super::entry::{Transcript, parse};

/// How long a title may be, in characters, before it is cut and `…` appended.
pub const TITLE_MAX_CHARS: usize = 42;

/// Counts over a transcript; serialises with lobu's field names.
///
/// Every `message` line counts, compacted or not, on every branch (as in lobu).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// The header's session id, `"unknown"` without one, `"none"` with no content.
    pub session_id: String,
    /// How many `message` entries there are.
    pub message_count: u64,
    /// How many of them have role `user`.
    pub user_messages: u64,
    /// How many of them have role `assistant`.
    pub assistant_messages: u64,
    /// The sum of `usage.inputTokens || usage.input`.
    pub total_input_tokens: u64,
    /// The sum of `usage.outputTokens || usage.output`.
    pub total_output_tokens: u64,
    /// `provider/modelId` of the last `model_change` entry; absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_model: Option<String>,
}

impl Transcript {
    /// Message counts, token totals and the current model.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            session_id: self.reported_session_id(),
            ..Stats::default()
        };
        if !self.has_content {
            return stats;
        }
        for entry in &self.entries {
            match entry.entry_type() {
                Some("message") => {
                    let Some(message) = entry.message() else {
                        continue;
                    };
                    stats.message_count += 1;
                    match message.role() {
                        Some("user") => stats.user_messages += 1,
                        Some("assistant") => stats.assistant_messages += 1,
                        _ => {}
                    }
                    let tokens = message.tokens();
                    stats.total_input_tokens =
                        stats.total_input_tokens.saturating_add(tokens.input);
                    stats.total_output_tokens =
                        stats.total_output_tokens.saturating_add(tokens.output);
                }
                Some("model_change") => stats.current_model = Some(model_name(entry)),
                _ => {}
            }
        }
        stats
    }

    /// A title: the text of the first user message that has some (see [`title`]).
    pub fn title(&self) -> Option<String> {
        self.entries.iter().find_map(|entry| {
            if entry.entry_type() != Some("message") {
                return None;
            }
            let message = entry.message()?;
            if message.role() != Some("user") {
                return None;
            }
            let text = match message.content()? {
                Value::String(text) => text.as_str(),
                // The first `text` block decides; a blank one skips the whole message.
                Value::Array(blocks) => blocks.iter().find_map(|block| {
                    (block.get("type").and_then(Value::as_str) == Some("text"))
                        .then(|| block.get("text").and_then(Value::as_str))
                        .flatten()
                })?,
                _ => return None,
            };
            shorten(text)
        })
    }
}

/// A title for a transcript, as lobu's thread list shows it: the first user `message` whose
/// content is a non-blank string, or whose first `text` block is non-blank; whitespace runs
/// collapsed to one space; cut to [`TITLE_MAX_CHARS`] characters plus `…` when longer.
/// Control characters (NUL included) count as whitespace, so a title is always safe to store
/// as text anywhere (PostgreSQL `text` refuses NUL). `None` when no user message has text.
pub fn title(bytes: &[u8]) -> Option<String> {
    parse(bytes).title()
}

fn shorten(text: &str) -> Option<String> {
    // JavaScript's `\s` also matches the byte-order mark; control characters would make the
    // title unstorable in some stores (NUL in PostgreSQL text), so they separate words too.
    let normalized = text
        .split(|c: char| c.is_whitespace() || c.is_control() || c == '\u{feff}')
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if normalized.is_empty() {
        return None;
    }
    match normalized.char_indices().nth(TITLE_MAX_CHARS) {
        Some((cut, _)) => Some(format!("{}…", &normalized[..cut])),
        None => Some(normalized),
    }
}
