//! Moving conversations between stores: a conversation as one portable JSON Lines document
//! ([`Exported`]), and the rule every backend follows when one is imported
//! ([`plan_import`]).
//!
//! A document is a header line, then the transcript byte for byte:
//!
//! ```text
//! {"lobu_export":1,"org":"acme","agent":"bot","conversation":"c1","version":7,"run":"r9",
//!  "updated_at":"2026-11-30T17:48:50.123456Z","title":"Hello","bytes":1234,"sha256":"…"}
//! {"type":"session","version":3,…}
//! {"type":"message",…}
//! ```
//!
//! (the header is one line). Several documents concatenate into one stream (an agent's or a
//! store's export); [`DocumentReader`] reads them back one at a time, checking each
//! transcript's length and SHA-256. The transcript is never re-serialised, so an export from
//! one store imported into another and exported again gives the same bytes.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use lobu_core::export::{DocumentReader, Exported};
//! use lobu_core::{ConversationKey, RunId, Version};
//!
//! # fn main() -> lobu_core::Result<()> {
//! let conversation = Exported::new(
//!     ConversationKey::parse("acme", "bot", "c1")?,
//!     Version(7),
//!     RunId::new("r9")?,
//!     UNIX_EPOCH + Duration::from_micros(1_764_524_930_123_456),
//!     br#"{"type":"session","version":3,"id":"s","timestamp":"T","cwd":"/"}"#.as_slice(),
//! );
//! let document = conversation.to_document();
//! let back: Vec<Exported> = DocumentReader::new(document.as_slice()).collect::<Result<_, _>>()?;
//! assert_eq!(back, vec![conversation]);
//! # Ok(()) }
//! ```

mod document;
mod plan;

pub use document::{DocumentReader, EXPORT_FORMAT, Exported};
pub use plan::{ExistingHead, ImportPlan, Imported, MAX_IMPORT_VERSION, plan_import};
