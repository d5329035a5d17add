//! Display messages (lobu's `entryToMessage`) and cursor paging (`GET /session/messages`).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::entry::{Entry, Transcript};
use super::js;
use crate::check_page_limit;
use crate::error::Result;

/// The page size when the caller gives none (lobu's default).
pub const DEFAULT_MESSAGE_LIMIT: usize = 50;

/// The session id reported when the transcript has a header without an id, or no header.
pub const UNKNOWN_SESSION_ID: &str = "unknown";

/// The session id reported when there is no transcript content at all.
pub const NO_SESSION_ID: &str = "none";

/// Which entry type a display message came from (serialised as lobu's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DisplayType {
    /// A `message` entry (user, assistant, tool result, …).
    Message,
    /// A `compaction` entry: its summary.
    Compaction,
    /// A `model_change` entry: `provider/modelId`.
    ModelChange,
    /// A `custom_message` entry, shown as a user message.
    CustomMessage,
}

/// One message as lobu's history API shows it. Serialises with lobu's field names
/// (`id`, `type`, `role`, `content`, `model`, `timestamp`, `isVerbose`, `usage`) and, as lobu
/// does, leaves out fields the entry has no value for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisplayMessage {
    /// The entry's `id` (absent if the entry has no string id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The entry type it was projected from.
    #[serde(rename = "type")]
    pub kind: DisplayType,
    /// `message.role` for messages, `"user"` for custom messages, absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The content, raw: `message.content`, the compaction summary (or `""`), the model name
    /// of a model change, or a custom message's `content`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub content: Option<Value>,
    /// `provider/modelId`, for model changes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The entry's `timestamp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Whether a UI should hide it behind a "verbose" toggle: tool results, compactions,
    /// model changes and custom messages not marked `display`.
    pub is_verbose: bool,
    /// `message.usage`, raw, for messages that carry it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub usage: Option<Value>,
}

/// A present field is `Some`, even when it is `null` (lobu serialises `null` usage as `null`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl DisplayMessage {
    /// Project an entry; `None` for entries lobu does not show (everything but `message`
    /// with a message, `compaction`, `model_change` and `custom_message`).
    pub fn from_entry(entry: &Entry) -> Option<Self> {
        let kind = display_type(entry)?;
        let mut shown = DisplayMessage {
            id: entry.id().map(str::to_owned),
            kind,
            role: None,
            content: None,
            model: None,
            timestamp: entry.timestamp().map(str::to_owned),
            is_verbose: true,
            usage: None,
        };
        match kind {
            DisplayType::Message => {
                let message = entry.message()?;
                shown.role = message.role().map(str::to_owned);
                shown.content = message.content().cloned();
                shown.is_verbose = message.role() == Some("toolResult");
                shown.usage = message.usage().cloned();
            }
            DisplayType::Compaction => {
                let summary = entry.get("summary");
                shown.content = Some(match summary {
                    Some(value) if js::truthy(Some(value)) => value.clone(),
                    _ => Value::String(String::new()),
                });
            }
            DisplayType::ModelChange => {
                let model = model_name(entry);
                shown.content = Some(Value::String(model.clone()));
                shown.model = Some(model);
            }
            DisplayType::CustomMessage => {
                shown.role = Some("user".to_owned());
                shown.content = entry.content().cloned();
                shown.is_verbose = !js::truthy(entry.get("display"));
            }
        }
        Some(shown)
    }
}

/// `provider/modelId` exactly as lobu's template literal builds it.
pub(crate) fn model_name(entry: &Entry) -> String {
    format!(
        "{}/{}",
        js::template(entry.get("provider")),
        js::template(entry.get("modelId"))
    )
}

fn display_type(entry: &Entry) -> Option<DisplayType> {
    match entry.entry_type()? {
        "message" if entry.message().is_some() => Some(DisplayType::Message),
        "compaction" => Some(DisplayType::Compaction),
        "model_change" => Some(DisplayType::ModelChange),
        "custom_message" => Some(DisplayType::CustomMessage),
        _ => None,
    }
}

