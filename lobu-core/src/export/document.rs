//! The export document: a header line, then the transcript byte for byte.

use std::io::{BufRead, Read};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{ConversationKey, RunId};
use crate::session::Version;
use crate::transcript::{self, hash};

/// The document format this version writes and reads (the header's `lobu_export`).
pub const EXPORT_FORMAT: u32 = 1;

/// One conversation's head with its metadata: what [`SessionStore::export`] returns and
/// [`SessionStore::import`] takes.
///
/// [`SessionStore::export`]: crate::SessionStore::export
/// [`SessionStore::import`]: crate::SessionStore::import
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The conversation.
    pub key: ConversationKey,
    /// The head's version in the store it came from.
    pub version: Version,
    /// The run that wrote the head.
    pub run: RunId,
    /// When the head was written, to the microsecond (what every store keeps).
    pub updated_at: SystemTime,
    /// The whole transcript, byte for byte.
    pub transcript: Bytes,
}

impl Exported {
    /// A conversation to export or import; `updated_at` is cut to the microsecond.
    pub fn new(
        key: ConversationKey,
        version: Version,
        run: RunId,
        updated_at: SystemTime,
        transcript: impl Into<Bytes>,
    ) -> Self {
        Exported {
            key,
            version,
            run,
            updated_at: to_micros(updated_at),
            transcript: transcript.into(),
        }
    }

    /// The transcript's SHA-256 (the digest every store keeps of a head).
    pub fn digest(&self) -> hash::Digest {
        hash::digest(&self.transcript)
    }

    /// The document: the header line, the transcript, and a newline if the transcript does
    /// not end with one (so documents concatenate into JSON Lines).
    pub fn to_document(&self) -> Vec<u8> {
        let header = Header {
            lobu_export: EXPORT_FORMAT,
            org: self.key.org.to_string(),
            agent: self.key.agent.to_string(),
            conversation: self.key.conversation.to_string(),
            version: self.version.0,
            run: self.run.to_string(),
            updated_at: crate::time_serde::format(to_micros(self.updated_at)),
            title: transcript::title(&self.transcript),
            bytes: self.transcript.len() as u64,
            sha256: hash::hex(&self.digest()),
        };
        let mut out = serde_json::to_vec(&header).expect("a header serialises");
        out.push(b'\n');
        out.extend_from_slice(&self.transcript);
        if !self.transcript.is_empty() && !self.transcript.ends_with(b"\n") {
            out.push(b'\n');
        }
        out
    }
}

/// Cut a time to the microsecond: PostgreSQL keeps no more, so every store keeps this much.
fn to_micros(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_micros(d.as_micros() as u64),
        Err(_) => UNIX_EPOCH,
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    lobu_export: u32,
    org: String,
    agent: String,
    conversation: String,
    version: u64,
    run: String,
    updated_at: String,
    /// Informational (derived from the transcript); not checked on read.
    #[serde(default)]
    title: Option<String>,
    bytes: u64,
    sha256: String,
}

/// Reads concatenated export documents, checking each: the header's fields, the transcript's
/// length and its SHA-256. The first bad document is an `InvalidInput` error naming it, and
/// reading stops there.
#[derive(Debug)]
pub struct DocumentReader<R> {
    input: R,
    /// Documents read so far (to name the bad one).
    read: usize,
    failed: bool,
}

impl<R: BufRead> DocumentReader<R> {
    /// Read documents from `input`.
    pub fn new(input: R) -> Self {
        DocumentReader {
            input,
            read: 0,
            failed: false,
        }
    }

    fn next_document(&mut self) -> Result<Option<Exported>> {
        let number = self.read + 1;
        let bad = |what: String| Error::invalid(format!("export document {number}: {what}"));
        let mut line = Vec::new();
        self.input
            .read_until(b'\n', &mut line)
            .map_err(|e| bad("cannot be read".into()).with_source(e))?;
        if line.is_empty() {
            return Ok(None);
        }
        let header: Header = serde_json::from_slice(&line)
            .map_err(|e| bad("the header line is not an export header".into()).with_source(e))?;
        if header.lobu_export != EXPORT_FORMAT {
            return Err(bad(format!(
                "format {} is not one this version reads ({EXPORT_FORMAT})",
                header.lobu_export
            )));
        }
        let key = ConversationKey::parse(&header.org, &header.agent, &header.conversation)
            .map_err(|e| bad("bad conversation ids".into()).with_source(e))?;
        let run = RunId::new(&header.run).map_err(|e| bad("bad run id".into()).with_source(e))?;
        let updated_at = time::OffsetDateTime::parse(
            &header.updated_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|e| bad("updated_at is not RFC 3339".into()).with_source(e))?;
        let mut transcript = Vec::new();
        (&mut self.input)
            .take(header.bytes)
            .read_to_end(&mut transcript)
            .map_err(|e| bad("cannot be read".into()).with_source(e))?;
        if transcript.len() as u64 != header.bytes {
            return Err(bad(format!(
                "truncated: {} of {} transcript bytes",
                transcript.len(),
                header.bytes
            )));
        }
        let digest = hash::hex(&hash::digest(&transcript));
        if digest != header.sha256 {
            return Err(bad(format!(
                "the transcript's SHA-256 is {digest}, the header says {}",
                header.sha256
            )));
        }
        if !transcript.is_empty() && !transcript.ends_with(b"\n") {
            // The separator the writer added; a stream that ends right here is fine too.
            let next = self
                .input
                .fill_buf()
                .map_err(|e| bad("cannot be read".into()).with_source(e))?;
            if next.first() == Some(&b'\n') {
                self.input.consume(1);
            }
        }
        self.read = number;
        Ok(Some(Exported::new(
            key,
            crate::session::Version(header.version),
            run,
            updated_at.into(),
            transcript,
        )))
    }
}

impl<R: BufRead> Iterator for DocumentReader<R> {
    type Item = Result<Exported>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = self.next_document();
        self.failed = next.is_err();
        next.transpose()
    }
}

#[cfg(test)]
#[path = "document_tests.rs"]
mod tests;
