//! Reading and writing transcripts in the lobu/pi session format (version 3).
//!
//! A transcript is UTF-8 JSON Lines: a `session` header line
//! (`{"type":"session","version":3,"id":…,"timestamp":…,"cwd":…}`), then one entry per line
//! (`message`, `model_change`, `compaction`, `custom_message`, …), each with `type`, `id`,
//! `parentId` and `timestamp`. Stores keep these bytes exactly; this module only reads them
//! and appends to them, it never re-serialises what is already there.
//!
//! * [`parse`] gives a [`Transcript`]: the [`Entry`]s in file order (each keeps its whole JSON
//!   object), the session id of the last header, and how many malformed lines were skipped.
//!   Parsing never fails: a line torn by a crash is skipped and counted.
//! * [`Transcript::page`] pages [`DisplayMessage`]s the way lobu's history API does (default
//!   50, at most 200, an unknown cursor starts at the beginning); [`Transcript::stats`] counts
//!   messages and tokens; [`title`] names a conversation after its first user text.
//!   [`MessagePage`], [`DisplayMessage`] and [`Stats`] serialise with lobu's JSON field names,
//!   so an HTTP host can return them as they are.
//! * [`upgrade`] brings a pi session file of version 1 or 2 to version 3, as pi does on load.
//! * [`TranscriptWriter`] appends well-formed entries for an agent: fresh ids, the parent
//!   chain, timestamps, and a header when the transcript is new.
//!
//! ```
//! use lobu_core::transcript::{self, AssistantMessage, ContentBlock, TranscriptWriter, Usage};
//!
//! # fn main() -> lobu_core::Result<()> {
//! let mut writer = TranscriptWriter::new("/work/conversation-42");
//! writer.model_change("anthropic", "claude-sonnet-4-5")?;
//! writer.user_text("What is the capital of France?")?;
//! let mut reply = AssistantMessage::new(
//!     "anthropic",
//!     "claude-sonnet-4-5",
//!     vec![ContentBlock::text("Paris.")],
//! );
//! reply.usage = Usage::tokens(12, 3);
//! writer.assistant(&reply)?;
//!
//! let parsed = transcript::parse(writer.as_slice());
//! assert_eq!(parsed.entries().len(), 3);
//! assert_eq!(parsed.skipped_lines(), 0);
//!
//! let page = parsed.page(None, Some(2))?;
//! assert!(page.has_more);
//! let rest = parsed.page(page.next_cursor.as_deref(), Some(2))?;
//! assert_eq!(rest.messages.len(), 1);
//!
//! let stats = parsed.stats();
//! assert_eq!((stats.total_input_tokens, stats.total_output_tokens), (12, 3));
//! assert_eq!(stats.current_model.as_deref(), Some("anthropic/claude-sonnet-4-5"));
//! assert_eq!(transcript::title(writer.as_slice()).as_deref(), Some("What is the capital of France?"));
//! # Ok(()) }
//! ```

mod content;
mod display;
mod entry;
pub mod hash;
mod js;
mod stats;
mod upgrade;
mod user_input;
mod writer;

#[cfg(test)]
mod paging_tests;
#[cfg(test)]
mod read_tests;
#[cfg(test)]
mod writer_tests;

pub use content::{AssistantMessage, ContentBlock, Cost, StopReason, ToolResult, Usage};
pub use display::{
    DEFAULT_MESSAGE_LIMIT, DisplayMessage, DisplayType, MessagePage, NO_SESSION_ID,
    UNKNOWN_SESSION_ID,
};
pub use entry::{Entry, MessageRef, SkipReason, SkippedLine, Tokens, Transcript, parse};
pub use stats::{Stats, TITLE_MAX_CHARS, title};
pub use upgrade::{Upgraded, upgrade};
pub use user_input::{MAX_IMAGES, UserInput};
pub use writer::{RESERVED_FIELDS, SESSION_VERSION, TranscriptWriter};
