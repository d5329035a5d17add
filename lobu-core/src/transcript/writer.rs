//! [`TranscriptWriter`]: appends well-formed entries to a working transcript.

use std::collections::HashSet;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::macros::format_description;
use uuid::Uuid;

use super::content::{AssistantMessage, ContentBlock, ToolResult};
use super::entry::{Entry, Transcript, parse, parse_entry};
use crate::error::{Error, ErrorKind, Result};

/// The session format version the writer's header declares.
pub const SESSION_VERSION: u64 = 3;

/// Fields every entry gets from the writer; [`TranscriptWriter::append`] refuses them.
pub const RESERVED_FIELDS: [&str; 4] = ["type", "id", "parentId", "timestamp"];

/// Appends entries to a transcript, keeping the bytes it started from exactly.
///
/// Each entry gets a fresh 8-hex-character `id` unique within the transcript, `parentId` set
/// to the previous entry's id (`null` for the first) and an ISO-8601 UTC `timestamp`. The
/// writer owns plain data, so it is `Send + Sync`; share it behind a `Mutex` or pass `&mut`.
#[derive(Debug, Clone)]
pub struct TranscriptWriter {
    bytes: Vec<u8>,
    hydrated_len: usize,
    /// Lines in `bytes`, counting an unterminated last line.
    lines: usize,
    ids: HashSet<String>,
    leaf: Option<String>,
    session_id: Option<String>,
    appended: Vec<Entry>,
}

impl TranscriptWriter {
    /// A new transcript: a `session` header with version 3, a fresh UUID, the current time
    /// and `cwd` (the agent's working directory, kept for pi compatibility).
    pub fn new(cwd: &str) -> Self {
        Self::open(Vec::new(), cwd)
    }

    /// Continue the transcript `existing` (e.g. a hydrated snapshot). Its bytes are kept
    /// exactly; when it is empty, a header is written as in [`new`](Self::new) (`cwd` is
    /// only used then).
    pub fn open(existing: impl Into<Vec<u8>>, cwd: &str) -> Self {
        let bytes = existing.into();
        let parsed = parse(&bytes);
        Self::continue_parsed(bytes, &parsed, cwd)
    }

    /// [`open`](Self::open) with `existing` already parsed: `parsed` must be
    /// [`parse`]`(existing)` (as [`apply_to`](Self::apply_to) keeps it). Saves parsing the
    /// whole history again on every turn.
    pub fn continue_parsed(existing: impl Into<Vec<u8>>, parsed: &Transcript, cwd: &str) -> Self {
        let bytes = existing.into();
        debug_assert!(
            parsed
                .entries()
                .last()
                .is_none_or(|e| e.byte_range().end <= bytes.len()),
            "the parsed transcript is not of these bytes"
        );
        let mut writer = TranscriptWriter {
            hydrated_len: bytes.len(),
            lines: parsed.lines,
            ids: parsed
                .entries()
                .iter()
                .filter_map(|e| e.id().map(str::to_owned))
                .collect(),
            leaf: parsed
                .entries()
                .iter()
                .rev()
                .find_map(|e| e.id().map(str::to_owned)),
            session_id: parsed.session_id().map(str::to_owned),
            appended: Vec::new(),
            bytes,
        };
        if writer.bytes.is_empty() {
            writer.write_header(cwd);
        }
        writer
    }

    /// Append a user message with one text block.
    pub fn user_text(&mut self, text: &str) -> Result<&Entry> {
        self.user(&[ContentBlock::text(text)])
    }

