//! Parsing a transcript into entries: lobu's `parseSessionEntries`, with skipped lines counted.

use std::ops::Range;

use serde_json::{Map, Value};

use super::js;

/// One line of a transcript other than the `session` header, kept whole.
///
/// The raw JSON object is kept as parsed ([`fields`](Self::fields)); the accessors below read
/// the fields lobu reads. A field of the wrong JSON type reads as `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    fields: Map<String, Value>,
    line: usize,
    span: Range<usize>,
}

impl Entry {
    /// The whole JSON object of the line.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// The JSON object, taken out of the entry.
    pub fn into_fields(self) -> Map<String, Value> {
        self.fields
    }

    /// Any field by name.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }

    /// The 1-based line number in the transcript.
    pub fn line(&self) -> usize {
        self.line
    }

    /// Where the line sits in the transcript bytes (without its `\n`), so callers can slice
    /// the original bytes instead of re-serialising the entry.
    pub fn byte_range(&self) -> Range<usize> {
        self.span.clone()
    }

    /// `type`: `message`, `model_change`, `compaction`, `custom_message`, … .
    pub fn entry_type(&self) -> Option<&str> {
        self.str_field("type")
    }

    /// `id` (8 hex characters when pi wrote it; any string is accepted).
    pub fn id(&self) -> Option<&str> {
        self.str_field("id")
    }

    /// `parentId`; `None` when it is `null` or absent (the first entry of a tree).
    pub fn parent_id(&self) -> Option<&str> {
        self.str_field("parentId")
    }

    /// `timestamp`, an ISO-8601 string.
    pub fn timestamp(&self) -> Option<&str> {
        self.str_field("timestamp")
    }

    /// The `message` of a `message` entry, when present (JavaScript-truthy, as lobu checks it).
    pub fn message(&self) -> Option<MessageRef<'_>> {
        let value = self.fields.get("message");
        js::truthy(value).then(|| MessageRef(value.unwrap_or(&Value::Null)))
    }

    /// `provider` of a `model_change` entry.
    pub fn provider(&self) -> Option<&str> {
        self.str_field("provider")
    }

    /// `modelId` of a `model_change` entry.
    pub fn model_id(&self) -> Option<&str> {
        self.str_field("modelId")
    }

    /// `summary` of a `compaction` or `branch_summary` entry.
    pub fn summary(&self) -> Option<&str> {
        self.str_field("summary")
    }

    /// `customType` of a `custom` or `custom_message` entry.
    pub fn custom_type(&self) -> Option<&str> {
        self.str_field("customType")
    }

    /// `content` of a `custom_message` entry (a string or content blocks), raw.
    pub fn content(&self) -> Option<&Value> {
        self.fields.get("content")
    }

    /// `display` of a `custom_message` entry.
    pub fn display(&self) -> Option<bool> {
        self.fields.get("display").and_then(Value::as_bool)
    }

    fn str_field(&self, field: &str) -> Option<&str> {
        self.fields.get(field).and_then(Value::as_str)
    }
}

/// A view of the `message` object of a `message` entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MessageRef<'a>(&'a Value);

impl<'a> MessageRef<'a> {
    /// The raw message value.
    pub fn value(&self) -> &'a Value {
        self.0
    }

    /// `role`: `user`, `assistant`, `toolResult`, `bashExecution`, `custom`, … .
    pub fn role(&self) -> Option<&'a str> {
        self.0.get("role").and_then(Value::as_str)
    }

    /// `content`: a string or an array of blocks, raw.
    pub fn content(&self) -> Option<&'a Value> {
        self.0.get("content")
    }

    /// `usage`, raw (pi writes `input`/`output`/`cacheRead`/`cacheWrite`/`totalTokens`/`cost`).
    pub fn usage(&self) -> Option<&'a Value> {
        self.0.get("usage")
    }

    /// Input and output tokens, reading both spellings as lobu does:
    /// `inputTokens || input || 0` and `outputTokens || output || 0`.
    pub fn tokens(&self) -> Tokens {
        let usage = self.usage();
        if !js::truthy(usage) {
            return Tokens::default();
        }
        let field = |name: &str| usage.and_then(|u| u.get(name));
        Tokens {
            input: js::first_count([field("inputTokens"), field("input")]),
            output: js::first_count([field("outputTokens"), field("output")]),
        }
    }
}