/// One page of display messages; serialises as `{"messages","nextCursor","hasMore","sessionId"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessagePage {
    /// The messages of this page, in file order.
    pub messages: Vec<DisplayMessage>,
    /// The id to pass as the next cursor; `None` (`null`) on the last page.
    pub next_cursor: Option<String>,
    /// Whether messages follow this page.
    pub has_more: bool,
    /// The header's session id, [`UNKNOWN_SESSION_ID`] without one, or [`NO_SESSION_ID`]
    /// when there is no content at all.
    pub session_id: String,
}

impl Transcript {
    /// Every display message, in file order.
    pub fn messages(&self) -> impl Iterator<Item = DisplayMessage> + '_ {
        self.entries.iter().filter_map(DisplayMessage::from_entry)
    }

    /// A page of display messages after `cursor`, `limit` messages long (default
    /// [`DEFAULT_MESSAGE_LIMIT`]). A cursor is what an earlier page's `next_cursor` said: the
    /// id of that page's last message (lobu's cursor), or `@N` (continue at the `N`th shown
    /// message) when that message has no id, or an id an earlier message also has, or an id
    /// of that form, so every transcript pages to its end: `has_more` is never true without a
    /// `next_cursor`, and each page starts where the last one stopped. An unknown or empty
    /// cursor starts at the beginning (lobu's behaviour).
    ///
    /// A limit of 0 or over [`MAX_PAGE_LIMIT`](crate::MAX_PAGE_LIMIT) is an
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) error.
    pub fn page(&self, cursor: Option<&str>, limit: Option<usize>) -> Result<MessagePage> {
        let limit = limit.unwrap_or(DEFAULT_MESSAGE_LIMIT);
        check_page_limit(limit)?;
        if !self.has_content {
            return Ok(MessagePage {
                messages: Vec::new(),
                next_cursor: None,
                has_more: false,
                session_id: NO_SESSION_ID.to_owned(),
            });
        }
        // Find the page among shown entries first, so only the page's content is cloned.
        let shown: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| display_type(e).is_some())
            .collect();
        let start = cursor
            .filter(|c| !c.is_empty())
            .and_then(|c| cursor_start(&shown, c))
            .unwrap_or(0)
            .min(shown.len());
        let end = start.saturating_add(limit).min(shown.len());
        let messages: Vec<DisplayMessage> = shown[start..end]
            .iter()
            .filter_map(|e| DisplayMessage::from_entry(e))
            .collect();
        let has_more = end < shown.len();
        let next_cursor = has_more.then(|| cursor_at(&shown, end));
        Ok(MessagePage {
            messages,
            next_cursor,
            has_more,
            session_id: self.reported_session_id(),
        })
    }

    /// The session id as lobu reports it: the header id, `"unknown"` without one (or an
    /// empty one), `"none"` with no content.
    pub fn reported_session_id(&self) -> String {
        if !self.has_content {
            return NO_SESSION_ID.to_owned();
        }
        match self.session_id.as_deref() {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => UNKNOWN_SESSION_ID.to_owned(),
        }
    }
}

/// Where a page after `cursor` starts among the `shown` entries: after the first message
/// with that id, or at `N` for a positional `@N`; `None` for a cursor that names neither.
fn cursor_start(shown: &[&Entry], cursor: &str) -> Option<usize> {
    if let Some(at) = positional(cursor) {
        return Some(at);
    }
    shown
        .iter()
        .position(|e| e.id() == Some(cursor))
        .map(|at| at + 1)
}

/// The cursor of a page that ends before `shown[end]`: the id of its last message when that
/// id leads back here (the first message with it, and not of the positional form), else
/// `@end`.
fn cursor_at(shown: &[&Entry], end: usize) -> String {
    let last = end.checked_sub(1).and_then(|at| shown.get(at));
    if let Some(id) = last.and_then(|e| e.id())
        && positional(id).is_none()
        && shown.iter().position(|e| e.id() == Some(id)) == Some(end - 1)
    {
        return id.to_owned();
    }
    format!("@{end}")
}

/// `N` of a positional cursor `@N`.
fn positional(cursor: &str) -> Option<usize> {
    let digits = cursor.strip_prefix('@')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