    /// Append a user message with these content blocks (text and images).
    pub fn user(&mut self, content: &[ContentBlock]) -> Result<&Entry> {
        #[derive(Serialize)]
        struct UserContent<'a> {
            content: &'a [ContentBlock],
        }
        self.push_message("user", &UserContent { content })
    }

    /// Append an assistant message (text, thinking and tool call blocks, model, usage).
    pub fn assistant(&mut self, message: &AssistantMessage) -> Result<&Entry> {
        self.push_message("assistant", message)
    }

    /// Append the result of a tool call (role `toolResult`).
    pub fn tool_result(&mut self, result: &ToolResult) -> Result<&Entry> {
        self.push_message("toolResult", result)
    }

    /// Append a `model_change` entry.
    pub fn model_change(&mut self, provider: &str, model_id: &str) -> Result<&Entry> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct ModelChange<'a> {
            provider: &'a str,
            model_id: &'a str,
        }
        self.push("model_change", ModelChange { provider, model_id })
    }

    /// Append an entry of any type with `fields`. `type`, `id`, `parentId` and `timestamp`
    /// are the writer's: passing one of them, an empty type or `session` (a header, not an
    /// entry) is an [`ErrorKind::InvalidInput`] error and writes nothing.
    pub fn append(&mut self, entry_type: &str, fields: Map<String, Value>) -> Result<&Entry> {
        if let Some(field) = RESERVED_FIELDS.iter().find(|f| fields.contains_key(**f)) {
            return Err(Error::invalid(format!(
                "transcript entry field {field:?} is set by the writer"
            )));
        }
        if entry_type.is_empty() || entry_type == "session" {
            return Err(Error::invalid(format!(
                "cannot append an entry of type {entry_type:?}"
            )));
        }
        self.push(entry_type, fields)
    }

    /// The whole transcript (a copy; see [`into_bytes`](Self::into_bytes)).
    pub fn bytes(&self) -> Bytes {
        Bytes::copy_from_slice(&self.bytes)
    }

    /// The whole transcript, without copying.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from(self.bytes)
    }

    /// The whole transcript, borrowed.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// The transcript's length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the transcript has no bytes (never true: a new one has a header).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// How many bytes the writer started from.
    pub fn hydrated_len(&self) -> usize {
        self.hydrated_len
    }

    /// The bytes written by this writer: a header, a separating `\n`, new entries.
    pub fn appended_bytes(&self) -> &[u8] {
        &self.bytes[self.hydrated_len..]
    }

    /// The entries appended by this writer, parsed from the bytes it wrote.
    pub fn appended(&self) -> &[Entry] {
        &self.appended
    }

    /// Bring `parsed`, the parse of the bytes this writer started from, up to date with what
    /// it appended: afterwards it equals [`parse`]`(self.as_slice())`, at the cost of this
    /// turn's entries only (they were parsed as they were written).
    pub fn apply_to(&self, parsed: &mut Transcript) {
        parsed.entries.extend(self.appended.iter().cloned());
        parsed.lines = self.lines;
        if self.hydrated_len == 0 && !self.bytes.is_empty() {
            // A new transcript: the writer wrote its header.
            parsed.session_id.clone_from(&self.session_id);
        }
        parsed.has_content |= !self.bytes.is_empty();
    }

    /// The id of the last entry, the parent of the next one.
    pub fn leaf_id(&self) -> Option<&str> {
        self.leaf.as_deref()
    }

    /// The session id of the transcript's (last) header.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    fn write_header(&mut self, cwd: &str) {
        let id = Uuid::new_v4().to_string();
        let header = serde_json::json!({
            "type": "session",
            "version": SESSION_VERSION,
            "id": id,
            "timestamp": iso_timestamp(OffsetDateTime::now_utc()),
            "cwd": cwd,
        });
        self.bytes.extend_from_slice(header.to_string().as_bytes());
        self.bytes.push(b'\n');
        self.lines += 1;
        self.session_id = Some(id);
    }

    fn push_message<M: Serialize + ?Sized>(&mut self, role: &str, body: &M) -> Result<&Entry> {
        // pi's messages: `role`, the role's own fields, then a `timestamp` in milliseconds.
        #[derive(Serialize)]
        struct RoleMessage<'a, M: ?Sized> {
            role: &'a str,
            #[serde(flatten)]
            body: &'a M,
            timestamp: i64,
        }
        #[derive(Serialize)]
        struct MessageEntry<T> {
            message: T,
        }
        let timestamp = unix_millis(OffsetDateTime::now_utc());
        self.push(
            "message",
            MessageEntry {
                message: RoleMessage {
                    role,
                    body,
                    timestamp,
                },
            },
        )
    }

    fn push<T: Serialize>(&mut self, entry_type: &str, body: T) -> Result<&Entry> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Line<'a, T> {
            #[serde(rename = "type")]
            entry_type: &'a str,
            id: &'a str,
            parent_id: Option<&'a str>,
            timestamp: &'a str,
            #[serde(flatten)]
            body: T,
        }
        let id = self.fresh_id();
        let timestamp = iso_timestamp(OffsetDateTime::now_utc());
        let line = serde_json::to_vec(&Line {
            entry_type,
            id: &id,
            parent_id: self.leaf.as_deref(),
            timestamp: &timestamp,
            body,
        })
        .map_err(|e| Error::invalid("transcript entry is not a JSON object").with_source(e))?;
        // Everything is checked before the first byte changes, so a refusal writes nothing.
        let separator = usize::from(!self.bytes.is_empty() && !self.bytes.ends_with(b"\n"));
        let start = self.bytes.len() + separator;
        let line_number = self.lines + 1;
        let entry =
            parse_entry(&line, line_number, start..start + line.len()).ok_or_else(|| {
                Error::new(
                    ErrorKind::Other,
                    "transcript writer produced an unreadable line",
                )
            })?;
        if separator == 1 {
            self.bytes.push(b'\n');
        }
        self.bytes.extend_from_slice(&line);
        self.bytes.push(b'\n');
        self.lines = line_number;
        self.ids.insert(id.clone());
        self.leaf = Some(id);
        self.appended.push(entry);
        Ok(&self.appended[self.appended.len() - 1])
    }

    fn fresh_id(&self) -> String {
        loop {
            // The first 8 hex digits of a v4 UUID are random (the version nibble comes later).
            let id = Uuid::new_v4().simple().to_string()[..8].to_owned();
            if !self.ids.contains(&id) {
                return id;
            }
        }
    }
}

/// `2026-05-18T08:52:00.123Z`, as JavaScript's `toISOString()` writes it.
fn iso_timestamp(now: OffsetDateTime) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    now.format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

fn unix_millis(now: OffsetDateTime) -> i64 {
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}
