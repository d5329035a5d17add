//! Snapshot records: one per persist. Completed ones are lines of `history.jsonl`; the others
//! sit in `forensic/` as `<version>.<status>.json` beside their transcript copy
//! `<version>.<status>.jsonl`. A record names its run and the bytes' size and SHA-256, which
//! is all the same-run rules of `persist` need, and lets `clear` count what it removes.

use std::path::PathBuf;
use std::time::SystemTime;

use lobu_core::transcript::hash::{TranscriptHash, hex};
use lobu_core::{Result, RunId, TerminalStatus};
use serde::{Deserialize, Serialize};

use crate::atomic::{list_names, read_optional};
use crate::error::{to_json, undecodable};
use crate::history_index::History;
use crate::state::{Conversation, FORENSIC, HISTORY, State};

/// One snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) version: u64,
    pub(crate) run: RunId,
    pub(crate) status: TerminalStatus,
    pub(crate) bytes: u64,
    pub(crate) sha256: String,
    #[serde(with = "crate::clock")]
    pub(crate) written_at: SystemTime,
}

/// A forensic record and its two files.
#[derive(Debug)]
pub(crate) struct Forensic {
    pub(crate) record: Record,
    pub(crate) record_path: PathBuf,
    pub(crate) transcript_path: PathBuf,
}

/// SHA-256 of a transcript, and of its first `prefix` bytes in the same pass.
#[derive(Debug)]
pub(crate) struct Digests {
    pub(crate) whole: String,
    /// The hash state after the whole transcript, hex.
    pub(crate) state: String,
    pub(crate) prefix: Option<String>,
}

impl Digests {
    pub(crate) fn of(bytes: &[u8], prefix: Option<u64>) -> Self {
        let mut hasher = TranscriptHash::new();
        let prefix = prefix
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n <= bytes.len())
            .map(|n| {
                hasher.update(&bytes[..n]);
                let at_prefix = hex(&hasher.digest());
                hasher.update(&bytes[n..]);
                at_prefix
            });
        if prefix.is_none() {
            hasher.update(bytes);
        }
        Digests::after(&hasher, prefix)
    }

    /// The digests of what `hasher` was fed.
    pub(crate) fn after(hasher: &TranscriptHash, prefix: Option<String>) -> Self {
        Digests {
            whole: hex(&hasher.digest()),
            state: hex(&hasher.state()),
            prefix,
        }
    }
}

/// The history line of a completed snapshot.
pub(crate) fn history_line(conversation: &Conversation<'_>, record: &Record) -> Result<Vec<u8>> {
    let mut line = to_json(&conversation.path(HISTORY), record)?;
    line.push(b'\n');
    Ok(line)
}

/// The committed completed records of `run`, oldest first.
pub(crate) fn completed_of_run(
    conversation: &Conversation<'_>,
    state: &State,
    run: &RunId,
) -> Result<Vec<Record>> {
    with_history(conversation, state, Vec::new(), |history| {
        history.of_run(run)
    })
}

/// The committed completed record of `version`, if it is in the history.
pub(crate) fn completed(
    conversation: &Conversation<'_>,
    state: &State,
    version: u64,
) -> Result<Option<Record>> {
    with_history(conversation, state, None, |history| {
        history.of_version(version)
    })
}

/// `f` over the committed history (`none` without a head), through this process's
/// [`HistoryIndex`](crate::history_index::HistoryIndex): a persist reads the lines written
/// since the last one, not the whole history.
fn with_history<T>(
    conversation: &Conversation<'_>,
    state: &State,
    none: T,
    f: impl FnOnce(&History<'_>) -> T,
) -> Result<T> {
    let Some(head) = &state.head else {
        return Ok(none);
    };
    let path = conversation.path(HISTORY);
    conversation
        .inner
        .history
        .with_records(&path, head.history_bytes, f)
}

fn forensic_name(version: u64, status: TerminalStatus, extension: &str) -> String {
    format!("{version:020}.{}.{extension}", status.as_str())
}

/// The live (not cleared) forensic records, oldest first.
pub(crate) fn forensic(conversation: &Conversation<'_>, state: &State) -> Result<Vec<Forensic>> {
    let dir = conversation.path(FORENSIC);
    let mut found = Vec::new();
    for (name, path) in list_names(&dir)? {
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        let Some((version, status)) = stem.split_once('.') else {
            continue;
        };
        let (Ok(version), Ok(status)) = (version.parse::<u64>(), TerminalStatus::parse(status))
        else {
            continue;
        };
        if version <= state.cleared_through {
            continue;
        }
        let Some(bytes) = read_optional(&path)? else {
            continue;
        };
        let record: Record = serde_json::from_slice(&bytes).map_err(undecodable(&path))?;
        found.push(Forensic {
            record,
            record_path: path,
            transcript_path: dir.join(forensic_name(version, status, "jsonl")),
        });
    }
    found.sort_by_key(|f| f.record.version);
    Ok(found)
}

/// Store a non-completed snapshot: its transcript first, then its record (a transcript
/// without a record is a crashed write, ignored and removed by the next clear or prune).
pub(crate) fn write_forensic(
    conversation: &Conversation<'_>,
    record: &Record,
    transcript: &[u8],
) -> Result<()> {
    let disk = conversation.inner.disk;
    let dir = conversation.path(FORENSIC);
    disk.create_dirs(&dir)?;
    let (version, status) = (record.version, record.status);
    disk.write_atomic(&dir, &forensic_name(version, status, "jsonl"), transcript)?;
    let name = forensic_name(version, status, "json");
    let bytes = to_json(&dir.join(&name), record)?;
    disk.write_atomic(&dir, &name, &bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_digest_is_the_digest_of_the_prefix() {
        let both = Digests::of(b"a\nb\n", Some(2));
        assert_eq!(both.prefix, Some(Digests::of(b"a\n", None).whole));
        assert_eq!(both.whole, Digests::of(b"a\nb\n", None).whole);
        assert_eq!(
            Digests::of(b"a\n", Some(3)).prefix,
            None,
            "longer than the bytes"
        );
        assert_eq!(
            Digests::of(b"", None).whole,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