/// Token counts of one message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Input (prompt) tokens.
    pub input: u64,
    /// Output (completion) tokens.
    pub output: u64,
}

/// Why a line was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// The line is not valid JSON (typically a write torn by a crash).
    InvalidJson,
    /// The line is JSON but not an object.
    NotAnObject,
}

/// A line the reader skipped. Skipping is never fatal: partial writes after a crash are expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLine {
    /// The 1-based line number.
    pub line: usize,
    /// Why it was skipped.
    pub reason: SkipReason,
}

/// A parsed transcript: entries in file order, the session id from the header, skipped lines.
///
/// Branching is ignored, as in lobu: entries of abandoned branches are kept, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transcript {
    pub(crate) entries: Vec<Entry>,
    pub(crate) session_id: Option<String>,
    pub(crate) skipped: Vec<SkippedLine>,
    pub(crate) has_content: bool,
    /// Lines in the bytes, counting an unterminated last line (what a writer continues from).
    pub(crate) lines: usize,
}

impl Transcript {
    /// Every entry but the header lines, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The `id` of the last `session` header line, if it has one.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// How many non-blank lines were skipped as malformed.
    pub fn skipped_lines(&self) -> usize {
        self.skipped.len()
    }

    /// The skipped lines with their reasons.
    pub fn skipped(&self) -> &[SkippedLine] {
        &self.skipped
    }

    /// Whether the transcript had any bytes at all (lobu answers `"none"` when it had none).
    pub fn has_content(&self) -> bool {
        self.has_content
    }
}

/// Parse transcript bytes. Never fails: blank lines are dropped; lines that are not UTF-8,
/// not JSON or not an object are skipped and counted; `session` header lines set the session
/// id (the last one wins) and are not entries.
pub fn parse(bytes: &[u8]) -> Transcript {
    let mut transcript = Transcript {
        has_content: !bytes.is_empty(),
        ..Transcript::default()
    };
    let mut start = 0;
    for (index, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let span = start..start + raw.len();
        start = span.end + 1;
        if !raw.is_empty() || span.end < bytes.len() {
            transcript.lines = index + 1; // a segment that is not the empty one after a final `\n`
        }
        match parse_line(raw) {
            Line::Blank => {}
            Line::Skipped(reason) => transcript.skipped.push(SkippedLine {
                line: index + 1,
                reason,
            }),
            Line::Object(fields)
                if fields.get("type").and_then(Value::as_str) == Some("session") =>
            {
                transcript.session_id = fields.get("id").and_then(Value::as_str).map(str::to_owned);
            }
            Line::Object(fields) => transcript.entries.push(Entry {
                fields,
                line: index + 1,
                span,
            }),
        }
    }
    if !transcript.skipped.is_empty() {
        tracing::debug!(
            skipped = transcript.skipped.len(),
            first = transcript.skipped[0].line,
            "transcript: skipped malformed lines"
        );
    }
    transcript
}

/// Parse one line the writer just wrote, as [`parse`] would read it at `line`/`span`.
pub(crate) fn parse_entry(raw: &[u8], line: usize, span: Range<usize>) -> Option<Entry> {
    match parse_line(raw) {
        Line::Object(fields) => Some(Entry { fields, line, span }),
        Line::Blank | Line::Skipped(_) => None,
    }
}

enum Line {
    Blank,
    Skipped(SkipReason),
    Object(Map<String, Value>),
}

fn parse_line(raw: &[u8]) -> Line {
    let Ok(text) = std::str::from_utf8(raw) else {
        return Line::Skipped(SkipReason::InvalidUtf8);
    };
    // JavaScript's trim() also strips the byte-order mark.
    if text
        .trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
        .is_empty()
    {
        return Line::Blank;
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(fields)) => Line::Object(fields),
        Ok(_) => Line::Skipped(SkipReason::NotAnObject),
        Err(_) => Line::Skipped(SkipReason::InvalidJson),
    }
}
